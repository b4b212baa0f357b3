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
- for drafts it never saw, an acceptance law across drafts (:class:`DraftLaw`): per temperature and depth, the
  rank-0 conditional rate linear in the draft's perplexity over the training drafts (the SDSL plane at one
  target), their rank shares and prompt spread pooled;

then predicts (:func:`predict`) every held-out row with the engine's own step structure
(:mod:`sdlaws.plan.serving`), its tree policy (:func:`~sdlaws.plan.acceptance.engine_tree`), static batches
(expected slowest row), the prefill of target and draft, and compares tokens/s, speedup, TPOT and decode steps
with the measurement. A held-out row whose draft was not trained on is predicted from its perplexity by the
:class:`DraftLaw`; one the law cannot reach (no perplexity, fewer than two training drafts at its temperature) is
reported as not predicted, with the reason, never filled in. A synthetic-acceptance row (``acceptance_source`` =
``synthetic``) is predicted with the profile it was run with, a setting of the run like its batch size.

One module because the planner's fitted inputs (acceptance, draft law, spread, overheads) and the
prediction of a held-out row are one model, checked together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sdlaws import defects, io, rates, schema
from sdlaws.plan.acceptance import batch_steps, prompt_profiles, run_steps
from sdlaws.plan.cost import StepTimeFit, short_name, step_shape
from sdlaws.plan.serving import EngineConfig, length_pmf, step_time_s
from sdlaws.rates import BASELINE_KEYS
from sdlaws.schema import config_label

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
    """Conditional acceptance per depth (:func:`~sdlaws.rates.depth_acceptance`): from chain rows when present
    (rank 0 only), else from tree rows (all ranks, divided by the rank-0 share later)."""
    chains = rows[rows["method"].eq("chain")]
    return rates.depth_acceptance(chains if not chains.empty else rows[rows["method"].eq("tree")])


def acceptance_models(train: pd.DataFrame) -> dict[tuple[str, float], tuple[tuple[float, ...], ...]]:
    """``(draft_name, temperature) -> profile`` from training ``spec`` rows with real acceptance: per depth the
    rank-0 rate of chains, siblings in proportion to the tree rows' accepted nodes per rank."""
    models = {}
    for (draft, temperature), rows in _real_spec(train).groupby(["draft_name", "temperature"]):
        depth_rates = _depth_rates(rows)
        shares = _rank_shares(rows)
        if shares is None:
            models[(str(draft), float(temperature))] = tuple((a,) for a in depth_rates)
            continue
        chains = rows["method"].eq("chain").any()
        rank0 = np.asarray(depth_rates) if chains else np.asarray(depth_rates) * shares[0]
        models[(str(draft), float(temperature))] = tuple(tuple(a * shares / shares[0]) for a in rank0)
    return models


def sampled_tree_models(train: pd.DataFrame) -> dict[tuple[str, float], tuple[tuple[float, ...], ...]]:
    """``(draft_name, temperature) -> profile`` of trees at T > 0 from tree rows alone: per depth the tree's own
    conditional acceptance (any rank), split over ranks by its shares of accepted nodes.

    At T = 0 a tree's first-ranked child is the chain's token and accepts as often; when sampling, verifying
    several fixed top-k candidates accepts less per depth than a chain of sampled tokens (measured on an H200:
    0.51 at depth 1 for top-4 trees against 0.58 for chains, L2-H256 at T = 1), so chains cannot stand in."""
    spec = _real_spec(train)
    trees = spec[spec["method"].eq("tree") & spec["temperature"].gt(0)]
    models = {}
    for (draft, t), rows in trees.groupby(["draft_name", "temperature"]):
        shares = _rank_shares(rows)
        if shares is not None:  # no accepted node at all: nothing to split over ranks
            models[(str(draft), float(t))] = tuple(tuple(a * shares) for a in rates.depth_acceptance(rows))
    return models


def _real_spec(train: pd.DataFrame) -> pd.DataFrame:
    """Speculative ok rows whose acceptance was measured (not drawn from a profile)."""
    spec = train[train["method"].ne("ar") & train["status"].eq("ok")]
    if "acceptance_source" in spec:
        spec = spec[spec["acceptance_source"].fillna("target").ne("synthetic")]
    return spec


