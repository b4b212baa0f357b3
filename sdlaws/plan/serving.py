"""Decode throughput of sdlaws's engine per (batch size, method, num_spec_tokens, tree_topk, tree_budget),
predicted from a cost model (forward seconds) and an acceptance profile, and the best configuration per batch size.

One engine step (``sdlaws.measure.engine``) runs these forward passes, with ``n`` = num_spec_tokens (the chain
length, or the tree depth) and ``k`` = tree_topk:

- draft: one pass re-reading the last committed tokens (2 per row for a chain, n + 1 for a tree), then
  n - 1 passes of ``k`` tokens per row (1 for a chain);
- verify: one target pass over the root and the ``tree_budget`` drafted tokens of every row;
- AR: one target pass of 1 token per row.

A step commits accepted + 1 tokens per row (:mod:`sdlaws.plan.acceptance`); the batch takes
:func:`~sdlaws.plan.acceptance.batch_steps` steps for ``max_new_tokens - 1`` decoded tokens per row, so decode
throughput is ``batch_size * (max_new_tokens - 1) / (steps * step_s)``, the quantity ``decode_tokens_per_s`` of
:mod:`sdlaws.rates`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from sdlaws.plan.acceptance import batch_steps, engine_tree
from sdlaws.plan.setup import speculative_step_s
from sdlaws.roofline import ModelShape
from sdlaws.schema import config_label

#: ``forward_s(shape, batch_size, tokens_per_row) -> seconds`` at the serving context (e.g.
#: :meth:`sdlaws.plan.setup.ServingSetup.forward_time_s`: a step-time law or the roofline).
ForwardTime = Callable[[ModelShape, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EngineConfig:
    """One decoding configuration of the engine (``ar``: no draft); the fields are the CSV columns of the same
    names (:data:`sdlaws.schema.SPEC_RUN`)."""

    method: str               # "ar", "chain" or "tree"
    num_spec_tokens: int = 0  # chain length, or tree depth
    tree_topk: int = 1
    tree_budget: int = 0      # drafted tokens verified per step (chain: num_spec_tokens)

    @property
    def label(self) -> str:
        """``ar``, ``chain g=4`` or ``tree d=3 k=8 b=24`` (:func:`sdlaws.schema.config_label`)."""
        return config_label(self.method, self.num_spec_tokens, self.tree_topk, self.tree_budget)


def engine_grid(chain_num_spec_tokens=(1, 2, 3, 4, 5, 6, 8), tree_num_spec_tokens=(1, 2, 3, 4, 6),
                tree_topks=(2, 4, 8, 16, 32), max_tree_budget: int | None = 64) -> list[EngineConfig]:
    """AR, chains of every length and trees of every (depth, top-k) with at most ``max_tree_budget`` verified
    drafts."""
    trees = [EngineConfig("tree", d, k, min(d * k, max_tree_budget or d * k))
             for d in tree_num_spec_tokens for k in tree_topks]
    return [EngineConfig("ar"), *(EngineConfig("chain", n, 1, n) for n in chain_num_spec_tokens), *trees]


def draft_passes(cfg: EngineConfig) -> list[tuple[int, int]]:
    """The draft passes of one engine step of ``cfg`` as ``(tokens per row, how many)`` (see the module
    docstring)."""
    if cfg.method == "ar":
        return []
    n, k = cfg.num_spec_tokens, cfg.tree_topk
    refeed = 2 if k == 1 else n + 1
    return [(refeed, 1)] + ([(k, n - 1)] if n > 1 else [])


def step_time_s(cfg: EngineConfig, batch_size, forward_s: ForwardTime, target: ModelShape,
                draft: ModelShape | None) -> np.ndarray:
    """Seconds of the forward passes of one engine step of ``cfg`` at each batch size
    (:func:`sdlaws.plan.setup.speculative_step_s` of :func:`draft_passes`)."""
    def pass_s(shape):
        return lambda b, tokens: forward_s(shape, b, np.full_like(b, tokens))

    b = np.asarray(batch_size, dtype=float)
    return speculative_step_s(pass_s(draft), pass_s(target), b, draft_passes(cfg), 1 + cfg.tree_budget)


def length_pmf(cfg: EngineConfig, profile) -> np.ndarray:
    """Accepted-drafts distribution of one step (AR: always 0)."""
    if cfg.method == "ar":
        return np.array([1.0])
    return engine_tree(profile, cfg.tree_topk, cfg.num_spec_tokens, cfg.tree_budget).length_pmf(cfg.num_spec_tokens)


def predict_decode(configs: list[EngineConfig], batch_sizes, *, forward_s: ForwardTime, target: ModelShape,
                   draft: ModelShape | None, profile, max_new_tokens: int,
                   batching: str = "static", overhead_s: Callable[[EngineConfig], float] | None = None
                   ) -> pd.DataFrame:
    """Predicted decode throughput of every configuration at every batch size (``forward_s`` times passes at
    the mean context of the decode, e.g. prompt length + max_new_tokens / 2; ``overhead_s`` adds the engine's
    seconds per step outside them, e.g. :meth:`sdlaws.plan.validate.EngineOverheads.step_s`).

    Returns
    -------
    DataFrame
        One row per (batch size, configuration): ``batch_size``, ``method``, ``num_spec_tokens``, ``tree_topk``,
        ``tree_budget``, ``label``, ``tau`` (tokens per step), ``steps`` (decode steps per batch), ``step_s``,
        ``decode_tokens_per_s``.
    """
    batches = np.asarray(list(batch_sizes), dtype=float)
    rows = []
    for cfg in configs:
        pmf = length_pmf(cfg, profile)
        tau = float(np.dot(np.arange(1, len(pmf) + 1), pmf))
        step_s = step_time_s(cfg, batches, forward_s, target, draft) + (overhead_s(cfg) if overhead_s else 0.0)
        for b, s in zip(batches, step_s):
            steps = batch_steps(pmf, max_new_tokens, int(b), batching=batching)
            rows.append(dict(batch_size=int(b), method=cfg.method, num_spec_tokens=cfg.num_spec_tokens,
                             tree_topk=cfg.tree_topk, tree_budget=cfg.tree_budget, label=cfg.label, tau=tau,
                             steps=steps, step_s=float(s), decode_tokens_per_s=b * (max_new_tokens - 1) / (steps * s)))
    return pd.DataFrame(rows)


def best_per_batch(table: pd.DataFrame, rate: str = "decode_tokens_per_s") -> pd.DataFrame:
    """The row of the highest ``rate`` at each batch size."""
    return table.loc[table.groupby("batch_size")[rate].idxmax()].reset_index(drop=True)


def engine_plan(setup, batch_sizes, profile, *, max_new_tokens: int, configs: list[EngineConfig] | None = None,
                batching: str = "static", overhead_s: Callable[[EngineConfig], float] | None = None):
    """The best engine configuration per batch size for ``setup`` (target, draft, cost model, context) under an
    acceptance profile, as a :class:`~sdlaws.plan.result.PlanSet` with the ``engine_serving`` table (best per
    batch, with the AR decode rate and the speedup over it) and ``engine_candidates`` (every configuration);
    ``overhead_s`` adds the engine's seconds per step outside the forward passes (:func:`predict_decode`)."""
    from sdlaws.errors import ConfigError
    from sdlaws.plan.result import PlanSet

    if setup.draft is None:
        raise ConfigError("the engine plan needs a draft shape: give --draft NAME, --draft-params or --draft-config")
    table = predict_decode(configs or engine_grid(), batch_sizes, forward_s=setup.forward_time_s, target=setup.target,
                           draft=setup.draft, profile=profile, max_new_tokens=max_new_tokens, batching=batching,
                           overhead_s=overhead_s)
    ar = table[table["method"].eq("ar")].set_index("batch_size")["decode_tokens_per_s"]
    best = best_per_batch(table)
    best = best.assign(ar_decode_tokens_per_s=best["batch_size"].map(ar).to_numpy(),
                       decode_speedup=lambda t: t["decode_tokens_per_s"] / t["ar_decode_tokens_per_s"])
    cost = "step-time law" if setup.forward is not None else f"datasheet roofline ({setup.hardware.name})"
    cost += " + engine overheads" if overhead_s is not None else ""
    return PlanSet(title=f"Engine configuration per batch size: {setup.target.name} with {setup.draft.name}, "
                         f"{batching} batches of {max_new_tokens} new tokens, context {setup.kv_len} ({cost})",
                   plans=(), tables={"engine_serving": best, "engine_candidates": table},
                   inputs={"engine": {"profile": [list(r) for r in profile], "max_new_tokens": max_new_tokens,
                                      "batching": batching, "serving": setup.to_dict()}})
