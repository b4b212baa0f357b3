"""`sdlaws plan`: draft size, pretraining budget and serving settings from laws and a hardware profile.

``sdlaws plan`` (no sub-command) prints the full plan: draft size and the per-batch serving table.
``sdlaws plan draft-size | pretraining | serving`` print one part; ``sdlaws plan export`` turns a written plan into
an engine's configuration file. Parse (:mod:`sdlaws.cli.plan_options`), call a
:class:`~sdlaws.plan.session.PlanRequest` (or :func:`sdlaws.plan.export.export`), print
(:mod:`sdlaws.cli.plan_render`; figures: :func:`sdlaws.plotting.plan_figures`). Heavy imports (matplotlib) happen
only when ``--out`` asks for figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from sdlaws.cli.plan_options import (DEFAULT_BATCH, DEFAULT_HARDWARE, AcceptanceKind, Alpha, Batch, Draft,
                                     DraftConfig, DraftParams, DraftTokens, Dtype, Fits, Format, HardwareOpt, Json,
                                     KvLen, MaxNew, Out, Overheads, PairName, PlanOptions, PositionAcceptance, Profile,
                                     RankAcceptance, Samples, Seed, ServeTokens, Sglang, SpecTokens, Steps, Target,
                                     TargetConfig, TargetParams, TargetTokens, Tp, TrainMfu, parse_batches,
                                     parse_floats)

plan_app = typer.Typer(help="Plan the draft size, its pretraining budget and serving settings (chain length "
                            "num_spec_tokens, tree top-k per batch) from fitted laws and a hardware profile. Without a "
                            "sub-command: the full plan (draft size + serving).")


def _request(opts: PlanOptions):
    """The planning request of a command's options (:class:`sdlaws.plan.session.PlanRequest`)."""
    from sdlaws.plan.session import PlanRequest, load_laws, model_shape
    from sdlaws.plan.setup import ServingSetup

    laws, batches = load_laws(opts.fit), tuple(parse_batches(opts.batch))
    draft = model_shape(opts.draft, opts.draft_params, opts.draft_config, "draft", required=False)
    target = model_shape(opts.target, opts.target_params, opts.target_config, "target", required=True)
    setup = ServingSetup(target=target, hardware=opts.resolved_hardware, draft=draft, kv_len=opts.kv_len,
                         dtype=opts.dtype, tp=opts.tp, forward=opts.step_law)
    return PlanRequest(setup=setup, batch_sizes=batches, laws=laws, alpha=opts.alpha,
                       rank_shares=parse_floats(opts.rank_acceptance, "--rank-acceptance"),
                       position_rates=parse_floats(opts.position_acceptance, "--position-acceptance"),
                       pair=opts.resolved_pair, draft_tokens=opts.draft_tokens, target_tokens=opts.target_tokens,
                       samples=opts.samples, seed=opts.seed, serve_tokens=opts.serve_tokens,
                       acceptance_kind=opts.acceptance, num_spec_tokens=opts.num_spec_tokens,
                       train_mfu=opts.train_mfu)


def _emit(opts: PlanOptions, plan_set) -> None:
    """Print tables (or JSON with --json); write plan.json and figures under --out."""
    from sdlaws.plan.result import engine_flags
    from sdlaws.plan.session import engine_draft_name

    flags = None
    if "serving" in plan_set.tables:
        draft = engine_draft_name(plan_set, draft=opts.draft, draft_config=opts.draft_config, pair=opts.resolved_pair)
        flags = engine_flags(plan_set.tables["serving"], draft, sglang_algorithm=opts.sglang_algorithm)
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
             position_acceptance: PositionAcceptance = None, acceptance: AcceptanceKind = None,
             num_spec_tokens: SpecTokens = None, train_mfu: TrainMfu = 0.4, samples: Samples = 200, seed: Seed = 0,
             json_: Json = False, table_format: Format = "table", out: Out = None, sglang_algorithm: Sglang = "EAGLE",
             steps: Steps = None, pair: PairName = None) -> None:
    """Full plan: optimal draft size (SDSL and roofline), N* vs target size, and serving settings per batch."""
    if ctx.invoked_subcommand is not None:
        return
    opts = PlanOptions.of(locals())
    _emit(opts, _request(opts).full())


@plan_app.command("draft-size")
def draft_size(target: Target = None, target_params: TargetParams = None, target_config: TargetConfig = None,
               hardware: HardwareOpt = DEFAULT_HARDWARE, batch: Batch = DEFAULT_BATCH, kv_len: KvLen = 1024,
               dtype: Dtype = "bfloat16", tp: Tp = 1, fit: Fits = None, draft_tokens: DraftTokens = 2e12,
               target_tokens: TargetTokens = 2e12, samples: Samples = 200, seed: Seed = 0, json_: Json = False,
               table_format: Format = "table", out: Out = None, steps: Steps = None) -> None:
    """Optimal draft size N*: SDSL tokens/FLOP, roofline tokens/s per batch, and N* versus target size."""
    opts = PlanOptions.of(locals())
    _emit(opts, _request(opts).draft_size())


@plan_app.command("pretraining")
def pretraining(target: Target = None, target_params: TargetParams = None, target_config: TargetConfig = None,
                draft: Draft = None, draft_params: DraftParams = None, draft_config: DraftConfig = None,
                hardware: HardwareOpt = DEFAULT_HARDWARE, batch: Batch = "1", kv_len: KvLen = 1024,
                dtype: Dtype = "bfloat16", tp: Tp = 1, fit: Fits = None, draft_tokens: DraftTokens = 2e12,
                target_tokens: TargetTokens = 2e12, serve_tokens: ServeTokens = None,
                acceptance: AcceptanceKind = None, num_spec_tokens: SpecTokens = None, train_mfu: TrainMfu = 0.4,
                samples: Samples = 200, seed: Seed = 0, json_: Json = False, table_format: Format = "table",
                out: Out = None, steps: Steps = None) -> None:
    """Optimal draft pretraining tokens D* from a fitted log-linear acceptance law and a serving volume."""
    opts = PlanOptions.of(locals())
    _emit(opts, _request(opts).pretraining())


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
    """Optimal chain length (num_spec_tokens) and tree (num_spec_tokens, top-k, verified tokens) per batch size,
    with vLLM/SGLang flags; with --profile, the best of sdlaws's engine configurations by predicted decode
    tokens/s."""
    opts = PlanOptions.of(locals())
    request = _request(opts)
    if opts.profile is None:
        return _emit(opts, request.serving())
    from sdlaws.measure.profile import parse
    from sdlaws.plan.session import overheads_warning
    from sdlaws.plan.validate import load_overheads

    engine_overheads = load_overheads(opts.overheads) if opts.overheads else None
    warning = overheads_warning(opts.overheads, request.setup.hardware.name) if opts.overheads else None
    if warning:
        typer.echo(warning, err=True)
    _emit(opts, request.engine(parse(str(opts.profile)), max_new_tokens=opts.max_new_tokens,
                               overheads=engine_overheads))


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


def register(app: typer.Typer) -> None:
    """Add ``sdlaws plan`` and its sub-commands to the root app."""
    app.add_typer(plan_app, name="plan")
