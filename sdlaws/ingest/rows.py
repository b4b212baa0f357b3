"""``spec`` rows (:mod:`sdlaws.schema`) from counts read off a serving engine: what every importer shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sdlaws.errors import ConfigError, InputError


@dataclass(frozen=True)
class ImportOptions:
    """What the user states about the traffic; the engines' metrics do not record it."""

    target: Optional[str] = None      # target model name when the metrics carry none (or to override it)
    draft: Optional[str] = None
    num_spec_tokens: Optional[int] = None
    topk: int = 1
    temperature: Optional[float] = None
    window_s: Optional[float] = None
    experiment: str = ""
    gpu: str = ""

    def __post_init__(self):
        if self.num_spec_tokens is not None and self.num_spec_tokens < 1:
            raise ConfigError(f"--num-spec-tokens {self.num_spec_tokens}: expected a draft length >= 1")
        if self.topk < 1:
            raise ConfigError(f"--topk {self.topk}: expected >= 1 (1 = chain drafts)")
        if self.window_s is not None and self.window_s <= 0:
            raise ConfigError(f"--window-s {self.window_s}: expected the seconds between the two scrapes, > 0")


@dataclass(frozen=True)
class Counts:
    """Speculative-decoding counts of one series over one window, in sdlaws's (vLLM V1's) definitions.

    ``num_accepted_tokens`` counts accepted draft tokens that extend the accepted prefix (bonus token excluded);
    ``per_pos[i]`` counts drafts whose first ``i + 1`` tokens were all accepted.
    """

    num_drafts: float
    num_draft_tokens: float
    num_accepted_tokens: float
    num_spec_tokens: int
    per_pos: Optional[list[float]] = None
    extra: dict[str, float] = field(default_factory=dict)   # num_prompts, num_new_tokens, ttft_sum_s, ...


def spec_row(counts: Counts, *, engine: str, fmt: str, labels: dict[str, str], target: Optional[str],
             opts: ImportOptions, source: str) -> dict[str, Any]:
    """One ``spec`` row; :class:`InputError` when the counts are impossible or the target is unnamed."""
    from sdlaws.measure.config import stable_run_id
    from sdlaws.provenance import provenance

    name = opts.target or target
    if not name:
        raise InputError(f"{source}: the metrics do not name the target model; give --target NAME")
    _check(counts, source)
    method = "chain" if opts.topk == 1 else "tree"
    budget = counts.num_draft_tokens / counts.num_drafts if counts.num_drafts else None
    row: dict[str, Any] = {
        **provenance(opts.gpu), "torch_version": "", "transformers_version": "", "status": "ok",
        "experiment": opts.experiment, "target_name": name, "draft_name": opts.draft or "", "method": method,
        "num_spec_tokens": counts.num_spec_tokens, "tree_topk": opts.topk,
        "tree_budget": round(budget) if method == "tree" and budget else counts.num_spec_tokens,
        "temperature": opts.temperature, "prompt_set": "", "acceptance_source": "target",
        "num_drafts": counts.num_drafts, "num_draft_tokens": counts.num_draft_tokens,
        "num_accepted_tokens": counts.num_accepted_tokens,
        "num_accepted_per_pos": [whole(v) for v in counts.per_pos] if counts.per_pos is not None else None,
        "source_engine": engine, "source_format": fmt, "source_labels": labels or None,
        "source_window_s": opts.window_s, **counts.extra,
    }
    row.update({k: whole(v) for k, v in row.items() if k.startswith("num_") and isinstance(v, float)})
    row["run_id"] = stable_run_id({k: row[k] for k in ("source_engine", "source_format", "source_labels",
                                                       "target_name", "num_drafts", "num_draft_tokens",
                                                       "num_accepted_tokens", "source_window_s")})
    return row


def _check(c: Counts, source: str) -> None:
    """The counts describe speculation that happened: drafts > 0 and accepted <= drafted."""
    if c.num_drafts <= 0:
        raise InputError(f"{source}: no speculative drafts in the window (num_drafts = {c.num_drafts:g}); scrape "
                         "after traffic has been served with speculative decoding on")
    if c.num_accepted_tokens > c.num_draft_tokens or (c.per_pos and c.per_pos[0] > c.num_drafts):
        raise InputError(f"{source}: more accepted than drafted tokens ({c.num_accepted_tokens:g} > "
                         f"{c.num_draft_tokens:g}); the counters are not one engine's speculative-decoding counters")


def spec_tokens(found: Optional[int], opts: ImportOptions, source: str) -> int:
    """Draft length: read off the metrics (``found``) or given by --num-spec-tokens; they must agree."""
    if found is not None and opts.num_spec_tokens is not None and found != opts.num_spec_tokens:
        raise ConfigError(f"{source}: the metrics show {found} draft positions but --num-spec-tokens is "
                          f"{opts.num_spec_tokens}; drop the option or fix it")
    value = found if found is not None else opts.num_spec_tokens
    if value is None:
        raise ConfigError(f"{source}: the metrics do not show the draft length; give --num-spec-tokens K "
                          "(the num_speculative_tokens the server ran with)")
    return value


def whole(value: float) -> float | int:
    """A count as an int when it is whole (Prometheus exposes every sample as a float)."""
    return int(value) if float(value).is_integer() else value
