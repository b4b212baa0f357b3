"""The measurement CSV contract shared by ``sdlaws measure`` (writer) and ``sdlaws fit`` / ``sdlaws plan`` (readers).

Three tables, each a list of :class:`Column`:

``SPEC_RUN``
    One row per speculative-decoding (or autoregressive baseline) configuration: raw counts and summed
    timings, never ratios. Rates (acceptance, tau, tokens/s, speedup, TTFT, TPOT) are derived in exactly one
    place, :mod:`sdlaws.rates`.
``STEP_TIMING``
    One row per (model, batch size, tokens per row, KV length) forward-pass timing, used to calibrate the
    roofline (:mod:`sdlaws.roofline`).
``PPL``
    One row per (model, evaluation text set): summed negative log-likelihood and token count; perplexity is
    derived as ``exp(nll_sum_nats / num_eval_tokens)``.

Conventions: units in names (``_s``, ``_bytes``), ``num_`` on counts,
provenance on every row. A row whose ``status`` is ``"failed"`` keeps its configuration and ``error`` and may
leave counts and timings empty; it is never dropped. ``acceptance_source`` tells measured acceptance
(``"target"``) from synthetic-acceptance timing runs (``"synthetic"``: accept/reject drawn from
``acceptance_profile``), which never enter acceptance-law fits. Rows imported from a serving engine's metrics
(``sdlaws import``) carry ``source_engine`` and may leave the columns of :data:`IMPORT_UNKNOWN` empty.

Glossary: each quantity has one name, its CSV column (the reference), which Python attributes, config fields and
plan tables repeat; below are its command-line flags, and the serving engines' own names, which appear only
where sdlaws writes an engine's configuration (``sdlaws plan export``, the engine flags of ``sdlaws plan``).

====================  =======================================  =====================  ==================================
quantity              name: CSV column, Python, plan tables    command line           external engines (export only)
====================  =======================================  =====================  ==================================
draft tokens per      ``num_spec_tokens`` (``DecodeConfig``,   ``--num-spec-tokens``  vLLM ``num_speculative_tokens``;
step (chain length;   ``RunConfig``, ``EngineConfig``,         (``measure``,          TensorRT-LLM ``max_draft_len``;
tree depth)           ``Pair``; ``MeasureConfig`` holds the    ``plan``,              SGLang ``--speculative-num-steps``
                      list); serving table                     ``import``);
                      ``chain_num_spec_tokens``,               ``measure`` and
                      ``tree_num_spec_tokens``,                ``plan`` also take
                      ``leviathan_num_spec_tokens``            ``--gamma``
candidates per tree   ``tree_topk`` (``MeasureConfig.topks``   ``--topk``             SGLang
node                  holds the list)                                                 ``--speculative-eagle-topk``
drafted tokens        ``tree_budget``; plan tables             ``--tree-budget``      SGLang
verified per step     ``tree_verify_tokens`` = tree_budget +                          ``--speculative-num-draft-tokens``
                      1 (the root counted)                                            (= tree_verify_tokens)
drafted tokens over   ``num_draft_tokens`` (a count, also      (counted)              vLLM ``num_draft_tokens``
a run                 ``DecodeStats``; never a setting)
sequences decoded     ``batch_size``                           ``--batch``
together              (``MeasureConfig.batch_sizes`` holds
                      the list)
====================  =======================================  =====================  ==================================

Not other names for these: ``gamma`` (γ) in formulas and the functions that implement them (:mod:`sdlaws.rates`,
:mod:`sdlaws.plan.speedup`, :mod:`sdlaws.fit.laws`, docs/formulas.md) is the papers' symbol for num_spec_tokens;
``depth`` in the engine's tree geometry (:mod:`sdlaws.measure.tree`, :func:`sdlaws.plan.acceptance.engine_tree`,
the memory estimate) and in acceptance profiles (row d-1 is depth d) is a position along a draft path, and
``DecodeConfig.depth`` the longest path (num_spec_tokens; 0 for ar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from sdlaws.errors import InputError

Kind = Literal["provenance", "variable", "count", "timing", "status"]


@dataclass(frozen=True)
class Column:
    """One CSV column: name, dtype (``"str" | "int" | "float" | "json"``), unit, meaning.

    ``default`` (optional columns added after files were written): the value that a file without the column
    implies; such files stay readable (the column is simply absent, as for any optional column) and rows whose
    value is the default can still be appended to them (:func:`sdlaws.io.append_row`).
    """

    name: str
    dtype: str
    kind: Kind
    description: str
    required: bool = True
    unit: str = ""
    default: str | None = None


def _prov() -> list[Column]:
    return [
        Column("run_id", "str", "provenance", "stable hash of the configuration (the resume key)"),
        Column("status", "str", "status", '"ok" or "failed"'),
        Column("error", "str", "status", "reason of a failed row (empty when ok)", required=False),
        Column("timestamp_utc", "str", "provenance", "ISO-8601 time the row was written"),
        Column("git_sha", "str", "provenance", "sdlaws git commit (or 'unknown')"),
        Column("sdlaws_version", "str", "provenance", "sdlaws version"),
        Column("torch_version", "str", "provenance", "torch version", required=False),
        Column("transformers_version", "str", "provenance", "transformers version", required=False),
        Column("gpu_name", "str", "provenance", "device name (e.g. 'NVIDIA H100 80GB HBM3' or 'cpu')"),
        Column("dtype", "str", "provenance", "compute dtype (bfloat16, float32, ...)", required=False),
        Column("seed", "int", "provenance", "random seed", required=False),
        Column("experiment", "str", "provenance", "experiment label (free text)", required=False),
    ]


def _model(prefix: str, who: str, required: bool) -> list[Column]:
    return [
        Column(f"{prefix}_name", "str", "variable", f"{who} model id, path or random: spec", required=required),
        Column(f"{prefix}_params", "float", "variable", f"{who} non-embedding+embedding parameter count",
               required=False, unit="params"),
        Column(f"{prefix}_layers", "float", "variable", f"{who} decoder layers", required=False, unit="layers"),
        Column(f"{prefix}_pretrain_tokens", "float", "variable", f"{who} pretraining tokens seen",
               required=False, unit="tokens"),
        Column(f"{prefix}_ppl", "float", "variable", f"{who} perplexity on the held-out set (from `measure ppl`)",
               required=False),
    ]


#: ``spec`` columns a serving engine's metrics do not determine (continuous batching has no fixed batch size,
#: requests set their own temperature and length): rows imported by ``sdlaws import`` (``source_engine`` set)
#: may leave them empty; rows sdlaws measured may not.
IMPORT_UNKNOWN = ("batch_size", "temperature", "max_new_tokens", "num_prompts", "num_batches", "num_new_tokens",
                  "num_steps", "prefill_time_s", "total_time_s")


def _imported() -> list[Column]:
    """Optional columns of rows imported from a serving engine's metrics (``sdlaws import``; empty otherwise)."""
    return [
        Column("source_engine", "str", "provenance", 'serving engine the row was imported from ("vllm", "sglang"); '
               "empty for rows sdlaws measured", required=False, default=""),
        Column("source_format", "str", "provenance", "what was read, e.g. prometheus:vllm-v1 (exposition with "
               "vllm:spec_decode_num_drafts), log:vllm-v0, meta_info:sglang", required=False, default=""),
        Column("source_labels", "json", "provenance", "labels of the imported series as a JSON object (vLLM: "
               "model_name, engine)", required=False, default=""),
        Column("source_window_s", "float", "provenance", "seconds between the two scrapes whose difference the "
               "counts are (empty: unknown, or counts since the server started)", required=False, unit="s",
               default=""),
        Column("ttft_sum_s", "float", "timing", "sum of the engine's time-to-first-token histogram over the window",
               required=False, unit="s", default=""),
        Column("num_ttft", "int", "count", "observations in that histogram (requests)", required=False, default=""),
        Column("tpot_sum_s", "float", "timing", "sum of the engine's time-per-output-token histogram over the "
               "window", required=False, unit="s", default=""),
        Column("num_tpot", "int", "count", "observations in that histogram", required=False, default=""),
    ]


