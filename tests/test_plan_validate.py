"""`sdlaws validate` pieces on synthetic inputs with known truth, and the command on the committed H100 pair."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sdlaws.cli import app
from sdlaws.plan.acceptance import engine_tree, prompt_profiles
from sdlaws.plan.validate import acceptance_models, fit_overheads

ROOT = Path(__file__).resolve().parents[1]


def test_overheads_recover_known_per_step_and_prefill_costs():
    rng = np.random.default_rng(0)
    n = 40
    method = rng.choice(["ar", "chain", "tree"], n)
    depth = np.where(method == "ar", 0, rng.integers(2, 7, n))
    forward = rng.uniform(1e-3, 5e-3, n)
    truth = np.where(method == "ar", 1e-4, 3e-4 + np.where(method == "tree", 2e-4 * (depth - 1), 0.0))
    prefill = rng.uniform(1e-3, 2e-2, n)
    parts = pd.DataFrame(dict(method=method, num_spec_tokens=depth, step_forward_s=forward,
                              step_meas_s=forward + truth, prefill_forward_s=prefill, prefill_meas_s=0.008 + prefill))
    fit = fit_overheads(parts)
    assert fit.ar_step_s == pytest.approx(1e-4) and fit.spec_step_s == pytest.approx(3e-4)
    assert fit.tree_level_s == pytest.approx(2e-4) and fit.prefill_fixed_s == pytest.approx(0.008)


def test_prompt_profiles_keep_the_mean_and_widen_with_lower_concentration():
    profile = ((0.6, 0.1), (0.5, 0.1))
    assert prompt_profiles(profile, None) == [profile]
    taus = {s: [engine_tree(p, 2, 2).tau for p in prompt_profiles(profile, s)] for s in (64.0, 4.0)}
    for values in taus.values():
        assert np.mean(values) == pytest.approx(engine_tree(profile, 2, 2).tau, rel=0.05)
    assert np.std(taus[4.0]) > 2 * np.std(taus[64.0])
    assert all(sum(row) <= 1 + 1e-12 for p in prompt_profiles(profile, 1.0) for row in p)


def _row(method, depth, topk, per_pos, per_rank, drafts):
    return dict(status="ok", method=method, num_spec_tokens=depth, tree_topk=topk, draft_name="d", temperature=0.0,
                num_drafts=drafts, num_accepted_per_pos=per_pos, num_accepted_per_rank=per_rank)


def test_acceptance_models_combine_chain_depth_rates_with_tree_rank_shares():
    rows = pd.DataFrame([_row("chain", 2, 1, [80, 40], [], 100), _row("tree", 2, 2, [90, 60], [120, 30], 100)])
    q = acceptance_models(rows)[("d", 0.0)]
    # depth rates from the chain (0.8, then 0.5), ranks split as 120 : 30 of the tree's accepted nodes
    assert q[0] == pytest.approx((0.8, 0.2)) and q[1] == pytest.approx((0.5, 0.125))


def test_validate_refuses_overlapping_sets_and_predicts_the_h100_pair(tmp_path):
    runner = CliRunner()
    m = ROOT / "measurements" / "throughput"
    bad = runner.invoke(app, ["validate", "--train", str(m / "heldout.csv"), "--heldout", str(m / "heldout.csv"),
                              "--steps", str(m / "step.csv")])
    assert bad.exit_code == 2 and "must not see its own data" in bad.output
    result = runner.invoke(app, ["validate", "--train", str(m / "topk-batch.csv"), "--heldout", str(m / "heldout.csv"),
                                 "--steps", str(m / "step.csv"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "17 held-out rows predicted, 4 not predicted" in result.output
    assert (tmp_path / "validation.json").exists() and (tmp_path / "validation.png").exists()


def test_spread_from_sequences_recovers_the_beta_concentration():
    from sdlaws.plan.validate import spread_from_sequences

    rng = np.random.default_rng(0)
    kappa, mu, n = 10.0, 0.6, 400
    drafts = rng.integers(100, 300, n)
    accepted = rng.binomial(drafts, rng.beta(kappa * mu, kappa * (1 - mu), n))  # chain gamma 1: one token a draft
    rows = pd.DataFrame([dict(num_spec_tokens=1, num_drafts_per_seq=str(list(map(int, drafts))),
                              num_accepted_per_seq=str(list(map(int, accepted))))])
    assert spread_from_sequences(rows) == pytest.approx(kappa, rel=0.25)
    same = rng.binomial(drafts, mu)  # every prompt alike: no excess spread beyond binomial noise
    alike = spread_from_sequences(rows.assign(num_accepted_per_seq=str(list(map(int, same)))))
    assert alike is None or alike > 100



def test_plan_serving_adds_the_overheads_validate_wrote(tmp_path):
    """`sdlaws plan serving --overheads DIR/validation.json` adds the engine's seconds per step: every predicted
    decode rate drops by exactly the added time, and the option needs --profile (exit 2, one line)."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from sdlaws.cli import app
    from sdlaws.plan.validate import load_overheads

    h200 = Path(__file__).resolve().parent.parent / "measurements" / "h200"
    (tmp_path / "validation.json").write_text(json.dumps({"inputs": {"overheads": dict(
        ar_step_s=1e-3, spec_step_s=2e-3, tree_level_s=5e-4, prefill_fixed_s=0.01)}}))
    assert load_overheads(tmp_path / "validation.json").spec_step_s == 2e-3
    base = ["plan", "serving", "--target", "random:llama-3.1-8b", "--draft", "random:llama-3.2-1b", "--hardware",
            "h200", "--steps", str(h200 / "steps.csv"), "--profile", str(h200 / "thm13-profile.json"),
            "--kv-len", "528", "--max-new-tokens", "32", "--batch", "1,64", "--json"]
    runner = CliRunner()
    plain, extra = (json.loads(runner.invoke(app, base + args).stdout)["tables"]["engine_candidates"]
                    for args in ([], ["--overheads", str(tmp_path / "validation.json")]))
    for p, e in zip(plain, extra, strict=True):
        added = {"ar": 1e-3, "chain": 2e-3, "tree": 2e-3 + 5e-4 * (p["num_spec_tokens"] - 1)}[p["method"]]
        assert e["step_s"] == pytest.approx(p["step_s"] + added)
        assert e["decode_tokens_per_s"] < p["decode_tokens_per_s"]
    refused = runner.invoke(app, ["plan", "serving", "--target", "random:llama-3.1-8b", "--overheads",
                                  str(tmp_path / "validation.json")])
    assert refused.exit_code == 2 and "--profile" in refused.output
    (tmp_path / "h100.json").write_text(json.dumps({"inputs": {"gpu": "NVIDIA H100 80GB HBM3", "overheads": dict(
        ar_step_s=1e-3, spec_step_s=2e-3, tree_level_s=5e-4, prefill_fixed_s=0.01)}}))
    other = runner.invoke(app, base + ["--overheads", str(tmp_path / "h100.json")])
    assert other.exit_code == 0 and "fitted on NVIDIA H100" in other.output
    same = runner.invoke(app, base + ["--overheads", str(tmp_path / "validation.json")])
    assert "warning: --overheads" not in same.output



