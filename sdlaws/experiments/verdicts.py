"""Conclusion sentences computed from numbers: each rule is a small pure function, unit-tested on inputs that
flip it (``tests/test_verdicts.py``), so a regenerated document cannot contradict its own tables.

One module of many small rules (about 600 lines) rather than one per experiment: several experiments share rules
(goals, shares, censoring, slopes), and a reader checking how any sentence is decided finds every rule here."""

from __future__ import annotations

import numpy as np
import pandas as pd


def goal(value: float, limit: float, what: str) -> str:
    """``"meets the goal"`` when ``value <= limit``, else ``"misses the goal"``, with both numbers."""
    verb = "meets" if value <= limit else "misses"
    return f"{what} is {value:.2f}%: {verb} the goal of at most {limit:g}%"


def share_goal(hits: int, total: int, share: float, what: str, unit: str = "batch sizes") -> str:
    """Whether ``hits`` of ``total`` (``unit``) reach the required ``share``."""
    verb = "meets" if total and hits / total >= share else "misses"
    return f"{what} at {hits} of {total} {unit}: {verb} the goal of {share:.0%}"


def topk_shrinkage(p: float, lower: float, upper: float, batches: int, min_batches: int = 3) -> str:
    """Verdict on Thm 1.3 from the fitted exponent of ``k* = c B^-p`` and its interval.

    Not testable with fewer than ``min_batches`` batch sizes where a tree (top-k > 1) is optimal; otherwise:
    grows (interval below 0), no significant shrinkage (interval holds 0), shrinks like B^-1/2 (excludes 0, holds
    1/2), or shrinks but not like B^-1/2.
    """
    case = _topk_case(p, lower, upper, batches, min_batches)
    if case == "few":
        return (f"not testable here: a tree (top-k > 1) is the fastest configuration at only {batches} batch "
                f"size(s), fewer than the {min_batches} a slope needs")
    ci = f"p = {p:.2f} [{lower:.2f}, {upper:.2f}]"
    if case == "grows":
        return f"the optimal top-k grows with batch size ({ci}, interval below 0)"
    if case == "flat-half":
        return (f"the batch sizes cannot tell: the interval of the optimal top-k's exponent holds both no shrinkage "
                f"and B^(-1/2) ({ci})")
    if case == "flat":
        return f"no significant shrinkage of the optimal top-k with batch size ({ci}, interval holds 0, not 1/2)"
    if case == "sqrt":
        return f"the optimal top-k shrinks with batch size, consistent with B^(-1/2) ({ci})"
    return f"the optimal top-k shrinks with batch size, but not like B^(-1/2) ({ci}, interval excludes 1/2)"


def stops_paying(batches: np.ndarray, speedup_upper: np.ndarray) -> str:
    """First batch size from which no speculative configuration beats AR even at its best repeat
    (``speedup_upper`` < 1 there and at every larger batch)."""
    order = np.argsort(batches)
    b, s = np.asarray(batches)[order], np.asarray(speedup_upper)[order]
    losing = s < 1.0
    for i in range(len(b)):
        if losing[i:].all():
            return (f"speculation stops paying from batch {int(b[i])}: there and above, the fastest speculative "
                    f"configuration is slower than AR in every repeat" if i else
                    "speculation does not pay at any measured batch size")
    return f"speculation still pays at the largest measured batch ({int(b[-1])})"


def censored_batches(optimum: pd.DataFrame) -> list[int]:
    """Batch sizes whose optimal top-k sits on the top edge of the top-k measured there (extend the grid)."""
    edge = optimum.groupby("batch_size").apply(lambda g: bool((g["tree_topk"] >= g["topk_max"]).any()),
                                              include_groups=False)
    return [int(b) for b, hit in edge.items() if hit]


# ------------------------------------------------------------------------------------- the results document

#: Verdict labels, weakest first.
LABELS = ("not testable", "fails", "partly", "holds")
#: AIC difference from which a model is preferred (Burnham & Anderson: below 2 the data do not choose).
AIC_MARGIN = 2.0


def combine(labels) -> str:
    """One label for several groups or coefficients: their common label; ``fails`` if any fails; else
    ``partly`` (some parts hold, others are weaker)."""
    labels = list(labels)
    if len(set(labels)) == 1:
        return labels[0]
    return "fails" if "fails" in labels else "partly"


