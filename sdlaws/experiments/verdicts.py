"""Conclusion sentences computed from numbers: each rule is a small pure function, unit-tested on inputs that
flip it (``tests/test_verdicts.py``), so a regenerated document cannot contradict its own tables."""

from __future__ import annotations

import numpy as np
import pandas as pd


def goal(value: float, limit: float, what: str) -> str:
    """``"meets the goal"`` when ``value <= limit``, else ``"misses the goal"``, with both numbers."""
    verb = "meets" if value <= limit else "misses"
    return f"{what} is {value:.2f}%: {verb} the goal of at most {limit:g}%"


def share_goal(hits: int, total: int, share: float, what: str) -> str:
    """Whether ``hits`` of ``total`` reach the required ``share``."""
    verb = "meets" if total and hits / total >= share else "misses"
    return f"{what} at {hits} of {total} batch sizes: {verb} the goal of {share:.0%}"


def topk_shrinkage(p: float, lower: float, upper: float, batches: int, min_batches: int = 3) -> str:
    """Verdict on Thm 1.3 from the fitted exponent of ``k* = c B^-p`` and its interval.

    Not testable with fewer than ``min_batches`` batch sizes where a tree (top-k > 1) is optimal; otherwise:
    no significant shrinkage (interval holds 0), shrinks like B^-1/2 (excludes 0, holds 1/2), or shrinks but not
    like B^-1/2.
    """
    if batches < min_batches:
        return (f"not testable here: a tree (top-k > 1) is the fastest configuration at only {batches} batch "
                f"size(s), fewer than the {min_batches} a slope needs")
    ci = f"p = {p:.2f} [{lower:.2f}, {upper:.2f}]"
    if lower <= 0 <= upper:
        return f"no significant shrinkage of the optimal top-k with batch size ({ci}, interval holds 0)"
    if lower <= 0.5 <= upper:
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
