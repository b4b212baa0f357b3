"""Train families of small ``LlamaForCausalLM`` models from scratch on a corpus built by :mod:`.corpus`.

Several models are trained **concurrently in one process**: every optimizer step draws one batch of random
windows from the memory-mapped train shard and each model that is still training takes its step on it, one
after the other. CUDA kernels are queued asynchronously, so the host prepares the next model's kernels while
the GPU runs the current ones, and all models see exactly the same token stream (a model with a smaller
budget sees a prefix of a larger one's stream). The batch of step ``s`` is a pure function of
``(data seed, s)``, so a resumed run continues on the same tokens it would have seen without the stop.

Each model directory holds ``step-<tokens>/`` checkpoints (Hugging Face ``save_pretrained`` + tokenizer +
``sdlaws_train.json``) at log-spaced token counts, like the Pythia suite, and ``resume.pt`` (optimizer state
and step of the latest checkpoint). Re-running the same command continues from there; with
``checkpoint_every_s`` the state is also saved every so often (``latest/``), so a killed command loses at most
that much.

Two learning-rate schedules (``TrainConfig.schedule``):

- ``cosine``: warm-up, then cosine decay over the whole budget; the checkpoints before the last are snapshots of
  one unfinished run (Pythia-style).
- ``wsd`` (warmup-stable-decay; MiniCPM, Hu et al. 2024; Hägele et al. 2024, "Scaling Laws and Compute-Optimal
  Training Beyond Fixed Training Durations"): one trunk at constant learning rate after the warm-up, and for each
  checkpoint budget N a branch that leaves the trunk at ``N (1 - decay_fraction)`` and cools down over the last
  ``decay_fraction`` of N (``1 - sqrt`` shape, Hägele et al. §3) on the same token stream. Every branch is a
  finished run of budget N at the cost of its cool-down only. Branches are saved as ``decay-<tokens>/`` (the
  trainer's result lists them), the trunk as ``step-<tokens>/`` at the branch points; each branch has its own
  ``resume-decay-<tokens>.pt``, so trunk and branches resume independently.

Metadata records the final-window training loss, the held-out loss of finished runs on the corpus's held-out
set, tokens/s and model FLOP utilisation against the datasheet peak and against a measured matmul rate.

One module because the family trainer's loop, schedules, branches, checkpoints, resume and
metadata share one run state; the head trainer subclasses it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdlaws import checks, io
from sdlaws.errors import ConfigError, InputError
from sdlaws.measure.models import device_name, resolve_device
from sdlaws.provenance import git_sha, now_utc, version
from sdlaws.train.corpus import Corpus
from sdlaws.train.families import TrainSpec

if TYPE_CHECKING:
    import torch

METADATA_FILE = "sdlaws_train.json"
RESUME_FILE = "resume.pt"
TRAIN_FORMAT = "sdlaws-train/1"
SCHEDULES = ("cosine", "wsd")
#: Steps of each model at the start of each process left out of its busy time (compilation, autotuning).
UNTIMED_STEPS = 2


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by every model of one training run.

    Parameters
    ----------
    seq_len : int
        Tokens per training window (the model also predicts each window's next token).
    batch_size : int
        Windows per optimizer step; tokens per step = ``batch_size * seq_len``.
    weight_decay, beta1, beta2, grad_clip : float
        AdamW and gradient clipping as in GPT-3 / Pythia (0.1, 0.9, 0.95, 1.0).
    warmup_fraction : float
        Linear warm-up over this share of the steps, then cosine decay.
    min_lr_ratio : float
        Final learning rate / peak (0.1, Chinchilla, Hoffmann et al. 2022).
    device : str
        ``"auto"`` (CUDA if available), ``"cuda"``, ``"cpu"``...
    bf16 : bool
        bf16 autocast on CUDA (weights and optimizer stay fp32); CPU always runs fp32.
    compile : bool
        ``torch.compile`` each model on CUDA. Each distinct shape compiles once (tens of seconds), so it pays
        for long runs of few shapes, not for wide families trained for a few minutes.
    max_positions : int, optional
        ``max_position_embeddings`` written to the config (default ``seq_len``: positions the model was trained
        on; prompt + generated tokens should stay within it).
    data_seed : int
        Seed of the window positions.
    time_limit_s : float, optional
        Stop after this many seconds, saving a checkpoint of every unfinished model at the tokens it reached
        (its metadata says ``stopped_early``; under ``wsd`` only the resume state is saved).
    schedule : str
        ``"cosine"`` or ``"wsd"`` (module docstring).
    decay_fraction : float
        Under ``wsd``: share of each checkpoint's budget spent cooling down (Hägele et al. 2024 find 10-20%
        matches a cosine run of that budget; MiniCPM used about 10%).
    checkpoint_every_s : float, optional
        Also save the resume state of every model this often (seconds), besides the planned checkpoints.
    loss_window : int
        Steps averaged into ``final_window_train_loss`` (the last ones before each checkpoint).
    heldout_eval_tokens : int, optional
        Tokens of the corpus's held-out set scored at each finished checkpoint (``heldout_loss``); None: none.
    measure_matmul : bool
        Time a square matmul at start-up (:func:`sdlaws.measure.hwbench.matmul_flops_per_s`) for
        ``mfu_measured``.
    """

    seq_len: int = 512
    batch_size: int = 128
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    warmup_fraction: float = 0.01
    min_lr_ratio: float = 0.1
    device: str = "auto"
    bf16: bool = True
    compile: bool = False
    max_positions: int | None = None
    data_seed: int = 0
    time_limit_s: float | None = None
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    checkpoint_every_s: float | None = None
    loss_window: int = 50
    heldout_eval_tokens: int | None = 262_144
    measure_matmul: bool = True

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step: ``batch_size * seq_len``."""
        return self.batch_size * self.seq_len

    def check(self) -> "TrainConfig":
        """Return self, or raise :class:`ConfigError` for an impossible setting."""
        checks.number("--seq-len", self.seq_len, 2, 2**20, integer=True)
        checks.number("--batch-size", self.batch_size, 1, 2**20, integer=True)
        checks.number("--data-seed", self.data_seed, 0, 2**63 - 1, integer=True)
        if self.time_limit_s is not None:
            checks.number("--time-limit-s", self.time_limit_s, 0, 1e9)
        if self.max_positions is not None and self.max_positions < self.seq_len:
            raise ConfigError(f"max positions ({self.max_positions}) must be >= seq-len ({self.seq_len})")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("warmup fraction must be in [0, 1) and min lr ratio in [0, 1]")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        checks.number("--decay-fraction", self.decay_fraction, 1e-3, 0.999)
        checks.number("loss window", self.loss_window, 1, 2**31, integer=True)
        if self.checkpoint_every_s is not None:
            checks.number("--checkpoint-every-s", self.checkpoint_every_s, 0, 1e9)
        return self

    def resume_key(self) -> dict:
        """Settings that must match for a run to be resumed (not device, compile, time limit or evaluation)."""
        keep = ("seq_len", "batch_size", "weight_decay", "beta1", "beta2", "grad_clip", "warmup_fraction",
                "min_lr_ratio", "max_positions", "data_seed")
        wsd = {"schedule": self.schedule, "decay_fraction": self.decay_fraction} if self.schedule == "wsd" else {}
        return {k: getattr(self, k) for k in keep} | wsd


def lr_factor(step: int, total_steps: int, warmup_fraction: float, min_lr_ratio: float) -> float:
    """Learning-rate multiplier of step ``step`` (0-based): linear warm-up, then cosine to ``min_lr_ratio``."""
    warmup = max(1, round(warmup_fraction * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd_factor(step: int, total_steps: int, warmup_fraction: float, decay: tuple[int, int] | None) -> float:
    """Learning-rate multiplier under WSD: linear warm-up over ``warmup_fraction`` of the whole budget, then 1;
    on a branch ``decay = (start, steps)`` times ``1 - sqrt((step - start) / steps)`` from ``start`` on."""
    warmup = max(1, round(warmup_fraction * total_steps))
    factor = min(1.0, (step + 1) / warmup)
    if decay is not None and step >= decay[0]:
        factor *= 1.0 - math.sqrt((step - decay[0]) / decay[1])
    return factor


def wsd_branches(checkpoint_steps: list[int], decay_fraction: float) -> dict[int, int]:
    """Budget (steps) -> the trunk step its cool-down branch leaves from: ``budget - max(1, round(f budget))``.

    Raises :class:`ConfigError` when a budget is too short to leave the trunk after at least one step.
    """
    branches = {budget: budget - max(1, round(decay_fraction * budget)) for budget in checkpoint_steps}
    if min(branches.values()) < 1:
        raise ConfigError(f"under --schedule wsd every checkpoint needs a stable phase before its cool-down, but "
                          f"the first is at {min(checkpoint_steps)} step(s); raise --first-checkpoint")
    return branches


class TokenWindows:
    """Random training windows from a memory-mapped uint16 shard.

    ``batch(step)`` returns ``(batch_size, seq_len + 1)`` int64 ids: inputs are ``[:, :-1]``, next-token targets
    ``[:, 1:]``. Window starts are drawn uniformly from ``numpy.random.default_rng([seed, step])``.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int):
        if len(tokens) < seq_len + 2:
            raise InputError(f"the train split has {len(tokens)} tokens, fewer than one window of {seq_len + 1}; "
                             "build a larger corpus or lower --seq-len")
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed

    def batch(self, step: int) -> np.ndarray:
        """The ``(batch_size, seq_len + 1)`` windows of optimizer step ``step``."""
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.tokens) - self.seq_len - 1, size=self.batch_size)
        return np.stack([self.tokens[s:s + self.seq_len + 1] for s in starts]).astype(np.int64)


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: its directory and its ``sdlaws_train.json`` metadata."""

    path: Path
    metadata: dict = field(repr=False)

    @property
    def tokens(self) -> int:
        """Pretraining tokens seen at this checkpoint."""
        return int(self.metadata["pretrain_tokens"])

    @property
    def name(self) -> str:
        """``<model>@<tokens>``, for logs and notes."""
        return f"{self.metadata['name']}@{self.tokens}"


def list_checkpoints(model_dir: str | Path, prefix: str = "step") -> list[Checkpoint]:
    """The checkpoints of one model directory, by increasing token count: ``step-*`` (cosine runs, WSD trunk)
    or, with ``prefix="decay"``, the finished runs of a WSD schedule."""
    found = []
    for path in sorted(Path(model_dir).glob(f"{prefix}-*")):
        meta = path / METADATA_FILE
        if meta.is_file():
            found.append(Checkpoint(path, json.loads(meta.read_text())))
    return sorted(found, key=lambda c: c.tokens)


@dataclass
class TrainResult:
    """What a training run left on disk, with throughput, for every model."""

    checkpoints: dict[str, list[Checkpoint]]
    wall_time_s: float
    stopped_early: bool

    def final(self, name: str) -> Checkpoint:
        """The last checkpoint of model ``name``."""
        if not self.checkpoints.get(name):
            raise InputError(f"model {name!r} has no checkpoint; train it first")
        return self.checkpoints[name][-1]

    def summary(self) -> str:
        """A table: model, parameters, tokens, last train loss, tokens/s."""
        lines = [f"{'model':28s} {'params':>10s} {'tokens':>12s} {'loss':>7s} {'tok/s':>10s}"]
        for name, ckpts in self.checkpoints.items():
            m = ckpts[-1].metadata if ckpts else {}
            lines.append(f"{name:28s} {m.get('params', 0):10.3g} {m.get('pretrain_tokens', 0):12d} "
                         f"{m.get('train_loss', float('nan')):7.3f} {m.get('tokens_per_s', float('nan')):10.3g}")
        note = " (some models stopped before their budget)" if self.stopped_early else ""
        lines.append(f"wall time {self.wall_time_s:.1f} s{note}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain-type dict: wall time, stop flag and every checkpoint's path and metadata."""
        return {"wall_time_s": self.wall_time_s, "stopped_early": self.stopped_early,
                "checkpoints": {n: [{"path": str(c.path), **c.metadata} for c in cs]
                                for n, cs in self.checkpoints.items()}}


