"""vLLM's speculative-decoding metrics as ``spec`` rows.

Three forms are read, each in the definitions of the vLLM code that writes it:

``prometheus:vllm-v1``
    A ``/metrics`` exposition of the V1 engine with ``vllm:spec_decode_num_drafts``, ``..._num_draft_tokens``,
    ``..._num_accepted_tokens`` and ``..._num_accepted_tokens_per_pos`` (label ``position``), per label set
    ``model_name``, ``engine`` (``SpecDecodingProm`` in vllm/v1/spec_decode/metrics.py and ``PrometheusStatLogger``
    in vllm/v1/metrics/loggers.py, github.com/vllm-project/vllm). Counters are exposed with a ``_total`` suffix.
    ``num_accepted_tokens`` is the accepted prefix of each draft (``len(generated_token_ids) - 1`` in
    vllm/v1/core/sched/scheduler.py), sdlaws's definition. The draft length is the number of positions.
``prometheus:vllm-v1-early``
    The first V1 expositions, with draft and accepted token counters but no ``vllm:spec_decode_num_drafts``:
    ``num_drafts = num_draft_tokens / K`` with K from ``--num-spec-tokens``, exact when every draft has K tokens
    (model drafts; an n-gram proposer may draft fewer, which the division detects when it leaves a remainder).
``log:vllm-v0``
    Lines ``Speculative metrics: Draft acceptance rate: ..., Number of speculative tokens: K, Number of accepted
    tokens: A, Number of draft tokens: D, Number of emitted tokens: E`` of the V0 engine's log
    (``LoggingStatLogger`` in vllm/engine/metrics.py). They are totals since the server started
    (``AsyncMetricsCollector`` in vllm/spec_decode/metrics.py copies the sampler's running sums): the last line
    is read. There ``A`` counts every accepted position, prefix or not, so it is not sdlaws's count; ``D = K x
    drafts`` (asserted there) and ``E = accepted prefix + 1`` per draft give ``num_drafts = D / K`` and
    ``num_accepted_tokens = E - D / K``.

A V0 exposition (``vllm:spec_decode_draft_acceptance_rate`` and ``vllm:spec_decode_num_emitted_tokens_total``) is
refused: V0's ``PrometheusStatLogger.log`` increments its counters by those running sums at every log interval,
so the counters are sums of sums, not counts (the fix, github.com/vllm-project/vllm/pull/15415, was closed
unmerged); the same server's log lines hold the counts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from sdlaws.errors import ConfigError, InputError
from sdlaws.ingest import prom
from sdlaws.ingest.rows import Counts, ImportOptions, spec_row, spec_tokens

DRAFTS = "vllm:spec_decode_num_drafts_total"
DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
V0_ONLY = ("vllm:spec_decode_draft_acceptance_rate", "vllm:spec_decode_num_emitted_tokens_total")

#: Row column <- exposed sample, summed over the series of one label set (vllm/v1/metrics/loggers.py).
TRAFFIC = {"num_prompts": "vllm:request_success_total", "num_prompt_tokens": "vllm:prompt_tokens_total",
           "num_new_tokens": "vllm:generation_tokens_total",
           "ttft_sum_s": "vllm:time_to_first_token_seconds_sum", "num_ttft": "vllm:time_to_first_token_seconds_count",
           "tpot_sum_s": "vllm:time_per_output_token_seconds_sum",
           "num_tpot": "vllm:time_per_output_token_seconds_count"}

#: One V0 log line; older releases wrote "Number of draft tokens tokens:" (vllm/engine/metrics.py).
V0_LINE = re.compile(r"Speculative metrics: .*?Number of speculative tokens: (\d+), Number of accepted tokens: "
                     r"(\d+), Number of draft tokens(?: tokens)?: (\d+), Number of emitted tokens(?: tokens)?: (\d+)")


def import_vllm(path: Path, *, before: Optional[Path] = None, opts: ImportOptions = ImportOptions()
                ) -> list[dict[str, Any]]:
    """``spec`` rows from a vLLM exposition or log (``before``: the same kind of file, taken earlier)."""
    text = prom.read_text(path)
    if prom.is_exposition(text):
        scrape = prom.parse(text, str(path))
        if before is not None:
            scrape = scrape.minus(prom.read(before))
        return _exposition_rows(scrape, opts)
    return [_log_row(path, before, opts)]


def _exposition_rows(scrape: prom.Scrape, opts: ImportOptions) -> list[dict[str, Any]]:
    """One row per label set (model_name, engine) of the drafted-token counter."""
    if any(scrape.has(name) for name in V0_ONLY):
        raise InputError(f"{scrape.source}: a vLLM V0 exposition; its speculative-decoding counters are sums of "
                         "running totals (vllm/engine/metrics.py), not counts; import the same server's log lines "
                         "'Speculative metrics: ...' instead")
    if not scrape.has(DRAFT_TOKENS):
        raise InputError(f"{scrape.source}: no {DRAFT_TOKENS}; was the server started with --speculative-config "
                         "and has it served requests?")
    fmt = "prometheus:vllm-v1" if scrape.has(DRAFTS) else "prometheus:vllm-v1-early"
    return [_series_row(scrape, labels, fmt, opts) for labels in sorted(scrape.series(DRAFT_TOKENS))]


def _series_row(scrape: prom.Scrape, labels: prom.Labels, fmt: str, opts: ImportOptions) -> dict[str, Any]:
    """The row of one label set."""
    draft_tokens = scrape.series(DRAFT_TOKENS)[labels]
    accepted = scrape.series(ACCEPTED).get(labels)
    if accepted is None:
        raise InputError(f"{scrape.source}: {DRAFT_TOKENS}{dict(labels)} has no {ACCEPTED} series")
    per_pos = _per_position(scrape, labels)
    k = spec_tokens(len(per_pos) if per_pos else None, opts, scrape.source)
    if fmt == "prometheus:vllm-v1":
        drafts = scrape.series(DRAFTS).get(labels)
    else:
        drafts = _drafts(draft_tokens, k, scrape.source)
    if drafts is None:
        raise InputError(f"{scrape.source}: {DRAFT_TOKENS}{dict(labels)} has no {DRAFTS} series")
    extra = {column: total for column, name in TRAFFIC.items()
             if (total := _summed(scrape.series(name), labels)) is not None}
    counts = Counts(num_drafts=drafts, num_draft_tokens=draft_tokens, num_accepted_tokens=accepted,
                    num_spec_tokens=k, per_pos=per_pos, extra=extra)
    return spec_row(counts, engine="vllm", fmt=fmt, labels=dict(labels), target=dict(labels).get("model_name"),
                    opts=opts, source=scrape.source)


def _per_position(scrape: prom.Scrape, labels: prom.Labels) -> Optional[list[float]]:
    """``vllm:spec_decode_num_accepted_tokens_per_pos`` of one label set, ordered by position (None if absent)."""
    by_pos = {int(dict(lab)["position"]): value for lab, value in scrape.series(PER_POS).items()
              if prom.without(lab, "position") == labels}
    if not by_pos:
        return None
    if sorted(by_pos) != list(range(len(by_pos))):
        raise InputError(f"{scrape.source}: {PER_POS}{dict(labels)} has positions {sorted(by_pos)}; expected 0..K-1")
    return [by_pos[i] for i in range(len(by_pos))]


def _drafts(draft_tokens: float, k: int, source: str) -> float:
    """Drafts of an exposition without a draft counter: drafted tokens / K, when that is a whole number."""
    drafts = draft_tokens / k
    if drafts != int(drafts):
        raise ConfigError(f"{source}: {draft_tokens:g} drafted tokens are not a multiple of K = {k}; drafts "
                          "of varying length (an n-gram proposer?) cannot be counted from this exposition")
    return drafts


def _summed(series: dict[prom.Labels, float], labels: prom.Labels) -> Optional[float]:
    """Sum of the series whose labels extend ``labels`` (e.g. request_success over finished_reason)."""
    keys = dict(labels)
    values = [v for lab, v in series.items() if all(dict(lab).get(k) == val for k, val in keys.items())]
    return sum(values) if values else None


def _log_row(path: Path, before: Optional[Path], opts: ImportOptions) -> dict[str, Any]:
    """The row of a V0 log's last 'Speculative metrics' line (minus the one of ``before``)."""
    k, accepted_any, draft_tokens, emitted = _last_v0_line(path)
    if before is not None:
        k0, a0, d0, e0 = _last_v0_line(before)
        if k0 != k or d0 > draft_tokens:
            raise InputError(f"{before}: its totals (K={k0}, {d0} drafted) do not precede those of {path} (K={k}, "
                             f"{draft_tokens} drafted); was the server restarted?")
        accepted_any, draft_tokens, emitted = accepted_any - a0, draft_tokens - d0, emitted - e0
    k = spec_tokens(k, opts, str(path))
    drafts = _drafts(draft_tokens, k, str(path))
    counts = Counts(num_drafts=drafts, num_draft_tokens=draft_tokens, num_accepted_tokens=emitted - drafts,
                    num_spec_tokens=k)
    return spec_row(counts, engine="vllm", fmt="log:vllm-v0", labels={}, target=None, opts=opts, source=str(path))


def _last_v0_line(path: Path) -> tuple[int, int, int, int]:
    """(K, accepted, drafted, emitted) of the last V0 'Speculative metrics' line of a log."""
    matches = V0_LINE.findall(prom.read_text(path))
    if not matches:
        raise InputError(f"{path}: neither a Prometheus exposition nor a vLLM log with 'Speculative metrics: ...' "
                         "lines; pass the body of /metrics or the server's log")
    return tuple(int(v) for v in matches[-1])
