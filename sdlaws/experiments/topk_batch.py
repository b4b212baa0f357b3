"""``topk-batch``: throughput versus tree top-k at batch sizes 1..128 (Scylla Thm 1.3, ``k* = c B^-p``).

One trained target/draft pair; trees of fixed depth with top-k 1 (a chain), 2, 4, 8, 16 at every batch size,
T=0, plus the AR baseline at each batch size. Small batches are repeated until ``min_timed_prompts`` sequences
have been decoded, so every row's timing covers several generate calls. The target (the largest model of the
suite) is where batching moves the verify pass from launch/memory-bound to compute-bound on an H100.
Then the roofline inputs: hardware micro-benchmarks (``run.json``) and forward-pass timings (``step.csv``) of
the pair and of a random-weight 1B model (timing does not depend on the weights; acceptance never comes from
random weights).

Its section of the results document fits ``k* = c B^-p`` (p free, and p = 1/2: Wald and likelihood-ratio tests)
to the optimal top-k per batch size, and compares the measured optimum with the one the planner predicts
(:func:`~sdlaws.experiments.reporting.planner_check`); the roofline section
(:mod:`sdlaws.experiments.roofline_report`) reports on its timing tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sdlaws.experiments import roofline_report, verdicts
from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.registry import Experiment, Section
from sdlaws.experiments.reporting import (N_BOOT, SEED, Analysis, Doc, Tables, ci, f, fit_summary, listed,
                                          num, planner_check, setup, table, tok)
from sdlaws.experiments.scale import Scale

NAME = "topk-batch"
#: The grid and the forward-pass timings of the pair (the planner's training rows and step tables).
GRID = {"topk": ("throughput/topk-batch.csv", "spec")}
STEPS = {"step": ("throughput/step.csv", "step")}
#: Share of batch sizes at which the predicted best top-k should be the measured best.
MATCH_SHARE = 0.8


def models(scale: Scale):
    """The pair's target and draft."""
    return [scale.spec(scale.pair_target, scale.pair_target_tokens),
            scale.spec(scale.pair_drafts[0], scale.pair_draft_tokens)]


def measure_grid(ctx: Context, experiment: str) -> None:
    """The top-k x batch grid into ``experiment``'s CSV (also used by ``collapse`` when run on its own)."""
    target_spec, draft_spec = models(ctx.scale)
    target, draft = ctx.final(target_spec), ctx.final(draft_spec)
    s = ctx.scale
    for batch in spread(list(s.topk_batch_sizes)):
        ctx.sweep(experiment, target, [draft], num_spec_tokens=(s.tree_num_spec_tokens,), topks=s.topks,
                  batch_sizes=(batch,), num_prompts=max(batch, s.min_timed_prompts), label=NAME)


def measure_timing(ctx: Context) -> None:
    """Hardware micro-benchmarks (into run.json) and forward-pass timings (``step.csv``) for the roofline.

    The pair's target and draft, and random-weight models of published shapes, are timed at every batch size
    and verify width the experiments use, with the KV cache half-way through a generation.
    """
    from sdlaws.measure.hwbench import StepSweep, measure_hardware, measure_steps

    s = ctx.scale
    if ctx.out_of_time("hardware micro-benchmarks"):
        return
    ctx.results.setdefault(NAME, {})["hardware"] = measure_hardware(ctx.device, dtype=ctx.dtype).to_dict()
    kv_len = s.prompt_tokens + s.max_new_tokens // 2
    pair = StepSweep(batch_sizes=s.step_batch_sizes, tokens_per_row=s.step_tokens_per_row, kv_len=kv_len,
                     seed=s.seed)
    large = StepSweep(batch_sizes=s.step_random_batch_sizes, tokens_per_row=s.step_random_tokens_per_row,
                      kv_len=kv_len, seed=s.seed)
    jobs = [(str(ctx.final(spec).path), pair) for spec in models(s)] + [(m, large) for m in s.step_random_models]
    for model, sweep in jobs:
        if ctx.out_of_time(f"forward timing of {model}"):
            return
        measure_steps(model, ctx.layout.file("step.csv"), sweep, dtype=ctx.dtype, device=ctx.device, progress=False)


def measure(ctx: Context) -> None:
    """Perplexity of the pair, the grid, then the timing tables."""
    ctx.measure_ppl([ctx.final(spec) for spec in models(ctx.scale)])
    measure_grid(ctx, NAME)
    measure_timing(ctx)