SPEC_RUN: list[Column] = [
    *_prov(),
    *_model("target", "target", True),
    *_model("draft", "draft", False),
    Column("draft_kind", "str", "variable",
           '"head" for a feature-level draft head drafting from the target\'s hidden states (EAGLE-style; its '
           "draft_params count the head's own weights, not the target's embedding and LM head it shares); empty for "
           "an independent draft LM and for ar", required=False, default=""),
    Column("method", "str", "variable", '"ar" (no draft), "chain" or "tree"'),
    Column("num_spec_tokens", "int", "variable", "draft tokens per step (chain length gamma; tree depth); 0 for ar"),
    Column("tree_topk", "int", "variable", "tree branching k per depth (1 for chains and ar)"),
    Column("tree_budget", "int", "variable", "tree: drafted tokens verified per step (chain: num_spec_tokens)",
           required=False),
    Column("batch_size", "int", "variable", "sequences decoded together", unit="sequences"),
    Column("temperature", "float", "variable", "sampling temperature (0 = greedy)"),
    Column("forward_impl", "str", "variable", 'target forward: "fused" (sdlaws fast path), "fused-triton" (the fast '
           'path with its Triton kernels, on CUDA) or "hf"', required=False),
    Column("kernel_choices", "json", "variable", 'fused-triton: which of cuBLAS and the Triton projection kernel\'s '
           'configurations ran each weight shape and row class, as timed at the process\'s first call, a JSON object '
           '("ROWS NxK[ swiglu] DTYPE" -> "cublas" or "BLOCK_N/BLOCK_K/stages/split"); empty otherwise',
           required=False, default=""),
    Column("acceptance_source", "str", "variable",
           '"target" (the target verified the drafts: measured acceptance) or "synthetic" (every forward pass is '
           "real but accept/reject is drawn from acceptance_profile: a timing run, never an acceptance "
           "measurement; `sdlaws fit` leaves these rows out of acceptance fits); absent = target",
           required=False, default="target"),
    Column("acceptance_profile", "json", "variable",
           "synthetic: the profile q as a JSON list of rows, q[d-1][r] = P(target picks the draft's rank-r child "
           "at depth d | path accepted so far), each row summing to <= 1 (sdlaws.measure.profile); empty for target",
           required=False, default=""),
    Column("repeat", "int", "variable", "repeat index of a configuration measured several times after one warm-up "
           "(--repeats; each repeat decodes the same prompts with fresh sampling draws); absent = 0",
           required=False, default="0"),
    Column("tp_size", "int", "variable", "GPUs the target was split over (tensor parallel; the draft ran whole on "
           "each); absent = 1", required=False, default="1"),
    Column("batching", "str", "variable",
           '"static": each batch of batch_size prompts decoded until its slowest row was done; "continuous": a '
           "row that was done got the next waiting prompt (serving engines' continuous batching), so the batch stayed "
           "full until the prompts ran out; absent or empty = static", required=False, default="static"),
    Column("prompt_set", "str", "variable", "prompt set name or file"),
    Column("num_prompts", "int", "count", "prompts decoded (static: the last batch filled with repeated prompts; "
           "continuous: each prompt once)"),
    Column("max_new_tokens", "int", "variable", "new tokens generated per prompt (EOS ignored)", unit="tokens"),
    Column("num_prompt_tokens", "int", "count", "prompt tokens summed over prompts", required=False, unit="tokens"),
    Column("num_batches", "int", "count", "static: batches decoded; continuous: the batches the same prompts fill, "
           "ceil(num_prompts / batch_size), so that TTFT and TPOT per batch compare with static rows"),
    Column("num_new_tokens", "int", "count", "tokens generated, summed over sequences", unit="tokens"),
    Column("num_steps", "int", "count", "decode iterations (target forward passes after prefill), summed over "
           "batches (continuous: of the one run)"),
    Column("num_drafts", "int", "count", "(sequence, step) pairs that were drafted for (vLLM num_drafts)"),
    Column("num_draft_tokens", "int", "count", "drafted tokens verified (vLLM num_draft_tokens)"),
    Column("num_accepted_tokens", "int", "count", "accepted draft tokens, bonus token excluded"),
    Column("num_accepted_per_pos", "json", "count",
           "list, entry i = drafts whose first i+1 draft tokens were all accepted (vLLM per-position counts)",
           required=False),
    Column("num_accepted_per_rank", "json", "count",
           "tree: list, entry r = accepted tree nodes that were the (r+1)-th ranked child", required=False),
    Column("num_drafts_per_seq", "json", "count",
           "drafts verified for each sequence, in prompt order (JSON list; with num_accepted_per_seq the acceptance "
           "of every prompt); absent in files written before it", required=False, default=""),
    Column("num_accepted_per_seq", "json", "count",
           "accepted draft tokens of each sequence, in prompt order (JSON list)", required=False, default=""),
    Column("num_steps_per_seq", "json", "count",
           "decode steps each sequence took to finish, in prompt order (JSON list; a static batch runs until its "
           "largest, a continuous one refills the row)", required=False, default=""),
    Column("prefill_time_s", "float", "timing", "prefill + first token, summed over batches (continuous: and "
           "over the one-row prefills of refilled rows)", unit="s"),
    Column("draft_time_s", "float", "timing", "draft forward passes, summed", required=False, unit="s"),
    Column("verify_time_s", "float", "timing", "target forward passes in decode, summed", required=False, unit="s"),
    Column("total_time_s", "float", "timing", "wall time of all batches, prefill included", unit="s"),
    Column("peak_memory_bytes", "float", "count", "peak device memory allocated", required=False, unit="bytes"),
    *_imported(),
]

