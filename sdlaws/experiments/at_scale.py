"""Sections that report one experiment on two datasets: the at-scale run as the primary result, the small-budget
runs below it.

The acceptance laws were first measured by the ``h100`` suite (``measurements/acceptance/``): models whose cosine
schedules the suite's time budget cut short. ``--scale h200-science`` measures Thm 1.1 and the SDSL plane where the
laws are stated (finished WSD runs, two training seeds, targets trained to a ratio of tokens per parameter;
docs/experiments.md), one experiment per command, committed as the command writes them::

    sdlaws experiment run NAME --scale h200-science --out measurements/h200/science/NAME.csv
    -> NAME.csv, NAME-ppl.csv, NAME-run.json, NAME-corpus-manifest.json (the manifest may be gzipped)

A section built on :func:`analyse` reports the at-scale run once its CSV is there: its numbers are the section's
entry of ``report.json`` (so its verdict is the summary's), with the run's facts under ``dataset`` and the
small-budget analysis under ``small_budget``; its fit and figure files are prefixed :data:`PREFIX`. Without it
the section is the small-budget analysis alone, exactly as before the at-scale run existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from sdlaws.errors import InputError
from sdlaws.experiments import verdicts
from sdlaws.experiments.context import Layout
from sdlaws.experiments.multiway import model_seed
from sdlaws.experiments.reporting import Analysis, Doc, f, listed, tok

#: Where the at-scale runs are committed, under the measurements directory.
DIRECTORY = "h200/science"
#: Prefix of the at-scale run's fit and figure files (the small-budget ones keep their names).
PREFIX = "at_scale_"
#: Keys of a section's entry of ``report.json``: the small-budget analysis (inside the at-scale one), and a run's
#: facts (schedule, seeds, targets, corpus).
SMALL_BUDGET, DATASET = "small_budget", "dataset"


@dataclass(frozen=True)
class Runs:
    """A section's two datasets: table keys by role (``spec``, ``run``, and ``ppl`` / ``manifest`` where there
    are) of the at-scale run and of the small-budget runs, and the section's files (key -> (path, kind))."""

    at_scale: dict[str, str]
    small_budget: dict[str, str]
    files: dict[str, tuple[str, str]]

    def source(self, keys: dict[str, str]) -> str:
        """Path of a dataset's spec CSV under the measurements directory."""
        return self.files[keys["spec"]][0]


@dataclass(frozen=True)
class Place:
    """Where a dataset's part of a section sits: the level of its headings and the prefix of its figures."""

    level: int = 2
    prefix: str = ""

    def heading(self, text: str, depth: int = 0) -> str:
        """A markdown heading ``depth`` levels below the part's own."""
        return f"{'#' * (self.level + depth)} {text}"

    def fig(self, doc: Doc, name: str) -> str:
        """The image link of one of the part's figures."""
        return doc.fig(f"{self.prefix}{name}")


def keys(table: str) -> dict[str, str]:
    """Table keys of the at-scale files of the section whose small-budget spec table is ``table``."""
    return {"spec": f"{table}_at_scale", **{role: f"{table}_at_scale_{role}" for role in ("ppl", "run", "manifest")}}


def files(experiment: str, at_scale: dict[str, str]) -> dict[str, tuple[str, str]]:
    """The files ``sdlaws experiment run EXPERIMENT --out measurements/h200/science/EXPERIMENT.csv`` writes, by
    table key (names from the runner's layout; the manifest also gzipped)."""
    layout = Layout.for_single(experiment, Path(DIRECTORY) / f"{experiment}.csv")
    paths = {"spec": (layout.spec(experiment), "spec"), "ppl": (layout.file("ppl.csv"), "ppl"),
             "run": (layout.file("run.json"), "json"), "manifest": (f"{layout.file('corpus-manifest.json')}*", "json")}
    return {at_scale[role]: (Path(path).as_posix(), kind) for role, (path, kind) in paths.items()}