def _profile_for(model, depth: int) -> tuple[tuple[float, ...], ...]:
    """The profile extended to ``depth`` rows by repeating its deepest row."""
    rows = list(model)
    return tuple(rows + [rows[-1]] * max(0, depth - len(rows)))


@dataclass(frozen=True)
class DraftLaw:
    """Acceptance profiles of drafts the planner was not fitted on, from their perplexity on the held-out text.

    Per temperature: the rank-0 conditional acceptance of each depth is ``a_d + b_d * ppl_draft``, least squares
    over the training drafts (SDSL: acceptance is linear in the draft's perplexity at a fixed target), clipped
    to at least 0.001 and so that all ranks of a depth sum to at most 0.999; sibling ranks take the mean rank
    ratios of the training drafts that measured each rank; the prompt spread is the median of theirs.
    ``ppl_range`` is the perplexity span the lines were fitted on (beyond it they extrapolate:
    :meth:`extrapolates`). One law serves chains and trees at T = 0; sampled trees (T > 0) get their own, fitted
    on the tree rows' own profiles (:func:`sampled_tree_models`).
    """

    lines: dict[float, np.ndarray]            # temperature -> (depth, 2): intercept, slope per unit perplexity
    ratios: dict[float, np.ndarray]           # temperature -> rank ratios to rank 0
    spreads: dict[float, float | None]
    ppl_range: dict[float, tuple[float, float]]

    def profile(self, ppl: float, temperature: float) -> tuple[tuple[float, ...], ...] | None:
        """The predicted profile of a draft of perplexity ``ppl`` at ``temperature`` (None: no law there)."""
        if temperature not in self.lines or not np.isfinite(ppl):
            return None
        ratios = self.ratios[temperature]
        rank0 = np.clip(self.lines[temperature] @ np.array([1.0, ppl]), 1e-3, 0.999 / ratios.sum())
        return tuple(tuple(a * ratios) for a in rank0)

    def extrapolates(self, ppl: float, temperature: float) -> bool:
        """Whether ``ppl`` lies outside the perplexities the law was fitted on at ``temperature``."""
        lo, hi = self.ppl_range[temperature]
        return not lo <= ppl <= hi

    def to_dict(self) -> dict:
        """JSON-ready lines, ratios, spreads and ranges per temperature."""
        return {f"T={t:g}": {"intercept_slope_per_depth": self.lines[t].tolist(),
                             "rank_ratios": self.ratios[t].tolist(),
                             "prompt_spread": self.spreads[t], "ppl_range": list(self.ppl_range[t])}
                for t in self.lines}


def fit_draft_law(models: dict, spreads: dict, ppl: dict[str, float]) -> DraftLaw:
    """The :class:`DraftLaw` of the fitted ``models`` (``(draft, temperature) -> profile``) and their ``spreads``,
    with each draft's perplexity from ``ppl`` (draft name -> perplexity); temperatures with fewer than two
    drafts of distinct perplexity get no law."""
    lines, ratios, law_spreads, ranges = {}, {}, {}, {}
    for t in sorted({t for _, t in models}):
        drafts = [d for d, tt in models if tt == t and np.isfinite(ppl.get(d, np.nan))]
        x = np.array([ppl[d] for d in drafts])
        if len(set(x.round(9))) < 2:
            continue
        depth = max(len(models[(d, t)]) for d in drafts)
        profiles = [_profile_for(models[(d, t)], depth) for d in drafts]
        rank0 = np.array([[row[0] for row in p] for p in profiles])            # (drafts, depth)
        X = np.column_stack([np.ones(len(x)), x])
        lines[t] = np.linalg.lstsq(X, rank0, rcond=None)[0].T                   # (depth, 2)
        ratios[t] = _mean_rank_ratios([p[0] for p in profiles])
        known = [spreads[(d, t)] for d in drafts if spreads.get((d, t)) is not None]
        law_spreads[t] = float(np.median(known)) if known else None
        ranges[t] = (float(x.min()), float(x.max()))
    return DraftLaw(lines, ratios, law_spreads, ranges)


