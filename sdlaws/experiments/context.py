"""What an experiment's measurement step works with: the corpus, the trained checkpoints, the output files, the
deadline, and thin wrappers over sdlaws's own measurement machinery (``sdlaws.measure.sweep.run_sweep`` for
speculative decoding, ``sdlaws.measure.ppl.measure_ppl`` for perplexity). No decoding loop lives here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdlaws import io
from sdlaws.errors import InputError
from sdlaws.experiments.scale import Scale
from sdlaws.train.corpus import Corpus
from sdlaws.train.families import TrainSpec
from sdlaws.train.trainer import Checkpoint

#: Drafts measured per ``run_sweep`` call: fewer target reloads, yet the deadline is still checked often.
DRAFTS_PER_SWEEP = 4
#: Prompts are cut from the test split at positions with no file boundary inside; draws tried per prompt.
PROMPT_DRAWS_PER_PROMPT = 50


@dataclass(frozen=True)
class Layout:
    """Where results go. A suite writes ``<dir>/<experiment>.csv`` and shared ``ppl.csv``, ``run.json``...;
    a single experiment writes its CSV at ``--out`` and the shared files beside it as ``<stem>-ppl.csv``...
    """

    directory: Path
    prefix: str = ""
    single: tuple[str, Path] | None = None   # (experiment, its CSV) for a single-experiment run

    @classmethod
    def for_suite(cls, directory: Path) -> "Layout":
        """Every file in ``directory``, named after its experiment."""
        return cls(Path(directory))

    @classmethod
    def for_single(cls, name: str, out: Path) -> "Layout":
        """Experiment ``name`` writes ``out``; shared files go beside it, prefixed with its stem."""
        out = Path(out)
        return cls(out.parent, f"{out.stem}-", (name, out))

    def spec(self, experiment: str) -> Path:
        """The ``spec`` CSV of ``experiment``."""
        if self.single and self.single[0] == experiment:
            return self.single[1]
        return self.directory / f"{self.prefix}{experiment}.csv"

    def file(self, name: str) -> Path:
        """A shared output file, e.g. ``ppl.csv``, ``run.json``, ``corpus-manifest.json``."""
        return self.directory / f"{self.prefix}{name}"


def spread(items: list) -> list:
    """``items`` reordered so that any prefix covers their range evenly: last, first, middle, quarters...

    Measurement steps run in this order, so a run cut short by its deadline still spans the whole axis.
    """
    n = len(items)
    order = [n - 1, 0][:n]
    queue = [(0, n - 1)]   # intervals whose interior is not ordered yet, breadth first
    while queue:
        lo, hi = queue.pop(0)
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        order.append(mid)
        queue += [(lo, mid), (mid, hi)]
    return [items[i] for i in order]


@dataclass
class Context:
    """Shared state of one experiment run (built by :func:`sdlaws.experiments.runner.run`)."""

    scale: Scale
    corpus: Corpus
    layout: Layout
    trained: dict[str, list[Checkpoint]]
    device: str
    dtype: str
    prompts: Path
    deadline: float | None = None
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)   # per-experiment outcomes for run.json
    #: Where the run's models are trained; heads trained by an experiment go under it too (and resume there).
    models_dir: Path | None = None

    # ---------------------------------------------------------------- models
    def checkpoints(self, spec: TrainSpec) -> list[Checkpoint]:
        """Every checkpoint of ``spec`` (raises :class:`InputError` if it was not trained)."""
        found = self.trained.get(spec.name)
        if not found:
            raise InputError(f"model {spec.name} has no checkpoint; it was not trained in this run")
        return found

    def final(self, spec: TrainSpec) -> Checkpoint:
        """The last checkpoint of ``spec``."""
        return self.checkpoints(spec)[-1]

    def train_heads(self, target: Checkpoint, *, layers: tuple[int, ...], seeds: tuple[int, ...], tokens: int,
                    keep_s: float = 0.0) -> list[Checkpoint]:
        """Train draft heads of every depth x seed on ``target`` with the head trainer (one shared target pass
        per step) under ``<models_dir>/heads-<target>/``, where a re-run resumes them; training stops early (with
        checkpoints) to leave ``keep_s`` seconds before the deadline. Returns each head's last checkpoint."""
        from sdlaws.train.heads import HeadTrainConfig, train_heads

        s = self.scale
        limit = None if self.deadline is None else max(0.0, self.time_left_s() - keep_s)
        config = HeadTrainConfig(seq_len=s.seq_len, batch_size=s.batch_size, device=self.device, data_seed=s.seed,
                                 time_limit_s=limit)
        out = (self.models_dir or self.layout.directory) / f"heads-{target.metadata['name']}"
        result = train_heads(str(target.path), self.corpus, out, config, layers=list(layers), tokens=tokens,
                             seed=seeds, progress=False)
        return [found[-1] for found in result.checkpoints.values() if found]

    # ---------------------------------------------------------------- time
    def time_left_s(self) -> float:
        """Seconds until the deadline (infinite without a budget)."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def out_of_time(self, what: str) -> bool:
        """True (and a note) when the deadline has passed, so ``what`` is skipped."""
        if self.time_left_s() > 0:
            return False
        self.notes.append(f"skipped (deadline reached): {what}")
        return True

    # ---------------------------------------------------------------- measurements
    @property
    def eval_set(self) -> str:
        """Name of the held-out set in ``ppl.csv``: the corpus's held-out set, by corpus hash."""
        return self.corpus.heldout_name

    def measure_ppl(self, checkpoints: list[Checkpoint]) -> None:
        """Perplexity of each checkpoint on the corpus's held-out set (sampled across test files; a format-1
        corpus's test split), at most ``ppl_eval_tokens`` of it, appended to the shared ``ppl.csv``."""
        from sdlaws.measure.ppl import measure_ppl

        s = self.scale
        for ckpt in checkpoints:
            if self.out_of_time(f"perplexity of {ckpt.name}"):
                return
            measure_ppl(str(ckpt.path), self.corpus.heldout_path, self.layout.file("ppl.csv"),
                        eval_set=self.eval_set, dtype=self.dtype, device=self.device, context_len=s.seq_len,
                        stride=s.seq_len, max_tokens=s.ppl_eval_tokens, seed=s.seed, experiment="ppl",
                        progress=False)

    def sweep(self, experiment: str, target: Checkpoint, drafts: list[Checkpoint], *, num_spec_tokens: tuple[int, ...],
              topks: tuple[int, ...] = (1,), batch_sizes: tuple[int, ...], temperatures: tuple[float, ...] = (0.0,),
              num_prompts: int | None = None, label: str | None = None) -> None:
        """Measure ``target`` with the drafts over the grid, :data:`DRAFTS_PER_SWEEP` drafts per ``run_sweep``
        (the target is loaded once per call; the deadline is checked between calls).

        Rows go to the experiment's CSV; ``label`` (default the experiment name) fills the ``experiment`` column.
        """
        from sdlaws.measure.config import MeasureConfig
        from sdlaws.measure.sweep import run_sweep

        ppl = self.layout.file("ppl.csv")
        for start in range(0, len(drafts), DRAFTS_PER_SWEEP):
            chunk = drafts[start:start + DRAFTS_PER_SWEEP]
            if self.out_of_time(f"{label or experiment}: {target.name} <- {', '.join(d.name for d in chunk)}"):
                return
            config = MeasureConfig(
                targets=(str(target.path),), drafts=tuple(str(d.path) for d in chunk), num_spec_tokens=num_spec_tokens,
                topks=topks, batch_sizes=batch_sizes, temperatures=temperatures, prompts=str(self.prompts),
                num_prompts=num_prompts or self.scale.num_prompts, max_new_tokens=self.scale.max_new_tokens,
                max_prompt_len=self.scale.prompt_tokens, chat_template=False, dtype=self.dtype, device=self.device,
                seed=self.scale.seed, experiment=label or experiment, ppl_file=str(ppl) if ppl.exists() else None,
                ppl_eval_set=self.eval_set if ppl.exists() else None)
            result = run_sweep(config, self.layout.spec(experiment), progress=False)
            self.results.setdefault(experiment, {}).setdefault("sweeps", []).append(result.summary())


def write_prompts(corpus: Corpus, path: Path, *, num_prompts: int, prompt_tokens: int, seed: int) -> Path:
    """Write ``num_prompts`` code prompts cut from the corpus **test** split as JSON lines ``{"prompt": text}``.

    Each prompt is ``prompt_tokens`` consecutive tokens of one held-out file (no file boundary inside), at a
    seeded random position, decoded to text. The models never trained on these files.
    """
    if path.exists():
        return path
    tokens = corpus.tokens("test")
    tokenizer = corpus.tokenizer()
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for _ in range(num_prompts * PROMPT_DRAWS_PER_PROMPT):
        if len(texts) == num_prompts or len(tokens) <= prompt_tokens:
            break
        start = int(rng.integers(0, len(tokens) - prompt_tokens))
        window = np.asarray(tokens[start:start + prompt_tokens])
        if not (window == corpus.eos_id).any():
            texts.append(tokenizer.decode(window.tolist()))
    if len(texts) < num_prompts:
        raise InputError(f"{corpus.path}: the test split has too few files of {prompt_tokens} tokens for "
                         f"{num_prompts} prompts; build a larger corpus")
    return io.save_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts), path)
