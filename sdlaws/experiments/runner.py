"""Run experiments end to end in one process: corpus -> one concurrent training run -> measurements -> files.

A GPU command starts on a fresh machine, so a run trains everything it measures. With a budget, the training
phase is cut (checkpoints saved, marked ``stopped_early``) so that every experiment keeps its reserved
measurement time, and measurement steps past the deadline are skipped with a note; rows already measured are
on disk (appended one by one), and ``run.json`` is rewritten after each phase.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdlaws import io
from sdlaws.errors import ConfigError, SdlawsError
from sdlaws.experiments import registry
from sdlaws.experiments.context import Context, Layout, write_prompts
from sdlaws.experiments.scale import SCALES, Scale, estimate_train_s, train_flops, trained_tokens
from sdlaws.provenance import git_sha, now_utc, version
from sdlaws.train.corpus import Corpus, CorpusConfig, build_corpus, load_corpus, python_source_roots
from sdlaws.train.families import TrainSpec, format_tokens
from sdlaws.train.trainer import TrainConfig, TrainResult, log_console, log_line, train_family

#: Seconds kept free at the end of a budget: writing run.json, copying the manifest, process exit.
MARGIN_S = 20.0
RUN_FORMAT = "sdlaws-experiment-run/1"
#: Files every run writes beside the experiment CSVs.
SHARED_FILES = ("ppl.csv", "run.json", "corpus-manifest.json")


@dataclass(frozen=True)
class RunPlan:
    """What a run will do: experiments, scale, directories, budget."""

    names: tuple[str, ...]
    scale: Scale
    work: Path
    layout: Layout
    budget_s: float | None
    corpus_dir: Path | None
    device: str

    @property
    def models(self) -> list[TrainSpec]:
        """Every model the experiments need, each once (shared by name), in experiment order."""
        specs: dict[str, TrainSpec] = {}
        for name in self.names:
            for spec in registry.get(name).models(self.scale):
                specs.setdefault(spec.name, spec)
        return list(specs.values())

    @property
    def reserve_s(self) -> float:
        """Measurement seconds reserved for the experiments and what they need (training is cut to leave them)."""
        measured = set(self.names)
        for name in self.names:
            measured.update(registry.get(name).needs)
        return sum(self.scale.reserve_s.get(name, 0.0) for name in measured)

    def summary(self) -> str:
        """The dry-run table: models with parameters, tokens (per parameter, and trained, WSD branches included),
        FLOPs and estimated training seconds on the scale's GPU, and the commands the plan needs."""
        s = self.scale
        lines = [f"experiments: {', '.join(self.names)}   scale: {s.name}   budget: {self.budget_s} s   "
                 f"measurement reserve: {self.reserve_s:.0f} s   schedule: {s.schedule}",
                 "outputs: " + ", ".join(str(p) for p in [*(self.layout.spec(n) for n in self.names),
                                                          *map(self.layout.file, SHARED_FILES)]),
                 f"{'model':22s} {'params':>9s} {'non-emb':>9s} {'tokens':>8s} {'tok/p':>6s} {'trained':>8s} "
                 f"{'ckpts':>5s} {'FLOPs':>8s} {f'est. {s.hardware} s':>13s}"]
        total = 0.0
        for spec in self.models:
            seconds = estimate_train_s(spec, s, s.hardware)
            total += seconds
            params = spec.params(s.vocab_size)
            lines.append(f"{spec.name:22s} {params / 1e6:8.2f}M {spec.non_embedding_params() / 1e6:8.2f}M "
                         f"{format_tokens(spec.tokens):>8s} {spec.tokens / params:6.1f} "
                         f"{format_tokens(trained_tokens(spec, s)):>8s} "
                         f"{len(spec.checkpoint_steps(s.tokens_per_step)):5d} {train_flops(spec, s):8.2e} "
                         f"{seconds:13.1f}")
        lines.append(f"estimated training time (sum, concurrent in one process): {total:.0f} s")
        if self.budget_s:
            lines.append(commands_line(total, self.reserve_s, self.budget_s))
        return "\n".join(lines)


def commands_line(train_s: float, reserve_s: float, budget_s: float) -> str:
    """How many resumable commands of ``budget_s`` the training needs (``--train-only``, each keeping
    :data:`MARGIN_S`), then one that measures (training done, it keeps ``reserve_s`` for the measurements)."""
    per_command = budget_s - MARGIN_S
    train_commands = max(0, math.ceil((train_s - max(0.0, per_command - reserve_s)) / per_command))
    return (f"commands of {budget_s:.0f} s: {train_commands} with --train-only (resumable), then 1 that finishes "
            f"training and measures ({reserve_s:.0f} s reserved)")


