"""Run a grid of speculative-decoding configurations and append one ``spec`` row per configuration.

The sweep is resumable: each configuration has a stable ``run_id`` (:func:`run_id`), rows are appended as
soon as a configuration finishes (:func:`sdlaws.io.append_row`, fsync'ed), and configurations whose ``run_id``
is already ``ok`` in the output CSV are skipped. A configuration that fails (out of memory, an impossible
setting, a model that does not load) becomes a ``status=failed`` row with the reason, and the sweep goes on.

A grid can be spread over several processes (one per GPU) appending to one CSV: ``shard=(i, n)`` measures
every n-th grid point starting at the i-th (:func:`shard_runs`). With ``tp_size > 1`` every target is split over
the processes of one torchrun launch (:mod:`sdlaws.measure.tp`): they decode together and rank 0 writes the rows.
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import asdict, dataclass, field, replace
from functools import partial, reduce
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from sdlaws import io, rates
from sdlaws.errors import ConfigError, error_cell
from sdlaws.measure import profile
from sdlaws.measure.config import MeasureConfig, stable_run_id
from sdlaws.measure.models import ModelInfo, device_name, free_device_memory, load_model, resolve_device
from sdlaws.measure.prompts import PromptSet, load_prompts, select_texts, tokenize_prompts
from sdlaws.provenance import provenance


@dataclass(frozen=True)
class RunConfig:
    """One grid point: what is decoded with what (the workload is in :class:`MeasureConfig`)."""

    target: str
    draft: str | None
    method: Literal["ar", "chain", "tree"]
    num_spec_tokens: int      # gamma (tree: depth); 0 for ar
    tree_topk: int            # 1 for chains and ar
    tree_budget: int | None   # drafted tokens verified per step: gamma (chain), topk * depth (tree), None (ar)
    batch_size: int
    temperature: float
    repeat: int = 0           # repeat index (MeasureConfig.repeats); enters the run id only when > 0

    @property
    def label(self) -> str:
        """Short human-readable description for the progress bar and failure lists."""
        shape = {"ar": "ar", "chain": f"chain g={self.num_spec_tokens}",
                 "tree": f"tree d={self.num_spec_tokens} k={self.tree_topk}"}[self.method]
        draft = f" <- {self.draft}" if self.draft else ""
        again = f" #{self.repeat}" if self.repeat else ""
        return f"{self.target}{draft} {shape} b={self.batch_size} T={self.temperature:g}{again}"

    def first(self) -> "RunConfig":
        """The same grid point's repeat 0 (repeats share one decoder and its warm-up)."""
        return replace(self, repeat=0)


class Decoder(Protocol):
    """What the sweep needs from a decoder (``sdlaws.measure.engine.SpecDecoder`` satisfies it)."""

    def warmup(self, prompts: list[list[int]]) -> None:
        """One untimed decode of ``prompts`` (allocation, CUDA graph capture)."""

    def generate(self, prompts: list[list[int]]) -> tuple[list[list[int]], Any]:
        """Decode ``prompts`` as one batch: (new tokens, stats supporting ``+`` and ``to_row()``)."""


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

    Per target: an ``ar`` row per (batch size, temperature), then per draft every (gamma, top-k, batch size,
    temperature); top-k 1 is a chain of length gamma, top-k > 1 a tree of depth gamma and budget top-k x gamma (at most
    ``config.tree_budget``); each grid point ``config.repeats`` times in a row.
    """
    runs = []
    for target in config.targets:
        runs += [RunConfig(target, None, "ar", 0, 1, None, b, t)
                 for b in config.batch_sizes for t in config.temperatures]
        for draft in config.drafts:
            for gamma in config.gammas:
                for k in config.topks:
                    method = "chain" if k == 1 else "tree"
                    budget = gamma * k if method == "chain" else min(gamma * k, config.tree_budget or gamma * k)
                    runs += [RunConfig(target, draft, method, gamma, k, budget, b, t)
                             for b in config.batch_sizes for t in config.temperatures]
    runs = list(dict.fromkeys(runs))  # drop exact duplicates (e.g. a target listed twice), keep order
    return [replace(run, repeat=r) for run in runs for r in range(config.repeats)]


def run_id(run: RunConfig, config: MeasureConfig, gpu_name: str) -> str:
    """Stable id of a configuration on a device: grid point + workload + dtype/seed/label + device name.

    A synthetic profile enters only when set, so real-acceptance rows keep the ids they always had (old CSVs
    resume) and ``ar`` baselines are shared between real and synthetic sweeps.
    """
    workload = {k: getattr(config, k) for k in ("prompts", "num_prompts", "max_new_tokens", "max_prompt_len",
                                                 "chat_template", "dtype", "seed", "experiment", "cuda_graphs",
                                                 "fused_forward")}
    q = synthetic_profile(run, config)
    synthetic = {} if q is None else {"acceptance_profile": profile.to_json(q)}
    split = {"tp_size": config.tp_size} if config.tp_size > 1 else {}  # one-GPU rows keep their ids
    point = asdict(run)
    if not run.repeat:
        del point["repeat"]  # single measurements keep the ids they had before repeats existed
    return stable_run_id({**point, **workload, **synthetic, **split, "gpu_name": gpu_name})


def shard_runs(runs: list[RunConfig], index: int, count: int) -> list[RunConfig]:
    """The runs of every ``count``-th grid point from the ``index``-th (repeats of a point stay together).

    The split depends on the grid alone, not on what is already measured, so each of ``count`` processes keeps
    its share across restarts and together they cover the grid once.
    """
    if not 0 <= index < count:
        raise ConfigError(f"--shard {index}/{count}: expected i/n with 0 <= i < n, e.g. --shard 0/4 to --shard 3/4")
    points = list(dict.fromkeys(run.first() for run in runs))
    mine = set(points[index::count])
    return [run for run in runs if run.first() in mine]


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep` (the rows themselves are in the CSV)."""

    out: Path
    num_runs: int
    num_skipped: int = 0
    num_ok: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (configuration label, error)
    notes: list[str] = field(default_factory=list)                 # e.g. models without a perplexity

    def summary(self) -> str:
        """One line of counts, then one line per failure and note."""
        head = (f"{self.num_runs} configurations: {self.num_ok} measured, {len(self.failures)} failed, "
                f"{self.num_skipped} already in {self.out}")
        return "\n".join([head, *(f"failed: {label}: {err}" for label, err in self.failures),
                          *(f"note: {note}" for note in self.notes)])


