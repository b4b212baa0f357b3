"""Reliability (issue 12, ``docs/reliability.md``): the CSV reader and the fit checks under generated input
(hypothesis), atomic outputs, two sweeps on one CSV, a sweep killed with SIGKILL and resumed, the memory guard.
The bad-input table of every command is ``test_bad_input.py``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from measure_helpers import fake_factory, tiny_model_dir
from sdlaws import io
from sdlaws.cli import app
from sdlaws.errors import ConfigError, DataWarning, InputError
from sdlaws.fit import fit_law
from sdlaws.measure import memory
from sdlaws.measure.config import MeasureConfig
from sdlaws.measure.sweep import expand_grid, run_id, run_sweep
from sdlaws.roofline import named_shape
from conftest import _spec_row as spec_row

TESTS = Path(__file__).resolve().parent
TINY = "random:tiny?num_hidden_layers=1"
runner = CliRunner()
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------ CSV reader

@st.composite
def spec_rows(draw, min_rows: int = 1) -> list[dict]:
    """Physically possible spec rows: accepted <= drafted, drafts <= drafted tokens, accepted <= new tokens,
    prefill <= total time."""
    rows = []
    for i in range(draw(st.integers(min_rows, 6))):
        drafted = draw(st.integers(0, 10**6))
        accepted = draw(st.integers(0, drafted))
        total = draw(st.floats(0, 1e4, allow_nan=False))
        rows.append(spec_row(run_id=f"r{i}", num_draft_tokens=drafted, num_accepted_tokens=accepted,
                             num_drafts=draw(st.integers(0, drafted)),
                             num_new_tokens=accepted + draw(st.integers(0, 10**6)),
                             total_time_s=total, prefill_time_s=draw(st.floats(0, total)),
                             experiment=draw(st.text(alphabet='ab ,"\n\r', max_size=8))))
    return rows


def _write(rows: list[dict], directory: str) -> Path:
    path = Path(directory) / "x.csv"
    for row in rows:
        io.append_row(path, row)
    return path


@FAST
@given(spec_rows())
def test_rows_written_are_read_back_exactly(rows):
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        df = io.read_measurements(_write(rows, d), table="spec")
    for col in ("num_draft_tokens", "num_accepted_tokens", "num_drafts", "num_new_tokens", "total_time_s",
                "prefill_time_s"):
        assert df[col].tolist() == [r[col] for r in rows]
    assert df["experiment"].tolist() == [" ".join(r["experiment"].splitlines()) for r in rows]  # one row, one line


CORRUPTIONS = {  # column, value (a function of the row) that no measurement can hold, fragment of the error
    "negative count": ("num_drafts", lambda r: -1, "is negative"),
    "accepted > drafted": ("num_accepted_tokens", lambda r: r["num_draft_tokens"] + 1, "> num_draft_tokens"),
    "infinite time": ("total_time_s", lambda r: math.inf, "is not finite"),
    "1e308 count": ("num_new_tokens", lambda r: 1e308, "a count can physically be"),
    "1e308 time": ("verify_time_s", lambda r: 1e308, "a timing can physically be"),
    "text in a count": ("num_steps", lambda r: "many", "is not a number"),
}


@FAST
@given(spec_rows(), st.data(), st.sampled_from(sorted(CORRUPTIONS)))
def test_an_impossible_value_is_refused_naming_file_and_line(rows, data, kind):
    column, value, fragment = CORRUPTIONS[kind]
    rows = [{**r, "experiment": "x"} for r in rows]  # pandas writes a bare carriage return unquoted
    j = data.draw(st.integers(0, len(rows) - 1))
    rows[j] = {**rows[j], column: value(rows[j])}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.csv"
        pd.DataFrame(rows).to_csv(path, index=False)  # written as a user's editor would, bypassing append_row
        with pytest.raises(InputError) as err:
            io.read_measurements(path, table="spec")
    assert f"x.csv line {j + 2}:" in str(err.value) and fragment in str(err.value)


@FAST
@given(spec_rows(min_rows=2), st.data())
def test_a_torn_last_line_is_skipped_on_read_and_cut_on_repair(rows, data):
    with tempfile.TemporaryDirectory() as d:
        path = _write(rows, d)
        whole = path.read_bytes()
        start = whole.rstrip(b"\n").rfind(b"\n") + 1  # first byte of the last row
        path.write_bytes(whole[:data.draw(st.integers(start + 1, len(whole) - 1))])  # killed mid-write
        with pytest.warns(DataWarning, match="torn last line"):
            df = io.read_measurements(path, table="spec")
        assert df["run_id"].tolist() == [r["run_id"] for r in rows[:-1]]
        with pytest.warns(DataWarning, match="cut off a torn last line"):
            assert io.repair_tail(path)
        assert path.read_bytes() == whole[:start]  # the complete rows, byte for byte
        assert not io.repair_tail(path)


@FAST
@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=8), st.data())
def test_a_configuration_written_twice_counts_once_the_first(ids, data):
    rows = [spec_row(run_id=i, num_drafts=data.draw(st.integers(0, 100)), num_draft_tokens=800) for i in ids]
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", DataWarning)
        df = io.read_measurements(_write(rows, d), table="spec")
    first = {}
    for row in rows:
        first.setdefault(row["run_id"], row["num_drafts"])
    assert df["run_id"].tolist() == list(first) and df["num_drafts"].tolist() == list(first.values())
    assert any("repeat a configuration" in str(w.message) for w in seen) == (len(first) < len(ids))


def test_duplicate_column_names_and_short_rows_name_the_line(tmp_path):
    (tmp_path / "dup.csv").write_text("x,y,x\n1,2,3\n")
    (tmp_path / "short.csv").write_text("x,y\n1,2\n3\n4,5\n")
    with pytest.raises(InputError, match=r"dup.csv line 1: column name\(s\) 'x' appear more than once"):
        io.read_csv(tmp_path / "dup.csv")
    with pytest.raises(InputError, match="line 3 has 1 cells, the header 2"):
        io.read_csv(tmp_path / "short.csv")


# --------------------------------------------------------------------------------------------- fit checks

finite = st.floats(-1e6, 1e6, allow_nan=False)


@FAST
@given(st.lists(st.tuples(finite, finite), min_size=3, max_size=12))
def test_fit_refuses_a_degenerate_design_and_otherwise_gives_finite_parameters(points):
    df = pd.DataFrame(points, columns=["x", "y"])
    if df["x"].nunique() < 2:
        with pytest.raises(InputError, match="distinct value"):
            fit_law(df, "linear", x="x", y="y")
        return
    try:
        fit = fit_law(df, "linear", x="x", y="y")
    except InputError:  # x values too close for the design to have full rank: refused, never a wrong fit
        return
    assert np.isfinite(fit.params).all() and fit.nobs == len(df)


@FAST
@given(st.lists(st.tuples(st.floats(1, 100), finite), min_size=4, max_size=10), st.data(),
       st.sampled_from([math.inf, -math.inf, 1e200, -1e308]), st.sampled_from(["x", "y"]))
def test_fit_refuses_values_it_cannot_square_naming_the_line(points, data, bad, column):
    df = pd.DataFrame(points, columns=["x", "y"]).assign(source_file="t.csv")
    df["source_row"] = range(1, len(df) + 1)
    i = data.draw(st.integers(0, len(df) - 1))
    df.loc[i, column] = bad
    with pytest.raises(InputError, match=f"t.csv line {i + 2}: column {column} must be finite"):
        fit_law(df, "linear", x="x", y="y")


@pytest.mark.parametrize("n_boot, seed", [(-5, 0), (10**6, 0), (2.5, 0), (10, -1)])
def test_fit_refuses_bootstrap_and_seed_out_of_range(n_boot, seed):
    with pytest.raises(ConfigError, match="out of range"):
        fit_law(pd.DataFrame({"x": [1, 2, 3], "y": [1, 2, 4]}), "linear", x="x", y="y", n_boot=n_boot, seed=seed)


# ------------------------------------------------------------------------------------------ atomic outputs

def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    path.chmod(0o640)
    with pytest.raises(RuntimeError):
        with io.atomic_write(path) as fh:
            fh.write("half of a new file")
            raise RuntimeError("failed while writing")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]  # no temporary file left
    io.save_text("new", path)
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640


def test_an_output_group_installs_every_file_or_none(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(OSError):
        with io.output_group():
            io.save_text("new a", tmp_path / "a.txt")
            io.save_text("new b", tmp_path / "new" / "b.txt")
            raise OSError("disk full")
    assert (tmp_path / "a.txt").read_text() == "old a" and sorted(os.listdir(tmp_path)) == ["a.txt"]
    with io.output_group():
        io.save_text("new a", tmp_path / "a.txt")
        with io.output_group():  # a nested group joins the outer one
            io.save_text("new b", tmp_path / "new" / "b.txt")
        assert (tmp_path / "a.txt").read_text() == "old a" and not (tmp_path / "new" / "b.txt").exists()
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "new" / "b.txt").read_text() == "new b"


def _hashes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_plan_failing_while_drawing_keeps_the_previous_plan(tmp_path, monkeypatch):
    """Issue 12 #30: plan.json used to be replaced before the figures were drawn."""
    args = ["plan", "draft-size", "--target", "qwen2.5-7b", "--batch", "1", "--samples", "20", "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    before = _hashes(tmp_path)

    def broken(plan_set, out):
        raise OSError(28, "No space left on device", str(out / "draft_size.png"))

    monkeypatch.setattr("sdlaws.plotting.plan_figures", broken)
    result = runner.invoke(app, [*args[:-3], "30", "--out", str(tmp_path)])  # another plan, which fails
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "No space left on device" in result.stderr and _hashes(tmp_path) == before


def test_a_fit_failing_while_plotting_keeps_the_previous_fit(tmp_path, monkeypatch):
    data = tmp_path / "xy.csv"
    data.write_text("x,y\n1,3\n2,5\n3,7.5\n4,9\n")
    out = tmp_path / "fit"
    args = ["--x", "x", "--y", "y", "--out", str(out)]
    assert runner.invoke(app, ["fit", str(data), "--law", "linear", *args]).exit_code == 0
    before = _hashes(out)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sdlaws.plotting.plot_fits", broken)
    result = runner.invoke(app, ["fit", str(data), "--law", "power", *args])
    assert result.exit_code == 1 and "No space left on device" in result.stderr and _hashes(out) == before


def test_fit_counts_a_configuration_written_twice_once(tmp_path):
    """Issue 12 #32: two sweeps on one CSV used to double the observations of the fit (narrower intervals)."""
    rows = [spec_row(run_id=f"r{i}", draft_layers=i + 1, num_accepted_tokens=300 + 40 * i, num_new_tokens=1000)
            for i in range(4)]
    once, twice = tmp_path / "once.csv", tmp_path / "twice.csv"
    for row in rows:
        io.append_row(once, row)
    for row in rows + rows:
        io.append_row(twice, row)
    args = ["--law", "loglinear", "--x", "draft_layers", "--y", "acceptance_rate", "--json", "--out"]
    a = runner.invoke(app, ["fit", str(once), *args, str(tmp_path / "a")])
    b = runner.invoke(app, ["fit", str(twice), *args, str(tmp_path / "b")])
    assert a.exit_code == b.exit_code == 0, b.output
    assert b.stderr.count("warning:") == 1 and "4 ok row(s) repeat a configuration" in b.stderr
    fa, fb = json.loads(a.stdout), json.loads(b.stdout)
    assert fa["nobs"] == fb["nobs"] == 4 and fa["cov"] == fb["cov"]


# ---------------------------------------------------------------------------------------- sweeps, processes

SWEEP = dict(targets=[TINY], drafts=[TINY], num_spec_tokens=[1, 2, 3], batch_sizes=[1, 2], prompts="random",
             num_prompts=2, max_new_tokens=4, max_prompt_len=6, dtype="fp32", device="cpu", repeats=2)

CHILD = """
import json, sys, time
sys.path.insert(0, {tests!r})
from measure_helpers import FakeDecoder
from sdlaws.measure.config import MeasureConfig
from sdlaws.measure.sweep import run_sweep

class Slow(FakeDecoder):
    def generate(self, prompts):
        time.sleep({delay})
        return super().generate(prompts)

result = run_sweep(MeasureConfig(**json.loads(sys.argv[2])), sys.argv[1], progress=False,
                   decoder_factory=lambda target, draft, run, config, longest: Slow(run, config, set()))
print(json.dumps({{"ok": result.num_ok, "elsewhere": result.num_elsewhere, "skipped": result.num_skipped}}))
"""


def _child(tmp_path: Path, out: Path, delay: float) -> subprocess.Popen:
    script = tmp_path / f"sweep_{delay}.py"
    script.write_text(CHILD.format(tests=str(TESTS), delay=delay))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    return subprocess.Popen([sys.executable, str(script), str(out), json.dumps(SWEEP)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _expected_ids() -> set[str]:
    config = MeasureConfig(**SWEEP)
    return {run_id(r, config, "cpu") for r in expand_grid(config)}


def test_two_sweeps_on_one_csv_measure_each_configuration_once(tmp_path):
    """Issue 12 #31: two processes on one --out used to both run every configuration."""
    out = tmp_path / "x.csv"
    children = [_child(tmp_path, out, 0.02) for _ in range(2)]
    results = [json.loads(c.communicate(timeout=120)[0].strip().splitlines()[-1]) for c in children]
    df = io.read_measurements(out, table="spec")
    assert len(df) == len(_expected_ids()) == 16 and set(df["run_id"]) == _expected_ids()
    assert set(df["status"]) == {"ok"} and sorted(df["repeat"].unique()) == [0, 1]
    assert sum(r["ok"] for r in results) == 16  # each configuration measured by exactly one of them
    assert all(r["ok"] + r["elsewhere"] + r["skipped"] == 16 for r in results)


def test_a_killed_sweep_resumes_without_losing_or_repeating_a_row(tmp_path):
    """Issue 12 #33: SIGKILL during a sweep, a torn last line, then a resume that repairs it by itself.

    The kill lands between rows (each row is one fsync'ed write, too short to interrupt reliably), so the torn
    line a kill inside a write leaves is appended by hand.
    """
    out = tmp_path / "x.csv"
    child = _child(tmp_path, out, 0.15)
    deadline = time.time() + 60
    while (not out.exists() or out.read_bytes().count(b"\n") < 4) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    complete = out.read_bytes()
    measured = len(io.read_measurements(out, table="spec"))
    assert 3 <= measured < 16 and complete.endswith(b"\n")
    with out.open("ab") as fh:
        fh.write(complete.splitlines(keepends=True)[-1][:57])  # a row cut short mid-write
    factory, calls = fake_factory()
    with pytest.warns(DataWarning, match="cut off a torn last line"):
        result = run_sweep(MeasureConfig(**SWEEP), out, decoder_factory=factory, progress=False)
    assert out.read_bytes().startswith(complete)  # the rows written before the kill, byte for byte
    df = io.read_measurements(out, table="spec")
    assert len(df) == 16 and set(df["run_id"]) == _expected_ids() and set(df["status"]) == {"ok"}
    assert result.num_ok == 16 - measured and result.num_skipped == measured


def test_a_sweep_whose_every_configuration_fails_exits_1(tmp_path):
    """Weights that do not load (the config reads) fail every configuration: failed rows and exit code 1."""
    model = tiny_model_dir(tmp_path / "model")
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    out = tmp_path / "x.csv"
    result = runner.invoke(app, ["measure", "--target", str(model), "--prompts", "random", "--num-prompts", "1",
                                 "--max-new-tokens", "2", "--max-prompt-len", "4", "--device", "cpu", "--dtype", "fp32",
                                 "--out", str(out)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: all 1 configuration(s) measured by this run failed")
    assert io.read_measurements(out, table="spec")["status"].tolist() == ["failed"]


# ------------------------------------------------------------------------------------------- memory guard

def test_memory_estimate_of_a_known_shape():
    """Llama-3.1-8B in bf16, chain of 4 at batch 8, 512-token prompts, 128 new tokens, drafted by itself."""
    shape = named_shape("llama-3.1-8b")
    need = memory.need("x", shape, shape, dtype="bfloat16", batch_size=8, longest_prompt=512, max_new_tokens=128,
                       depth=4, topk=1, budget=4, cuda=True)
    slots = 656  # prompt 512 + new 128 + slack (depth 4 + max(verify 5, depth + 1) + 1) = 650, rounded up to 8
    assert need.weights == 2 * 2 * shape.params
    assert need.kv_cache == 2 * (2 * 32 * 8 * 128) * 8 * slots * 2
    assert need.total > 2 * 2 * shape.params + need.kv_cache and memory.gb(need.total).endswith("GB")
    with pytest.raises(ConfigError, match=r"needs at least 3\d\.\d GB .* but cuda:0 has 24 GB free"):
        memory.check_fits([need], 24e9, "cuda:0")


def test_the_memory_estimate_is_below_every_measured_peak():
    """The guard refuses only what cannot run: on the 879 H200 rows of measurements/h200/thm13.csv (8B target,
    1B draft, batch 1-256, 512- and 2048-token prompts, chains and trees) the estimate stays below the measured
    peak memory."""
    from sdlaws.measure.models import inspect_model

    df = pd.read_csv(TESTS.parent / "measurements" / "h200" / "thm13.csv").query("status == 'ok'")
    shapes = {name: memory.model_shape(inspect_model(name).config, name)
              for name in pd.unique(df[["target_name", "draft_name"]].stack().dropna())}
    ratios = [memory.need("x", shapes[r.target_name], shapes.get(r.draft_name), dtype=r.dtype, batch_size=r.batch_size,
                          longest_prompt=r.num_prompt_tokens // r.num_prompts, max_new_tokens=r.max_new_tokens,
                          depth=r.num_spec_tokens, topk=r.tree_topk,
                          budget=0 if r.method == "ar" else int(r.tree_budget), cuda=True).total / r.peak_memory_bytes
              for r in df.itertuples()]
    assert len(ratios) == 879 and 0.3 < min(ratios) and max(ratios) < 0.75


def test_the_memory_guard_refuses_a_sweep_before_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 1e4)  # a 10 kB device
    loads = []
    config = MeasureConfig(**{**SWEEP, "repeats": 1})
    with pytest.raises(ConfigError, match=r"the largest configuration \(.*chain g=3 b=2.*\) needs at least"):
        run_sweep(config, tmp_path / "x.csv", loader=lambda *a, **k: loads.append(a), progress=False)
    assert not loads and not (tmp_path / "x.csv").exists()


def test_host_memory_is_read_without_psutil():
    assert 0 < memory.host_available_bytes() < math.inf


def test_a_configuration_that_failed_then_ran_is_not_listed_as_not_run():
    from sdlaws.io import failed_not_rerun

    rows = pd.DataFrame({"run_id": ["a", "a", "b", "c"], "status": ["failed", "ok", "failed", "ok"]})
    assert list(failed_not_rerun(rows)["run_id"]) == ["b"]
