"""What the sections of the results document share: interval settings, the measurement files a section reads,
fit summaries and markdown formatting.

``sdlaws experiment report`` (:mod:`sdlaws.experiments.report`) loads every file the registry's sections declare
(:class:`~sdlaws.experiments.registry.Section`), runs each section's ``analyse`` on them and writes the numbers to
``report.json``; each section's ``render`` then turns its part of ``report.json`` back into markdown, so every
number of the document is one of the report's numbers.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from sdlaws import io, rates
from sdlaws.errors import InputError
from sdlaws.formatting import sig as f  # the documents' number format, short because every template uses it
from sdlaws.plan.cost import short_name

#: 1 - coverage of every interval (95%), and the significance level of every test.
ALPHA = 0.05
#: Bootstrap resamples and seed of every bootstrap interval.
N_BOOT = 1000
SEED = 0


@dataclass
class Analysis:
    """What a section's ``analyse`` computed: its numbers (plain JSON, its entry of ``report.json``), the fits to
    save and plot, and other figures to draw."""

    data: dict[str, Any]
    fits: dict[str, tuple[Any, str | None]] = field(default_factory=dict)   # file stem -> (fit or {g: fit}, group)
    plots: dict[str, tuple[dict, dict]] = field(default_factory=dict)       # file stem -> ({label: fit}, {label: rows})
    figures: dict[str, Callable[[Path], Path]] = field(default_factory=dict)  # file name -> draws it at that path


@dataclass(frozen=True)
class Doc:
    """What every section's markdown needs from the document: the intervals' coverage and the figures' folder."""

    level: float
    figures: str

    def fig(self, name: str) -> str:
        """Markdown image link to a figure of the report."""
        return f"![{name}]({self.figures}/{name})"

    @property
    def pct(self) -> str:
        """Coverage of the intervals, e.g. ``95%``."""
        return f"{f(100 * self.level)}%"


class Tables(dict):
    """Loaded measurement files by key (DataFrames, JSON dicts, :class:`~sdlaws.hardware.Hardware`), with the kind
    each was read as and the SHA-256 of every file (the report's provenance)."""

    def __init__(self, values: dict[str, Any], kinds: dict[str, str], hashes: dict[str, str]):
        super().__init__(values)
        self.kinds, self.hashes, self._cache = kinds, hashes, {}

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per set of tables (sections that share an expensive fit ask for it by key)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def of_kind(self, kind: str) -> list[Any]:
        """Every table read as ``kind`` (e.g. all ``spec`` tables, for what was measured overall)."""
        return [value for key, value in self.items() if self.kinds[key] == kind]


def load_tables(root: str | Path, files: dict[str, tuple[str, str]], *, optional=frozenset()) -> Tables:
    """Read ``files`` (key -> (path or glob under ``root``, kind)); kinds ``spec`` (ok rows with their rates,
    :func:`sdlaws.rates.derive`), ``spec-all`` (every row, failed ones too, with their rates), ``ppl`` and ``step``
    (ok rows), ``json`` (``.json`` or ``.json.gz``) and
    ``hardware`` (a measured GPU profile). Keys in ``optional`` whose path matches no file are left out."""
    from sdlaws.hardware import load_hardware

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such measurements directory; pass --measurements DIR (e.g. measurements)")
    values, kinds, hashes = {}, {}, {}
    for key, (rel, kind) in files.items():
        if key in optional and not glob.glob(str(root / rel)):
            continue
        paths = io.expand_paths([root / rel])
        hashes.update({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths})
        kinds[key] = kind
        if kind == "hardware":
            values[key] = load_hardware(paths[0])
        elif kind == "json":
            opener = gzip.open if paths[0].suffix == ".gz" else open
            with opener(paths[0], "rt") as fh:
                values[key] = json.load(fh)
        elif kind == "spec-all":   # every row, failed ones too (a held-out file: what did not run is reported)
            values[key] = rates.derive(io.read_measurements(paths, table="spec"))
        else:
            df = io.read_measurements(paths, table=kind, ok_only=True)
            values[key] = rates.derive(df) if kind == "spec" else df
    return Tables(values, kinds, hashes)


