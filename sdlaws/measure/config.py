"""Configuration of a ``sdlaws measure`` sweep, and the stable run ids that make sweeps resumable."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sdlaws import checks
from sdlaws.errors import ConfigError
from sdlaws.measure import profile

#: Accepted ranges of the numeric settings, checked before any model loads: field -> (option, low, high).
#: Generous for any real sweep; the context length of the models and the memory guard (sdlaws.measure.memory)
#: then bound the sizes further.
INT_RANGES: dict[str, tuple[str, int, int]] = {
    "num_spec_tokens": ("--num-spec-tokens", 1, 64), "topks": ("--topk", 1, 1024), "batch_sizes": ("--batch", 1, 2**20),
    "num_prompts": ("--num-prompts", 1, 100_000), "max_new_tokens": ("--max-new-tokens", 1, 2**24),
    "max_prompt_len": ("--max-prompt-len", 1, 2**24), "repeats": ("--repeats", 1, 1000),
    "tree_budget": ("--tree-budget", 1, 65536), "seed": ("--seed", 0, 2**63 - 1), "tp_size": ("--tp", 1, 1024),
}
MAX_TEMPERATURE = 100.0
#: How a sweep batches its prompts (``--batching``): static batches, or continuous batching as serving engines do.
BATCHING = ("static", "continuous")


def stable_run_id(fields_: dict[str, Any]) -> str:
    """16-hex-digit SHA-256 of a configuration dict (key order does not matter): the CSV resume key."""
    text = json.dumps(fields_, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MeasureConfig:
    """One speculative-decoding sweep: the grid (models x num_spec_tokens x top-k x batch x temperature) and its
    workload.

    Every target gets an ``ar`` baseline row per (batch size, temperature); every draft gets a ``chain`` row
    (top-k 1) or a ``tree`` row (top-k > 1, depth num_spec_tokens, budget top-k x num_spec_tokens nodes) per grid
    point. With an ``acceptance_profile`` the chain and tree rows are synthetic-acceptance timings
    (``acceptance_source = "synthetic"``); the ``ar`` rows are unaffected.
    """

    targets: tuple[str, ...] = field(metadata={"help": "target model specs (path, hub id[@rev], random:NAME)"})
    drafts: tuple[str, ...] = field(default=(), metadata={"help": "draft model specs; none -> AR rows only"})
    num_spec_tokens: tuple[int, ...] = field(default=(4,), metadata={"help": "draft tokens per step (tree: depth)"})
    topks: tuple[int, ...] = field(default=(1,), metadata={"help": "tree branching per depth (1 = chain)"})
    batch_sizes: tuple[int, ...] = field(default=(1,), metadata={"help": "sequences decoded together"})
    temperatures: tuple[float, ...] = field(default=(0.0,), metadata={"help": "sampling temperatures (0 = greedy)"})
    prompts: str = field(default="humaneval", metadata={"help": "built-in prompt set or JSONL file"})
    num_prompts: int = field(default=16, metadata={
        "help": "prompts per configuration (static batching: rounded up to full batches)"})
    max_new_tokens: int = field(default=128, metadata={"help": "tokens generated per prompt (EOS ignored)"})
    max_prompt_len: int = field(default=512, metadata={"help": "prompt tokens kept (the last ones)"})
    chat_template: bool = field(default=True, metadata={"help": "wrap prompts in the tokenizer's chat template"})
    dtype: str = field(default="bfloat16", metadata={"help": "model dtype"})
    device: str = field(default="auto", metadata={"help": "cuda, cuda:N, cpu or auto"})
    seed: int = field(default=0, metadata={"help": "prompt selection, sampling and random-weight seed"})
    experiment: str = field(default="", metadata={"help": "free-text label written to every row"})
    ppl_file: str | None = field(default=None, metadata={"help": "ppl CSV from `sdlaws measure ppl`"})
    ppl_eval_set: str | None = field(default=None, metadata={"help": "eval_set to take from ppl_file"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow model code from the hub"})
    cuda_graphs: bool = field(default=True, metadata={"help": "capture forward passes as CUDA graphs"})
    fused_forward: bool = field(default=True, metadata={"help": "fused fast-path forward for Llama/Mistral/Qwen2"})
    tree_budget: int | None = field(default=None, metadata={
        "help": "most drafted tokens a tree verifies per step (default: top-k x depth, the whole expansion)"})
    repeats: int = field(default=1, metadata={
        "help": "rows per configuration: each repeat decodes the prompts again after the one warm-up"})
    acceptance_profile: profile.Profile | None = field(default=None, metadata={
        "help": "synthetic acceptance: q[d-1][r] per depth and sibling rank (sdlaws.measure.profile); None = real"})
    tp_size: int = field(default=1, metadata={
        "help": "GPUs each target is split over (tensor parallel, one torchrun process each); drafts are replicated"})
    batching: str = field(default="static", metadata={
        "help": "static: each batch decodes until its slowest row is done; continuous: a finished row is refilled "
                "with the next prompt (serving engines' batching)"})

    def __post_init__(self) -> None:
        """Normalise lists to tuples and the dtype name; :class:`ConfigError` for impossible values."""
        from sdlaws.measure.models import canonical_dtype
        from sdlaws.measure.prompts import BUILTIN_SETS

        for name in ("targets", "drafts", "num_spec_tokens", "topks", "batch_sizes", "temperatures"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.targets:
            raise ConfigError("no target model; pass --target PATH|HUB_ID|random:NAME")
        for name, (option, lo, hi) in INT_RANGES.items():
            value = getattr(self, name)
            if value is not None:  # checked, then stored as int (4.0 and 4 must give the same run id)
                checks.numbers(option, value if isinstance(value, tuple) else (value,), lo, hi, integer=True)
                object.__setattr__(self, name, tuple(map(int, value)) if isinstance(value, tuple) else int(value))
        checks.numbers("--temperature", self.temperatures, 0.0, MAX_TEMPERATURE, note="0 = greedy")
        if self.prompts not in BUILTIN_SETS and not Path(self.prompts).is_file():
            raise ConfigError(f"--prompts {self.prompts!r} is neither a built-in set ({', '.join(BUILTIN_SETS)}) "
                              "nor an existing JSONL file")
        if self.ppl_file is not None and not Path(self.ppl_file).is_file():
            raise ConfigError(f"--ppl {self.ppl_file}: no such file; run `sdlaws measure ppl` first")
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype))
        if self.batching not in BATCHING:
            raise ConfigError(f"--batching {self.batching!r}: use one of {', '.join(BATCHING)}")
        if self.acceptance_profile is not None:
            self._check_profile()

    def _check_profile(self) -> None:
        """Normalise the profile; it must cover the largest num_spec_tokens and needs greedy decoding (fail before loading)."""
        object.__setattr__(self, "acceptance_profile", profile.normalize(self.acceptance_profile))
        if any(t != 0 for t in self.temperatures):
            raise ConfigError(f"--acceptance-profile needs --temperature 0 (synthetic decisions replace sampling), "
                              f"got {list(self.temperatures)}")
        profile.check_depth(self.acceptance_profile, max(self.num_spec_tokens))

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict of every field (lists for tuples; the profile as its JSON text)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if self.acceptance_profile is not None:
            out["acceptance_profile"] = profile.to_json(self.acceptance_profile)
        return out

    def summary(self) -> str:
        """Aligned ``field: value`` lines, echoed at the start of a sweep."""
        width = max(len(f.name) for f in fields(self))
        return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in self.to_dict().items())


def _fmt(value: Any) -> str:
    """Lists as comma-separated values, anything else with ``str``."""
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