def loglinear_law(sign: int, decades: float, *, min_decades: float, curvature_p: float | None = None,
                  aic_gap: float | None = None, alpha: float = 0.05) -> str:
    """Verdict on a law ``y = a log10(x) + b`` that predicts ``a > 0``, from one group's fit.

    ``not testable`` when x spans fewer than ``min_decades`` decades; ``fails`` unless the slope is significantly
    positive (``sign`` = +1: its t and bootstrap intervals lie above 0); ``partly`` when the curve bends
    (quadratic term in log x with p-value ``curvature_p`` < ``alpha``) or the saturating alternative is preferred
    (``aic_gap`` = AIC(saturating) - AIC(loglinear) < -:data:`AIC_MARGIN`); else ``holds``.
    """
    if decades < min_decades:
        return "not testable"
    if sign <= 0:
        return "fails"
    bends = curvature_p is not None and curvature_p < alpha
    saturates = aic_gap is not None and aic_gap < -AIC_MARGIN
    return "partly" if bends or saturates else "holds"


def slope_signs(signs: dict[str, int]) -> str:
    """Which groups have a significantly positive, negative or insignificant slope (``signs``: group -> +1/-1/0,
    significant when its t and bootstrap intervals both exclude 0)."""
    if all(s > 0 for s in signs.values()):
        return "The slope is positive in every group (its t and bootstrap intervals exclude 0)."
    kinds = (("significantly positive", 1), ("significantly negative", -1), ("not significant", 0))
    parts = [f"{word} for {', '.join(g for g, s in signs.items() if s == value)}" for word, value in kinds
             if any(s == value for s in signs.values())]
    never = "" if any(s > 0 for s in signs.values()) else "; it is never significantly positive"
    return f"The slope is {'; '.join(parts)}{never}."


def curvature(terms: dict[str, tuple[float, float]], alpha: float = 0.05) -> str:
    """What the quadratic term in log x says about the shape (``terms``: group -> (coefficient, p-value))."""
    bent = {g: c for g, (c, p) in terms.items() if p < alpha}
    if not bent:
        return "The quadratic term in log tokens is not significant in any group: the log-linear shape is not rejected."
    if len(bent) == len(terms) and all(c > 0 for c in bent.values()):
        return ("The curve is not a straight line in log tokens: the quadratic term is positive and significant in "
                "every group, so acceptance accelerates with tokens (convex in log tokens) instead of growing "
                "linearly or saturating.")
    if len(bent) == len(terms) and all(c < 0 for c in bent.values()):
        return ("The curve is not a straight line in log tokens: the quadratic term is negative and significant in "
                "every group, so acceptance flattens with tokens (concave in log tokens), as saturation would.")
    shape = ", ".join(f"{g} ({'convex' if c > 0 else 'concave'})" for g, c in bent.items())
    return f"The quadratic term in log tokens is significant for {shape} only."


def saturating_alternative(exponents: dict[str, float], aic_gaps: dict[str, float],
                           degenerate_below: float = 0.01) -> str:
    """What the saturating law ``y_max - A x^-p`` adds (``exponents``: group -> fitted p; ``aic_gaps``: group ->
    AIC(saturating) - AIC(loglinear)). An exponent near 0 is the log-linear limit: no ceiling is identified."""
    gaps = " / ".join(f"{v:.2g}" for v in aic_gaps.values())
    if all(p < degenerate_below for p in exponents.values()):
        return (f"The saturating alternative does not converge: its exponent runs to p = "
                f"{' / '.join(f'{p:.2g}' for p in exponents.values())}, the log-linear limit, so no ceiling is "
                f"identifiable (AIC(saturating) - AIC(loglinear) = {gaps}, the penalty of its extra parameter).")
    preferred = [g for g, gap in aic_gaps.items() if gap < -AIC_MARGIN]
    if preferred:
        return f"AIC prefers the saturating law for {', '.join(preferred)} (AIC(saturating) - AIC(loglinear) = {gaps})."
    return f"AIC does not prefer the saturating law in any group (AIC(saturating) - AIC(loglinear) = {gaps})."


def thm11_conclusion(label: str, positive: int, bent: int, groups: int, decades: float, min_decades: float) -> str:
    """The sentence behind Thm 1.1's verdict: ``positive`` groups with a significantly positive slope and ``bent``
    groups that bend or prefer saturation, of ``groups``."""
    if label == "not testable":
        return (f"The checkpoints span {decades:.2f} decades of tokens, fewer than the {min_decades:g} a log-linear "
                "law in tokens needs: Thm 1.1 is not testable on them.")
    if label == "holds":
        return f"Acceptance grows linearly in log tokens in all {groups} groups, as Thm 1.1 states."
    if label == "partly":
        return (f"The direction of Thm 1.1 holds (a significantly positive slope in {positive} of {groups} groups); "
                f"its log-linear shape does not describe these checkpoints ({bent} of {groups} groups bend or "
                "prefer saturation).")
    return f"Thm 1.1's rise of acceptance with tokens is not found in {groups - positive} of {groups} groups."


