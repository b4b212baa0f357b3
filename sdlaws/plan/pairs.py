"""Published draft/target pairs as acceptance priors: ``data/published_pairs.csv`` (columns in ``data/README.md``).

Most users start from a well-known pair (an EAGLE head on Llama-3.1-8B, DeepSeek's MTP layers, a Medusa head on
Vicuna) rather than from their own measurement. Each row of the table is one published mean acceptance length
tau, with the draft length or tree it was measured at and, where published, the per-position rates. The planner
turns a row into its acceptance model (:func:`acceptance`):

- per-position rates, when the row has them, become the chain's conditional rates
  ``a_i = p_i / p_(i-1)`` (the table holds vLLM's unconditional ``p_i`` = accepted at position i / drafts);
- otherwise the i.i.d. alpha that reproduces tau at the row's depth (:func:`sdlaws.rates.alpha_from_tau`).
  For a tree row that alpha is the chain-equivalent one: a chain of that depth accepting as much as the tree,
  which overstates what a real chain accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sdlaws.errors import ConfigError, InputError
from sdlaws.plan.optimize import ServingAcceptance
from sdlaws.rates import alpha_from_tau

TABLE = "published_pairs.csv"
#: Where the table lives: the repository's data/ and, in an installed wheel, the copy packed into sdlaws/data/.
LOCATIONS = (Path(__file__).resolve().parents[2] / "data" / TABLE, Path(__file__).resolve().parents[1] / "data" / TABLE)

#: Recognised values: a row outside them is a typo or a new kind of pair that the planner has not been taught.
DRAFT_METHODS = ("eagle", "eagle2", "eagle3", "medusa", "mtp", "draft_model")
METHODS = ("chain", "tree")
BENCHMARKS = ("MT-bench", "Spec-Bench", "HumanEval", "GSM8K", "Alpaca", "CNN/DM", "unstated")
TAGS = ("P", "S")
REQUIRED = ("name", "draft_method", "target", "draft", "method", "num_spec_tokens", "benchmark", "engine",
            "mean_acceptance_length", "source", "url", "tag")
POSITION_PREFIX = "pos_acceptance_rate_"
#: Rounding slack between a published tau and 1 + the sum of its published per-position rates (2 decimals).
TAU_ROUNDING = 0.01


@dataclass(frozen=True)
class Pair:
    """One row of the table."""

    name: str
    draft_method: str
    target: str
    draft: str
    target_shape: str | None      # sdlaws shape spec the planner costs the target with (None: not known)
    draft_shape: str | None
    method: str                   # chain or tree
    num_spec_tokens: int          # chain length, MTP layers, or tree depth
    tree_topk: int | None
    tree_budget: int | None
    temperature: float | None     # None: not stated by the source
    benchmark: str
    engine: str
    tau: float
    positions: tuple[float, ...]  # unconditional per-position rates (empty: not published)
    source: str
    url: str

    def conditional_rates(self) -> np.ndarray | None:
        """Chain rates ``a_i = p_i / p_(i-1)`` (``p_0 = 1``) from the per-position rates, or None."""
        if not self.positions:
            return None
        p = np.asarray(self.positions)
        return p / np.concatenate([[1.0], p[:-1]])

    @property
    def alpha(self) -> float:
        """i.i.d. per-token acceptance with the published tau at the row's depth."""
        return alpha_from_tau(self.tau, self.num_spec_tokens)

    def settings(self) -> str:
        """How the row's tau was measured, e.g. ``chain gamma 3`` or ``tree depth 5, top-k 10, 60 tokens``."""
        if self.method == "chain":
            return f"chain gamma {self.num_spec_tokens}"
        extra = [f"top-k {self.tree_topk}" if self.tree_topk else "", f"{self.tree_budget} tokens" if self.tree_budget
                 else ""]
        return ", ".join([f"tree depth {self.num_spec_tokens}", *filter(None, extra)])

    def describe(self) -> str:
        """One line: which row, what was measured where, and the acceptance model the planner takes from it."""
        temp = "temperature not stated" if self.temperature is None else f"temperature {self.temperature:g}"
        cond = self.conditional_rates()
        model = (f"per-position chain rates {', '.join(f'{a:.3f}' for a in cond)}" if cond is not None else
                 f"i.i.d. alpha {self.alpha:.3f} reproducing tau at depth {self.num_spec_tokens}"
                 + (" (chain-equivalent of a tree: optimistic for chains)" if self.method == "tree" else ""))
        return (f"published pair {self.name}: {self.draft} on {self.target}, tau {self.tau:g} ({self.settings()}, "
                f"{self.benchmark}, {temp}, {self.engine}); model: {model}; source: {self.source}")


