"""`sdlaws plan`: draft size, pretraining budget and serving settings from laws and a hardware profile.

``sdlaws plan`` (no sub-command) prints the full plan: draft size and the per-batch serving table.
``sdlaws plan draft-size | pretraining | serving`` print one part. Heavy imports (matplotlib) happen only when
``--out`` asks for figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from sdlaws.errors import ConfigError
from sdlaws.plan.cost import cost_model_set

plan_app = typer.Typer(help="Plan the draft size, its pretraining budget and serving settings (gamma, tree "
                            "top-k per batch) from fitted laws and a hardware profile. Without a sub-command: "
                            "the full plan (draft size + serving).")

# Shared options (each command lists the ones it uses).
Target = Annotated[Optional[str], typer.Option("--target", help="Named target shape, e.g. llama-3.1-70b, qwen2.5-72b.")]
TargetParams = Annotated[Optional[float], typer.Option("--target-params", help="Target parameter count, e.g. 70e9.")]
TargetConfig = Annotated[Optional[Path], typer.Option("--target-config", help="HF config.json of the target.")]
Draft = Annotated[Optional[str], typer.Option("--draft", help="Named draft shape (default: a draft of the SDSL N*).")]
DraftParams = Annotated[Optional[float], typer.Option("--draft-params", help="Draft parameter count, e.g. 2.7e8.")]
DraftConfig = Annotated[Optional[Path], typer.Option("--draft-config", help="HF config.json of the draft.")]
HardwareOpt = Annotated[str, typer.Option("--hardware", help="Preset (h100, h200, b200, mi300x, ...) or hardware JSON "
                                                             "(full profile or `sdlaws measure hardware` output).")]
Batch = Annotated[str, typer.Option("--batch", help="Comma-separated batch sizes.")]
KvLen = Annotated[int, typer.Option("--kv-len", help="Mean cached context per sequence while decoding, tokens.")]
Dtype = Annotated[str, typer.Option("--dtype", help="Weight/compute dtype: bfloat16 (or bf16), float16 (fp16), "
                                                    "fp8, int8, int4.")]
Tp = Annotated[int, typer.Option("--tp", help="GPUs the target is split over (tensor parallel).")]
Fits = Annotated[Optional[list[Path]], typer.Option("--fit", help="Fitted law JSON from `sdlaws fit` (ppl_plane, "
                                                                  "topk_batch, loglinear); repeatable.")]
DraftTokens = Annotated[float, typer.Option("--draft-tokens", help="Draft pretraining tokens for its perplexity.")]
TargetTokens = Annotated[float, typer.Option("--target-tokens", help="Target pretraining tokens for its perplexity.")]
ServeTokens = Annotated[Optional[float], typer.Option("--serve-tokens", help="Tokens to be served (pretraining plan).")]
Alpha = Annotated[Optional[float], typer.Option("--alpha", help="Measured per-token acceptance of the draft "
                                                                "(replaces the SDSL prediction; no interval).")]
RankAcceptance = Annotated[Optional[str], typer.Option("--rank-acceptance", help="Measured share of tree levels won "
                                                       "by each candidate rank, e.g. 0.6,0.12,0.05,0.03.")]
PositionAcceptance = Annotated[Optional[str], typer.Option("--position-acceptance", help="Measured conditional "
                                                           "acceptance per chain position, e.g. 0.8,0.75,0.7.")]
AcceptanceKind = Annotated[Optional[str], typer.Option("--acceptance", help="What the loglinear law predicts: tau or "
                                                       "alpha (default: from the fit's response column).")]
Gamma = Annotated[Optional[int], typer.Option("--gamma", help="Chain length a tau law was measured at.")]
PairName = Annotated[Optional[str], typer.Option("--pair", help="Published draft/target pair (a name in "
                                                "data/published_pairs.csv, e.g. llama-3.1-8b-eagle3-vllm): its "
                                                "acceptance, and its target and draft shapes unless given.")]
TrainMfu = Annotated[float, typer.Option("--train-mfu", help="Training FLOP utilisation (Llama 3 reports 0.38-0.43).")]
Samples = Annotated[int, typer.Option("--samples", help="Law parameter draws for the intervals.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed of the draws.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Format = Annotated[str, typer.Option("--format", help="Tables as table (rich; full width when piped), csv or "
                                                      "markdown.")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Write plan.json and PNG figures to this directory.")]
Steps = Annotated[Optional[list[Path]], typer.Option("--steps", help="Measured step-time CSVs (`step` tables of one "
                                                                    "GPU): forward times come from the step-time law "
                                                                    "fitted to them instead of the datasheet roofline.")]
Profile = Annotated[Optional[Path], typer.Option("--profile", help="Acceptance profile JSON (q per depth and rank, as "
                                                 "`sdlaws measure --acceptance-profile` takes): search sdlaws's engine "
                                                 "configurations (AR, chains, trees with budgets) by decode tokens/s.")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", help="Tokens generated per sequence (static batches "
                                     "decode until their slowest row has them).")]
Sglang = Annotated[str, typer.Option("--sglang-algorithm", help="SGLang --speculative-algorithm: EAGLE, EAGLE3 or "
                                                                "STANDALONE (a separate small LM).")]

DEFAULT_HARDWARE = "H100-SXM"
DEFAULT_BATCH = "1,2,4,8,16,32,64,128,256"
#: Accepted ranges of the numeric options, checked before any planning: field -> (option, low, high, integer).
#: Parameter counts span a toy model to 100x the largest dense LLM; token counts up to 1e18.
RANGES: dict[str, tuple[str, float, float, bool]] = {
    "target_params": ("--target-params", 1e3, 1e14, False), "draft_params": ("--draft-params", 1e3, 1e14, False),
    "draft_tokens": ("--draft-tokens", 1.0, 1e18, False), "target_tokens": ("--target-tokens", 1.0, 1e18, False),
    "serve_tokens": ("--serve-tokens", 1.0, 1e18, False), "kv_len": ("--kv-len", 0, 10_000_000, True),
    "tp": ("--tp", 1, 1024, True), "gamma": ("--gamma", 1, 64, True), "train_mfu": ("--train-mfu", 1e-3, 1.0, False),
    "samples": ("--samples", 1, 100_000, True), "seed": ("--seed", 0, 2**63 - 1, True),
    "max_new_tokens": ("--max-new-tokens", 1, 10_000_000, True),
}
MAX_BATCH = 1_000_000
LAW_ROLES = {"ppl_plane": "plane", "topk_batch": "topk", "topk_batch_sqrt": "topk", "loglinear": "loglinear"}


@dataclass(frozen=True)
class PlanOptions:
    """Everything a plan command was given (each command fills the fields it has)."""

    target: Optional[str] = None
    target_params: Optional[float] = None
    target_config: Optional[Path] = None
    draft: Optional[str] = None
    draft_params: Optional[float] = None
    draft_config: Optional[Path] = None
    hardware: str = DEFAULT_HARDWARE
    batch: str = DEFAULT_BATCH
    kv_len: int = 1024
    dtype: str = "bfloat16"
    tp: int = 1
    fit: Optional[list[Path]] = None
    draft_tokens: float = 2e12
    target_tokens: float = 2e12
    serve_tokens: Optional[float] = None
    alpha: Optional[float] = None
    rank_acceptance: Optional[str] = None
    position_acceptance: Optional[str] = None
    acceptance: Optional[str] = None
    gamma: Optional[int] = None
    pair: Optional[str] = None
    train_mfu: float = 0.4
    samples: int = 200
    seed: int = 0
    json_: bool = False
    table_format: str = "table"
    out: Optional[Path] = None
    sglang_algorithm: str = "EAGLE"
    steps: Optional[list[Path]] = None
    profile: Optional[Path] = None
    max_new_tokens: int = 128
    # Resolved from the options above by ``of``: the Hardware, the step-time law (None without --steps) and the
    # published pair of --pair (None without it).
    resolved_hardware: Any = None
    step_law: Any = None
    resolved_pair: Any = None

    @classmethod
    def of(cls, values: dict) -> "PlanOptions":
        """Build from a command's ``locals()`` (keys that are not options are ignored) and resolve the hardware."""
        from sdlaws.cli.output import Output
        from sdlaws import checks
        from sdlaws.hardware import load_hardware
        from sdlaws.dtypes import dtype_bytes

        opts = cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
        for name, (option, lo, hi, integer) in RANGES.items():
            if getattr(opts, name) is not None:
                checks.number(option, getattr(opts, name), lo, hi, integer=integer)
        _batches(opts.batch)
        try:
            dtype_bytes(opts.dtype)
        except ConfigError as exc:
            raise ConfigError(f"--dtype: {exc}") from None
        if opts.out is not None:
            checks.output_dir("--out", opts.out)
        Output(opts.table_format)  # an unknown --format stops here, before any work
        hardware, law = load_hardware(opts.hardware), None
        if opts.steps:
            from sdlaws.io import read_measurements
            from sdlaws.plan.cost import fit_steptime

            law = fit_steptime(read_measurements(opts.steps, table="step", ok_only=True), hardware)
        return _with_pair(replace(opts, resolved_hardware=hardware, step_law=law))


