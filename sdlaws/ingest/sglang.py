"""SGLang's per-request speculative-decoding counts as ``spec`` rows.

SGLang reports counts per request, in the ``meta_info`` of each ``/generate`` response
(``TokenizerManager`` in python/sglang/srt/managers/tokenizer_manager.py, github.com/sgl-project/sglang):
``spec_verify_ct`` (verification passes: sdlaws's ``num_drafts``), ``spec_accept_token_num`` (accepted draft
tokens), ``spec_draft_token_num`` (``spec_verify_ct x (speculative_num_draft_tokens - 1)``: drafted tokens
verified), ``completion_tokens`` and ``prompt_tokens``; newer releases add ``spec_accept_histogram`` (entry ``j``:
verification passes that accepted ``j`` draft tokens), which gives the per-position counts. The input is those
responses (or their ``meta_info`` objects) as JSON lines or a JSON list; the counts are summed over requests.

Its ``/metrics`` exposition is refused: acceptance appears there only as the gauges ``sglang:spec_accept_length``
and ``sglang:spec_accept_rate``, averages over the last logging interval with no count behind them
(``SchedulerMetricsCollector`` in python/sglang/srt/metrics/collector.py and ``log_decode_stats`` in
python/sglang/srt/managers/scheduler_metrics_mixin.py), so a fit could not weigh them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from sdlaws.errors import InputError
from sdlaws.ingest import prom
from sdlaws.ingest.rows import Counts, ImportOptions, spec_row, spec_tokens

#: meta_info key -> row column, summed over requests.
SUMMED = {"spec_verify_ct": "num_drafts", "spec_draft_token_num": "num_draft_tokens",
          "spec_accept_token_num": "num_accepted_tokens", "completion_tokens": "num_new_tokens",
          "prompt_tokens": "num_prompt_tokens"}


def import_sglang(path: Path, *, before: Optional[Path] = None, opts: ImportOptions = ImportOptions()
                  ) -> list[dict[str, Any]]:
    """One ``spec`` row from SGLang ``/generate`` responses (JSON lines or a JSON list)."""
    text = prom.read_text(path)
    if prom.is_exposition(text):
        raise InputError(f"{path}: SGLang's /metrics holds acceptance only as gauges of the last log interval "
                         "(sglang:spec_accept_length), no counts; import the /generate responses' meta_info "
                         "(spec_verify_ct, spec_accept_token_num, ...) as JSON lines instead")
    if before is not None:
        raise InputError("--before takes an earlier scrape of a counter exposition; SGLang's per-request counts "
                         "need none: import the responses of the window you want")
    metas = [_meta(item, path) for item in _records(text, path)]
    totals = {column: sum(float(m.get(key) or 0) for m in metas) for key, column in SUMMED.items()}
    drafts = totals.pop("num_drafts")
    draft_tokens = totals.pop("num_draft_tokens")
    per_draft = draft_tokens / drafts if drafts else None
    # A chain (top-k 1) drafts speculative_num_steps tokens per pass; a tree's depth is not in the responses.
    found = round(per_draft) if opts.topk == 1 and per_draft and per_draft == round(per_draft) else None
    counts = Counts(num_drafts=drafts, num_draft_tokens=draft_tokens,
                    num_accepted_tokens=totals.pop("num_accepted_tokens"),
                    num_spec_tokens=spec_tokens(found, opts, str(path)), per_pos=_per_position(metas),
                    extra={"num_prompts": len(metas), **totals})
    return [spec_row(counts, engine="sglang", fmt="meta_info:sglang", labels={}, target=None, opts=opts,
                     source=str(path))]


def _records(text: str, path: Path) -> list[Any]:
    """JSON values of a JSON-lines file or of one JSON list."""
    try:
        whole = json.loads(text)
        return whole if isinstance(whole, list) else [whole]
    except json.JSONDecodeError:
        pass
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputError(f"{path}: line {number} is not JSON; expected SGLang /generate responses, one "
                                 "per line") from None
    if not records:
        raise InputError(f"{path}: no responses; expected SGLang /generate responses as JSON lines")
    return records


def _meta(item: Any, path: Path) -> dict[str, Any]:
    """The meta_info of one response (or the object itself when it is a meta_info)."""
    meta = item.get("meta_info", item) if isinstance(item, dict) else None
    if not isinstance(meta, dict) or "spec_accept_token_num" not in meta or "spec_verify_ct" not in meta:
        raise InputError(f"{path}: a response without meta_info spec_verify_ct and spec_accept_token_num; run an "
                         "SGLang release that reports them, with speculative decoding on")
    return meta


def _per_position(metas: list[dict[str, Any]]) -> Optional[list[float]]:
    """Per-position counts from the summed acceptance histograms: per_pos[i] = passes accepting > i drafts."""
    hists = [m["spec_accept_histogram"] for m in metas if m.get("spec_accept_histogram")]
    if len(hists) != len(metas):
        return None
    width = max(map(len, hists))
    summed = [sum(h[j] for h in hists if j < len(h)) for j in range(width)]
    return [float(sum(summed[i + 1:])) for i in range(width - 1)]
