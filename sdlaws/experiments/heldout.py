"""``heldout``: end-to-end throughput at configurations no fit sees, to test the planner's predictions.

Measured: chains of other lengths, other trees, T = 1, other drafts (one never measured for training), at batch
sizes outside the ``topk-batch`` grid, each with its AR baseline; plus the scale's calibration configurations,
the planner's training rows beside the grid (``heldout-train``).

Its section of the results document runs ``sdlaws validate`` on each suite of :data:`SUITES`: fit on the
training files, predict every held-out row, and report predicted against measured tokens/s, speedup, TPOT and
decode steps, median errors with bootstrap intervals, whether the predicted best configuration per batch size is
the measured best, and the rows it could not predict, with the reason. The 8B suites' rows are the Thm 1.3 sweep
(:mod:`sdlaws.experiments.costmodel`) and the same target with an EAGLE-sized head as its draft
(``benchmarks/gpu_heldout.sh`` step 5): synthetic acceptance, so only the engine's overheads come from the pair
suite's training rows; nothing of either is fitted, and the forward times come from the step-time law of the H200
step tables (``h200/steps*.csv``). The head's rows were measured while heads ran stock Hugging Face layers
(``h200/hf-layers/``): that suite reads the head's step table of the same engine, as a surface over the law fitted
on the decoders' tables (its stock layers are not what the law's terms count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from sdlaws import io
from sdlaws.experiments import costmodel, topk_batch, verdicts
from sdlaws.experiments.context import Context
from sdlaws.experiments.registry import Experiment, Section
from sdlaws.experiments.reporting import Analysis, Doc, Tables, f, table
from sdlaws.experiments.scale import Scale
from sdlaws.formatting import pct

NAME = "heldout"
#: The scale's calibration configurations: training rows of the planner beside the top-k grid.
TRAIN = "heldout-train"


@dataclass(frozen=True)
class Suite:
    """One out-of-sample test: training ``spec`` files, held-out ``spec`` file, ``step`` tables, GPU preset
    (keys of :data:`FILES`), and step tables of passes the law does not count (their surfaces only)."""

    key: str
    title: str
    train: tuple[str, ...]
    heldout: str               # empty for a leave-one-draft-out suite
    steps: tuple[str, ...]
    gpu: str
    #: "files": fit on ``train``, predict ``heldout``; "by_draft": per target, each draft of ``train`` predicted
    #: from the target's other drafts (:func:`sdlaws.plan.validate.leave_one_draft_out`).
    mode: str = "files"
    surface_steps: tuple[str, ...] = ()


FILES = {"pairs_grid": ("h200/pairs/topk-batch.csv", "spec"), "pairs_train": ("h200/pairs/heldout-train.csv", "spec"),
         "pairs_heldout": ("h200/pairs/heldout.csv", "spec-all"), "pairs_step": ("h200/pairs/step.csv", "step"),
         "sweep_8b": ("h200/thm13*.csv", "spec-all"), "steps_8b": ("h200/steps*.csv", "step"),
         "steps_decoders": ("h200/steps.csv", "step"), "head_8b": (costmodel.HEADS, "spec-all"),
         "steps_head_hf": (costmodel.HEAD_STEPS, "step"),
         "heldout": ("throughput/heldout.csv", "spec-all"), "plane": ("acceptance/ppl-plane.csv", "spec"),
         **topk_batch.GRID, **topk_batch.STEPS}
#: (i) real acceptance on the GPU the other H200 data come from, (ii) realistic scale there (a 1B-shape draft, an
#: EAGLE-sized head), then the first (H100) run of the pair suite and its perplexity plane's drafts.
SUITES = (
    Suite("h200-pairs", "trained pairs, one H200", ("pairs_grid", "pairs_train"), "pairs_heldout", ("pairs_step",),
          "h200"),
    Suite("h200-8b", "8B target with a 1B-shape draft under synthetic acceptance, one H200",
          ("pairs_grid", "pairs_train"), "sweep_8b", ("steps_8b", "pairs_step"), "h200"),
    Suite("h200-8b-head", "8B target with an EAGLE-sized head (one decoder layer, stock Hugging Face layers) under "
          "synthetic acceptance, one H200", ("pairs_grid", "pairs_train"), "head_8b", ("steps_decoders", "pairs_step"),
          "h200", surface_steps=("steps_head_hf",)),
    Suite("h100-pairs", "trained pairs, one H100 (first run)", ("topk",), "heldout", ("step",), "h100"),
    Suite("h100-draft-law", "drafts never seen: each draft of the H100 perplexity plane left out in turn",
          ("plane",), "", ("step",), "h100", mode="by_draft"),
)
#: Suites with at most this many held-out rows list every row in the document.
ROWS_LISTED = 60
#: Median |% error| of predicted tokens/s and speedup the planner is held to.
GOAL_PCT = 10.0
#: Share of (draft, temperature, batch, prompt length) groups whose predicted best should be the measured best.
MATCH_SHARE = 0.8
ERRORS = ("tokens_per_s", "speedup", "tpot_s", "steps_per_batch")


def models(scale: Scale):
    """The pair's target, then every pair draft."""
    return [scale.spec(scale.pair_target, scale.pair_target_tokens),
            *(scale.spec(shape, scale.pair_draft_tokens) for shape in scale.pair_drafts)]