# ----------------------------------------------------------------------------------------------- resolving

def _with_pair(opts: PlanOptions) -> PlanOptions:
    """The --pair row's target and draft shapes where the command line names none (its acceptance: _acceptance)."""
    if opts.pair is None:
        return opts
    if any(v is not None for v in (opts.alpha, opts.rank_acceptance, opts.position_acceptance, opts.profile)):
        raise ConfigError("--pair brings its own acceptance; drop --alpha, --rank-acceptance, --position-acceptance "
                          "and --profile, or drop --pair")
    from sdlaws.plan.pairs import lookup

    pair = lookup(opts.pair)
    shapes = {}
    for role, shape, given in (("target", pair.target_shape, (opts.target, opts.target_params, opts.target_config)),
                               ("draft", pair.draft_shape, (opts.draft, opts.draft_params, opts.draft_config))):
        if all(v is None for v in given):
            if shape is None:  # a guessed shape would plan a different pair than the one whose acceptance is used
                raise ConfigError(f"pair {pair.name!r} has no {role} shape sdlaws can cost ({getattr(pair, role)}); "
                                  f"give --{role} NAME, --{role}-params N or --{role}-config config.json")
            shapes[role] = shape
    return replace(opts, resolved_pair=pair, **shapes)


def _floats(text: Optional[str], option: str, example: str = "0.8,0.7") -> Optional[list[float]]:
    """Comma-separated numbers of an option, or None when it was not given."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected comma-separated numbers, e.g. {example}") from None


def _batches(text: str) -> list[int]:
    """Batch sizes of --batch (integers in [1, MAX_BATCH])."""
    from sdlaws import checks

    values = _floats(text, "--batch", "1,8,64") or []
    checks.numbers("--batch", values, 1, MAX_BATCH, integer=True)
    return [int(v) for v in values]


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
        if isinstance(law, dict):  # a grouped fit file: one fit per group value
            if len(law) != 1:
                raise ConfigError(f"{path}: holds fits for groups {sorted(map(str, law))}; fit the group you plan "
                                  "for into its own file")
            law = next(iter(law.values()))
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

    shares = _floats(opts.rank_acceptance, "--rank-acceptance")
    positions = _floats(opts.position_acceptance, "--position-acceptance")
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

        with io.output_group():  # plan.json and the figures replace the previous ones together, or not at all
            io.save_json(data, opts.out / "plan.json")
            _figures(plan_set, opts.out)
    if opts.json_:
        typer.echo(json.dumps(data, indent=2))
    else:
        _render(plan_set, flags, opts.out, opts.table_format)


def _ci(value, lo=None, hi=None) -> str:
    """'value [lo, hi]', or just the value when there is no interval."""
    from sdlaws.plan.result import fmt

    return fmt(value) if lo is None or lo != lo else f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"


def _render(plan_set, flags, out_dir, fmt: str) -> None:
    """Every part present in the plan set (tables, engine flags), then interval notes and warnings."""
    from sdlaws.cli.output import Output
    from sdlaws.plan.result import fmt as num

    out = Output(fmt)
    out.text(plan_set.title, style="bold")
    out.text(plan_set.inputs["cost_model"]["statement"])
    if plan_set.inputs.get("acceptance_source"):
        out.text(f"Acceptance: {plan_set.inputs['acceptance_source']}")
    if "serving" in plan_set.inputs and plan_set.inputs["cost_model"]["kind"] == "roofline":
        out.text(_roofline_line(plan_set.inputs["serving"]))
    for key in ("draft_size_objectives", "served_draft"):  # which of the two draft-size optima is served
        if plan_set.inputs.get(key):
            out.text(plan_set.inputs[key])
    for plan in (p for p in plan_set.select("draft_params") if "SDSL" in p.objective):
        for line in plan.summary().splitlines():
            out.text(line)
    t = plan_set.tables
    if "draft_size_vs_target" in t:
        out.table("SDSL N* versus target size M (objective: tokens per FLOP; 95% interval)",
                  ["target M", "N*", "N*/M", "gamma", "alpha", "speedup", "mu*M+M0 [S]"],
                  [[num(r.target_params), _ci(r.draft_params, r.draft_params_lower, r.draft_params_upper),
                    num(r.draft_to_target), num(r.gamma), num(r.alpha), num(r.speedup), num(r.sdsl_shortcut_params)]
                   for r in t["draft_size_vs_target"].itertuples()])
    if "draft_size_by_batch" in t:
        out.table("Roofline N* per batch size (objective: tokens/s)", ["batch", "N*", "gamma", "speedup"],
                  [[num(r.batch_size), _ci(r.draft_params, r.draft_params_lower, r.draft_params_upper),
                    num(r.gamma), num(r.speedup)] for r in t["draft_size_by_batch"].itertuples()])
    if "serving" in t:
        cost = "step-time law" if plan_set.inputs["cost_model"]["kind"] == "steptime" else "roofline"
        out.table(*_serving_table(t["serving"], cost))
    if "engine_serving" in t:
        out.table(*_engine_table(t["engine_serving"]))
    if flags is not None:
        for engine, column in (("vLLM (chain draft)", "vllm"), ("SGLang (tree draft)", "sglang")):
            out.text(f"{engine} flags by batch size", style="bold")
            for batches, flag in _grouped(flags, column):
                out.text(f"  batch {batches}: {flag}")
    pre = plan_set.select("draft_pretrain_tokens")
    if pre:
        out.table(*_pretraining_table(pre))
    for kind in dict.fromkeys(p.ci_kind for p in plan_set.plans):
        out.text(f"interval: {kind}")
    for warning in plan_set.warnings:
        out.text(f"warning: {warning}", style="yellow")
    if out_dir is not None:
        out.text(f"wrote {out_dir / 'plan.json'} and figures to {out_dir}")


def _roofline_line(serving: dict) -> str:
    """One line stating the roofline's assumptions: hardware, efficiencies, launch cost, ridge point, context."""
    from sdlaws.hardware import Hardware

    hw = Hardware.from_dict(serving["hardware"])
    return (f"Roofline: {hw.name} ({hw.source}); efficiency FLOP/s {hw.flops_efficiency:.2f}, HBM "
            f"{hw.hbm_efficiency:.2f}; {hw.launch_overhead_s * 1e6:.1f} us per kernel; ridge point "
            f"{hw.machine_balance_flops_per_byte:.0f} FLOP/byte; {serving['dtype']}, context {serving['kv_len']} "
            f"tokens, tp={serving['tp']}")


