"""Sizes, token budgets and workloads of the experiments, and the arithmetic that makes them fit a GPU command.

Three scales: ``h100`` (the default: one NVIDIA H100, one command of at most 10 minutes, bf16), ``h200`` (the
throughput experiments re-run on one H200 as the planner's held-out test, a command run in the background for up to
15 minutes) and ``quick`` (CPU-sized smoke test). Every number of the ``h100`` scale is justified in ``docs/experiments.md``; the time
model :func:`estimate_train_s` is the same arithmetic, used by ``--dry-run`` and to reserve measurement time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sdlaws.errors import ConfigError
from sdlaws.hardware import get_preset
from sdlaws.train.families import TrainSpec

Shape = tuple[int, int]  # (decoder layers, hidden size)

#: Model FLOP utilisation of eager bf16-autocast training at 65,536 tokens per step, against the datasheet peak,
#: for widths below 768: ``MFU_AT_768 * d / 768``. Measured on an H200 by the h200-science Thm 1.1 run
#: (measurements/h200/science/pretrain-tokens-run.json, each model's tokens/s): d = 448 needs 0.113 and d = 256
#: 0.068-0.071 for the step times seen, i.e. 0.195-0.213 at 768 under this line (``tests/test_experiments_plan.py``
#: checks the estimate against that file). The earlier assumption, 0.30 * sqrt(d / 768) after nanoGPT's ~35-40%
#: with torch.compile at d = 768, was 2.2-2.5x too fast for these widths.
MFU_AT_768 = 0.20
#: Host overhead of one eager optimizer step of one model: about 75 kernels per layer (forward, backward) and a
#: fixed ~150 (embedding, head, loss, clipping, fused AdamW), at ~5 us per launch (hardware.py,
#: DEFAULT_LAUNCH_OVERHEAD_S = 4-6 us). An assumption: the first GPU run's measured tokens/s replaces it.
STEP_OVERHEAD_S = 0.75e-3
LAYER_OVERHEAD_S = 0.4e-3
#: Bytes moved per logit per training step: bf16 logits written and read (2 + 2), the fp32 copy for the loss
#: written and read (4 + 4), its gradient (4) and the bf16 gradient (2).
LOGIT_BYTES = 18


@dataclass(frozen=True)
class HeldoutCase:
    """One held-out configuration: draft index into ``Scale.pair_drafts``, shape, batch sizes, temperature."""

    draft: int
    num_spec_tokens: int
    topk: int
    batch_sizes: tuple[int, ...]
    temperature: float = 0.0


@dataclass(frozen=True)
class Scale:
    """Every size, budget and workload knob of the experiments at one scale (see the module docstring)."""

    name: str
    # corpus
    vocab_size: int
    corpus_max_tokens: int | None
    corpus_max_bytes: int | None
    corpus_stdlib_only: bool
    corpus_test_fraction: float
    tokenizer_sample_bytes: int
    # training (tokens per optimizer step = batch_size * seq_len)
    seq_len: int
    batch_size: int
    targets: tuple[Shape, ...]           # ppl-plane targets
    main_target: Shape                   # acceptance target of pretrain-tokens and draft-depth
    target_tokens: int
    depth_drafts: tuple[Shape, ...]      # draft-depth: 1..8 layers at 2-3 widths
    plane_drafts: tuple[Shape, ...]      # ppl-plane drafts
    draft_tokens: int
    pretrain_draft: Shape                # pretrain-tokens: one draft, log-spaced checkpoints
    pretrain_draft_tokens: int
    pretrain_checkpoints: int
    pair_target: Shape                   # topk-batch / collapse / heldout target
    pair_target_tokens: int
    pair_drafts: tuple[Shape, ...]       # [0] is the pair's draft; the others only appear in heldout
    pair_draft_tokens: int
    # measurement workload
    num_spec_tokens: int                 # chain length of the acceptance experiments
    acceptance_temperatures: tuple[float, ...]
    num_prompts: int                     # prompts of acceptance rows (decoded as one batch)
    prompt_tokens: int
    max_new_tokens: int
    ppl_eval_tokens: int
    tree_num_spec_tokens: int            # tree depth of topk-batch and collapse
    topks: tuple[int, ...]
    topk_batch_sizes: tuple[int, ...]
    min_timed_prompts: int               # timed rows decode at least this many sequences
    collapse_batch_sizes: tuple[int, ...]
    collapse_fixed_topk: int
    heldout: tuple[HeldoutCase, ...]
    # forward-pass timing (``step`` table) of the pair and of random-weight models, for the roofline
    step_batch_sizes: tuple[int, ...]
    step_tokens_per_row: tuple[int, ...]
    step_random_models: tuple[str, ...]
    step_random_batch_sizes: tuple[int, ...]     # fewer points: a 1B forward at 256 x 65 tokens takes ~70 ms
    step_random_tokens_per_row: tuple[int, ...]
    #: Measurement seconds reserved per experiment when a budget is set (training is cut to leave them).
    reserve_s: dict[str, float] = field(default_factory=dict)
    #: Wall-clock budget of one command when none is given (None: no limit).
    default_budget_s: float | None = None
    seed: int = 0
    #: Configurations the planner is fitted on besides the top-k grid (acceptance of every training draft at
    #: every temperature, deep chains, trees): the ``heldout`` experiment's training rows, never predicted.
    calibration: tuple[HeldoutCase, ...] = ()
    #: head-depth: feature-level heads of these depths on the pair target, one per (depth, initialisation
    #: seed), each trained on ``head_tokens`` (all in one run that shares the target pass).
    head_layers: tuple[int, ...] = ()
    head_seeds: tuple[int, ...] = (0,)
    head_tokens: int = 0
    #: The corpus's held-out evaluation set (perplexity): tokens, and the most taken from one test file.
    corpus_heldout_tokens: int = 1_048_576
    corpus_heldout_file_cap: int = 4096
    #: Also read the C/C++/CUDA sources and headers and the docs under the source roots (not Python alone).
    corpus_native_and_docs: bool = False
    #: Temperatures of the ppl-plane sweep (each analysed as its own plane).
    plane_temperatures: tuple[float, ...] = (0.0,)
    #: Learning-rate schedule of every model (``TrainConfig``): ``wsd`` makes each log-spaced checkpoint of the
    #: pretrain draft a finished run (a cool-down branch of one trunk), so Thm 1.1 is tested on finished runs.
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    warmup_fraction: float = 0.01
    #: First checkpoint of the pretrain draft as a fraction of its budget (None: the trainer's 1e-3).
    pretrain_first_fraction: float | None = None
    #: Training seeds of the key-point models (the pretrain draft, the plane's drafts): two or more give the
    #: analyses a seed factor (:func:`sdlaws.experiments.multiway.with_seed_noise`).
    seeds: tuple[int, ...] = (0,)
    #: Targets trained to this many tokens per parameter instead of ``target_tokens`` (None: the fixed budget).
    target_tokens_per_param: float | None = None
    #: The plane's targets' tokens per parameter where it differs from ``target_tokens_per_param`` (None: the same).
    plane_target_tokens_per_param: float | None = None
    #: Save every run's resume state this often, so a command killed from outside loses at most this much.
    checkpoint_every_s: float | None = None
    #: GPU preset of the dry run's time estimates.
    hardware: str = "H100-SXM"

    def __post_init__(self):
        """Refuse workloads that need more positions than the models are trained on."""
        # Prompt, generation and one step's drafted tokens must stay within the positions the models were
        # trained on (RoPE beyond seq_len is out of distribution).
        drafted = max([self.num_spec_tokens, self.tree_num_spec_tokens * max(self.topks),
                       *(c.num_spec_tokens * c.topk for c in (*self.heldout, *self.calibration))])
        needed = self.prompt_tokens + self.max_new_tokens + drafted + 1
        if needed > self.seq_len:
            raise ConfigError(f"scale {self.name}: prompts + generation + drafts need {needed} positions, more "
                              f"than seq_len {self.seq_len}")

    @property
    def tokens_per_step(self) -> int:
        """Training tokens per optimizer step."""
        return self.batch_size * self.seq_len

    def spec(self, shape: Shape, tokens: int, checkpoints: int = 1, seed: int | None = None,
             first_checkpoint_tokens: int | None = None) -> TrainSpec:
        """The :class:`TrainSpec` of ``shape`` trained for ``tokens`` (same name -> same model across experiments)."""
        return TrainSpec(layers=shape[0], hidden_size=shape[1], tokens=tokens, checkpoints=checkpoints,
                         seed=self.seed if seed is None else seed, first_checkpoint_tokens=first_checkpoint_tokens)

    def target_spec(self, shape: Shape) -> TrainSpec:
        """A target: ``target_tokens``, or ``target_tokens_per_param`` times its parameters, rounded up to whole
        steps (so the target is never short of its ratio)."""
        if self.target_tokens_per_param is None:
            return self.spec(shape, self.target_tokens)
        params = self.spec(shape, self.tokens_per_step).params(self.vocab_size)
        steps = math.ceil(self.target_tokens_per_param * params / self.tokens_per_step)
        return self.spec(shape, steps * self.tokens_per_step)

    def plane_target_spec(self, shape: Shape) -> TrainSpec:
        """A target of the plane: :meth:`target_spec` at ``plane_target_tokens_per_param`` where that is set."""
        if self.plane_target_tokens_per_param is None:
            return self.target_spec(shape)
        return replace(self, target_tokens_per_param=self.plane_target_tokens_per_param).target_spec(shape)

    def pretrain_specs(self) -> list[TrainSpec]:
        """The checkpointed pretrain draft, once per seed."""
        first = (None if self.pretrain_first_fraction is None
                 else round(self.pretrain_first_fraction * self.pretrain_draft_tokens))
        return [self.spec(self.pretrain_draft, self.pretrain_draft_tokens, self.pretrain_checkpoints, seed, first)
                for seed in self.seeds]

    def plane_draft_specs(self) -> list[TrainSpec]:
        """The plane's drafts, once per seed."""
        return [self.spec(shape, self.draft_tokens, seed=seed) for shape in self.plane_drafts for seed in self.seeds]

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict of every field (for run.json)."""
        return asdict(self)


def estimate_step_s(spec: TrainSpec, scale: Scale, hardware: str = "H100-SXM") -> float:
    """Estimated seconds of one optimizer step of ``spec``: the largest of compute, logit traffic and overhead."""
    hw = get_preset(hardware)
    tokens = scale.tokens_per_step
    mfu = MFU_AT_768 * min(1.0, spec.hidden_size / 768)
    compute_s = spec.train_flops_per_token(scale.vocab_size, scale.seq_len) * tokens / (hw.peak_bf16_flops_per_s * mfu)
    logits_s = tokens * scale.vocab_size * LOGIT_BYTES / hw.hbm_bytes_per_s
    overhead_s = STEP_OVERHEAD_S + LAYER_OVERHEAD_S * spec.layers
    return max(compute_s + logits_s, overhead_s)


def trained_tokens(spec: TrainSpec, scale: Scale) -> int:
    """Tokens the trainer runs through for ``spec``: its budget, plus under WSD the cool-down of every branch
    but the last (the trunk stops where the last branch leaves it), ``decay_fraction`` of each earlier budget."""
    steps = spec.checkpoint_steps(scale.tokens_per_step)
    extra = scale.decay_fraction * sum(steps[:-1]) if scale.schedule == "wsd" else 0.0
    return round((spec.total_steps(scale.tokens_per_step) + extra) * scale.tokens_per_step)


def train_flops(spec: TrainSpec, scale: Scale) -> float:
    """Training FLOPs of ``spec`` over :func:`trained_tokens` (Kaplan et al. 2020: 6 N + attention per token)."""
    return spec.train_flops_per_token(scale.vocab_size, scale.seq_len) * trained_tokens(spec, scale)


def estimate_train_s(spec: TrainSpec, scale: Scale, hardware: str = "H100-SXM") -> float:
    """Estimated training seconds of ``spec`` on ``hardware`` (see :func:`estimate_step_s`)."""
    steps = trained_tokens(spec, scale) / scale.tokens_per_step
    return steps * estimate_step_s(spec, scale, hardware)


H100 = Scale(
    name="h100",
    vocab_size=4096, corpus_max_tokens=100_000_000, corpus_max_bytes=None, corpus_stdlib_only=False,
    corpus_test_fraction=0.04, tokenizer_sample_bytes=32_000_000,
    seq_len=512, batch_size=128,
    targets=((6, 384), (8, 512), (10, 640)), main_target=(8, 512), target_tokens=50_000_000,
    depth_drafts=tuple((layers, width) for width in (128, 256) for layers in (1, 2, 3, 4, 6, 8)),
    plane_drafts=((1, 64), (2, 64), (1, 128), (2, 128), (4, 128), (2, 256), (4, 256), (8, 256)),
    draft_tokens=30_000_000,
    pretrain_draft=(4, 256), pretrain_draft_tokens=150_000_000, pretrain_checkpoints=12,
    pair_target=(12, 768), pair_target_tokens=50_000_000, pair_drafts=((2, 256), (4, 128)),
    pair_draft_tokens=50_000_000,
    num_spec_tokens=4, acceptance_temperatures=(0.0, 1.0), num_prompts=64, prompt_tokens=128, max_new_tokens=128,
    ppl_eval_tokens=1_048_576,
    tree_num_spec_tokens=4, topks=(1, 2, 4, 8, 16), topk_batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128),
    min_timed_prompts=16,
    collapse_batch_sizes=(128, 256), collapse_fixed_topk=16,
    heldout=(HeldoutCase(0, 2, 1, (1, 8, 24)), HeldoutCase(0, 6, 1, (1, 8, 24)), HeldoutCase(1, 3, 1, (1, 16)),
             HeldoutCase(0, 3, 3, (4, 48)), HeldoutCase(0, 4, 1, (2, 32), temperature=1.0)),
    # verify widths of every measured shape: num_spec_tokens + 1 for chains (2, 3, 4, 6) and topk * depth + 1 for trees
    step_batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256), step_tokens_per_row=(1, 3, 4, 5, 7, 9, 10, 17, 33, 65),
    step_random_models=("random:llama-3.2-1b",), step_random_batch_sizes=(1, 8, 64),
    step_random_tokens_per_row=(1, 5, 17, 65),
    reserve_s={"pretrain-tokens": 50, "draft-depth": 40, "ppl-plane": 45, "topk-batch": 140, "collapse": 40,
               "heldout": 50,
               "head-depth": 300},
    default_budget_s=480,
    head_layers=(1, 2, 3, 4, 6, 8), head_seeds=(0, 1), head_tokens=20_000_000,
)

QUICK = Scale(
    name="quick",
    vocab_size=320, corpus_max_tokens=None, corpus_max_bytes=1_500_000, corpus_stdlib_only=True,
    corpus_test_fraction=0.1, tokenizer_sample_bytes=1_000_000,
    seq_len=32, batch_size=4,
    targets=((2, 64), (1, 64)), main_target=(2, 64), target_tokens=1_280,
    depth_drafts=((1, 32), (2, 32)), plane_drafts=((1, 32),), draft_tokens=640,
    pretrain_draft=(1, 32), pretrain_draft_tokens=1_280, pretrain_checkpoints=2,
    pair_target=(2, 64), pair_target_tokens=1_280, pair_drafts=((1, 32), (2, 32)), pair_draft_tokens=640,
    num_spec_tokens=2, acceptance_temperatures=(0.0,), num_prompts=2, prompt_tokens=8, max_new_tokens=6,
    ppl_eval_tokens=256,
    tree_num_spec_tokens=2, topks=(1, 2), topk_batch_sizes=(1, 2), min_timed_prompts=2,
    collapse_batch_sizes=(4,), collapse_fixed_topk=2,
    heldout=(HeldoutCase(1, 3, 1, (1,)),), calibration=(HeldoutCase(0, 3, 1, (1,)),),
    step_batch_sizes=(1, 2), step_tokens_per_row=(1, 3), step_random_models=("random:tiny",),
    step_random_batch_sizes=(1,), step_random_tokens_per_row=(1,),
    head_layers=(1, 2), head_seeds=(0,), head_tokens=640,
    corpus_heldout_tokens=256, corpus_heldout_file_cap=64,
)

def _cases(drafts, temperatures, depth_topk_batches) -> tuple[HeldoutCase, ...]:
    """Every (draft, temperature) with every ``(depth, topk, batch sizes)``."""
    return tuple(HeldoutCase(d, depth, topk, batches, t) for d in drafts for t in temperatures
                 for depth, topk, batches in depth_topk_batches)


#: The H100 suite's pair on one H200, as the planner's out-of-sample test: three training drafts whose acceptance
#: (chains of 8, top-4 trees, T = 0 and 1, batch 8) and perplexity the planner is fitted on, beside the top-k
#: grid of the first; a fourth draft (index 3) is never measured for training, so its rows test the acceptance
#: law across drafts. Held out: 35 configurations over chain gamma 1-8, trees of depth 2-5 and top-k 2-6,
#: T = 0 and 1, batch 1-128, none of which the grid or the calibration measures.
H200 = replace(
    H100, name="h200", pair_drafts=((2, 256), (1, 128), (4, 256), (2, 128)),
    # 36M tokens: where the H100 suite's time limit stopped its pair, here as finished schedules (~3 minutes)
    pair_target_tokens=36_000_000, pair_draft_tokens=36_000_000,
    calibration=_cases((0, 1, 2), (0.0, 1.0), ((8, 1, (8,)), (4, 4, (8,)))),
    heldout=(_cases((0,), (0.0,), ((1, 1, (1, 24, 96)), (2, 1, (2, 48)), (3, 1, (1, 12, 128)), (5, 1, (4, 64)),
                                   (6, 1, (3, 24)), (8, 1, (1, 32, 96)), (3, 3, (4, 48)), (5, 2, (12, 96)),
                                   (2, 6, (1, 24))))
             + _cases((0,), (1.0,), ((2, 1, (2, 32)), (4, 1, (1, 24)), (6, 1, (12,)), (4, 3, (16,))))
             + _cases((1,), (0.0,), ((3, 1, (4, 48)),)) + _cases((2,), (1.0,), ((3, 1, (16,)),))
             + _cases((3,), (0.0,), ((2, 1, (1, 16)), (4, 1, (8,)), (4, 4, (24,))))
             + _cases((3,), (1.0,), ((3, 1, (8,)),))),
    reserve_s={"topk-batch": 160, "heldout": 240}, default_budget_s=900)

#: The acceptance laws tested in their regime, on one H200 over several resumable commands (arithmetic and
#: command sequence: docs/experiments.md, "Scale h200-science"). The corpus holds ~100 M train tokens, so no
#: model sees more than 4 epochs (Muennighoff et al. 2023: up to ~4 epochs of repeated data are worth nearly as
#: much as unique data): targets of 12-19 M parameters at 20 tokens per parameter (2.4-3.8 epochs); the Thm 1.1
#: draft (4.3 M) on one WSD trunk of 170 M tokens (40 per parameter), 12 finished branches from 1.36 M (2.1
#: decades), each seed its own trunk; the plane's 8 drafts (0.3-7.5 M) at 2 seeds, against 4 targets, at T = 0
#: and 1. Warm-up 0.5% of a run, so the first branch (leaving its trunk at 0.8 x 1.36 M tokens = 0.64% of 170 M)
#: starts after it. The plane fits one lease of 30 GPU minutes
#: (corpus, training, measurement; the estimate checked against the Thm 1.1 run, ``MFU_AT_768``): its targets at
#: 10 tokens per parameter and its drafts at 75 M tokens (10-235 per parameter), finished WSD runs all.
H200_SCIENCE = replace(
    H100, name="h200-science", corpus_max_tokens=None, corpus_native_and_docs=True,
    targets=((5, 320), (6, 384), (6, 448), (7, 448)), main_target=(7, 448), target_tokens_per_param=20,
    plane_target_tokens_per_param=10,
    plane_drafts=((1, 64), (2, 64), (1, 128), (2, 128), (4, 128), (2, 256), (4, 256), (8, 256)),
    draft_tokens=75_000_000, plane_temperatures=(0.0, 1.0),
    pretrain_draft=(4, 256), pretrain_draft_tokens=170_000_000, pretrain_checkpoints=12,
    pretrain_first_fraction=0.008, seeds=(0, 1),
    schedule="wsd", decay_fraction=0.2, warmup_fraction=0.005, checkpoint_every_s=120, hardware="H200",
    reserve_s={"pretrain-tokens": 150, "ppl-plane": 240}, default_budget_s=540)

SCALES: dict[str, Scale] = {s.name: s for s in (H100, QUICK, H200, H200_SCIENCE)}
