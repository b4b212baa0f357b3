"""Experiment registry, layouts, ordering, time arithmetic and the collapse planner (no models needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sdlaws.cli import app
from sdlaws.errors import ConfigError
from sdlaws.experiments import GROUPS, SCALES, plan, resolve_names
from sdlaws.experiments.collapse import planned_widths
from sdlaws.experiments.context import Context, Layout, spread
from sdlaws.experiments.scale import H100, QUICK, estimate_train_s

REPO = Path(__file__).resolve().parents[1]


def test_spread_covers_every_item_once_extremes_first():
    for n in range(0, 13):
        order = spread(list(range(n)))
        assert sorted(order) == list(range(n))
        if n >= 3:
            assert order[:3] == [n - 1, 0, (n - 1) // 2]


def test_names_groups_and_errors():
    assert resolve_names("suite", "acceptance") == list(GROUPS["acceptance"])
    assert resolve_names("suite", "heldout,topk-batch") == ["topk-batch", "heldout"]
    assert resolve_names("collapse") == ["collapse"]
    with pytest.raises(ConfigError, match="unknown experiment"):
        resolve_names("suite", "nope")
    with pytest.raises(ConfigError, match="--only applies"):
        resolve_names("collapse", "heldout")


def test_layouts():
    single = Layout.for_single("heldout", Path("m/held.csv"))
    assert single.spec("heldout") == Path("m/held.csv") and single.file("ppl.csv") == Path("m/held-ppl.csv")
    assert single.spec("topk-batch") == Path("m/held-topk-batch.csv")
    suite = Layout.for_suite(Path("out"))
    assert suite.spec("collapse") == Path("out/collapse.csv") and suite.file("run.json") == Path("out/run.json")


def test_suite_models_are_shared_and_the_estimate_agrees_with_the_committed_run():
    acceptance = plan(list(GROUPS["acceptance"]), suite=True)
    names = [m.name for m in acceptance.models]
    assert len(names) == len(set(names)) and "L8-H512-T50M-s0" in names   # the main target is trained once
    # the committed h100 acceptance run stopped its models at its budget; the estimate says so too
    run = json.loads((REPO / "measurements" / "acceptance" / "run.json").read_text())
    train_s = sum(estimate_train_s(m, H100) for m in acceptance.models)
    assert run["train"]["stopped_early"] and train_s + acceptance.reserve_s > run["budget_s"]
    assert len(H100.targets) >= 3 and len(H100.plane_drafts) >= 4
    assert min(l for l, _ in H100.depth_drafts) == 1 and max(l for l, _ in H100.depth_drafts) == 8
    tokens = [c for c in H100.spec(H100.pretrain_draft, H100.pretrain_draft_tokens,
                                   H100.pretrain_checkpoints).checkpoint_steps(H100.tokens_per_step)]
    assert np.log10(tokens[-1] / tokens[0]) >= 2.5    # the pretraining axis spans ~3 decades


@pytest.mark.parametrize("experiment, tolerance", [("pretrain-tokens", 0.10), ("ppl-plane", 0.20)])
def test_estimates_match_the_step_times_of_the_science_runs(experiment, tolerance):
    """The training-time model against the committed h200-science runs: each model's measured seconds per
    optimizer step (tokens per step / its tokens per second) within ``tolerance`` of the estimate. The plane's
    drafts of width 64 run at ~1% MFU, where fixed per-step costs that the model scales with the width show (0.84x)."""
    from sdlaws.experiments.scale import H200_SCIENCE as s, estimate_step_s

    run = json.loads((REPO / "measurements" / "h200" / "science" / f"{experiment}-run.json").read_text())
    for checkpoints in run["train"]["checkpoints"].values():
        last = checkpoints[-1]
        measured = s.tokens_per_step / last["tokens_per_s"]
        estimated = estimate_step_s(s.spec((last["layers"], last["hidden_size"]), s.tokens_per_step), s, s.hardware)
        assert estimated == pytest.approx(measured, rel=tolerance), last["name"]


def test_estimates_grow_with_budget_and_size():
    small, big = H100.spec((2, 256), 10_000_000), H100.spec((2, 256), 20_000_000)
    assert estimate_train_s(big, H100) == pytest.approx(2 * estimate_train_s(small, H100), rel=0.01)  # whole steps
    assert estimate_train_s(H100.spec((12, 768), 10_000_000), H100) > estimate_train_s(small, H100)


def test_scale_rejects_workloads_beyond_the_trained_positions():
    from dataclasses import replace

    with pytest.raises(ConfigError, match="positions"):
        replace(QUICK, max_new_tokens=64)


def _rows(best_k: dict[int, int]) -> pd.DataFrame:
    """Synthetic grid rows whose throughput peaks at ``best_k[batch]``."""
    rows = []
    for batch, best in best_k.items():
        for k in (1, 2, 4, 8, 16):
            rows.append({"batch_size": batch, "tree_topk": k, "method": "tree" if k > 1 else "chain",
                         "tokens_per_s": 100.0 * batch - (np.log2(k) - np.log2(best)) ** 2})
    return pd.DataFrame(rows)


def test_collapse_plans_width_from_the_fitted_law():
    ctx = Context(replace_scale(collapse_batch_sizes=(256,)), None, None, {}, "cpu", "float32", Path("p"))
    widths, source = planned_widths(ctx, _rows({1: 16, 4: 8, 16: 4, 64: 2}))   # k* = 16 B^-1/2
    assert source == "law" and widths == {256: 1}
    assert ctx.results["collapse"]["topk_batch_fit"]["law"] == "topk_batch"


def test_collapse_falls_back_to_the_measured_optimum_when_the_law_is_degenerate():
    ctx = Context(replace_scale(collapse_batch_sizes=(64,)), None, None, {}, "cpu", "float32", Path("p"))
    widths, source = planned_widths(ctx, _rows({1: 4, 2: 4}))
    assert source == "empirical" and widths == {64: 4} and "not fitted" in ctx.notes[0]


def replace_scale(**changes):
    from dataclasses import replace

    return replace(H100, **changes)


def test_dry_run_lists_models_and_estimates():
    result = CliRunner().invoke(app, ["experiment", "run", "suite", "--only", "throughput", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "L12-H768-T50M-s0" in result.stdout and "estimated training time" in result.stdout
    listing = CliRunner().invoke(app, ["experiment", "--list"])
    assert all(name in listing.stdout for name in ("pretrain-tokens", "collapse", "suite --only acceptance"))
    bare = CliRunner().invoke(app, ["experiment"])
    assert bare.exit_code == 0 and all(cmd in bare.stdout for cmd in ("run", "report", "cost-model"))
    assert set(SCALES) == {"h100", "h200", "quick", "h200-science"}


def test_science_scale_tests_the_acceptance_laws_in_their_regime():
    """h200-science: Thm 1.1 over >= 2 decades of finished WSD runs up to >= 30 tokens per parameter, targets at
    >= 20 tokens per parameter, a plane of >= 4 targets x >= 6 drafts, two seeds, T = 0 and 1, and a dry run
    that says how many resumable commands the training needs."""
    from sdlaws.experiments import registry
    from sdlaws.experiments.runner import commands_line, plan
    from sdlaws.experiments.scale import H200_SCIENCE as s

    target, *drafts = registry.get("pretrain-tokens").models(s)
    steps = drafts[0].checkpoint_steps(s.tokens_per_step)
    assert s.schedule == "wsd" and len(drafts) == len(s.seeds) >= 2
    assert np.log10(steps[-1] / steps[0]) >= 2 and drafts[0].tokens / drafts[0].params(s.vocab_size) >= 30
    warmup = s.warmup_fraction * steps[-1]
    assert steps[0] * (1 - s.decay_fraction) > warmup   # the first branch leaves the trunk after the warm-up
    plane = registry.get("ppl-plane").models(s)
    assert len(s.targets) >= 4 and len(s.plane_drafts) >= 6 and set(s.plane_temperatures) == {0.0, 1.0}
    assert target.tokens / target.params(s.vocab_size) >= 20
    assert all(spec.tokens / spec.params(s.vocab_size) >= 10 for spec in plane[:len(s.targets)])
    # the plane trains, builds its corpus (~170 s on an H200) and measures within one 30-minute lease
    planned = plan(["ppl-plane"], scale="h200-science")
    assert sum(estimate_train_s(m, s, s.hardware) for m in planned.models) + 170 + planned.reserve_s < 25 * 60
    text = planned.summary()
    assert "est. H200 s" in text and "with --train-only" in text
    assert commands_line(100, 200, 540).startswith("commands of 540 s: 0 with --train-only")
    assert s.corpus_native_and_docs and s.corpus_max_tokens is None   # all the machine's text, no cap
    assert commands_line(1000, 200, 540).startswith("commands of 540 s: 2 with --train-only")


def test_the_runner_builds_the_scales_corpus_from_its_settings(tmp_path, monkeypatch):
    """Corpus settings of a scale reach build_corpus (h200-science: C/C++/CUDA sources and docs besides Python)."""
    from sdlaws.experiments import runner
    from sdlaws.experiments.scale import H200_SCIENCE

    seen = {}
    monkeypatch.setattr(runner, "build_corpus", lambda out, config, progress: seen.setdefault("config", config))
    plan = runner.plan(["pretrain-tokens"], scale="h200-science", work=tmp_path)
    runner._corpus(plan, progress=False)
    config = seen["config"]
    assert config.native_and_docs and config.max_tokens is None and config.vocab_size == H200_SCIENCE.vocab_size