def _optional(value, kind=str):
    """A cell as ``kind``, or None when empty."""
    return None if pd.isna(value) or str(value).strip() == "" else kind(value)


def _positions(row: pd.Series) -> tuple[float, ...]:
    """The row's per-position rates in position order, up to the first empty cell."""
    columns = sorted((c for c in row.index if c.startswith(POSITION_PREFIX)),
                     key=lambda c: int(c.removeprefix(POSITION_PREFIX)))
    values = [row[c] for c in columns]
    filled = [float(v) for v in values[:next((i for i, v in enumerate(values) if pd.isna(v)), len(values))]]
    return tuple(filled)


def _pair(row: pd.Series) -> Pair:
    """A validated :class:`Pair`; :class:`InputError` naming the row and the broken field otherwise."""
    name = str(row["name"])
    missing = [c for c in REQUIRED if _optional(row.get(c)) is None]
    if missing:
        raise InputError(f"{TABLE} row {name!r}: empty {', '.join(missing)} (every row names its source and settings)")
    for column, allowed in (("draft_method", DRAFT_METHODS), ("method", METHODS), ("benchmark", BENCHMARKS),
                            ("tag", TAGS)):
        if row[column] not in allowed:
            raise InputError(f"{TABLE} row {name!r}: {column} {row[column]!r} is not one of {', '.join(allowed)}")
    pair = Pair(name=name, draft_method=row["draft_method"], target=row["target"], draft=row["draft"],
                target_shape=_optional(row.get("target_shape")), draft_shape=_optional(row.get("draft_shape")),
                method=row["method"], num_spec_tokens=int(row["num_spec_tokens"]),
                tree_topk=_optional(row.get("tree_topk"), int), tree_budget=_optional(row.get("tree_budget"), int),
                temperature=_optional(row.get("temperature"), float), benchmark=row["benchmark"],
                engine=row["engine"], tau=float(row["mean_acceptance_length"]), positions=_positions(row),
                source=row["source"], url=row["url"])
    _check_numbers(pair)
    return pair


def _check_numbers(pair: Pair) -> None:
    """num_spec_tokens >= 1, 1 <= tau <= num_spec_tokens + 1, rates in [0, 1] and non-increasing, tau = 1 + their
    sum (rounded)."""
    problem = None
    n = pair.num_spec_tokens
    if n < 1 or not 1.0 <= pair.tau <= n + 1:
        problem = f"tau {pair.tau:g} outside [1, {n + 1}] for num_spec_tokens {n}"
    elif pair.temperature is not None and not 0.0 <= pair.temperature <= 2.0:
        problem = f"temperature {pair.temperature:g} outside [0, 2]"
    elif pair.positions and (len(pair.positions) > n or np.any(np.diff((1.0, *pair.positions)) > 0)
                             or min(pair.positions) < 0):
        problem = f"per-position rates {list(pair.positions)} are not non-increasing values in [0, 1], one per depth"
    elif pair.positions and abs(1.0 + sum(pair.positions) - pair.tau) > TAU_ROUNDING:
        problem = f"tau {pair.tau:g} differs from 1 + the per-position rates ({1 + sum(pair.positions):.4f})"
    if problem:
        raise InputError(f"{TABLE} row {pair.name!r}: {problem}")


def table_path() -> Path:
    """The table's path (source tree first, then the wheel's copy)."""
    for path in LOCATIONS:
        if path.is_file():
            return path
    raise InputError(f"{TABLE} is missing (looked in {', '.join(str(p.parent) for p in LOCATIONS)}); reinstall sdlaws")


def load_pairs(path: Path | None = None) -> dict[str, Pair]:
    """Every row of the table, validated, by name."""
    frame = pd.read_csv(path or table_path())
    if frame["name"].duplicated().any():
        raise InputError(f"{TABLE}: duplicate names {sorted(frame.loc[frame['name'].duplicated(), 'name'])}")
    return {row["name"]: _pair(row) for _, row in frame.iterrows()}


def lookup(name: str) -> Pair:
    """The row called ``name``; :class:`ConfigError` listing the known names otherwise."""
    pairs = load_pairs()
    if name not in pairs:
        raise ConfigError(f"unknown pair {name!r}; known pairs: {', '.join(pairs)} ({TABLE})")
    return pairs[name]


def acceptance(pair: Pair) -> ServingAcceptance:
    """The row as the serving plan's acceptance model (see the module docstring)."""
    return ServingAcceptance(alpha=pair.alpha, position_rates=pair.conditional_rates(),
                             ci_kind=f"no interval (published point estimate of pair {pair.name})",
                             source=pair.describe())