def _grouped(flags, column: str) -> list[tuple[str, str]]:
    """Consecutive batch sizes sharing a flag string, as ("1-16", flag) pairs."""
    groups: list[list] = []
    for r in flags.itertuples():
        flag = getattr(r, column)
        if groups and groups[-1][1] == flag:
            groups[-1][0].append(r.batch_size)
        else:
            groups.append([[r.batch_size], flag])
    return [(f"{b[0]}-{b[-1]}" if len(b) > 1 else f"{b[0]}", flag) for b, flag in groups]


def _engine_table(best):
    """Title, header and rows of the best engine configuration per batch size."""
    from sdlaws.plan.result import fmt

    header = ["batch", "best configuration", "tokens/step", "steps/batch", "step ms", "decode tok/s",
              "AR decode tok/s", "speedup"]
    rows = [[fmt(r.batch_size), r.label, f"{r.tau:.3f}", f"{r.steps:.1f}", f"{r.step_s * 1e3:.3f}",
             fmt(r.decode_tokens_per_s), fmt(r.ar_decode_tokens_per_s), f"{r.decode_speedup:.3f}"]
            for r in best.itertuples()]
    return "Engine configuration per batch size (predicted decode throughput)", header, rows


def _serving_table(serving, cost: str):
    """Title, header and rows of the per-batch serving plan (``cost`` names the cost model)."""
    from sdlaws.plan.result import fmt

    law = "law_topk" in serving
    header = ["batch", "AR tok/s", "chain gamma", "Leviathan gamma", "chain speedup", "tree steps/topk/tokens",
              "tree top-k", "tree speedup", "verify", "fits"] + (["law k*"] if law else [])
    rows = []
    for r in serving.itertuples():
        row = [fmt(r.batch_size), fmt(r.ar_tokens_per_s), _ci(r.chain_gamma, r.chain_gamma_lower, r.chain_gamma_upper),
               fmt(r.gamma_leviathan),
               _ci(r.chain_speedup, r.chain_speedup_lower, r.chain_speedup_upper),
               f"{r.tree_steps}/{r.tree_topk}/{r.tree_num_draft_tokens}",
               _ci(r.tree_topk, r.tree_topk_lower, r.tree_topk_upper),
               _ci(r.tree_speedup, r.tree_speedup_lower, r.tree_speedup_upper),
               "memory-bound" if r.verify_memory_bound else "compute-bound", "yes" if r.fits_memory else "NO"]
        rows.append(row + ([_ci(r.law_topk, r.law_topk_lower, r.law_topk_upper)] if law else []))
    return f"Serving settings per batch size ({cost}, 95% interval)", header, rows


