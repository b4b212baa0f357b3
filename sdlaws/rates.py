"""The one place where rates are derived from the raw counts and timings of :mod:`sdlaws.schema`.

Definitions follow vLLM ``SpecDecodingStats`` (``vllm/v1/spec_decode/metrics.py``) and Leviathan et al. 2023
(arXiv 2211.17192); see ``docs/formulas.md#acceptance-rates``:

- ``acceptance_rate`` = num_accepted_tokens / num_draft_tokens (vLLM "draft acceptance rate").
- ``mean_acceptance_length`` tau = 1 + num_accepted_tokens / num_drafts (includes the bonus token).
- ``pos_acceptance_rate_i`` = num_accepted_per_pos[i] / num_drafts: unconditional, P(first i+1 accepted).
- ``cond_acceptance_rate_i`` = per_pos[i] / per_pos[i-1] (per_pos[-1] := num_drafts): EAGLE's n-alpha.
- ``alpha_mle``: Leviathan's per-token alpha under the i.i.d. model, censored-geometric MLE
  S / (S + F), S = accepted draft tokens, F = drafts with a rejection (chain drafts; docs/formulas.md#alpha-mle).
- ``alpha_from_tau``: the inversion of tau(alpha, gamma) = (1 - alpha^(gamma+1)) / (1 - alpha) (Leviathan Eq. 1).
- ``prompt_tokens_per_seq`` = num_prompt_tokens / num_prompts (the context a workload decodes over);
- ``tokens_per_s`` = num_new_tokens / total_time_s; ``ttft_s`` = prefill_time_s / num_batches;
  ``tpot_s`` = decode time per batch / (max_new_tokens - 1) (time per output token after the first);
  ``decode_tokens_per_s`` = batch_size / tpot_s (throughput of the decode phase, prefill excluded).
  Rows imported from a serving engine have no batches: their ``ttft_s`` and ``tpot_s`` are the means of the
  engine's own histograms (``ttft_sum_s / num_ttft``, ``tpot_sum_s / num_tpot``, the engine's definitions).
  Continuous-batching rows count as ``num_batches`` the static batches their prompts fill, so these per-batch
  rates compare with static rows (``decode_tokens_per_s``: decode tokens over decode time of the whole run).
- ``speedup`` = tokens_per_s / tokens_per_s of the ``ar`` row with the same target, batch size, temperature,
  prompt set, prompt length, max_new_tokens, gpu, tensor-parallel size and batching (NaN when no such baseline was
  measured); ``decode_speedup`` the same ratio of ``decode_tokens_per_s`` (the quantity Scylla's Thm 1.3 is about:
  verification cost per step).

Synthetic-acceptance rows (``acceptance_source == "synthetic"``) get the same rates; their acceptance is the
profile they were run with. :func:`acceptance_profile` derives such a profile from measured counts.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from sdlaws import schema
from sdlaws.errors import InputError

#: Columns that identify the AR baseline of a speculative row (same workload, same machine).
BASELINE_KEYS = ["target_name", "batch_size", "temperature", "prompt_set", "prompt_tokens_per_seq", "max_new_tokens",
                 "gpu_name", "tp_size", "batching"]


#: What each derived acceptance column measures: ``"tau"`` (tokens per step, bonus included) or ``"alpha"`` (a
#: per-token acceptance probability). The planner reads a fitted law's response through it.
ACCEPTANCE_KINDS = {"mean_acceptance_length": "tau", "alpha_mle": "alpha", "alpha_tau": "alpha",
                    "acceptance_rate": "alpha"}


def expected_tokens_chain(alpha, gamma):
    """Expected tokens per target pass of a chain draft, tau(alpha, gamma) (Leviathan et al. 2023, Eq. 1).

    ``tau = (1 - alpha**(gamma + 1)) / (1 - alpha)``, with the limit ``gamma + 1`` at ``alpha = 1``.
    Broadcasts over numpy arrays.
    """
    alpha = np.asarray(alpha, dtype=float)
    gamma = np.asarray(gamma, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = (1.0 - alpha ** (gamma + 1.0)) / (1.0 - alpha)
    return np.where(np.isclose(alpha, 1.0), gamma + 1.0, tau)


def alpha_from_tau(tau: float, gamma: int) -> float:
    """Invert tau(alpha, gamma) = tau for alpha in [0, 1] (tau is strictly increasing in alpha).

    Returns NaN outside [1, gamma + 1]. Example (docs/formulas.md#chain-tau): tau = 3.0 at gamma = 5 gives
    alpha ~ 0.709.
    """
    if not np.isfinite(tau) or gamma < 1 or tau < 1.0 or tau > gamma + 1.0:
        return float("nan")
    if tau >= gamma + 1.0 - 1e-12:
        return 1.0
    if tau <= 1.0 + 1e-12:
        return 0.0
    from scipy.optimize import brentq  # lazy: scipy.optimize costs ~0.4 s of import (sdlaws plan must start fast)

    return float(brentq(lambda a: float(expected_tokens_chain(a, gamma)) - tau, 0.0, 1.0 - 1e-15, xtol=1e-12))


def expected_tokens_positions(cond_rates) -> float:
    """tau from per-position conditional rates alpha_1..alpha_gamma: ``1 + sum_i prod_{j<=i} alpha_j`` ([R])."""
    return 1.0 + float(np.sum(np.cumprod(np.asarray(cond_rates, dtype=float))))


def expected_tokens_profile(profile, gamma: int) -> float:
    """Expected tokens per step of a chain of ``gamma`` drafts under an acceptance profile (rank 0 only).

    ``1 + sum_{d=1..gamma} prod_{i<=d} q[i-1][0]`` (:func:`expected_tokens_positions` of the rank-0 column);
    a missing or empty row counts as 0. ``profile`` as in :mod:`sdlaws.measure.profile`.
    """
    rank0 = [row[0] if len(row) else 0.0 for row in profile[:gamma]]
    return expected_tokens_positions(rank0 + [0.0] * (gamma - len(rank0)))


def acceptance_profile(rows: pd.DataFrame | pd.Series | dict, depth: int,
                       topk: int = 1) -> tuple[tuple[float, ...], ...]:
    """Acceptance profile ``q`` (``depth`` rows of at most ``topk`` ranks) from measured ``spec`` counts.

    For synthetic-acceptance timing runs that should accept like a measured pair (``sdlaws measure
    --acceptance-profile``). Depth ``d`` accepts with the conditional rate ``a_d = per_pos[d-1] / per_pos[d-2]``
    (``per_pos[-1] := num_drafts``; 0 when depth ``d - 1`` was never reached), split over ranks by the shares of
    ``num_accepted_per_rank``: ``q[d-1][r] = a_d * per_rank[r] / sum(per_rank)`` for ``r < topk``. Without rank
    counts (chains) the rows hold rank 0 only: ``q[d-1] = (a_d,)``.

    Approximations: the rank shares are pooled over depths, so they are assumed equal at every depth; and the
    measured tree's budget is baked in (a rank it did not draft counted as a rejection), so the profile
    reproduces that tree shape's acceptance best. A DataFrame's counts are summed over its rows (pass ok rows of
    one pair and one configuration).

    Raises
    ------
    InputError
        No drafts, or fewer per-position counts than ``depth``.
    """
    frame = pd.DataFrame([rows]) if isinstance(rows, (dict, pd.Series)) else rows
    drafts = float(frame["num_drafts"].sum())
    per_pos = summed_lists(frame["num_accepted_per_pos"])
    if drafts <= 0 or len(per_pos) < depth:
        raise InputError(f"acceptance_profile needs num_drafts > 0 and num_accepted_per_pos for {depth} depth(s); "
                         f"got {drafts:g} drafts and {len(per_pos)} position(s)")
    reached = [drafts, *per_pos[: depth - 1]]
    accept = [a / n if n > 0 else 0.0 for a, n in zip(per_pos[:depth], reached)]
    per_rank = summed_lists(frame["num_accepted_per_rank"]) if "num_accepted_per_rank" in frame else []
    total = sum(per_rank)
    shares = [c / total for c in per_rank[:topk]] if total > 0 else [1.0]
    return tuple(tuple(a * share for share in shares) for a in accept)


def depth_acceptance(rows: pd.DataFrame) -> list[float]:
    """Conditional acceptance per depth pooled over ``spec`` rows of different depths: at depth ``d``, tokens
    accepted there over drafts that reached depth ``d - 1``, both summed over the rows that drafted ``d`` deep
    (a chain of 4 says nothing about depth 6). Rows weigh by their counts, so many prompts outweigh few; in
    trees a depth counts a node of any rank. 0 where no draft reached the depth above."""
    depth = int(rows["num_spec_tokens"].max())
    accepted, reached = np.zeros(depth), np.zeros(depth)
    for drafts, cell, width in zip(rows["num_drafts"], rows["num_accepted_per_pos"], rows["num_spec_tokens"]):
        per_pos = np.asarray(count_list(cell)[: int(width)], float)
        accepted[: len(per_pos)] += per_pos
        reached[: len(per_pos)] += np.concatenate([[float(drafts)], per_pos[:-1]])
    return [float(a / n) if n > 0 else 0.0 for a, n in zip(accepted, reached)]


def summed_lists(cells: pd.Series) -> list[float]:
    """Element-wise sum of JSON/list cells (shorter lists zero-padded)."""
    lists = [count_list(c) for c in cells]
    width = max(map(len, lists), default=0)
    return [sum(values[i] for values in lists if i < len(values)) for i in range(width)]


def count_list(cell) -> list[float]:
    """A list-of-counts cell (JSON text as read from a CSV, or a list) as floats; empty when absent."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [float(v) for v in cell]
    if cell is None or (isinstance(cell, float) and np.isnan(cell)) or str(cell).strip() in ("", "nan"):
        return []
    return [float(v) for v in json.loads(cell)]


def prompt_tokens_per_seq(df: pd.DataFrame) -> pd.Series:
    """Mean prompt tokens per sequence of each row (the context a workload decodes over)."""
    return df["num_prompt_tokens"] / df["num_prompts"]


def decode_step_s(df: pd.DataFrame) -> pd.Series:
    """Measured seconds per decode step of each row, prefill excluded."""
    return (df["total_time_s"] - df["prefill_time_s"]) / df["num_steps"]


def derive(df: pd.DataFrame) -> pd.DataFrame:
    """Add every derived rate column to a validated ``spec`` frame (a copy is returned).

    Failed rows get NaN rates. Columns added: prompt_tokens_per_seq, acceptance_rate, mean_acceptance_length,
    alpha_mle, alpha_tau,
    pos_acceptance_rate_<i>, cond_acceptance_rate_<i>, tokens_per_s, ttft_s, tpot_s, decode_tokens_per_s,
    decode_step_s, draft_s_per_position, speedup, decode_speedup, cost_ratio_c.
    """
    out = df.copy()
    ok = out["status"].eq("ok") if "status" in out else pd.Series(True, index=out.index)
    nan = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        drafts = out["num_drafts"].where(ok & out["num_drafts"].gt(0))
        out["acceptance_rate"] = out["num_accepted_tokens"] / out["num_draft_tokens"].where(out["num_draft_tokens"] > 0)
        out["mean_acceptance_length"] = 1.0 + out["num_accepted_tokens"] / drafts
        out["tokens_per_s"] = (out["num_new_tokens"] / out["total_time_s"]).where(ok)
        # mean prompt length: the same prompt set cut to another length (a longer context) is another workload
        if {"num_prompt_tokens", "num_prompts"} <= set(out.columns):
            out["prompt_tokens_per_seq"] = prompt_tokens_per_seq(out).where(ok)
        out["ttft_s"] = (out["prefill_time_s"] / out["num_batches"]).where(ok)
        decode_per_batch = (out["total_time_s"] - out["prefill_time_s"]) / out["num_batches"]
        out["tpot_s"] = (decode_per_batch / (out["max_new_tokens"] - 1).where(out["max_new_tokens"] > 1)).where(ok)
        for rate, total, count in (("ttft_s", "ttft_sum_s", "num_ttft"), ("tpot_s", "tpot_sum_s", "num_tpot")):
            if {total, count} <= set(out.columns):
                out[rate] = out[rate].fillna((out[total] / out[count].where(out[count] > 0)).where(ok))
        out["decode_tokens_per_s"] = (out["batch_size"] / out["tpot_s"]).where(ok)
        out["decode_step_s"] = decode_step_s(out).where(ok)
        if {"draft_time_s", "verify_time_s"} <= set(out.columns):
            # seconds of the draft phase per drafted position: one draft forward with its sampling
            out["draft_s_per_position"] = out["draft_time_s"] / (out["num_steps"] * out["num_spec_tokens"]).where(
                out["num_spec_tokens"] > 0)
            # Leviathan Def. 3.7 cost coefficient c: one draft forward / one target forward, measured in decode.
            out["cost_ratio_c"] = out["draft_s_per_position"] / (out["verify_time_s"] / out["num_steps"])
    per_pos = out["num_accepted_per_pos"].map(count_list) if "num_accepted_per_pos" in out else pd.Series([[]] * len(out), index=out.index)
    out["alpha_mle"] = [_alpha_mle(p, d, a, g, m) if k else nan
                        for p, d, a, g, m, k in zip(per_pos, out["num_drafts"], out["num_accepted_tokens"],
                                                     out["num_spec_tokens"], out["method"], ok)]
    out["alpha_tau"] = [alpha_from_tau(t, int(g)) if (k and m == "chain") else nan
                        for t, g, m, k in zip(out["mean_acceptance_length"], out["num_spec_tokens"], out["method"], ok)]
    width = max((len(p) for p in per_pos), default=0)
    for i in range(width):
        num = per_pos.map(lambda p: p[i] if i < len(p) else nan)
        den = out["num_drafts"] if i == 0 else per_pos.map(lambda p: p[i - 1] if i - 1 < len(p) else nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"pos_acceptance_rate_{i + 1}"] = (num / drafts).where(ok)
            out[f"cond_acceptance_rate_{i + 1}"] = (num / den.where(den > 0)).where(ok)
    out["speedup"] = over_ar(out, "tokens_per_s", ok)
    out["decode_speedup"] = over_ar(out, "decode_tokens_per_s", ok)
    return out


def _alpha_mle(per_pos: list[float], num_drafts: float, accepted: float, gamma: float, method: str) -> float:
    """Censored-geometric MLE of alpha for chain drafts: S / (S + F) (docs/formulas.md#alpha-mle)."""
    if method != "chain" or not per_pos or num_drafts <= 0:
        return float("nan")
    full = per_pos[int(gamma) - 1] if len(per_pos) >= gamma else 0.0  # drafts with all gamma tokens accepted
    rejections = num_drafts - full
    return float(accepted / (accepted + rejections)) if accepted + rejections > 0 else float("nan")


def over_ar(out: pd.DataFrame, rate: str, ok: pd.Series | None = None) -> pd.Series:
    """``rate`` of each row over the median ``rate`` of its ``ar`` baseline rows among the ``ok`` ones (all by
    default): the rows of the same :data:`BASELINE_KEYS` (target, batch, temperature, prompts, lengths, GPU,
    tensor parallelism, batching). Speedups of measured rows, and of a planner's predicted rates."""
    ok = pd.Series(True, index=out.index) if ok is None else ok
    # files written before these columns are one-GPU, static-batching rows
    out = out.assign(tp_size=schema.tp_sizes(out), batching=schema.batching_modes(out))
    keys = [k for k in BASELINE_KEYS if k in out.columns]
    base = out[ok & out["method"].eq("ar")]
    if base.empty:
        return pd.Series(np.nan, index=out.index)
    ref = base.groupby(keys, dropna=False)[rate].median().rename("_ar_rate").reset_index()
    merged = out[keys].merge(ref, on=keys, how="left")
    return pd.Series(out[rate].to_numpy() / merged["_ar_rate"].to_numpy(), index=out.index)


def nll_per_token(df: pd.DataFrame | pd.Series):
    """Held-out negative log-likelihood per token of each ``ppl`` row, in nats: ``nll_sum_nats / num_eval_tokens``."""
    return df["nll_sum_nats"] / df["num_eval_tokens"]


def perplexity(df: pd.DataFrame | pd.Series):
    """Perplexity of each ``ppl`` row: ``exp(nll_sum_nats / num_eval_tokens)``."""
    return np.exp(nll_per_token(df))
