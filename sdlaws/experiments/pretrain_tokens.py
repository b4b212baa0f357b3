"""``pretrain-tokens``: acceptance versus draft pretraining tokens (Scylla Thm 1.1, ``acc = a log10(T) + b``).

One well-trained target and one draft architecture whose single training run is checkpointed at log-spaced
token counts (Pythia-style, spanning three decades). Each checkpoint is measured as a chain draft of length
gamma at T=0 and T=1, and its perplexity on the held-out split is recorded. Checkpoints come from one cosine
schedule, so early ones are mid-schedule snapshots, not runs trained to completion with a smaller budget.

Its section of the results document fits ``loglinear`` of ``alpha_mle`` and ``mean_acceptance_length`` on
``log10(draft_pretrain_tokens)`` per temperature, against ``saturating`` (AIC) and a quadratic term in log tokens
(curvature test, WLS with the same weights); the verdict comes from :func:`sdlaws.experiments.verdicts.loglinear_law`.
The at-scale run (``--scale h200-science``: finished WSD runs, two training seeds), once committed, is the
section's primary result and the suite's small-budget checkpoints follow it (:mod:`sdlaws.experiments.at_scale`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sdlaws.errors import InputError
from sdlaws.experiments import at_scale, verdicts
from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.multiway import with_seed_noise
from sdlaws.experiments.registry import Experiment, Section
from sdlaws.experiments.reporting import (ALPHA, N_BOOT, SEED, Analysis, Doc, Tables, ci, f, fit_summary,
                                          interval_sign, listed, num, setup, table, tkey, tok)
from sdlaws.experiments.scale import Scale

NAME = "pretrain-tokens"
#: Decades of tokens below which a log-linear law in tokens is not testable.
MIN_DECADES = 1.0
#: Secondary analysis: the same fits on the checkpoints with tokens >= 10**(lo + UPPER_FROM * (hi - lo)), lo and hi
#: the log10 of the smallest and the largest budget; 0.5 is the geometric mean of the two, the upper half of the
#: log-token range. Why: Scylla's law concerns drafts past the onset (a draft that has not yet learnt much is rarely
#: accepted whatever its budget, and those checkpoints bend a fit over the full range), and a window fixed in advance
#: by the design's range, not picked from the data where the curve bends, cannot be tuned to a result. The
#: section's verdict stays the full range's, the analysis declared first.
UPPER_FROM = 0.5
RESPONSES = ("alpha_mle", "mean_acceptance_length")
TITLE = "Scylla Thm 1.1: acceptance versus draft pretraining tokens"
#: Table keys of the two datasets by role: the suite's small-budget checkpoints and the at-scale run.
SMALL_BUDGET = {"spec": "pretrain", "run": "acceptance_run"}
AT_SCALE = at_scale.keys("pretrain")
FILES = {"pretrain": ("acceptance/pretrain-tokens.csv", "spec"), "acceptance_run": ("acceptance/run.json", "json"),
         **at_scale.files(NAME, AT_SCALE)}
RUNS = at_scale.Runs(AT_SCALE, SMALL_BUDGET, FILES)


def models(scale: Scale):
    """The main target and the checkpointed draft (once per seed)."""
    return [scale.target_spec(scale.main_target), *scale.pretrain_specs()]


def measure(ctx: Context) -> None:
    """Perplexity of every checkpoint, then chain acceptance of each against the target (seed by seed)."""
    target_spec, *draft_specs = models(ctx.scale)
    target = ctx.final(target_spec)
    drafts = [ckpt for spec in draft_specs for ckpt in spread(ctx.checkpoints(spec))]
    ctx.measure_ppl([target, *drafts])
    ctx.sweep(NAME, target, drafts, num_spec_tokens=(ctx.scale.num_spec_tokens,),
              batch_sizes=(ctx.scale.num_prompts,), temperatures=ctx.scale.acceptance_temperatures)


# ---------------------------------------------------------------------------------------------------- analysis

def analyse(tables: Tables) -> Analysis:
    """Thm 1.1 on the at-scale run when it is committed, with the small-budget checkpoints below; else on those."""
    return at_scale.analyse(tables, RUNS, analyse_run, seeds_resampled)


def seeds_resampled(d: dict) -> bool:
    """Whether every group's bootstrap interval resamples training seeds (:func:`with_seed_noise`)."""
    groups = [*_groups(d).values(), *_groups(d["upper_half"]).values()]
    return all("train_seed" in g["loglinear"].get("boot_unit", "") for g in groups)


