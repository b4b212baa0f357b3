"""sdlaws.plan: from laws, measured step times and a hardware profile to a draft size, a pretraining budget and
serving settings, and the check of its predictions on held-out measurements.

The planner is a search over two objects. Cost: :mod:`~sdlaws.plan.cost` (the step-time law fitted to measured
``step`` tables, with the roofline of :mod:`sdlaws.roofline` as its prior; :mod:`~sdlaws.plan.costcheck` its
out-of-sample errors) and :mod:`~sdlaws.plan.setup` (``ServingSetup``: target, draft, GPU, context, the forward
time of one step). Acceptance: :mod:`~sdlaws.plan.acceptance` (the engine's tree policy, per-prompt spread,
static and continuous batches), :mod:`~sdlaws.plan.speedup` (tau, speedup, tokens/s), :mod:`~sdlaws.plan.priors`
(published default laws), :mod:`~sdlaws.plan.pairs` (published draft/target pairs). Search:
:mod:`~sdlaws.plan.optimize` (draft size, pretraining tokens, gamma and tree per batch) and
:mod:`~sdlaws.plan.serving` (the engine's own configurations). Check: :mod:`~sdlaws.plan.validate` (fit on
training rows, predict held-out rows). Results: :mod:`~sdlaws.plan.result` (``Plan``, ``PlanSet``) and
:mod:`~sdlaws.plan.export` (engine config files).
"""

from sdlaws.plan.optimize import (ServingAcceptance, draft_size_by_batch, draft_size_report, draft_size_table,
                                  full_plan, optimal_draft_size, optimal_pretraining_tokens, sdsl_acceptance,
                                  sdsl_alpha, serving_plan)
from sdlaws.plan.result import Plan, PlanSet, engine_flags

__all__ = ["Plan", "PlanSet", "ServingAcceptance", "draft_size_by_batch", "draft_size_report", "draft_size_table",
           "engine_flags", "full_plan", "optimal_draft_size", "optimal_pretraining_tokens", "sdsl_acceptance",
           "sdsl_alpha", "serving_plan"]
