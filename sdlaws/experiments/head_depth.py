"""``head-depth``: Scylla Thm 1.2 (``acc = a log10(layers) + b``) on the architecture it is about: feature-level
(EAGLE-style) draft heads of 1, 2, 3, 4, 6 and 8 layers, two initialisation seeds each, on the pair target.

The target is the throughput experiments' pair target (same shape and budget, so a suite trains it once). After
the run's models are trained, the measurement step trains the 12 heads with the head trainer
(:func:`sdlaws.train.heads.train_heads`: one frozen-target pass per step shared by every head, so all heads see
the same tokens and the seeds differ in initialisation only), resumable under the run's models directory, cut to
leave :data:`MEASURE_S` before the deadline. Then: each head's top-1 agreement with the target on windows
of the corpus held-out set (``run.json``), and chains of length gamma at T=0 and T=1 of every head and of
the pair's independent LM drafts against the target on the same prompts (acceptance counts per sequence and
draft time per step, as the engine records them).

**Budget (scale h100).** Per training token, from the trainer's FLOP arithmetic
(:func:`~sdlaws.train.heads.head_train_flops_per_token`, :func:`~sdlaws.train.heads.target_flops_per_token`,
target L12-H768, V = 4096, n_ctx = 512): a head costs 64, 109, 154, 199, 289 and 378 MFLOP at 1, 2, 3, 4, 6, 8
layers (1194 MFLOP for the six depths), twice that for two seeds, plus 186 MFLOP for the shared target pass:
2.57 GFLOP per token. At the 30% MFU the scale assumes at width 768 of a 989 TFLOP/s bf16 peak (297 TFLOP/s),
20 M tokens take 20e6 x 2.57e9 / 2.97e14 = 173 s, plus ~5 s of logit traffic (12 heads x 18 bytes x 4096
logits per token at 3.35 TB/s): about 3 minutes, 3.6 at 25% MFU. Hence ``head_tokens = 20M``.

Its section of the results document fits ``loglinear`` and ``saturating`` of ``mean_acceptance_length`` and
``alpha_mle`` in head layers and in head parameters, per temperature; intervals of the log-linear slope are the
t interval and a cluster bootstrap with the head (one (depth, seed) model) as the resampled unit, so the spread
between seeds at each depth is part of the interval.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from sdlaws.errors import SdlawsError
from sdlaws.experiments import verdicts
from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.registry import Experiment, Section
from sdlaws.experiments.reporting import (N_BOOT, SEED, Analysis, Doc, Tables, ci, f, fit_summary, interval_sign,
                                          listed, num, table, tkey, tok)
from sdlaws.experiments.scale import Scale

NAME = "head-depth"
FILES = {"heads": ("heads/head-depth.csv", "spec"), "heads_run": ("heads/head-depth-run.json", "json")}
#: Measurement seconds left after head training: held-out top-1 of every head and ~30 chain configurations.
MEASURE_S = 90.0
#: Decades of the regressor below which a slope is not testable (1-8 layers span 0.9).
MIN_DECADES = 0.5
RESPONSES = {"mean_acceptance_length": "tau", "alpha_mle": "alpha"}
REGRESSORS = {"draft_layers": "layers", "draft_params": "params"}
SIGN_WORDS = {1: "positive", -1: "negative", 0: "not significant"}
HEAD_NAME = re.compile(r"head-L(\d+)-T[^/]+?-s(\d+)")
COMMAND = "sdlaws experiment run head-depth --budget-s 580 --work /tmp/sdw --out measurements/heads/head-depth.csv"


def models(scale: Scale):
    """The pair's target, then its independent LM drafts (the heads are trained in :func:`measure`)."""
    return [scale.spec(scale.pair_target, scale.pair_target_tokens),
            *(scale.spec(shape, scale.pair_draft_tokens) for shape in scale.pair_drafts)]


def measure(ctx: Context) -> None:
    """Train the heads, perplexities of the LMs, held-out top-1 of the heads, then chains of heads and drafts."""
    s = ctx.scale
    target_spec, *draft_specs = models(s)
    target, drafts = ctx.final(target_spec), [ctx.final(spec) for spec in draft_specs]
    heads = ctx.train_heads(target, layers=s.head_layers, seeds=s.head_seeds, tokens=s.head_tokens, keep_s=MEASURE_S)
    ctx.measure_ppl([target, *drafts])
    if not ctx.out_of_time("held-out top-1 of the heads"):
        ctx.results.setdefault(NAME, {})["heads"] = _heldout(ctx, target, heads)
    # LM drafts first: the equal-cost comparison needs them; then the heads spread over depth
    ctx.sweep(NAME, target, [*drafts, *spread(sorted(heads, key=lambda h: h.metadata["layers"]))],
              num_spec_tokens=(s.num_spec_tokens,), batch_sizes=(s.num_prompts,),
              temperatures=s.acceptance_temperatures)


