"""A plan's per-batch speculation choice as the configuration a serving engine reads (``sdlaws plan export``).

The input is the ``plan.json`` that ``sdlaws plan ... --out DIR`` writes: the roofline serving table
(``tables.serving``: chain length and tree per batch size) or the engine search (``tables.engine_candidates``: every
configuration's predicted decode rate per batch size). A plan holds batch sizes, engines take ranges: every batch
size goes to the nearer planned one on a log scale (the boundary between planned ``a < b`` is
``floor(sqrt(a * b))``), the first range starts at 1, the last runs to ``max_batch``, equal neighbours merge.

What each engine takes (read from its documentation and code; a draft length of 0 means speculation off):

vLLM (>= 0.25)
    ``vllm serve --config FILE`` reads a YAML file whose keys are the long option names
    (docs.vllm.ai/en/latest/configuration/serve_args.html); ``speculative-config`` holds the JSON of
    ``SpeculativeConfig`` with ``num_speculative_tokens`` (the maximum) and
    ``num_speculative_tokens_per_batch_size``, a list of inclusive ``[start_bs, end_bs, K]``, each K <= the maximum
    (docs.vllm.ai/en/v0.25.0/features/speculative_decoding/dynamic_speculative_decoding/). Chain drafts only;
    vLLM turns the table off under data parallelism.
TensorRT-LLM (LLM API, PyTorch backend)
    ``trtllm-serve --config FILE``: ``speculative_config`` with ``decoding_type``, ``max_draft_len``,
    ``speculative_model`` (docs/source/features/speculative-decoding.md, github.com/NVIDIA/TensorRT-LLM) and
    ``draft_len_schedule``, a map batch size -> draft length applying from that batch size up, which must map 1 to
    ``max_draft_len`` (``DecodingBaseConfig`` in tensorrt_llm/llmapi/llm_args.py; listed in the 1.3.0rc27 API
    reference, nvidia.github.io/TensorRT-LLM/1.3.0rc27/llm-api/reference/MTPDecodingConfig.html, where it is
    called a developer interface). Chain drafts only.
SGLang
    Its documented server arguments take one speculation shape per server: ``--speculative-algorithm``,
    ``--speculative-draft-model-path``, ``--speculative-num-steps`` (depth), ``--speculative-eagle-topk``
    (branching), ``--speculative-num-draft-tokens`` (tokens verified per step, the root included; steps + 1 when
    top-k is 1) (docs.sglang.io/advanced_features/speculative_decoding.html, python/sglang/srt/server_args.py).
    sdlaws found no per-batch table there, so the export is one flag set per batch bracket, for servers sized to
    a bracket.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sdlaws.errors import ConfigError, InputError

ENGINES = ("vllm", "sglang", "trtllm")
#: Speculation methods each engine names (vLLM ``SpeculativeMethod``, SGLang docs, TensorRT-LLM ``decoding_type``).
METHODS = {"vllm": ("draft_model", "eagle", "eagle3", "mtp", "medusa", "mlp_speculator"),
           "sglang": ("STANDALONE", "EAGLE", "EAGLE3"),
           "trtllm": ("DraftTarget", "Eagle3", "MTP")}
DEFAULT_METHOD = {"vllm": "draft_model", "sglang": "STANDALONE", "trtllm": "DraftTarget"}


@dataclass(frozen=True)
class Choice:
    """The plan's choice at one batch size: a chain length for vLLM/TensorRT-LLM, a tree shape for SGLang."""

    chain_num_spec_tokens: int                    # 0 = speculation off
    chain_speedup: float
    # (num_spec_tokens, tree_topk, tree_verify_tokens), SGLang's --speculative-num-steps, --speculative-eagle-topk
    # and --speculative-num-draft-tokens; None = off
    tree: Optional[tuple[int, int, int]]
    tree_speedup: float


