"""``heldout``: end-to-end speedup at configurations no other experiment measures, to test predictions.

Chains of other lengths (gamma 2, 3, 6), a second draft, a top-3 tree and T=1, at batch sizes outside the
``topk-batch`` grid where possible, each with its AR baseline. Nothing here is used for fitting: its section of
the results document reports what ``sdlaws validate`` gives on these rows with the grid as training set
(:func:`~sdlaws.experiments.reporting.planner_check`): predicted against measured tokens/s, speedup, TPOT and
decode steps per row, median errors with bootstrap intervals, and the rows it cannot predict, with the reason.
"""

from __future__ import annotations

from typing import Any

from sdlaws import io
from sdlaws.experiments import topk_batch, verdicts
from sdlaws.experiments.context import Context
from sdlaws.experiments.registry import Experiment, Section
from sdlaws.experiments.reporting import GPU, Analysis, Doc, Tables, f, pct, planner_check, table
from sdlaws.experiments.scale import Scale

NAME = "heldout"
#: The scale's calibration configurations: training rows of the planner beside the top-k grid.
TRAIN = "heldout-train"
FILES = {"heldout": ("throughput/heldout.csv", "spec"), **topk_batch.GRID, **topk_batch.STEPS}
#: Median |% error| of predicted tokens/s and speedup the planner is held to.
GOAL_PCT = 10.0
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
            ctx.sweep(experiment, target, [drafts[case.draft]], gammas=(case.gamma,), topks=(case.topk,),
                      batch_sizes=case.batch_sizes, temperatures=(case.temperature,),
                      num_prompts=max(*case.batch_sizes, ctx.scale.min_timed_prompts))


# ---------------------------------------------------------------------------------------------------- analysis

def analyse(tables: Tables) -> Analysis:
    """``sdlaws validate`` with the grid as training set and these rows held out."""
    from sdlaws.plan.cost import short_name

    v = planner_check(tables, "topk", "step", tables["heldout"])
    rows = v.rows.assign(draft=v.rows["draft_name"].fillna("").map(short_name))
    keep = ["label", "draft", *(f"{q}_{s}" for q in ("tokens_per_s", "speedup") for s in ("meas", "pred")),
            *(f"{q}_pct" for q in ERRORS)]
    data = {"rows": io.plain(v.predicted().assign(draft=rows["draft"])[keep]),
            "not_predicted": io.plain(rows.loc[rows["reason"].ne(""), ["label", "draft", "reason"]]),
            "summary": {kind: io.plain(v.summary_table(kind)) for kind in ("speculative", "ar")},
            "overheads": v.inputs["overheads"], "train_rows": v.inputs["train_rows"],
            "heldout_rows": v.inputs["heldout_rows"],
            "prompt_spread": {f"{short_name(k.rsplit(' ', 1)[0])} {k.rsplit(' ', 1)[1]}": s
                              for k, s in v.inputs["prompt_spread"].items()}}
    pred = v.predicted()
    return Analysis(data, figures={"heldout.png": lambda path: _figure(pred, path)})


def _figure(pred, path):
    """Predicted against measured tokens/s of every predicted row, one colour per method."""
    from sdlaws.plotting import predicted_vs_measured

    return predicted_vs_measured(pred["tokens_per_s_meas"], pred["tokens_per_s_pred"], pred["method"], path,
                                 quantity="tokens/s", title="held-out configurations")


def command() -> str:
    """The ``sdlaws validate`` command that gives this section's numbers."""
    grid, steps, held = topk_batch.GRID["topk"][0], topk_batch.STEPS["step"][0], FILES["heldout"][0]
    return (f"sdlaws validate --train measurements/{grid} --heldout measurements/{held} --steps "
            f"measurements/{steps} --hardware {GPU}")


# ---------------------------------------------------------------------------------------------------- markdown

def _quantity(d: dict, kind: str, quantity: str) -> dict[str, Any]:
    """One line of a summary table (rows, medians and means of |% error| with their bootstrap intervals)."""
    return next(r for r in d["summary"][kind] if r["quantity"] == quantity)


def summary(d: dict) -> list[list[str]]:
    """The summary table's row: median errors of the speculative rows."""
    tps, speed = _quantity(d, "speculative", "tokens_per_s"), _quantity(d, "speculative", "speedup")
    return [["Planner on held-out configurations", "", f"median error tokens/s {pct(tps['median_abs_pct'])}, speedup "
                                                       f"{pct(speed['median_abs_pct'])} ({tps['rows']} speculative "
                                                       f"rows, {len(d['not_predicted'])} not predicted)"]]


def _md_errors(d: dict, kind: str) -> str:
    """Median |% error| with its bootstrap interval for each quantity of ``kind`` rows."""
    return "; ".join(f"{r['quantity']} {pct(r['median_abs_pct'])} [{r['median_lower']:.1f}, {r['median_upper']:.1f}]"
                     for r in d["summary"][kind])


def render(d: dict, doc: Doc) -> list[str]:
    """Per-row predictions, median errors with bootstrap intervals, the goal, the rows not predicted."""
    rows = [[r["label"], r["draft"] or "-", f(r["tokens_per_s_meas"]), f(r["tokens_per_s_pred"]),
             pct(r["tokens_per_s_pct"]), f(r["speedup_meas"]), f(r["speedup_pred"]), pct(r["speedup_pct"]),
             pct(r["tpot_s_pct"]), pct(r["steps_per_batch_pct"])] for r in d["rows"]]
    tps, speed = _quantity(d, "speculative", "tokens_per_s"), _quantity(d, "speculative", "speedup")
    skipped = d["not_predicted"]
    return ["## Held-out configurations: the planner's predictions", "",
            f"Configurations never used for fitting (`{FILES['heldout'][0]}`), predicted by `{command()}`: on the "
            f"{d['train_rows']} rows of the grid it fits the acceptance profile of each (draft, "
            "temperature), its spread across prompts and the engine's per-step and prefill overheads outside the "
            "forward passes; forward times come from the step-time law on the same GPU's step tables; a static "
            "batch runs until its slowest row is done; speedup is over the predicted AR row. Fitted overheads "
            + ", ".join(f"{k} {f(v)}" for k, v in d["overheads"].items()) + "; prompt spread (Beta concentration) "
            + ", ".join(f"{k}: {f(v)}" for k, v in d["prompt_spread"].items()) + ".", "",
            *table(["configuration", "draft", "tok/s measured", "tok/s predicted", "error", "speedup measured",
                    "speedup predicted", "error", "TPOT error", "steps/batch error"], rows),
            f"- Speculative rows ({tps['rows']}), median |error| with {doc.pct} bootstrap intervals over rows: "
            f"{_md_errors(d, 'speculative')}.",
            f"- AR rows: {_md_errors(d, 'ar')}.",
            f"- {verdicts.goal(tps['median_abs_pct'], GOAL_PCT, 'The median tokens/s error of speculative rows')}; "
            f"{verdicts.goal(speed['median_abs_pct'], GOAL_PCT, 'the median speedup error')}.",
            verdicts.not_predicted([(r["label"], r["draft"], r["reason"]) for r in skipped], d["heldout_rows"]), "",
            doc.fig("heldout.png"), ""]


SECTION = Section("heldout", FILES, analyse, render, summary)
EXPERIMENT = Experiment(NAME, "end-to-end speedup at held-out configurations (prediction check)", models, measure,
                        sections=(SECTION,))