def _mean_rank_ratios(first_rows: list) -> np.ndarray:
    """Mean ratio of each sibling rank's acceptance to rank 0's, over the drafts whose profile measured that rank
    (a chain-only draft or a narrower tree says nothing about the ranks it never drafted); 1 for rank 0."""
    width = max(len(r) for r in first_rows)
    ratio = np.full((len(first_rows), width), np.nan)
    for i, row in enumerate(first_rows):
        if len(row) > 1 and row[0] > 0:
            ratio[i, :len(row)] = np.asarray(row) / row[0]
    measured = ~np.isnan(ratio).all(axis=0)
    out = np.zeros(width)
    out[measured] = np.nanmean(ratio[:, measured], axis=0)
    out[0] = 1.0
    return out


def _synthetic_profile(row) -> tuple[tuple[float, ...], ...] | None:
    """The profile a synthetic-acceptance row was run with (None for measured acceptance)."""
    if getattr(row, "acceptance_source", None) != "synthetic":
        return None
    value = row.acceptance_profile
    return tuple(tuple(r) for r in (json.loads(value) if isinstance(value, str) else value))


@dataclass(frozen=True)
class EngineOverheads:
    """Seconds the engine spends outside the forward passes, fitted on training rows by least squares.

    Per decode step: ``ar_step_s`` (AR: sampling, commit, one phase synchronisation) or ``spec_step_s`` plus
    ``tree_level_s`` per tree level beyond the first (top-k, tree growth and selection, cache moves). Per batch:
    prefill = ``prefill_fixed_s`` (an eager pass, masks built on the host) + the law's prefill forwards of
    target and draft. The law's forwards are not scaled: a scale
    fitted on small models (prefills of a few ms, fixed costs dominating) does not transfer (fitted 0.2 on the
    H200 pair suite, it put an 8B prefill of 256 x 512 tokens at a fifth of its measured 3.4 s).
    """

    ar_step_s: float
    spec_step_s: float
    tree_level_s: float
    prefill_fixed_s: float

    def step_s(self, cfg: EngineConfig) -> float:
        """Overhead of one step of ``cfg``."""
        if cfg.method == "ar":
            return self.ar_step_s
        return self.spec_step_s + (self.tree_level_s * (cfg.num_spec_tokens - 1) if cfg.method == "tree" else 0.0)

    def prefill_s(self, forward_s: float) -> float:
        """Prefill seconds of one batch whose forwards the law puts at ``forward_s``."""
        return self.prefill_fixed_s + forward_s


def overheads_gpu(path) -> str | None:
    """The GPU a ``validation.json``'s overheads were fitted on (None for a bare object of fields)."""
    from sdlaws import io

    data = io.load_json(path)
    return data.get("inputs", {}).get("gpu") if isinstance(data, dict) else None


def load_overheads(path) -> EngineOverheads:
    """The :class:`EngineOverheads` of a ``validation.json`` (``sdlaws validate --out``) or of a JSON object of
    its fields.

    Raises
    ------
    InputError
        The file holds no overheads (the message names the fields it needs).
    """
    from sdlaws import io
    from sdlaws.errors import InputError

    data = io.load_json(path)
    fields = data.get("inputs", {}).get("overheads", data) if isinstance(data, dict) else {}
    names = list(EngineOverheads.__dataclass_fields__)
    if not isinstance(fields, dict) or set(names) - set(fields):
        raise InputError(f"{path}: no engine overheads ({', '.join(names)}); write them with `sdlaws validate "
                         "--out DIR` (DIR/validation.json)")
    return EngineOverheads(**{k: float(fields[k]) for k in names})


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
    fixed = float(np.mean(parts["prefill_meas_s"] - parts["prefill_forward_s"]))
    return EngineOverheads(*map(float, step), fixed)


