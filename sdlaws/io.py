"""Reading and writing measurement CSVs and result files (the guarantees are listed in ``docs/reliability.md``).

- **Result files** (fit JSON, plan.json, PNG figures, CSV tables, hardware profiles) are written whole or not at
  all: :func:`atomic_write` writes to a temporary file in the same directory and renames it into place after
  success. Inside :func:`output_group` the renames wait until the whole group succeeded, so a command that fails
  half-way leaves every earlier output byte-identical.
- **Measurement CSVs** are append-only and crash-safe: :func:`append_row` appends one line per row (no cell holds
  a line break) under an exclusive lock, flushed and fsync'ed, so a killed sweep loses at most the row in
  flight. A row cut short by a crash (a torn last line) is cut off before the next append
  (:func:`repair_tail`) and skipped, with a warning, by readers.
- **Reading** rejects what cannot be a measurement: duplicate column names, short rows, non-finite or
  impossible values (:func:`sdlaws.schema.validate`); rows repeating a configuration (same ``run_id``) are
  counted once, with a warning.

One module because every write path shares the same guarantees (atomic replace, locks, migration,
torn-line repair) and their helpers.
"""

from __future__ import annotations

import csv
import fcntl
import glob
import io as _io
import json
import math
import os
import tempfile
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import numpy as np
import pandas as pd

from sdlaws import schema
from sdlaws.errors import DataWarning, InputError


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand globs, each file once (a file named twice, e.g. by overlapping globs, is read once); raise
    :class:`InputError` for a path that matches nothing or is not a file."""
    out: dict[Path, Path] = {}
    for p in paths:
        hits = sorted(glob.glob(str(p))) if any(ch in str(p) for ch in "*?[") else [str(p)]
        if not hits or not Path(hits[0]).exists():
            raise InputError(f"{p}: no such file; check the path (globs like 'measurements/*.csv' are allowed)")
        for hit in map(Path, hits):
            if not hit.is_file():
                raise InputError(f"{hit}: is a directory, not a CSV file; pass the files (e.g. '{hit}/*.csv')")
            out.setdefault(hit.resolve(), hit)
    return list(out.values())


def read_csv(path: Path) -> pd.DataFrame:
    """Read one CSV as strings-or-numbers, with a one-line :class:`InputError` naming the file (and line) for an
    empty or malformed file, a repeated column name, or a row with more or fewer cells than the header.

    A torn last line (no line break at the end of the file, and too few cells, or any last line of a measurement
    CSV, whose every row ends with one) is a row that a killed writer cut short: it is left out with a
    :class:`DataWarning` (resuming the sweep cuts it off the file).
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")  # line ends as written: a torn row lacks its "\n"
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a valid CSV (not UTF-8 text); fix the file or re-run the measurement") from None
    records = _records(path, text)
    if not records:
        raise InputError(f"{path}: file is empty; it needs a header row and at least one data row")
    header = records[0][1]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{path} line 1: column name(s) {', '.join(map(repr, repeated))} appear more than once; "
                         "rename or delete the repeats")
    torn = len(records) > 1 and not text.endswith("\n") and (
        len(records[-1][1]) < len(header) or {"run_id", "status"} <= set(header))
    if torn:
        complete = text.rfind("\n") + 1
        warnings.warn(f"{path} line {records[-1][0]}: left out a torn last line ({_preview(text[complete:])}), a row "
                      "cut short by a writer that was killed; resuming the sweep repairs the file", DataWarning,
                      stacklevel=2)
        records, text = records[:-1], text[:complete]
    for line, cells in records[1:]:
        if len(cells) != len(header):
            raise InputError(f"{path}: not a valid CSV (line {line} has {len(cells)} cells, the header "
                             f"{len(header)}); fix or delete that line")
    return pd.read_csv(_io.StringIO(text), keep_default_na=True)