def measure(ctx: Context) -> None:
    """Perplexities, the calibration configurations (training rows), then each held-out case."""
    target_spec, *draft_specs = models(ctx.scale)
    target, drafts = ctx.final(target_spec), [ctx.final(spec) for spec in draft_specs]
    ctx.measure_ppl([target, *drafts])
    for experiment, cases in ((TRAIN, ctx.scale.calibration), (NAME, ctx.scale.heldout)):
        for case in cases:
            ctx.sweep(experiment, target, [drafts[case.draft]], num_spec_tokens=(case.num_spec_tokens,),
                      topks=(case.topk,), batch_sizes=case.batch_sizes, temperatures=(case.temperature,),
                      num_prompts=max(*case.batch_sizes, ctx.scale.min_timed_prompts))


# ---------------------------------------------------------------------------------------------------- analysis

def command(suite: Suite) -> str:
    """The ``sdlaws validate`` command that gives a suite's numbers."""
    def opts(flag, keys):
        return " ".join(f"{flag} measurements/{FILES[k][0]}" for k in keys)
    held = "--leave-one-draft-out" if suite.mode == "by_draft" else opts("--heldout", (suite.heldout,))
    surface = f" {opts('--surface-steps', suite.surface_steps)}" if suite.surface_steps else ""
    return (f"sdlaws validate {opts('--train', suite.train)} {held} {opts('--steps', suite.steps)}{surface} "
            f"--hardware {suite.gpu}")


def validation(tables: Tables, suite: Suite):
    """What ``sdlaws validate`` gives for ``suite`` (:class:`~sdlaws.plan.validate.Validation`)."""
    from sdlaws.hardware import load_hardware
    from sdlaws.plan.cost import fit_steptime
    from sdlaws.plan.validate import fit_planner, leave_one_draft_out, predict

    surface = pd.concat([tables[k] for k in suite.surface_steps], ignore_index=True) if suite.surface_steps else None
    law = fit_steptime(pd.concat([tables[k] for k in suite.steps], ignore_index=True), load_hardware(suite.gpu),
                       surface_only=surface)
    train = pd.concat([tables[k] for k in suite.train], ignore_index=True)
    if suite.mode == "by_draft":
        return leave_one_draft_out(train, law)
    return predict(fit_planner(train, law), tables[suite.heldout])


