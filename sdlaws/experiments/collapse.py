"""``collapse``: at large batch, a fixed wide tree (top-k 16) versus the batch-aware width of sdlaws's law.

The analogue of Scylla's headline result. The top-k x batch grid of ``topk-batch`` (measured in the same run,
or here first when ``collapse`` runs alone) is fitted with ``sdlaws.fit.fit_topk_batch`` (``k* = c B^-p``,
Thm 1.3); the law's width at each large batch size (extrapolated beyond the grid where the batch is larger) is
then measured against the fixed top-k 16 tree with fresh, larger workloads. Rows are labelled
``collapse:fixed-k16`` and ``collapse:planned-k<k>`` in the ``experiment`` column; the throughput ratio and
whether the fixed tree "collapses" below the planned one are derived from them (tokens_per_s).
If the law cannot be fitted (for example the same k is best at every batch size), the planned width is the
measured optimum at the largest grid batch size, labelled ``collapse:planned-empirical-k<k>``, with a note.

Its section of the results document compares the fixed and the planned tree at each batch size, measured and as
the planner predicts them from the grid (:func:`~sdlaws.experiments.reporting.planner_check`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from sdlaws import io, rates
from sdlaws.errors import InputError, SdlawsError
from sdlaws.experiments import topk_batch, verdicts
from sdlaws.experiments.context import Context
from sdlaws.experiments.registry import Experiment, Section
from sdlaws.experiments.reporting import Analysis, Doc, Tables, f, num, planner_check, table
from sdlaws.plan.validate import engine_config

NAME = "collapse"
FILES = {"collapse": ("throughput/collapse.csv", "spec"), **topk_batch.GRID, **topk_batch.STEPS}


def grid_rows(ctx: Context) -> pd.DataFrame:
    """Derived T=0 tree/chain rows of the pair from the top-k x batch grid (measured now if absent)."""
    path = ctx.layout.spec(topk_batch.NAME)
    if not path.exists():
        topk_batch.measure_grid(ctx, topk_batch.NAME)
    target, draft = (str(ctx.final(spec).path) for spec in topk_batch.models(ctx.scale))
    df = rates.derive(io.read_measurements(path, table="spec", ok_only=True))
    keep = (df["method"].ne("ar") & df["temperature"].eq(0.0) & df["target_name"].eq(target)
            & df["draft_name"].eq(draft) & df["num_spec_tokens"].eq(ctx.scale.tree_num_spec_tokens))
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
            ctx.sweep(NAME, target, [draft], num_spec_tokens=(s.tree_num_spec_tokens,), topks=(topk,),
                      batch_sizes=(batch,), num_prompts=2 * batch, label=f"{NAME}:{label}")


# ---------------------------------------------------------------------------------------------------- analysis

def analyse(tables: Tables) -> Analysis:
    """Fixed versus planned width at each collapse batch size: measured and predicted throughput ratios, the top-k
    law of the grid there, and the fixed tree's speedup at the smallest grid batch for contrast."""
    from sdlaws.fit import fit_law

    grid = tables["topk"]
    predicted = planner_check(tables, "topk", "step", tables["collapse"]).predicted()
    spec = predicted[predicted["method"].ne("ar")]
    fixed = spec["experiment"].str.contains("fixed")
    law = fit_law(grid, "topk_batch")
    rows = []
    for batch, sub in spec.groupby("batch_size"):
        wide, planned = sub[fixed[sub.index]].iloc[0], sub[~fixed[sub.index]].iloc[0]
        with warnings.catch_warnings():   # beyond the grid is the point of the experiment (flagged below)
            warnings.simplefilter("ignore")
            law_k = float(law.predict([float(batch)])["mean"].iloc[0])
        rows.append({"batch_size": int(batch), "fixed": engine_config(wide).label, "planned": engine_config(planned).label,
                     "law_topk": law_k, "beyond_grid": bool(batch > grid["batch_size"].max()),
                     "measured_ratio": float(wide["tokens_per_s_meas"] / planned["tokens_per_s_meas"]),
                     "predicted_ratio": float(wide["tokens_per_s_pred"] / planned["tokens_per_s_pred"]),
                     "fixed_speedup": num(wide["speedup_meas"]), "planned_speedup": num(planned["speedup_meas"])})
    return Analysis({"rows": rows, "contrast": _contrast(grid)})


def _contrast(grid: pd.DataFrame) -> dict[str, Any]:
    """The widest tree of the grid at its smallest batch size: its speedup and whether it was the fastest there."""
    widest = grid[grid["method"].eq("tree") & grid["tree_topk"].eq(grid["tree_topk"].max())]
    first = widest[widest["batch_size"].eq(widest["batch_size"].min())].iloc[0]
    there = grid[grid["batch_size"].eq(first["batch_size"])]
    return {"batch_size": int(first["batch_size"]), "config": engine_config(first).label, "speedup": num(first["speedup"]),
            "fastest": bool(there["tokens_per_s"].idxmax() == first.name)}


# ---------------------------------------------------------------------------------------------------- markdown

def summary(d: dict) -> list[list[str]]:
    """The summary table's row: measured fixed / planned ratios."""
    return [[f"Collapse: fixed {d['rows'][0]['fixed']} / batch-aware width", "",
             ", ".join(f"{f(r['measured_ratio'])} at B={r['batch_size']}" for r in d["rows"])]]


def render(d: dict, doc: Doc) -> list[str]:
    """Fixed versus batch-aware width: table, collapse, and whether speculating pays at all there."""
    rows = [[str(r["batch_size"]), r["fixed"], r["planned"], f(r["law_topk"]), f(r["measured_ratio"]),
             f(r["predicted_ratio"]), f(r["fixed_speedup"]), f(r["planned_speedup"])] for r in d["rows"]]
    k, beyond = d["contrast"], [str(r["batch_size"]) for r in d["rows"] if r["beyond_grid"]]
    return ["## Collapse: a fixed wide tree versus the batch-aware width", "",
            "At large batch the fixed tree is compared with the width planned in the same run from the top-k law "
            "fitted on the grid; the law of the Thm 1.3 section gives k* = "
            + ", ".join(f"{f(r['law_topk'])} at batch {r['batch_size']}" for r in d["rows"])
            + (f" (batch {', '.join(beyond)} is beyond the grid: a prediction)" if beyond else "") + ". Predicted "
            "ratios are the planner's, with acceptance and overheads fitted on the grid.", "",
            *table(["batch", "fixed", "planned", "law k*", "fixed / planned tok/s, measured", "predicted",
                    "fixed speedup", "planned speedup"], rows),
            f"At batch {k['batch_size']} the same {k['config']} {verdicts.fastest_there(k['speedup'], k['fastest'])}. "
            + verdicts.collapse({r["batch_size"]: r["measured_ratio"] for r in d["rows"]})
            + " Planner: " + " and ".join(f(r["predicted_ratio"]) for r in d["rows"]) + ". "
            + verdicts.speculation_pays([s for r in d["rows"] for s in (r["fixed_speedup"], r["planned_speedup"])]),
            ""]


SECTION = Section("collapse", FILES, analyse, render, summary)
EXPERIMENT = Experiment(NAME, "fixed top-k 16 tree vs the law's batch-aware width at large batch (Scylla's collapse)",
                        topk_batch.models, measure, needs=(topk_batch.NAME,), sections=(SECTION,))