def csv_header(path: str | os.PathLike) -> list[str]:
    """The column names of a CSV's first line ([] for an empty file), without reading the rest."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return next(csv.reader(fh), [])


def _records(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each CSV record of ``text``; blank lines are skipped, as pandas does."""
    reader = csv.reader(_io.StringIO(text, newline=""))
    try:
        return [(reader.line_num, cells) for cells in reader if cells]
    except csv.Error as exc:
        raise InputError(f"{path}: not a valid CSV (line {reader.line_num}: {exc}); fix the file or re-run the "
                         "measurement") from None


def _line(cells: list[Any]) -> str:
    """One CSV record as a line, quoted as needed and ended by ``\\r\\n`` (the csv module's default, as in every
    measurement CSV written so far)."""
    buffer = _io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue()


def _preview(text: str, limit: int = 60) -> str:
    """``text`` quoted, shortened to ``limit`` characters, with its length when shortened."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


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
        An ``ok`` row whose ``run_id`` an earlier ``ok`` row of the same file already has (two sweeps that both
        measured it) is left out with a :class:`DataWarning`: one configuration of a sweep is one observation.
        The same configuration in two files (sessions measured apart) is kept in both.
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
        frames.append(_first_of_each_run(df))
    out = pd.concat(frames, ignore_index=True)
    if ok_only and "status" in out:
        out = out[out["status"].eq("ok")].reset_index(drop=True)
    return out


def _first_of_each_run(df: pd.DataFrame) -> pd.DataFrame:
    """One file's rows without ``ok`` rows that repeat an earlier ``ok`` row's ``run_id`` (a :class:`DataWarning`
    names them)."""
    if "run_id" not in df or "status" not in df:
        return df
    ok = df["status"].eq("ok")
    repeat = ok & df["run_id"].where(ok).duplicated()
    if not repeat.any():
        return df
    first = df[ok & ~repeat].set_index("run_id")
    row = df[repeat].iloc[0]
    earlier = first.loc[row["run_id"]]
    warnings.warn(f"{row['source_file']} line {row['source_row'] + 1}: {int(repeat.sum())} ok row(s) repeat a "
                  f"configuration of an earlier row (same run_id, e.g. {row['run_id']} first at line "
                  f"{earlier['source_row'] + 1}: two sweeps measured it); kept the first of each, so no "
                  "measurement counts twice", DataWarning, stacklevel=3)
    return df[~repeat].reset_index(drop=True)


def failed_not_rerun(rows: pd.DataFrame) -> pd.DataFrame:
    """Failed rows whose configuration (``run_id``) has no ``ok`` row among ``rows``: what did not run at all (a
    configuration that failed once and ran later, e.g. in another file, did run)."""
    failed = rows["status"].ne("ok")
    return rows[failed & ~rows["run_id"].isin(rows.loc[~failed, "run_id"])]


def append_row(path: str | os.PathLike, row: dict[str, Any], table: str = "spec") -> None:
    """Append one row to a measurement CSV (created with the schema header if absent), fsync'ed, under a lock.

    List or dict values are stored as JSON, line breaks inside text as spaces (one row is one line, which is what
    lets a torn row be recognised). A torn last line left by a killed writer is cut off first
    (:func:`repair_tail`). Keys outside the schema are rejected so that a typo cannot create a column silently.
    """
    cols = schema.columns(table)
    names = [c.name for c in cols]
    unknown = sorted(set(row) - set(names))
    if unknown:
        raise InputError(f"{path}: unknown column(s) {unknown} for table {table!r}; see sdlaws.schema")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path) as fh:
        _cut_torn_tail(fh, path)
        header = _header(fh)
        if header is None:
            header = names
            fh.write(_line(header).encode())
        elif _check_header(path, header, cols, row, table):
            return _migrate(path, fh, cols, row)
        fh.write(_line([_cell(row.get(name)) for name in header]).encode())
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def _locked(path: Path) -> Iterator[IO[bytes]]:
    """``path`` opened for appending (binary, created if absent) under an exclusive ``flock``.

    The lock is the file's own (no lock file), held by the open file: the kernel releases it when the process
    dies, so a killed writer never blocks the next one.
    """
    while True:
        with open(path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            if os.path.exists(path) and os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                yield fh
                return
        # the file was replaced (migrated to a newer header) while we waited: lock the new one


def _header(fh: IO[bytes]) -> list[str] | None:
    """The header of an open CSV (None when the file is empty)."""
    fh.seek(0)
    first = fh.readline().decode("utf-8")
    return next(csv.reader([first]), None) if first.strip() else None


def repair_tail(path: str | os.PathLike) -> bool:
    """Cut a torn last line off a measurement CSV (under its lock); True when something was cut.

    A warning names what was dropped. A missing file is left alone.
    """
    path = Path(path)
    if not path.is_file():
        return False
    with _locked(path) as fh:
        return _cut_torn_tail(fh, path)


def _cut_torn_tail(fh: IO[bytes], path: Path) -> bool:
    """Truncate an open CSV back to its last complete row, with a :class:`DataWarning` naming what was dropped.

    Incomplete: bytes after the last line break (a write cut short), and a last line with another number of
    cells than the header (a torn row that something was appended to).
    """
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return False
    start = _line_start(fh, size)
    fh.seek(start)
    last = fh.read().decode("utf-8", errors="replace")
    cut = start if not last.endswith("\n") else None
    if cut is None and start > 0:
        header = _header(fh) or []
        if len(next(csv.reader([last]), [])) != len(header):
            cut = start
    if cut is None:
        return False
    fh.truncate(cut)
    fh.flush()
    os.fsync(fh.fileno())
    dropped = _preview(last.rstrip("\r\n"))
    warnings.warn(f"{path}: cut off a torn last line ({dropped}), a row cut short by a "
                  "writer that was killed; its configuration counts as not measured", DataWarning, stacklevel=3)
    return True


def _line_start(fh: IO[bytes], size: int, chunk: int = 1 << 16) -> int:
    """Offset where the last line of an open file starts (the line break ending the file is part of that line)."""
    end = size - 1  # a final "\n" ends the last line; search for the one before it
    while end > 0:
        begin = max(0, end - chunk)
        fh.seek(begin)
        found = fh.read(end - begin).rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0


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


def _migrate(path: Path, fh: IO[bytes], cols: list[schema.Column], row: dict[str, Any]) -> None:
    """Rewrite the open, locked CSV ``path`` under the full schema header (earlier rows get the new columns'
    defaults) plus ``row``, into a temporary file that replaces it only once complete: a crash leaves the old
    file whole. Writers waiting on the old file's lock notice the replacement (:func:`_locked`)."""
    fh.seek(0)
    rows = list(csv.DictReader(_io.StringIO(fh.read().decode("utf-8"), newline="")))
    names = [c.name for c in cols]
    with atomic_write(path, "wb") as out:
        out.write(_line(names).encode())
        for r in rows:
            out.write(_line([r[c.name] if c.name in r else c.default for c in cols]).encode())
        out.write(_line([_cell(row.get(name)) for name in names]).encode())


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    if isinstance(value, str):
        return " ".join(value.splitlines())
    return value