# ---------------------------------------------------------------------------------------------------- analysis

def analyse(tables, runs: Runs, analyse_run: Callable[[Any, dict[str, str]], Analysis],
            resampled: Callable[[dict], bool]) -> Analysis:
    """``analyse_run`` of the small-budget runs alone, or, when the at-scale CSV is there, of the at-scale run
    with the facts of both runs (``resampled(data)``: whether every bootstrap of an analysis resamples seeds)."""
    small = analyse_run(tables, runs.small_budget)
    if runs.at_scale["spec"] not in tables:
        return small
    missing = [runs.files[runs.at_scale[role]][0] for role in ("run", "ppl") if runs.at_scale[role] not in tables]
    if missing:
        raise InputError(f"{', '.join(missing)}: missing beside {runs.source(runs.at_scale)}; commit every file the "
                         "at-scale run wrote")
    primary = analyse_run(tables, runs.at_scale)
    facts = {**dataset(tables, runs, runs.at_scale), "seed_noise": bool(resampled(primary.data))}
    data = {**primary.data, DATASET: facts,
            SMALL_BUDGET: {**small.data, DATASET: dataset(tables, runs, runs.small_budget)}}
    return Analysis(data, fits={**small.fits, **_prefixed(primary.fits)},
                    plots={**small.plots, **_prefixed(primary.plots)},
                    figures={**small.figures, **_prefixed(primary.figures)})


def _prefixed(items: dict[str, Any]) -> dict[str, Any]:
    """Fit or figure files renamed with :data:`PREFIX`."""
    return {f"{PREFIX}{name}": value for name, value in items.items()}


def dataset(tables, runs: Runs, keys_: dict[str, str]) -> dict[str, Any]:
    """Facts of one dataset: where it is, its scale, schedule and seeds, its targets' tokens per parameter, and
    the corpus (train tokens per source type, epochs seen) where its run records them."""
    rows = tables[keys_["spec"]]
    rows = rows[rows["method"].ne("ar")]
    run = tables[keys_["run"]]
    stopped = any(checkpoints[-1].get("stopped_early") for checkpoints in _checkpoints(run, rows))
    schedule = run["scale"].get("schedule", "cosine")
    targets = rows.drop_duplicates("target_name")
    per_param = targets["target_pretrain_tokens"] / targets["target_params"]
    return {"source": runs.source(keys_), "experiment": run["experiments"][0], "scale": run["scale"]["name"],
            "budget_s": run.get("budget_s"), "schedule": schedule, "stopped_early": stopped,
            "label": verdicts.schedule_label(schedule, stopped),
            "seeds": sorted({model_seed(name) for name in rows["draft_name"]}),
            "target_seeds": sorted({model_seed(name) for name in targets["target_name"]}), "num_targets": len(targets),
            "target_tokens": [float(targets["target_pretrain_tokens"].min()),
                              float(targets["target_pretrain_tokens"].max())],
            "target_tokens_per_param": [float(per_param.min()), float(per_param.max())],
            "corpus": corpus(tables.get(keys_.get("manifest")) or run.get("corpus") or {}, rows)}


def _checkpoints(run: dict, rows: pd.DataFrame) -> list[list[dict]]:
    """The training records (``run.json``) of every sdlaws-trained model of ``rows``."""
    names = {Path(str(n)).parent.name for column in ("draft_name", "target_name") for n in rows[column]}
    recorded = run.get("train", {}).get("checkpoints", {})
    return [recorded[name] for name in sorted(names) if recorded.get(name)]


def corpus(manifest: dict, rows: pd.DataFrame) -> dict[str, Any] | None:
    """Train tokens per source type (a corpus manifest, or the run's copy of it without its file list) and the
    epochs over the train split that the drafts and the targets of ``rows`` saw; None without the counts."""
    sources = manifest.get("source_types")
    train = manifest.get("splits", {}).get("train", {}).get("num_tokens")
    if not sources or not train:
        return None
    return {"train_tokens": float(train),
            "train_tokens_by_source": {kind: float(split.get("train", {}).get("num_tokens", 0))
                                       for kind, split in sources.items()},
            "epochs": {role: float(rows[f"{role}_pretrain_tokens"].max()) / train for role in ("draft", "target")}}


