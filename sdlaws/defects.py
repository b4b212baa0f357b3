"""Known timing defects of sdlaws's own engine, by the git versions that had them, and the rows they distort.

A defect here changes how long a decode step takes, not which tokens it produces: a row measured with it keeps
its acceptance counts, but its times are not those of the fixed engine, so analyses of time (the planner's
held-out checks, the Thm 1.3 sweep) set aside the rows where the defect's estimated cost exceeds
:data:`MAX_SHARE` of the row's measured decode step, and say so. Rows measured by other engines (vLLM, SGLang
ingests) or by versions without the defect are never touched.

**LM head once per row** (versions from the tensor-parallel fast path, e0ea92a, to its fix, 405b6d6; measured
data at 8fe13df and c3d041c): the draft's re-read of its last committed tokens keeps only the last position's
logits, a strided slice of the hidden states; with a weight that needs no gradient, torch's matmul does not fold
such an input into one GEMM but runs a batched matmul over the expanded weight, reading the whole LM head once per
row. Found with ``benchmarks/profile_phases.py`` on an H200 (``measurements/h200/phases.txt``): a random
Llama-3.2-1B draft's step at batch 64 and 2048-token prompts spent 7.8 of its 11.9 ms in that matmul. Its cost
per decode step is ``(B - 1)`` extra reads of the LM-head matrix (``vocab x hidden`` bf16) at the GPU's copy
bandwidth; a feature-level head re-reads through a gather (contiguous) and was not affected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sdlaws import rates

#: A row is set aside where a defect's estimated cost is more than this share of its measured decode step.
MAX_SHARE = 0.02
#: Bytes per LM-head weight in the affected runs (bf16).
WEIGHT_BYTES = 2


@dataclass(frozen=True)
class Defect:
    """A timing defect: the engine versions that had it (7-character git sha prefixes) and the fix."""

    name: str
    shas: tuple[str, ...]
    fixed_in: str

    def affects(self, rows: pd.DataFrame) -> pd.Series:
        """Rows measured by an affected version with an LM draft (not a head, not AR)."""
        missing = pd.Series("", index=rows.index)  # older CSVs and ingests lack the columns
        sha = rows.get("git_sha", missing).astype(str).str[:7]
        lm_draft = rows["method"].ne("ar") & rows.get("draft_kind", missing).astype(str).ne("head")
        return sha.isin(self.shas) & lm_draft


LM_HEAD_PER_ROW = Defect("LM head read once per row", ("8fe13df", "c3d041c"), "405b6d6")


def lm_head_share(rows: pd.DataFrame, shapes: dict, bytes_per_s: float) -> pd.Series:
    """Estimated share of each row's decode step that :data:`LM_HEAD_PER_ROW` added (0 where it did not apply).

    Parameters
    ----------
    rows : DataFrame
        ``spec`` rows.
    shapes : dict
        ``draft_name -> ModelShape`` (``vocab``, ``hidden``) of every draft of ``rows``.
    bytes_per_s : float
        The GPU's copy bandwidth (e.g. the step-time law's fitted ``hbm_bytes_per_s``).
    """
    hit = LM_HEAD_PER_ROW.affects(rows)
    head_bytes = rows["draft_name"].map(lambda n: shapes[n].vocab * shapes[n].hidden * WEIGHT_BYTES
                                        if n in shapes else np.nan)
    extra = (rows["batch_size"] - 1) * head_bytes / bytes_per_s
    return (extra / rates.decode_step_s(rows)).where(hit, 0.0).fillna(0.0)


def set_aside(rows: pd.DataFrame, shapes: dict, bytes_per_s: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(kept, set_aside)``: rows whose known-defect cost is at most :data:`MAX_SHARE` of their decode step, and
    the others with ``defect_share`` (estimated share of the step), ``remeasured`` and ``reason`` columns.

    An affected row whose configuration (``run_id``) was measured again by an unaffected version is set aside
    whatever its share: the re-measurement replaces it, so one configuration is not counted twice across
    versions (``run_id`` names the configuration and repeat, not the version)."""
    share = lm_head_share(rows, shapes, bytes_per_s)
    hit = LM_HEAD_PER_ROW.affects(rows)
    superseded = hit & rows["run_id"].isin(rows.loc[~hit, "run_id"]) if "run_id" in rows else hit & False
    costly = share > MAX_SHARE
    out = costly | superseded
    aside = rows[out].assign(defect_share=share[out], remeasured=superseded[out])
    aside["reason"] = np.where(
        costly[out], f"timed with a known engine defect ({LM_HEAD_PER_ROW.name}, more than {100 * MAX_SHARE:g}% "
                     f"of its step; fixed in {LM_HEAD_PER_ROW.fixed_in})",
        f"timed with a known engine defect ({LM_HEAD_PER_ROW.name}) and measured again after its fix")
    return rows[~out], aside
