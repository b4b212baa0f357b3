"""Conclusion rules of the generated documents, on inputs that flip each verdict; and the cost-model document
regenerated from the committed CSVs equals the committed one."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sdlaws.experiments import verdicts

ROOT = Path(__file__).resolve().parents[1]


def test_goal_flips_at_the_limit():
    assert "meets the goal of at most 3%" in verdicts.goal(2.99, 3.0, "x")
    assert "meets" in verdicts.goal(3.0, 3.0, "x")
    assert "misses the goal of at most 3%" in verdicts.goal(3.01, 3.0, "x")


def test_share_goal_flips_at_the_share():
    assert "meets" in verdicts.share_goal(8, 10, 0.8, "x") and "at 8 of 10" in verdicts.share_goal(8, 10, 0.8, "x")
    assert "misses" in verdicts.share_goal(7, 10, 0.8, "x")
    assert "misses" in verdicts.share_goal(0, 0, 0.8, "x")


@pytest.mark.parametrize("p,lo,hi,batches,expected", [
    (0.5, 0.3, 0.7, 5, "consistent with B^(-1/2)"),
    (0.9, 0.7, 1.1, 5, "not like B^(-1/2)"),
    (0.1, -0.1, 0.3, 5, "no significant shrinkage"),
    (0.2, -0.1, 0.5, 5, "cannot tell"),                  # the interval holds 0 and 1/2
    (0.5, 0.3, 0.7, 2, "not testable"),
])
def test_topk_shrinkage_verdicts(p, lo, hi, batches, expected):
    assert expected in verdicts.topk_shrinkage(p, lo, hi, batches)


def test_stops_paying_finds_the_first_batch_from_which_ar_always_wins():
    b = np.array([1, 4, 16, 64])
    assert "from batch 16" in verdicts.stops_paying(b, np.array([1.4, 1.1, 0.9, 0.8]))
    assert "still pays" in verdicts.stops_paying(b, np.array([1.4, 1.1, 0.9, 1.02]))  # wins again at 64
    assert "does not pay at any" in verdicts.stops_paying(b, np.array([0.9, 0.9, 0.9, 0.9]))


def test_censored_batches_are_those_whose_optimum_is_the_largest_topk_measured():
    optimum = pd.DataFrame({"batch_size": [1, 1, 8, 8], "tree_topk": [32, 16, 4, 2], "topk_max": [32, 32, 16, 16]})
    assert verdicts.censored_batches(optimum) == [1]
    assert verdicts.censored_batches(optimum.assign(tree_topk=[16, 16, 4, 2])) == []


def test_cost_model_document_is_what_the_committed_csvs_give(tmp_path):
    from sdlaws.experiments.costmodel import analyse
    from sdlaws.experiments.costmodel_doc import render

    text = render(analyse(ROOT / "measurements"), tmp_path, root=ROOT / "measurements")
    assert text == (ROOT / "docs" / "cost-model.md").read_text()


# ------------------------------------------------------------------------------------- the results document

def test_combine_keeps_a_common_label_and_lets_one_failure_decide():
    assert verdicts.combine(["holds", "holds"]) == "holds"
    assert verdicts.combine(["not testable"]) == "not testable"
    assert verdicts.combine(["holds", "partly", "not testable"]) == "partly"
    assert verdicts.combine(["holds", "fails"]) == "fails"


@pytest.mark.parametrize("sign,decades,curvature_p,aic_gap,expected", [
    (1, 2.0, 0.5, 2.0, "holds"),            # slope above 0, straight, saturating not preferred
    (1, 0.8, 0.5, 2.0, "not testable"),     # under one decade of tokens
    (0, 2.0, 0.5, 2.0, "fails"),            # interval holds 0
    (-1, 2.0, 0.5, 2.0, "fails"),           # significantly negative
    (1, 2.0, 0.01, 2.0, "partly"),          # bends
    (1, 2.0, 0.5, -3.0, "partly"),          # saturating law preferred by AIC
    (1, 2.0, 0.5, -1.0, "holds"),           # an AIC difference under the margin does not choose
])
def test_loglinear_law_verdicts(sign, decades, curvature_p, aic_gap, expected):
    assert verdicts.loglinear_law(sign, decades, min_decades=1.0, curvature_p=curvature_p, aic_gap=aic_gap) == expected


def test_loglinear_law_without_shape_tests_decides_on_the_slope():
    assert verdicts.loglinear_law(1, 0.9, min_decades=0.5) == "holds"
    assert verdicts.loglinear_law(0, 0.9, min_decades=0.5) == "fails"
    assert verdicts.loglinear_law(1, 0.3, min_decades=0.5) == "not testable"


def test_slope_signs_names_each_group():
    assert "positive in every group" in verdicts.slope_signs({"a": 1, "b": 1})
    text = verdicts.slope_signs({"a": -1, "b": 0, "c": 0})
    assert "significantly negative for a" in text and "not significant for b, c" in text and "never" in text
    assert "never" not in verdicts.slope_signs({"a": 1, "b": 0})


def test_curvature_says_convex_concave_or_straight():
    assert "accelerates" in verdicts.curvature({"a": (0.2, 0.01), "b": (0.1, 0.001)})
    assert "flattens" in verdicts.curvature({"a": (-0.2, 0.01), "b": (-0.1, 0.001)})
    assert "not rejected" in verdicts.curvature({"a": (0.2, 0.2), "b": (-0.1, 0.5)})
    assert "a (convex) only" in verdicts.curvature({"a": (0.2, 0.01), "b": (-0.1, 0.5)})


def test_saturating_alternative_degenerate_preferred_or_not():
    assert "does not converge" in verdicts.saturating_alternative({"a": 0.0005}, {"a": 2.0})
    assert "prefers the saturating law for a" in verdicts.saturating_alternative({"a": 0.4}, {"a": -5.0})
    assert "does not prefer" in verdicts.saturating_alternative({"a": 0.4}, {"a": 1.0})


@pytest.mark.parametrize("label,expected", [("holds", "as Thm 1.1 states"), ("partly", "direction of Thm 1.1 holds"),
                                            ("fails", "not found in 1 of 4"), ("not testable", "0.80 decades")])
def test_thm11_conclusion_follows_the_label(label, expected):
    assert expected in verdicts.thm11_conclusion(label, positive=3, bent=2, groups=4, decades=0.8, min_decades=1.0)


def test_curve_shape_needs_a_significant_term():
    assert verdicts.curve_shape(0.2, 0.01) == "convex" and verdicts.curve_shape(-0.2, 0.01) == "concave"
    assert verdicts.curve_shape(-0.2, 0.2) == "not significant" == verdicts.curve_shape(0.2, 0.05)


_CONVEX = {"T=0": (0.14, 0.006), "T=1": (0.06, 0.014)}


def test_upper_half_reading_flips_when_the_full_range_accelerates_and_the_upper_half_flattens():
    text = verdicts.upper_half_reading(_CONVEX, {"T=0": (-0.8, 0.0003), "T=1": (-0.4, 0.0001)},
                                       {"T=0": -31.0, "T=1": -29.5}, rising=2)
    assert text.startswith("The curvature flips between the two readings: over the full range acceptance "
                           "accelerates with log tokens (convex in every group), in the upper half it flattens "
                           "(concave in every group), so the full range's convexity comes from the checkpoints "
                           "below the window")
    assert "slope is significantly positive in 2 of 2 groups" in text
    assert "AIC prefers the saturating law in every group (AIC(saturating) - AIC(loglinear) = -31 / -30)" in text
    # the reverse flip names no onset
    text = verdicts.upper_half_reading({"T=0": (-0.8, 0.001)}, {"T=0": (0.3, 0.01)}, {"T=0": 2.0}, rising=1)
    assert "curvature flips" in text and "flattens (concave in every group), in the upper half it accelerates" in text
    assert "onset" not in text and "does not prefer the saturating law in any group" in text


def test_upper_half_reading_without_a_flip():
    # an insignificant upper-half term: the shape changes, it does not flip
    text = verdicts.upper_half_reading(_CONVEX, {"T=0": (-0.8, 0.3), "T=1": (0.1, 0.4)}, {"T=0": 2.0, "T=1": 2.1},
                                       rising=1)
    assert text.startswith("The shape changes between the two readings") and "flips" not in text
    assert "it shows no significant bend (quadratic term not significant in any group)" in text and "1 of 2 groups" in text
    # the same shape in both windows
    text = verdicts.upper_half_reading(_CONVEX, {"T=0": (0.5, 0.01), "T=1": (0.2, 0.02)}, {"T=0": 2.0, "T=1": 2.0},
                                       rising=2)
    assert text.startswith("The upper half has the full range's shape in log tokens (convex in every group")
    assert "flips" not in text and "onset" not in text
    # one group changes, one saturates
    text = verdicts.upper_half_reading(_CONVEX, {"T=0": (-0.8, 0.001), "T=1": (0.2, 0.02)},
                                       {"T=0": -5.0, "T=1": 2.0}, rising=2)
    assert "changes from the full range to the upper half in 1 of 2 groups: T=0 (convex -> concave)" in text
    assert "prefers the saturating law for T=0 only" in text and "flips" not in text


def test_warmup_checkpoints_counts_them_or_says_none():
    assert verdicts.warmup_checkpoints(4, "1.5M") == "the first 4 lie in the warm-up (up to 1.5M tokens)"
    assert verdicts.warmup_checkpoints(0, "850k") == "none lies in the warm-up (up to 850k tokens)"


# ------------------------------------------------------------------- at-scale runs and small-budget runs

@pytest.mark.parametrize("schedule,stopped,expected", [
    ("wsd", False, "finished WSD runs"), ("wsd", True, "WSD runs cut by the time budget"),
    ("cosine", True, "cosine snapshots, cut by the time budget"),
    ("cosine", False, "cosine runs to the end of their schedules")])
def test_schedule_label(schedule, stopped, expected):
    assert verdicts.schedule_label(schedule, stopped) == expected


def test_tokens_per_param_flips_at_compute_optimal():
    assert "20 tokens per parameter, at least the ~20" in verdicts.tokens_per_param(20.0, 20.0)
    assert "20-21.5 tokens per parameter, at least" in verdicts.tokens_per_param(20.0, 21.5)
    below = verdicts.tokens_per_param(19.9, 25.0)
    assert "below the ~20 of compute-optimal training" in below and "under-trained" in below


def test_epochs_seen_flips_beyond_the_useful_epochs():
    within = verdicts.epochs_seen(1.6, 3.8)
    assert "at most 1.6 epochs of it, the targets at most 3.8: within the ~4 epochs" in within
    beyond = verdicts.epochs_seen(4.5, 3.8)
    assert "beyond the ~4 epochs" in beyond and "count for less" in beyond


def test_seed_noise_needs_two_seeds_resampled():
    assert "so it includes seed-to-seed noise" in verdicts.seed_noise(2, resampled=True)
    assert "leave seed-to-seed noise out" in verdicts.seed_noise(2, resampled=False)
    assert verdicts.seed_noise(1, resampled=True).startswith("One training seed: the intervals cannot include")
    drafts_only = verdicts.seed_noise(2, resampled=True, targets_seeded=False)
    assert "the drafts' seed-to-seed noise, not the targets'" in drafts_only
    assert "leave seed-to-seed noise out" in verdicts.seed_noise(2, resampled=False, targets_seeded=False)


def test_runs_agree_names_the_verdict_the_summary_reports():
    assert verdicts.runs_agree("holds", "holds") == "Their verdict, holds, is the at-scale runs' too."
    differs = verdicts.runs_agree("holds", "partly")
    assert "partly, differs from the at-scale runs' (holds), which the summary reports" in differs


def test_depth_perplexity_and_conclusion():
    assert "higher perplexity than the shallowest in every width" in verdicts.depth_perplexity({"w": (30, 40)})
    assert "lower perplexity" in verdicts.depth_perplexity({"w": (40, 30)})
    assert "for v only" in verdicts.depth_perplexity({"v": (30, 40), "w": (40, 30)})
    assert "fixed token budget" in verdicts.depth_conclusion("fails", deeper_worse=True)
    assert "no worse language models" in verdicts.depth_conclusion("fails", deeper_worse=False)
    assert "as Thm 1.2 states" in verdicts.depth_conclusion("holds", deeper_worse=True)


def test_rerun_slopes():
    assert verdicts.rerun_slopes({"a": -1}, {"a": 0}).startswith("With more training the negative slopes disappear")
    assert "but no group shows" in verdicts.rerun_slopes({"a": -1}, {"a": 0})
    assert verdicts.rerun_slopes({"a": -1}, {"a": -1}).startswith("Negative slopes remain")
    assert "depth now helps for a" in verdicts.rerun_slopes({"a": 0}, {"a": 1})


@pytest.mark.parametrize("sign,targets,drafts,expected", [
    (1, 4, 6, "holds"), (0, 4, 6, "fails"), (-1, 4, 6, "fails"),
    (1, 3, 8, "not testable"), (1, 8, 5, "not testable"), (0, 3, 8, "not testable")])
def test_plane_coefficient_reads_the_two_way_interval_only_with_enough_units(sign, targets, drafts, expected):
    assert verdicts.plane_coefficient(sign, 1, targets, drafts) == expected


def test_plane_coefficient_sentence_says_what_too_few_units_can_and_cannot_say():
    few = verdicts.plane_coefficient_sentence("A", "not testable", -0.0047, (-0.0068, -0.0029), -1, 3, 8)
    assert "over 3 targets x 8 drafts" in few and "excludes 0" in few and "not testable" in few
    assert "a description of these models, not a test" in few
    assert "description" not in verdicts.plane_coefficient_sentence("B", "not testable", 0.008, (-0.005, 0.014), 1,
                                                                    3, 8)
    assert verdicts.plane_coefficient_sentence("B", "holds", 0.01, (0.004, 0.02), 1, 5, 8).endswith("holds.")
    assert "not found: fails" in verdicts.plane_coefficient_sentence("B", "fails", 0.01, (-0.004, 0.02), 1, 5, 8)
    assert "opposite sign" in verdicts.plane_coefficient_sentence("B", "fails", -0.01, (-0.02, -0.004), 1, 5, 8)


@pytest.mark.parametrize("gap,errors,expected", [
    (-5.0, {"draft": (0.03, 0.02), "target": (0.05, 0.04)}, "log"),
    (-5.0, {"draft": (0.03, 0.02), "target": (0.04, 0.05)}, "undecided"),   # out of sample disagrees
    (5.0, {"draft": (0.02, 0.03), "target": (0.04, 0.05)}, "linear"),
    (1.0, {"draft": (0.02, 0.03), "target": (0.04, 0.05)}, "undecided"),    # within the AIC margin
    (-5.0, {"draft": (0.03, 0.02), "target": (None, None)}, "log")])        # a direction without a left-out fit
def test_plane_form_needs_aic_and_out_of_sample_error_to_agree(gap, errors, expected):
    assert verdicts.plane_form(gap, errors) == expected
    text = verdicts.plane_form_sentence(expected, gap, errors)
    assert ("do not choose" in text) == (expected == "undecided")


def test_shared_units_caveat_only_when_rows_share_units():
    assert "share 3 target perplexities" in verdicts.shared_units("B", (0.004, 0.012), 24, 3, "target perplexities")
    assert verdicts.shared_units("B", (0.004, 0.012), 24, 24, "targets") == ""


def test_published_transfer():
    assert "Every published coefficient" in verdicts.published_transfer([])
    assert "outside their test intervals: A, B" in verdicts.published_transfer(["A", "B"])


@pytest.mark.parametrize("lo,hi,batches,expected", [
    (0.3, 0.7, 5, "holds"), (0.7, 1.1, 5, "partly"), (-0.1, 0.9, 8, "not testable"), (-0.2, 0.3, 8, "fails"),
    (-0.9, -0.2, 8, "fails"), (0.3, 0.7, 2, "not testable")])
def test_topk_label(lo, hi, batches, expected):
    assert verdicts.topk_label((lo + hi) / 2, lo, hi, batches) == expected


def test_topk_shrinkage_says_when_k_grows():
    assert "grows with batch size" in verdicts.topk_shrinkage(-0.5, -0.9, -0.2, 8)


def test_monotone():
    assert "does not grow" in verdicts.monotone([1, 2, 4], [16, 8, 8])
    assert "does not shrink" in verdicts.monotone([4, 1, 2], [8, 1, 4])
    assert "not monotone" in verdicts.monotone([1, 2, 4], [16, 1, 4])


def test_calibration_transfer_and_efficiency_shift():
    assert "does not transfer" in verdicts.calibration_transfer(7.6, 113.0, 50.6)
    assert "transfers: it does better" in verdicts.calibration_transfer(7.6, 20.0, 50.6)
    assert "below" in verdicts.efficiency_shift({"a": 0.2, "b": 0.3})
    assert "above" in verdicts.efficiency_shift({"a": 1.2})
    assert "both ways" in verdicts.efficiency_shift({"a": 0.2, "b": 3.0})


def test_verify_cost():
    assert "not free" in verdicts.verify_cost(1.27, 1.0, 3, "At batch 1")
    assert "as the calibrated roofline says" in verdicts.verify_cost(1.05, 1.0, 3, "At batch 1")


def test_collapse_and_whether_speculation_pays():
    assert verdicts.collapse({128: 0.7, 256: 0.5}).startswith("The collapse appears:")
    assert verdicts.collapse({128: 1.1, 256: 1.2}).startswith("No collapse")
    assert "at B=256 only" in verdicts.collapse({128: 1.1, 256: 0.5})
    assert "not to speculate" in verdicts.speculation_pays([0.3, 0.4, 0.2])
    assert "beats AR (1.2x)" in verdicts.speculation_pays([0.3, 1.2])
    assert "the fastest configuration there" in verdicts.fastest_there(1.08, True)
    assert "fastest" not in verdicts.fastest_there(0.9, True) and "fastest" not in verdicts.fastest_there(1.2, False)


def test_cheaper_draft():
    assert "cheaper than the 1B-shape draft's at every" in verdicts.cheaper_draft([0.5, 0.7], [1, 64])
    assert "not cheaper" in verdicts.cheaper_draft([1.1, 1.3], [1, 64])
    mixed = verdicts.cheaper_draft([0.5, 1.2, 1.3], [1, 64, 64])
    assert "cheaper at 1 of 3" in mixed and mixed.endswith("not at batch 64")


def test_not_predicted_and_heldout_loss():
    assert "Every one of the 5" in verdicts.not_predicted([], 5)
    text = verdicts.not_predicted([("chain g=3", "L4-H128", "no training acceptance")], 5)
    assert "1 of 5 rows" in text and "no training acceptance: chain g=3 <- L4-H128" in text
    assert "draft law" not in text and "failed" not in text
    law = verdicts.not_predicted([("chain g=3", "L4-H128", "fewer than two training drafts for the draft law")], 5)
    assert "predicted from its perplexity only where" in law
    lost = verdicts.not_predicted([("ar b=1 T=0", "", "not measured (the run failed: OOM)")] * 3, 5)
    assert "has no measurement to compare" in lost and "perplexity" not in lost
    assert "3 of 5 rows" in lost and lost.count("ar b=1 T=0") == 1 and "OOM): ar b=1 T=0 (3 rows)" in lost
    two = verdicts.not_predicted([("a", "", "r1"), ("b", "d", "r2"), ("c", "", "r1")], 5)
    assert "r1: a, c; r2: b <- d" in two and "defect" not in two   # one entry per reason, its configurations after
    assert "not a measurement of the engine" in verdicts.not_predicted([("a", "d", "a known engine defect (x)")], 5)
    assert "likely reason held-out NLL is below" in verdicts.heldout_loss(1.7, 3.5, "m")
    assert "not below" in verdicts.heldout_loss(3.6, 3.5, "m")


@pytest.mark.parametrize("sign, aic_gap, decades, expected", [
    (1, -1.0, 0.9, "log-linear"),          # AIC gap under the margin: no preference for a ceiling
    (1, None, 0.9, "log-linear"),          # saturating law did not fit
    (1, -5.0, 0.9, "saturating"),
    (0, -5.0, 0.9, "flat"),                # no significant rise: the ceiling does not matter
    (-1, None, 0.9, "flat"),
    (1, -5.0, 0.3, "not testable"),        # 1-2 layers span 0.3 decades
])
def test_head_depth_shape(sign, aic_gap, decades, expected):
    assert verdicts.head_depth_shape(sign, aic_gap, decades, min_decades=0.5) == expected


def test_head_depth_sentence_and_labels_follow_the_shapes():
    assert "log-linearly" in verdicts.head_depth_sentence({"T=0": "log-linear", "T=1": "log-linear"})
    assert "saturates" in verdicts.head_depth_sentence({"T=0": "saturating", "T=1": "saturating"})
    assert "not found" in verdicts.head_depth_sentence({"T=0": "flat"})
    mixed = verdicts.head_depth_sentence({"T=0": "log-linear", "T=1": "flat"})
    assert "T=0: log-linear" in mixed and "T=1: flat" in mixed
    assert [verdicts.HEAD_SHAPE_LABELS[s] for s in ("log-linear", "saturating", "flat")] == ["holds", "partly", "fails"]


def test_depth_or_quality_flips_with_the_two_slopes():
    assert "better one-step drafters" in verdicts.depth_or_quality(1, 1)
    assert "beyond one-step agreement" in verdicts.depth_or_quality(1, 0)
    assert "do not carry over" in verdicts.depth_or_quality(0, 1)
    assert "Neither" in verdicts.depth_or_quality(-1, 0)


def test_heads_vs_drafts_at_equal_cost():
    assert "the best head gives more" in verdicts.heads_vs_drafts([(1e-3, 900.0, 800.0), (2e-3, 950.0, 800.0)])
    assert "the best LM draft gives" in verdicts.heads_vs_drafts([(1e-3, 700.0, 800.0), (2e-3, 800.0, 800.0)])
    mixed = verdicts.heads_vs_drafts([(1e-3, 700.0, 800.0), (2e-3, 950.0, 800.0)])
    assert "at 1 of 2 cost levels" in mixed and "2 ms" in mixed
    assert "cannot be compared" in verdicts.heads_vs_drafts([])


def test_failed_configurations_lists_what_did_not_run():
    assert verdicts.failed_configurations([], "x.csv") == "Every configuration of `x.csv` ran."
    text = verdicts.failed_configurations([(256, "ar", "out of memory"), (256, "chain g=1", "out of memory"),
                                           (64, "tree d=2 k=8", "timeout")], "x.csv")
    assert "batch 256: ar, chain g=1 (out of memory)" in text and "batch 64: tree d=2 k=8 (timeout)" in text


def test_share_goal_names_what_it_counts():
    assert "at 4 of 5 batch sizes: meets" in verdicts.share_goal(4, 5, 0.8, "x")
    assert "at 3 of 5 groups: misses" in verdicts.share_goal(3, 5, 0.8, "x", unit="groups")
