"""`sdlaws plan`: draft size, pretraining budget and serving settings from laws and a hardware profile.

``sdlaws plan`` (no sub-command) prints the full plan: draft size and the per-batch serving table.
``sdlaws plan draft-size | pretraining | serving`` print one part. Parse (:mod:`sdlaws.cli.plan_options`), call
:mod:`sdlaws.plan`, print (:mod:`sdlaws.cli.plan_render`; figures: :func:`sdlaws.plotting.plan_figures`). Heavy
imports (matplotlib) happen only when ``--out`` asks for figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from sdlaws.cli.plan_options import (DEFAULT_BATCH, DEFAULT_HARDWARE, AcceptanceKind, Alpha, Batch, Draft,
                                     DraftConfig, DraftParams, DraftTokens, Dtype, Fits, Format, Gamma, HardwareOpt,
                                     Json, KvLen, MaxNew, Out, Overheads, PairName, PlanOptions, PositionAcceptance,
                                     Profile, RankAcceptance, Samples, Seed, ServeTokens, Sglang, Steps, Target, TargetConfig,
                                     TargetParams, TargetTokens, Tp, TrainMfu, parse_batches, parse_floats)
from sdlaws.errors import ConfigError
from sdlaws.plan.cost import cost_model_set

#: The role each fitted law plays in a plan (``--fit``).
LAW_ROLES = {"ppl_plane": "plane", "topk_batch": "topk", "topk_batch_sqrt": "topk", "loglinear": "loglinear"}

plan_app = typer.Typer(help="Plan the draft size, its pretraining budget and serving settings (gamma, tree "
                            "top-k per batch) from fitted laws and a hardware profile. Without a sub-command: "
                            "the full plan (draft size + serving).")

def _shape(name, params, config, what: str, required: bool):
    """Model shape from exactly one of --X, --X-params, --X-config (None if optional and absent)."""
    from sdlaws.roofline import ModelShape, named_shape

    given = [v is not None for v in (name, params, config)]
    if sum(given) > 1:
        raise ConfigError(f"give only one of --{what}, --{what}-params, --{what}-config")
    if name is not None:
        return named_shape(name)
    if params is not None:
        return ModelShape.from_params(params)
    if config is not None:
        return ModelShape.from_hf_config(config)
    if required:
        raise ConfigError(f"no {what} model: give --{what} NAME (e.g. llama-3.1-70b), --{what}-params N "
                          f"or --{what}-config config.json")
    return None


def _laws(paths: Optional[list[Path]]) -> dict:
    """Load ``--fit`` JSONs into {role: law} (plane, topk, loglinear)."""
    laws: dict = {}
    for path in paths or []:
        from sdlaws.fit.result import load_fit

        law = load_fit(path)
        role = LAW_ROLES.get(law.law)
        if role is None:
            raise ConfigError(f"{path}: law {law.law!r} is not used by the planner; give {', '.join(LAW_ROLES)} fits")
        if role in laws:
            raise ConfigError(f"{path}: a second {law.law!r} fit was given; pass one per law")
        laws[role] = law
    return laws


def _setup(opts: PlanOptions, draft=None):
    """Serving setup of the target on the resolved hardware."""
    from sdlaws.plan.setup import ServingSetup

    target = _shape(opts.target, opts.target_params, opts.target_config, "target", required=True)
    return ServingSetup(target=target, hardware=opts.resolved_hardware, draft=draft, kv_len=opts.kv_len,
                        dtype=opts.dtype, tp=opts.tp, forward=opts.step_law)


def _acceptance(opts: PlanOptions):
    """ServingAcceptance from --pair, or --alpha / --rank-acceptance / --position-acceptance (None: predict from
    SDSL)."""
    from sdlaws.plan.optimize import ServingAcceptance
    from sdlaws.plan.speedup import rank_rates_from_shares

    if opts.resolved_pair is not None:
        from sdlaws.plan.pairs import acceptance

        return acceptance(opts.resolved_pair)

    from sdlaws import checks

    shares = parse_floats(opts.rank_acceptance, "--rank-acceptance")
    positions = parse_floats(opts.position_acceptance, "--position-acceptance")
    for option, rates in (("--rank-acceptance", shares), ("--position-acceptance", positions)):
        if rates is not None:
            checks.numbers(option, rates, 0.0, 1.0, note="acceptance rates")
    if opts.alpha is None:
        if shares or positions:
            raise ConfigError("--rank-acceptance / --position-acceptance need --alpha (the measured per-token rate)")
        return None
    if not 0.0 <= opts.alpha < 1.0:
        raise ConfigError(f"--alpha {opts.alpha}: expected a per-token acceptance in [0, 1)")
    import numpy as np

    return ServingAcceptance(alpha=opts.alpha, rank_rates=rank_rates_from_shares(shares) if shares else None,
                             position_rates=np.asarray(positions) if positions else None)


def _common(opts: PlanOptions, laws: dict) -> dict:
    """Keyword arguments shared by the SDSL functions: plane law, pretraining tokens, draws."""
    from sdlaws.plan import priors

    return dict(plane=laws.get("plane", priors.SDSL_PLANE), draft_tokens=opts.draft_tokens,
                target_tokens=opts.target_tokens, samples=opts.samples, seed=opts.seed)


def _served_setup(opts: PlanOptions, laws: dict):
    """Serving setup with the given draft, or with a draft of the SDSL N* (and that N* plan)."""
    from sdlaws.plan.optimize import optimal_draft_size
    from sdlaws.roofline import draft_like

    draft = _shape(opts.draft, opts.draft_params, opts.draft_config, "draft", required=False)
    setup = _setup(opts, draft)
    if draft is not None:
        return setup, None
    nstar = optimal_draft_size(setup.target, **_common(opts, laws))
    return setup.with_draft(draft_like(setup.target, nstar.value)), nstar


# ----------------------------------------------------------------------------------------------- planning

def _loglinear_law(opts: PlanOptions, laws: dict):
    """The fitted log-linear law and a serve volume, or a one-line error saying what is missing."""
    law = laws.get("loglinear")
    if law is None:
        raise ConfigError("the pretraining plan needs a fitted log-linear law (--fit loglinear.json from "
                          "`sdlaws fit --law loglinear` on draft_pretrain_tokens); no published coefficients exist")
    if opts.serve_tokens is None:
        raise ConfigError("the pretraining plan needs --serve-tokens (tokens you expect to serve, e.g. 1e12)")
    return law


def _pretraining(opts: PlanOptions, law, setup, batches):
    """Pretraining-budget plans, one per batch size."""
    from sdlaws.plan import priors
    from sdlaws.plan.optimize import optimal_pretraining_tokens
    from sdlaws.plan.result import PlanSet

    plans = tuple(optimal_pretraining_tokens(law, setup, serve_tokens=opts.serve_tokens, batch_size=b,
                                             kind=opts.acceptance, gamma=opts.gamma, train_mfu=opts.train_mfu,
                                             data_range=priors.law_x_range(law), samples=opts.samples, seed=opts.seed)
                  for b in batches)
    return PlanSet(title=f"Draft pretraining tokens for a {setup.draft.params:.3g}-parameter draft "
                         f"({opts.serve_tokens:.3g} tokens served)", plans=plans,
                   warnings=tuple(dict.fromkeys(w for p in plans for w in p.warnings)))


def _serving(opts: PlanOptions, laws: dict, setup, batches, nstar=None):
    """Serving plan with measured or SDSL-predicted acceptance (plus the N* plan when used)."""
    from sdlaws.plan.optimize import sdsl_acceptance, serving_plan

    acc = _acceptance(opts) or sdsl_acceptance(setup.draft.params, setup.target.params, **_common(opts, laws))
    plan_set = serving_plan(setup, batches, acc, topk_law=laws.get("topk"), samples=opts.samples, seed=opts.seed)
    return plan_set if nstar is None else plan_set + _single("SDSL draft size used for serving", nstar)


def _single(title: str, plan):
    """A PlanSet holding one plan."""
    from sdlaws.plan.result import PlanSet

    return PlanSet(title=title, plans=(plan,), warnings=plan.warnings)


def _draft_size(opts: PlanOptions, laws: dict, batches):
    """Draft-size report on the resolved hardware."""
    from sdlaws.plan.optimize import draft_size_report

    return draft_size_report(_setup(opts), batches, **_common(opts, laws))


# ------------------------------------------------------------------------------------------------ output

def _draft_name(plan_set, opts: PlanOptions) -> str:
    """Draft id for the engine flags: the published draft of --pair, the named draft, its config directory, or a
    placeholder with its size."""
    pair = opts.resolved_pair
    if pair is not None and opts.draft == pair.draft_shape and " " not in pair.draft:  # a hub id, not a description
        return pair.draft
    if opts.draft is not None:
        return opts.draft
    if opts.draft_config is not None:
        return str(Path(opts.draft_config).parent)
    return f"path/to/draft-{plan_set.inputs['serving']['draft']['params'] / 1e6:.0f}M"


def _emit(opts: PlanOptions, plan_set) -> None:
    """Print tables (or JSON with --json); write plan.json and figures under --out."""
    from sdlaws.plan.result import engine_flags

    flags = None
    if "serving" in plan_set.tables:
        flags = engine_flags(plan_set.tables["serving"], _draft_name(plan_set, opts),
                             sglang_algorithm=opts.sglang_algorithm)
    plan_set = plan_set + cost_model_set(opts.step_law, opts.resolved_hardware)
    data = plan_set.to_dict()
    if flags is not None:
        data["engine_flags"] = flags.to_dict(orient="records")
    if opts.out is not None:
        from sdlaws import io
        from sdlaws.plotting import plan_figures

        with io.output_group():  # plan.json and the figures replace the previous ones together, or not at all
            io.save_json(data, opts.out / "plan.json")
            plan_figures(plan_set, opts.out)
    if opts.json_:
        typer.echo(json.dumps(data, indent=2))
    else:
        from sdlaws.cli.plan_render import render

        render(plan_set, flags, opts.out, opts.table_format)


# ---------------------------------------------------------------------------------------------- commands

@plan_app.callback(invoke_without_command=True)
def plan_all(ctx: typer.Context, target: Target = None, target_params: TargetParams = None,
             target_config: TargetConfig = None, draft: Draft = None, draft_params: DraftParams = None,
             draft_config: DraftConfig = None, hardware: HardwareOpt = DEFAULT_HARDWARE, batch: Batch = DEFAULT_BATCH,
             kv_len: KvLen = 1024, dtype: Dtype = "bfloat16", tp: Tp = 1, fit: Fits = None,
             draft_tokens: DraftTokens = 2e12, target_tokens: TargetTokens = 2e12, serve_tokens: ServeTokens = None,
             alpha: Alpha = None, rank_acceptance: RankAcceptance = None,
             position_acceptance: PositionAcceptance = None, acceptance: AcceptanceKind = None, gamma: Gamma = None,
             train_mfu: TrainMfu = 0.4, samples: Samples = 200, seed: Seed = 0, json_: Json = False,
             table_format: Format = "table", out: Out = None, sglang_algorithm: Sglang = "EAGLE",
             steps: Steps = None, pair: PairName = None) -> None:
    """Full plan: optimal draft size (SDSL and roofline), N* vs target size, and serving settings per batch."""
    if ctx.invoked_subcommand is not None:
        return
    opts = PlanOptions.of(locals())
    laws, batches = _laws(opts.fit), parse_batches(opts.batch)
    from sdlaws.plan.optimize import full_plan
    from sdlaws.roofline import ModelShape

    law = _loglinear_law(opts, laws) if "loglinear" in laws else None
    draft_shape = _shape(opts.draft, opts.draft_params, opts.draft_config, "draft", required=False)
    setup = _setup(opts, draft_shape)
    plan_set = full_plan(setup, batches, acceptance=_acceptance(opts), topk_law=laws.get("topk"),
                         **_common(opts, laws))
    if law is not None:  # pretraining budget of the served draft, at the first batch size
        served = setup.with_draft(ModelShape(**plan_set.inputs["serving"]["draft"]))
        plan_set = plan_set + _pretraining(opts, law, served, batches[:1])
    _emit(opts, plan_set)


@plan_app.command("draft-size")
def draft_size(target: Target = None, target_params: TargetParams = None, target_config: TargetConfig = None,
               hardware: HardwareOpt = DEFAULT_HARDWARE, batch: Batch = DEFAULT_BATCH, kv_len: KvLen = 1024,
               dtype: Dtype = "bfloat16", tp: Tp = 1, fit: Fits = None, draft_tokens: DraftTokens = 2e12,
               target_tokens: TargetTokens = 2e12, samples: Samples = 200, seed: Seed = 0, json_: Json = False,
               table_format: Format = "table", out: Out = None, steps: Steps = None) -> None:
    """Optimal draft size N*: SDSL tokens/FLOP, roofline tokens/s per batch, and N* versus target size."""
    opts = PlanOptions.of(locals())
    _emit(opts, _draft_size(opts, _laws(opts.fit), parse_batches(opts.batch)))


@plan_app.command("pretraining")
def pretraining(target: Target = None, target_params: TargetParams = None, target_config: TargetConfig = None,
                draft: Draft = None, draft_params: DraftParams = None, draft_config: DraftConfig = None,
                hardware: HardwareOpt = DEFAULT_HARDWARE, batch: Batch = "1", kv_len: KvLen = 1024,
                dtype: Dtype = "bfloat16", tp: Tp = 1, fit: Fits = None, draft_tokens: DraftTokens = 2e12,
                target_tokens: TargetTokens = 2e12, serve_tokens: ServeTokens = None,
                acceptance: AcceptanceKind = None, gamma: Gamma = None, train_mfu: TrainMfu = 0.4,
                samples: Samples = 200, seed: Seed = 0, json_: Json = False, table_format: Format = "table",
                out: Out = None, steps: Steps = None) -> None:
    """Optimal draft pretraining tokens D* from a fitted log-linear acceptance law and a serving volume."""
    opts = PlanOptions.of(locals())
    laws, batches = _laws(opts.fit), parse_batches(opts.batch)
    law = _loglinear_law(opts, laws)
    setup, _ = _served_setup(opts, laws)
    _emit(opts, _pretraining(opts, law, setup, batches))


@plan_app.command("serving")
def serving(target: Target = None, target_params: TargetParams = None, target_config: TargetConfig = None,
            draft: Draft = None, draft_params: DraftParams = None, draft_config: DraftConfig = None,
            hardware: HardwareOpt = DEFAULT_HARDWARE, batch: Batch = DEFAULT_BATCH, kv_len: KvLen = 1024,
            dtype: Dtype = "bfloat16", tp: Tp = 1, fit: Fits = None, draft_tokens: DraftTokens = 2e12,
            target_tokens: TargetTokens = 2e12, alpha: Alpha = None, rank_acceptance: RankAcceptance = None,
            position_acceptance: PositionAcceptance = None, samples: Samples = 200, seed: Seed = 0,
            json_: Json = False, table_format: Format = "table", out: Out = None, sglang_algorithm: Sglang = "EAGLE",
            steps: Steps = None, profile: Profile = None, overheads: Overheads = None, max_new_tokens: MaxNew = 128,
            pair: PairName = None) -> None:
    """Optimal chain gamma and tree (steps, top-k, draft tokens) per batch size, with vLLM/SGLang flags; with
    --profile, the best of sdlaws's engine configurations by predicted decode tokens/s."""
    opts = PlanOptions.of(locals())
    laws, batches = _laws(opts.fit), parse_batches(opts.batch)
    setup, nstar = _served_setup(opts, laws)
    if opts.profile is not None:
        from sdlaws.plan.serving import engine_plan
        from sdlaws.plan.validate import load_overheads

        extra = load_overheads(opts.overheads).step_s if opts.overheads else None
        _warn_other_gpu(opts, setup)
        return _emit(opts, engine_plan(setup, batches, _profile(opts.profile), max_new_tokens=opts.max_new_tokens,
                                       overhead_s=extra))
    _emit(opts, _serving(opts, laws, setup, batches, nstar))


