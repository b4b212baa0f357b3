"""The experiment registry: name -> module, loaded lazily (lm-eval's ``MODEL_MAPPING`` pattern).

Each module defines ``EXPERIMENT``, an :class:`Experiment`: the models it needs at a :class:`Scale` (shared by
name with the other experiments of a suite, so each is trained once), its measurement step, and the sections of
the results document that analyse its measurements (:class:`Section`, written by ``sdlaws experiment report``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Callable

from sdlaws.errors import ConfigError
from sdlaws.experiments.context import Context
from sdlaws.experiments.reporting import Analysis, Doc, Tables
from sdlaws.experiments.scale import Scale
from sdlaws.train.families import TrainSpec


@dataclass(frozen=True)
class Section:
    """One section of the results document: the measurement files it reads (key -> (path or glob under the
    measurements directory, kind), see :func:`~sdlaws.experiments.reporting.load_tables`), its analysis, its
    markdown (from its entry of ``report.json`` alone) and its rows of the summary table (law or check, verdict,
    headline)."""

    key: str
    files: dict[str, tuple[str, str]]
    analyse: Callable[[Tables], Analysis]
    render: Callable[[dict, Doc], list[str]]
    summary: Callable[[dict], list[list[str]]]
    #: Its files that may be absent (an experiment not run yet): True for all of them, or their keys; ``analyse``
    #: then gets the tables without the absent ones.
    optional: bool | frozenset[str] = False

    @property
    def optional_keys(self) -> set[str]:
        """Keys of :attr:`files` that may be absent."""
        return set(self.files) if self.optional is True else set(self.optional or ())


@dataclass(frozen=True)
class Experiment:
    """One experiment: what it tests, the models it trains, how it measures them, how its results are reported."""

    name: str
    claim: str
    models: Callable[[Scale], list[TrainSpec]]
    measure: Callable[[Context], None]
    #: Experiments whose measurements this one reuses (and runs itself when they are not in the same run).
    needs: tuple[str, ...] = ()
    #: Its sections of the results document, in document order.
    sections: tuple[Section, ...] = ()


#: name -> module defining ``EXPERIMENT``, in the order a full suite runs them.
EXPERIMENTS: dict[str, str] = {
    "pretrain-tokens": "sdlaws.experiments.pretrain_tokens",
    "draft-depth": "sdlaws.experiments.draft_depth",
    "ppl-plane": "sdlaws.experiments.ppl_plane",
    "topk-batch": "sdlaws.experiments.topk_batch",
    "collapse": "sdlaws.experiments.collapse",
    "heldout": "sdlaws.experiments.heldout",
    "head-depth": "sdlaws.experiments.head_depth",
}

#: Sections of the results document that belong to no one experiment (module defining ``SECTION``), after theirs.
CLOSING_SECTIONS = ("sdlaws.experiments.scope",)

#: Named subsets for ``--only``: each fits one GPU command of ~8 minutes on an H100 (docs/experiments.md).
GROUPS: dict[str, tuple[str, ...]] = {
    "acceptance": ("pretrain-tokens", "draft-depth", "ppl-plane"),
    "throughput": ("topk-batch", "collapse", "heldout"),
}


def get(name: str) -> Experiment:
    """The :class:`Experiment` called ``name``."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)} or 'suite' "
                          "(`sdlaws experiment --list`)")
    return import_module(EXPERIMENTS[name]).EXPERIMENT


def resolve_names(name: str, only: str | None = None) -> list[str]:
    """Experiments to run: ``name`` itself, or for ``suite`` the ``--only`` list (names or groups; default all)."""
    if name != "suite":
        if only:
            raise ConfigError("--only applies to 'suite'; name one experiment or use `experiment run suite --only ...`")
        get(name)
        return [name]
    if not only:
        return list(EXPERIMENTS)
    chosen: list[str] = []
    for item in (part.strip() for part in only.split(",") if part.strip()):
        for member in GROUPS.get(item, (item,)):
            get(member)
            if member not in chosen:
                chosen.append(member)
    return [n for n in EXPERIMENTS if n in chosen]  # registry order: collapse after topk-batch


def describe() -> str:
    """One line per experiment (name and claim) and per group."""
    lines = [f"{name:24s} {get(name).claim}" for name in EXPERIMENTS]
    lines += [f"{'suite --only ' + g:24s} {', '.join(members)}" for g, members in GROUPS.items()]
    return "\n".join(lines)


def report_sections() -> list[Section]:
    """Every section of the results document, in document order: each experiment's, then the closing ones."""
    return ([s for name in EXPERIMENTS for s in get(name).sections]
            + [import_module(module).SECTION for module in CLOSING_SECTIONS])