STEP_TIMING: list[Column] = [
    *_prov(),
    Column("model_name", "str", "variable", "model id, path or random: spec"),
    Column("model_params", "float", "variable", "parameter count", unit="params"),
    Column("model_layers", "float", "variable", "decoder layers", required=False),
    Column("hidden_size", "float", "variable", "hidden size", required=False),
    Column("batch_size", "int", "variable", "sequences in the forward pass"),
    Column("tokens_per_row", "int", "variable", "query tokens per sequence (1 = decode, k+1 = verify)"),
    Column("kv_len", "int", "variable", "cached tokens per sequence before the pass", unit="tokens"),
    Column("num_repeats", "int", "count", "timed repeats after warm-up"),
    Column("median_time_s", "float", "timing", "median wall time of one forward pass", unit="s"),
    Column("forward_impl", "str", "variable", 'forward timed: "fused" (sdlaws fast path), "fused-triton" (the fast '
           'path with its Triton kernels, on CUDA) or "hf" (stock layers); empty in tables written before '
           "it was recorded", required=False),
    Column("kernel_choices", "json", "variable", 'fused-triton: which of cuBLAS and the Triton projection kernel\'s '
           'configurations ran each weight shape and row class, as timed at the process\'s first call, a JSON object '
           '("ROWS NxK[ swiglu] DTYPE" -> "cublas" or "BLOCK_N/BLOCK_K/stages/split"); empty otherwise',
           required=False, default=""),
    Column("tp_size", "int", "variable", "GPUs the model was split over (tensor parallel); absent = 1",
           required=False, default="1"),
    Column("allreduce_time_s", "float", "timing", "tp > 1: median wall time of the pass's all-reduces alone (two per "
           "layer of the batch x tokens x hidden activations), timed separately; empty for tp 1",
           required=False, unit="s", default=""),
]