def curve_shape(coef: float, pvalue: float, alpha: float = 0.05) -> str:
    """The shape a quadratic term in log x gives: ``convex`` / ``concave`` when significant at ``alpha``, else
    ``not significant`` (the log-linear shape is not rejected)."""
    if pvalue >= alpha:
        return "not significant"
    return "convex" if coef > 0 else "concave"


#: How each shape of :func:`curve_shape` reads: acceptance against log tokens, and the shape in every group.
_SHAPE_WORDS = {"convex": ("accelerates with log tokens", "convex in every group"),
                "concave": ("flattens", "concave in every group"),
                "not significant": ("shows no significant bend", "quadratic term not significant in any group")}


def upper_half_reading(full: dict[str, tuple[float, float]], upper: dict[str, tuple[float, float]],
                       aic_gaps: dict[str, float], rising: int, alpha: float = 0.05) -> str:
    """Thm 1.1's secondary reading (the upper half of the log-token range) against the primary one (the full
    range), in one sentence: the shape of each group's quadratic term in log tokens over the full range (``full``:
    group -> (coefficient, p-value)) and in the upper half (``upper``, same groups), whether that shape flips, how
    many groups still have a significantly positive slope in the upper half (``rising``), and whether AIC prefers
    the saturating law there (``aic_gaps``: group -> AIC(saturating) - AIC(loglinear) in the upper half)."""
    before = {g: curve_shape(*full[g], alpha) for g in full}
    after = {g: curve_shape(*upper[g], alpha) for g in full}
    n = len(full)
    first, second = set(before.values()), set(after.values())
    if len(first) == 1 and len(second) == 1 and first != second:
        old, new = first.pop(), second.pop()
        flips = {old, new} == {"convex", "concave"}
        head = (f"The {'curvature flips' if flips else 'shape changes'} between the two readings: over the full range "
                f"acceptance {_SHAPE_WORDS[old][0]} ({_SHAPE_WORDS[old][1]}), in the upper half it "
                f"{_SHAPE_WORDS[new][0]} ({_SHAPE_WORDS[new][1]})")
        if old == "convex":
            head += ", so the full range's convexity comes from the checkpoints below the window, the onset"
    elif before == after:
        same = (_SHAPE_WORDS[first.pop()][1] if len(first) == 1
                else ", ".join(f"{g} {s}" for g, s in before.items()))
        head = f"The upper half has the full range's shape in log tokens ({same}, by the quadratic term)"
    else:
        changed = [g for g in full if before[g] != after[g]]
        head = (f"The shape in log tokens changes from the full range to the upper half in {len(changed)} of {n} "
                "groups: " + ", ".join(f"{g} ({before[g]} -> {after[g]})" for g in changed))
    gaps = " / ".join(f"{aic_gaps[g]:.2g}" for g in full)
    preferred = [g for g in full if aic_gaps[g] < -AIC_MARGIN]
    if len(preferred) == n:
        saturating = "prefers the saturating law in every group"
    elif preferred:
        saturating = f"prefers the saturating law for {', '.join(preferred)} only"
    else:
        saturating = "does not prefer the saturating law in any group"
    return (f"{head}; in the upper half the slope is significantly positive in {rising} of {n} groups and AIC "
            f"{saturating} (AIC(saturating) - AIC(loglinear) = {gaps}).")


def warmup_checkpoints(count: int, warmup: str) -> str:
    """How many checkpoints lie in the learning-rate warm-up (``warmup``: its end in tokens, formatted)."""
    if count == 0:
        return f"none lies in the warm-up (up to {warmup} tokens)"
    return f"the first {count} lie in the warm-up (up to {warmup} tokens)"


# ------------------------------------------------------------------- at-scale runs and small-budget runs

#: Tokens per parameter of compute-optimal training (Hoffmann et al. 2022, "Training Compute-Optimal Large
#: Language Models": about 20).
COMPUTE_OPTIMAL_TOKENS_PER_PARAM = 20.0
#: Epochs of repeated data worth nearly as much as unique data (Muennighoff et al. 2023, "Scaling
#: Data-Constrained Language Models": up to about 4).
USEFUL_EPOCHS = 4.0


def schedule_label(schedule: str, stopped_early: bool) -> str:
    """What the models of a run are, from its learning-rate schedule and whether a time budget cut it short."""
    if schedule == "wsd":
        return "WSD runs cut by the time budget" if stopped_early else "finished WSD runs"
    return "cosine snapshots, cut by the time budget" if stopped_early else "cosine runs to the end of their schedules"