# ---------------------------------------------------------------------------------------------------- analysis

def analyse(tables: Tables) -> Analysis:
    """Thm 1.3 on the grid: the law's fits and tests, the optimum per batch measured and predicted, and
    Leviathan's expected chain speedup at the smallest batch."""
    from sdlaws.fit import compare, fit_law, optimal_topk, used_rows

    df = tables["topk"]
    free, sqrt = fit_law(df, "topk_batch"), fit_law(df, "topk_batch_sqrt")
    comparison = compare([free, sqrt])
    fit = fit_summary(free, fit_law(df, "topk_batch", n_boot=N_BOOT, seed=SEED))
    data = {"fit": fit, "fit_sqrt": fit_summary(sqrt), "setup": setup(df),
            "wald_t": float(free.gof["wald_p_eq_0.5_t"]), "wald_pvalue": float(free.gof["wald_p_eq_0.5_pvalue"]),
            "lr_stat": float(comparison.loc["topk_batch_sqrt", "lr_stat"]),
            "lr_pvalue": float(comparison.loc["topk_batch_sqrt", "lr_pvalue"]),
            "delta_aic_free": float(comparison.loc["topk_batch", "delta_aic"]
                                    - comparison.loc["topk_batch_sqrt", "delta_aic"]),
            "verdict": verdicts.topk_label(fit["params"]["p"], *fit["ci"]["p"], fit["nobs"]),
            "optimum": optimum(df, planner_check(tables, "topk", "step", df).predicted(), optimal_topk(df)),
            "cost_check": cost_check(df)}
    rows = {"p free": used_rows(df, free), "p = 1/2": used_rows(df, sqrt)}
    return Analysis(data, fits={"thm13_topk_batch": (free, None), "thm13_topk_batch_sqrt": (sqrt, None)},
                    plots={"thm13_topk_batch": ({"p free": free, "p = 1/2": sqrt}, rows)})


def optimum(grid: pd.DataFrame, predicted: pd.DataFrame, law_input: pd.DataFrame) -> list[dict[str, Any]]:
    """Per batch size: the measured and the predicted best top-k (by tokens/s), their speedups over AR, whether
    AR beats every speculative configuration, and the law's input k* (:func:`sdlaws.fit.optimal_topk`)."""
    k_star = dict(zip(law_input["batch_size"].astype(int), law_input["tree_topk"]))
    out = []
    for batch, rows in predicted.groupby("batch_size"):
        spec, ar = rows[rows["method"].ne("ar")], rows[rows["method"].eq("ar")]
        measured, chosen = spec.loc[spec["tokens_per_s_meas"].idxmax()], spec.loc[spec["tokens_per_s_pred"].idxmax()]
        out.append({"batch_size": int(batch), "law_topk": num(k_star.get(int(batch))),
                    "measured_best_topk": int(measured["tree_topk"]), "predicted_best_topk": int(chosen["tree_topk"]),
                    "match": bool(measured["tree_topk"] == chosen["tree_topk"]),
                    "measured_best_speedup": float(measured["speedup_meas"]),
                    "predicted_best_speedup": float(chosen["speedup_pred"]),
                    "ar_beats_all_measured": bool(ar["tokens_per_s_meas"].median() > spec["tokens_per_s_meas"].max()),
                    "ar_beats_all_predicted": bool(ar["tokens_per_s_pred"].median() > spec["tokens_per_s_pred"].max())})
    return out


def cost_check(grid: pd.DataFrame) -> dict[str, Any]:
    """Leviathan Thm 3.8 at the smallest grid batch: the chain row's own alpha and measured cost ratio c
    (:mod:`sdlaws.rates`) against its measured speedup."""
    from sdlaws.fit.laws import speedup_chain

    chain = grid[grid["method"].eq("chain")]
    row = chain[chain["batch_size"].eq(chain["batch_size"].min())].iloc[0]
    n, alpha, c = int(row["num_spec_tokens"]), float(row["alpha_mle"]), float(row["cost_ratio_c"])
    return {"batch_size": int(row["batch_size"]), "num_spec_tokens": n, "cost_ratio_c": c, "alpha": alpha,
            "leviathan_speedup": float(speedup_chain(alpha, n, c)), "measured_speedup": float(row["speedup"])}


# ---------------------------------------------------------------------------------------------------- markdown