@dataclass
class _Run:
    """Training state of one model inside a family run."""

    spec: TrainSpec
    directory: Path
    model: Any
    forward: Any                    # the model or its torch.compile wrapper
    optimizer: Any
    total_steps: int
    checkpoint_steps: list[int]
    label: str = ""                 # "" for a cosine run or a WSD trunk, "decay-<tokens>" for a WSD branch
    decay: tuple[int, int] | None = None    # a branch's cool-down (first step, steps)
    branches: dict[int, int] = field(default_factory=dict)    # trunk: branch-point step -> budget steps
    step: int = 0                   # completed optimizer steps
    loss_sum: Any = None            # device scalar: summed loss since the last checkpoint (no host sync per step)
    loss_steps: int = 0
    busy_s: float = 0.0             # device seconds of the timed steps so far (persisted across resumes)
    timed_steps: int = 0            # steps whose time is in busy_s (persisted)
    process_steps: int = 0          # steps taken by this process (the first UNTIMED_STEPS are not timed)
    timer: list = field(default_factory=list)
    recent: deque = field(default_factory=deque)    # device losses of the last ``loss_window`` steps

    @property
    def done(self) -> bool:
        """True once the run has taken all its steps."""
        return self.step >= self.total_steps

    @property
    def prefix(self) -> str:
        """Checkpoint directory prefix: ``decay`` for a branch, else ``step``."""
        return "decay" if self.decay is not None else "step"

    @property
    def resume_file(self) -> str:
        """``resume.pt``, or ``resume-<label>.pt`` for a branch."""
        return f"resume-{self.label}.pt" if self.label else RESUME_FILE

    @property
    def latest_dir(self) -> str:
        """Directory of the periodic and interrupted saves: ``latest`` or ``latest-<label>``."""
        return f"latest-{self.label}" if self.label else "latest"