PPL: list[Column] = [
    *_prov(),
    *_model("model", "evaluated", True),
    Column("eval_set", "str", "variable", "held-out text set name"),
    Column("num_eval_tokens", "int", "count", "predicted tokens", unit="tokens"),
    Column("nll_sum_nats", "float", "count", "summed negative log-likelihood", unit="nats"),
]

TABLES: dict[str, list[Column]] = {"spec": SPEC_RUN, "step": STEP_TIMING, "ppl": PPL}

#: Largest count a row may hold: 2**53, beyond which float64 (pandas' numbers) cannot represent every integer;
#: no measurement counts that many tokens or bytes.
MAX_COUNT = 2.0**53
#: Longest time a row may hold, seconds (about 32 years).
MAX_SECONDS = 1e9
#: Inequalities every ``ok`` row of a table satisfies: (column, column it cannot exceed, why).
ORDERED: dict[str, list[tuple[str, str, str]]] = {
    "spec": [("num_accepted_tokens", "num_draft_tokens", "accepted draft tokens are among the drafted ones"),
             ("num_drafts", "num_draft_tokens", "every draft proposes at least one token"),
             ("num_accepted_tokens", "num_new_tokens", "accepted tokens are among the generated ones"),
             ("prefill_time_s", "total_time_s", "the total time includes the prefill")],
}