def plan(names: list[str], *, scale: str = "h100", work: Path = Path("runs/experiments"), out: Path | None = None,
         budget_s: float | None = None, corpus_dir: Path | None = None, device: str = "auto",
         suite: bool = False) -> RunPlan:
    """Build the :class:`RunPlan` of ``names`` (see ``sdlaws experiment --help`` for the options)."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    chosen = SCALES[scale]
    if suite:
        layout = Layout.for_suite(out or Path("measurements"))
    else:
        layout = Layout.for_single(names[0], out or Path("measurements") / f"{names[0]}.csv")
    if budget_s is not None and budget_s <= 0:
        raise ConfigError(f"--budget-s must be positive, got {budget_s}")
    return RunPlan(tuple(names), chosen, Path(work), layout, budget_s if budget_s is not None else chosen.default_budget_s,
                corpus_dir, device)


@dataclass
class RunResult:
    """Everything a run did, for the summary and ``run.json``."""

    plan: RunPlan
    corpus: Corpus
    started_utc: str
    timings_s: dict[str, float] = field(default_factory=dict)
    train: TrainResult | None = None
    context: Context | None = None

    def summary(self) -> str:
        """Corpus, training table, output files, notes and phase timings."""
        lines = [self.corpus.summary()]
        if self.train is not None:
            lines.append(self.train.summary())
        for name in self.plan.names:
            lines.append(f"{name}: {self.plan.layout.spec(name)}")
            for sweep in (self.context.results.get(name, {}).get("sweeps", []) if self.context else []):
                lines.append("  " + sweep.replace("\n", "\n  "))
        lines += [f"note: {n}" for n in (self.context.notes if self.context else [])]
        lines.append("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.timings_s.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The ``run.json`` record."""
        p = self.plan
        return {"format": RUN_FORMAT, "started_utc": self.started_utc, "written_utc": now_utc(),
                "experiments": list(p.names), "scale": p.scale.to_dict(), "budget_s": p.budget_s,
                "device": p.device, "git_sha": git_sha(),
                "versions": {k: version(k) for k in ("sdlaws", "torch", "transformers", "tokenizers")},
                "timings_s": self.timings_s, "corpus": self.corpus.to_dict(),
                "train": None if self.train is None else self.train.to_dict(),
                "notes": [] if self.context is None else self.context.notes,
                "results": {} if self.context is None else self.context.results}

    def save(self) -> None:
        """Write ``run.json`` and a copy of the corpus manifest beside the CSVs."""
        io.save_json(self, self.plan.layout.file("run.json"))
        shutil.copyfile(self.corpus.path / "manifest.json", self.plan.layout.file("corpus-manifest.json"))


def _corpus(plan: RunPlan, progress: bool) -> Corpus:
    """The given corpus, or the scale's corpus built (or reused) under the work directory."""
    if plan.corpus_dir is not None:
        return load_corpus(plan.corpus_dir)
    s = plan.scale
    sources = (str(python_source_roots()["stdlib"]),) if s.corpus_stdlib_only else ()
    config = CorpusConfig(sources=sources, vocab_size=s.vocab_size, test_fraction=s.corpus_test_fraction,
                          max_tokens=s.corpus_max_tokens, max_bytes=s.corpus_max_bytes,
                          tokenizer_sample_bytes=s.tokenizer_sample_bytes, seed=s.seed,
                          heldout_tokens=s.corpus_heldout_tokens, heldout_file_cap=s.corpus_heldout_file_cap,
                          native_and_docs=s.corpus_native_and_docs)
    return build_corpus(plan.work / s.name / "corpus", config, progress=progress)


def _device(name: str) -> tuple[str, str]:
    """(device, dtype) of the measurements: bf16 on CUDA, fp32 on CPU."""
    from sdlaws.measure.models import resolve_device

    device = resolve_device(name)
    return device, "bfloat16" if device.startswith("cuda") else "float32"