def fit_spread(rows: pd.DataFrame, profile) -> float | None:
    """Concentration of the per-prompt acceptance Beta (:func:`~sdlaws.plan.acceptance.prompt_profiles`) that
    best reproduces the training rows' measured steps per batch (least squares on log steps over
    :data:`SPREADS`)."""
    # each row's configuration and measured steps per batch, read once (not once per spread tried)
    cases = [(engine_config(r), int(r.max_new_tokens), int(r.batch_size), getattr(r, "batching", "static"),
              r.num_steps / r.num_batches) for r in rows.itertuples()]

    def loss(spread):
        err = 0.0
        for cfg, max_new, batch, batching, measured in cases:
            pmfs = [length_pmf(cfg, _profile_for(p, cfg.num_spec_tokens)) for p in prompt_profiles(profile, spread)]
            pred = batch_steps(np.array(pmfs), max_new, batch, batching=batching)
            err += np.log(pred / measured) ** 2
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
    n = int(row.num_spec_tokens)
    budget = int(row.tree_budget) if row.method == "tree" and row.tree_budget == row.tree_budget else n
    return EngineConfig(row.method, n, int(row.tree_topk), budget)


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

    def best_configs(self, tolerance_pct: float = 5.0) -> pd.DataFrame:
        """Per draft and workload (the AR baseline keys: target, batch size, temperature, prompts, lengths, GPU,
        tensor parallelism, batching) with at least two speculative configurations predicted: the predicted and
        the measured best configuration by tokens/s (the workload's AR row competes), repeats pooled by their
        median; ``exact`` when they are the same, ``within`` when the predicted best measures within
        ``tolerance_pct`` of the measured best, ``in_noise`` when its best repeat reaches the measured best's
        worst repeat (None without repeats)."""
        pred = self.predicted()
        # batching was set by predict; tp_size is absent from files written before the column
        pred = pred.assign(tp_size=schema.tp_sizes(pred), budgeted=[_config(r, budget=True) for r in pred.itertuples()])
        keys = [k for k in BASELINE_KEYS if k in pred.columns]
        ar = pred[pred["method"].eq("ar")]
        out = []
        for (draft, *key), spec in pred[pred["method"].ne("ar")].groupby(["draft_name", *keys], dropna=False):
            if spec["budgeted"].nunique() < 2:
                continue
            base = ar.merge(pd.DataFrame([key], columns=keys), on=keys)
            per = pd.concat([spec, base]).groupby("budgeted").agg(
                meas=("tokens_per_s_meas", "median"), lo=("tokens_per_s_meas", "min"),
                hi=("tokens_per_s_meas", "max"), pred=("tokens_per_s_pred", "mean"), repeats=("budgeted", "size"))
            best, chosen = per["meas"].idxmax(), per["pred"].idxmax()
            noise = bool(per.at[chosen, "hi"] >= per.at[best, "lo"]) if per["repeats"].min() > 1 else None
            where = dict(zip(keys, key))
            out.append(dict(draft_name=draft, target_name=where["target_name"], temperature=where["temperature"],
                            batch_size=where["batch_size"], prompt_len=round(where["prompt_tokens_per_seq"]),
                            batching=where.get("batching", "static"), measured_best=best, predicted_best=chosen,
                            candidates=len(per),
                            shortfall_pct=100 * (1 - per.at[chosen, "meas"] / per.at[best, "meas"]),
                            exact=best == chosen,
                            within=bool(per.at[chosen, "meas"] >= per.at[best, "meas"] * (1 - tolerance_pct / 100)),
                            in_noise=noise))
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
            table = self.summary_table(kind)
            if not table.empty:
                lines += [f"{kind} rows (|% error|, 95% bootstrap intervals):",
                          table.to_string(index=False, float_format=lambda v: f"{v:.1f}")]
        tolerance = 5.0
        best = self.best_configs(tolerance)
        if not best.empty:
            lines += [f"best configuration per (draft, workload): predicted = measured at {int(best['exact'].sum())} "
                      f"of {len(best)}, within {tolerance:g}% of the measured best at {int(best['within'].sum())}",
                      best.assign(draft_name=best["draft_name"].map(short_name)).drop(columns="target_name")
                      .to_string(index=False, float_format="{:.1f}".format)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per-row table, summary table, inputs."""
        return dict(rows=self.rows.to_dict(orient="records"), inputs=self.inputs,
                    summary={k: self.summary_table(k).to_dict(orient="records") for k in ("speculative", "ar")},
                    best_configs=self.best_configs().to_dict(orient="records"))


def _config(row, budget: bool = False) -> str:
    """``chain g=2`` / ``tree d=3 k=8`` / ``ar`` of a row (:func:`sdlaws.schema.config_label`); with ``budget``
    a tree's budget too (``tree d=3 k=8 b=24``: trees of one shape and different budgets are different
    configurations)."""
    tree_budget = int(row.tree_budget) if budget and row.method == "tree" else None
    return config_label(row.method, row.num_spec_tokens, row.tree_topk, tree_budget)


def _forward_parts(row, law: StepTimeFit, shapes: dict) -> dict:
    """The law's seconds of one decode step's forward passes and of one batch's prefill forwards."""
    batch = int(row.batch_size)
    prompt = float(row.num_prompt_tokens) / float(row.num_prompts)
    kv = prompt + int(row.max_new_tokens) / 2.0
    target = shapes[row.target_name]
    draft = shapes.get(row.draft_name) if isinstance(row.draft_name, str) and row.draft_name else None

    def forward_s(shape, b, n):
        return law.time_s(shape, np.asarray(b, float).ravel(), np.asarray(n, float).ravel(), kv)

    def prefill_s(rows):
        return sum(float(law.time_s(m, [rows], [prompt], prompt / 2)[0]) for m in (target, draft) if m is not None)

    step_s = float(step_time_s(engine_config(row), np.array([batch]), forward_s, target, draft)[0])
    return {"step_forward_s": step_s, "prefill_forward_s": prefill_s(batch), "refill_forward_s": prefill_s(1)}


