"""``sdlaws import``: serving engines' speculative-decoding metrics as ``spec`` rows that ``fit`` and ``plan`` read.

:func:`import_vllm` reads vLLM's ``/metrics`` expositions (two scrapes give a window by difference) or its V0 log
lines; :func:`import_sglang` reads SGLang's per-request counts. Rows hold counts, never rates, and say where
they came from (``source_engine``, ``source_format``, ``source_labels``, ``source_window_s``); what the engines
do not record (batch size, temperature, lengths) stays empty unless the user states it.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from sdlaws.ingest.rows import ImportOptions
from sdlaws.ingest.sglang import import_sglang
from sdlaws.ingest.vllm import import_vllm

__all__ = ["ImportOptions", "import_sglang", "import_vllm", "write_rows"]


def write_rows(rows: Iterable[dict[str, Any]], out: str | os.PathLike) -> int:
    """Check ``rows`` against the ``spec`` schema, then append them to ``out``; returns how many were written."""
    import pandas as pd

    from sdlaws import io, schema

    rows = list(rows)
    frame = pd.DataFrame(rows).reindex(columns=[c.name for c in schema.SPEC_RUN])
    schema.validate(frame, "spec", source=str(out))  # nothing is written when a row is bad
    for row in rows:
        io.append_row(out, row, "spec")
    return len(rows)
