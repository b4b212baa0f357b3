"""``sdlaws experiment report``: the results document, assembled from the sections of the experiment registry.

Each section (:class:`~sdlaws.experiments.registry.Section`, defined beside its experiment) declares the
measurement files it reads, analyses them and renders its part of the document. :func:`write_report` loads the
files once, runs every analysis, saves the fits and figures and ``report.json``, and renders ``results.md`` from
``report.json`` alone (:func:`render_markdown`), so every number in it is one of the report's numbers. Everything
runs on CPU without torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sdlaws import __version__, io
from sdlaws.errors import InputError
from sdlaws.experiments.registry import Section, report_sections
from sdlaws.experiments.reporting import ALPHA, N_BOOT, SEED, Analysis, Doc, listed, load_tables, table

REPORT_FORMAT = "sdlaws-report/2"
TITLE = "# Results: the speculative-decoding scaling laws at small scale"


def build_report(measurements: str | Path) -> tuple[dict[str, Any], dict[str, Analysis]]:
    """Every section's analysis of the measurements directory (nothing is written): ``report.json``'s contents
    and the analyses (with their fits and figures)."""
    sections = report_sections()
    optional = {key for s in sections for key in s.optional_keys}
    tables = load_tables(measurements, _files(sections), optional=optional)
    analyses = {s.key: s.analyse(tables) for s in sections}
    data = {"format": REPORT_FORMAT, "sdlaws_version": __version__, "inputs": tables.hashes,
            "settings": {"level": 1 - ALPHA, "n_boot": N_BOOT, "seed": SEED},
            **{key: a.data for key, a in analyses.items()}}
    return io.plain(data), analyses


def _files(sections: list[Section]) -> dict[str, tuple[str, str]]:
    """The files of every section, each key read once (two sections naming one key must mean the same file)."""
    files: dict[str, tuple[str, str]] = {}
    for section in sections:
        for key, spec in section.files.items():
            if files.setdefault(key, spec) != spec:
                raise InputError(f"sections disagree on measurement file {key!r}: {files[key]} and {spec}")
    return files


def write_report(measurements: str | Path, out: str | Path, *, markdown: str | Path | None = None) -> dict[str, Any]:
    """Build the report and write it: fit JSON, figures and ``report.json`` under ``out``, and the markdown
    (default ``<out>.md``, e.g. ``docs/results.md`` for ``docs/results``) rendered from ``report.json``.

    Returns
    -------
    dict
        The contents of ``report.json``.
    """
    out = Path(out)
    data, analyses = build_report(measurements)
    markdown = Path(markdown) if markdown is not None else out.with_suffix(".md")
    with io.output_group():  # the fits, figures, JSON and markdown replace the previous ones together
        data["files"] = sorted(p.name for a in analyses.values() for p in _write(a, out))
        data["figures_link"] = Path(os.path.relpath(out.resolve(), markdown.parent.resolve())).as_posix()
        text = io.json_text(data)
        io.save_text(text, out / "report.json")
        io.save_text(render_markdown(json.loads(text)), markdown)  # rendered from the JSON, as a reader sees it
    return data


def _write(analysis: Analysis, out: Path) -> list[Path]:
    """Save a section's fits (fit JSON, grouped fit JSON, calibration JSON), fit plots and other figures."""
    from sdlaws.fit import save_fits
    from sdlaws.plotting import plot_fits

    written = [save_fits(fit, group, out / f"{stem}.json") if isinstance(fit, dict) else
               io.save_json(fit, out / f"{stem}.json") for stem, (fit, group) in analysis.fits.items()]
    written += [plot_fits(fits, rows, out / f"{stem}.png", alpha=ALPHA)
                for stem, (fits, rows) in analysis.plots.items()]
    return written + [draw(out / name) for name, draw in analysis.figures.items()]


def render_markdown(d: dict[str, Any]) -> str:
    """``results.md`` from the contents of ``report.json`` (nothing else: every number is one of the report's)."""
    doc = Doc(level=d["settings"]["level"], figures=d["figures_link"])
    sections = report_sections()
    lines = [*_md_header(d, doc), "## Summary", "",
             *table(["law or check", "verdict", "headline"], [row for s in sections for row in s.summary(d[s.key])])]
    lines += [line for s in sections for line in s.render(d[s.key], doc)]
    return "\n".join(lines).rstrip() + "\n"


def summary(d: dict[str, Any]) -> str:
    """Headline lines of the report (the summary table as text), for the command line."""
    return "\n".join(" | ".join(cell for cell in row if cell) for s in report_sections() for row in s.summary(d[s.key]))


def _md_header(d: dict, doc: Doc) -> list[str]:
    """Title and provenance: command, version, device, dates, interval conventions."""
    s = d["scope"]
    return [TITLE, "",
            "Generated by `sdlaws experiment report --measurements measurements --out docs/results` from the "
            f"committed measurements (sdlaws {d['sdlaws_version']}); do not edit by hand. Measured on "
            f"{listed(s['gpu_name'])} ({listed(s['dtype'])}) on {listed(s['dates'])} by sdlaws git "
            f"{listed(s['measurement_git_sha'])}. Intervals are {doc.pct}: t intervals of the fits, and seeded "
            f"bootstrap percentile intervals (\"boot\", {d['settings']['n_boot']} resamples, seed "
            f"{d['settings']['seed']}). Fit JSON (loadable with `sdlaws.fit.load_fit`), figures and `report.json` "
            f"with every number are in `{doc.figures}/`; `report.json` also holds the SHA-256 of every input file.",
            ""]