def _pretraining_table(plans):
    """Title, header and rows of the pretraining plans."""
    from sdlaws.plan.result import fmt

    rows = [[fmt(p.inputs["batch_size"]), _ci(p.value, *(p.ci or (None, None))), fmt(p.settings["acceptance"]),
             _ci(p.speedup, *(p.speedup_ci or (None, None))), fmt(p.settings["train_gpu_hours"]),
             fmt(p.settings["serve_gpu_hours"]), fmt(p.settings["next_decade_serve_saving_gpu_hours"]),
             fmt(p.settings["next_decade_train_gpu_hours"])] for p in plans]
    return ("Optimal draft pretraining tokens D* (training + serving GPU-hours)",
            ["batch", "D*", "acceptance", "speedup", "train GPU-h", "serve GPU-h", "next decade saves",
             "next decade costs"], rows)


def _figures(plan_set, out: Path) -> None:
    """draft_size, serving and pretraining figures (PNG and SVG) for the parts present."""
    from sdlaws.plotting import styled

    styled(_draw_figures)(plan_set, out)


def _draw_figures(plan_set, out: Path) -> None:
    from matplotlib.figure import Figure

    from sdlaws.plotting import save

    drafts = plan_set.select("draft_params")
    if drafts:
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        for plan in drafts[:2]:  # SDSL tokens/FLOP and the roofline at the first batch size
            plan.plot(ax, label=plan.objective)
        ax.set(xlabel="draft parameters", ylabel="predicted speedup over autoregressive (×)",
               title="Throughput versus draft size\n(dashed: optimum; shaded: 95% interval)")
        ax.legend()
        save(fig, out / "draft_size.png")
    if "serving" in plan_set.tables:
        _serving_figure(plan_set.tables["serving"], out / "serving.png")
    pre = plan_set.select("draft_pretrain_tokens")
    if pre:
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        pre[0].plot(ax, y="objective", label="training + serving GPU-hours")
        ax.set(yscale="log", xlabel="draft pretraining tokens", ylabel="training + serving cost (GPU-hours)")
        ax.legend()
        save(fig, out / "pretraining.png")