def _acceptance(row, planner: "FittedPlanner") -> tuple[Any, float | None, str]:
    """``(profile, prompt spread, source)`` of a speculative row, or ``(None, None, reason)``: the profile a
    synthetic row ran with, the draft's fitted profile, or the draft law's from its perplexity."""
    synthetic = _synthetic_profile(row)
    if synthetic is not None:
        return synthetic, None, "synthetic"
    key = (str(row.draft_name), float(row.temperature))
    sampled_tree = row.method == "tree" and key[1] > 0
    models, law = (planner.tree_models, planner.tree_draft_law) if sampled_tree else (planner.models,
                                                                                      planner.draft_law)
    if key in models:
        return models[key], planner.spreads[key], "fitted"
    if sampled_tree and key in planner.models:
        return None, None, f"no sampled-tree rows of this draft at T={row.temperature:g} (chains cannot stand in)"
    ppl = float(row.draft_ppl)
    profile = law.profile(ppl, key[1])
    if profile is None:
        why = "no perplexity" if not np.isfinite(ppl) else "fewer than two training drafts"
        return None, None, f"no training rows of this draft at T={row.temperature:g}, and {why} for the draft law"
    return profile, law.spreads[key[1]], "draft law" + (" (extrapolated)" if law.extrapolates(ppl, key[1]) else "")