def test_continuous_rows_are_predicted_with_refilled_slots():
    """validate predicts a held-out row measured with continuous batching at one row's pace: on the shipped H200
    pair suite, relabelled continuous, every speculative row needs at most the static prediction's steps per batch
    (fewer where prompts differ), AR rows the same, and speedups are over the AR row of the same mode."""
    from pathlib import Path

    from sdlaws.hardware import load_hardware
    from sdlaws.io import read_measurements
    from sdlaws.plan.cost import fit_steptime
    from sdlaws.plan.validate import fit_planner, predict

    pairs = Path(__file__).resolve().parent.parent / "measurements" / "h200" / "pairs"
    law = fit_steptime(read_measurements(pairs / "step.csv", table="step", ok_only=True), load_hardware("h200"))
    planner = fit_planner(read_measurements([pairs / "topk-batch.csv", pairs / "heldout-train.csv"], table="spec"),
                          law)
    held = read_measurements(pairs / "heldout.csv", table="spec")
    static = predict(planner, held).predicted()
    continuous = predict(planner, held.assign(batching="continuous")).predicted()
    spec = static["method"].ne("ar").to_numpy()
    steps_s, steps_c = static["steps_per_batch_pred"].to_numpy(), continuous["steps_per_batch_pred"].to_numpy()
    # at batch 1 both are one row's pace (two Monte Carlo simulations of it, 100 draws each: within 3%)
    assert (steps_c[spec] <= 1.03 * steps_s[spec]).all() and (steps_c[spec] < 0.9 * steps_s[spec]).any()
    assert np.allclose(steps_c[~spec], steps_s[~spec])
    assert continuous["speedup_pred"].notna().all()


def test_depth_acceptance_pools_only_rows_that_drafted_that_deep():
    from sdlaws.rates import depth_acceptance

    rows = pd.DataFrame(dict(num_spec_tokens=[2, 4], num_drafts=[100, 100],
                             num_accepted_per_pos=[[50, 25], [60, 30, 15, 6]]))
    assert depth_acceptance(rows) == pytest.approx([110 / 200, 55 / 110, 15 / 30, 6 / 15])


