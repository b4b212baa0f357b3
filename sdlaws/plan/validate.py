"""Out-of-sample check of the planner: fit what it needs on training measurements, predict held-out rows.

:func:`validate` fits (:func:`fit_planner`)

- an acceptance profile per (draft, temperature) from the training ``spec`` rows (:func:`acceptance_models`):
  per-depth conditional rates of rank 0 from chain rows (or tree rows without chains), split over ranks by the
  share of accepted nodes of each rank in tree rows; depths deeper than any training row repeat the deepest;
- the spread of acceptance across prompts: from per-sequence counts when the rows have them
  (:func:`spread_from_sequences`), else the Beta concentration that reproduces the training rows' steps per
  batch (:func:`fit_spread`);
- the engine's overheads outside the forward passes (:func:`fit_overheads`);
- the step-time law on ``step`` tables (:mod:`sdlaws.plan.cost`);

then predicts (:func:`predict`) every held-out row with the engine's own step structure
(:mod:`sdlaws.plan.serving`), its tree policy (:func:`~sdlaws.plan.acceptance.engine_tree`), static batches
(expected slowest row), the prefill of target and draft, and compares tokens/s, speedup, TPOT and decode steps with the measurement. A held-out row whose
(draft, temperature) has no training acceptance is reported as not predicted, with the reason, never filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sdlaws import rates
from sdlaws.plan.acceptance import batch_steps, prompt_profiles
from sdlaws.plan.cost import StepTimeFit, short_name, step_shape
from sdlaws.plan.serving import EngineConfig, length_pmf, step_time_s

QUANTITIES = ("tokens_per_s", "speedup", "tpot_s", "steps_per_batch")

#: Concentrations of the per-prompt acceptance Beta tried when fitting the spread (None: identical prompts).
SPREADS = (None, 256.0, 64.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0)


def _rank_shares(rows: pd.DataFrame) -> np.ndarray | None:
    """Share of accepted tree nodes per sibling rank, pooled over tree rows (None without tree rows)."""
    trees = rows[rows["method"].eq("tree")]
    if trees.empty:
        return None
    counts = rates.summed_lists(trees["num_accepted_per_rank"])
    total = float(np.sum(counts))
    return np.asarray(counts) / total if total > 0 else None


def _depth_rates(rows: pd.DataFrame) -> list[float]:
    """Conditional acceptance per depth: from chain rows when present (rank 0 only), else from tree rows (all
    ranks, divided by the rank-0 share later)."""
    chains = rows[rows["method"].eq("chain")]
    source = chains if not chains.empty else rows[rows["method"].eq("tree")]
    depth = int(source["num_spec_tokens"].max())
    deepest = source[source["num_spec_tokens"].eq(depth)]
    return [row[0] for row in rates.acceptance_profile(deepest, depth=depth, topk=1)]


def acceptance_models(train: pd.DataFrame) -> dict[tuple[str, float], tuple[tuple[float, ...], ...]]:
    """``(draft_name, temperature) -> profile`` from training ``spec`` rows with real acceptance."""
    spec = train[train["method"].ne("ar") & train["status"].eq("ok")]
    if "acceptance_source" in spec:
        spec = spec[spec["acceptance_source"].fillna("target").ne("synthetic")]
    models = {}
    for (draft, temperature), rows in spec.groupby(["draft_name", "temperature"]):
        depth_rates = _depth_rates(rows)
        shares = _rank_shares(rows)
        if shares is None:
            models[(str(draft), float(temperature))] = tuple((a,) for a in depth_rates)
            continue
        chains = rows["method"].eq("chain").any()
        rank0 = np.asarray(depth_rates) if chains else np.asarray(depth_rates) * shares[0]
        models[(str(draft), float(temperature))] = tuple(tuple(a * shares / shares[0]) for a in rank0)
    return models


def _profile_for(model, depth: int) -> tuple[tuple[float, ...], ...]:
    """The profile extended to ``depth`` rows by repeating its deepest row."""
    rows = list(model)
    return tuple(rows + [rows[-1]] * max(0, depth - len(rows)))


@dataclass(frozen=True)
class EngineOverheads:
    """Seconds the engine spends outside the forward passes, fitted on training rows by least squares.

    Per decode step: ``ar_step_s`` (AR: sampling, commit, one phase synchronisation) or ``spec_step_s`` plus
    ``tree_level_s`` per tree level beyond the first (top-k, tree growth and selection, cache moves). Per batch:
    prefill = ``prefill_fixed_s`` + ``prefill_scale`` x the law's prefill forwards (an eager pass, masks built
    on the host).
    """

    ar_step_s: float
    spec_step_s: float
    tree_level_s: float
    prefill_fixed_s: float
    prefill_scale: float

    def step_s(self, cfg: EngineConfig) -> float:
        """Overhead of one step of ``cfg``."""
        if cfg.method == "ar":
            return self.ar_step_s
        return self.spec_step_s + (self.tree_level_s * (cfg.depth - 1) if cfg.method == "tree" else 0.0)

    def prefill_s(self, forward_s: float) -> float:
        """Prefill seconds of one batch whose forwards the law puts at ``forward_s``."""
        return self.prefill_fixed_s + self.prefill_scale * forward_s


def _steps_meas(rows: pd.DataFrame) -> pd.Series:
    """Measured seconds of one decode step (forward passes + everything else the step does)."""
    decode = np.where(rows["method"].eq("ar"), rows["total_time_s"] - rows["prefill_time_s"],
                      rows["draft_time_s"] + rows["verify_time_s"])
    return pd.Series(decode / rows["num_steps"], index=rows.index)


def fit_overheads(parts: pd.DataFrame) -> EngineOverheads:
    """Least-squares overheads from per-row ``step_meas_s``, ``step_forward_s``, ``prefill_meas_s``,
    ``prefill_forward_s``, ``method``, ``num_spec_tokens`` (training rows)."""
    X = np.column_stack([parts["method"].eq("ar"), parts["method"].ne("ar"),
                         parts["method"].eq("tree") * (parts["num_spec_tokens"] - 1)]).astype(float)
    step = np.linalg.lstsq(X, parts["step_meas_s"] - parts["step_forward_s"], rcond=None)[0]
    P = np.column_stack([np.ones(len(parts)), parts["prefill_forward_s"]])
    prefill = np.linalg.lstsq(P, parts["prefill_meas_s"], rcond=None)[0]
    return EngineOverheads(*map(float, step), *map(float, prefill))


def fit_spread(rows: pd.DataFrame, profile, *, draws: int = 100) -> float | None:
    """Concentration of the per-prompt acceptance Beta (:func:`~sdlaws.plan.acceptance.prompt_profiles`) that
    best reproduces the training rows' measured steps per batch (least squares on log steps over
    :data:`SPREADS`)."""
    def loss(spread):
        err = 0.0
        for r in rows.itertuples():
            cfg = engine_config(r)
            pmfs = [length_pmf(cfg, _profile_for(p, cfg.depth)) for p in prompt_profiles(profile, spread)]
            pred = batch_steps(np.array(pmfs), int(r.max_new_tokens), int(r.batch_size), draws=draws)
            err += np.log(pred / (r.num_steps / r.num_batches)) ** 2
        return err
    return min(SPREADS, key=loss)


def spread_from_sequences(rows: pd.DataFrame) -> float | None:
    """Beta concentration of per-prompt acceptance from per-sequence counts (``num_drafts_per_seq``,
    ``num_accepted_per_seq``), by moments: the variance of the per-sequence acceptance rates less their binomial
    sampling variance. None when the rows have no per-sequence counts or show no excess spread."""
    if "num_accepted_per_seq" not in rows:
        return None
    drafts, accepted = [], []
    for r in rows.itertuples():
        d, a = rates.count_list(r.num_drafts_per_seq), rates.count_list(r.num_accepted_per_seq)
        width = max(r.num_spec_tokens, 1)
        drafts += [x * width for x in d]
        accepted += list(a)
    drafts, accepted = np.asarray(drafts, float), np.asarray(accepted, float)
    keep = drafts > 0
    if keep.sum() < 2:
        return None
    rate = accepted[keep] / drafts[keep]
    mu = float(rate.mean())
    excess = rate.var(ddof=1) - float(np.mean(mu * (1 - mu) / drafts[keep]))
    return None if excess <= 0 else max(mu * (1 - mu) / excess - 1.0, 1e-3)


def engine_config(row) -> EngineConfig:
    """The engine configuration of a ``spec`` row (a row of a DataFrame or of ``itertuples``)."""
    if row.method == "ar":
        return EngineConfig("ar")
    depth = int(row.num_spec_tokens)
    budget = int(row.tree_budget) if row.method == "tree" and row.tree_budget == row.tree_budget else depth
    return EngineConfig(row.method, depth, int(row.tree_topk), budget)


@dataclass(frozen=True)
class Validation:
    """Per held-out row: predicted and measured quantities (``*_pred``, ``*_meas``, ``*_pct``) or the reason it
    was not predicted; plus the inputs used."""

    rows: pd.DataFrame
    inputs: dict[str, Any]

    def predicted(self) -> pd.DataFrame:
        """Rows that were predicted."""
        return self.rows[self.rows["reason"].eq("")]

    def summary_table(self, rows: str = "speculative", *, boot: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Per quantity: rows, median and mean |% error| with 95% bootstrap intervals (rows resampled), over the
        ``"speculative"`` rows (chains and trees), the ``"ar"`` rows or ``"all"``. An AR row's speedup is 1 by
        definition, so speedups are summarised over speculative rows only."""
        rng = np.random.default_rng(seed)
        pred = self.predicted()
        pick = {"speculative": pred["method"].ne("ar"), "ar": pred["method"].eq("ar"),
                "all": pd.Series(True, index=pred.index)}[rows]
        out = []
        for q in QUANTITIES:
            if q == "speedup" and rows != "speculative":
                continue
            err = pred.loc[pick, f"{q}_pct"].abs().dropna().to_numpy()
            if not len(err):
                continue
            idx = rng.integers(0, len(err), size=(boot, len(err)))
            med, mean = np.median(err[idx], axis=1), err[idx].mean(axis=1)
            out.append(dict(quantity=q, rows=len(err), median_abs_pct=float(np.median(err)),
                            median_lower=float(np.percentile(med, 2.5)), median_upper=float(np.percentile(med, 97.5)),
                            mean_abs_pct=float(err.mean()), mean_lower=float(np.percentile(mean, 2.5)),
                            mean_upper=float(np.percentile(mean, 97.5))))
        return pd.DataFrame(out)

    def summary(self) -> str:
        """Counts and the error table."""
        skipped = self.rows[self.rows["reason"].ne("")]
        lines = [f"{len(self.predicted())} held-out rows predicted, {len(skipped)} not predicted"]
        lines += [f"  not predicted: {r.label}: {r.reason}" for r in skipped.itertuples()]
        columns = ["label", "draft_name", *(f"{q}_pct" for q in QUANTITIES)]
        table = self.predicted()[columns].assign(draft_name=lambda d: d["draft_name"].fillna("").map(short_name))
        lines += ["per row (% error, predicted vs measured):", table.to_string(index=False, float_format="{:+.1f}".format)]
        for kind in ("speculative", "ar"):
            lines += [f"{kind} rows (|% error|, 95% bootstrap intervals):",
                      self.summary_table(kind).to_string(index=False, float_format=lambda v: f"{v:.1f}")]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per-row table, summary table, inputs."""
        return dict(rows=self.rows.to_dict(orient="records"), inputs=self.inputs,
                    summary={k: self.summary_table(k).to_dict(orient="records") for k in ("speculative", "ar")})


def _row_label(row) -> str:
    """``chain g=2 b=8 T=0`` (configuration, batch size, temperature) for messages and figures."""
    shape = {"ar": "ar", "chain": f"chain g={row.num_spec_tokens}",
             "tree": f"tree d={row.num_spec_tokens} k={row.tree_topk}"}[row.method]
    return f"{shape} b={row.batch_size} T={row.temperature:g}"


def _forward_parts(row, law: StepTimeFit, shapes: dict) -> dict:
    """The law's seconds of one decode step's forward passes and of one batch's prefill forwards."""
    batch = int(row.batch_size)
    prompt = float(row.num_prompt_tokens) / float(row.num_prompts)
    kv = prompt + int(row.max_new_tokens) / 2.0
    target = shapes[row.target_name]
    draft = shapes.get(row.draft_name) if isinstance(row.draft_name, str) and row.draft_name else None

    def forward_s(shape, b, n):
        return law.time_s(shape, np.asarray(b, float).ravel(), np.asarray(n, float).ravel(), kv)

    step_s = float(step_time_s(engine_config(row), np.array([batch]), forward_s, target, draft)[0])
    prefill = sum(float(law.time_s(m, [batch], [prompt], prompt / 2)[0]) for m in (target, draft) if m is not None)
    return {"step_forward_s": step_s, "prefill_forward_s": prefill}