def run_sweep(config: MeasureConfig, out: str | os.PathLike, *, decoder_factory: DecoderFactory = engine_decoder,
              loader: Callable = load_model, shard: tuple[int, int] | None = None,
              progress: bool = True) -> SweepResult:
    """Measure every configuration of ``config`` (of its ``shard``) not yet ``ok`` in ``out``, appending one row each.

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
    shard : (i, n), optional
        Measure only the i-th of n interleaved shares of the grid (:func:`shard_runs`).
    progress : bool
        Show a rich progress bar over configurations.

    Returns
    -------
    SweepResult
    """
    device = resolve_device(config.device)
    sweep = _Sweep(config, Path(out), device, device_name(device), decoder_factory, loader)
    if config.tp_size > 1:
        sweep.split_targets()
    return sweep.run(progress and sweep.writes, shard)


class _Sweep:
    """State of one sweep: loaded models, prompts, perplexities, output path."""

    def __init__(self, config: MeasureConfig, out: Path, device: str, gpu_name: str,
                 factory: DecoderFactory, loader: Callable):
        self.config, self.out, self.device, self.gpu_name = config, out, device, gpu_name
        self.factory, self.loader = factory, loader
        # Read a JSONL prompt file (or build a text set) once, before any model loads: bad input fails fast.
        self.texts = None if config.prompts == "random" else select_texts(config.prompts, config.num_prompts,
                                                                             seed=config.seed)
        self.perplexities = load_perplexities(config.ppl_file, config.ppl_eval_set) if config.ppl_file else {}
        self.result = SweepResult(out=out, num_runs=0)
        self.target_loader, self.writes = loader, True

    def split_targets(self) -> None:
        """Tensor parallel: targets split over this torchrun launch (drafts whole on every rank), decoders checked
        to agree across ranks, rows written by rank 0 only.

        Every rank reads the same ``ok`` set when it starts: an ok row needs every rank's collectives, so rank 0
        appends its first one only after all ranks have read the file.
        """
        from sdlaws.measure import tp  # torch.distributed: imported only for split targets

        self.target_loader = partial(self.loader, mesh=tp.join(self.config.tp_size, self.device))
        self.factory = tp.checked(self.factory)
        self.writes = tp.rank() == 0

    def run(self, progress: bool, shard: tuple[int, int] | None = None) -> SweepResult:
        """Measure the configurations (of ``shard``) not yet ``ok`` in the output, grouped by target."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        runs = expand_grid(self.config)
        if shard is not None:
            runs = shard_runs(runs, *shard)
        done = io.done_run_ids(self.out)
        todo = [r for r in runs if run_id(r, self.config, self.gpu_name) not in done]
        self.result.num_runs, self.result.num_skipped = len(runs), len(runs) - len(todo)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("measure", total=len(todo))
            for target_spec, group in groupby(todo, key=operator.attrgetter("target")):
                self._target_group(target_spec, list(group), bar, task)
        return self.result

    def _target_group(self, spec: str, runs: list[RunConfig], bar, task) -> None:
        """Load one target (and each of its drafts once) and measure its configurations."""
        loaded = self._load(spec, self.target_loader)
        if isinstance(loaded, str):
            return self._fail_all(runs, loaded, None, bar, task)
        target, tokenizer, info = loaded
        try:
            prompts = self._prompts(tokenizer, info)
        except ConfigError as exc:
            return self._fail_all(runs, str(exc), info, bar, task)
        for draft_spec, group in groupby(runs, key=operator.attrgetter("draft")):
            group = list(group)
            draft = self._load(draft_spec, self.loader) if draft_spec else (None, None, None)
            if isinstance(draft, str):
                self._fail_all(group, draft, info, bar, task)
                continue
            for _, repeats in groupby(group, key=RunConfig.first):
                repeats = list(repeats)
                bar.update(task, description=repeats[0].label)
                self._measure(repeats, target, info, draft[0], draft[2], prompts)
                bar.advance(task, len(repeats))
            del draft
            free_device_memory(self.device)
        del target
        free_device_memory(self.device)

    def _load(self, spec: str, loader: Callable):
        """(model, tokenizer, info) from ``loader``, or the one-line reason it failed to load."""
        try:
            return loader(spec, dtype=self.config.dtype, device=self.device,
                          trust_remote_code=self.config.trust_remote_code, seed=self.config.seed)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes failed rows, the sweep goes on
            reason = f"cannot load {spec}: {error_cell(exc)}"
        free_device_memory(self.device)
        return reason

    def _prompts(self, tokenizer, info: ModelInfo) -> PromptSet:
        """The prompts tokenised for one target (random ids drawn from its vocabulary for ``random``)."""
        c = self.config
        if self.texts is None:
            return load_prompts("random", num_prompts=c.num_prompts, seed=c.seed, max_prompt_len=c.max_prompt_len,
                                vocab_size=info.vocab_size)
        return tokenize_prompts(c.prompts, self.texts, tokenizer, max_prompt_len=c.max_prompt_len,
                                chat_template=c.chat_template)

    def _measure(self, runs: list[RunConfig], target, target_info: ModelInfo, draft, draft_info: ModelInfo | None,
                 prompts: PromptSet) -> None:
        """Decode the repeats of one configuration after one warm-up and append a row per repeat: ``ok`` with
        counts, or ``failed`` with the reason (a failure fails the repeats not yet measured)."""
        from sdlaws.measure import fastpath  # torch-dependent: imported only when decoding

        batches = full_batches(prompts.token_ids, runs[0].batch_size)
        impl = "fused" if self.config.fused_forward and fastpath.supports(target) else "hf"
        pending = list(runs)
        try:
            decoder = self._decoder(runs[0], target, draft, batches)
            while pending:
                stats = reduce(operator.add, (decoder.generate(batch)[1] for batch in batches))
                row = self._base_row(pending[0], target_info, draft_info)
                row.update(stats.to_row(), forward_impl=impl, status="ok", error="",
                           num_prompts=sum(map(len, batches)))
                self._append(row)
                self.result.num_ok += 1
                pending.pop(0)
        except Exception as exc:  # noqa: BLE001 - one failed configuration must not stop the sweep
            error = error_cell(exc)
            for run in pending:
                row = {**self._base_row(run, target_info, draft_info), "forward_impl": impl, "status": "failed",
                       "error": error}
                self._append(row)
                self.result.failures.append((run.label, error))
        free_device_memory(self.device)  # after the except block, so the traceback no longer pins tensors

    def _append(self, row: dict[str, Any]) -> None:
        """Append ``row`` to the output, from the one writing process of a tensor-parallel launch."""
        if self.writes:
            io.append_row(self.out, row, "spec")

    def _decoder(self, run: RunConfig, target, draft, batches: list[list[list[int]]]) -> Decoder:
        """The configuration's decoder, warmed up once on the first batch."""
        longest = max(len(p) for batch in batches for p in batch)
        decoder = self.factory(target, draft, run, self.config, longest)
        decoder.warmup(batches[0])
        return decoder

    def _base_row(self, run: RunConfig, target_info: ModelInfo | None,
                  draft_info: ModelInfo | None) -> dict[str, Any]:
        """Provenance + configuration columns of a row (model columns only for models that loaded)."""
        c = self.config
        row = {**provenance(self.gpu_name), "run_id": run_id(run, c, self.gpu_name), "dtype": c.dtype,
               "seed": c.seed, "experiment": c.experiment, "target_name": run.target, "draft_name": run.draft,
               "method": run.method, "num_spec_tokens": run.num_spec_tokens, "tree_topk": run.tree_topk,
               "tree_budget": run.tree_budget, "batch_size": run.batch_size, "temperature": run.temperature,
               "prompt_set": c.prompts, "max_new_tokens": c.max_new_tokens, "repeat": run.repeat,
               "tp_size": c.tp_size, **acceptance_columns(run, c)}
        if target_info is not None:
            row.update(target_info.columns("target"), target_ppl=self._ppl(target_info.name, "target"))
        if draft_info is not None:
            row.update(draft_info.columns("draft"), draft_ppl=self._ppl(draft_info.name, "draft"))
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

    def _fail_all(self, runs: list[RunConfig], reason: str, target_info: ModelInfo | None, bar, task) -> None:
        """Write a failed row for each run (used when a model or its prompts cannot be prepared)."""
        for run in runs:
            row = self._base_row(run, target_info, None)
            row.update(status="failed", error=reason)
            self._append(row)
            self.result.failures.append((run.label, reason))
            bar.advance(task)


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
