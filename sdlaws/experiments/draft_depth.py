"""``draft-depth``: acceptance versus draft depth and width (Scylla Thm 1.2, ``acc = a log10(layers) + b``).

Drafts of 1..8 decoder layers at two widths, all trained on the same token stream with the same budget, are
measured as chain drafts of length gamma against the main target at T=0 (and T=1 where the scale says so).

Its section of the results document fits ``loglinear`` of ``mean_acceptance_length`` on ``log10(draft_layers)``
per draft width and temperature (the width is read from the model name, ``L<layers>-H<width>``), for the suite's
run and for the rerun with every draft at its full token budget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sdlaws.experiments import verdicts
from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.multiway import with_seed_noise
from sdlaws.experiments.registry import Experiment, Section
from sdlaws.experiments.reporting import (N_BOOT, SEED, Analysis, Doc, Tables, ci, f, fit_summary, interval_sign,
                                          listed, num, setup, table, tkey, tok)
from sdlaws.experiments.scale import Scale

NAME = "draft-depth"
#: Decades of layers below which the slope is not testable: 1-8 layers, the depths drafts are built with, span
#: 0.9 decades, so the depth law is tested on its direction over a factor of at least ~3 in depth.
MIN_DECADES = 0.5
#: The suite's run (every draft at the suite's budget) and the rerun at each draft's full budget.
RUNS = {"suite": ("depth", "thm12"), "full": ("depth_full", "thm12full")}
FILES = {"depth": ("acceptance/draft-depth.csv", "spec"), "depth_full": ("draft-depth-30M/draft-depth.csv", "spec")}
SIGN_WORDS = {1: "positive", -1: "negative", 0: "not significant"}


def models(scale: Scale):
    """The main target, then the depth x width drafts."""
    return [scale.target_spec(scale.main_target),
            *(scale.spec(shape, scale.draft_tokens) for shape in scale.depth_drafts)]


def measure(ctx: Context) -> None:
    """Perplexity of every model, then chain acceptance of each draft against the target."""
    target_spec, *draft_specs = models(ctx.scale)
    target = ctx.final(target_spec)
    drafts = spread([ctx.final(spec) for spec in draft_specs])
    ctx.measure_ppl([target, *drafts])
    ctx.sweep(NAME, target, drafts, num_spec_tokens=(ctx.scale.num_spec_tokens,),
              batch_sizes=(ctx.scale.num_prompts,), temperatures=ctx.scale.acceptance_temperatures)


# ---------------------------------------------------------------------------------------------------- analysis

def analyse(tables: Tables) -> Analysis:
    """Thm 1.2 on both runs: per temperature and width, the slope, its sign and the drafts' perplexity by depth."""
    out = Analysis({})
    for key, (table_key, prefix) in RUNS.items():
        run = depth_law(tables[table_key], prefix)
        out.data[key] = run.data
        out.fits.update(run.fits)
        out.plots.update(run.plots)
    return out


def depth_law(df: pd.DataFrame, prefix: str) -> Analysis:
    """Mean acceptance length versus log10(draft layers), per draft width and temperature; fit files and figures
    are named ``<prefix>_loglinear_T<t>``."""
    from sdlaws.fit import fit_law_by, used_rows
    from sdlaws.plan.cost import step_shape

    rows = df[df["method"].ne("ar")].copy()
    rows["draft_width"] = [step_shape(n, p).hidden for n, p in zip(rows["draft_name"], rows["draft_params"])]
    out = Analysis({"x": "draft_layers", "y": "mean_acceptance_length", "groups": {}, "setup": setup(rows)})
    for t, sub in rows.groupby("temperature"):
        common = dict(group="draft_width", x="draft_layers", y="mean_acceptance_length")
        ll, boot = fit_law_by(sub, "loglinear", **common), fit_law_by(sub, "loglinear", n_boot=N_BOOT, seed=SEED,
                                                                    **common)
        for width, fit in ll.items():
            out.data["groups"][f"{tkey(t)} width {width}"] = _group(used_rows(sub, fit), fit, boot[width], width)
        stem = f"{prefix}_loglinear_{tkey(t).replace('=', '')}"
        out.fits[stem] = (ll, "draft_width")
        out.plots[stem] = ({f"width {w}": fit for w, fit in ll.items()},
                           {f"width {w}": used_rows(sub, fit) for w, fit in ll.items()})
    out.data["verdict"] = verdicts.combine(g["verdict"] for g in out.data["groups"].values())
    for role in ("draft", "target"):
        out.data[f"{role}_pretrain_tokens"] = sorted(float(v) for v in rows[f"{role}_pretrain_tokens"].unique())
    return out


