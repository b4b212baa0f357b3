"""Run a grid of speculative-decoding configurations and append one ``spec`` row per configuration.

Before anything is loaded or written, the sweep checks what it can from configs alone (:meth:`Sweep.preflight`):
the output is a spec CSV (a torn last line is cut off), every model spec and config reads, text prompts have a
tokenizer, drafts share the target's vocabulary, prompts plus new tokens fit each model's context, and the
largest configuration fits in memory (:mod:`sdlaws.measure.memory`). Bad input is a one-line error; nothing is
written.

The sweep is resumable: each configuration has a stable ``run_id`` (:func:`run_id`), rows are appended as
soon as a configuration finishes (:func:`sdlaws.io.append_row`, fsync'ed), and configurations whose ``run_id``
is already ``ok`` in the output CSV are skipped. A configuration that fails (out of memory, weights that do not
load) becomes a ``status=failed`` row with the reason, and the sweep goes on.

Sweeps may share an output CSV: each grid point is claimed with a lock file (``filelock``, in
``.<csv name>.claims/`` next to the CSV) while it is measured, and re-checked against the CSV once claimed, so two
processes never measure the same configuration; a claim dies with its process.

A grid can be spread over several processes (one per GPU) appending to one CSV: ``shard=(i, n)`` measures
every n-th grid point starting at the i-th (:func:`shard_runs`). With ``tp_size > 1`` every target is split over
the processes of one torchrun launch (:mod:`sdlaws.measure.tp`): they decode together, rank 0 claims grid points
for all of them and writes the rows.

One module because it is one state machine: preflight checks, model loading, the configuration
loop, claims and row writing share the sweep's state; split, each piece would pass that state around.
"""

from __future__ import annotations

import math
import operator
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial, reduce
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

from filelock import FileLock, Timeout

from sdlaws import checks, io, rates, schema
from sdlaws.dtypes import dtype_bytes
from sdlaws.errors import ConfigError, error_cell, naming
from sdlaws.measure import memory, profile
from sdlaws.measure.config import MeasureConfig, stable_run_id
from sdlaws.measure.models import (ModelConfig, ModelInfo, device_name, free_device_memory, inspect_model,
                                   load_model, parse_spec, resolve_device)
from sdlaws.measure.prompts import PromptSet, load_prompts, select_texts, tokenize_prompts
from sdlaws.provenance import provenance


@dataclass(frozen=True)
class RunConfig:
    """One grid point: what is decoded with what (the workload is in :class:`MeasureConfig`)."""

    target: str
    draft: str | None
    method: Literal["ar", "chain", "tree"]
    num_spec_tokens: int      # chain length (tree: depth); 0 for ar
    tree_topk: int            # 1 for chains and ar
    tree_budget: int | None   # drafted tokens verified per step: num_spec_tokens (chain), topk * depth (tree); ar None
    batch_size: int
    temperature: float
    repeat: int = 0           # repeat index (MeasureConfig.repeats); enters the run id only when > 0

    @property
    def label(self) -> str:
        """Short human-readable description for the progress bar and failure lists."""
        shape = schema.config_label(self.method, self.num_spec_tokens, self.tree_topk)
        draft = f" <- {self.draft}" if self.draft else ""
        again = f" #{self.repeat}" if self.repeat else ""
        return f"{self.target}{draft} {shape} b={self.batch_size} T={self.temperature:g}{again}"

    def first(self) -> "RunConfig":
        """The same grid point's repeat 0 (repeats share one decoder and its warm-up)."""
        return replace(self, repeat=0)


class Decoder(Protocol):
    """What the sweep needs from a decoder (``sdlaws.measure.engine.SpecDecoder`` satisfies it)."""

    def warmup(self, prompts: list[list[int]], batch_size: int | None = None) -> None:
        """One untimed decode of ``prompts`` (allocation, CUDA graph capture): one batch, or with ``batch_size``
        one continuous run over that many rows."""

    def generate(self, prompts: list[list[int]]) -> tuple[list[list[int]], Any]:
        """Decode ``prompts`` as one batch: (new tokens, stats supporting ``+`` and ``to_row()``)."""

    def serve(self, prompts: list[list[int]], batch_size: int) -> tuple[list[list[int]], Any]:
        """Decode ``prompts`` with continuous batching over ``batch_size`` rows: (new tokens, stats)."""


