"""`sdlaws experiment report`: the results document regenerated from the committed measurements is the committed
one, it is rendered from report.json alone with no number typed into its templates, and its analyses are checked
on synthetic data where the truth is known."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sdlaws.experiments import verdicts
from sdlaws.experiments.heldout import SUITES
from sdlaws.experiments.registry import report_sections
from sdlaws.experiments.report import render_markdown

REPO = Path(__file__).resolve().parents[1]
MEASUREMENTS = REPO / "measurements"

# The CLI in a fresh interpreter, so that "no torch import" is checked on a clean sys.modules.
_RUN = """
import sys
from typer.testing import CliRunner
from sdlaws.cli import app
result = CliRunner().invoke(app, ["experiment", "report", "--measurements", sys.argv[1], "--out", sys.argv[2]])
print(result.output)
assert result.exit_code == 0, result.output
assert "torch" not in sys.modules and "transformers" not in sys.modules, "the report must not import torch"
"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    if not (MEASUREMENTS / "throughput" / "heldout.csv").is_file():
        pytest.skip("the committed measurements are not in this tree")
    out = tmp_path_factory.mktemp("report") / "results"
    proc = subprocess.run([sys.executable, "-c", _RUN, str(MEASUREMENTS), str(out)], capture_output=True,
                          text=True, env={"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"},
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_regenerated_document_is_the_committed_one(report_dir):
    assert report_dir.with_suffix(".md").read_text() == (REPO / "docs" / "results.md").read_text()


def test_report_writes_fits_figures_and_json(report_dir):
    from sdlaws.fit import FitResult, load_fits

    data = json.loads((report_dir / "report.json").read_text())
    for name in data["files"]:
        assert (report_dir / name).stat().st_size > 0
    pngs = {n for n in data["files"] if n.endswith(".png")}
    assert {"thm11_loglinear_alpha_mle.png", "sdsl_ppl_plane.png", "thm13_topk_batch.png",
            "heldout-h200-pairs.png", "heldout-h200-8b.png", "roofline.png"} <= pngs
    # the at-scale run, where committed, is the section's entry (its files prefixed), the small-budget one inside it
    fitted = {"thm11": ("thm11_loglinear_alpha_mle.json", "loglinear", "a",
                        lambda entry: entry["responses"]["alpha_mle"]["T=0"]["loglinear"]["params"]),
              "plane": ("sdsl_ppl_plane.json", "ppl_plane", "A",
                        lambda entry: entry["groups"]["T=0"]["forms"]["linear"]["fit"]["params"]),
              "plane_log": ("sdsl_ppl_plane_log.json", "ppl_plane_log", "A",
                            lambda entry: entry["groups"]["T=0"]["forms"]["log"]["fit"]["params"])}
    for part, (name, law, key, params) in fitted.items():
        section = part.removesuffix("_log")
        runs = {"": data[section].get("small_budget", data[section])}
        if "small_budget" in data[section]:
            runs["at_scale_"] = data[section]
        for prefix, entry in runs.items():
            fit = load_fits(report_dir / f"{prefix}{name}")[0.0]
            assert isinstance(fit, FitResult) and fit.law == law
            assert fit.params[key] == pytest.approx(params(entry)[key])
    verdict_of = {"thm11": data["thm11"]["verdict"], "thm12": data["thm12"]["suite"]["verdict"],
                  "plane": data["plane"]["verdict"], "thm13": data["thm13"]["verdict"]}
    assert set(verdict_of.values()) <= set(verdicts.LABELS)
    assert set(data["inputs"]) >= {"throughput/heldout.csv", "h200/pairs/heldout.csv", "acceptance/pretrain-tokens.csv"}


@pytest.mark.parametrize("suite", [s.key for s in SUITES])
def test_heldout_section_is_what_sdlaws_validate_gives(report_dir, monkeypatch, suite):
    from typer.testing import CliRunner

    from sdlaws.cli import app
    from sdlaws.experiments.heldout import command

    data = next(s for s in json.loads((report_dir / "report.json").read_text())["heldout"]["suites"]
                if s["key"] == suite)
    monkeypatch.chdir(REPO)  # the command names repository-relative paths
    result = CliRunner().invoke(app, [*command(next(s for s in SUITES if s.key == suite)).split()[1:], "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)
    for ours, theirs in zip(data["summary"]["speculative"], cli["summary"]["speculative"], strict=True):
        # the same numbers up to the optimiser's last digits (tables read through the report vs the CLI)
        assert ours.pop("quantity") == theirs.pop("quantity") and ours == pytest.approx(theirs, rel=1e-4)
    reasons = [r["reason"] for r in cli["rows"] if r["reason"]]
    assert [r["reason"] for r in data["not_predicted"]] == reasons


def test_markdown_is_rendered_from_report_json(report_dir):
    data = json.loads((report_dir / "report.json").read_text())
    text = report_dir.with_suffix(".md").read_text()
    assert text == render_markdown(data)
    for held in data["heldout"]["suites"]:
        section = text.split(f"### {held['title']}")[1].split("###")[0]
        tps = next(r for r in held["summary"]["speculative"] if r["quantity"] == "tokens_per_s")
        assert f"tokens_per_s {tps['median_abs_pct']:.1f}%" in section
        table = [line for line in section.split("\n- ")[0].splitlines() if line.startswith("| ")]
        assert len(table) - 1 == (len(held["rows"]) or len(held["groups"]))   # header + one line per row or group
        for row in held["not_predicted"]:
            draft = f" <- {row['draft']}" if row["draft"] else ""   # AR rows have no draft
            assert f"{row['reason']}: " in section and f"{row['label']}{draft}" in section
        assert f"]({data['figures_link']}/heldout-{held['key']}.png)" in section


def _markdown_functions():
    """Every function that writes markdown: ``render``, ``summary`` and ``_md_*`` of the report's modules."""
    modules = {sys.modules["sdlaws.experiments.report"]}
    modules |= {sys.modules[s.render.__module__] for s in report_sections()}
    modules.add(sys.modules["sdlaws.experiments.at_scale"])   # the sections' shared at-scale markdown
    for module in modules:
        for node in ast.parse(Path(module.__file__).read_text()).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            if node.name in ("render", "summary") or node.name.startswith("_md"):
                yield module.__name__, node


def test_markdown_templates_type_no_numbers():
    """The templates contain no numbers of their own, only labels (Thm 1.1, p = 1/2, top-k 1, T = 0)."""
    number = re.compile(r"(?<![\w.\-])\d+(?:\.\d+)?%?")
    labels = {"0", "1", "2", "1.1", "1.2", "1.3"}
    typed, seen = set(), set()
    for module, node in _markdown_functions():
        seen.add(module)
        typed |= {(module, m) for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                  for m in number.findall(c.value) if m not in labels}
    assert len(seen) >= 8, seen
    assert not typed, f"numbers typed in the templates instead of read from report.json: {typed}"


def test_report_errors_on_missing_measurements(tmp_path):
    from typer.testing import CliRunner

    from sdlaws.cli import app

    result = CliRunner().invoke(app, ["experiment", "report", "--measurements", str(tmp_path / "none"),
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "error:" in result.output and "--measurements" in result.output


def test_sections_must_agree_on_a_shared_file():
    from sdlaws.errors import InputError
    from sdlaws.experiments.registry import Section
    from sdlaws.experiments.report import _files

    def section(path):
        return Section("s", {"topk": (path, "spec")}, None, None, None)

    assert _files([section("a.csv"), section("a.csv")]) == {"topk": ("a.csv", "spec")}
    with pytest.raises(InputError, match="topk"):
        _files([section("a.csv"), section("b.csv")])


# ------------------------------------------------------------------------------------ analyses, known truth

def _plane_rows(targets: int, seed: int = 0) -> pd.DataFrame:
    """Pairs of 6 drafts x ``targets`` targets with alpha = -0.006 ppl_draft + 0.02 ppl_target + 0.5 + noise."""
    rng = np.random.default_rng(seed)
    draft_ppl = rng.uniform(20, 60, 6)
    target_ppl = np.linspace(8, 20, targets)
    rows = [{"draft_name": f"d{i}", "target_name": f"t{j}", "draft_ppl": d, "target_ppl": t,
             "alpha_mle": -0.006 * d + 0.02 * t + 0.5 + rng.normal(0, 0.003)}
            for i, d in enumerate(draft_ppl) for j, t in enumerate(target_ppl)]
    return pd.DataFrame(rows)


def test_two_way_bootstrap_recovers_b_and_drops_unidentified_resamples():
    from sdlaws.experiments.multiway import cluster_bootstrap
    from sdlaws.fit import fit_law

    def b_interval(targets):
        rows = _plane_rows(targets)
        return cluster_bootstrap(fit_law(rows, "ppl_plane", weight=None), rows, ["draft_name", "target_name"])

    many, few = b_interval(8), b_interval(3)
    assert many["ci"]["B"][0] < 0.02 < many["ci"]["B"][1] and many["ci"]["B"][0] > 0
    # resamples that draw a single target cannot identify B: about 3 * 3^-3 of them with 3 targets
    assert 60 < few["n_dropped"] < 170 and many["n_dropped"] < 5


def test_two_way_bootstrap_sees_target_noise_that_rows_hide():
    """Each target carries a shared shock: the row-level interval of B is too narrow, the two-way one is not."""
    from sdlaws.experiments.multiway import cluster_bootstrap
    from sdlaws.fit import fit_law

    rng = np.random.default_rng(1)
    rows = _plane_rows(8)
    shock = dict(zip(rows["target_name"].unique(), rng.normal(0, 0.03, 8)))
    rows["alpha_mle"] += rows["target_name"].map(shock)
    fit = fit_law(rows, "ppl_plane", weight=None)
    row_width = np.diff(fit.conf_int(0.05).loc["B"].to_numpy())[0]
    two_way = cluster_bootstrap(fit, rows, ["draft_name", "target_name"])["ci"]["B"]
    assert two_way[1] - two_way[0] > 2 * row_width


def test_leave_one_out_rmse_is_small_for_the_true_form_and_none_when_unidentified():
    from sdlaws.experiments.multiway import leave_one_out_rmse
    from sdlaws.fit import fit_law

    rows = _plane_rows(4)
    refit = lambda kept: fit_law(kept, "ppl_plane", weight=None)  # noqa: E731
    assert leave_one_out_rmse(rows, refit, "draft_name") < 0.01
    assert leave_one_out_rmse(_plane_rows(2), refit, "target_name") is None   # one target left: B undetermined


def test_curvature_test_finds_a_bend_and_not_a_line():
    from sdlaws.experiments.pretrain_tokens import curvature_test
    from sdlaws.fit import fit_law

    tokens = np.logspace(5, 8, 9)
    u = np.log10(tokens)
    noise = np.random.default_rng(0).normal(0, 0.002, len(u))
    for y, bends in ((0.1 * u - 0.2 + noise, False), (0.05 * (u - 5) ** 2 + 0.1 + noise, True)):
        rows = pd.DataFrame({"draft_pretrain_tokens": tokens, "alpha_mle": y})
        fit = fit_law(rows, "loglinear", x="draft_pretrain_tokens", y="alpha_mle", weight=None)
        assert (curvature_test(rows, fit)["pvalue"] < 0.05) == bends


# ------------------------------------------------------------------------------------ head-depth, known truth

def _head_rows(tau, seeds: int = 2, seed: int = 0) -> pd.DataFrame:
    """Derived chain rows of heads of 1-8 layers x ``seeds`` seeds at T=0 with tau = ``tau(layers)`` plus seed
    noise, and two LM drafts (cheap, slow and expensive, fast)."""
    rng = np.random.default_rng(seed)
    rows = []
    for layers in (1, 2, 3, 4, 6, 8):
        for s in range(seeds):
            t = tau(layers) + rng.normal(0, 0.01)
            rows.append({"draft_name": f"/w/heads-L12-H768/head-L{layers}-T20M-s{s}/step-1", "draft_kind": "head",
                         "draft_layers": layers, "draft_params": 1.2e6 + 7.1e6 * layers, "mean_acceptance_length": t,
                         "alpha_mle": (t - 1) / 4, "draft_time_s": 0.5 + 0.1 * layers, "tokens_per_s": 500 * t})
    rows += [{"draft_name": f"/w/models/{n}-T50M-s0/step-1", "draft_kind": "", "draft_layers": layers,
              "draft_params": p, "mean_acceptance_length": t, "alpha_mle": (t - 1) / 4, "draft_time_s": c,
              "tokens_per_s": tps} for n, layers, p, t, c, tps in (("L2-H256", 2, 2.7e6, 1.8, 0.3, 700.0),
                                                                   ("L4-H128", 4, 1.5e6, 1.6, 0.9, 2000.0))]
    df = pd.DataFrame(rows)
    return df.assign(method="chain", temperature=0.0, num_spec_tokens=4, num_steps=1000, num_drafts=50_000,
                     num_draft_tokens=200_000, draft_pretrain_tokens=20e6)


def test_head_depth_recovers_a_loglinear_slope_and_flips_on_saturating_data():
    from sdlaws.experiments import head_depth

    rows = head_depth.draft_rows(_head_rows(lambda n: 1.5 + 0.8 * np.log10(n)))
    law = head_depth.depth_law(rows[rows["draft_kind"].eq("head")])
    group = law.data["groups"]["T=0 tau vs layers"]
    assert group["loglinear"]["params"]["a"] == pytest.approx(0.8, abs=0.03)
    assert group["loglinear"]["boot_unit"] == "draft_label" and group["sign"] == 1
    assert group["shape"] == "log-linear" and law.data["verdict"] == "holds" and "log-linearly" in law.data["sentence"]

    rows = head_depth.draft_rows(_head_rows(lambda n: 2.6 - 1.2 * n ** -1.5))
    law = head_depth.depth_law(rows[rows["draft_kind"].eq("head")])
    group = law.data["groups"]["T=0 tau vs layers"]
    assert group["shape"] == "saturating" and group["saturating_aic_gap"] < -2
    assert law.data["verdict"] == "partly" and "saturates" in law.data["sentence"]


def test_head_depth_compares_heads_and_lm_drafts_at_equal_draft_cost():
    from sdlaws.experiments import head_depth

    rows = head_depth.draft_rows(_head_rows(lambda n: 1.5 + 0.8 * np.log10(n)))
    assert set(rows["draft_label"]) >= {"L1-s0", "L8-s1", "L2-H256", "L4-H128"}
    cost = head_depth.cost_frontier(rows)["T=0"]
    # at 0.9 ms/step the L4-H128 draft (2000 tokens/s) beats every head no more expensive (at most ~1000)
    assert cost["frontier"][0][2] == 700.0 and any(lm == 2000.0 for _, _, lm in cost["frontier"])
    assert "Heads give more tokens/s" in cost["sentence"]


def test_head_depth_section_says_not_run_without_its_measurements(tmp_path):
    from sdlaws.experiments import head_depth
    from sdlaws.experiments.reporting import Doc, load_tables

    tables = load_tables(tmp_path, head_depth.FILES, optional=set(head_depth.FILES))
    data = head_depth.analyse(tables).data
    text = "\n".join(head_depth.render(data, Doc(0.95, "results")))
    assert data == {"measured": False} and "has not been run" in text and head_depth.COMMAND in text
    assert head_depth.summary(data)[0][1] == "not run"


def test_head_depth_section_renders_fits_top1_and_cost_from_its_numbers():
    from sdlaws.experiments import head_depth
    from sdlaws.experiments.reporting import Doc, Tables

    top1 = {f"head-L{n}-T20M-s{s}": {"layers": n, "seed": s, "heldout_top1": 0.5 + 0.2 * np.log10(n) + 0.01 * s,
                                     "heldout_positions": 131_072} for n in (1, 2, 3, 4, 6, 8) for s in (0, 1)}
    tables = Tables({"heads": _head_rows(lambda n: 1.5 + 0.8 * np.log10(n)),
                     "heads_run": {"results": {"head-depth": {"heads": top1}}}}, {}, {})
    analysis = head_depth.analyse(tables)
    data = analysis.data
    assert data["top1"]["sign"] == 1 and data["top1"]["layers"] == [1, 2, 3, 4, 6, 8]
    assert "better one-step drafters" in data["quality"]["T=0 tau vs layers"]
    assert data["seeds"]["T=0"]["seeds"] == 2 and set(analysis.plots) == {"heads_tau_layers_T0"}
    text = "\n".join(head_depth.render(_as_json(data), Doc(0.95, "results")))
    assert "(holds)" in text and "heads_tau_layers_T0.png" in text and data["cost"]["T=0"]["sentence"] in text


def _as_json(data):
    """``data`` as report.json holds it (tuples become lists)."""
    return json.loads(json.dumps(data))


# ------------------------------------------------------------------------------------ seeds, known truth

def _seeded_checkpoints(slopes) -> pd.DataFrame:
    """Checkpoints of one draft trained with one seed per entry of ``slopes``: alpha = 0.4 + slope * (log10(tokens)
    - 6.5) plus small row noise, so the seeds differ in slope and each seed's rows are nearly on a line."""
    rng = np.random.default_rng(0)
    tokens = np.logspace(5, 8, 9)
    return pd.DataFrame([{"draft_name": f"/m/L4-H256-T100M-s{s}/decay-{int(t)}", "draft_pretrain_tokens": t,
                          "alpha_mle": 0.4 + slope * (np.log10(t) - 6.5) + rng.normal(0, 0.001)}
                         for s, slope in enumerate(slopes) for t in tokens])


def test_pooled_intervals_include_seed_noise_when_there_are_seeds():
    from sdlaws.experiments.multiway import model_seed, with_seed_noise
    from sdlaws.experiments.reporting import fit_summary
    from sdlaws.fit import fit_law

    def slope_intervals(rows):
        fit = fit_law(rows, "loglinear", x="draft_pretrain_tokens", y="alpha_mle", weight=None)
        rowwise = fit_summary(fit, fit_law(rows, "loglinear", x="draft_pretrain_tokens", y="alpha_mle", weight=None,
                                           n_boot=500))
        return rowwise, with_seed_noise(rowwise, fit, rows, "draft_pretrain_tokens")

    rowwise, seeded = slope_intervals(_seeded_checkpoints([0.05, 0.10, 0.15]))
    width = {k: s["boot_ci"]["a"][1] - s["boot_ci"]["a"][0] for k, s in (("rows", rowwise), ("seeds", seeded))}
    # rows see the seeds' spread as residual noise averaged over 27 rows; the seed factor sees 3 slopes
    assert width["seeds"] > 2 * width["rows"] and "train_seed" in seeded["boot_unit"]
    assert seeded["boot_ci"]["a"][0] < 0.07 and seeded["boot_ci"]["a"][1] > 0.13   # spans the seeds' slopes
    one_seed, unchanged = slope_intervals(_seeded_checkpoints([0.10]))
    assert unchanged is one_seed
    assert model_seed("/m/L4-H256-T100M-s12/step-5") == 12 and model_seed("meta-llama/Llama-3.2-1B") == 0


# ------------------------------------------------------------------ the at-scale runs beside the small-budget ones

#: A tiny analogue of the at-scale runs (WSD, two training seeds, T = 0 and 1; tests/data/science/generate.py),
#: laid out as `sdlaws experiment run NAME --out measurements/h200/science/NAME.csv` writes it.
SCIENCE = REPO / "tests" / "data" / "science" / "h200" / "science"


def _measurements(root, science=None):
    """The committed measurements linked under ``root`` (nothing copied), with ``science`` (or nothing) in place
    of the committed at-scale runs under h200/science."""
    if not (MEASUREMENTS / "acceptance" / "pretrain-tokens.csv").is_file():
        pytest.skip("the committed measurements are not in this tree")
    for entry in MEASUREMENTS.iterdir():
        if entry.name != "h200":
            (root / entry.name).symlink_to(entry)
    (root / "h200").mkdir()
    for entry in (MEASUREMENTS / "h200").iterdir():
        if entry.name != "science":
            (root / "h200" / entry.name).symlink_to(entry)
    if science is not None:
        (root / "h200" / "science").symlink_to(science)
    return root


@pytest.fixture(scope="module")
def science_measurements(tmp_path_factory):
    """The committed measurements with the at-scale fixture under h200/science."""
    return _measurements(tmp_path_factory.mktemp("measurements"), SCIENCE)


def _section(root, module):
    """A section's entry of report.json (as the document reads it back) and its markdown, on ``root``."""
    from sdlaws import io
    from sdlaws.experiments.reporting import Doc, load_tables

    section = module.SECTION
    analysis = section.analyse(load_tables(root, section.files, optional=section.optional_keys))
    data = _as_json(io.plain(analysis.data))
    return analysis, data, "\n".join(section.render(data, Doc(0.95, "results")))


def test_at_scale_files_are_named_as_the_runner_writes_them():
    from sdlaws.experiments import ppl_plane, pretrain_tokens

    for module, name in ((pretrain_tokens, "pretrain-tokens"), (ppl_plane, "ppl-plane")):
        paths = {module.FILES[key][0] for key in module.AT_SCALE.values()}
        assert paths == {f"h200/science/{name}.csv", f"h200/science/{name}-ppl.csv",
                         f"h200/science/{name}-run.json", f"h200/science/{name}-corpus-manifest.json*"}
        assert {p.rstrip("*") for p in paths} == {f"h200/science/{p.name}" for p in SCIENCE.glob(f"{name}*")}
        assert module.SECTION.optional_keys == set(module.AT_SCALE.values())


@pytest.mark.parametrize("module_name", ["pretrain_tokens", "ppl_plane"])
def test_at_scale_run_comes_first_and_the_small_budget_runs_follow_labelled(science_measurements, module_name):
    from importlib import import_module

    from sdlaws.experiments import at_scale
    from sdlaws.experiments.reporting import load_tables

    module = import_module(f"sdlaws.experiments.{module_name}")
    analysis, data, text = _section(science_measurements, module)
    tables = load_tables(science_measurements, module.FILES, optional=module.SECTION.optional_keys)
    alone = {name: module.analyse_run(tables, keys).data["verdict"]
             for name, keys in (("at_scale", module.AT_SCALE), ("small", module.SMALL_BUDGET))}
    small = data["small_budget"]
    # each dataset keeps its own verdict; the section's (and the summary's) is the at-scale one
    assert data["verdict"] == alone["at_scale"] and small["verdict"] == alone["small"]
    assert module.summary(data)[0][1] == data["verdict"]
    assert f"small-budget runs: {small['verdict']}" in module.summary(data)[0][2]
    heading = f"### Small-budget runs: cosine snapshots, cut by the time budget ({small['verdict']})"
    assert text.startswith(f"## {module.TITLE} ({data['verdict']})\n\nAt scale: `sdlaws experiment run")
    assert text.index("At scale:") < text.index(heading) and text.count("\n## ") == 0
    # the at-scale facts: schedule, seeds and their noise, tokens per parameter, corpus by source, epochs
    facts = data["dataset"]
    assert facts["label"] == "finished WSD runs" and facts["seeds"] == [0, 1] and facts["seed_noise"]
    assert facts["corpus"]["train_tokens_by_source"] == {"python": facts["corpus"]["train_tokens"]}
    assert 0 < facts["corpus"]["epochs"]["draft"] < 1 and facts["target_tokens_per_param"][0] == pytest.approx(0.1,
                                                                                                             abs=0.01)
    assert "finished WSD runs, training seeds 0, 1" in text and "python 892.6k" in text
    assert facts["target_seeds"] == [0] and "training seeds 0, 1 for the drafts, 0 for the target" in text
    assert "so it includes the drafts' seed-to-seed noise" in text and "below the ~20 of compute-optimal" in text
    assert small["dataset"]["label"] == "cosine snapshots, cut by the time budget" and small["dataset"]["seeds"] == [0]
    assert verdicts.runs_agree(data["verdict"], small["verdict"]) in text
    # figures: the at-scale ones prefixed, the small-budget ones under their old names
    prefixed = [name for name in [*analysis.fits, *analysis.plots] if name.startswith(at_scale.PREFIX)]
    assert prefixed and all(name[len(at_scale.PREFIX):] in analysis.fits for name in prefixed)
    figures = re.findall(r"\]\(results/([^)]+)\)", text)
    assert figures[0].startswith(at_scale.PREFIX) and not figures[-1].startswith(at_scale.PREFIX)


def test_at_scale_intervals_resample_training_seeds(science_measurements):
    """Two seeds: with_seed_noise replaces every Thm 1.1 bootstrap by the checkpoints x seeds one, and the plane's
    bootstrap draws seeds as a third factor; the small-budget runs (one seed) keep their row bootstrap."""
    from sdlaws.experiments import ppl_plane, pretrain_tokens

    _, thm11, text = _section(science_measurements, pretrain_tokens)
    units = {g["loglinear"]["boot_unit"] for groups in thm11["responses"].values() for g in groups.values()}
    assert units == {"pigeonhole bootstrap over draft_pretrain_tokens x train_seed"}
    assert {g["loglinear"]["boot_unit"] for groups in thm11["small_budget"]["responses"].values()
            for g in groups.values()} == {"row"}
    assert "at 12 checkpoints of 2 runs (one per training seed)" in text
    assert "9 checkpoints of one run" in text and "cool-down branches of one trunk per training seed" in text
    _, plane, text = _section(science_measurements, ppl_plane)
    assert all(g["factors"] == ["draft_shape", "target_shape", "train_seed"] for g in plane["groups"].values())
    assert "#### T=0: 3 targets x 8 drafts" in text


def test_upper_half_starts_at_the_geometric_mean_of_the_design_range():
    from sdlaws.experiments.pretrain_tokens import UPPER_FROM, upper_half

    assert UPPER_FROM == 0.5
    rows = pd.DataFrame({"draft_pretrain_tokens": [1e5, 1e6, 3e6, 1e7, 1e8, 1e9]})
    upper, start = upper_half(rows)
    assert start == pytest.approx(1e7) and upper["draft_pretrain_tokens"].tolist() == [1e7, 1e8, 1e9]


def test_thm11_upper_half_is_secondary(science_measurements):
    """Each dataset carries the same fits on the upper half of its log-token range, with its own verdict from the
    same rule; the section's verdict, its summary row and the full-range groups are those of the full range."""
    from sdlaws.experiments import pretrain_tokens
    from sdlaws.experiments.reporting import load_tables

    _, data, text = _section(science_measurements, pretrain_tokens)
    tables = load_tables(science_measurements, pretrain_tokens.FILES,
                         optional=pretrain_tokens.SECTION.optional_keys)
    for entry, keys in ((data, pretrain_tokens.AT_SCALE), (data["small_budget"], pretrain_tokens.SMALL_BUDGET)):
        upper = entry["upper_half"]
        low, high = upper["design_range"]
        assert upper["from_tokens"] == pytest.approx((low * high) ** 0.5)
        groups = [g for groups in upper["responses"].values() for g in groups.values()]
        assert all(g["tokens_range"][0] >= upper["from_tokens"] * (1 - 1e-9) for g in groups)
        assert upper["verdict"] == verdicts.combine(g["verdict"] for g in groups)
        full = [g for groups in entry["responses"].values() for g in groups.values()]
        assert entry["verdict"] == verdicts.combine(g["verdict"] for g in full)
        assert entry["verdict"] == pretrain_tokens.analyse_run(tables, keys).data["verdict"]
        assert all(g["tokens_range"] == [low, high] for g in full)
        if min(g["decades"] for g in groups) < pretrain_tokens.MIN_DECADES:
            assert upper["verdict"] == "not testable"
    assert {g["loglinear"]["boot_unit"] for groups in data["upper_half"]["responses"].values()
            for g in groups.values()} == {"pigeonhole bootstrap over draft_pretrain_tokens x train_seed"}
    assert pretrain_tokens.summary(data)[0][1] == data["verdict"]
    assert text.count("**Secondary analysis: the upper half of the log-token range.**") == 2
    assert text.count("Verdict of the upper half, by the same rule:") == 2
    assert text.index("**Verdict: ") < text.index("**Secondary analysis")


def test_sections_without_the_at_scale_files_are_the_small_budget_runs_alone(tmp_path):
    from sdlaws.experiments import at_scale, pretrain_tokens

    analysis, data, text = _section(_measurements(tmp_path), pretrain_tokens)
    assert "small_budget" not in data and "dataset" not in data
    assert not any(name.startswith(at_scale.PREFIX) for name in analysis.fits)
    assert "At scale" not in text and "Small-budget" not in text


@pytest.mark.slow
def test_document_with_the_at_scale_runs(science_measurements):
    """The whole document on the committed measurements plus the at-scale fixture: the summary rows carry the
    at-scale verdicts, each section puts its at-scale run first, the limits name the at-scale runs' corpus."""
    from sdlaws import io
    from sdlaws.experiments.report import build_report

    data = _as_json(io.plain(build_report(science_measurements)[0]))
    text = render_markdown({**data, "figures_link": "results"})
    summary = text.split("## Summary")[1].split("\n## ")[0]
    for key, law in (("thm11", "Scylla Thm 1.1: acceptance vs log10"), ("plane", "SDSL plane: alpha vs")):
        row = next(line for line in summary.splitlines() if line.startswith(f"| {law}"))
        assert row.split(" | ")[1] == data[key]["verdict"]
        assert f"small-budget runs: {data[key]['small_budget']['verdict']}" in row
    for title in ("Scylla Thm 1.1: acceptance versus draft pretraining tokens",
                  "SDSL plane: acceptance versus draft and target perplexity"):
        section = text.split(f"\n## {title}")[1].split("\n## ")[0]
        assert section.index("At scale:") < section.index("### Small-budget runs: cosine snapshots")
    assert {"h200/science/pretrain-tokens.csv", "h200/science/ppl-plane-run.json"} <= set(data["inputs"])
    assert "The at-scale runs (`measurements/h200/science/pretrain-tokens.csv`" in text
    # the limits name the runs a qualification is about: the time budget and the perplexity prefix are the
    # small-budget runs'
    limits = text.split("\n## Limits")[1]
    assert data["scope"]["stopped_early"] and "(the small-budget runs' training stopped early" in limits
    assert "- The small-budget runs' perplexities are measured on the first" in limits


@pytest.mark.parametrize("small, scaled, expected", [
    (True, False, " (the small-budget runs' training stopped early at the time budget; the at-scale runs finished "
                  "theirs)"),
    (False, True, " (the at-scale runs' training stopped early at the time budget; the small-budget runs finished "
                  "theirs)"),
    (True, True, " (training stopped early at the time budget in the small-budget and the at-scale runs)"),
    (False, False, "")])
def test_limits_say_whose_training_the_time_budget_cut(small, scaled, expected):
    from sdlaws.experiments.scope import _md_stopped_early

    assert _md_stopped_early({"stopped_early": small, "at_scale_sources": ["x.csv"],
                              "at_scale_stopped_early": scaled}) == expected
    assert _md_stopped_early({"stopped_early": small}) == (" (training stopped early at the time budget)"
                                                           if small else "")