def run(plan: RunPlan, *, progress: bool = True, train_only: bool = False) -> RunResult:
    """Build the corpus, train every model of the plan concurrently, run each experiment's measurements
    (``train_only``: none; training that a budget cuts short resumes in the next command).

    Returns
    -------
    RunResult
        Also written as ``run.json`` (after training and after each experiment).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()   # one "Loading weights" bar per model load would bury the run's log
    console = log_console()
    started = time.monotonic()
    deadline = None if plan.budget_s is None else started + plan.budget_s
    device, dtype = _device(plan.device)
    log_line(console, f"experiments {', '.join(plan.names)} at scale {plan.scale.name} on {device} ({dtype}), "
                      f"budget {plan.budget_s} s")
    corpus = _corpus(plan, progress)
    result = RunResult(plan, corpus, now_utc(), {"corpus": time.monotonic() - started})
    log_line(console, f"corpus {corpus.path}: {corpus.num_tokens('train') / 1e6:.1f}M train tokens, "
                      f"{corpus.num_tokens('test') / 1e6:.2f}M test tokens ({result.timings_s['corpus']:.0f} s)")
    prompts = _prompts(plan, corpus)
    # a command that measures nothing keeps no measurement time: it trains until the deadline's margin
    result.train = _train(plan, corpus, device, deadline, 0.0 if train_only else plan.reserve_s, result, console,
                          progress)
    result.context = Context(plan.scale, corpus, plan.layout, result.train.checkpoints, device, dtype, prompts,
                             deadline, models_dir=_models_dir(plan, corpus))
    plan.layout.directory.mkdir(parents=True, exist_ok=True)
    result.save()
    for name in () if train_only else plan.names:
        _measure(name, result, console)
        result.save()
    return result


def _prompts(plan: RunPlan, corpus: Corpus) -> Path:
    """The held-out prompt file, with enough prompts for the largest batch of the scale."""
    s = plan.scale
    num_prompts = max(s.num_prompts, *s.topk_batch_sizes, *s.collapse_batch_sizes)
    name = f"prompts-test-{corpus.sha256[:8]}-{num_prompts}x{s.prompt_tokens}.jsonl"
    return write_prompts(corpus, plan.work / s.name / name, num_prompts=num_prompts,
                         prompt_tokens=s.prompt_tokens, seed=s.seed)


def _models_dir(plan: RunPlan, corpus: Corpus) -> Path:
    """Where the plan's models are trained: one directory per scale and corpus, shared by every run on them."""
    return plan.work / plan.scale.name / f"models-{corpus.sha256[:8]}"


def _train(plan: RunPlan, corpus: Corpus, device: str, deadline: float | None, reserve_s: float, result: RunResult,
           console, progress: bool) -> TrainResult:
    """Train every model of the plan, cut ``reserve_s`` before the deadline (the measurements' time)."""
    from sdlaws.measure.models import free_device_memory

    s = plan.scale
    limit = None if deadline is None else max(0.0, deadline - time.monotonic() - reserve_s - MARGIN_S)
    config = TrainConfig(seq_len=s.seq_len, batch_size=s.batch_size, device=device, data_seed=s.seed,
                         time_limit_s=limit, schedule=s.schedule, decay_fraction=s.decay_fraction,
                         warmup_fraction=s.warmup_fraction, checkpoint_every_s=s.checkpoint_every_s)
    started = time.monotonic()
    log_line(console, f"training {len(plan.models)} models concurrently"
             + ("" if limit is None else f", time limit {limit:.0f} s"))
    trained = train_family(plan.models, corpus, _models_dir(plan, corpus), config, progress=progress)
    result.timings_s["train"] = time.monotonic() - started
    free_device_memory(device)  # training's cached blocks back before timing memory-sensitive kernels
    log_line(console, f"training done in {result.timings_s['train']:.0f} s"
             + (" (some models stopped before their budget)" if trained.stopped_early else ""))
    return trained


def _measure(name: str, result: RunResult, console) -> None:
    """Run one experiment's measurements; a failure becomes a note and the next experiment still runs."""
    started = time.monotonic()
    log_line(console, f"measuring {name} ({result.context.time_left_s():.0f} s left)")
    try:
        registry.get(name).measure(result.context)
    except SdlawsError as exc:  # e.g. a model the deadline left untrained
        result.context.notes.append(f"{name}: {exc}")
    except Exception as exc:  # noqa: BLE001 - one broken experiment must not cost the others their GPU time
        console.print_exception()
        result.context.notes.append(f"{name} failed: {type(exc).__name__}: {' '.join(str(exc).split())}")
    result.timings_s[name] = time.monotonic() - started