def tokens_per_param(low: float, high: float, optimal: float = COMPUTE_OPTIMAL_TOKENS_PER_PARAM) -> str:
    """The targets' tokens per parameter (lowest, highest) against compute-optimal training."""
    span = f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g}-{high:.3g}"
    if low >= optimal:
        return (f"{span} tokens per parameter, at least the ~{optimal:g} of compute-optimal training "
                "(Hoffmann et al. 2022)")
    return (f"{span} tokens per parameter, below the ~{optimal:g} of compute-optimal training (Hoffmann et al. "
            "2022): under-trained by that standard")


def epochs_seen(drafts: float, targets: float, limit: float = USEFUL_EPOCHS) -> str:
    """How many passes over the corpus's train split the drafts and the targets made, against the epochs of
    repeated data that are worth nearly as much as unique data."""
    head = f"the drafts saw at most {drafts:.3g} epochs of it, the targets at most {targets:.3g}"
    if max(drafts, targets) <= limit:
        return (f"{head}: within the ~{limit:g} epochs that Muennighoff et al. (2023) find worth nearly as much as "
                "unique data.")
    return (f"{head}: beyond the ~{limit:g} epochs that Muennighoff et al. (2023) find worth nearly as much as "
            "unique data, so the later passes count for less than new text would.")


def seed_noise(seeds: int, resampled: bool, targets_seeded: bool = True) -> str:
    """Whether the intervals include seed-to-seed noise: ``seeds`` training seeds, ``resampled`` when every
    bootstrap of the section draws them as a factor (:mod:`sdlaws.experiments.multiway`), ``targets_seeded``
    False when the targets had one seed (the noise the intervals carry is then the drafts' only)."""
    if seeds < 2:
        return "One training seed: the intervals cannot include seed-to-seed noise."
    if resampled and not targets_seeded:
        return (f"{seeds} training seeds of the drafts: every bootstrap interval resamples whole seeds as a factor, "
                "so it includes the drafts' seed-to-seed noise, not the targets' (trained with one seed).")
    if resampled:
        return (f"{seeds} training seeds: every bootstrap interval resamples whole seeds as a factor, so it "
                "includes seed-to-seed noise.")
    return (f"{seeds} training seeds, but not every bootstrap interval resamples them: those that do not leave "
            "seed-to-seed noise out.")


def runs_agree(at_scale: str, small_budget: str) -> str:
    """The small-budget runs' verdict against the at-scale one (which the summary reports)."""
    if at_scale == small_budget:
        return f"Their verdict, {small_budget}, is the at-scale runs' too."
    return f"Their verdict, {small_budget}, differs from the at-scale runs' ({at_scale}), which the summary reports."


def depth_perplexity(ppl: dict[str, tuple[float, float]]) -> str:
    """Whether the deepest drafts are worse or better language models than the shallowest at equal tokens
    (``ppl``: width label -> (perplexity of the shallowest, of the deepest))."""
    worse = [w for w, (shallow, deep) in ppl.items() if deep > shallow]
    if len(worse) == len(ppl):
        return "At equal tokens the deepest drafts reach a higher perplexity than the shallowest in every width"
    if not worse:
        return "At equal tokens the deepest drafts reach a lower perplexity than the shallowest in every width"
    return ("At equal tokens the deepest drafts reach a higher perplexity than the shallowest for "
            f"{', '.join(worse)} only")


def depth_conclusion(label: str, deeper_worse: bool) -> str:
    """The sentence behind Thm 1.2's verdict, given whether the deepest drafts have the higher perplexity in every
    width (then the experiment confounds depth with how far each draft got in its fixed token budget)."""
    if label == "holds":
        return "Deeper drafts are accepted more, as Thm 1.2 states."
    if deeper_worse:
        return ("A gain from depth presumes drafts trained to comparable quality; here every draft saw the same "
                "token budget and the deepest are the worse language models, so the experiment tests depth at a "
                "fixed token budget, not depth itself.")
    return "Deeper drafts are no worse language models here, yet acceptance does not rise with depth as Thm 1.2 states."


def rerun_slopes(before: dict[str, int], after: dict[str, int]) -> str:
    """What longer training changed in the slope signs of Thm 1.2 (group -> +1/-1/0, before and after)."""
    if any(s < 0 for s in after.values()):
        first = "Negative slopes remain"
    elif any(s < 0 for s in before.values()):
        first = "With more training the negative slopes disappear"
    else:
        first = "No slope is negative, before or after more training"
    positive = [g for g, s in after.items() if s > 0]
    second = (f"and depth now helps for {', '.join(positive)}." if positive else
              "but no group shows the significant positive slope Thm 1.2 predicts.")
    return f"{first}, {second}"