@dataclass(frozen=True)
class Bracket:
    """Batch sizes ``lo..hi`` (inclusive) and what they run."""

    lo: int
    hi: int
    value: Any
    speedup: float


def export(plan: dict, engine: str, *, draft: Optional[str] = None, method: Optional[str] = None,
           max_batch: int = 1024, source: str = "plan.json") -> str:
    """The text of the engine's configuration file for ``plan`` (a loaded ``plan.json``)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    method = method or DEFAULT_METHOD[engine]
    if method not in METHODS[engine]:
        raise ConfigError(f"--method {method!r} is not a {engine} method; use one of {', '.join(METHODS[engine])}")
    batches, picks = choices(plan, source)
    draft = draft or _plan_draft(plan)
    if max_batch < batches[-1]:
        raise ConfigError(f"--max-batch {max_batch} is below the plan's largest batch size {batches[-1]}")
    writer = {"vllm": _vllm, "sglang": _sglang, "trtllm": _trtllm}[engine]
    return writer(plan, batches, picks, draft=draft, method=method, max_batch=max_batch, source=source)


def choices(plan: dict, source: str) -> tuple[list[int], list[Choice]]:
    """Planned batch sizes and the choice at each, from the serving table or the engine search."""
    tables = plan.get("tables") or {}
    if tables.get("engine_candidates"):
        return _from_candidates(tables["engine_candidates"])
    if tables.get("serving"):
        return _from_serving(tables["serving"])
    raise InputError(f"{source}: no per-batch serving plan in it; write one with `sdlaws plan --out DIR` or "
                     "`sdlaws plan serving --out DIR` and pass DIR/plan.json")


def _from_serving(rows: list[dict]) -> tuple[list[int], list[Choice]]:
    """Roofline plan: the optimal chain and tree per batch size, off where the predicted speedup is below 1."""
    picks = [Choice(chain_num_spec_tokens=int(r["chain_num_spec_tokens"]) if r["chain_speedup"] >= 1 else 0,
                    chain_speedup=r["chain_speedup"],
                    tree=(int(r["tree_num_spec_tokens"]), int(r["tree_topk"]), int(r["tree_verify_tokens"]))
                    if r["tree_speedup"] >= 1 else None, tree_speedup=r["tree_speedup"]) for r in rows]
    return [int(r["batch_size"]) for r in rows], picks


def _from_candidates(rows: list[dict]) -> tuple[list[int], list[Choice]]:
    """Engine search: per batch size the best chain (or AR) and the best configuration of any shape (or AR)."""
    batches = sorted({int(r["batch_size"]) for r in rows})
    picks = []
    for b in batches:
        here = [r for r in rows if int(r["batch_size"]) == b]
        ar = next(r["decode_tokens_per_s"] for r in here if r["method"] == "ar")
        chain = max((r for r in here if r["method"] == "chain"), key=lambda r: r["decode_tokens_per_s"])
        best = max((r for r in here if r["method"] != "ar"), key=lambda r: r["decode_tokens_per_s"])
        faster = chain["decode_tokens_per_s"] > ar
        picks.append(Choice(chain_num_spec_tokens=int(chain["num_spec_tokens"]) if faster else 0,
                            chain_speedup=chain["decode_tokens_per_s"] / ar,
                            tree=_sglang_shape(best) if best["decode_tokens_per_s"] > ar else None,
                            tree_speedup=best["decode_tokens_per_s"] / ar))
    return batches, picks


def _sglang_shape(row: dict) -> tuple[int, int, int]:
    """(num_spec_tokens, tree_topk, tree_verify_tokens) of an engine configuration: tree_verify_tokens =
    tree_budget + 1, as SGLang counts the root among the verified."""
    return int(row["num_spec_tokens"]), int(row["tree_topk"]), int(row["tree_budget"]) + 1


def brackets(batches: list[int], values: list[Any], speedups: list[float], max_batch: int) -> list[Bracket]:
    """Ranges 1..max_batch, each batch size going to the nearer planned one in log2; equal neighbours merged."""
    cuts = [math.isqrt(a * b) for a, b in zip(batches, batches[1:])]
    los, his = [1, *(c + 1 for c in cuts)], [*cuts, max_batch]
    return merge([Bracket(*fields) for fields in zip(los, his, values, speedups)])


def merge(found: list[Bracket]) -> list[Bracket]:
    """Neighbouring brackets with the same value as one (its speedup the lower of the two)."""
    merged: list[Bracket] = []
    for b in found:
        if merged and merged[-1].value == b.value:
            merged[-1] = Bracket(merged[-1].lo, b.hi, b.value, min(merged[-1].speedup, b.speedup))
        else:
            merged.append(b)
    return merged


def _chain_brackets(batches, picks, max_batch) -> list[Bracket]:
    """Chain-length brackets; :class:`ConfigError` when speculation pays at no batch size."""
    found = brackets(batches, [p.chain_num_spec_tokens for p in picks], [p.chain_speedup for p in picks], max_batch)
    if all(b.value == 0 for b in found):
        raise ConfigError("the plan predicts no speedup from chain drafts at any batch size; serve without "
                          "speculative decoding")
    return found


def _vllm(plan, batches, picks, *, draft, method, max_batch, source) -> str:
    """YAML for ``vllm serve --config``: speculative-config with num_speculative_tokens_per_batch_size."""
    found = _chain_brackets(batches, picks, max_batch)
    config = {"method": method, "model": draft, "num_speculative_tokens": max(b.value for b in found),
              "num_speculative_tokens_per_batch_size": [[b.lo, b.hi, b.value] for b in found]}
    lines = _header(plan, source, "vLLM >= 0.25: `vllm serve TARGET --config THIS_FILE` (num_speculative_tokens_per_"
                    "batch_size; vLLM turns it off under data parallelism)", found, _k_label)
    return "\n".join(lines + [f"speculative-config: '{json.dumps(config)}'"]) + "\n"


def _trtllm(plan, batches, picks, *, draft, method, max_batch, source) -> str:
    """LLM-API YAML for ``trtllm-serve --config``: speculative_config with draft_len_schedule."""
    import yaml

    found = _chain_brackets(batches, picks, max_batch)
    first = found[0].value
    if first == 0:
        raise ConfigError("the plan turns speculation off at batch size 1, but TensorRT-LLM's draft_len_schedule "
                          "must map batch size 1 to max_draft_len > 0")
    notes = []
    if any(b.value > first for b in found):  # the schedule's entry for batch 1 must be the maximum
        notes.append(f"draft lengths above {first} (the batch-1 value) are lowered to it: TensorRT-LLM requires "
                     "draft_len_schedule[1] == max_draft_len")
        found = merge([Bracket(b.lo, b.hi, min(b.value, first), b.speedup) for b in found])
    config = {"speculative_config": {"decoding_type": method, "max_draft_len": first, "speculative_model": draft,
                                     "draft_len_schedule": {b.lo: b.value for b in found}}}
    lines = _header(plan, source, "TensorRT-LLM LLM API (PyTorch backend): `trtllm-serve TARGET --config THIS_FILE`; "
                    "draft_len_schedule applies each length from its batch size up", found, _k_label, notes)
    return "\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False)


def _sglang(plan, batches, picks, *, draft, method, max_batch, source) -> str:
    """Shell variables, one SGLang flag set per batch bracket (SGLang takes one shape per server)."""
    found = brackets(batches, [p.tree for p in picks], [p.tree_speedup for p in picks], max_batch)
    if all(b.value is None for b in found):
        raise ConfigError("the plan predicts no speedup from speculation at any batch size; serve without it")
    lines = _header(plan, source, "SGLang: one speculation shape per server, so one flag set per batch bracket "
                    "(`python -m sglang.launch_server ... $SGLANG_SPECULATIVE_ARGS_<lo>_<hi>`)", found, _shape_label)
    for b in found:
        lines.append(f"SGLANG_SPECULATIVE_ARGS_{b.lo}_{b.hi}='{_sglang_flags(b.value, method, draft)}'")
    return "\n".join(lines) + "\n"


def _sglang_flags(shape: Optional[tuple[int, int, int]], method: str, draft: str) -> str:
    """The speculative flags of one shape ('' when speculation is off)."""
    if shape is None:
        return ""
    steps, topk, tokens = shape
    return (f"--speculative-algorithm {method} --speculative-draft-model-path {draft} --speculative-num-steps "
            f"{steps} --speculative-eagle-topk {topk} --speculative-num-draft-tokens {tokens}")


def _k_label(value: int) -> str:
    return f"K={value}" if value else "speculation off"


def _shape_label(value: Optional[tuple[int, int, int]]) -> str:
    return "speculation off" if value is None else "steps={}, topk={}, draft tokens={}".format(*value)


def _header(plan: dict, source: str, usage: str, found: list[Bracket], label: Callable[[Any], str],
            notes: tuple | list = ()) -> list[str]:
    """Comment lines naming the plan's inputs and, per bracket, the choice and its predicted speedup."""
    from sdlaws import __version__
    from sdlaws.provenance import git_sha, now_utc

    serving = _serving_inputs(plan)
    text = [f"sdlaws plan export for {usage}.",
            f"Plan: {plan.get('title', '')}.",
            f"Written {now_utc()} by sdlaws {__version__} ({git_sha()}) from {source}.",
            f"Target {serving['target']['name']} ({serving['target']['params']:.3g} params), draft "
            f"{serving['draft']['name']} ({serving['draft']['params']:.3g} params), {serving['hardware']['name']}, "
            f"{serving['dtype']}, tp={serving['tp']}, context {serving['kv_len']} tokens.",
            (plan.get("inputs", {}).get("cost_model") or {}).get("statement", "Cost model: not recorded."),
            _acceptance_line(plan),
            "Each batch size runs the choice of the nearer planned batch size (log scale).",
            *notes]
    wrap = textwrap.TextWrapper(100, break_on_hyphens=False, break_long_words=False)  # paths stay whole
    lines = [f"# {wrapped}" for paragraph in text for wrapped in wrap.wrap(paragraph)]
    lines += [f"#   batch {b.lo}-{b.hi}: {label(b.value)}"
              + (f" (predicted speedup >= {b.speedup:.2f}x)" if b.value else "") for b in found]
    return lines