def check_appendable(path: str | os.PathLike, table: str) -> None:
    """:class:`InputError` unless rows of ``table`` can be appended to ``path``: it is absent, empty, or a CSV
    whose header is that table's (checked before a sweep, so that a wrong file fails before any measurement)."""
    path = Path(path)
    header = csv_header(path) if path.is_file() else []
    if header:
        if not {"run_id", "status"} <= set(header):
            raise InputError(f"{path}: not an sdlaws measurement CSV (no run_id/status column); choose another --out")
        _check_header(path, header, schema.columns(table), {}, table)


def run_status(path: str | os.PathLike) -> pd.DataFrame:
    """``run_id`` and ``status`` of every row of a measurement CSV (no rows if the file does not exist).

    Raises :class:`InputError` for a file that is not an sdlaws measurement CSV.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({"run_id": pd.Series(dtype=str), "status": pd.Series(dtype=str)})
    df = read_csv(path)
    if "run_id" not in df or "status" not in df:
        raise InputError(f"{path}: not an sdlaws measurement CSV (no run_id/status column); choose another --out")
    return df[["run_id", "status"]].astype(str)


def done_run_ids(path: str | os.PathLike) -> set[str]:
    """``run_id`` of the ``ok`` rows already in ``path`` (empty if the file does not exist): the resume set."""
    df = run_status(path)
    return set(df.loc[df["status"].eq("ok"), "run_id"])


# ------------------------------------------------------------------------------------------ atomic outputs

@dataclass
class _Pending:
    """Files of an :func:`output_group` written to temporary names, and the directories made for them."""

    files: list[tuple[str, Path]] = field(default_factory=list)  # (temporary path, final path)
    made_dirs: list[Path] = field(default_factory=list)

    def install(self) -> None:
        """Rename every temporary file into place, then sync the directories so the renames are durable."""
        for tmp, final in self.files:
            os.replace(tmp, final)
        for directory in dict.fromkeys(final.parent for _, final in self.files):
            _fsync_dir(directory)

    def discard(self) -> None:
        """Delete the temporary files and the (still empty) directories made for them."""
        for tmp, _ in self.files:
            Path(tmp).unlink(missing_ok=True)
        for directory in reversed(self.made_dirs):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()


_GROUP: ContextVar[_Pending | None] = ContextVar("sdlaws_output_group", default=None)


@contextmanager
def output_group() -> Iterator[None]:
    """Install the files written with :func:`atomic_write` inside the block together, only when it succeeds.

    On an exception nothing is installed: temporary files and directories made for them are removed and earlier
    outputs stay byte-identical. A nested group joins the enclosing one.
    """
    if _GROUP.get() is not None:
        yield
        return
    pending = _Pending()
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        pending.discard()
        raise
    finally:
        _GROUP.reset(token)
    pending.install()


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; rename it to ``path`` once the block succeeds.

    The data are fsync'ed before the rename, and the file gets the mode an ordinary write would give it (that of
    the file it replaces, else 0666 less the umask). Inside :func:`output_group` the rename waits for the group.
    Missing parent directories are made (and removed again if nothing gets installed in them).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; choose a file name for this output")
    group = _GROUP.get()
    pending = _Pending() if group is None else group
    pending.made_dirs += _make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if group is None:
            pending.discard()
        raise
    pending.files.append((tmp, path))
    if group is None:
        pending.install()


def _make_dirs(directory: Path) -> list[Path]:
    """Make ``directory`` and missing parents; return those made, outermost first."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()][::-1]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{directory}: cannot create this directory ({exc.strerror}); choose another output "
                         "path") from None
    return missing


def _file_mode(path: Path) -> int:
    """Permission bits for a new output: those of the file it replaces, else 0666 less the umask."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so that renames in it survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure in the format its suffix names (PNG, SVG), atomically (:func:`atomic_write`);
    returns the path. Resolution and style come from the figure's rc parameters (the sdlaws style sheet)."""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip(".").lower() or "png")
    return path


def save_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`); returns the path."""
    path = Path(path)
    with atomic_write(path) as fh:
        fh.write(text)
    return path


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj.to_dict()`` (or a plain dict) as indented JSON, atomically (:func:`atomic_write`); returns the
    path."""
    return save_text(json_text(obj), path)


def json_text(obj: Any) -> str:
    """The text :func:`save_json` writes: ``obj.to_dict()`` (or a plain dict) as indented JSON."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    return json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n"


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON file with a one-line error when it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: is a directory; expected a JSON file")
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
