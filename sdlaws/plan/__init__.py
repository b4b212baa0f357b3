"""sdlaws.plan: from laws and a hardware profile to a draft size, a pretraining budget and serving settings.

Modules: :mod:`~sdlaws.plan.speedup` (tau, speedup, tokens/FLOP, tokens/s), :mod:`~sdlaws.plan.priors` (published
default laws), :mod:`~sdlaws.plan.optimize` (the optimisers), :mod:`~sdlaws.plan.result` (``Plan``, ``PlanSet``).
The cost model lives in :mod:`sdlaws.roofline` and the hardware presets in :mod:`sdlaws.hardware`.
"""

from sdlaws.plan.optimize import (ServingAcceptance, draft_size_by_batch, draft_size_report, draft_size_table,
                                  full_plan, optimal_draft_size, optimal_pretraining_tokens, sdsl_acceptance,
                                  sdsl_alpha, serving_plan)
from sdlaws.plan.result import Plan, PlanSet, engine_flags

__all__ = ["Plan", "PlanSet", "ServingAcceptance", "draft_size_by_batch", "draft_size_report", "draft_size_table",
           "engine_flags", "full_plan", "optimal_draft_size", "optimal_pretraining_tokens", "sdsl_acceptance",
           "sdsl_alpha", "serving_plan"]