#: ``factory(target_model, draft_model_or_None, run, config, max_prompt_len) -> Decoder``; ``max_prompt_len``
#: is the longest prompt the decoder will see (it sizes the KV cache).
DecoderFactory = Callable[[Any, Any, RunConfig, MeasureConfig, int], Decoder]


def engine_decoder(target, draft, run: RunConfig, config: MeasureConfig, max_prompt_len: int) -> Decoder:
    """The default :data:`DecoderFactory`: sdlaws's own :class:`~sdlaws.measure.engine.SpecDecoder`."""
    from sdlaws.measure.engine import DecodeConfig, SpecDecoder

    decode = DecodeConfig(method=run.method, num_spec_tokens=run.num_spec_tokens, tree_topk=run.tree_topk,
                          tree_budget=run.tree_budget if run.method == "tree" else None,
                          temperature=run.temperature, max_new_tokens=config.max_new_tokens, seed=config.seed,
                          cuda_graphs=config.cuda_graphs, fused_forward=config.fused_forward,
                          acceptance_profile=synthetic_profile(run, config))
    return SpecDecoder(target, draft, decode, max_prompt_len=max_prompt_len)


def synthetic_profile(run: RunConfig, config: MeasureConfig) -> profile.Profile | None:
    """The acceptance profile a run decodes with: the sweep's, except for ``ar`` rows (nothing to accept)."""
    return None if run.method == "ar" else config.acceptance_profile


def expand_grid(config: MeasureConfig) -> list[RunConfig]:
    """All configurations of a sweep, grouped by (target, draft) so each model is loaded once.

    Per target: an ``ar`` row per (batch size, temperature), then per draft every (num_spec_tokens, top-k, batch
    size, temperature); top-k 1 is a chain of num_spec_tokens drafts, top-k > 1 a tree of that depth and budget top-k
    x num_spec_tokens (at most ``config.tree_budget``); each grid point ``config.repeats`` times in a row.
    """
    runs = []
    for target in config.targets:
        runs += [RunConfig(target, None, "ar", 0, 1, None, b, t)
                 for b in config.batch_sizes for t in config.temperatures]
        for draft in config.drafts:
            for n in config.num_spec_tokens:
                for k in config.topks:
                    method = "chain" if k == 1 else "tree"
                    budget = n * k if method == "chain" else min(n * k, config.tree_budget or n * k)
                    runs += [RunConfig(target, draft, method, n, k, budget, b, t)
                             for b in config.batch_sizes for t in config.temperatures]
    runs = list(dict.fromkeys(runs))  # drop exact duplicates (e.g. a target listed twice), keep order
    return [replace(run, repeat=r) for run in runs for r in range(config.repeats)]


def run_id(run: RunConfig, config: MeasureConfig, gpu_name: str) -> str:
    """Stable id of a configuration on a device: grid point + workload + dtype/seed/label + device name.

    A synthetic profile enters only when set, so real-acceptance rows keep the ids they always had (old CSVs
    resume) and ``ar`` baselines are shared between real and synthetic sweeps; continuous batching likewise enters
    only when chosen (static rows keep their ids, and never share one with a continuous row).
    """
    workload = {k: getattr(config, k) for k in ("prompts", "num_prompts", "max_new_tokens", "max_prompt_len",
                                                 "chat_template", "dtype", "seed", "experiment", "cuda_graphs",
                                                 "fused_forward")}
    q = synthetic_profile(run, config)
    synthetic = {} if q is None else {"acceptance_profile": profile.to_json(q)}
    split = {"tp_size": config.tp_size} if config.tp_size > 1 else {}  # one-GPU rows keep their ids
    batching = {"batching": config.batching} if config.batching != "static" else {}
    point = asdict(run)
    if not run.repeat:
        del point["repeat"]  # single measurements keep the ids they had before repeats existed
    return stable_run_id({**point, **workload, **synthetic, **split, **batching, "gpu_name": gpu_name})