def _heldout(ctx: Context, target, heads) -> dict[str, dict[str, Any]]:
    """Per head: its training record (tokens, losses, MFU) and its held-out top-1 agreement with the target."""
    from sdlaws.train.heads import heldout_top1, load_target

    model = load_target(str(target.path), ctx.corpus, ctx.device)
    top1 = heldout_top1([h.path for h in heads], model, ctx.corpus.heldout_tokens(), seq_len=ctx.scale.seq_len,
                        max_tokens=ctx.scale.ppl_eval_tokens)
    keep = ("layers", "seed", "params", "pretrain_tokens", "stopped_early", "train_top1", "train_loss",
            "tokens_per_s", "mfu")
    return {h.metadata["name"]: {**{k: h.metadata.get(k) for k in keep}, **t} for h, t in zip(heads, top1)}


# ---------------------------------------------------------------------------------------------------- analysis

def analyse(tables: Tables) -> Analysis:
    """Shape of acceptance in depth and parameters per temperature, top-1 versus depth, heads versus LM drafts
    at equal draft cost; ``{"measured": False}`` when the experiment has not been run."""
    if "heads" not in tables:
        return Analysis({"measured": False})
    rows = draft_rows(tables["heads"])
    heads = rows[rows["draft_kind"].eq("head")]
    out = depth_law(heads)
    measured_top1 = tables["heads_run"]["results"].get(NAME, {}).get("heads", {})   # absent if the deadline hit
    out.data.update(measured=True, top1=top1_law(pd.DataFrame(measured_top1.values())),
                    seeds=seed_spread(heads), cost=cost_frontier(rows))
    out.data["quality"] = {t: verdicts.depth_or_quality(g["sign"], out.data["top1"]["sign"])
                           for t, g in out.data["groups"].items() if g["y"] == "tau" and g["x"] == "layers"}
    return out