def _suite_data(tables: Tables, suite: Suite) -> tuple[dict[str, Any], pd.DataFrame]:
    """JSON-ready results of one suite, and its predicted rows (for the figure)."""
    from sdlaws.plan.cost import short_name

    v = validation(tables, suite)
    rows = v.rows.assign(draft=v.rows["draft_name"].fillna("").map(short_name),
                         prompt_len=v.rows["prompt_tokens_per_seq"].round())
    keep = ["label", "draft", *(f"{q}_{s}" for q in ("tokens_per_s", "speedup") for s in ("meas", "pred")),
            *(f"{q}_pct" for q in ERRORS)]
    pred = rows[rows["reason"].eq("")]
    best = v.best_configs()
    by = pred[pred["method"].ne("ar")].groupby(["draft", "prompt_len", "method"])
    data = {"key": suite.key, "title": suite.title, "command": command(suite), "mode": suite.mode,
            "folds": v.inputs.get("folds"),
            "rows": io.plain(pred[keep]) if len(pred) <= ROWS_LISTED else [],
            "groups": io.plain(by[[f"{q}_pct" for q in ERRORS]].agg(lambda e: e.abs().median())
                               .join(by.size().rename("rows")).reset_index()),
            "not_predicted": io.plain(rows.loc[rows["reason"].ne(""), ["label", "draft", "reason"]]),
            "summary": {kind: io.plain(v.summary_table(kind)) for kind in ("speculative", "ar")},
            "best": io.plain(best.assign(draft=best["draft_name"].map(short_name)).drop(
                columns=["draft_name", "target_name"])) if not best.empty else [],
            "acceptance_from": {k: int(n) for k, n in pred.loc[pred["method"].ne("ar"), "acceptance_from"]
                                .value_counts().sort_index().items()},
            "overheads": v.inputs["overheads"], "train_rows": v.inputs["train_rows"],
            "heldout_rows": v.inputs["heldout_rows"], "draft_law": v.inputs["draft_law"],
            "prompt_spread": {f"{short_name(k.rsplit(' ', 1)[0])} {k.rsplit(' ', 1)[1]}": s
                              for k, s in v.inputs["prompt_spread"].items()}}
    return data, pred


def analyse(tables: Tables) -> Analysis:
    """``sdlaws validate`` on every suite."""
    suites, figures = [], {}
    for suite in SUITES:
        data, pred = _suite_data(tables, suite)
        suites.append(data)
        figures[f"heldout-{suite.key}.png"] = lambda path, pred=pred, title=suite.title: _figure(pred, path, title)
    return Analysis({"suites": suites}, figures=figures)


def _figure(pred, path, title: str):
    """Predicted against measured tokens/s of every predicted row, one colour per method."""
    from sdlaws.plotting import predicted_vs_measured

    return predicted_vs_measured(pred["tokens_per_s_meas"], pred["tokens_per_s_pred"], pred["method"], path,
                                 quantity="tokens/s", title=title)


# ---------------------------------------------------------------------------------------------------- markdown

def _quantity(d: dict, kind: str, quantity: str) -> dict[str, Any]:
    """One line of a summary table (rows, medians and means of |% error| with their bootstrap intervals)."""
    return next(r for r in d["summary"][kind] if r["quantity"] == quantity)


def _best_counts(d: dict) -> tuple[int, int]:
    """(groups whose predicted best is the measured best within the repeat noise, or exactly without repeats;
    groups)."""
    hits = [r["in_noise"] if r["in_noise"] is not None else r["exact"] for r in d["best"]]
    return sum(map(bool, hits)), len(hits)


def summary(d: dict) -> list[list[str]]:
    """The summary table's rows: median errors of the speculative rows of each suite."""
    out = []
    for s in d["suites"]:
        tps, speed = _quantity(s, "speculative", "tokens_per_s"), _quantity(s, "speculative", "speedup")
        out.append([f"Planner on held-out configurations: {s['title']}", "",
                    f"median error tokens/s {pct(tps['median_abs_pct'])}, speedup {pct(speed['median_abs_pct'])} "
                    f"({tps['rows']} speculative rows, {len(s['not_predicted'])} not predicted)"])
    return out


def _md_errors(d: dict, kind: str) -> str:
    """Median |% error| with its bootstrap interval for each quantity of ``kind`` rows."""
    return "; ".join(f"{r['quantity']} {pct(r['median_abs_pct'])} [{r['median_lower']:.1f}, {r['median_upper']:.1f}]"
                     for r in d["summary"][kind]) or "none held out"


def _md_rows(d: dict) -> list[str]:
    """Every held-out row, or (large suites) the median |error| per draft, prompt length and method."""
    if d["rows"]:
        return table(["configuration", "draft", "tok/s measured", "tok/s predicted", "error", "speedup measured",
                      "speedup predicted", "error", "TPOT error", "steps/batch error"],
                     [[r["label"], r["draft"] or "-", f(r["tokens_per_s_meas"]), f(r["tokens_per_s_pred"]),
                       pct(r["tokens_per_s_pct"]), f(r["speedup_meas"]), f(r["speedup_pred"]), pct(r["speedup_pct"]),
                       pct(r["tpot_s_pct"]), pct(r["steps_per_batch_pct"])] for r in d["rows"]])
    return table(["draft", "prompt tokens", "method", "rows", *(f"median abs. {q} error" for q in ERRORS)],
                 [[g["draft"], f(g["prompt_len"]), g["method"], str(g["rows"]),
                   *(pct(g[f"{q}_pct"]) for q in ERRORS)] for g in d["groups"]])