# ---------------------------------------------------------------------------------------------------- markdown

def render(d: dict, doc: Doc, title: str, body: Callable[[dict, Doc, Place], list[str]]) -> list[str]:
    """A section's markdown: ``body`` of its entry under ``## title``, and below the at-scale run, when there
    is one, the small-budget runs under their own heading."""
    lines = [f"## {title} ({d['verdict']})", ""]
    if SMALL_BUDGET not in d:
        return lines + body(d, doc, Place())
    small = d[SMALL_BUDGET]
    return [*lines, *_md_at_scale(d[DATASET]), "", *body(d, doc, Place(prefix=PREFIX)),
            Place(level=3).heading(f"Small-budget runs: {small[DATASET]['label']} ({small['verdict']})"), "",
            *_md_small_budget(small[DATASET], d["verdict"], small["verdict"]), "", *body(small, doc, Place(level=3))]


def summary(d: dict, rows: list[list[str]]) -> list[list[str]]:
    """A section's summary rows (of its primary dataset), naming the at-scale run and the small-budget verdict."""
    if SMALL_BUDGET not in d:
        return rows
    note = f", at scale `{d[DATASET]['scale']}`; small-budget runs: {d[SMALL_BUDGET]['verdict']}"
    return [[law, verdict, headline + note] for law, verdict, headline in rows]


def _md_seeds(facts: dict) -> str:
    """The training seeds, the targets' named apart where they differ from the drafts' (e.g. one target seed: the
    seed noise that the intervals carry is then the drafts')."""
    text = f"training seeds {listed(facts['seeds'])}"
    if facts["target_seeds"] == facts["seeds"]:
        return text
    return f"{text} for the drafts, {listed(facts['target_seeds'])} for the target{'s' * (facts['num_targets'] > 1)}"


def _md_at_scale(facts: dict) -> list[str]:
    """What the at-scale run is: command, files, schedule, seeds, targets, corpus and epochs, seed noise."""
    low, high = facts["target_tokens"]
    lines = [f"At scale: `sdlaws experiment run {facts['experiment']} --scale {facts['scale']}` "
             f"(`measurements/{facts['source']}`): {facts['label']}, {_md_seeds(facts)}; the small-budget runs "
             "follow below.",
             f"{'Targets' if facts['num_targets'] > 1 else 'Target'} trained on "
             f"{tok(low) if low == high else f'{tok(low)}-{tok(high)}'} tokens, "
             f"{verdicts.tokens_per_param(*facts['target_tokens_per_param'])}."]
    if facts["corpus"]:
        c = facts["corpus"]
        by_source = listed(c["train_tokens_by_source"].items(), lambda kv: f"{kv[0]} {tok(kv[1])}")
        lines.append(f"Corpus: {tok(c['train_tokens'])} train tokens ({by_source}); "
                     + verdicts.epochs_seen(c["epochs"]["draft"], c["epochs"]["target"]))
    return [*lines, verdicts.seed_noise(len(facts["seeds"]), facts["seed_noise"],
                                        targets_seeded=len(facts["target_seeds"]) == len(facts["seeds"]))]


def _md_small_budget(facts: dict, at_scale: str, small_budget: str) -> list[str]:
    """Where the small-budget runs come from, and their verdict against the at-scale one."""
    budget = f", commands of {f(facts['budget_s'])} s" if facts["budget_s"] else ""
    return [f"The first measurements, kept for comparison: `measurements/{facts['source']}` (scale "
            f"`{facts['scale']}`{budget}). " + verdicts.runs_agree(at_scale, small_budget)]