def draft_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Speculative rows with a label per draft (``L2-s0`` for a head, the shape for an LM draft), its seed and
    its draft seconds per decode step."""
    from sdlaws.plan.cost import short_name

    rows = df[df["method"].ne("ar")].copy()
    names = rows["draft_name"].astype(str)
    found = names.map(lambda n: HEAD_NAME.search(n))
    rows["draft_label"] = [f"L{m[1]}-s{m[2]}" if m else short_name(n) for n, m in zip(names, found)]
    rows["seed"] = [int(m[2]) if m else -1 for m in found]
    rows["draft_step_s"] = rows["draft_time_s"] / rows["num_steps"]
    return rows


def depth_law(heads: pd.DataFrame) -> Analysis:
    """Per temperature, response (tau, alpha) and regressor (layers, params): log-linear and saturating fits and
    the shape verdict; the fits of tau in layers are plotted."""
    out = Analysis({"groups": {}, "heads": sorted(heads["draft_label"].unique()),
                    "num_spec_tokens": sorted(int(v) for v in heads["num_spec_tokens"].unique()),
                    "pretrain_tokens": sorted(float(v) for v in heads["draft_pretrain_tokens"].unique())})
    for t, sub in heads.groupby("temperature"):
        for y, x in ((y, x) for y in RESPONSES for x in REGRESSORS):
            key = f"{tkey(t)} {RESPONSES[y]} vs {REGRESSORS[x]}"
            out.data["groups"][key], fits = _group(sub, x, y)
            if x == "draft_layers" and y == "mean_acceptance_length" and fits:
                from sdlaws.fit import used_rows

                stem = f"heads_tau_layers_{tkey(t).replace('=', '')}"
                out.fits[stem] = (fits["loglinear"], None)
                out.plots[stem] = (fits, {law: used_rows(sub, fit) for law, fit in fits.items()})
    shapes = {k: g["shape"] for k, g in out.data["groups"].items() if g["y"] == "tau" and g["x"] == "layers"}
    out.data["sentence"] = verdicts.head_depth_sentence(shapes)
    out.data["verdict"] = verdicts.combine(verdicts.HEAD_SHAPE_LABELS[s] for s in shapes.values())
    return out


def _group(rows: pd.DataFrame, x: str, y: str) -> tuple[dict[str, Any], dict]:
    """One (temperature, y, x): the log-linear fit with its head-cluster bootstrap, the saturating fit's AIC gap,
    and the shape; also the fits themselves (empty when the log-linear law cannot be fitted)."""
    from sdlaws.fit import fit_law

    values = rows[x].to_numpy(dtype=float)
    out = {"y": RESPONSES[y], "x": REGRESSORS[x], "decades": float(np.log10(values.max() / values.min())),
           "loglinear": None, "saturating_aic_gap": None, "sign": 0}
    common = dict(x=x, y=y, unit="draft_label")
    ll = _fit(lambda: fit_law(rows, "loglinear", **common))
    if ll is None:
        out["shape"] = "not testable"
        return out, {}
    out["loglinear"] = fit_summary(ll, _fit(lambda: fit_law(rows, "loglinear", n_boot=N_BOOT, seed=SEED, **common)))
    out["sign"] = interval_sign(out["loglinear"], "a")
    sat = _fit(lambda: fit_law(rows, "saturating", **common))
    if sat is not None:
        out["saturating_aic_gap"] = num(sat.gof["aic"] - ll.gof["aic"])
    out["shape"] = verdicts.head_depth_shape(out["sign"], out["saturating_aic_gap"], out["decades"],
                                             min_decades=MIN_DECADES)
    return out, {"loglinear": ll, **({} if sat is None else {"saturating": sat})}


def _fit(make):
    """The fit ``make()`` returns, or None when the rows cannot determine it (too few depths, no convergence)."""
    try:
        return make()
    except SdlawsError:
        return None


def top1_law(heads: pd.DataFrame) -> dict[str, Any]:
    """Held-out top-1 agreement by depth (mean over seeds) and the sign of its log-linear slope in depth (t and
    head-bootstrap intervals); sign 0 when it cannot be fitted."""
    from sdlaws.fit import fit_law

    if heads.empty:
        return {"layers": [], "top1": [], "sign": 0, "loglinear": None, "positions": 0}
    by_depth = heads.groupby("layers")["heldout_top1"].mean()
    out = {"layers": [int(v) for v in by_depth.index], "top1": [float(v) for v in by_depth], "sign": 0,
           "loglinear": None, "positions": int(heads["heldout_positions"].min())}
    common = dict(x="layers", y="heldout_top1", weight=None, unit="name")
    ll = _fit(lambda: fit_law(heads.assign(name=heads.index.astype(str)), "loglinear", **common))
    if ll is not None:
        boot = _fit(lambda: fit_law(heads.assign(name=heads.index.astype(str)), "loglinear", n_boot=N_BOOT,
                                    seed=SEED, **common))
        out["loglinear"] = fit_summary(ll, boot)
        out["sign"] = interval_sign(out["loglinear"], "a")
    return out


def seed_spread(heads: pd.DataFrame) -> dict[str, dict[str, list]]:
    """Per temperature: depths, and per depth the range (max - min) of tau over seeds (the seed noise the
    bootstrap carries)."""
    out = {}
    for t, sub in heads.groupby("temperature"):
        spread_ = sub.groupby("draft_layers")["mean_acceptance_length"].agg(lambda v: float(v.max() - v.min()))
        out[tkey(t)] = {"layers": [int(v) for v in spread_.index], "tau_range": [float(v) for v in spread_],
                        "seeds": int(sub["seed"].nunique())}
    return out


def cost_frontier(rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per temperature: every draft's seconds per step and tokens/s, and at each cost level where both kinds
    have a draft, the best head and the best LM draft costing at most that much per step."""
    out = {}
    for t, sub in rows.groupby("temperature"):
        sub = sub.sort_values("draft_step_s")
        is_head = sub["draft_kind"].eq("head").to_numpy()
        cost, tps = sub["draft_step_s"].to_numpy(dtype=float), sub["tokens_per_s"].to_numpy(dtype=float)
        levels = [(c, tps[is_head & (cost <= c)], tps[~is_head & (cost <= c)]) for c in cost]
        frontier = [(float(c), float(h.max()), float(d.max())) for c, h, d in levels if len(h) and len(d)]
        out[tkey(t)] = {"drafts": list(sub["draft_label"]), "kinds": ["head" if h else "LM" for h in is_head],
                        "draft_step_s": [float(v) for v in cost], "tokens_per_s": [float(v) for v in tps],
                        "frontier": frontier, "sentence": verdicts.heads_vs_drafts(frontier)}
    return out