#: Units per factor below which a plane's two-way interval is not read. A multiway cluster interval estimates
#: each factor's variance from that factor's units (Cameron, Gelbach & Miller 2011, section 4: inference needs
#: many clusters in every dimension); with 3 targets the between-target part rests on 3 values. 4 targets leave
#: 2 residual degrees of freedom between target means, 6 drafts make about 1 in 10^4 draft resamples degenerate
#: (all 6 the same draft: 6^-5), so the interval is not dominated by dropped draws.
PLANE_MIN_TARGETS = 4
PLANE_MIN_DRAFTS = 6


def two_way_method() -> str:
    """Why and how the plane's intervals are two-way, and when they are read (:data:`PLANE_MIN_TARGETS`...)."""
    return ("The rows of one target share its perplexity and its noise, and likewise the rows of one draft, so "
            "every interval that decides comes from the two-way pigeonhole bootstrap (Owen 2007; the bootstrap "
            "analogue of the multiway cluster-robust variance of Cameron, Gelbach & Miller 2011): drafts and "
            "targets are resampled independently and the plane refitted. Its between-target part rests on as "
            f"many values as there are targets, so a slope is only read with at least {PLANE_MIN_TARGETS} targets "
            f"and {PLANE_MIN_DRAFTS} drafts.")


def plane_coefficient(sign: int, expected: int, targets: int, drafts: int, *, min_targets: int = PLANE_MIN_TARGETS,
                      min_drafts: int = PLANE_MIN_DRAFTS) -> str:
    """Verdict on one published slope of the plane from its two-way (draft x target) bootstrap interval:
    ``not testable`` with fewer than ``min_targets`` targets or ``min_drafts`` drafts, whatever the interval
    says; else ``holds`` when it excludes 0 on the published side (``sign`` = ``expected``), ``fails`` when it
    holds 0 (the predicted effect is not found) or lies on the other side."""
    if targets < min_targets or drafts < min_drafts:
        return "not testable"
    return "holds" if sign == expected else "fails"


def plane_coefficient_sentence(name: str, label: str, estimate: float, interval, expected: int, targets: int,
                               drafts: int) -> str:
    """One slope's verdict with its two-way interval, and what the interval can say when the units are too few."""
    lo, hi = interval
    side = 1 if lo > 0 else (-1 if hi < 0 else 0)
    text = (f"{name}: {estimate:.3g} [{lo:.3g}, {hi:.3g}] by the two-way bootstrap over {targets} targets x "
            f"{drafts} drafts; the interval {'holds' if side == 0 else 'excludes'} 0")
    if label == "holds":
        return text + ", with the published sign: holds."
    if label == "fails":
        return text + (": the slope has the opposite sign: fails." if side else ": the predicted effect is not "
                       "found: fails.")
    why = (f"; with fewer than {PLANE_MIN_TARGETS} targets or {PLANE_MIN_DRAFTS} drafts the interval's "
           "between-unit variance rests on too few values to be read as a test: not testable at this scale")
    if side == expected:
        return text + why + " (the sign agrees with the published one: a description of these models, not a test)."
    return text + why + "."


def plane_form(aic_gap: float, errors: dict[str, tuple[float | None, float | None]]) -> str:
    """Which form of the plane the rows prefer: ``log`` (``aic_gap`` = AIC(log) - AIC(linear) below
    -:data:`AIC_MARGIN`) or ``linear`` (above it), when that form's leave-one-unit-out RMSE (``errors``:
    direction -> (linear, log)) is also no larger in every direction; else ``undecided``."""
    known = [e for e in errors.values() if None not in e]
    if aic_gap < -AIC_MARGIN and all(log <= lin for lin, log in known):
        return "log"
    if aic_gap > AIC_MARGIN and all(lin <= log for lin, log in known):
        return "linear"
    return "undecided"


def plane_form_sentence(preferred: str, aic_gap: float, errors: dict[str, tuple[float | None, float | None]]) -> str:
    """The form comparison in words: AIC gap and the out-of-sample errors behind :func:`plane_form`."""
    oos = "; ".join(f"one {u} left out, RMSE {lin:.3g} (linear) vs {log:.3g} (log)" for u, (lin, log) in errors.items()
                    if None not in (lin, log))
    head = f"AIC(log) - AIC(linear) = {aic_gap:.3g} on the same rows" + (f"; {oos}" if oos else "")
    if preferred == "undecided":
        why = f"AIC differs by less than {AIC_MARGIN:g}" if abs(aic_gap) <= AIC_MARGIN else "the criteria disagree"
        return f"{head}: {why}, so the rows do not choose between perplexity and log perplexity."
    return f"{head}: both criteria prefer the {preferred} form."


