"""The controlled scaling experiments of issue 5, each one command: train what it needs, measure, write CSVs.

``sdlaws experiment NAME`` runs one experiment; ``sdlaws experiment suite --only GROUP`` runs several that
share one training run (see :data:`sdlaws.experiments.registry.GROUPS` and ``docs/experiments.md``).
"""

from sdlaws.experiments.registry import EXPERIMENTS, GROUPS, Experiment, describe, get, resolve_names
from sdlaws.experiments.runner import Plan, RunResult, plan, run
from sdlaws.experiments.scale import SCALES, Scale

__all__ = ["EXPERIMENTS", "GROUPS", "Experiment", "Plan", "RunResult", "SCALES", "Scale", "describe", "get",
           "plan", "resolve_names", "run"]
