"""The controlled scaling experiments, each one command: train what it needs, measure, write CSVs; and the
documents written from their results.

``sdlaws experiment run NAME`` runs one experiment; ``sdlaws experiment run suite --only GROUP`` runs several that
share one training run (see :data:`sdlaws.experiments.registry.GROUPS` and ``docs/experiments.md``);
``sdlaws experiment report`` writes the results document from every experiment's section
(:mod:`sdlaws.experiments.report`).
"""

from sdlaws.experiments.registry import EXPERIMENTS, GROUPS, Experiment, describe, get, resolve_names
from sdlaws.experiments.runner import RunPlan, RunResult, plan, run
from sdlaws.experiments.scale import SCALES, Scale

__all__ = ["EXPERIMENTS", "GROUPS", "Experiment", "RunPlan", "RunResult", "SCALES", "Scale", "describe", "get",
           "plan", "resolve_names", "run"]