def _predict_row(row, law: StepTimeFit, models: dict, spreads: dict, shapes: dict,
                 overheads: EngineOverheads) -> dict:
    """Predicted steps per batch, step and prefill seconds, tokens/s and TPOT of one held-out row."""
    cfg = engine_config(row)
    pmfs = [np.array([1.0])]
    if cfg.method != "ar":
        key = (str(row.draft_name), float(row.temperature))
        if key not in models:
            return {"reason": f"no training acceptance for this draft at T={row.temperature:g}"}
        pmfs = [length_pmf(cfg, _profile_for(p, cfg.depth)) for p in prompt_profiles(models[key], spreads[key])]
    max_new = int(row.max_new_tokens)
    steps = batch_steps(np.array(pmfs), max_new, int(row.batch_size))
    parts = _forward_parts(row, law, shapes)
    step_s = parts["step_forward_s"] + overheads.step_s(cfg)
    prefill_s = overheads.prefill_s(parts["prefill_forward_s"])
    total_s = float(row.num_batches) * (prefill_s + steps * step_s)
    return {"reason": "", "steps_per_batch_pred": steps, "step_s_pred": step_s, "prefill_s_pred": prefill_s,
            "tokens_per_s_pred": float(row.num_new_tokens) / total_s, "tpot_s_pred": steps * step_s / (max_new - 1)}


