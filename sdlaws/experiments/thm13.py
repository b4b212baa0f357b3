"""Scylla's Thm 1.3 on measured optima: fit ``k* = c B^-p`` (p free, and p = 1/2) to the fastest top-k of every
(batch size, repeat), so that the intervals carry the repeat noise."""

from __future__ import annotations

import pandas as pd


def tree_batches(optimum: pd.DataFrame) -> pd.DataFrame:
    """Rows of the batch sizes where a tree is the fastest speculative configuration in the median repeat (the
    law is about tree width; where a chain wins, k* = 1 sits on the grid's floor)."""
    median = optimum.groupby("batch_size")["tree_topk"].median()
    return optimum[optimum["batch_size"].isin(median[median > 1].index)].reset_index(drop=True)


def fit_topk_law(optimum: pd.DataFrame) -> dict:
    """``{"rows", "batches", "free", "sqrt", "lr_p"}``: the fits (None when fewer than 3 batch sizes qualify)."""
    from sdlaws.fit.estimators import compare, fit_law

    rows = tree_batches(optimum)
    batches = rows["batch_size"].nunique()
    if batches < 3:
        return {"rows": rows, "batches": batches, "free": None, "sqrt": None, "lr_p": None}
    free = fit_law(rows, "topk_batch", x="batch_size", y="tree_topk", weight=None)
    sqrt = fit_law(rows, "topk_batch_sqrt", x="batch_size", y="tree_topk", weight=None)
    return {"rows": rows, "batches": batches, "free": free, "sqrt": sqrt, "lr_p": compare([free, sqrt])}
