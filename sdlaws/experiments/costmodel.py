"""The measured cost model and Scylla's Thm 1.3 at 8B scale: analysis and document section, from committed CSVs.

``sdlaws experiment cost-model`` (:func:`sdlaws.experiments.costmodel_doc.write`) reads

- ``h200/steps.csv``: forward-pass step tables of six random-weight shapes on one H200
  (``benchmarks/gpu_step_tables.sh``);
- the committed H100 step tables of random shapes (``bench/``, ``throughput/step.csv``);
- ``h200/thm13.csv``: decode throughput of an 8B target with a 1B draft under synthetic acceptance
  (``benchmarks/gpu_thm13.sh``, ``benchmarks/gpu_heldout.sh``), and the profiles it ran with (:data:`PROFILES`:
  512-token prompts with the H100 pair's, 2048-token prompts with the H200 pair's);

and :func:`analyse` computes every number of ``docs/cost-model.md``; :mod:`sdlaws.experiments.costmodel_doc`
renders it (every conclusion sentence from a rule in :mod:`sdlaws.experiments.verdicts`) and writes
``sdlaws/plan/roofline_error.json`` (the datasheet roofline's measured error, which ``sdlaws plan`` quotes when it
runs without step tables).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sdlaws import defects, rates
from sdlaws.experiments import verdicts
from sdlaws.hardware import load_hardware
from sdlaws.roofline import named_shape

#: H200 step tables: ``steps.csv`` (six random shapes) and any ``steps-*.csv`` beside it (e.g. an EAGLE-sized head's,
#: ``sdlaws measure hardware --model head:...``), all in the law's fit and its leave-one-out checks.
H200_STEPS = "h200/steps*.csv"
H100_STEPS = ("bench/fused-kernels/steps.csv", "bench/steps-llama-3.1-8b.csv", "bench/steps-llama-3.2-1b.csv",
              "throughput/step.csv")
#: The Thm 1.3 sweep: ``thm13.csv`` and ``thm13-fixed.csv`` (its rows timed with a known engine defect, measured
#: again after the fix; :func:`sdlaws.defects.set_aside` keeps the re-measured ones).
THM13 = "h200/thm13*.csv"
#: The same target with an EAGLE-sized head as its draft (``benchmarks/gpu_heldout.sh`` step 5), timed while heads
#: ran stock Hugging Face decoder layers, with that path's step table beside it (``hf-layers/``).
HEADS, HEAD_STEPS = "h200/hf-layers/heads.csv", "h200/hf-layers/steps-head.csv"
#: The H200 pair suite's training rows and step tables: the engine's per-step overheads outside the forward
#: passes are fitted there (``sdlaws validate``) and added to the plan's step times of the 8B sweep.
PAIRS, PAIR_STEPS = ("h200/pairs/topk-batch.csv", "h200/pairs/heldout-train.csv"), "h200/pairs/step.csv"
#: Its held-out file: not read for the overheads, only named in the `sdlaws validate` command that writes them.
PAIR_HELDOUT = "h200/pairs/heldout.csv"
#: The acceptance profiles the sweep ran with; each prompt length's rows name theirs (``acceptance_profile``).
PROFILES = ("h200/thm13-profile.json", "h200/heldout-profile.json")
TARGET, DRAFT = "random:llama-3.1-8b", "random:llama-3.2-1b"
#: The EAGLE-sized head on the 8B target, as its step table (``h200/steps-head.csv``) names it.
HEAD = "head:random:llama-3.1-8b?layers=1"
#: Prompt lengths ``benchmarks/gpu_thm13.sh`` sweeps (a missing one is reported as not yet measured).
CONTEXTS = (512, 2048)

#: Goals the cost model is held to (leave-one-point-out median / max, leave-one-shape-out median, H100 -> H200
#: median, plan within this % of the best measured configuration at this share of batch sizes).
GOALS = dict(loo_median=3.0, loo_max=10.0, loso_median=10.0, transfer_median=15.0, plan_within=5.0, plan_share=0.8)


@dataclass
class Sweep:
    """The Thm 1.3 sweep at one prompt length (context)."""

    prompt_len: int
    max_new: int                              # new tokens per sequence
    profile: str                              # the file of the acceptance profile the rows ran with
    thm13: pd.DataFrame                       # measured decode rate per (batch, configuration), over repeats
    optimum: pd.DataFrame                     # best top-k per (batch, repeat)
    topk_fits: dict = field(default_factory=dict)
    plan: pd.DataFrame = None                 # plan's choice vs the measured best per batch
    predicted: pd.DataFrame = None            # predicted vs measured decode rate per configuration
    censored: list = field(default_factory=list)


@dataclass
class Results:
    """What :func:`analyse` computed (tables and numbers for :func:`render`)."""

    roofline: pd.DataFrame                    # datasheet and calibrated roofline errors per shape
    law: object                               # StepTimeFit on the H200 tables
    checks: dict[str, pd.DataFrame]           # name -> per-row errors (loo, lobo, loso, transfer)
    sweeps: list[Sweep]                       # one per prompt length of the Thm 1.3 sweep
    failed: list = field(default_factory=list)  # (batch size, configuration, error) of sweep rows that did not run
    overheads: object = None                  # EngineOverheads fitted on the H200 pair suite
    set_aside: pd.DataFrame = None            # sweep rows timed with a known engine defect (sdlaws.defects)
    draft_cost: pd.DataFrame = None           # ms per draft forward: the EAGLE-sized head against the 1B draft
    forward_cost: pd.DataFrame = None         # ms per bare forward of one token per row, from the step tables


def _read(root: Path, *paths: str, table: str) -> pd.DataFrame:
    from sdlaws.io import read_measurements

    return read_measurements([root / p for p in paths], table=table, ok_only=True)


def roofline_errors(steps: pd.DataFrame, hw) -> pd.DataFrame:
    """Per shape: the datasheet roofline's error and the three-parameter calibrated roofline's error (in-sample:
    calibrated on every shape's rows)."""
    from sdlaws.calibration import calibrate
    from sdlaws.roofline import forward_time_s

    calibrated = calibrate(steps, hw).hardware
    rows = []
    for name, g in steps.groupby("model_name"):
        measured = g["median_time_s"].to_numpy()
        sheet, cal = (np.abs(100 * (np.asarray(forward_time_s(named_shape(name), g["batch_size"], g["tokens_per_row"],
                                                              g["kv_len"], h)) / measured - 1)) for h in (hw, calibrated))
        rows.append(dict(model_name=name, rows=len(g), datasheet_median=np.median(sheet), datasheet_max=np.max(sheet),
                         calibrated_median=np.median(cal), calibrated_max=np.max(cal)))
    return pd.DataFrame(rows)


def decode_table(spec: pd.DataFrame) -> pd.DataFrame:
    """Measured decode tokens/s per (batch size, configuration): median, min and max over repeats."""
    from sdlaws.rates import derive

    d = derive(spec)
    d["tree_budget"] = d["tree_budget"].fillna(0).astype(int)
    keys = ["batch_size", "method", "num_spec_tokens", "tree_topk", "tree_budget"]
    return (d.groupby(keys)["decode_tokens_per_s"].agg(["median", "min", "max", "size"])
            .rename(columns={"median": "measured", "min": "lower", "max": "upper", "size": "repeats"}).reset_index())


def best_topk(spec: pd.DataFrame) -> pd.DataFrame:
    """Per (batch size, repeat): the top-k (1 = chain) and rate of the fastest speculative configuration, and
    the AR rate of that repeat."""
    from sdlaws.rates import derive

    d = derive(spec)
    rows = []
    for (b, r), g in d.groupby(["batch_size", "repeat"]):
        spec_rows = g[g["method"] != "ar"]
        best = spec_rows.loc[spec_rows["decode_tokens_per_s"].idxmax()]
        ar = g.loc[g["method"] == "ar", "decode_tokens_per_s"]
        rows.append(dict(batch_size=int(b), repeat=int(r), tree_topk=int(best["tree_topk"]),
                         num_spec_tokens=int(best["num_spec_tokens"]), rate=best["decode_tokens_per_s"],
                         ar_rate=ar.median() if len(ar) else np.nan,
                         topk_max=int(spec_rows["tree_topk"].max())))
    return pd.DataFrame(rows)


def prompt_len(rows: pd.DataFrame) -> pd.Series:
    """Tokens per prompt of each row, rounded: the sweep's context (``prompt_tokens_per_seq``)."""
    return rates.prompt_tokens_per_seq(rows).round().astype(int).rename("prompt_len")


def draft_forward_ms(spec: pd.DataFrame) -> pd.Series:
    """Median milliseconds of the draft phase per drafted position of chain rows, per (prompt length, batch):
    one draft forward and its sampling, as the engine times it (``draft_s_per_position``)."""
    chains = rates.derive(spec[spec["method"].eq("chain")])
    return (1e3 * chains["draft_s_per_position"]).groupby([prompt_len(chains), chains["batch_size"]]).median()


def draft_cost(heads: pd.DataFrame, lm: pd.DataFrame) -> pd.DataFrame:
    """Per (prompt length, batch) where both ran: ms per draft forward of the head and of the LM draft, and
    their ratio."""
    both = pd.concat([draft_forward_ms(heads).rename("head_ms"), draft_forward_ms(lm).rename("draft_1b_ms")],
                     axis=1, join="inner")
    return both.assign(ratio=both["head_ms"] / both["draft_1b_ms"]).reset_index()


def forward_cost(steps: pd.DataFrame) -> pd.DataFrame:
    """Per (KV length, batch) where both step tables have it: ms of one graph-replayed forward of one token per
    row (a chain's draft step) of the head (:data:`HEAD`) and of the 1B-shape draft, and their ratio."""
    one = steps[steps["tokens_per_row"].eq(1)]
    ms = 1e3 * one.set_index(["model_name", "kv_len", "batch_size"])["median_time_s"]
    both = pd.concat([ms.get(HEAD, pd.Series(dtype=float)).rename("head_ms"),
                      ms.get(DRAFT, pd.Series(dtype=float)).rename("draft_1b_ms")], axis=1, join="inner")
    return both.assign(ratio=both["head_ms"] / both["draft_1b_ms"]).reset_index()


def sweep_profile(part: pd.DataFrame, root: Path) -> str:
    """The file of :data:`PROFILES` whose profile every speculative row of ``part`` ran with.

    Raises
    ------
    InputError
        The rows ran with several profiles, or with none of the committed ones.
    """
    from sdlaws.errors import InputError
    from sdlaws.measure.profile import normalize, parse

    used = {json.dumps(json.loads(v)) for v in part.loc[part["method"].ne("ar"), "acceptance_profile"]}
    rows = [list(r) for r in normalize(json.loads(next(iter(used))))] if len(used) == 1 else None
    for rel in PROFILES:
        known = [list(r) for r in parse(str(root / rel))]
        if rows is not None and [len(r) for r in rows] == [len(r) for r in known] and np.allclose(
                np.concatenate(rows), np.concatenate(known)):
            return rel
    raise InputError(f"{THM13}: rows of {prompt_len(part).iloc[0]}-token "
                     f"prompts ran with {len(used)} profile(s), not exactly one of {', '.join(PROFILES)}")


def plan_check(table: pd.DataFrame, root: Path, law, prompt_tokens: int, max_new: int, profile: str,
               overheads) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The planner's choice per batch size (step-time law of the H200 tables plus the engine's ``overheads``
    per step, the sweep's profile, searched over the measured configurations) against the measured best; and
    every configuration's predicted rate."""
    from sdlaws.measure.profile import parse
    from sdlaws.plan.serving import EngineConfig, engine_grid, predict_decode
    from sdlaws.plan.setup import ServingSetup

    setup = ServingSetup(named_shape(TARGET), load_hardware("h200"), draft=named_shape(DRAFT),
                         kv_len=int(prompt_tokens + max_new / 2), forward=law)
    # what `sdlaws plan serving` searches (its engine grid), among the measured configurations; the measured best
    # is taken over every measured configuration, so a better one outside the grid counts against the plan
    searched = set(engine_grid())
    configs = [c for c in (EngineConfig(m, int(d), int(k), int(b)) for m, d, k, b in table[
        ["method", "num_spec_tokens", "tree_topk", "tree_budget"]].drop_duplicates().itertuples(index=False))
        if c in searched]
    predicted = predict_decode(configs, sorted(table["batch_size"].unique()), forward_s=setup.forward_time_s,
                               target=setup.target, draft=setup.draft, profile=parse(str(root / profile)),
                               max_new_tokens=max_new, overhead_s=overheads.step_s)
    keys = ["batch_size", "method", "num_spec_tokens", "tree_topk", "tree_budget"]
    joined = table.merge(predicted.drop(columns="label"), on=keys, how="left")
    joined["label"] = [EngineConfig(m, int(d), int(k), int(b)).label for m, d, k, b in
                       joined[["method", "num_spec_tokens", "tree_topk", "tree_budget"]].itertuples(index=False)]
    joined["pct_error"] = 100 * (joined["decode_tokens_per_s"] / joined["measured"] - 1)
    rows = []
    for b, g in joined.groupby("batch_size"):
        best, chosen = g.loc[g["measured"].idxmax()], g.loc[g["decode_tokens_per_s"].idxmax()]
        rows.append(dict(batch_size=int(b), measured_best=best["label"], measured_best_rate=best["measured"],
                         best_lower=best["lower"], planned=chosen["label"], planned_rate=chosen["measured"],
                         shortfall_pct=100 * (1 - chosen["measured"] / best["measured"]),
                         candidates=int(g["decode_tokens_per_s"].notna().sum()), measured=len(g)))
    return pd.DataFrame(rows), joined.dropna(subset=["decode_tokens_per_s"])


def analyse(root: str | Path = "measurements") -> Results:
    """Every table of the document, from the committed CSVs under ``root``."""
    from sdlaws.experiments.thm13 import fit_topk_law
    from sdlaws.plan import costcheck
    from sdlaws.plan.cost import fit_steptime

    root = Path(root)
    h200, h100 = load_hardware("h200"), load_hardware("h100")
    steps = _read(root, H200_STEPS, table="step")
    old = _read(root, *H100_STEPS, table="step")
    old = old[old["model_name"].astype(str).str.startswith("random:")]
    law = fit_steptime(steps, h200)
    checks = {"loo": costcheck.leave_one_point_out(steps, h200), "lobo": costcheck.leave_one_batch_out(steps, h200),
              "loso": costcheck.leave_one_shape_out(steps, h200),
              "transfer": costcheck.transfer_error(old, h100, steps, h200)}
    from sdlaws.io import failed_not_rerun, read_measurements
    from sdlaws.plan.validate import fit_planner
    from sdlaws.schema import config_label

    pair_law = fit_steptime(pd.concat([steps, _read(root, PAIR_STEPS, table="step")], ignore_index=True), h200)
    overheads = fit_planner(_read(root, *PAIRS, table="spec"), pair_law).overheads

    every = read_measurements(root / THM13, table="spec")
    spec, aside = defects.set_aside(every[every["status"].eq("ok")], {DRAFT: named_shape(DRAFT)},
                                    float(law.params["hbm_bytes_per_s"]))
    aside = aside.assign(prompt_len=prompt_len(aside))
    context = prompt_len(spec)
    lost = failed_not_rerun(every).drop_duplicates(["batch_size", "method", "num_spec_tokens", "tree_topk"])
    failed = [(int(r.batch_size), config_label(r.method, r.num_spec_tokens, r.tree_topk), str(r.error).split(":")[0])
              for r in lost.itertuples()]
    sweeps = []
    for length in sorted(context.unique()):
        part = spec[context == length]
        # a batch size with rows set aside and not measured again has a partial grid: its measured best would be a
        # best of what is left
        lacking = aside[(aside["prompt_len"] == length) & ~aside["remeasured"]]
        part = part[~part["batch_size"].isin(lacking["batch_size"])]
        if part.empty:
            continue
        table, optimum, profile = decode_table(part), best_topk(part), sweep_profile(part, root)
        max_new = int(part["max_new_tokens"].iloc[0])
        plan, predicted = plan_check(table, root, law, int(length), max_new, profile, overheads)
        sweeps.append(Sweep(int(length), max_new, profile, table, optimum, fit_topk_law(optimum), plan, predicted,
                            verdicts.censored_batches(optimum)))
    return Results(roofline=roofline_errors(steps, h200), law=law, checks=checks, sweeps=sweeps, failed=failed,
                   overheads=overheads, set_aside=aside, draft_cost=draft_cost(_read(root, HEADS, table="spec"), spec),
                   forward_cost=forward_cost(steps))

