"""`sdlaws experiment run ... --quick`: every experiment end to end on CPU with tiny models, valid rows, resumable."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sdlaws import io
from sdlaws.cli import app
from sdlaws.experiments import EXPERIMENTS

pytest.importorskip("sdlaws.measure.engine", reason="the measurement engine is not in this tree")

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus_dir(small_corpus):
    """The session's small corpus (conftest); the runner only reads it."""
    return small_corpus.path


def _suite(tmp_path, corpus_dir, *extra):
    args = ["experiment", "run", "suite", "--quick", "--work", str(tmp_path / "work"), "--out",
            str(tmp_path / "out"), "--corpus", str(corpus_dir), "--device", "cpu", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return tmp_path / "out"


@pytest.mark.slow
def test_suite_runs_every_experiment_and_resumes(tmp_path, corpus_dir):
    out = _suite(tmp_path, corpus_dir)
    counts = {}
    for name in EXPERIMENTS:
        df = io.read_measurements(out / f"{name}.csv", table="spec")   # validates against the schema
        assert df["status"].eq("ok").all(), df[["experiment", "error"]]
        assert df["experiment"].str.startswith(name).all() and df["git_sha"].ne("").all()
        assert df["method"].eq("ar").any() and df["method"].ne("ar").any()
        counts[name] = len(df)
    pre = io.read_measurements(out / "pretrain-tokens.csv")
    assert pre["draft_pretrain_tokens"].nunique() == 2   # both log-spaced checkpoints of the draft
    plane = io.read_measurements(out / "ppl-plane.csv")
    chain = plane[plane["method"].eq("chain")]
    assert chain["target_name"].nunique() == 2 and chain[["draft_ppl", "target_ppl"]].notna().all().all()
    assert set(io.read_measurements(out / "topk-batch.csv")["tree_topk"]) == {1, 2}
    labels = set(io.read_measurements(out / "collapse.csv")["experiment"])
    assert "collapse:fixed-k2" in labels and any(label.startswith("collapse:planned") for label in labels)
    assert len(io.read_measurements(out / "ppl.csv", table="ppl")) >= 5
    assert io.read_measurements(out / "step.csv", table="step")["status"].eq("ok").all()
    run = json.loads((out / "run.json").read_text())
    assert run["experiments"] == list(EXPERIMENTS) and run["corpus"]["corpus_sha256"]
    assert "hardware" in run["results"]["topk-batch"] and (out / "corpus-manifest.json").is_file()
    _suite(tmp_path, corpus_dir)   # re-run: models reused, every configuration already measured
    assert {name: len(io.read_measurements(out / f"{name}.csv")) for name in EXPERIMENTS} == counts


def test_single_experiment_writes_its_csv_and_shared_files_beside_it(tmp_path, corpus_dir):
    out = tmp_path / "m" / "heldout.csv"
    result = runner.invoke(app, ["experiment", "run", "heldout", "--quick", "--work", str(tmp_path / "w"),
                                 "--out", str(out), "--corpus", str(corpus_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    df = io.read_measurements(out)
    assert set(df["method"]) == {"ar", "chain"} and df["status"].eq("ok").all()
    assert (tmp_path / "m" / "heldout-ppl.csv").is_file() and (tmp_path / "m" / "heldout-run.json").is_file()


def test_budget_too_small_to_train_is_reported_not_crashed(tmp_path, corpus_dir):
    result = runner.invoke(app, ["experiment", "run", "draft-depth", "--quick", "--budget-s", "0.01", "--work",
                                 str(tmp_path / "w"), "--out", str(tmp_path / "d.csv"), "--corpus", str(corpus_dir),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "note: draft-depth: model L2-H64-T1.28k-s0 has no checkpoint" in result.stdout
    assert not (tmp_path / "d.csv").exists()
    assert json.loads((tmp_path / "d-run.json").read_text())["train"]["stopped_early"] is True


def test_head_depth_trains_heads_and_measures_them_beside_the_lm_drafts(tmp_path, corpus_dir):
    out = tmp_path / "m" / "head-depth.csv"
    args = ["experiment", "run", "head-depth", "--quick", "--work", str(tmp_path / "w"), "--out", str(out),
            "--corpus", str(corpus_dir), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    df = io.read_measurements(out)
    assert df["status"].eq("ok").all()
    chains = df[df["method"].eq("chain")]
    heads = chains[chains["draft_kind"].eq("head")]
    assert sorted(heads["draft_layers"]) == [1, 2] and chains["draft_kind"].eq("").sum() == 2   # + 2 LM drafts
    assert heads["num_accepted_per_seq"].ne("").all() and heads["draft_time_s"].gt(0).all()
    run = json.loads((tmp_path / "m" / "head-depth-run.json").read_text())
    assert run["notes"] == []   # nothing failed or was skipped
    top1 = run["results"]["head-depth"]["heads"]
    assert sorted(h["layers"] for h in top1.values()) == [1, 2]
    assert all(0 <= h["heldout_top1"] <= 1 and h["heldout_positions"] > 0 for h in top1.values())
    heads_dir = next((tmp_path / "w" / "quick").glob("models-*/heads-*"))
    assert sorted(p.name for p in heads_dir.iterdir() if p.is_dir()) == ["head-L1-T640-s0", "head-L2-T640-s0"]
    assert runner.invoke(app, args).exit_code == 0   # re-run: heads resumed (finished), rows already measured
    assert len(io.read_measurements(out)) == len(df)


@pytest.mark.parametrize("train_only", [True, False])
def test_train_only_commands_keep_no_measurement_time(tmp_path, corpus_dir, monkeypatch, train_only):
    """A ``--train-only`` command trains until the budget's margin (what the dry run's command count assumes); a
    command that measures stops training ``reserve_s`` earlier."""
    from dataclasses import replace

    from sdlaws.experiments import runner
    from sdlaws.experiments.context import Layout
    from sdlaws.experiments.scale import QUICK

    class Limit(Exception):
        pass

    def train_family(specs, corpus, models_dir, config, progress):
        raise Limit(config.time_limit_s)

    monkeypatch.setattr(runner, "train_family", train_family)
    out = tmp_path / "out" / "pretrain-tokens.csv"
    scale = replace(QUICK, reserve_s={"pretrain-tokens": 120.0})
    plan = runner.RunPlan(("pretrain-tokens",), scale, tmp_path / "work", Layout.for_single("pretrain-tokens", out),
                          600.0, corpus_dir, "cpu")
    assert plan.reserve_s == 120.0
    with pytest.raises(Limit) as limit:
        runner.run(plan, progress=False, train_only=train_only)
    expected = 600.0 - runner.MARGIN_S - (0.0 if train_only else plan.reserve_s)
    assert expected - 30 < limit.value.args[0] <= expected   # less the seconds the corpus and prompts took


def test_wsd_scale_measures_finished_branches_of_every_seed_after_train_only(tmp_path, corpus_dir):
    """A scale with ``schedule="wsd"`` and two seeds: ``--train-only`` trains and measures nothing; the next run
    measures each seed's cool-down branches (finished runs), one per log-spaced budget."""
    from dataclasses import replace

    from sdlaws.experiments.context import Layout
    from sdlaws.experiments.runner import RunPlan, run
    from sdlaws.experiments.scale import QUICK

    scale = replace(QUICK, name="quick-wsd", schedule="wsd", seeds=(0, 1), pretrain_first_fraction=0.5)
    out = tmp_path / "out" / "pretrain-tokens.csv"
    plan = RunPlan(("pretrain-tokens",), scale, tmp_path / "work", Layout.for_single("pretrain-tokens", out), None,
                   corpus_dir, "cpu")
    assert "schedule: wsd" in plan.summary() and "L1-H32-T1.28k-s1" in plan.summary()
    trained = run(plan, progress=False, train_only=True)
    assert not trained.train.stopped_early and not out.exists()
    run(plan, progress=False)
    rows = io.read_measurements(out)
    spec = rows[rows["method"].ne("ar")]
    assert spec["draft_name"].str.contains("/decay-").all()
    assert set(spec["draft_name"].str.extract(r"-s(\d)/")[0]) == {"0", "1"}
    assert spec.groupby(spec["draft_name"].str.extract(r"-s(\d)/")[0])["draft_pretrain_tokens"].nunique().eq(2).all()