def _has_sequences(rows: pd.DataFrame) -> bool:
    """Whether every row carries per-sequence counts (files written since they exist)."""
    return "num_accepted_per_seq" in rows and rows["num_accepted_per_seq"].map(
        lambda v: isinstance(v, (list, str)) and len(v) > 0).all()


def _shapes(*frames: pd.DataFrame) -> dict:
    """Shapes of every target and draft named in the rows (parameter counts solve trained models' vocabularies)."""
    rows = pd.concat(frames)
    params = {**rows.groupby("target_name")["target_params"].first().to_dict(),
              **rows.dropna(subset=["draft_name"]).groupby("draft_name")["draft_params"].first().to_dict()}
    return {n: step_shape(n, p) for n, p in params.items() if isinstance(n, str) and n}


@dataclass(frozen=True)
class FittedPlanner:
    """What the planner learns from training ``spec`` rows: acceptance profiles per (draft, temperature), their
    spread across prompts, the engine's overheads outside the forward passes, and the step-time law it times the
    passes with (:func:`fit_planner`)."""

    law: StepTimeFit
    models: dict
    spreads: dict
    overheads: EngineOverheads
    train_rows: int


def fit_planner(train: pd.DataFrame, law: StepTimeFit) -> FittedPlanner:
    """Fit acceptance profiles, their spread across prompts and the engine's overheads on ``train`` (``spec``
    rows), with forward passes timed by ``law``."""
    fit_rows = rates.derive(train[train["status"].eq("ok")]).reset_index(drop=True)
    shapes = _shapes(fit_rows)
    models = acceptance_models(fit_rows)
    parts = pd.DataFrame([_forward_parts(r, law, shapes) for r in fit_rows.itertuples()])
    overheads = fit_overheads(parts.assign(step_meas_s=_steps_meas(fit_rows).to_numpy(),
                                           prefill_meas_s=(fit_rows["prefill_time_s"] / fit_rows["num_batches"]).to_numpy(),
                                           method=fit_rows["method"].to_numpy(),
                                           num_spec_tokens=fit_rows["num_spec_tokens"].to_numpy()))
    spec = fit_rows[fit_rows["method"].ne("ar")]
    spreads = {}
    for key, model in models.items():
        rows = spec[(spec["draft_name"] == key[0]) & (spec["temperature"] == key[1])]
        spreads[key] = spread_from_sequences(rows) if _has_sequences(rows) else fit_spread(rows, model)
    return FittedPlanner(law, models, spreads, overheads, int(len(fit_rows)))