def columns(table: str) -> list[Column]:
    """Return the column list of ``table`` (``"spec"``, ``"step"`` or ``"ppl"``)."""
    if table not in TABLES:
        raise InputError(f"unknown table {table!r}; use one of {sorted(TABLES)}")
    return TABLES[table]


def config_label(method: str, num_spec_tokens: int = 0, tree_topk: int = 1, tree_budget: int | None = None) -> str:
    """The one short name of a decoding configuration (the ``method`` / ``num_spec_tokens`` / ``tree_topk`` /
    ``tree_budget`` columns) in progress bars, messages and tables: ``ar``, ``chain g=4``, ``tree d=3 k=8``, or
    ``tree d=3 k=8 b=24`` when the budget is given."""
    if method == "ar":
        return "ar"
    if method == "chain":
        return f"chain g={num_spec_tokens}"
    budget = f" b={tree_budget}" if tree_budget is not None else ""
    return f"tree d={num_spec_tokens} k={tree_topk}{budget}"


def tp_sizes(df: pd.DataFrame) -> pd.Series:
    """``tp_size`` of each row of a ``spec`` or ``step`` frame (absent or empty = 1: one GPU)."""
    if "tp_size" not in df.columns:
        return pd.Series(1, index=df.index)
    return pd.to_numeric(df["tp_size"], errors="coerce").fillna(1).astype(int)


def batching_modes(df: pd.DataFrame) -> pd.Series:
    """``batching`` of each row of a ``spec`` frame (absent or empty = ``"static"``, as before the column)."""
    if "batching" not in df.columns:
        return pd.Series("static", index=df.index)
    return df["batching"].astype(object).fillna("").astype(str).replace("", "static")