def shard_runs(runs: list[RunConfig], index: int, count: int) -> list[RunConfig]:
    """The runs of every ``count``-th grid point from the ``index``-th (repeats of a point stay together).

    The split depends on the grid alone, not on what is already measured, so each of ``count`` processes keeps
    its share across restarts and together they cover the grid once.
    """
    check_shard(index, count)
    points = list(dict.fromkeys(run.first() for run in runs))
    mine = set(points[index::count])
    return [run for run in runs if run.first() in mine]


def check_shard(index: int, count: int) -> None:
    """:class:`ConfigError` unless ``0 <= index < count`` (``--shard index/count``)."""
    if not 0 <= index < count:
        raise ConfigError(f"--shard {index}/{count}: expected i/n with 0 <= i < n, e.g. --shard 0/4 to --shard 3/4")


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep` (the rows themselves are in the CSV)."""

    out: Path
    num_runs: int
    num_skipped: int = 0
    num_ok: int = 0
    num_elsewhere: int = 0  # measured (or being measured) by another sweep on the same CSV meanwhile
    failures: list[tuple[str, str]] = field(default_factory=list)  # (configuration label, error)
    notes: list[str] = field(default_factory=list)                 # e.g. models without a perplexity

    def summary(self) -> str:
        """One line of counts, then one line per failure and note."""
        elsewhere = f", {self.num_elsewhere} by another sweep" if self.num_elsewhere else ""
        head = (f"{self.num_runs} configurations: {self.num_ok} measured, {len(self.failures)} failed, "
                f"{self.num_skipped} already in {self.out}{elsewhere}")
        return "\n".join([head, *(f"failed: {label}: {err}" for label, err in self.failures),
                          *(f"note: {note}" for note in self.notes)])


def run_sweep(config: MeasureConfig, out: str | os.PathLike, *, decoder_factory: DecoderFactory = engine_decoder,
              loader: Callable = load_model, inspect: Callable = inspect_model, shard: tuple[int, int] | None = None,
              progress: bool = True) -> SweepResult:
    """Measure every configuration of ``config`` (of its ``shard``) not yet ``ok`` in ``out``, appending one row
    each: checked first by :func:`prepare_sweep` (see it for the parameters), then :meth:`Sweep.run`."""
    return prepare_sweep(config, out, decoder_factory=decoder_factory, loader=loader, inspect=inspect,
                         shard=shard).run(progress)


def prepare_sweep(config: MeasureConfig, out: str | os.PathLike, *, decoder_factory: DecoderFactory = engine_decoder,
                  loader: Callable = load_model, inspect: Callable = inspect_model,
                  shard: tuple[int, int] | None = None, launching: bool = False) -> "Sweep":
    """A sweep checked and ready to :meth:`~Sweep.run`; nothing is loaded or written yet.

    Parameters
    ----------
    config : MeasureConfig
    out : path
        ``spec`` CSV, created if absent; its ``ok`` run ids are skipped.
    decoder_factory : DecoderFactory
        Builds the decoder of one configuration (default: :func:`engine_decoder`).
    loader : callable
        ``loader(spec, dtype=, device=, trust_remote_code=, seed=) -> (model, tokenizer, ModelInfo)``; with
        ``config.tp_size > 1`` targets are loaded with ``mesh=`` too (split over this torchrun launch).
    inspect : callable
        ``inspect(spec, trust_remote_code=, tokenizer=) -> ModelConfig``: a model's config (and tokenizer)
        without its weights, for the checks made before loading (default:
        :func:`~sdlaws.measure.models.inspect_model`).
    shard : (i, n), optional
        Measure only the i-th of n interleaved shares of the grid (:func:`shard_runs`).
    launching : bool
        Only check, in the process that is about to start the torchrun launch of a ``tp_size > 1`` sweep: the
        targets are not split and no device is touched (each rank checks its own device memory once launched).

    Returns
    -------
    Sweep

    Raises
    ------
    ConfigError, ModelError, InputError
        Bad input (:meth:`Sweep.preflight`).
    """
    if shard is not None:
        check_shard(*shard)
    device = resolve_device(config.device)
    gpu_name = "" if launching else device_name(device)  # (a name asks the driver; the launcher needs none)
    sweep = Sweep(config, Path(out), device, gpu_name, decoder_factory, loader, shard=shard)
    if config.tp_size > 1 and not launching:
        sweep.split_targets()
    sweep.preflight(inspect, device_memory=not launching)
    return sweep


class Sweep:
    """State of one sweep: loaded models, prompts, perplexities, output path."""

    def __init__(self, config: MeasureConfig, out: Path, device: str, gpu_name: str,
                 factory: DecoderFactory, loader: Callable, shard: tuple[int, int] | None = None):
        self.config, self.out, self.device, self.gpu_name, self.shard = config, out, device, gpu_name, shard
        self.factory, self.loader, self.target_loader = factory, loader, loader
        self.group, self.writes = None, True  # a tensor-parallel launch's process group; whether this rank writes
        checks.output_file("--out", out)
        io.check_appendable(out, "spec")
        io.repair_tail(out)
        start = io.run_status(out)
        self.rows_before = Counter(start["run_id"])
        self.ok_before = set(start.loc[start["status"].eq("ok"), "run_id"])
        if config.prompts != "random":  # random: models never have a tokenizer: say so before reading any text
            for target in config.targets:
                with naming("--target"):
                    kind = parse_spec(target).kind
                if kind == "random":
                    raise ConfigError(_no_tokenizer(config.prompts, target))
        # Read a JSONL prompt file (or build a text set) once, before any model loads: bad input fails fast.
        self.texts = None if config.prompts == "random" else select_texts(config.prompts, config.num_prompts,
                                                                             seed=config.seed)
        self.perplexities = load_perplexities(config.ppl_file, config.ppl_eval_set) if config.ppl_file else {}
        self.result = SweepResult(out=out, num_runs=0)
        self.todo: list[RunConfig] = []
        self.prompts: dict[str, PromptSet] = {}

    def split_targets(self) -> None:
        """Tensor parallel: targets split over this torchrun launch (drafts whole on every rank), decoders checked
        to agree across ranks, grid points claimed and rows written by rank 0 only.

        Every rank starts from rank 0's reading of the output and device name (the run ids): rank 0 read the file
        before this collective, and an ok row needs every rank's collectives, so none was appended since.
        """
        from sdlaws.measure import tp  # torch.distributed: imported only for split targets

        mesh = tp.join(self.config.tp_size, self.device)
        self.target_loader = partial(self.loader, mesh=mesh)
        self.factory = tp.checked(self.factory)
        self.group, self.writes = mesh.get_group(), tp.rank() == 0
        self.rows_before, self.ok_before, self.gpu_name = tp.from_rank0(
            (self.rows_before, self.ok_before, self.gpu_name), self.group)

    def preflight(self, inspect: Callable, device_memory: bool = True) -> None:
        """Check the models, prompts, context lengths and memory of the configurations to measure, from configs
        and tokenizers only: a one-line error (naming the option) before any weights load or any row is written.
        ``device_memory=False`` leaves the device alone (host memory is still checked).
        """
        c = self.config
        runs = expand_grid(c) if self.shard is None else shard_runs(expand_grid(c), *self.shard)
        self.todo = [r for r in runs if run_id(r, c, self.gpu_name) not in self.ok_before]
        self.result.num_runs, self.result.num_skipped = len(runs), len(runs) - len(self.todo)
        models: dict[str, ModelConfig] = {}
        for option, specs in (("--target", c.targets), ("--draft", c.drafts)):
            for spec in specs:
                if spec not in models:
                    with naming(option):
                        models[spec] = inspect(spec, trust_remote_code=c.trust_remote_code,
                                               tokenizer=option == "--target" and self.texts is not None)
        for target in c.targets:
            self.prompts[target] = self._prompt_set(target, models[target])
            for draft in c.drafts:
                _check_vocab(target, models[target], draft, models[draft])
            _check_context(c, self.prompts[target], [(s, models[s]) for s in (target, *c.drafts)],
                           depth=max(c.num_spec_tokens) if c.drafts else 0)
        self._check_memory(models, device_memory)

    def _prompt_set(self, spec: str, model: ModelConfig) -> PromptSet:
        """The prompts tokenised for one target (random ids drawn from its vocabulary for ``random``)."""
        c = self.config
        if self.texts is None:
            memory.check_random_prompts(c.num_prompts, c.max_prompt_len)
            return load_prompts("random", num_prompts=c.num_prompts, seed=c.seed, max_prompt_len=c.max_prompt_len,
                                vocab_size=model.vocab_size)
        if model.tokenizer is None:
            raise ConfigError(_no_tokenizer(c.prompts, spec))
        return tokenize_prompts(c.prompts, self.texts, model.tokenizer, max_prompt_len=c.max_prompt_len,
                                chat_template=c.chat_template)

    def _check_memory(self, models: dict[str, ModelConfig], device_memory: bool = True) -> None:
        """:class:`ConfigError` when the largest configuration to measure cannot fit (:mod:`sdlaws.measure.memory`):
        device memory (a split target's share on each device), and on a GPU host memory for the largest model's
        weights while it loads (``tp_size`` copies of a split checkpoint target)."""
        c, cuda = self.config, self.device.startswith("cuda")
        shapes = {spec: memory.model_shape(m.config, spec) for spec, m in models.items()}
        needs = [memory.need(run.label, shapes[run.target], shapes[run.draft] if run.draft else None, dtype=c.dtype,
                             batch_size=run.batch_size, longest_prompt=self.prompts[run.target].longest,
                             max_new_tokens=c.max_new_tokens, depth=run.num_spec_tokens, topk=run.tree_topk,
                             budget=run.tree_budget or 0, cuda=cuda, tp_size=c.tp_size)
                 for run in dict.fromkeys(r.first() for r in self.todo)]
        if device_memory:
            memory.check_fits(needs, memory.free_bytes(self.device), self.device)
        if cuda:
            copies = {spec: self._host_copies(spec) for spec in shapes}
            loads = [memory.Need(f"loading {spec}" + (f" on {copies[spec]} ranks" if copies[spec] > 1 else ""),
                                 shape.params * dtype_bytes(c.dtype) * copies[spec], 0, 0, 0)
                     for spec, shape in shapes.items() if shape is not None]
            memory.check_fits(loads, memory.host_available_bytes(), "the host")

    def _host_copies(self, spec: str) -> int:
        """Whole copies of a model's weights in host memory while it loads: each rank of a tensor-parallel launch
        reads a checkpoint target whole before cutting its shard (``random:`` weights are drawn on the device)."""
        c = self.config
        return c.tp_size if spec in c.targets and parse_spec(spec).kind not in ("random", "head") else 1

    def run(self, progress: bool = True) -> SweepResult:
        """Measure the configurations (of the shard) not yet ``ok`` in the output, grouped by target; the progress
        bar only where rows are written."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=not (progress and self.writes)) as bar:
            task = bar.add_task("measure", total=len(self.todo))
            for target_spec, group in groupby(self.todo, key=operator.attrgetter("target")):
                self._target_group(target_spec, list(group), bar, task)
        return self.result

    def _target_group(self, spec: str, runs: list[RunConfig], bar, task) -> None:
        """Load one target (and each of its drafts once) and measure its configurations."""
        loaded = self._load(spec, self.target_loader)
        if isinstance(loaded, str):
            return self._each_point(runs, bar, task, partial(self._fail, reason=loaded, target_info=None))
        target, _, info = loaded
        for draft_spec, group in groupby(runs, key=operator.attrgetter("draft")):
            draft = self._load(draft_spec, self.loader) if draft_spec else (None, None, None)
            work = (partial(self._fail, reason=draft, target_info=info) if isinstance(draft, str) else
                    partial(self._measure, target=target, target_info=info, draft=draft[0], draft_info=draft[2],
                            prompts=self.prompts[spec]))
            self._each_point(list(group), bar, task, work)
            del draft, work
            free_device_memory(self.device)
        del target
        free_device_memory(self.device)

    def _each_point(self, runs: list[RunConfig], bar, task, work: Callable[[list[RunConfig]], None]) -> None:
        """Call ``work`` with the repeats of each grid point that are still to measure once the point is claimed
        (:meth:`_claim`)."""
        for _, repeats in groupby(runs, key=RunConfig.first):
            repeats = list(repeats)
            bar.update(task, description=repeats[0].label)
            with self._claim(repeats) as pending:
                if pending:
                    work(pending)
            bar.advance(task, len(repeats))

    @contextmanager
    def _claim(self, runs: list[RunConfig]) -> Iterator[list[RunConfig]]:
        """Claim one grid point against other sweeps writing the same CSV, and yield its runs still to measure.

        The claim is an exclusive lock file per grid point; a point another process holds is being measured
        there (nothing to do here). Once claimed, the CSV is read again: a run that became ``ok``, or that got a
        row of any status since this sweep started, was measured by another sweep. The claim is released after
        the rows are appended (and dies with its process). In a tensor-parallel launch rank 0 claims for every
        rank and sends them the runs it found to measure, so all ranks decode the same configurations.
        """
        lock, pending = None, []
        if self.writes:
            claims = self.out.parent / f".{self.out.name}.claims"
            claims.mkdir(exist_ok=True)
            lock = FileLock(claims / f"{run_id(runs[0].first(), self.config, self.gpu_name)}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                lock = None
        try:
            if lock is not None:
                now = io.run_status(self.out)
                rows, ok = Counter(now["run_id"]), set(now.loc[now["status"].eq("ok"), "run_id"])
                ids = {run: run_id(run, self.config, self.gpu_name) for run in runs}
                pending = [run for run in runs
                           if ids[run] not in ok and rows[ids[run]] == self.rows_before[ids[run]]]
            if self.group is not None:
                from sdlaws.measure import tp

                pending = tp.from_rank0(pending, self.group)
            self.result.num_elsewhere += len(runs) - len(pending)
            yield pending
        finally:
            if lock is not None:
                lock.release()

    def _load(self, spec: str, loader: Callable):
        """(model, tokenizer, info) from ``loader``, or the one-line reason it failed to load."""
        try:
            return loader(spec, dtype=self.config.dtype, device=self.device,
                          trust_remote_code=self.config.trust_remote_code, seed=self.config.seed)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes failed rows, the sweep goes on
            reason = f"cannot load {spec}: {error_cell(exc)}"
        free_device_memory(self.device)
        return reason

    def _measure(self, runs: list[RunConfig], target, target_info: ModelInfo, draft, draft_info: ModelInfo | None,
                 prompts: PromptSet) -> None:
        """Decode the repeats of one configuration after one warm-up and append a row per repeat: ``ok`` with
        counts, or ``failed`` with the reason (a failure fails the repeats not yet measured)."""
        from sdlaws.measure import fastpath  # torch-dependent: imported only when decoding

        impl = fastpath.wrap(target).impl if self.config.fused_forward and fastpath.supports(target) else "hf"
        pending = list(runs)
        try:
            decoder = self._decoder(runs[0], target, draft, prompts.token_ids)
            while pending:
                stats, num_prompts = self._decode(decoder, prompts.token_ids, runs[0].batch_size)
                row = self._base_row(pending[0], target_info, draft_info)
                row.update(stats.to_row(), forward_impl=impl, kernel_choices=fastpath.kernel_choices(impl),
                           status="ok", error="", num_prompts=num_prompts)
                self._append(row)
                self.result.num_ok += 1
                pending.pop(0)
        except Exception as exc:  # noqa: BLE001 - one failed configuration must not stop the sweep
            self._fail(pending, error_cell(exc), target_info, draft_info, forward_impl=impl)
        free_device_memory(self.device)  # after the except block, so the traceback no longer pins tensors

    def _append(self, row: dict[str, Any]) -> None:
        """Append ``row`` to the output, from the one writing process of a tensor-parallel launch."""
        if self.writes:
            io.append_row(self.out, row, "spec")

    def _decoder(self, run: RunConfig, target, draft, prompts: list[list[int]]) -> Decoder:
        """The configuration's decoder, warmed up once: on the first batch, or (continuous batching) on one prompt
        more than the rows, so that a refill (an eager prefill of the rows done, shapes of its own) is warmed up too."""
        decoder = self.factory(target, draft, run, self.config, max(map(len, prompts)))
        if self.config.batching == "continuous":
            decoder.warmup(prompts[: run.batch_size + 1], batch_size=run.batch_size)
        else:
            decoder.warmup(full_batches(prompts, run.batch_size)[0])
        return decoder

    def _decode(self, decoder: Decoder, prompts: list[list[int]], batch_size: int) -> tuple[Any, int]:
        """Stats of decoding every prompt once, and the sequences decoded: static batches (the last one filled with
        repeated prompts, :func:`full_batches`), or one continuous run over ``batch_size`` rows (each prompt once;
        the last rows run out of prompts instead)."""
        if self.config.batching == "continuous":
            return decoder.serve(prompts, batch_size)[1], len(prompts)
        batches = full_batches(prompts, batch_size)
        return reduce(operator.add, (decoder.generate(batch)[1] for batch in batches)), sum(map(len, batches))

    def _base_row(self, run: RunConfig, target_info: ModelInfo | None,
                  draft_info: ModelInfo | None) -> dict[str, Any]:
        """Provenance + configuration columns of a row (model columns only for models that loaded)."""
        c = self.config
        row = {**provenance(self.gpu_name), "run_id": run_id(run, c, self.gpu_name), "dtype": c.dtype,
               "seed": c.seed, "experiment": c.experiment, "target_name": run.target, "draft_name": run.draft,
               "method": run.method, "num_spec_tokens": run.num_spec_tokens, "tree_topk": run.tree_topk,
               "tree_budget": run.tree_budget, "batch_size": run.batch_size, "temperature": run.temperature,
               "prompt_set": c.prompts, "max_new_tokens": c.max_new_tokens, "repeat": run.repeat,
               "tp_size": c.tp_size, "batching": c.batching, **acceptance_columns(run, c)}
        if target_info is not None:
            row.update(target_info.columns("target"), target_ppl=self._ppl(target_info.name, "target"))
        if draft_info is not None:
            row.update(draft_info.columns("draft"), draft_ppl=self._ppl(draft_info.name, "draft"),
                       draft_kind="head" if draft_info.head else "")
        return row

    def _ppl(self, name: str, role: str) -> float | None:
        """Perplexity of a model from ``--ppl`` (None, with a note, when the file has no row for it)."""
        if not self.config.ppl_file:
            return None
        value = lookup_perplexity(self.perplexities, name)
        note = f"no perplexity for {role} {name} in {self.config.ppl_file}"
        if value is None and note not in self.result.notes:
            self.result.notes.append(note)
        return value

    def _fail(self, runs: list[RunConfig], reason: str, target_info: ModelInfo | None,
              draft_info: ModelInfo | None = None, **columns) -> None:
        """Append a failed row with ``reason`` for each run (a model that does not load, a failed decode)."""
        for run in runs:
            row = {**self._base_row(run, target_info, draft_info), **columns, "status": "failed", "error": reason}
            self._append(row)
            self.result.failures.append((run.label, reason))


def _no_tokenizer(prompts: str, target: str) -> str:
    """The error of a text prompt set for a target without a tokenizer, with the fix."""
    return (f"--prompts {prompts} is a text set, but --target {target} has no tokenizer (random: models and "
            "directories without tokenizer files have none); use --prompts random for random token ids")


def _check_vocab(target: str, target_model: ModelConfig, draft: str, draft_model: ModelConfig) -> None:
    """:class:`ConfigError` when the draft's logits do not index the target's vocabulary."""
    if draft_model.vocab_size != target_model.vocab_size:
        raise ConfigError(f"--draft {draft}: its vocabulary has {draft_model.vocab_size} tokens, the target "
                          f"{target}'s {target_model.vocab_size}; a draft must share the target's tokenizer")


def _check_context(config: MeasureConfig, prompts: PromptSet, models: list[tuple[str, ModelConfig]],
                   depth: int) -> None:
    """:class:`ConfigError` when the longest prompt plus the new tokens (and the speculation slack of a tree of
    ``depth``) exceed a model's context length."""
    from sdlaws.measure.layout import furthest_position

    furthest = furthest_position(prompts.longest, config.max_new_tokens, depth)
    slack = furthest - prompts.longest - config.max_new_tokens
    for spec, model in models:
        limit = model.context_len
        if limit is not None and furthest > limit:
            room = limit - prompts.longest - slack
            fix = f"use --max-new-tokens <= {room}" if room >= 1 else "lower --max-prompt-len"
            extra = f" + {slack} of speculation slack" if slack else ""
            raise ConfigError(f"--max-new-tokens {config.max_new_tokens}: prompts of up to {prompts.longest} tokens "
                              f"+ {config.max_new_tokens} new tokens{extra} = {furthest} positions exceed the "
                              f"{limit}-token context of {spec}; {fix}")


def acceptance_columns(run: RunConfig, config: MeasureConfig) -> dict[str, str]:
    """``acceptance_source`` and ``acceptance_profile`` cells of a run's row (see :data:`sdlaws.schema.SPEC_RUN`)."""
    q = synthetic_profile(run, config)
    if q is None:
        return {"acceptance_source": "target", "acceptance_profile": ""}
    return {"acceptance_source": "synthetic", "acceptance_profile": profile.to_json(q)}


def full_batches(prompts: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Split prompts into batches of exactly ``batch_size``, repeating prompts cyclically to fill the last one.

    Every batch then runs at the batch size recorded in the row; ``num_prompts`` records the sequences decoded.
    """
    total = math.ceil(len(prompts) / batch_size) * batch_size
    seqs = [prompts[i % len(prompts)] for i in range(total)]
    return [seqs[i:i + batch_size] for i in range(0, total, batch_size)]


def load_perplexities(path: str | os.PathLike, eval_set: str | None = None) -> dict[str, float]:
    """``model_name -> perplexity`` from a ``ppl`` CSV (the last ok row per model wins).

    Raises
    ------
    ConfigError
        The file holds several eval sets and ``eval_set`` does not pick one, or ``eval_set`` is absent.
    """
    df = io.read_measurements(path, table="ppl", ok_only=True)
    sets = sorted(df["eval_set"].unique())
    if eval_set is not None:
        if eval_set not in sets:
            raise ConfigError(f"{path}: no rows with eval_set {eval_set!r}; it has {sets}")
        df = df[df["eval_set"].eq(eval_set)]
    elif len(sets) > 1:
        raise ConfigError(f"{path}: several eval sets {sets}; choose one with --ppl-eval-set")
    ppl = rates.perplexity(df)
    table = dict(zip(df["model_name"], ppl))
    # Local directories may be written as different relative paths: index their real path too.
    table.update({os.path.realpath(k): v for k, v in list(table.items()) if os.path.exists(k)})
    return {k: float(v) for k, v in table.items()}


def lookup_perplexity(table: dict[str, float], name: str) -> float | None:
    """Perplexity of model ``name`` (by spec string, or by real path for local directories), or None."""
    if name in table:
        return table[name]
    return table.get(os.path.realpath(name)) if os.path.exists(name) else None