def test_draft_law_interpolates_in_perplexity_and_pools_only_measured_ranks():
    from sdlaws.plan.validate import fit_draft_law

    models = {("a", 0.0): ((0.8, 0.16), (0.7, 0.14)), ("b", 0.0): ((0.6,), (0.5,))}   # b: a chain-only draft
    law = fit_draft_law(models, {("a", 0.0): 8.0, ("b", 0.0): None}, {"a": 10.0, "b": 20.0})
    mid = law.profile(15.0, 0.0)
    assert [r[0] for r in mid] == pytest.approx([0.7, 0.6])
    assert [r[1] / r[0] for r in mid] == pytest.approx([0.2, 0.2])   # a's ratio, not halved by b's missing rank
    assert law.spreads[0.0] == 8.0 and not law.extrapolates(15.0, 0.0) and law.extrapolates(25.0, 0.0)
    assert law.profile(15.0, 1.0) is None                                   # no law at a temperature not fitted
    assert fit_draft_law({("a", 0.0): ((0.8,),)}, {}, {"a": 10.0}).profile(10.0, 0.0) is None   # one draft


def test_run_steps_schedules_later_prompts_into_freed_slots():
    """Every step commits 3 tokens (a depth-2 chain that always accepts): 9 tokens take 3 steps per row; five
    prompts over two slots finish at 3, 3, 6, 6 and 9 steps."""
    from sdlaws.plan.acceptance import run_steps

    always = np.array([0.0, 0.0, 1.0])
    assert run_steps(always, 10, 2, 5) == pytest.approx(9.0)
    assert run_steps(always, 10, 8, 5) == pytest.approx(3.0)                # fewer prompts than slots


def test_sampled_trees_are_not_predicted_from_chains():
    """At T > 0 a tree without sampled-tree training rows is reported, not predicted from the chain profile
    (which puts depth-1 acceptance at 0.94 where top-4 trees measured 0.51 on the H200 pair)."""
    from pathlib import Path

    from sdlaws.hardware import load_hardware
    from sdlaws.io import read_measurements
    from sdlaws.plan.cost import fit_steptime
    from sdlaws.plan.validate import fit_planner, predict

    pairs = Path(__file__).resolve().parent.parent / "measurements" / "h200" / "pairs"
    law = fit_steptime(read_measurements(pairs / "step.csv", table="step", ok_only=True), load_hardware("h200"))
    train = read_measurements([pairs / "topk-batch.csv", pairs / "heldout-train.csv"], table="spec")
    held = read_measurements(pairs / "heldout.csv", table="spec")
    tree_t1 = held["method"].eq("tree") & held["temperature"].eq(1.0) & held["status"].eq("ok")
    with_trees = predict(fit_planner(train, law), held).rows
    without = predict(fit_planner(train[~(train["method"].eq("tree") & train["temperature"].eq(1.0))], law),
                      held).rows
    assert tree_t1.sum() > 0
    assert with_trees.loc[with_trees["label"].str.startswith("tree") & with_trees["label"].str.endswith("T=1"),
                          "reason"].eq("").all()
    reasons = without.loc[without["label"].str.startswith("tree") & without["label"].str.endswith("T=1"), "reason"]
    assert reasons.str.contains("chains cannot stand in").all()
    assert without["reason"].str.startswith("not measured").sum() == (held["status"] != "ok").sum()


def test_leave_one_draft_out_predicts_each_draft_from_the_others_by_perplexity():
    """One target of the shipped H100 plane (8 drafts): every fold predicts the left-out draft's chain row
    through the draft law (it never trained on it), and no AR row (a training row of every fold) is reported."""
    from pathlib import Path

    from sdlaws.hardware import load_hardware
    from sdlaws.io import read_measurements
    from sdlaws.plan.cost import fit_steptime
    from sdlaws.plan.validate import leave_one_draft_out

    root = Path(__file__).resolve().parent.parent / "measurements"
    law = fit_steptime(read_measurements(root / "throughput/step.csv", table="step", ok_only=True),
                       load_hardware("h100"))
    plane = read_measurements(root / "acceptance/ppl-plane.csv", table="spec")
    one = plane[plane["target_name"].eq(plane["target_name"].iloc[0])]
    v = leave_one_draft_out(one, law)
    assert len(v.rows) == one["method"].ne("ar").sum() == v.inputs["folds"] == 8
    assert v.rows["method"].ne("ar").all() and v.rows["acceptance_from"].str.startswith("draft law").all()
    assert v.predicted()["tokens_per_s_pct"].abs().median() < 25