class _Clock:
    """Per-model busy time: CUDA events around each model's step (read at checkpoints), or wall time on CPU.

    The first :data:`UNTIMED_STEPS` steps of each model in each process are left out: under ``torch.compile``
    they include compilation and autotuning (tens of seconds), which would understate a steady-state MFU.
    """

    def __init__(self, device: "torch.device"):
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch

    def start(self):
        """Mark the start of one model's step (a recorded CUDA event, or the wall clock)."""
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, run: _Run, start) -> None:
        """Mark the end of ``run``'s step begun at ``start`` (not timed among a process's first steps)."""
        run.process_steps += 1
        if run.process_steps <= UNTIMED_STEPS:
            return
        run.timed_steps += 1
        if self.cuda:
            end = self.torch.cuda.Event(enable_timing=True)
            end.record()
            run.timer.append((start, end))
        else:
            run.busy_s += time.perf_counter() - start

    def collect(self, run: _Run) -> None:
        """Add the finished CUDA intervals to ``run.busy_s`` (synchronises the device)."""
        if self.cuda and run.timer:
            self.torch.cuda.synchronize()
            run.busy_s += sum(a.elapsed_time(b) for a, b in run.timer) / 1e3
            run.timer.clear()


class FamilyTrainer:
    """Trains a list of :class:`TrainSpec` concurrently on one corpus; see the module docstring.

    Parameters
    ----------
    specs : list of TrainSpec
        Models to train (names must be unique); each gets ``out / spec.name``.
    corpus : Corpus
        Token shards and tokenizer.
    out : path
        Parent directory of the model directories.
    config : TrainConfig
    """

    def __init__(self, specs: list[TrainSpec], corpus: Corpus, out: str | Path, config: TrainConfig = TrainConfig()):
        import torch

        names = [s.name for s in specs]
        if not specs or len(set(names)) != len(names):
            raise ConfigError(f"model names must be unique and at least one model given, got {names}")
        self.specs, self.corpus, self.out, self.config = specs, corpus, Path(out), config.check()
        self.device = torch.device(resolve_device(config.device))
        check_memory(specs, corpus.vocab_size, config, str(self.device))
        self.autocast_dtype = torch.bfloat16 if (self.device.type == "cuda" and config.bf16) else None
        self.windows = TokenWindows(corpus.tokens("train"), config.seq_len, config.batch_size, config.data_seed)
        self.hf_tokenizer = corpus.hf_tokenizer()
        self.clock = _Clock(self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.peak_flops_per_s = self._peak_flops_per_s()
        self.matmul_flops_per_s = self._measure_matmul() if config.measure_matmul else None

    # ---------------------------------------------------------------- setup and resume
    def _resume_key(self, spec: TrainSpec) -> dict:
        """What must match for ``resume.pt`` to be continued: the spec, the run settings, the corpus."""
        return {"spec": spec.to_dict(), "train": self.config.resume_key(), "corpus_sha256": self.corpus.sha256}

    def _run_key(self, run: _Run) -> dict:
        """:meth:`_resume_key`, plus the branch label of a WSD branch."""
        return self._resume_key(run.spec) | ({"branch": run.label} if run.label else {})

    def _prepare(self, spec: TrainSpec) -> _Run:
        """The run of one model, a cosine run or a WSD trunk, built or reloaded from its resume file."""
        tps = self.config.tokens_per_step
        steps = spec.checkpoint_steps(tps)
        if self.config.schedule == "cosine":
            return self._load(_Run(spec, self.out / spec.name, None, None, None, spec.total_steps(tps), steps))
        points: dict[int, list[int]] = {}
        for budget, start in wsd_branches(steps, self.config.decay_fraction).items():
            points.setdefault(start, []).append(budget)
        return self._load(_Run(spec, self.out / spec.name, None, None, None, max(points), sorted(points),
                               branches=points))

    def _branch(self, spec: TrainSpec, budget: int) -> _Run:
        """The (unloaded) WSD branch of ``spec`` that finishes at ``budget`` steps."""
        start = wsd_branches([budget], self.config.decay_fraction)[budget]
        label = f"decay-{budget * self.config.tokens_per_step}"
        return _Run(spec, self.out / spec.name, None, None, None, budget, [budget], label=label,
                    decay=(start, budget - start))

    def _started_branches(self, trunk: _Run) -> list[_Run]:
        """The branches of ``trunk`` that have a resume file (left by an earlier command), loaded."""
        budgets = [b for bs in trunk.branches.values() for b in bs]
        return [self._load(run) for run in map(lambda b: self._branch(trunk.spec, b), budgets)
                if (run.directory / run.resume_file).exists()]

    def _load(self, run: _Run) -> _Run:
        """Fill ``run``'s model and optimizer: fresh, or from its resume file and the checkpoint it names."""
        import torch

        run.directory.mkdir(parents=True, exist_ok=True)
        resume = run.directory / run.resume_file
        state = torch.load(resume, map_location="cpu", weights_only=True) if resume.exists() else None
        if state is not None and _normalised(state["key"]) != _normalised(self._run_key(run)):
            raise ConfigError(f"{run.directory} was trained with other settings (shape, budget, batch, schedule or "
                              "corpus); pass another --out or delete that directory")
        if state is not None:
            model = self._load_model(run.directory / state["checkpoint"])
        else:
            torch.manual_seed(run.spec.seed)
            model = self._new_model(run.spec)
        model.to(self.device).train()
        run.model, run.forward, run.optimizer = model, self._forward(model), self._optimizer(model, run.spec)
        run.loss_sum, run.recent = self._zero_loss(), deque(maxlen=self.config.loss_window)
        if state is not None:
            self._restore(run, state)
        return run

    def _restore(self, run: _Run, state: dict) -> None:
        """Optimizer, step, busy time and running losses of ``run`` from a resume state."""
        run.optimizer.load_state_dict(state["optimizer"])
        run.step, run.busy_s = int(state["step"]), float(state["busy_s"])
        run.timed_steps = int(state.get("timed_steps", run.step))    # older versions timed every step
        if "loss_sum" in state:    # resume files of older versions, saved at checkpoints only, had no running loss
            run.loss_sum += state["loss_sum"].to(self.device)
            run.loss_steps = int(state["loss_steps"])
            run.recent.extend(t.to(self.device) for t in state["recent"])

    def _zero_loss(self) -> "torch.Tensor":
        """The running loss sum of a fresh run (a device scalar)."""
        import torch

        return torch.zeros((), device=self.device)

    def _new_model(self, spec: TrainSpec):
        """A freshly initialised fp32 model of ``spec`` (the seed is set by the caller)."""
        from transformers import LlamaForCausalLM

        positions = self.config.max_positions or self.config.seq_len
        return LlamaForCausalLM(spec.llama_config(self.corpus.vocab_size, positions, self.corpus.eos_id))

    def _load_model(self, path: Path):
        """The fp32 model saved at checkpoint ``path`` (to resume from)."""
        import torch
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)

    def _optimizer(self, model, spec: TrainSpec):
        """AdamW with weight decay on matrices and the embedding only (fused on CUDA)."""
        import torch

        decay = [p for p in model.parameters() if p.dim() >= 2]     # matrices and the embedding (nanoGPT)
        no_decay = [p for p in model.parameters() if p.dim() < 2]   # RMSNorm gains
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=spec.peak_lr, betas=(self.config.beta1, self.config.beta2),
                                 fused=self.device.type == "cuda")

    def _forward(self, model):
        """The callable used for the forward pass: ``torch.compile(model)`` when asked for on CUDA."""
        import torch

        if self.config.compile and self.device.type == "cuda":
            return torch.compile(model)
        return model

    # ---------------------------------------------------------------- one step
    def _batch_inputs(self, batch: "torch.Tensor") -> Any:
        """What every model's step takes from one batch of ``(B, T+1)`` windows: here the windows themselves."""
        return batch

    def _set_lr(self, run: _Run) -> None:
        """The learning rate of ``run``'s next step: its peak times :func:`lr_factor` or :func:`wsd_factor`."""
        c = self.config
        if c.schedule == "wsd":
            factor = wsd_factor(run.step, run.spec.total_steps(c.tokens_per_step), c.warmup_fraction, run.decay)
        else:
            factor = lr_factor(run.step, run.total_steps, c.warmup_fraction, c.min_lr_ratio)
        for group in run.optimizer.param_groups:
            group["lr"] = run.spec.peak_lr * factor

    def _step(self, run: _Run, batch: "torch.Tensor") -> None:
        """One optimizer step of ``run`` on ``batch`` (``(B, T+1)`` ids on the device)."""
        import torch
        import torch.nn.functional as F

        self._set_lr(run)
        start = self.clock.start()
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            logits = run.forward(input_ids=inputs, use_cache=False).logits      # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())  # mean nats per token
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), self.config.grad_clip, foreach=True)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        self.clock.stop(run, start)
        self._account(run, loss.detach())

    @staticmethod
    def _account(run: _Run, losses: "torch.Tensor") -> None:
        """Close one step of ``run``: add its ``losses`` (device values, no host sync) to the running sums."""
        run.loss_sum += losses
        run.loss_steps += 1
        run.recent.append(losses)
        run.step += 1

    # ---------------------------------------------------------------- checkpoints
    def _metadata(self, run: _Run, stopped_early: bool) -> dict:
        """The ``sdlaws_train.json`` of ``run`` at its current step."""
        spec, vocab = run.spec, self.corpus.vocab_size
        tokens = run.step * self.config.tokens_per_step
        return {
            "format": TRAIN_FORMAT, "name": spec.name, "architecture": "LlamaForCausalLM",
            "params": spec.params(vocab), "non_embedding_params": spec.non_embedding_params(),
            "layers": spec.layers, "hidden_size": spec.hidden_size, "heads": spec.num_heads,
            "intermediate_size": spec.mlp_size, "vocab_size": vocab, "seq_len": self.config.seq_len,
            "pretrain_tokens": tokens, "step": run.step, "tokens_per_step": self.config.tokens_per_step,
            "planned_tokens": run.total_steps * self.config.tokens_per_step, "peak_lr": spec.peak_lr,
            "seed": spec.seed, "data_seed": self.config.data_seed, "corpus_sha256": self.corpus.sha256,
            "corpus_manifest_sha256": self.corpus.manifest_sha256, "corpus_path": str(self.corpus.path),
            **self._schedule_fields(run), **self._loss_fields(run),
            **(self._heldout_fields(run) if self._finished(run) and not stopped_early else {}),
            **self._throughput_fields(run, spec.train_flops_per_token(vocab, self.config.seq_len)),
            "stopped_early": stopped_early, "device": device_name(str(self.device)),
            "dtype": "bfloat16-autocast" if self.autocast_dtype is not None else "float32",
            "compile": self.config.compile and self.device.type == "cuda", "train_config": asdict(self.config),
            "git_sha": git_sha(), "timestamp_utc": now_utc(),
            "versions": {p: version(p) for p in ("sdlaws", "torch", "transformers", "tokenizers")},
        }

    def _finished(self, run: _Run) -> bool:
        """True for a run at the end of its schedule: a cosine run at its budget, a WSD branch at its budget."""
        return run.done and (self.config.schedule == "cosine" or run.decay is not None)

    def _schedule_fields(self, run: _Run) -> dict:
        """Schedule, and for WSD which part of it this run is and where its cool-down began."""
        tps = self.config.tokens_per_step
        fields = {"schedule": self.config.schedule, "finished_run": self._finished(run)}
        if self.config.schedule == "wsd":
            fields |= {"branch": "decay" if run.decay else "trunk", "decay_fraction": self.config.decay_fraction,
                       "decay_start_tokens": run.decay[0] * tps if run.decay else None}
        return fields

    @staticmethod
    def _loss_fields(run: _Run) -> dict:
        """``train_loss`` (mean since the last checkpoint, nats per token), ``train_loss_steps``, and the mean
        over the last ``loss_window`` steps, ``final_window_train_loss`` (to set beside the held-out loss)."""
        import torch

        loss = float(run.loss_sum.item()) / run.loss_steps if run.loss_steps else float("nan")
        window = float(torch.stack(list(run.recent)).mean()) if run.recent else float("nan")
        return {"train_loss": loss, "train_loss_steps": run.loss_steps, "final_window_train_loss": window,
                "final_window_steps": len(run.recent)}

    def _heldout_fields(self, run: _Run) -> dict:
        """Mean loss (nats per token) of a finished run on the first ``heldout_eval_tokens`` of the corpus's
        held-out set, in ``seq_len`` windows (as the experiments' perplexity): ``heldout_loss``."""
        import torch

        from sdlaws.measure.ppl import nll_sum

        if not self.config.heldout_eval_tokens:
            return {}
        ids = np.asarray(self.corpus.heldout_tokens()[:self.config.heldout_eval_tokens]).astype(np.int64)
        run.model.eval()
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            total, count = nll_sum(run.model, ids, context_len=self.config.seq_len, stride=self.config.seq_len)
        run.model.train()
        return {"heldout_loss": total / count, "heldout_eval_tokens": count, "heldout_set": self.corpus.heldout_name}

    def timed_tokens(self, run) -> int:
        """Tokens of ``run``'s timed steps (``run``: a model's run or the head trainer's feature clock)."""
        return run.timed_steps * self.config.tokens_per_step

    def _throughput_fields(self, run: _Run, flops_per_token: float) -> dict:
        """Tokens/s and model FLOP utilisation (Chowdhery et al. 2022, PaLM, App. B: model FLOPs / time / peak)
        against the datasheet peak (None off CUDA or on an unknown GPU) and against the measured matmul rate,
        over the timed steps (:class:`_Clock`)."""
        tokens = self.timed_tokens(run)
        flops = flops_per_token * tokens
        return {"busy_time_s": run.busy_s, "timed_steps": run.timed_steps,
                "tokens_per_s": tokens / run.busy_s if run.busy_s > 0 else float("nan"),
                "flops_per_token": flops_per_token, "peak_flops_per_s": self.peak_flops_per_s,
                "mfu": utilisation(flops, run.busy_s, self.peak_flops_per_s),
                "measured_matmul_flops_per_s": self.matmul_flops_per_s,
                "mfu_measured": utilisation(flops, run.busy_s, self.matmul_flops_per_s)}

    def _peak_flops_per_s(self) -> float | None:
        """Datasheet dense peak of this GPU at the training dtype (None on CPU or an unknown GPU)."""
        from sdlaws.hardware import match_preset
        from sdlaws.roofline import peak_flops_per_s

        hardware = match_preset(device_name(str(self.device))) if self.device.type == "cuda" else None
        if hardware is None:
            return None
        return peak_flops_per_s(hardware, "bfloat16" if self.autocast_dtype is not None else "float32")

    def _measure_matmul(self) -> float:
        """Achieved FLOP/s of a square matmul at the training dtype on this device (GPU: 8192^3, CPU: 256^3)."""
        from sdlaws.measure.hwbench import CPU_SIZES, GPU_SIZES, matmul_flops_per_s

        sizes = GPU_SIZES if self.device.type == "cuda" else CPU_SIZES
        dtype = "bfloat16" if self.autocast_dtype is not None else "float32"
        return matmul_flops_per_s(str(self.device), dtype, sizes)

    def _save(self, run: _Run, stopped_early: bool = False) -> Checkpoint:
        """Write ``<prefix>-<tokens>/`` atomically, the resume files of the branches that leave the trunk here, then
        ``run``'s own resume file pointing at the checkpoint (in that order, so a stop in between loses nothing)."""
        self.clock.collect(run)
        meta = self._metadata(run, stopped_early)
        final = run.directory / f"{run.prefix}-{meta['pretrain_tokens']}"
        self._write_model(run, final, meta)
        for budget in run.branches.get(run.step, ()):
            branch = self._branch(run.spec, budget)
            self._write_state(run, branch.directory / branch.resume_file, self._run_key(branch), final.name,
                              fresh=True)
        self._write_state(run, run.directory / run.resume_file, self._run_key(run), final.name)
        run.loss_sum.zero_()
        run.loss_steps = 0
        shutil.rmtree(run.directory / run.latest_dir, ignore_errors=True)   # superseded by this checkpoint
        return Checkpoint(final, meta)

    def _save_latest(self, run: _Run) -> None:
        """Save ``run``'s state to resume from (``latest*/`` and its resume file), not a checkpoint: running
        losses are kept, so a resumed run reports what an uninterrupted one would."""
        self.clock.collect(run)
        self._write_model(run, run.directory / run.latest_dir, None)
        self._write_state(run, run.directory / run.resume_file, self._run_key(run), run.latest_dir)

    def _write_model(self, run: _Run, final: Path, meta: dict | None) -> None:
        """Weights (and, for a checkpoint, tokenizer and ``meta``) into ``final``, replaced atomically."""
        tmp = run.directory / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with _quiet_hf_progress():
            run.model.save_pretrained(tmp)
        if meta is not None:
            self.hf_tokenizer.save_pretrained(tmp)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)

    def _write_state(self, run: _Run, path: Path, key: dict, checkpoint: str, fresh: bool = False) -> None:
        """A resume file at ``path``: ``run``'s step, optimizer, busy time and losses (none when ``fresh``: a
        branch starting from the trunk), and the checkpoint directory its weights are in."""
        import torch

        state = {"key": key, "checkpoint": checkpoint, "step": run.step, "busy_s": run.busy_s,
                 "timed_steps": run.timed_steps, "optimizer": run.optimizer.state_dict(),
                 "loss_sum": torch.zeros_like(run.loss_sum, device="cpu") if fresh else run.loss_sum.cpu(),
                 "loss_steps": 0 if fresh else run.loss_steps, "recent": [t.cpu() for t in run.recent]}
        with io.atomic_write(path, "wb") as fh:
            torch.save(state, fh)

    # ---------------------------------------------------------------- the loop
    def train(self, *, until_tokens: int | None = None, progress: bool = True) -> TrainResult:
        """Train every model to its budget and return its checkpoints.

        Parameters
        ----------
        until_tokens : int, optional
            Pause each model once it has seen this many tokens (its schedule still spans the whole budget, so
            a later call continues exactly where this one stopped): a long run split over several commands.
        progress : bool
            Show one rich progress bar per model (on stderr).

        Models already finished in ``out`` are left untouched; interrupted ones continue from ``resume.pt``
        (and WSD branches from theirs). A model stopped before its budget (``until_tokens`` or ``time_limit_s``)
        gets a checkpoint at the tokens it reached, with ``stopped_early`` in its metadata; under WSD only its
        resume state is saved (``latest*/``), since a checkpoint there would not be a finished run. The result
        lists the finished runs: ``step-*`` of cosine runs, ``decay-*`` of WSD branches.
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        started = time.monotonic()
        console = log_console()
        trunks = [self._prepare(spec) for spec in self.specs]
        runs = trunks + [branch for trunk in trunks for branch in self._started_branches(trunk)]
        deadline = None if self.config.time_limit_s is None else started + self.config.time_limit_s
        limit = None if until_tokens is None else max(1, -(-until_tokens // self.config.tokens_per_step))
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not progress) as bar:
            tasks = {r.spec.name: bar.add_task(f"train {r.spec.name}", total=r.total_steps, completed=r.step)
                     for r in trunks}
            self._loop(runs, limit, deadline, lambda run: bar.advance(tasks[run.spec.name]), console)
            for run in runs:
                if run.done or not run.loss_steps or run.step in run.checkpoint_steps:
                    continue
                if self.config.schedule == "wsd":
                    self._save_latest(run)
                else:
                    self._log(console, self._save(run, stopped_early=True))
        prefix = "decay" if self.config.schedule == "wsd" else "step"
        checkpoints = {r.spec.name: list_checkpoints(r.directory, prefix) for r in trunks}
        return TrainResult(checkpoints, time.monotonic() - started, any(not r.done for r in runs))

    def _loop(self, runs: list[_Run], step_limit: int | None, deadline: float | None, advance, console) -> None:
        """Step every unfinished model on the shared batch stream until all are done, paused or out of time.

        WSD branches join ``runs`` when the trunk reaches their branch point; they take the same batches as the
        trunk from there on. With ``checkpoint_every_s`` every unfinished run's state is saved that often.
        """
        import torch

        def active(run: _Run) -> bool:
            """Still training in this call (not done, not paused by ``step_limit``)."""
            return not run.done and (step_limit is None or run.step < step_limit)

        pending = [r for r in runs if active(r)]
        step = min((r.step for r in pending), default=0)
        every, saved = self.config.checkpoint_every_s, time.monotonic()
        while pending and (deadline is None or time.monotonic() < deadline):
            batch = torch.from_numpy(self.windows.batch(step)).to(self.device, non_blocking=True)
            inputs, started = None, []
            for run in pending:
                if run.step != step:
                    continue            # resumed further than this step: waits for the loop to catch up
                inputs = self._batch_inputs(batch) if inputs is None else inputs  # once per batch, if needed
                self._step(run, inputs)
                if not run.label:
                    advance(run)
                if run.step in run.checkpoint_steps:
                    self._log(console, self._save(run))
                    started += [self._load(self._branch(run.spec, b)) for b in run.branches.get(run.step, ())]
            runs += started
            pending = [r for r in pending + started if active(r)]
            if every is not None and time.monotonic() - saved >= every:
                for run in pending:
                    self._save_latest(run)
                saved = time.monotonic()
            step += 1

    @staticmethod
    def _log(console, ckpt: Checkpoint) -> None:
        """One log line per saved checkpoint: loss and measured tokens/s."""
        m = ckpt.metadata
        note = " (stopped before the budget)" if m["stopped_early"] else ""
        heldout = f", held-out {m['heldout_loss']:.3f}" if "heldout_loss" in m else ""
        mfu = f", MFU {m['mfu']:.1%}" if m.get("mfu") is not None else ""
        log_line(console, f"saved {ckpt.path.parent.name}/{ckpt.path.name}: loss {m['train_loss']:.3f}{heldout}, "
                          f"{m['tokens_per_s']:.3g} tok/s{mfu}{note}")


def log_console():
    """A rich console on stderr (progress bars and :func:`log_line`)."""
    from rich.console import Console

    return Console(stderr=True)


def log_line(console, message: str) -> None:
    """Print ``[HH:MM:SS] message`` unwrapped and unpadded (GPU logs come back as a short tail of text)."""
    console.print(f"[{time.strftime('%H:%M:%S')}] {message}", highlight=False, soft_wrap=True, markup=False)


@contextmanager
def _quiet_hf_progress():
    """Silence transformers' per-save tqdm bar (one line per checkpoint would drown the training log)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def utilisation(flops: float, seconds: float, peak: float | None) -> float | None:
    """``flops / (seconds * peak)``, or None without a peak or time."""
    return flops / (seconds * peak) if peak and seconds > 0 else None