def _predict_row(row, planner: "FittedPlanner", shapes: dict) -> dict:
    """Predicted steps per batch, step and prefill seconds, tokens/s and TPOT of one held-out row."""
    law, overheads = planner.law, planner.overheads
    cfg = engine_config(row)
    pmfs, source = [np.array([1.0])], "ar"
    if cfg.method != "ar":
        profile, spread, source = _acceptance(row, planner)
        if profile is None:
            return {"reason": source}
        pmfs = [length_pmf(cfg, _profile_for(p, cfg.num_spec_tokens)) for p in prompt_profiles(profile, spread)]
    max_new, batch, batches = int(row.max_new_tokens), int(row.batch_size), float(row.num_batches)
    parts = _forward_parts(row, law, shapes)
    step_s = parts["step_forward_s"] + overheads.step_s(cfg)
    if row.batching == "continuous":
        # one run: the first batch prefilled together, every later prompt into a freed slot alone (eager), the
        # rows list-scheduled on the slots; steps and prefill per batch as the engine records them (num_batches)
        prompts = int(row.num_prompts)
        steps = run_steps(np.array(pmfs), max_new, batch, prompts) / batches
        prefill_run_s = (overheads.prefill_s(parts["prefill_forward_s"])
                         + max(0, prompts - batch) * overheads.prefill_s(parts["refill_forward_s"]))
    else:
        steps = batch_steps(np.array(pmfs), max_new, batch)
        prefill_run_s = batches * overheads.prefill_s(parts["prefill_forward_s"])
    total_s = prefill_run_s + batches * steps * step_s
    return {"reason": "", "acceptance_from": source, "steps_per_batch_pred": steps, "step_s_pred": step_s,
            "prefill_s_pred": prefill_run_s / batches, "tokens_per_s_pred": float(row.num_new_tokens) / total_s,
            "tpot_s_pred": steps * step_s / (max_new - 1)}


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
    draft_law: DraftLaw
    tree_models: dict
    tree_draft_law: DraftLaw


def fit_planner(train: pd.DataFrame, law: StepTimeFit) -> FittedPlanner:
    """Fit acceptance profiles, their spread across prompts and the engine's overheads on ``train`` (``spec``
    rows), with forward passes timed by ``law``."""
    fit_rows = rates.derive(train[train["status"].eq("ok")]).reset_index(drop=True)
    fit_rows["batching"] = schema.batching_modes(fit_rows)
    shapes = _shapes(fit_rows)
    models = acceptance_models(fit_rows)
    # a known engine defect changes time, not tokens: acceptance uses every row, the overheads only clean timings
    timed = fit_rows[~fit_rows["run_id"].isin(_timed_ok(train, law)[1]["run_id"])]
    parts = pd.DataFrame([_forward_parts(r, law, shapes) for r in timed.itertuples()])
    overheads = fit_overheads(parts.assign(step_meas_s=_steps_meas(timed).to_numpy(),
                                           prefill_meas_s=(timed["prefill_time_s"] / timed["num_batches"]).to_numpy(),
                                           method=timed["method"].to_numpy(),
                                           num_spec_tokens=timed["num_spec_tokens"].to_numpy()))
    spec = fit_rows[fit_rows["method"].ne("ar")]
    spreads = {}
    for key, model in models.items():
        rows = spec[(spec["draft_name"] == key[0]) & (spec["temperature"] == key[1])]
        spreads[key] = spread_from_sequences(rows) if _has_sequences(rows) else fit_spread(rows, model)
    ppl = spec.dropna(subset=["draft_ppl"]).groupby("draft_name")["draft_ppl"].median().to_dict()
    trees = sampled_tree_models(fit_rows)
    return FittedPlanner(law, models, spreads, overheads, int(len(fit_rows)), fit_draft_law(models, spreads, ppl),
                         trees, fit_draft_law(trees, spreads, ppl))


def predict(planner: FittedPlanner, heldout: pd.DataFrame) -> Validation:
    """Predict every ``heldout`` row with what ``planner`` learnt and compare with the measurement. Nothing of
    ``heldout`` but its configuration and workload is used for the prediction."""
    kept, aside = _timed_ok(heldout, planner.law)
    held = rates.derive(kept).reset_index(drop=True)
    held["batching"] = schema.batching_modes(held)  # a static batch waits for its slowest row, a continuous one not
    shapes = _shapes(held)
    preds = pd.DataFrame([_predict_row(r, planner, shapes) for r in held.itertuples()])
    out = pd.concat([held, preds], axis=1)
    # configuration, then ``chain g=2 b=8 T=0`` (batch size and temperature) for messages and figures
    out["config"] = [_config(r) for r in held.itertuples()]
    out["label"] = [f"{c} b={r.batch_size} T={r.temperature:g}" for c, r in zip(out["config"], held.itertuples())]
    out["steps_per_batch_meas"] = out["num_steps"] / out["num_batches"]
    out["tokens_per_s_meas"], out["tpot_s_meas"] = out["tokens_per_s"], out["tpot_s"]
    out["speedup_meas"] = out["speedup"]
    out["speedup_pred"] = rates.over_ar(out, "tokens_per_s_pred").to_numpy()
    for q in QUANTITIES:
        out[f"{q}_pct"] = 100.0 * (out[f"{q}_pred"] / out[f"{q}_meas"] - 1.0)
    out = pd.concat([out, _not_measured(io.failed_not_rerun(heldout)), _unpredicted(aside)], ignore_index=True)
    law = planner.law
    inputs = {"acceptance": {f"{d} T={t:g}": [list(r) for r in p] for (d, t), p in planner.models.items()},
              "prompt_spread": {f"{d} T={t:g}": s for (d, t), s in planner.spreads.items()},
              "draft_law": planner.draft_law.to_dict(), "sampled_tree_draft_law": planner.tree_draft_law.to_dict(),
              "overheads": planner.overheads.__dict__, "cost_model": law.source, "gpu": law.gpu_name,
              "train_rows": planner.train_rows, "heldout_rows": int(len(out))}
    return Validation(rows=out, inputs=inputs)