def _group(rows: pd.DataFrame, fit, boot, width: int) -> dict[str, Any]:
    """Numbers and verdict of one (temperature, width), with the drafts' perplexity by depth."""
    ordered = rows.sort_values("draft_layers")
    layers = ordered["draft_layers"].to_numpy(dtype=float)
    out = {"width": int(width), "loglinear": with_seed_noise(fit_summary(fit, boot), fit, rows, "draft_layers"),
           "layers": [int(v) for v in layers],
           "y": [float(v) for v in ordered[fit.y]], "draft_ppl": [num(v) for v in ordered["draft_ppl"]],
           "decades": float(np.log10(layers[-1] / layers[0]))}
    out["slope_sign"] = interval_sign(out["loglinear"], "a")
    out["verdict"] = verdicts.loglinear_law(out["slope_sign"], out["decades"], min_decades=MIN_DECADES)
    return out


# ---------------------------------------------------------------------------------------------------- markdown

def summary(d: dict) -> list[list[str]]:
    """One summary row per run: verdict and the slope of every group."""
    titles = {"suite": "Scylla Thm 1.2: acceptance vs log10 draft layers",
              "full": "Scylla Thm 1.2, drafts at their full budget"}
    return [[title, d[key]["verdict"], ", ".join(f"{k}: a = {f(g['loglinear']['params']['a'])} "
                                                 f"({SIGN_WORDS[g['slope_sign']]})"
                                                 for k, g in d[key]["groups"].items())]
            for key, title in titles.items()]


def _md_table(t: dict, doc: Doc) -> list[str]:
    """Per (temperature, width): depths, tau, perplexities, slope and verdict."""
    rows = [[key, listed(g["layers"]), listed(g["y"], f), listed(g["draft_ppl"], f),
             ci(g["loglinear"]["params"]["a"], g["loglinear"]["ci"]["a"]), listed(g["loglinear"]["boot_ci"]["a"], f),
             SIGN_WORDS[g["slope_sign"]], g["verdict"]] for key, g in t["groups"].items()]
    return table(["group", "layers", "tau", "draft perplexity", f"slope a [{doc.pct} t]", "a boot", "slope",
                  "verdict"], rows)


def _perplexity_by_width(t: dict) -> dict[str, tuple[float, float]]:
    """Width label -> perplexity of the shallowest and of the deepest draft (the drafts are the same at every T)."""
    first = next(iter(t["groups"])).split()[0]
    return {f"width {g['width']}": (g["draft_ppl"][0], g["draft_ppl"][-1])
            for k, g in t["groups"].items() if k.split()[0] == first}


def render(d: dict, doc: Doc) -> list[str]:
    """The suite's run, then the rerun at full budget: slopes, perplexity by depth, verdicts."""
    t, full = d["suite"], d["full"]
    widths = _perplexity_by_width(t)
    shallow_deep = "; ".join(f"{w}: {f(a)} at the fewest layers, {f(b)} at the most" for w, (a, b) in widths.items())
    signs = {k: g["slope_sign"] for k, g in t["groups"].items()}
    return [f"## Scylla Thm 1.2: acceptance versus draft depth ({t['verdict']})", "",
            f"Drafts of {listed(t['setup']['drafts'])}, every one trained on {listed(t['draft_pretrain_tokens'], tok)} "
            f"tokens, against target {t['setup']['target']}; chain gamma {listed(t['setup']['num_spec_tokens'])}. "
            "Law: `tau = a*log10(layers) + b` per draft width and temperature (tau = mean acceptance length).", "",
            *_md_table(t, doc), verdicts.slope_signs(signs),
            f"{verdicts.depth_perplexity(widths)} ({shallow_deep}).", "",
            f"**Verdict: {t['verdict']} at this scale.** "
            + verdicts.depth_conclusion(t["verdict"], all(b > a for a, b in widths.values())), "",
            *[doc.fig(f"{RUNS['suite'][1]}_loglinear_T{f(v)}.png") for v in t["setup"]["temperatures"]], "",
            f"### Rerun: drafts at their full budget ({full['verdict']})", "",
            f"`sdlaws experiment run draft-depth` alone (`measurements/draft-depth-30M/`): the same drafts trained on "
            f"{listed(full['draft_pretrain_tokens'], tok)} tokens (above: {listed(t['draft_pretrain_tokens'], tok)}), "
            f"target {full['setup']['target']} trained on {listed(full['target_pretrain_tokens'], tok)} (above: "
            f"{listed(t['target_pretrain_tokens'], tok)})"
            + ("" if full["target_pretrain_tokens"] == t["target_pretrain_tokens"] else
               ", so acceptance levels are not comparable with the table above, only the slopes") + ".", "",
            *_md_table(full, doc),
            verdicts.rerun_slopes(signs, {k: g["slope_sign"] for k, g in full["groups"].items()}), "",
            f"**Verdict: {full['verdict']} at this scale.**", "",
            *[doc.fig(f"{RUNS['full'][1]}_loglinear_T{f(v)}.png") for v in full["setup"]["temperatures"]], ""]


SECTION = Section("thm12", FILES, analyse, render, summary)
EXPERIMENT = Experiment(NAME, "acceptance vs draft layers (1..8) at two widths (Scylla Thm 1.2)", models, measure,
                        sections=(SECTION,))
