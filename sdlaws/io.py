"""Reading and writing measurement CSVs and result JSON.

Writes are append-only and crash-safe: one row is appended (and flushed to disk) as soon as a configuration
finishes, under an exclusive file lock, so a killed sweep loses at most the configuration in flight.
"""

from __future__ import annotations

import csv
import fcntl
import glob
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from sdlaws import schema
from sdlaws.errors import InputError


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand globs; raise :class:`InputError` for a path that matches nothing."""
    out: list[Path] = []
    for p in paths:
        hits = sorted(glob.glob(str(p))) if any(ch in str(p) for ch in "*?[") else [str(p)]
        if not hits or not Path(hits[0]).exists():
            raise InputError(f"{p}: no such file; check the path (globs like 'measurements/*.csv' are allowed)")
        out.extend(Path(h) for h in hits)
    return out


def read_csv(path: Path) -> pd.DataFrame:
    """Read one CSV as strings-or-numbers, with a one-line error for an empty or malformed file."""
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty; it needs a header row and at least one data row") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{path}: not a valid CSV ({first}); fix the file or re-run the measurement") from None
    return df


def read_measurements(paths: Iterable[str | os.PathLike] | str | os.PathLike, table: str | None = None,
                      *, ok_only: bool = False) -> pd.DataFrame:
    """Read, validate and concatenate measurement CSVs.

    Parameters
    ----------
    paths : path, glob, or list of them
    table : {"spec", "step", "ppl"}, optional
        Schema to validate against; detected from the columns when omitted.
    ok_only : bool
        Drop rows with ``status == "failed"`` (they are kept by default so nothing is lost silently).

    Returns
    -------
    DataFrame
        Validated rows with two provenance columns added: ``source_file`` and ``source_row`` (1-based data row).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames = []
    for path in expand_paths(paths):
        df = read_csv(path)
        kind = table or schema.detect_table(df)
        df = schema.validate(df, kind, source=str(path))
        df["source_file"] = str(path)
        df["source_row"] = range(1, len(df) + 1)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    if ok_only and "status" in out:
        out = out[out["status"].eq("ok")].reset_index(drop=True)
    return out


def append_row(path: str | os.PathLike, row: dict[str, Any], table: str = "spec") -> None:
    """Append one row to a measurement CSV (created with the schema header if absent), fsync'ed, under a lock.

    List or dict values are stored as JSON. Keys outside the schema are rejected so that a typo cannot create
    a column silently.
    """
    cols = schema.columns(table)
    names = [c.name for c in cols]
    unknown = sorted(set(row) - set(names))
    if unknown:
        raise InputError(f"{path}: unknown column(s) {unknown} for table {table!r}; see sdlaws.schema")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        header = next(csv.reader(fh), None)
        if header is None:
            header = names
            csv.writer(fh).writerow(header)
        elif _check_header(path, header, cols, row, table):
            return _migrate(path, fh, cols, row)
        cells = [_cell(row.get(name)) for name in header]
        fh.seek(0, os.SEEK_END)
        csv.writer(fh).writerow(cells)
        fh.flush()
        os.fsync(fh.fileno())


def _check_header(path: Path, header: list[str], cols: list[schema.Column], row: dict[str, Any], table: str) -> bool:
    """Whether the file must be migrated to the full schema header before ``row`` is added; :class:`InputError`
    when the row cannot fit the existing file at all.

    A file written before a defaulted column existed lacks it: a row whose value there is empty or the default
    loses nothing by leaving it out; for any other value the file is migrated in place first (the full schema
    header, earlier rows given the column's default), so nothing is dropped. A column without a default, or a
    column the schema does not know, means another table: write to a new file.
    """
    missing = [c for c in cols if c.name not in header]
    unknown = set(header) - {c.name for c in cols}
    if unknown or any(c.default is None for c in missing):
        raise InputError(f"{path}: header does not match the {table!r} schema; write to a new file")
    return not all(row.get(c.name) in (None, c.default) for c in missing)


def _migrate(path: Path, fh, cols: list[schema.Column], row: dict[str, Any]) -> None:
    """Rewrite the open, locked CSV ``path`` under the full schema header (earlier rows get the new columns'
    defaults) plus ``row``, into a temporary file that replaces it only once complete: a crash leaves the old
    file whole."""
    fh.seek(0)
    rows = list(csv.DictReader(fh))
    tmp = path.with_name(f".{path.name}.migrate")
    with open(tmp, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([c.name for c in cols])
        writer.writerows([r[c.name] if c.name in r else c.default for c in cols] for r in rows)
        writer.writerow([_cell(row.get(c.name)) for c in cols])
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return value


def done_run_ids(path: str | os.PathLike) -> set[str]:
    """``run_id`` of the ``ok`` rows already in ``path`` (empty if the file does not exist): the resume set."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return set()
    df = read_csv(path)
    if "run_id" not in df or "status" not in df:
        raise InputError(f"{path}: not an sdlaws measurement CSV (no run_id/status column); choose another --out")
    return set(df.loc[df["status"].astype(str).eq("ok"), "run_id"].astype(str))


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj.to_dict()`` (or a plain dict) as indented JSON; returns the path."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return path


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON file with a one-line error when it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def plain(value: Any) -> Any:
    """``value`` with numpy/pandas values turned into plain, JSON-safe Python (non-finite floats -> None).

    Dicts and lists are converted recursively; a DataFrame becomes a list of row dicts.
    """
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return [plain(r) for r in value.to_dict(orient="records")]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
