"""``collapse``: at large batch, a fixed wide tree (top-k 16) versus the batch-aware width of sdlaws's law.

The analogue of Scylla's headline result. The top-k x batch grid of ``topk-batch`` (measured in the same run,
or here first when ``collapse`` runs alone) is fitted with ``sdlaws.fit.fit_topk_batch`` (``k* = c B^-p``,
Thm 1.3); the law's width at each large batch size (extrapolated beyond the grid where the batch is larger) is
then measured against the fixed top-k 16 tree with fresh, larger workloads. Rows are labelled
``collapse:fixed-k16`` and ``collapse:planned-k<k>`` in the ``experiment`` column; the throughput ratio and
whether the fixed tree "collapses" below the planned one are derived from them (tokens_per_s).
If the law cannot be fitted (for example the same k is best at every batch size), the planned width is the
measured optimum at the largest grid batch size, labelled ``collapse:planned-empirical-k<k>``, with a note.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from sdlaws import io, rates
from sdlaws.errors import InputError, SdlawsError
from sdlaws.experiments import topk_batch
from sdlaws.experiments.context import Context
from sdlaws.experiments.registry import Experiment

NAME = "collapse"


def grid_rows(ctx: Context) -> pd.DataFrame:
    """Derived T=0 tree/chain rows of the pair from the top-k x batch grid (measured now if absent)."""
    path = ctx.layout.spec(topk_batch.NAME)
    if not path.exists():
        topk_batch.measure_grid(ctx, topk_batch.NAME)
    target, draft = (str(ctx.final(spec).path) for spec in topk_batch.models(ctx.scale))
    df = rates.derive(io.read_measurements(path, table="spec", ok_only=True))
    keep = (df["method"].ne("ar") & df["temperature"].eq(0.0) & df["target_name"].eq(target)
            & df["draft_name"].eq(draft) & df["num_spec_tokens"].eq(ctx.scale.tree_depth))
    if not keep.any():
        raise InputError(f"{path}: no ok top-k x batch rows of the pair to plan the collapse widths from")
    return df[keep]


def planned_widths(ctx: Context, rows: pd.DataFrame) -> tuple[dict[int, int], str]:
    """Top-k the law plans at each collapse batch size, and how it was obtained (``law`` or ``empirical``)."""
    from sdlaws.fit import fit_topk_batch, optimal_topk

    s = ctx.scale
    batches = list(s.collapse_batch_sizes)
    try:
        fit = fit_topk_batch(rows)
        with warnings.catch_warnings():  # extrapolation beyond the grid is the point here; noted in run.json
            warnings.simplefilter("ignore")
            k = fit.predict(pd.DataFrame({"batch_size": batches}))["mean"].to_numpy()
        ctx.results.setdefault(NAME, {})["topk_batch_fit"] = fit.to_dict()
        source = "law"
    except SdlawsError as exc:
        ctx.notes.append(f"{NAME}: top-k law not fitted ({exc}); planned width = measured optimum")
        best = optimal_topk(rows).sort_values("batch_size")
        k = np.full(len(batches), best["tree_topk"].iloc[-1])
        source = "empirical"
    widths = {b: int(np.clip(np.rint(v), 1, max(s.topks))) for b, v in zip(batches, k)}
    ctx.results.setdefault(NAME, {})["planned_topk"] = {str(b): w for b, w in widths.items()}
    return widths, source


def measure(ctx: Context) -> None:
    """Plan the widths from the grid, then measure fixed and planned trees at each large batch size."""
    s = ctx.scale
    target, draft = (ctx.final(spec) for spec in topk_batch.models(s))
    ctx.measure_ppl([target, draft])
    widths, source = planned_widths(ctx, grid_rows(ctx))
    planned = "planned" if source == "law" else "planned-empirical"
    for batch, k in widths.items():
        for topk, label in ((s.collapse_fixed_topk, f"fixed-k{s.collapse_fixed_topk}"), (k, f"{planned}-k{k}")):
            ctx.sweep(NAME, target, [draft], gammas=(s.tree_depth,), topks=(topk,), batch_sizes=(batch,),
                      num_prompts=2 * batch, label=f"{NAME}:{label}")


EXPERIMENT = Experiment(NAME, "fixed top-k 16 tree vs the law's batch-aware width at large batch (Scylla's collapse)",
                        topk_batch.models, measure, needs=(topk_batch.NAME,))
