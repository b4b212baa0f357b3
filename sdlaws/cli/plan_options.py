"""The options of ``sdlaws plan``: their types and help, the ranges they are checked against, and
:class:`PlanOptions`, everything one command was given, checked and resolved (hardware, step-time law, --pair)
before any planning.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from sdlaws.errors import ConfigError

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
Fits = Annotated[Optional[list[Path]], typer.Option("--fit", help="Fitted law JSON from `sdlaws fit` (ppl_plane or "
                                                                  "ppl_plane_log, topk_batch, loglinear); repeatable.")]
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
SpecTokens = Annotated[Optional[int], typer.Option("--num-spec-tokens", "--gamma", help="Chain length a tau law was "
                                                   "measured at (num_spec_tokens; --gamma is its short alias).")]
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
Overheads = Annotated[Optional[Path], typer.Option("--overheads", help="With --profile: the engine's seconds per "
                                                   "step outside the forward passes, from `sdlaws validate --out DIR` "
                                                   "(DIR/validation.json) on the same GPU; added to every step.")]
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
    "tp": ("--tp", 1, 1024, True), "num_spec_tokens": ("--num-spec-tokens", 1, 64, True),
    "train_mfu": ("--train-mfu", 1e-3, 1.0, False), "samples": ("--samples", 1, 100_000, True),
    "seed": ("--seed", 0, 2**63 - 1, True),
    "max_new_tokens": ("--max-new-tokens", 1, 10_000_000, True),
}
MAX_BATCH = 1_000_000


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
    num_spec_tokens: Optional[int] = None
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
    overheads: Optional[Path] = None
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
        parse_batches(opts.batch)
        try:
            dtype_bytes(opts.dtype)
        except ConfigError as exc:
            raise ConfigError(f"--dtype: {exc}") from None
        if opts.out is not None:
            checks.output_dir("--out", opts.out)
        if opts.overheads is not None and opts.profile is None:
            raise ConfigError("--overheads adds the engine's per-step costs to the engine plan; give --profile too")
        Output(opts.table_format)  # an unknown --format stops here, before any work
        hardware, law = load_hardware(opts.hardware), None
        if opts.steps:
            from sdlaws.io import read_measurements
            from sdlaws.plan.cost import fit_steptime

            law = fit_steptime(read_measurements(opts.steps, table="step", ok_only=True), hardware)
        return _with_pair(replace(opts, resolved_hardware=hardware, step_law=law))


def _with_pair(opts: PlanOptions) -> PlanOptions:
    """The --pair row's target and draft shapes where the command line names none (its acceptance:
    :meth:`sdlaws.plan.session.PlanRequest.acceptance`)."""
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


def parse_floats(text: Optional[str], option: str, example: str = "0.8,0.7") -> Optional[list[float]]:
    """Comma-separated numbers of an option, or None when it was not given."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected comma-separated numbers, e.g. {example}") from None


def parse_batches(text: str) -> list[int]:
    """Batch sizes of --batch (integers in [1, MAX_BATCH])."""
    from sdlaws import checks

    values = parse_floats(text, "--batch", "1,8,64") or []
    checks.numbers("--batch", values, 1, MAX_BATCH, integer=True)
    return [int(v) for v in values]