# ---------------------------------------------------------------------------------------------------- markdown

def summary(d: dict) -> list[list[str]]:
    """One summary row: the verdict and the slope of tau in layers per temperature."""
    title = "Scylla Thm 1.2 on draft heads: acceptance vs log10 head layers"
    if not d["measured"]:
        return [[title, "not run", f"`{COMMAND}`"]]
    slopes = ", ".join(f"{k}: a = {f(g['loglinear']['params']['a'])} ({g['shape']})"
                       for k, g in d["groups"].items() if g["y"] == "tau" and g["x"] == "layers" and g["loglinear"])
    return [[title, d["verdict"], slopes]]


def _md_groups(d: dict, doc: Doc) -> list[str]:
    """Per (temperature, response, regressor): slope with t and bootstrap intervals, AIC gap, shape."""
    rows = [[key, _slope(g, doc), f(g["saturating_aic_gap"]), SIGN_WORDS[g["sign"]], g["shape"]]
            for key, g in d["groups"].items()]
    return table(["group", f"slope a [{doc.pct} t] (head boot)", "AIC(sat) - AIC(loglin)", "slope", "shape"], rows)


def _slope(g: dict, doc: Doc) -> str:
    """``a [t interval] (bootstrap interval)`` of a group, or n/a without a fit."""
    fit = g["loglinear"]
    if fit is None:
        return f(None)
    boot = f" ({listed(fit['boot_ci']['a'], f)})" if "boot_ci" in fit else ""
    return ci(fit["params"]["a"], fit["ci"]["a"]) + boot


def _md_cost(d: dict) -> list[str]:
    """Per temperature: every draft's cost per step and tokens/s, then the equal-cost sentence."""
    lines = []
    for t, c in d["cost"].items():
        rows = [[name, kind, f(s * 1e3), f(tps)] for name, kind, s, tps in
                zip(c["drafts"], c["kinds"], c["draft_step_s"], c["tokens_per_s"])]
        lines += [f"{t}:", "", *table(["draft", "kind", "draft ms per step", "tokens/s"], rows), c["sentence"], ""]
    return lines


def render(d: dict, doc: Doc) -> list[str]:
    """Not run yet: the command; else the fits, seed spread, top-1 by depth, heads versus LM drafts, figures."""
    title = "## Scylla Thm 1.2 on feature-level draft heads"
    if not d["measured"]:
        return [f"{title} (not run yet)", "",
                "The experiment `head-depth` has not been run: its measurements are not in this tree. Run it on "
                f"one GPU with `{COMMAND}` (docs/experiments.md), then regenerate this document.", ""]
    top1 = d["top1"]
    seeds = [f"{t}: {listed(s['tau_range'], f)} (layers {listed(s['layers'])}, {s['seeds']} seed(s))"
             for t, s in d["seeds"].items()]
    return [f"{title} ({d['verdict']})", "",
            f"Heads {listed(d['heads'])} (L<layers>-s<seed>), each trained on {listed(d['pretrain_tokens'], tok)} "
            f"tokens of the target's features, chain gamma {listed(d['num_spec_tokens'])}. Laws: `y = a*log10(x) + b` "
            "against `y = y_max - A*x^-p` for y = tau (mean acceptance length) and alpha, x = head layers and head "
            "parameters. Bootstrap intervals resample whole heads (each depth-seed model a unit), so they carry "
            "the spread between seeds.", "",
            *_md_groups(d, doc), f"Range of tau over seeds at each depth: {'; '.join(seeds)}.", "",
            f"**Verdict: {d['verdict']} at this scale.** {d['sentence']}", "",
            f"Held-out top-1 agreement with the target by depth ({listed(top1['layers'])} layers, mean over "
            f"seeds, {tok(top1['positions'])} test positions per head): {listed(top1['top1'], f)}; slope in "
            f"log10 layers {SIGN_WORDS[top1['sign']]}. "
            + " ".join(f"{t}: {s}" for t, s in d["quality"].items()), "",
            "### Heads against independent LM drafts at equal draft cost", "",
            *_md_cost(d),
            *[doc.fig(f"{stem}.png") for stem in (f"heads_tau_layers_{t.replace('=', '')}" for t in d["cost"])], ""]


SECTION = Section("thm12_heads", FILES, analyse, render, summary, optional=True)
EXPERIMENT = Experiment(NAME, "acceptance vs feature-level head layers (1..8, 2 seeds) and heads vs LM drafts "
                              "(Scylla Thm 1.2)", models, measure, sections=(SECTION,))