# ---------------------------------------------------------------------------------------------------- numbers

def num(value: Any) -> float | None:
    """Plain float, None for NaN/None."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def fit_summary(fit, boot=None) -> dict[str, Any]:
    """Coefficients, standard errors, t intervals (and bootstrap intervals of ``boot``), fit statistics, notes."""
    ci = fit.conf_int(ALPHA)
    out = {"law": fit.law, "y": fit.y, "x": list(fit.x), "nobs": fit.nobs, "method": fit.method,
           "weight": fit.meta.get("weight"), "params": {k: num(v) for k, v in fit.params.items()},
           "se": {k: num(v) for k, v in zip(fit.params.index, np.sqrt(np.diag(fit.cov.to_numpy())))},
           "ci": {k: [num(ci.loc[k, "lower"]), num(ci.loc[k, "upper"])] for k in fit.params.index},
           "r2": num(fit.gof.get("r2")), "aic": num(fit.gof.get("aic")), "notes": fit.notes()}
    if boot is not None:
        bci = boot.conf_int(ALPHA)
        out["boot_ci"] = {k: [num(bci.loc[k, "lower"]), num(bci.loc[k, "upper"])] for k in fit.params.index}
        out["n_boot"], out["boot_unit"] = boot.meta.get("n_boot"), boot.meta.get("unit") or "row"
    return out


def interval_sign(summary: dict, param: str) -> int:
    """+1 / -1 when the t interval and the bootstrap interval of ``param`` both lie above / below 0, else 0."""
    intervals = [summary["ci"][param]] + ([summary["boot_ci"][param]] if "boot_ci" in summary else [])
    if all(lo > 0 for lo, _ in intervals):
        return 1
    if all(hi < 0 for _, hi in intervals):
        return -1
    return 0


def tkey(temperature: float) -> str:
    """JSON key of a temperature group: ``T=0``, ``T=1``."""
    return f"T={float(temperature):g}"


def setup(df: pd.DataFrame) -> dict[str, Any]:
    """Target and draft(s) of an experiment's speculative rows: short names, parameters, the grid measured."""
    spec = df[df["method"].ne("ar")]
    return {"target": short_name(spec["target_name"].iloc[0]), "target_params": float(spec["target_params"].iloc[0]),
            "drafts": sorted({short_name(n) for n in spec["draft_name"]}),
            "num_spec_tokens": sorted(int(v) for v in spec["num_spec_tokens"].unique()),
            "temperatures": sorted(float(v) for v in spec["temperature"].unique()),
            "batch_sizes": sorted(int(v) for v in df["batch_size"].unique()),
            "topks": sorted(int(v) for v in spec["tree_topk"].unique())}


# --------------------------------------------------------------------------------------------------- markdown


def ci(value: float, interval) -> str:
    """``value [lower, upper]``."""
    return f"{f(value)} [{f(interval[0])}, {f(interval[1])}]"


def tok(value: float) -> str:
    """A token or parameter count in compact form (``15.86M``)."""
    from sdlaws.train.families import format_tokens

    return format_tokens(value)


def listed(values, fmt: Callable[[Any], str] = str) -> str:
    """``a, b, c`` of formatted values."""
    return ", ".join(fmt(v) for v in values)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows], ""]


# ---------------------------------------------------------------------------------------------------- planner

#: GPU preset whose datasheet centres the step-time law's prior (the committed timings are an H100's), as
#: ``sdlaws validate --hardware h100``.
GPU = "h100"


def planner_check(tables: Tables, train: str, steps: str, rows: pd.DataFrame):
    """What ``sdlaws validate`` gives for ``rows``: acceptance profiles, their spread across prompts and the
    engine's overheads fitted on the ``train`` spec table, the step-time law on the ``steps`` table (fitted once per
    set of tables), every row predicted (:class:`~sdlaws.plan.validate.Validation`)."""
    from sdlaws.hardware import load_hardware
    from sdlaws.plan.cost import fit_steptime
    from sdlaws.plan.validate import fit_planner, predict

    planner = tables.cached(("planner", train, steps), lambda: fit_planner(
        tables[train], fit_steptime(tables[steps], load_hardware(GPU))))
    return predict(planner, rows)