def shared_units(name: str, interval, rows: int, units: int, what: str) -> str:
    """Why a row-level interval overstates a coefficient's precision when ``rows`` share only ``units`` values of
    its regressor (empty when every row has its own)."""
    if units >= rows:
        return ""
    return (f"The row-level t interval of {name}, [{interval[0]:.3g}, {interval[1]:.3g}], treats the {rows} rows as "
            f"independent although they share {units} {what}; the test above is the one that decides.")


def published_transfer(outside: list[str]) -> str:
    """Whether published coefficients (fitted on other models, scale and text) fall inside our test intervals."""
    if not outside:
        return "Every published coefficient lies inside its test interval here."
    return (f"Published values outside their test intervals: {', '.join(outside)}; the published coefficients do "
            "not transfer as numbers to these models.")


def _topk_case(p: float, lower: float, upper: float, batches: int, min_batches: int) -> str:
    """Which of the Thm 1.3 outcomes the exponent's interval shows (shared by the sentence and the label)."""
    if batches < min_batches:
        return "few"
    if upper < 0:
        return "grows"
    if lower <= 0:
        return "flat-half" if lower <= 0.5 <= upper else "flat"
    return "sqrt" if lower <= 0.5 <= upper else "other"


def topk_label(p: float, lower: float, upper: float, batches: int, min_batches: int = 3) -> str:
    """Thm 1.3's verdict label (see :func:`topk_shrinkage`): ``holds`` for a shrinkage consistent with B^(-1/2),
    ``partly`` for another shrinkage, ``not testable`` when the interval holds both 0 and 1/2 or too few batch
    sizes qualify, ``fails`` when it holds 0 but not 1/2 or shows growth."""
    case = _topk_case(p, lower, upper, batches, min_batches)
    return {"few": "not testable", "flat-half": "not testable", "flat": "fails", "grows": "fails", "sqrt": "holds",
            "other": "partly"}[case]


def monotone(batches, values) -> str:
    """Whether the measured optimum moves one way with batch size."""
    order = np.argsort(batches)
    v = np.asarray(values, dtype=float)[order]
    steps = np.diff(v)
    if (steps <= 0).all():
        return "The measured optimum does not grow with the batch size"
    if (steps >= 0).all():
        return "The measured optimum does not shrink with the batch size"
    return "The measured optimum is not monotone in the batch size"


def calibration_transfer(fitted: float, heldout: float, heldout_profile: float) -> str:
    """Whether the calibrated roofline carries over to models it was not fitted on (median |% error|: fitted
    rows, held-out rows, held-out rows with the measured profile)."""
    verdict = ("does not transfer: it does worse there than the uncalibrated measured profile"
               if heldout > heldout_profile else "transfers: it does better there than the measured profile")
    return (f"The calibration fits the models it saw ({fitted:.1f}% median error) and {verdict} "
            f"({heldout:.1f}% against {heldout_profile:.1f}%).")


def efficiency_shift(ratios: dict[str, float]) -> str:
    """How far the fitted efficiencies moved from the measured profile's (name -> fitted / profile): far below,
    they absorb costs the roofline does not model (latency of small passes)."""
    text = ", ".join(f"{k} {v:.2g}x" for k, v in ratios.items())
    if all(v < 1 for v in ratios.values()):
        return (f"The fitted efficiencies are below the measured profile's ({text}): they absorb costs the roofline "
                "does not model.")
    if all(v > 1 for v in ratios.values()):
        return f"The fitted efficiencies are above the measured profile's ({text})."
    return f"The fitted efficiencies move both ways from the measured profile's ({text})."


def verify_cost(measured: float, predicted: float, tokens: int, where: str, tolerance: float = 0.1) -> str:
    """Whether verifying several tokens per row costs what the calibrated roofline says (ratios of the pass time
    with ``tokens`` tokens per row to the one-token pass, ``where``: model and batch)."""
    said = f"{where}, {tokens} tokens per row take {measured:.3g}x as long as one"
    if measured > predicted * (1 + tolerance):
        return f"{said}, the calibrated roofline says {predicted:.3g}x: verification is not free while memory-bound."
    return f"{said}, as the calibrated roofline says ({predicted:.3g}x)."


