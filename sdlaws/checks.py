"""Checks of command-line values that the commands share, run before any work starts.

Each failure is one :class:`~sdlaws.errors.ConfigError` line naming the option, the value and what is accepted
(a range, or a file or directory of the right kind), e.g. ``--bootstrap -5 is out of range; expected an integer
in [0, 100000]``.
"""

from __future__ import annotations

import math
import os
from numbers import Real
from pathlib import Path
from typing import Iterable

from sdlaws.errors import ConfigError


def number(option: str, value, lo: float, hi: float, *, integer: bool = False, note: str = "") -> None:
    """:class:`ConfigError` unless ``value`` is a finite number (an integer if ``integer``) in ``[lo, hi]``."""
    numeric = isinstance(value, Real) and not isinstance(value, bool)
    whole = numeric and math.isfinite(value) and float(value).is_integer()
    if not numeric or not math.isfinite(value) or (integer and not whole) or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{option} {_show(value)} is out of range; expected {kind} in [{_show(lo)}, {_show(hi)}]"
                          + (f" ({note})" if note else ""))


def numbers(option: str, values: Iterable, lo: float, hi: float, *, integer: bool = False, note: str = "") -> None:
    """:func:`number` for every value of a list option; an empty list is refused too."""
    values = list(values)
    if not values:
        raise ConfigError(f"{option} is empty; give at least one value")
    for value in values:
        number(option, value, lo, hi, integer=integer, note=note)


def _show(value) -> str:
    """A number as the user would type it: integers without a decimal point, others in %g."""
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value):
        exact = isinstance(value, int) or float(value).is_integer()
        return str(int(value)) if exact and abs(value) < 1e16 else f"{value:.3g}"
    return repr(value) if isinstance(value, str) else str(value)


def input_file(option: str, path: str | os.PathLike) -> Path:
    """``path`` if it is an existing regular file, else :class:`ConfigError`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; expected a file")
    if not path.is_file():
        raise ConfigError(f"{option} {path}: no such file")
    return path


def input_dir(option: str, path: str | os.PathLike) -> Path:
    """``path`` if it is an existing directory, else :class:`ConfigError`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file; expected a directory")
    if not path.is_dir():
        raise ConfigError(f"{option} {path}: no such directory")
    return path


def output_dir(option: str, path: str | os.PathLike) -> Path:
    """``path`` if it is a directory or can be made one (its nearest existing parent is a writable directory)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file; expected a directory (it is created if missing)")
    _writable(option, path)
    return path


def output_file(option: str, path: str | os.PathLike) -> Path:
    """``path`` if it names a file that can be written: not a directory, in a writable (or creatable) directory."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; expected a file name")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{option} {path}: is not a regular file")
    _writable(option, path.parent)
    return path


def _writable(option: str, directory: Path) -> None:
    """:class:`ConfigError` unless ``directory`` exists writable, or its nearest existing parent is a writable
    directory (so it can be made)."""
    existing = next(d for d in (directory, *directory.parents) if d.exists() or d == Path(d.anchor))
    if not existing.is_dir():
        raise ConfigError(f"{option}: cannot create {directory}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}: cannot write to {existing} (permission denied or read-only); choose another "
                          "place")
