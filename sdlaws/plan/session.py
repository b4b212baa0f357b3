"""One planning request, from resolved inputs to plan sets: what ``sdlaws plan`` and its sub-commands run.

A :class:`PlanRequest` holds what a plan is made from: the serving setup (target, hardware, context, dtype, tensor
parallelism, the step-time law, and the draft when one is given), the batch sizes, the fitted laws by role
(:func:`load_laws`), a measured acceptance or a published pair, the SDSL pipeline's pretraining tokens and draws,
and what the pretraining plan needs. Its methods make the plan sets: :meth:`~PlanRequest.full` (draft size and
serving, :func:`~sdlaws.plan.optimize.full_plan`, plus the pretraining budget of the served draft when a log-linear
law is given), :meth:`~PlanRequest.draft_size`, :meth:`~PlanRequest.pretraining`, :meth:`~PlanRequest.serving`
and :meth:`~PlanRequest.engine` (sdlaws's own engine configurations, :mod:`sdlaws.plan.serving`). Each plan set
ends with its cost model (:func:`~sdlaws.plan.cost.cost_model_set`). Without a given draft every plan serves a
draft of the SDSL N* (:func:`~sdlaws.plan.optimize.served_setup`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdlaws.errors import ConfigError
from sdlaws.plan import priors
from sdlaws.plan.optimize import TRAIN_MFU, ServingAcceptance
from sdlaws.plan.result import Plan, PlanSet
from sdlaws.plan.setup import ServingSetup
from sdlaws.roofline import ModelShape

#: The role each fitted law plays in a plan (``--fit``).
LAW_ROLES = {"ppl_plane": "plane", "ppl_plane_log": "plane", "topk_batch": "topk", "topk_batch_sqrt": "topk",
             "loglinear": "loglinear"}


def load_laws(paths: Optional[list[Path]]) -> dict[str, Any]:
    """Fit JSONs as ``{role: law}`` (plane, topk, loglinear); :class:`ConfigError` for a law the planner does not
    use or a role given twice."""
    from sdlaws.fit.result import load_fit

    laws: dict[str, Any] = {}
    for path in paths or []:
        law = load_fit(path)
        role = LAW_ROLES.get(law.law)
        if role is None:
            raise ConfigError(f"{path}: law {law.law!r} is not used by the planner; give {', '.join(LAW_ROLES)} fits")
        if role in laws:
            raise ConfigError(f"{path}: a second {role} fit was given ({law.law} after {laws[role].law}); pass one "
                              f"per role ({', '.join(sorted(set(LAW_ROLES.values())))})")
        laws[role] = law
    return laws


def model_shape(name: Optional[str], params: Optional[float], config: Optional[Path], role: str, *,
                required: bool) -> Optional[ModelShape]:
    """The ``role`` model's shape from exactly one of a shape name, a parameter count or an HF ``config.json``
    (the options ``--ROLE``, ``--ROLE-params``, ``--ROLE-config``); None when optional and none is given."""
    from sdlaws.roofline import named_shape

    given = [v is not None for v in (name, params, config)]
    if sum(given) > 1:
        raise ConfigError(f"give only one of --{role}, --{role}-params, --{role}-config")
    if name is not None:
        return named_shape(name)
    if params is not None:
        return ModelShape.from_params(params)
    if config is not None:
        return ModelShape.from_hf_config(config)
    if required:
        raise ConfigError(f"no {role} model: give --{role} NAME (e.g. llama-3.1-70b), --{role}-params N "
                          f"or --{role}-config config.json")
    return None


@dataclass(frozen=True)
class PlanRequest:
    """What a plan is made from (see the module docstring); the plan sets are its methods.

    Acceptance of the served draft: the published ``pair``'s, else ``alpha`` (with measured ``rank_shares`` of
    tree levels and per-position chain rates ``position_rates`` when given), else the SDSL prediction at the
    draft's size.
    """

    setup: ServingSetup
    batch_sizes: tuple[int, ...]
    laws: dict[str, Any] = field(default_factory=dict)
    alpha: Optional[float] = None
    rank_shares: Optional[list[float]] = None
    position_rates: Optional[list[float]] = None
    pair: Any = None                                    # a sdlaws.plan.pairs.Pair
    draft_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS
    target_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS
    samples: int = 200
    seed: int = 0
    # pretraining plan
    serve_tokens: Optional[float] = None
    acceptance_kind: Optional[str] = None               # "tau" or "alpha" (default: the law's response column)
    num_spec_tokens: Optional[int] = None               # chain length a tau law was measured at
    train_mfu: float = TRAIN_MFU

    # ------------------------------------------------------------------------------------------- plan sets

    def full(self) -> PlanSet:
        """Draft size (SDSL and roofline) and serving settings per batch size; with a log-linear law, also the
        pretraining budget of the served draft at the first batch size."""
        from sdlaws.plan.optimize import full_plan

        law = self._loglinear_law() if "loglinear" in self.laws else None
        plan_set = full_plan(self.setup, self.batch_sizes, acceptance=self.acceptance(),
                             topk_law=self.laws.get("topk"), **self._sdsl())
        if law is not None:
            served = self.setup.with_draft(ModelShape(**plan_set.inputs["serving"]["draft"]))
            plan_set = plan_set + self._pretraining(law, served, self.batch_sizes[:1])
        return self._with_cost_model(plan_set)

    def draft_size(self) -> PlanSet:
        """Optimal draft size N*: SDSL tokens/FLOP, roofline tokens/s per batch size, N* versus target size."""
        from sdlaws.plan.optimize import draft_size_report

        return self._with_cost_model(draft_size_report(self.setup, self.batch_sizes, **self._sdsl()))

    def pretraining(self) -> PlanSet:
        """Optimal draft pretraining tokens D* per batch size, from the log-linear law and the serve volume."""
        law = self._loglinear_law()
        setup, _ = self.served()
        return self._with_cost_model(self._pretraining(law, setup, self.batch_sizes))

    def serving(self) -> PlanSet:
        """Optimal chain length and tree per batch size (plus the N* plan when the SDSL N* is served)."""
        from sdlaws.plan.optimize import sdsl_acceptance, serving_plan

        setup, nstar = self.served()
        acc = self.acceptance() or sdsl_acceptance(setup.draft.params, setup.target.params, **self._sdsl())
        plan_set = serving_plan(setup, self.batch_sizes, acc, topk_law=self.laws.get("topk"), samples=self.samples,
                                seed=self.seed)
        if nstar is not None:
            plan_set = plan_set + PlanSet(title="SDSL draft size used for serving", plans=(nstar,),
                                          warnings=nstar.warnings)
        return self._with_cost_model(plan_set)

    def engine(self, profile, *, max_new_tokens: int, overheads=None) -> PlanSet:
        """The best of sdlaws's engine configurations per batch size by predicted decode tokens/s, under the
        acceptance ``profile``; ``overheads`` (:class:`~sdlaws.plan.validate.EngineOverheads`) adds the engine's
        seconds per step outside the forward passes."""
        from sdlaws.plan.serving import engine_plan

        setup, _ = self.served()
        return self._with_cost_model(engine_plan(setup, self.batch_sizes, profile, max_new_tokens=max_new_tokens,
                                                 overhead_s=overheads.step_s if overheads else None))

    # ------------------------------------------------------------------------------------------------- inputs

    def served(self) -> tuple[ServingSetup, Optional[Plan]]:
        """The served setup and, when no draft was given, the SDSL N* plan whose draft it serves."""
        from sdlaws.plan.optimize import optimal_draft_size, served_setup

        nstar = None if self.setup.draft is not None else optimal_draft_size(self.setup.target, **self._sdsl())
        return served_setup(self.setup, nstar), nstar

    def acceptance(self) -> Optional[ServingAcceptance]:
        """The measured (or published) acceptance of the served draft; None: predict it from SDSL."""
        if self.pair is not None:
            from sdlaws.plan.pairs import acceptance

            return acceptance(self.pair)
        import numpy as np

        from sdlaws import checks
        from sdlaws.plan.speedup import rank_rates_from_shares

        shares, positions = self.rank_shares, self.position_rates
        for option, rates in (("--rank-acceptance", shares), ("--position-acceptance", positions)):
            if rates is not None:
                checks.numbers(option, rates, 0.0, 1.0, note="acceptance rates")
        if self.alpha is None:
            if shares or positions:
                raise ConfigError("--rank-acceptance / --position-acceptance need --alpha (the measured per-token "
                                  "rate)")
            return None
        if not 0.0 <= self.alpha < 1.0:
            raise ConfigError(f"--alpha {self.alpha}: expected a per-token acceptance in [0, 1)")
        return ServingAcceptance(alpha=self.alpha, rank_rates=rank_rates_from_shares(shares) if shares else None,
                                 position_rates=np.asarray(positions) if positions else None)

    def _sdsl(self) -> dict[str, Any]:
        """Keyword arguments of the SDSL pipeline: plane law, pretraining tokens, draws."""
        return dict(plane=self.laws.get("plane", priors.SDSL_PLANE), draft_tokens=self.draft_tokens,
                    target_tokens=self.target_tokens, samples=self.samples, seed=self.seed)

    def _loglinear_law(self):
        """The fitted log-linear law, or a one-line error saying what the pretraining plan misses."""
        law = self.laws.get("loglinear")
        if law is None:
            raise ConfigError("the pretraining plan needs a fitted log-linear law (--fit loglinear.json from "
                              "`sdlaws fit --law loglinear` on draft_pretrain_tokens); no published coefficients "
                              "exist")
        if self.serve_tokens is None:
            raise ConfigError("the pretraining plan needs --serve-tokens (tokens you expect to serve, e.g. 1e12)")
        return law

    def _pretraining(self, law, setup: ServingSetup, batch_sizes) -> PlanSet:
        """Pretraining-budget plans of ``setup``'s draft, one per batch size."""
        from sdlaws.plan.optimize import optimal_pretraining_tokens

        plans = tuple(optimal_pretraining_tokens(law, setup, serve_tokens=self.serve_tokens, batch_size=b,
                                                 kind=self.acceptance_kind, num_spec_tokens=self.num_spec_tokens,
                                                 train_mfu=self.train_mfu, data_range=priors.law_x_range(law),
                                                 samples=self.samples, seed=self.seed)
                      for b in batch_sizes)
        return PlanSet(title=f"Draft pretraining tokens for a {setup.draft.params:.3g}-parameter draft "
                             f"({self.serve_tokens:.3g} tokens served)", plans=plans,
                       warnings=tuple(dict.fromkeys(w for p in plans for w in p.warnings)))

    def _with_cost_model(self, plan_set: PlanSet) -> PlanSet:
        """``plan_set`` with the statement of its cost model (roofline or step-time law) and how well it fits."""
        from sdlaws.plan.cost import cost_model_set

        return plan_set + cost_model_set(self.setup.forward, self.setup.hardware)