def collapse(ratios: dict[int, float]) -> str:
    """Whether the fixed wide tree collapses below the batch-aware width (batch -> fixed / planned tokens/s)."""
    shares = " and ".join(f"{r:.3g} (B={b})" for b, r in ratios.items())
    below = [b for b, r in ratios.items() if r < 1]
    if len(below) == len(ratios):
        return (f"The collapse appears: at large batch the fixed wide tree delivers {shares} of the batch-aware "
                "width's throughput.")
    if not below:
        return f"No collapse: the fixed wide tree delivers {shares} of the batch-aware width's throughput."
    return f"The collapse appears at B={', '.join(map(str, below))} only: the fixed wide tree delivers {shares}."


def speculation_pays(speedups: list[float]) -> str:
    """Whether either width beats AR anywhere (speedups over the matching AR row, both widths, every batch)."""
    if all(s < 1 for s in speedups):
        return ("But both widths are slower than AR at every batch size here: at this scale the right batch-aware "
                "choice is not to speculate.")
    return f"The best of them beats AR ({max(speedups):.3g}x)."


def fastest_there(speedup: float, fastest: bool) -> str:
    """The contrast configuration at the smallest batch: its speedup, and whether it was the fastest there."""
    if fastest and speedup > 1:
        return f"had speedup {speedup:.3g}, the fastest configuration there, AR included"
    return f"had speedup {speedup:.3g}"


def cheaper_draft(ratio: np.ndarray, batches: np.ndarray) -> str:
    """Whether a head's draft forward costs less than an LM draft's: ``ratio`` = head / LM ms per forward, one
    per (prompt length, batch) timed with both."""
    ratio, batches = np.asarray(ratio, float), np.asarray(batches)
    cheaper = ratio < 1
    span = f"{ratio.min():.2f}-{ratio.max():.2f}x"
    if cheaper.all():
        return f"The head's draft forward is cheaper than the 1B-shape draft's at every measured point ({span})"
    if not cheaper.any():
        return f"The head's draft forward is not cheaper than the 1B-shape draft's at any measured point ({span})"
    return (f"The head's draft forward is cheaper at {int(cheaper.sum())} of {len(ratio)} measured points ({span}); "
            f"not at batch {', '.join(map(str, sorted(set(batches[~cheaper].tolist()))))}")


def not_predicted(rows: list[tuple[str, str, str]], total: int) -> str:
    """The held-out rows the planner could not predict ((label, draft, reason) each), grouped by reason, or that
    it predicted all."""
    if not rows:
        return f"- Every one of the {total} held-out rows was predicted."
    by_reason: dict[str, dict[tuple[str, str], int]] = {}
    for label, draft, reason in rows:   # repeats of one configuration are one entry
        configs = by_reason.setdefault(reason, {})
        configs[(label, draft)] = configs.get((label, draft), 0) + 1
    listed = "; ".join(
        f"{reason}: " + ", ".join(f"{label}{' <- ' + draft if draft else ''}{f' ({n} rows)' if n > 1 else ''}"
                                  for (label, draft), n in configs.items())
        for reason, configs in by_reason.items())
    notes = []
    if any(reason.startswith("not measured") for _, _, reason in rows):
        notes.append("A row whose run failed has no measurement to compare a prediction with.")
    if any("draft law" in reason for _, _, reason in rows):
        notes.append("A draft is predicted from its perplexity only where at least two training drafts of that "
                     "temperature fit the draft law; nothing else is assumed.")
    if any("known engine defect" in reason for _, _, reason in rows):
        notes.append("A row timed with a known engine defect is not a measurement of the engine the planner "
                     "predicts (`sdlaws.defects`).")
    return " ".join([f"- Not predicted ({len(rows)} of {total} rows): {listed}.", *notes])


def heldout_loss(heldout_nll: float, train_loss: float, model: str) -> str:
    """Held-out NLL against the last training loss: far below it means the held-out sample is easier text."""
    if heldout_nll < train_loss:
        return (f"This is the likely reason held-out NLL is below the training loss ({model}: {heldout_nll:.3g} vs "
                f"{train_loss:.3g} nats per token).")
    return (f"Held-out NLL is not below the training loss ({model}: {heldout_nll:.3g} vs {train_loss:.3g} nats per "
            "token).")


# ------------------------------------------------------------------------------ Thm 1.2 on feature-level heads

#: Verdict label of each shape of acceptance in head depth (Thm 1.2 states the log-linear one).
HEAD_SHAPE_LABELS = {"log-linear": "holds", "saturating": "partly", "flat": "fails", "not testable": "not testable"}