def analyse_run(tables: Tables, keys: dict[str, str]) -> Analysis:
    """Thm 1.1 per response and temperature on one dataset (table keys by role): fits, curvature, saturating
    alternative, verdicts; the same on the upper half of its log-token range (:data:`UPPER_FROM`) under
    ``upper_half``, which leaves the verdict alone."""
    from sdlaws.fit import used_rows

    rows = tables[keys["spec"]][tables[keys["spec"]]["method"].ne("ar")]
    out = Analysis({"x": "draft_pretrain_tokens", "responses": {}, "setup": setup(rows)})
    for y in RESPONSES:
        out.data["responses"][y], ll, sat = _fit_groups(rows, y)
        out.fits[f"thm11_loglinear_{y}"] = (ll, "temperature")
        out.fits[f"thm11_saturating_{y}"] = (sat, "temperature")
        out.plots[f"thm11_loglinear_{y}"] = ({tkey(t): fit for t, fit in ll.items()},
                                             {tkey(t): used_rows(rows, fit) for t, fit in ll.items()})
    out.data["verdict"] = verdicts.combine(g["verdict"] for g in _groups(out.data).values())
    upper, start = upper_half(rows)
    out.data["upper_half"] = {"from_tokens": start, "design_range": _range(rows),
                              "responses": {y: _fit_groups(upper, y)[0] for y in RESPONSES}}
    out.data["upper_half"]["verdict"] = verdicts.combine(g["verdict"] for g in _groups(out.data["upper_half"]).values())
    out.data["training_run"] = training_run(tables[keys["run"]], rows["draft_name"].iloc[0])
    return out


def _fit_groups(rows: pd.DataFrame, y: str):
    """Per temperature: the numbers and verdict of ``y`` on ``rows`` (log-linear fit, seed-aware bootstrap,
    saturating alternative, curvature), with the log-linear and saturating fits."""
    from sdlaws.fit import compare, fit_law_by, used_rows

    common = dict(group="temperature", x="draft_pretrain_tokens", y=y)
    ll, sat = fit_law_by(rows, "loglinear", **common), fit_law_by(rows, "saturating", **common)
    boot = fit_law_by(rows, "loglinear", n_boot=N_BOOT, seed=SEED, **common)
    groups = {tkey(t): _group(used_rows(rows, ll[t]), ll[t], boot[t], sat[t],
                              compare({"loglinear": ll[t], "saturating": sat[t]})) for t in ll}
    return groups, ll, sat


def _range(rows: pd.DataFrame) -> list[float]:
    """Smallest and largest draft budget of the design, in tokens."""
    tokens = rows["draft_pretrain_tokens"].astype(float)
    return [float(tokens.min()), float(tokens.max())]


