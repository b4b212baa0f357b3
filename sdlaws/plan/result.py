"""Plan results: the recommended value, its interval, the predicted speedup, and every input echoed.

A :class:`Plan` answers one question (draft size, pretraining tokens, chain length or tree shape at one batch size);
a :class:`PlanSet` groups the plans of one ``sdlaws plan`` call with their tables. Both print (``summary()``),
serialise to plain JSON types (``to_dict()``) and tabulate (``to_frame()``), like ``sdlaws.fit`` results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sdlaws import io
from sdlaws.formatting import fmt


@dataclass(frozen=True)
class Plan:
    """One recommendation.

    Attributes
    ----------
    quantity : str
        What is chosen, e.g. ``draft_params``, ``draft_pretrain_tokens``, ``num_spec_tokens``, ``tree_topk``.
    value : float
        The recommended value (from the point estimates of the laws).
    unit : str
        Unit of ``value`` (``params``, ``tokens``, ``tokens/step`` ...).
    objective : str
        What was maximised or minimised, e.g. ``tokens/FLOP (SDSL)`` or ``tokens/s (roofline, H200, batch 8)``.
    ci : (float, float) or None
        Interval of ``value`` at ``level`` (percentiles over law draws); None when none can be given.
    ci_kind : str
        How the interval was obtained (fitted-parameter draws, published residual scatter, or none).
    speedup, speedup_ci : float, (float, float)
        Predicted speedup over autoregressive decoding at the recommended value, with its interval.
    settings : dict
        The full chosen configuration (e.g. ``{"num_spec_tokens": 4, "tree_topk": 2, "tree_verify_tokens": 9}``;
        ``tree_verify_tokens`` = tree_budget + 1 counts the root among the tokens verified per step, as SGLang's
        ``--speculative-num-draft-tokens``).
    inputs : dict
        Every input (target, draft, hardware, laws, grids), plain types.
    curve : DataFrame, optional
        Objective (and speedup) versus the decision variable (first column); ``<column>_lower/_upper`` give the
        band of a column where the laws have spread.
    warnings : tuple of str
        Extrapolation, memory and boundary warnings.
    level : float
        Interval level (0.95).
    """

    quantity: str
    value: float
    unit: str
    objective: str
    ci: tuple[float, float] | None = None
    ci_kind: str = "no interval"
    speedup: float | None = None
    speedup_ci: tuple[float, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    curve: pd.DataFrame | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = ()
    level: float = 0.95

    def conf_int(self) -> tuple[float, float] | None:
        """Interval of the recommended value at :attr:`level` (None if none)."""
        return self.ci

    def summary(self) -> str:
        """Multi-line text: value [interval], speedup [interval], objective, settings, warnings."""
        pct = f"{self.level:.0%}"
        ci = f" [{pct} {fmt(self.ci[0])}, {fmt(self.ci[1])}]" if self.ci else ""
        lines = [f"{self.quantity} = {fmt(self.value)} {self.unit}{ci}  ({self.objective})"]
        if self.speedup is not None:
            sci = f" [{fmt(self.speedup_ci[0])}, {fmt(self.speedup_ci[1])}]" if self.speedup_ci else ""
            lines.append(f"  predicted speedup {fmt(self.speedup)}x{sci}")
        if self.settings:
            lines.append("  settings: " + ", ".join(f"{k}={fmt(v)}" for k, v in self.settings.items()))
        lines.append(f"  interval: {self.ci_kind}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (JSON-ready); the curve is a list of records."""
        return io.plain(dict(quantity=self.quantity, value=self.value, unit=self.unit, objective=self.objective,
                           ci=self.ci, ci_kind=self.ci_kind, level=self.level, speedup=self.speedup,
                           speedup_ci=self.speedup_ci, settings=self.settings, warnings=self.warnings,
                           inputs=self.inputs, curve=self.curve if self.curve is not None else None))

    def to_frame(self) -> pd.DataFrame:
        """One row: quantity, value, ci_lower, ci_upper, speedup (+ interval), objective and the settings."""
        ci = self.ci or (np.nan, np.nan)
        sci = self.speedup_ci or (np.nan, np.nan)
        row = dict(quantity=self.quantity, value=self.value, unit=self.unit, ci_lower=ci[0], ci_upper=ci[1],
                   speedup=self.speedup if self.speedup is not None else np.nan, speedup_lower=sci[0],
                   speedup_upper=sci[1], objective=self.objective, **self.settings)
        return pd.DataFrame([row])

    def plot(self, ax=None, *, y: str = "speedup", label: str | None = None):
        """Draw ``y`` of the curve against the decision variable, its band (``y_lower``/``y_upper``) when
        present, the optimum (dashed) and its interval (shaded). Imports matplotlib; returns the Axes."""
        import matplotlib.pyplot as plt

        if self.curve is None:
            raise ValueError(f"plan {self.quantity!r} has no curve to plot")
        ax = ax or plt.subplots(figsize=(6, 4))[1]
        x = self.curve.columns[0]
        line, = ax.plot(self.curve[x], self.curve[y], label=label or self.objective)
        if f"{y}_lower" in self.curve:
            ax.fill_between(self.curve[x], self.curve[f"{y}_lower"], self.curve[f"{y}_upper"],
                            color=line.get_color(), alpha=0.2)
        ax.axvline(self.value, color=line.get_color(), lw=1, ls="--")
        if self.ci:
            ax.axvspan(self.ci[0], self.ci[1], color=line.get_color(), alpha=0.1)
        if self.curve[x].max() / max(self.curve[x].min(), 1e-300) > 100:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        return ax