def head_depth_shape(sign: int, aic_gap: float | None, decades: float, *, min_decades: float) -> str:
    """Shape of acceptance in head depth from one group's fits: ``not testable`` when depth spans fewer than
    ``min_decades`` decades; ``flat`` unless the log-linear slope is significantly positive (``sign`` = +1: its
    t and seed-bootstrap intervals lie above 0); ``saturating`` when AIC prefers ``y_max - A x^-p`` by more than
    :data:`AIC_MARGIN` (``aic_gap`` = AIC(saturating) - AIC(loglinear), None when it did not fit); else
    ``log-linear``."""
    if decades < min_decades:
        return "not testable"
    if sign <= 0:
        return "flat"
    return "saturating" if aic_gap is not None and aic_gap < -AIC_MARGIN else "log-linear"


def head_depth_sentence(shapes: dict[str, str]) -> str:
    """The verdict sentence of Thm 1.2 on heads from the shape of each group (group -> shape)."""
    kinds = sorted(set(shapes.values()))
    if kinds == ["log-linear"]:
        return "Acceptance grows log-linearly with head depth in every group, as Thm 1.2 states."
    if kinds == ["saturating"]:
        return ("Acceptance grows with head depth but saturates in every group: AIC prefers a ceiling to the "
                "log-linear law of Thm 1.2.")
    if kinds == ["flat"]:
        return "Acceptance does not rise significantly with head depth in any group: Thm 1.2 is not found."
    if kinds == ["not testable"]:
        return "The head depths span too few decades to test Thm 1.2."
    return "The shape differs between groups: " + "; ".join(f"{g}: {s}" for g, s in shapes.items()) + "."


def depth_or_quality(acceptance_sign: int, top1_sign: int) -> str:
    """Whether depth acts through one-step draft quality: the signs (+1/-1/0, significant by t and bootstrap
    intervals) of the log-linear slopes in depth of chain acceptance and of held-out top-1 agreement."""
    if acceptance_sign > 0 and top1_sign > 0:
        return ("Held-out top-1 agreement rises with depth too: deeper heads are better one-step drafters, and the "
                "acceptance gain is at least partly that gain in draft quality.")
    if acceptance_sign > 0:
        return ("Held-out top-1 agreement does not rise significantly with depth while chain acceptance does: depth "
                "helps beyond one-step agreement (drafting on from its own predicted features).")
    if top1_sign > 0:
        return ("Held-out top-1 agreement rises with depth but chain acceptance does not: the better one-step "
                "drafts do not carry over along the chain.")
    return "Neither chain acceptance nor held-out top-1 agreement rises significantly with depth."


def heads_vs_drafts(frontier: list[tuple[float, float, float]]) -> str:
    """Heads against independent LM drafts at equal draft cost: ``frontier`` holds (draft seconds per step, best
    head tokens/s, best LM-draft tokens/s), each the best of its kind that costs at most that much per step,
    at every cost where both kinds have a draft."""
    if not frontier:
        return ("No cost level has both kinds of draft (every head costs more per step than every LM draft, or "
                "the reverse), so they cannot be compared at equal draft cost.")
    head_wins = [head > lm for _, head, lm in frontier]
    if all(head_wins):
        return (f"At every shared draft cost ({len(frontier)} levels) the best head gives more tokens/s than the "
                "best LM draft that costs no more per step.")
    if not any(head_wins):
        return (f"At every shared draft cost ({len(frontier)} levels) the best LM draft gives at least as many "
                "tokens/s as the best head that costs no more per step.")
    won = [f"{cost * 1e3:.3g} ms" for (cost, _, _), win in zip(frontier, head_wins) if win]
    return (f"Heads give more tokens/s than LM drafts of no greater draft cost at {len(won)} of {len(frontier)} "
            f"cost levels (draft time per step {', '.join(won)}), LM drafts at the others.")


def failed_configurations(failed: list[tuple[int, str, str]], source: str) -> str:
    """The configurations of a sweep that did not run ((batch size, configuration, error kind) each), grouped
    by error and batch size, or that every one ran."""
    if not failed:
        return f"Every configuration of `{source}` ran."
    groups: dict[tuple[str, int], list[str]] = {}
    for batch, config, error in failed:
        groups.setdefault((error, batch), []).append(config)
    parts = [f"batch {batch}: {', '.join(configs)} ({error})" for (error, batch), configs in sorted(groups.items())]
    return (f"Configurations of `{source}` that did not run (a failed row records no prompt length): "
            + "; ".join(parts) + ".")
