"""benchmarks/gpu_guard.sh and its module on CPU: tiny shapes, every stage, the report's files; a re-run resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_guard  # noqa: E402

from sdlaws import io  # noqa: E402


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("guard")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "HF_HUB_OFFLINE": "1", "OUT": str(out), "SMOKE": "1"}
    done = subprocess.run(["bash", "benchmarks/gpu_guard.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_smoke_run_writes_every_configuration_with_its_floor(smoke_run):
    assert sorted(p.name for p in smoke_run.iterdir()) == [
        "guard.csv", "guard.json", "guard.md", "hf.jsonl", "hw.json", "spec.csv", "steps.csv"]  # <= 8 files
    table = pd.read_csv(smoke_run / "guard.csv")
    assert list(table["config"]) == [
        "sdlaws ar b1", "sdlaws ar b4", "sdlaws chain g4 b1", "sdlaws tree g4 top2 b1", "forward draft b1 x1",
        "forward target b1 x1", "forward target b1 x5", "forward target b4 x1", "forward target b4 x16",
        "forward target b4 x32", "forward target b2 x32", "forward target b2 x64", "hf-static target b1",
        "hf-static target b4", "hf-static draft b1"]
    # the verify forwards' FLOP rate against the run's matmul rate (only those of >= 1024 rows are a target)
    assert (table.loc[table["impl"].eq("forward"), "matmul_pct"] > 0).all()
    # HF's step is the difference of two wall times: at these tiny sizes on a shared CPU it is noise, even < 0
    assert table["step_s"].notna().all() and (table.loc[~table["impl"].eq("hf-static"), "floor_pct"] > 0).all()
    spec = table[table["impl"].eq("sdlaws")].set_index("config")
    assert spec.loc[["sdlaws chain g4 b1", "sdlaws tree g4 top2 b1"], "tokens_per_pass"].tolist() == [5, 5]
    # the floor is bytes / the copy rate measured in the same run: a speculative step adds gamma draft passes
    hw = json.loads((smoke_run / "hw.json").read_text())
    w = gpu_guard.SMOKE
    target = gpu_guard.floor_bytes(w.target, 1, w.context, w.dtype)
    draft = gpu_guard.floor_bytes(w.draft, 1, w.context, w.dtype)
    assert spec.loc["sdlaws ar b1", "floor_step_s"] == pytest.approx(target / hw["hbm_bytes_per_s"])
    assert spec.loc["sdlaws chain g4 b1", "floor_step_s"] == pytest.approx((target + 4 * draft) / hw["hbm_bytes_per_s"])
    info = json.loads((smoke_run / "guard.json").read_text())
    assert info["git_sha"] and info["gpu_name"] == "cpu" and info["tree_over_chain_verify"] > 0
    assert info["gpu_tests"] == "not run"
    md = (smoke_run / "guard.md").read_text()
    # the configurations' table (a row each and its header), then the targets' (7 checks and its header)
    assert md.count("\n| ") == len(table) + 1 + 7 + 1 and "% of floor" in md and "| target | measured |" in md


def test_rerun_resumes_without_measuring_again(smoke_run):
    before = {name: len(io.read_measurements(smoke_run / name)) for name in ("spec.csv", "steps.csv")}
    hf_lines = (smoke_run / "hf.jsonl").read_text()
    gpu_guard.main(["--smoke", "--out", str(smoke_run)])
    assert {name: len(io.read_measurements(smoke_run / name)) for name in before} == before
    assert (smoke_run / "hf.jsonl").read_text() == hf_lines


def test_report_reads_the_gpu_tests_summary(tmp_path):
    log = tmp_path / "pytest.txt"
    assert gpu_guard.pytest_summary(log) == "not run"
    log.write_text("....\n======= 22 passed, 1 skipped in 80.1s =======\n")
    assert gpu_guard.pytest_summary(log) == "22 passed, 1 skipped in 80.1s"
    log.write_text("....F\n")
    assert gpu_guard.pytest_summary(log).startswith("no summary line")


def _guard_table(ar_b1_s: float, tree_verify_s: float) -> pd.DataFrame:
    """A guard table with the configurations the targets read; the rest of its columns are left empty."""
    rows = [("sdlaws ar b1", "sdlaws", "ar", 1, 1, ar_b1_s, None, None, 3.6e-3),
            ("sdlaws ar b64", "sdlaws", "ar", 64, 1, 5e-3, None, None, 4.1e-3),
            ("sdlaws chain g4 b1", "sdlaws", "chain", 1, 5, 8e-3, 4e-3, 4.4e-3, 6e-3),
            ("sdlaws tree g4 top2 b1", "sdlaws", "tree", 1, 5, 9e-3, tree_verify_s, 4.4e-3, 6e-3),
            ("forward draft b1 x1", "forward", "forward", 1, 1, 1e-3, None, None, 0.6e-3)]
    table = pd.DataFrame(rows, columns=["config", "impl", "method", "batch_size", "tokens_per_pass", "step_s",
                                        "verify_step_s", "draft_step_s", "floor_step_s"])
    table["floor_pct"] = 100 * table["floor_step_s"] / table["step_s"]
    return table


def test_targets_are_checked_against_their_goals():
    met = gpu_guard.target_checks(_guard_table(ar_b1_s=4e-3, tree_verify_s=4.2e-3)).set_index("target")
    assert met.loc["AR batch 1, % of floor", "measured"] == pytest.approx(90.0) and met["met"].all()
    # draft phase 4.4 ms over gamma 4 forwards = 1.1 x the bare 1 ms forward: on the goal, still met
    assert met.loc["draft forward inside a chain step / bare draft forward", "measured"] == pytest.approx(1.1)
    slow = gpu_guard.target_checks(_guard_table(ar_b1_s=5e-3, tree_verify_s=4.5e-3)).set_index("target")
    assert not slow.loc["AR batch 1, % of floor", "met"] and not slow.loc["AR batch 1 step vs gpt-fast", "met"]
    assert slow.loc["tree verification / chain verification (same tokens)", "measured"] == pytest.approx(1.125)
    assert not slow.loc["tree verification / chain verification (same tokens)", "met"]
    assert "| AR batch 64, % of floor | 82.0% | >= 75% | yes |" in gpu_guard.targets_markdown(slow.reset_index())


def test_compute_bound_verify_forwards_are_checked_against_the_matmul_rate():
    table = _guard_table(ar_b1_s=4e-3, tree_verify_s=4.2e-3)
    verify = pd.DataFrame([("forward target b64 x16", "forward", "forward", 64, 16, 20e-3, 85.0),
                           ("forward target b64 x8", "forward", "forward", 64, 8, 11e-3, 60.0),
                           ("forward target b32 x64", "forward", "forward", 32, 64, 40e-3, 70.0)],
                          columns=["config", "impl", "method", "batch_size", "tokens_per_pass", "step_s", "matmul_pct"])
    checks = gpu_guard.target_checks(pd.concat([table, verify], ignore_index=True)).set_index("target")
    assert checks.loc["verify forward batch 64 x 16, % of matmul rate", "met"]          # 85% >= 80%
    assert not checks.loc["verify forward batch 32 x 64, % of matmul rate", "met"]      # 70% < 80%
    assert "verify forward batch 64 x 8, % of matmul rate" not in checks.index          # 512 rows: not compute-bound
    assert not gpu_guard.target_checks(table)["target"].str.startswith("verify forward").any()  # no such rows


def test_targets_cli_reads_a_guard_table_and_refuses_a_missing_one(tmp_path, capsys):
    _guard_table(4e-3, 4.2e-3).to_csv(tmp_path / "guard.csv", index=False)
    gpu_guard.main(["--targets", str(tmp_path / "guard.csv")])
    assert "| target | measured | goal | met |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        gpu_guard.main(["--targets", str(tmp_path / "missing.csv")])
    assert exc.value.code == 2


def _guard_run(folder: Path, sha: str, bandwidth: float, ar_b1_s: float, tree_verify_s: float) -> Path:
    folder.mkdir()
    table = _guard_table(ar_b1_s, tree_verify_s)
    (table if sha == "new" else table[~table["config"].eq("forward draft b1 x1")]).to_csv(folder / "guard.csv",
                                                                                         index=False)
    (folder / "guard.json").write_text(json.dumps({"git_sha": sha, "hbm_bytes_per_s": bandwidth}))
    return folder


def test_compare_puts_two_runs_side_by_side(tmp_path, capsys):
    old = _guard_run(tmp_path / "old", "old", 4.0e12, ar_b1_s=5e-3, tree_verify_s=4.5e-3)
    new = _guard_run(tmp_path / "new", "new", 3.9e12, ar_b1_s=4e-3, tree_verify_s=4.2e-3)
    lines = gpu_guard.compare_markdown(old, new).splitlines()
    assert lines[0] == "| configuration | step ms, `old` | step ms, `new` | change | verify ms | draft ms |"
    assert lines[2] == "| copy bandwidth, GB/s | 4000 | 3900 | -2.5% | - | - |"
    assert "| sdlaws ar b1 | 5.000 | 4.000 | -20.0% | - | - |" in lines
    assert "| sdlaws tree g4 top2 b1 | 9.000 | 9.000 | +0.0% | 4.500 -> 4.200 | 4.400 -> 4.400 |" in lines
    assert not any("forward draft" in line for line in lines)  # measured by one run only: left out
    gpu_guard.main(["--compare", str(old), str(new)])
    assert capsys.readouterr().out.splitlines() == lines
    with pytest.raises(SystemExit) as exc:
        gpu_guard.main(["--compare", str(tmp_path), str(new)])
    assert exc.value.code == 2 and "no guard.csv or guard.json" in capsys.readouterr().err