@dataclass(frozen=True)
class PlanSet:
    """The plans of one planning call, with supporting tables (e.g. N* versus M, per-batch serving)."""

    title: str
    plans: tuple[Plan, ...]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __add__(self, other: "PlanSet") -> "PlanSet":
        """Merge two plan sets (titles joined, plans, tables and warnings concatenated)."""
        return PlanSet(title=f"{self.title} + {other.title}", plans=self.plans + other.plans,
                       tables={**self.tables, **other.tables}, inputs={**self.inputs, **other.inputs},
                       warnings=tuple(dict.fromkeys(self.warnings + other.warnings)))

    def select(self, quantity: str) -> list[Plan]:
        """Plans choosing ``quantity``."""
        return [p for p in self.plans if p.quantity == quantity]

    def summary(self) -> str:
        """Every plan's summary, then the tables as text."""
        parts = [self.title, *[p.summary() for p in self.plans]]
        parts += [f"{name}:\n{table.to_string(index=False)}" for name, table in self.tables.items()]
        parts += [f"warning: {w}" for w in self.warnings]
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (JSON-ready)."""
        return io.plain(dict(title=self.title, plans=[p.to_dict() for p in self.plans], tables=self.tables,
                           inputs=self.inputs, warnings=self.warnings))

    def to_frame(self) -> pd.DataFrame:
        """One row per plan (see :meth:`Plan.to_frame`); empty when the set holds only tables."""
        frames = [p.to_frame() for p in self.plans]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def engine_flags(serving: pd.DataFrame, draft_model: str, *, sglang_algorithm: str = "EAGLE") -> pd.DataFrame:
    """Ready-to-paste vLLM and SGLang speculative-decoding flags per batch size.

    Parameters
    ----------
    serving : DataFrame
        The per-batch serving table (columns ``batch_size``, ``chain_num_spec_tokens``, ``chain_speedup``,
        ``tree_num_spec_tokens``, ``tree_topk``, ``tree_verify_tokens``, ``tree_speedup``).
    draft_model : str
        Draft model id or path to put in the flags.
    sglang_algorithm : str
        ``EAGLE``/``EAGLE3`` for EAGLE draft heads, ``STANDALONE`` for a separate small LM (same step/top-k flags).

    Notes
    -----
    vLLM ``--speculative-config`` takes a chain length ``num_speculative_tokens`` (docs/peers.md#vllm); SGLang takes
    ``--speculative-num-steps`` (depth), ``--speculative-eagle-topk`` (branching) and
    ``--speculative-num-draft-tokens`` (tokens verified per step, root included; docs/peers.md#sglang). Where the
    predicted speedup is below 1 the flag is "speculation off".
    """
    rows = []
    for r in serving.itertuples():
        config = json.dumps({"model": draft_model, "num_speculative_tokens": int(r.chain_num_spec_tokens)})
        vllm = "speculation off (predicted speedup < 1)" if r.chain_speedup < 1 else f"--speculative-config '{config}'"
        sglang = ("speculation off (predicted speedup < 1)" if r.tree_speedup < 1 else
                  f"--speculative-algorithm {sglang_algorithm} --speculative-draft-model-path {draft_model} "
                  f"--speculative-num-steps {int(r.tree_num_spec_tokens)} --speculative-eagle-topk {int(r.tree_topk)} "
                  f"--speculative-num-draft-tokens {int(r.tree_verify_tokens)}")
        rows.append(dict(batch_size=int(r.batch_size), vllm=vllm, sglang=sglang))
    return pd.DataFrame(rows)