def _md_best(d: dict) -> list[str]:
    """The best configuration per (draft, T, batch size, prompt length), predicted against measured."""
    if not d["best"]:
        return []
    hits, total = _best_counts(d)
    return [*table(["draft", "T", "batch", "prompt tokens", "candidates", "measured best", "predicted best",
                    "its shortfall", "within repeat noise"],
                   [[r["draft"], f(r["temperature"]), str(r["batch_size"]), f(r["prompt_len"]), str(r["candidates"]),
                     r["measured_best"], r["predicted_best"], pct(r["shortfall_pct"]),
                     "n/a (1 repeat)" if r["in_noise"] is None else f(r["in_noise"])] for r in d["best"]]),
            "- " + verdicts.share_goal(hits, total, MATCH_SHARE, "The predicted best configuration is the measured "
                                       "best (within the repeat noise where repeated, else exactly)",
                                       unit="(draft, workload) groups") + "."]


def _md_suite(d: dict, doc: Doc) -> list[str]:
    """One suite: how it was predicted, per-row or per-group errors, aggregates against the goal, best
    configurations, rows not predicted, figure."""
    tps, speed = _quantity(d, "speculative", "tokens_per_s"), _quantity(d, "speculative", "speedup")
    law = "; ".join(f"{t}: drafts of perplexity {f(v['ppl_range'][0])}-{f(v['ppl_range'][1])}"
                    for t, v in d["draft_law"].items()) or "none (fewer than two training drafts)"
    sources = "; ".join(f"{k} for {n} rows" for k, n in d["acceptance_from"].items()) or "none"
    fits = (f"in {d['folds']} folds, one per (target, draft), a planner fitted on the target's other drafts and "
            "its AR rows predicts the left-out draft's rows, so their acceptance comes from the draft law on the "
            "draft's perplexity; each fold fits the acceptance profile of each training draft, its spread across "
            "prompts, the draft law across them"
            if d["mode"] == "by_draft" else
            f"on the {d['train_rows']} training rows it fits the acceptance profile of each (draft, temperature), "
            f"its spread across prompts, the draft law across drafts ({law})")
    return [f"### {d['title']}", "",
            f"`{d['command']}`: {fits} and the engine's per-step and prefill overheads outside the forward passes; "
            "forward times come from the step-time law on the step tables; a static batch runs until its slowest "
            "row is done; speedup is over the predicted AR row of the same workload. Acceptance of the predicted "
            f"speculative rows: {sources}. Fitted overheads{' (median over folds)' if d['mode'] == 'by_draft' else ''} "
            + ", ".join(f"{k} {f(v)}" for k, v in d["overheads"].items()) + "; prompt spread (Beta concentration) "
            + (", ".join(f"{k}: {f(v)}" for k, v in d["prompt_spread"].items()) or "none") + ".", "",
            *_md_rows(d),
            f"- Speculative rows ({tps['rows']}), median |error| with {doc.pct} bootstrap intervals over rows: "
            f"{_md_errors(d, 'speculative')}.",
            f"- AR rows: {_md_errors(d, 'ar')}.",
            f"- {verdicts.goal(tps['median_abs_pct'], GOAL_PCT, 'The median tokens/s error of speculative rows')}; "
            f"{verdicts.goal(speed['median_abs_pct'], GOAL_PCT, 'the median speedup error')}.",
            verdicts.not_predicted([(r["label"], r["draft"], r["reason"]) for r in d["not_predicted"]],
                                   d["heldout_rows"]), "",
            *_md_best(d), "", doc.fig(f"heldout-{d['key']}.png"), ""]


def render(d: dict, doc: Doc) -> list[str]:
    """Each suite in turn."""
    return ["## Held-out configurations: the planner's predictions", "",
            "Each suite is predicted from files that do not hold its rows; nothing of a held-out file is fitted.", "",
            *[line for s in d["suites"] for line in _md_suite(s, doc)]]


SECTION = Section("heldout", FILES, analyse, render, summary)
EXPERIMENT = Experiment(NAME, "end-to-end speedup at held-out configurations (prediction check)", models, measure,
                        sections=(SECTION,))