@plan_app.command("export")
def export(plan: Annotated[Path, typer.Argument(help="plan.json written by `sdlaws plan ... --out DIR`.",
                                                show_default=False)],
           engine: Annotated[str, typer.Option("--engine", help="vllm, sglang or trtllm.")],
           out: Annotated[Path, typer.Option("--out", help="File to write (YAML for vllm and trtllm, shell "
                                                           "variables for sglang).")],
           draft: Annotated[Optional[str], typer.Option("--draft", help="Draft model id or path for the engine "
                                                        "(default: the plan's draft name).")] = None,
           method: Annotated[Optional[str], typer.Option("--method", help="Engine's speculation method: vllm "
                                                         "draft_model|eagle|eagle3|mtp|..., sglang STANDALONE|EAGLE|"
                                                         "EAGLE3, trtllm DraftTarget|Eagle3|MTP.")] = None,
           max_batch: Annotated[int, typer.Option("--max-batch", help="Largest batch size the server runs (its "
                                                  "--max-num-seqs); the last bracket ends there.")] = 1024) -> None:
    """The plan's per-batch speculation as the configuration file vLLM, SGLang or TensorRT-LLM reads."""
    from sdlaws.io import load_json
    from sdlaws.plan.export import export as export_plan

    text = export_plan(load_json(plan), engine, draft=draft, method=method, max_batch=max_batch, source=str(plan))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out}")


def _warn_other_gpu(opts: PlanOptions, setup) -> None:
    """A warning on stderr when --overheads were fitted on another GPU than the plan's."""
    from sdlaws.hardware import match_preset
    from sdlaws.plan.validate import overheads_gpu

    gpu = overheads_gpu(opts.overheads) if opts.overheads else None
    preset = match_preset(gpu) if gpu else None
    if preset is not None and preset.name != setup.hardware.name:
        typer.echo(f"warning: --overheads were fitted on {gpu}; this plan is for {setup.hardware.name} (the "
                   "engine's per-step costs outside the forward passes depend on the GPU and its host)", err=True)


def _profile(path: Path):
    """The acceptance profile of --profile (the JSON forms `sdlaws measure --acceptance-profile` reads)."""
    from sdlaws.measure.profile import parse

    return parse(str(path))


def register(app: typer.Typer) -> None:
    """Add ``sdlaws plan`` and its sub-commands to the root app."""
    app.add_typer(plan_app, name="plan")