def summary(d: dict) -> list[list[str]]:
    """Summary rows: the law's verdict and exponent, and the planner's optimum against the measured one."""
    opt = d["optimum"]
    return [["Scylla Thm 1.3: k* = c B^-p", d["verdict"], f"p = {ci(d['fit']['params']['p'], d['fit']['ci']['p'])}"],
            ["Predicted optimal top-k", "", f"matches the measured optimum at {sum(r['match'] for r in opt)} of "
                                            f"{len(opt)} batch sizes"]]


def render(d: dict, doc: Doc) -> list[str]:
    """Optimum per batch (law input, measured, predicted), fits and tests of p = 1/2, verdicts."""
    fit, setup_, opt, c = d["fit"], d["setup"], d["optimum"], d["cost_check"]
    rows = [[str(r["batch_size"]), f(r["law_topk"]), str(r["measured_best_topk"]), f(r["measured_best_speedup"]),
             f(r["ar_beats_all_measured"]), str(r["predicted_best_topk"]), f(r["predicted_best_speedup"]),
             f(r["match"])] for r in opt]
    batches = np.array([r["batch_size"] for r in opt])
    p, (lo, hi) = fit["params"]["p"], fit["ci"]["p"]
    shrink = verdicts.topk_shrinkage(p, lo, hi, fit["nobs"])
    hits = sum(r["match"] for r in opt)
    return [f"## Scylla Thm 1.3: optimal tree top-k versus batch size ({d['verdict']})", "",
            f"Target {setup_['target']} ({tok(setup_['target_params'])} parameters), draft "
            f"{listed(setup_['drafts'])}; trees of depth {listed(setup_['num_spec_tokens'])} with top-k "
            f"{listed(setup_['topks'])} (top-k 1 is the chain), T = {listed(setup_['temperatures'], f)}, batch "
            f"{listed(setup_['batch_sizes'])}, each with its AR baseline. k* per batch is the best measured top-k "
            "refined by a parabola in log2 k (`sdlaws.fit.optimal_topk`). The predicted best is the planner's "
            "(`sdlaws.plan.validate`: acceptance profile, prompt spread and engine overheads fitted on this grid, "
            "forward times from the step-time law on `throughput/step.csv`) among the measured configurations.", "",
            *table(["batch", "k* (law input)", "best measured top-k", "its speedup", "AR beats all",
                    "predicted best top-k", "predicted speedup", "match"], rows),
            f"Fit: p = {ci(p, (lo, hi))} (boot {listed(fit['boot_ci']['p'], f)}), c = "
            f"{ci(fit['params']['c'], fit['ci']['c'])}, R2 = {f(fit['r2'])}, over {fit['nobs']} batch sizes. Test "
            f"of p = 1/2: Wald t = {f(d['wald_t'])} (p = {f(d['wald_pvalue'], 2)}), likelihood ratio "
            f"{f(d['lr_stat'])} (p = {f(d['lr_pvalue'], 2)}); AIC(p free) - AIC(p = 1/2) = {f(d['delta_aic_free'])}.",
            "",
            f"**Verdict: {d['verdict']}.** From the t interval of p: {shrink}. "
            f"{verdicts.monotone(batches, [r['measured_best_topk'] for r in opt])}; measured, "
            f"{verdicts.stops_paying(batches, np.array([r['measured_best_speedup'] for r in opt]))}; predicted, "
            f"{verdicts.stops_paying(batches, np.array([r['predicted_best_speedup'] for r in opt]))}. "
            f"{verdicts.share_goal(hits, len(opt), MATCH_SHARE, 'The predicted best top-k is the measured best')}. "
            f"At batch {c['batch_size']} the chain's measured cost ratio c = {f(c['cost_ratio_c'])} (draft pass / "
            f"target pass) and alpha = {f(c['alpha'])} give Leviathan's expected speedup tau/(gamma c + 1) = "
            f"{f(c['leviathan_speedup'])} for gamma = {c['num_spec_tokens']}; measured: {f(c['measured_speedup'])}.", "",
            doc.fig("thm13_topk_batch.png"), ""]


SECTION = Section("thm13", {**GRID, **STEPS}, analyse, render, summary)
ROOFLINE = Section("roofline", {**STEPS, **roofline_report.FILES}, roofline_report.analyse, roofline_report.render,
                   roofline_report.summary)
EXPERIMENT = Experiment(NAME, "throughput vs tree top-k at batch 1..128, optimum per batch (Scylla Thm 1.3)",
                        models, measure, sections=(SECTION, ROOFLINE))