def _serving_figure(serving, path: Path) -> None:
    """serving: optimal chain gamma and tree shape (depth, top-k) versus batch size, with the fitted law."""
    from matplotlib.figure import Figure

    from sdlaws.plotting import save

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    b, k = serving["batch_size"], serving["tree_topk"]
    ax.plot(b, serving["chain_gamma"], marker="s", label="chain: draft length γ")
    ax.plot(b, serving["tree_steps"], marker="^", label="tree: depth (steps)")
    ax.errorbar(b, k, yerr=[k - serving["tree_topk_lower"].fillna(k), serving["tree_topk_upper"].fillna(k) - k],
                marker="o", capsize=3, label="tree: top-k (candidates per depth)")
    if "law_topk" in serving:
        ax.plot(b, serving["law_topk"], "k--", label="fitted k* = c B^-p")
        ax.fill_between(b, serving["law_topk_lower"], serving["law_topk_upper"], color="k", alpha=0.1)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="batch size (sequences)", ylabel="tokens per step (γ, depth) or candidates (top-k)",
           title="Optimal speculation settings versus batch size (roofline)\n(bars: 95% interval of top-k)")
    ax.legend()
    save(fig, path)


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
    laws, batches = _laws(opts.fit), _batches(opts.batch)
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
    _emit(opts, _draft_size(opts, _laws(opts.fit), _batches(opts.batch)))


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
    laws, batches = _laws(opts.fit), _batches(opts.batch)
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
            steps: Steps = None, profile: Profile = None, max_new_tokens: MaxNew = 128, pair: PairName = None) -> None:
    """Optimal chain gamma and tree (steps, top-k, draft tokens) per batch size, with vLLM/SGLang flags; with
    --profile, the best of sdlaws's engine configurations by predicted decode tokens/s."""
    opts = PlanOptions.of(locals())
    laws, batches = _laws(opts.fit), _batches(opts.batch)
    setup, nstar = _served_setup(opts, laws)
    if opts.profile is not None:
        from sdlaws.plan.serving import engine_plan

        return _emit(opts, engine_plan(setup, batches, _profile(opts.profile), max_new_tokens=opts.max_new_tokens))
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


def _profile(path: Path):
    """The acceptance profile of --profile (the JSON forms `sdlaws measure --acceptance-profile` reads)."""
    from sdlaws.measure.profile import parse

    return parse(str(path))


def register(app: typer.Typer) -> None:
    """Add ``sdlaws plan`` and its sub-commands to the root app."""
    app.add_typer(plan_app, name="plan")
