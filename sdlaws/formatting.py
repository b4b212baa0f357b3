"""Numbers as text, in one place: planner tables and terminal output (:func:`fmt`), generated documents
(:func:`sig`, :func:`pct`). Torch-free, pandas-free; read by the planner, the CLI and the experiment documents."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def fmt(value: Any) -> str:
    """Short human format: integers and 100..1e5 without decimals, others with 3 significant digits (``2.73e+08``);
    ``-`` for a missing value (planner tables and terminal output)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (bool, np.bool_, str)):
        return str(value)
    if isinstance(value, (int, np.integer)) or (float(value).is_integer() and abs(value) < 1e5):
        return str(int(value))
    if 100 <= abs(value) < 1e5:
        return f"{float(value):.0f}"
    return f"{float(value):.3g}"


def sig(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (``1.59e7`` style for very large or small), ``n/a`` for None,
    ``yes``/``no`` for booleans (generated documents)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    text = f"{float(value):.{digits}g}"
    return text.replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def pct(value: float | None) -> str:
    """A percentage with one decimal (``n/a`` for None)."""
    return "n/a" if value is None else f"{value:.1f}%"