def _timed_ok(rows: pd.DataFrame, law: StepTimeFit) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows that ran, split into those whose times the planner can be held to and those timed with a known
    engine defect (:func:`sdlaws.defects.set_aside`, at the law's copy bandwidth)."""
    ok = rows[rows["status"].eq("ok")]
    return defects.set_aside(ok, _shapes(ok), float(law.params["hbm_bytes_per_s"]))


def _not_measured(failed: pd.DataFrame) -> pd.DataFrame:
    """Held-out rows that failed to run, with their configuration, label and the reason (nothing to compare)."""
    return _unpredicted(failed.assign(reason=["not measured (the run failed: " + str(e).split(":")[0] + ")"
                                              for e in failed["error"]]))


def _unpredicted(rows: pd.DataFrame) -> pd.DataFrame:
    """Held-out rows not compared with a prediction, with their configuration, label and ``reason``."""
    if rows.empty:
        return rows
    out = rows.reset_index(drop=True).copy()
    out["config"] = [_config(r) for r in out.itertuples()]
    out["label"] = [f"{c} b={r.batch_size} T={r.temperature:g}" for c, r in zip(out["config"], out.itertuples())]
    return out


def validate(train: pd.DataFrame, heldout: pd.DataFrame, law: StepTimeFit) -> Validation:
    """Predict every held-out ``spec`` row from what ``train`` (``spec`` rows) and the step-time law ``law``
    give: acceptance profiles and their spread across prompts, and the engine's overheads outside the forward
    passes (:func:`fit_planner`, then :func:`predict`)."""
    return predict(fit_planner(train, law), heldout)


def leave_one_draft_out(spec: pd.DataFrame, law: StepTimeFit) -> Validation:
    """The draft law's out-of-sample check: per target, each draft's speculative rows predicted by a planner
    fitted on that target's other drafts (and its AR rows), so their acceptance comes from the draft law and the
    draft's perplexity alone. AR rows are training rows of every fold, so only speculative rows are reported;
    the inputs hold the median of the folds' overheads."""
    ok = spec[spec["status"].eq("ok")]
    folds, overheads = [], []
    for _, rows in ok.groupby("target_name"):
        for draft in rows.loc[rows["method"].ne("ar"), "draft_name"].unique():
            planner = fit_planner(rows[rows["draft_name"].ne(draft)], law)
            fold = predict(planner, rows[rows["draft_name"].eq(draft) | rows["method"].eq("ar")])
            folds.append(fold.rows[fold.rows["method"].ne("ar")])
            overheads.append(planner.overheads.__dict__)
    held = pd.concat(folds, ignore_index=True)
    inputs = {"overheads": pd.DataFrame(overheads).median().to_dict(), "cost_model": law.source,
              "gpu": law.gpu_name, "train_rows": int(len(ok)), "heldout_rows": int(len(held)), "folds": len(folds),
              "draft_law": {}, "prompt_spread": {}}
    return Validation(rows=held, inputs=inputs)
