"""Acceptance profiles: the accept/reject law of synthetic-acceptance runs (``sdlaws measure --acceptance-profile``).

A profile ``q`` has one row per draft depth ``d = 1..D`` (row ``d - 1``), each a list over sibling rank
``r = 0..R-1``: ``q[d-1][r]`` is the probability that, given the path up to depth ``d - 1`` was accepted, the
target's token at depth ``d`` is the draft's rank-``r`` child (0 = the draft's most likely) of the current path
node. A row sums to at most 1 (the rest is a rejection at that depth); ranks past a row's end have probability
0. A chain uses rank 0 only.

Text forms (:func:`parse`): inline rows ``"0.8,0.1;0.7,0.1;0.6"`` (rows separated by ``;``), or a JSON file
holding the list of rows, or ``{"profile": rows, "source": "..."}`` (``source`` is a free-text note).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sdlaws.errors import ConfigError

#: ``q[d-1][r]``: one tuple per depth, one probability per sibling rank (hashable, so configs can hold it).
Profile = tuple[tuple[float, ...], ...]

#: Slack on a row sum for profiles written with rounded decimals or derived from float counts.
ROW_SUM_TOLERANCE = 1e-9


def normalize(rows: Any) -> Profile:
    """``rows`` (nested sequences of numbers) as a :data:`Profile`; :class:`ConfigError` (one line) if invalid.

    Valid: at least one row; every value a finite number in [0, 1]; every row sum <= 1 (+ 1e-9).
    """
    if isinstance(rows, (str, bytes)) or not _is_sequence(rows) or not rows:
        raise ConfigError(f"acceptance profile must be a non-empty list of rows (one per depth), got {rows!r}")
    profile = tuple(_row(row, depth) for depth, row in enumerate(rows, start=1))
    for depth, row in enumerate(profile, start=1):
        if sum(row) > 1 + ROW_SUM_TOLERANCE:
            raise ConfigError(f"acceptance profile row {depth} sums to {sum(row):g} > 1; a row holds the "
                              "probabilities of disjoint outcomes (accept rank 0, rank 1, ...)")
    return profile


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _row(row: Any, depth: int) -> tuple[float, ...]:
    """One row as floats in [0, 1]."""
    if not _is_sequence(row) or any(isinstance(v, (bool, str)) or not isinstance(v, (int, float)) for v in row):
        raise ConfigError(f"acceptance profile row {depth} must be a list of numbers, got {row!r}")
    values = tuple(float(v) for v in row)
    if any(not (math.isfinite(v) and 0 <= v <= 1) for v in values):
        raise ConfigError(f"acceptance profile row {depth} has a value outside [0, 1]: {list(values)}")
    return values


def check_depth(profile: Profile, depth: int) -> None:
    """:class:`ConfigError` unless ``profile`` has a row for every depth ``1..depth``."""
    if len(profile) < depth:
        raise ConfigError(f"acceptance profile has {len(profile)} row(s) but the draft is {depth} deep; "
                          "give one row per depth")


def parse(text: str) -> Profile:
    """A profile from a JSON file path or inline rows ``"0.8,0.1;0.7"``; :class:`ConfigError` (one line) if bad."""
    path = Path(text)
    if path.is_file():
        return normalize(_rows_of_json(path))
    try:
        rows = [[float(v) for v in row.split(",") if v.strip()] for row in text.split(";")]
    except ValueError:
        raise ConfigError(f"acceptance profile {text!r} is neither a JSON file nor rows like '0.8,0.1;0.7,0.1;0.6' "
                          "(ranks separated by ',', depths by ';')") from None
    return normalize(rows)


def _rows_of_json(path: Path) -> Any:
    """The rows of a profile JSON file: the document itself, or its ``profile`` key."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); expected [[0.8, 0.1], [0.7]] or "
                          '{"profile": [[0.8, 0.1], [0.7]]}') from None
    if isinstance(data, dict):
        if "profile" not in data:
            raise ConfigError(f"{path}: a JSON object needs a 'profile' key holding the rows")
        return data["profile"]
    return data


def to_json(profile: Profile) -> str:
    """Compact JSON of the rows (``[[0.8,0.1],[0.7]]``): the ``acceptance_profile`` CSV cell and run-id key."""
    return json.dumps([list(row) for row in profile], separators=(",", ":"))