def _normalised(value: dict) -> dict:
    """JSON round trip, so that tuples and lists (and int and float keys) compare equal."""
    return json.loads(json.dumps(value))


#: Bytes per parameter while training: float32 weights, gradients and the two AdamW moments.
TRAIN_BYTES_PER_PARAM = 16


def check_memory(specs: list[TrainSpec], vocab_size: int, config: TrainConfig, device: str) -> None:
    """:class:`ConfigError` when the models trained together cannot fit in the device's free memory, before any
    is built: a lower bound of their weights, gradients and AdamW states (:data:`TRAIN_BYTES_PER_PARAM`) and the
    float32 logits of one batch. Under WSD each model counts twice: its trunk and one cool-down branch."""
    from sdlaws.measure import memory

    params = sum(spec.params(vocab_size) for spec in specs) * (2 if config.schedule == "wsd" else 1)
    needed = params * TRAIN_BYTES_PER_PARAM + 4.0 * config.batch_size * config.seq_len * vocab_size
    limit = memory.free_bytes(device)
    if needed > limit:
        raise ConfigError(f"training {len(specs)} model(s) of {params:.3g} parameters in all needs at least "
                          f"{memory.gb(needed)} (weights, gradients and AdamW states in float32, and one batch's "
                          f"logits) but {device} has {memory.gb(limit)} free; train smaller models (--layers, "
                          "--hidden) or lower --batch-size")


def train_family(specs: list[TrainSpec], corpus: Corpus, out: str | Path, config: TrainConfig = TrainConfig(),
                 *, until_tokens: int | None = None, progress: bool = True) -> TrainResult:
    """Train ``specs`` concurrently on ``corpus`` into ``out/<spec.name>/``; see :meth:`FamilyTrainer.train`."""
    return FamilyTrainer(specs, corpus, out, config).train(until_tokens=until_tokens, progress=progress)