def engine_draft_name(plan_set: PlanSet, *, draft: Optional[str] = None, draft_config: Optional[Path] = None,
                      pair=None) -> str:
    """Draft id for the engine flags: the published draft of ``pair`` (when its draft shape is the one planned),
    the named draft, its config directory, or a placeholder with its size."""
    if pair is not None and draft == pair.draft_shape and " " not in pair.draft:  # a hub id, not a description
        return pair.draft
    if draft is not None:
        return draft
    if draft_config is not None:
        return str(Path(draft_config).parent)
    return f"path/to/draft-{plan_set.inputs['serving']['draft']['params'] / 1e6:.0f}M"


def overheads_warning(path: Path, hardware_name: str) -> Optional[str]:
    """A warning when the engine overheads of ``path`` (``validation.json``) were fitted on another GPU than the
    plan's (the engine's per-step costs outside the forward passes depend on the GPU and its host)."""
    from sdlaws.hardware import match_preset
    from sdlaws.plan.validate import overheads_gpu

    gpu = overheads_gpu(path)
    preset = match_preset(gpu) if gpu else None
    if preset is None or preset.name == hardware_name:
        return None
    return (f"warning: --overheads were fitted on {gpu}; this plan is for {hardware_name} (the engine's per-step "
            "costs outside the forward passes depend on the GPU and its host)")