def predict(planner: FittedPlanner, heldout: pd.DataFrame) -> Validation:
    """Predict every ``heldout`` row with what ``planner`` learnt and compare with the measurement. Nothing of
    ``heldout`` but its configuration and workload is used for the prediction."""
    held = rates.derive(heldout[heldout["status"].eq("ok")]).reset_index(drop=True)
    shapes = _shapes(held)
    preds = pd.DataFrame([_predict_row(r, planner.law, planner.models, planner.spreads, shapes, planner.overheads)
                          for r in held.itertuples()])
    out = pd.concat([held, preds], axis=1)
    out["label"] = [_row_label(r) for r in held.itertuples()]
    out["steps_per_batch_meas"] = out["num_steps"] / out["num_batches"]
    out["tokens_per_s_meas"], out["tpot_s_meas"] = out["tokens_per_s"], out["tpot_s"]
    out["speedup_meas"] = out["speedup"]
    ar = out[out["method"].eq("ar")].groupby(["batch_size", "temperature"])["tokens_per_s_pred"].median()
    keys = list(zip(out["batch_size"], out["temperature"]))
    out["speedup_pred"] = out["tokens_per_s_pred"] / np.array([ar.get(k, np.nan) for k in keys])
    for q in QUANTITIES:
        out[f"{q}_pct"] = 100.0 * (out[f"{q}_pred"] / out[f"{q}_meas"] - 1.0)
    law = planner.law
    inputs = {"acceptance": {f"{d} T={t:g}": [list(r) for r in p] for (d, t), p in planner.models.items()},
              "prompt_spread": {f"{d} T={t:g}": s for (d, t), s in planner.spreads.items()},
              "overheads": planner.overheads.__dict__, "cost_model": law.source, "gpu": law.gpu_name,
              "train_rows": planner.train_rows, "heldout_rows": int(len(held))}
    return Validation(rows=out, inputs=inputs)


def validate(train: pd.DataFrame, heldout: pd.DataFrame, law: StepTimeFit) -> Validation:
    """Predict every held-out ``spec`` row from what ``train`` (``spec`` rows) and the step-time law ``law``
    give: acceptance profiles and their spread across prompts, and the engine's overheads outside the forward
    passes (:func:`fit_planner`, then :func:`predict`)."""
    return predict(fit_planner(train, law), heldout)