def _serving_inputs(plan: dict) -> dict:
    """The serving setup (target, draft, hardware, ...) a plan was made for."""
    inputs = plan.get("inputs") or {}
    serving = inputs.get("serving") or (inputs.get("engine") or {}).get("serving")
    if not serving or not serving.get("draft"):
        raise InputError("the plan records no serving setup with a draft; re-run `sdlaws plan ... --out DIR`")
    return serving


def _plan_draft(plan: dict) -> str:
    """The draft model the plan names (the default of --draft)."""
    return _serving_inputs(plan)["draft"]["name"]


def _acceptance_line(plan: dict) -> str:
    """How the plan modelled acceptance."""
    inputs = plan.get("inputs") or {}
    if "engine" in inputs:
        profile = inputs["engine"]["profile"]
        first = ", ".join(f"{row[0]:.3f}" for row in profile)
        return (f"Acceptance: profile of {len(profile)} depths (rank-0 rates {first}); "
                f"{inputs['engine']['batching']} batches of {inputs['engine']['max_new_tokens']} new tokens.")
    if inputs.get("acceptance_source"):
        return f"Acceptance: {inputs['acceptance_source']}."
    alpha = inputs.get("alpha")
    return f"Acceptance: alpha = {alpha:.4f} per token (Leviathan's i.i.d. model)." if alpha is not None else \
        "Acceptance: not recorded."