def synthetic_acceptance(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of ``spec`` rows whose acceptance was drawn from a profile (absent or empty = target)."""
    if "acceptance_source" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["acceptance_source"].eq("synthetic")


def imported_rows(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of ``spec`` rows imported from a serving engine (``source_engine`` set)."""
    if "source_engine" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["source_engine"].astype(object).fillna("").astype(str).str.strip().ne("")


def detect_table(df: pd.DataFrame) -> str:
    """Guess the table of a CSV from its columns (``spec`` unless it has the step or ppl key columns)."""
    if "median_time_s" in df.columns:
        return "step"
    if "nll_sum_nats" in df.columns:
        return "ppl"
    return "spec"


def validate(df: pd.DataFrame, table: str = "spec", *, source: str = "<data>") -> pd.DataFrame:
    """Check and coerce a measurement frame against the contract.

    Parameters
    ----------
    df : DataFrame
        Rows as read from CSV.
    table : str
        ``"spec"``, ``"step"`` or ``"ppl"``.
    source : str
        File name used in error messages.

    Returns
    -------
    DataFrame
        A copy with typed columns; unknown extra columns are kept.

    Raises
    ------
    InputError
        Empty table, missing required column, non-numeric or non-finite value, NaN / negative count or time in
        an ``ok`` row, a count above :data:`MAX_COUNT` or a time above :data:`MAX_SECONDS`, or an ``ok`` row
        breaking an inequality of :data:`ORDERED` (e.g. more accepted than drafted tokens). The message names
        the file, line and column, and the fix.
    """
    cols = columns(table)
    if df.empty:
        raise InputError(f"{source}: no data rows; measure first (sdlaws measure ...) or pass another CSV")
    missing = [c.name for c in cols if c.required and c.name not in df.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}; see `sdlaws.schema` or README 'CSV schema'")
    out = df.copy()
    ok = out["status"].astype(str).eq("ok") if "status" in out else pd.Series(True, index=out.index)
    measured = ok & ~imported_rows(out)
    for c in cols:
        if c.name not in out.columns:
            continue
        if c.dtype in ("int", "float"):
            out[c.name] = _numeric(out[c.name], c, ok, source, filled=measured if c.name in IMPORT_UNKNOWN else ok)
        elif c.dtype == "str":
            # object first: an all-empty column reads as float, and filling a float column with "" is deprecated
            out[c.name] = out[c.name].astype(object).fillna("").astype(str)
    _check_order(out, table, ok, source)
    return out


def _numeric(series: pd.Series, col: Column, ok: pd.Series, source: str, *, filled: pd.Series) -> pd.Series:
    """Numbers of one column; ``filled`` marks the rows where a required column may not be empty."""
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna() & series.astype(str).str.strip().ne("")
    _reject(bad, source, f"column {col.name}", lambda row: f"'{series.iloc[row]}' is not a number; fix or delete "
                                                           "that row")
    _reject(values.isin([np.inf, -np.inf]), source, f"column {col.name}",
            lambda row: f"'{series.iloc[row]}' is not finite; fix or delete that row")
    if col.kind in ("count", "timing") or col.required:
        check = filled & (values.isna() if col.required else pd.Series(False, index=values.index))
        _reject(check, source, f"column {col.name}", lambda row: "is empty in an ok row; re-measure it or mark it "
                                                                 "status=failed")
        _reject(ok & values.lt(0), source, f"column {col.name}",
                lambda row: f"is negative ({values.iloc[row]}); counts and times must be >= 0")
    limit = {"count": MAX_COUNT, "timing": MAX_SECONDS}.get(col.kind)
    if limit is not None:
        _reject(ok & values.gt(limit), source, f"column {col.name}",
                lambda row: f"is {values.iloc[row]:g}, above the {limit:g} a {col.kind} can physically be; fix or "
                            "delete that row")
    return values


def _check_order(df: pd.DataFrame, table: str, ok: pd.Series, source: str) -> None:
    """:class:`InputError` for an ``ok`` row breaking an inequality of :data:`ORDERED` (when both columns exist)."""
    for small, large, why in ORDERED.get(table, []):
        if small in df.columns and large in df.columns:
            _reject(ok & df[small].gt(df[large]), source, f"{small} > {large}",
                    lambda row: f"({df[small].iloc[row]:g} > {df[large].iloc[row]:g}) is impossible: {why}; "
                                "fix or delete that row")


def _reject(mask: pd.Series, source: str, what: str, reason) -> None:
    """:class:`InputError` at the first row where ``mask`` holds: '<source> line N: <what> <reason(row)>'.

    Line N counts the header as line 1 (the row's line in a CSV without blank or multi-line records).
    """
    if mask.any():
        row = int(np.flatnonzero(mask.to_numpy())[0])
        raise InputError(f"{source} line {row + 2}: {what} {reason(row)}")