def upper_half(rows: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """The rows whose draft budget lies in the upper part of the design's log-token range (from
    :data:`UPPER_FROM` of it: the geometric mean of the smallest and largest budget), and where that starts."""
    low, high = np.log10(_range(rows))
    start = float(10 ** (low + UPPER_FROM * (high - low)))
    # a checkpoint at the geometric mean itself belongs to the window, whatever the rounding of the power
    return rows[rows["draft_pretrain_tokens"].astype(float) >= start * (1 - 1e-9)], start


def _group(rows: pd.DataFrame, ll, boot, sat, comparison: pd.DataFrame) -> dict[str, Any]:
    """Numbers and verdict of one (response, temperature)."""
    ordered = rows.sort_values("draft_pretrain_tokens")
    tokens = ordered["draft_pretrain_tokens"].to_numpy(dtype=float)
    out = {"loglinear": with_seed_noise(fit_summary(ll, boot), ll, rows, "draft_pretrain_tokens"),
           "saturating": fit_summary(sat),
           "delta_aic_saturating": float(comparison.loc["saturating", "delta_aic"]
                                         - comparison.loc["loglinear", "delta_aic"]),
           "curvature": curvature_test(rows, ll), "num_checkpoints": len(rows),
           "tokens_range": [float(tokens[0]), float(tokens[-1])], "decades": float(np.log10(tokens[-1] / tokens[0])),
           "y_range": [float(ordered[ll.y].iloc[0]), float(ordered[ll.y].iloc[-1])],
           "draft_ppl_range": [num(ordered["draft_ppl"].iloc[0]), num(ordered["draft_ppl"].iloc[-1])]}
    out["slope_sign"] = interval_sign(out["loglinear"], "a")
    out["verdict"] = verdicts.loglinear_law(out["slope_sign"], out["decades"], min_decades=MIN_DECADES,
                                            curvature_p=out["curvature"]["pvalue"],
                                            aic_gap=out["delta_aic_saturating"], alpha=ALPHA)
    return out


def curvature_test(rows: pd.DataFrame, fit) -> dict[str, float]:
    """Quadratic term of ``y`` in ``log10(x)`` (WLS with the fit's weights): coefficient and two-sided p-value.

    A significant term says the curve bends: > 0 accelerates, < 0 flattens (what saturation would look like).
    """
    from statsmodels.regression.linear_model import WLS

    u = np.log10(rows[fit.x[0]].to_numpy(dtype=float))
    weight = fit.meta.get("weight")
    w = rows[weight].to_numpy(dtype=float) if weight else np.ones(len(u))
    res = WLS(rows[fit.y].to_numpy(dtype=float), np.column_stack([np.ones_like(u), u, u ** 2]), weights=w).fit()
    return {"quadratic_coef": float(res.params[2]), "pvalue": float(res.pvalues[2])}


def training_run(run: dict[str, Any], model_name: str) -> dict[str, Any]:
    """Schedule facts of the run that produced a checkpoint (from ``run.json``): planned and reached tokens,
    warm-up tokens, checkpoints inside the warm-up, whether the run was stopped early."""
    key = Path(str(model_name)).parent.name
    checkpoints = run["train"]["checkpoints"].get(key)
    if not checkpoints:
        raise InputError(f"run.json has no training metadata for {key!r}; use the run.json of the same suite")
    planned = float(checkpoints[-1]["planned_tokens"])
    warmup = planned * float(checkpoints[-1]["train_config"]["warmup_fraction"])
    return {"run": key, "schedule": checkpoints[-1]["train_config"].get("schedule", "cosine"),
            "planned_tokens": planned, "reached_tokens": float(checkpoints[-1]["pretrain_tokens"]),
            "warmup_tokens": warmup, "num_in_warmup": sum(c["pretrain_tokens"] <= warmup for c in checkpoints),
            "stopped_early": bool(checkpoints[-1].get("stopped_early"))}


def _groups(d: dict) -> dict[str, dict]:
    """Every (temperature, response) group: ``T=0 alpha_mle`` -> its numbers."""
    return {f"{t} {y}": g for y, groups in d["responses"].items() for t, g in groups.items()}


# ---------------------------------------------------------------------------------------------------- markdown

def summary(d: dict) -> list[list[str]]:
    """The summary table's row: verdict and the T = 0 alpha slope (of the at-scale run when there is one)."""
    cold = next(iter(d["responses"]["alpha_mle"]))
    ll = d["responses"]["alpha_mle"][cold]["loglinear"]
    return at_scale.summary(d, [["Scylla Thm 1.1: acceptance vs log10 pretraining tokens", d["verdict"],
                                 f"alpha slope a = {ci(ll['params']['a'], ll['ci']['a'])} per decade ({cold})"]])


def render(d: dict, doc: Doc) -> list[str]:
    """The at-scale run when there is one, then the small-budget checkpoints; else those alone."""
    return at_scale.render(d, doc, TITLE, _md_run)


def _md_run(d: dict, doc: Doc, place: at_scale.Place) -> list[str]:
    """One dataset: fits per temperature and response, curvature, saturating alternative, verdict."""
    setup_, groups, run = d["setup"], _groups(d), d["training_run"]
    seeds = len(d.get(at_scale.DATASET, {}).get("seeds", [0]))
    cold = next(iter(d["responses"]["alpha_mle"]))
    first = d["responses"]["alpha_mle"][cold]
    rows = _md_fit_rows(groups, intercept=True)
    positive, bent = _md_counts(groups)
    return [f"One draft ({listed(setup_['drafts'])}) at {_md_checkpoints(first['num_checkpoints'], seeds)}, "
            f"{tok(first['tokens_range'][0])} to {tok(first['tokens_range'][1])} tokens ({f(first['decades'])} "
            f"decades), against target {setup_['target']}; chain gamma {listed(setup_['num_spec_tokens'])}, batch "
            f"{listed(setup_['batch_sizes'])}, T = {listed(setup_['temperatures'], f)}. Law: "
            "`y = a*log10(tokens) + b` (WLS, weighted by the counts behind each rate), against "
            "`y = y_max - A*tokens^-p`.", "",
            *table(["T", "y", f"slope a [{doc.pct} t]", "a boot", "b", "R2", "quadratic term in log10 tokens",
                    "AIC(saturating) - AIC(loglinear)", "verdict"], rows),
            f"At {cold}, alpha_mle goes from {f(first['y_range'][0])} to {f(first['y_range'][1])} while the draft's "
            f"perplexity goes from {f(first['draft_ppl_range'][0])} to {f(first['draft_ppl_range'][1])}.",
            verdicts.slope_signs({k: g["slope_sign"] for k, g in groups.items()}),
            verdicts.curvature({k: (g["curvature"]["quadratic_coef"], g["curvature"]["pvalue"])
                                for k, g in groups.items()}, 1 - doc.level),
            verdicts.saturating_alternative({k: g["saturating"]["params"]["p"] for k, g in groups.items()},
                                            {k: g["delta_aic_saturating"] for k, g in groups.items()}), "",
            f"**Verdict: {d['verdict']}.** "
            + verdicts.thm11_conclusion(d["verdict"], positive, bent, len(groups),
                                        min(g["decades"] for g in groups.values()), MIN_DECADES)
            + f"{_md_schedule(run, seeds)}; "
            + f"{verdicts.warmup_checkpoints(run['num_in_warmup'], tok(run['warmup_tokens']))}.",
            "", *_md_upper_half(d, doc, seeds), *[place.fig(doc, f"thm11_loglinear_{y}.png") for y in RESPONSES], ""]


def _md_fit_rows(groups: dict[str, dict], intercept: bool) -> list[list[str]]:
    """One table row per (temperature, response) group: slope with its t and bootstrap intervals, the intercept
    where asked, R2, the quadratic term, the AIC gap to the saturating law and the group's verdict."""
    rows = []
    for key, g in groups.items():
        ll = g["loglinear"]
        rows.append([key.split()[0], f"`{ll['y']}`", ci(ll["params"]["a"], ll["ci"]["a"]), listed(ll["boot_ci"]["a"], f),
                     *([ci(ll["params"]["b"], ll["ci"]["b"])] if intercept else []), f(ll["r2"]),
                     f"{f(g['curvature']['quadratic_coef'])} (p = {f(g['curvature']['pvalue'], 2)})",
                     f(g["delta_aic_saturating"]), g["verdict"]])
    return rows


def _md_counts(groups: dict[str, dict]) -> tuple[int, int]:
    """Groups with a significantly positive slope, and groups whose verdict is ``partly`` (bent or saturating)."""
    return (sum(g["slope_sign"] > 0 for g in groups.values()),
            sum(g["verdict"] == "partly" for g in groups.values()))


def _md_upper_half(d: dict, doc: Doc, seeds: int) -> list[str]:
    """The secondary analysis: the same fits on the upper half of the log-token range, its verdict from the same
    rule, and how it reads against the full range."""
    upper, full = d["upper_half"], _groups(d)
    groups = _groups(upper)
    first = next(iter(upper["responses"]["alpha_mle"].values()))
    low, high = upper["design_range"]
    rows = _md_fit_rows(groups, intercept=False)
    positive, bent = _md_counts(groups)
    return [f"**Secondary analysis: the upper half of the log-token range.** The same fits, curvature test and "
            f"bootstrap on the checkpoints with at least {tok(upper['from_tokens'])} tokens, the geometric mean of "
            f"the smallest and the largest budget ({tok(low)} and {tok(high)}): Thm 1.1 concerns drafts past the "
            "onset, and this window is set by the design's token range alone, not by where the data bend. "
            f"The window holds {_md_checkpoints(first['num_checkpoints'], seeds)}, {tok(first['tokens_range'][0])} to "
            f"{tok(first['tokens_range'][1])} tokens ({f(first['decades'])} decades). The section's verdict and its "
            "summary row stay the full range's, the analysis declared first.", "",
            *table(["T", "y", f"slope a [{doc.pct} t]", "a boot", "R2", "quadratic term in log10 tokens",
                    "AIC(saturating) - AIC(loglinear)", "verdict"], rows),
            verdicts.upper_half_reading({k: (g["curvature"]["quadratic_coef"], g["curvature"]["pvalue"])
                                         for k, g in full.items()},
                                        {k: (g["curvature"]["quadratic_coef"], g["curvature"]["pvalue"])
                                         for k, g in groups.items()},
                                        {k: g["delta_aic_saturating"] for k, g in groups.items()}, positive,
                                        1 - doc.level),
            f"Verdict of the upper half, by the same rule: {upper['verdict']}. "
            + verdicts.thm11_conclusion(upper["verdict"], positive, bent, len(groups),
                                        min(g["decades"] for g in groups.values()), MIN_DECADES), ""]


def _md_checkpoints(count: int, seeds: int) -> str:
    """How many checkpoints of how many runs: of one run, or of each training seed's run."""
    if seeds < 2:
        return f"{count} checkpoints of one run"
    return f"{count} checkpoints of {seeds} runs (one per training seed)"


def _md_schedule(run: dict, seeds: int) -> str:
    """What the checkpoints are: WSD branches (finished?), or snapshots of one cosine schedule (stopped early?)."""
    if run["schedule"] == "wsd":
        return (f" The checkpoints are {verdicts.schedule_label(run['schedule'], run['stopped_early'])}, cool-down "
                "branches of one trunk" + (" per training seed" if seeds > 1 else ""))
    return (f" The checkpoints are snapshots of one cosine schedule planned for {tok(run['planned_tokens'])} tokens"
            + (f" and stopped at {tok(run['reached_tokens'])}" if run["stopped_early"] else ""))


SECTION = Section("thm11", FILES, analyse, render, summary, optional=frozenset(AT_SCALE.values()))
EXPERIMENT = Experiment(NAME, "acceptance vs draft pretraining tokens, log-spaced checkpoints (Scylla Thm 1.1)",
                        models, measure, sections=(SECTION,))
