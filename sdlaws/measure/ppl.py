"""Perplexity of a causal LM on held-out text, recorded as a ``ppl`` row (summed NLL and token count).

Evaluation follows the strided sliding-window recipe of the Hugging Face perplexity guide
(``docs/source/en/perplexity.md`` in transformers): windows of ``context_len`` tokens start every ``stride``
tokens, and each window scores only the tokens no earlier window scored, so every token after the first is
predicted exactly once with at least ``context_len - stride`` tokens of context (when available).
Perplexity itself is derived from the counts in :func:`sdlaws.rates.perplexity`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdlaws import checks, io, rates
from sdlaws.errors import ConfigError, InputError, ModelError, naming
from sdlaws.measure.config import stable_run_id
from sdlaws.measure.models import ModelInfo, canonical_dtype, device_name, inspect_model, load_model, resolve_device
from sdlaws.provenance import provenance

#: Longest window used when the model's own context (``max_position_embeddings``) is larger (tokens).
MAX_DEFAULT_CONTEXT = 2048
#: Suffixes read from a folder of held-out text.
TEXT_SUFFIXES = (".py", ".txt")
#: Token ids on disk in ``.bin`` files: little-endian uint16 (the ``sdlaws train`` corpus format).
BIN_DTYPE = np.dtype("<u2")
#: Windows of one shape scored per forward pass: a held-out set of 1 M tokens in 512-token windows is 128
#: passes instead of 2048 launch-bound ones; the logits of 16 x 512 x 4096 float32 take 128 MB.
BATCH_WINDOWS = 16


@dataclass(frozen=True)
class PplResult:
    """Summed negative log-likelihood of a model on one evaluation set."""

    model: ModelInfo
    eval_set: str
    num_eval_tokens: int
    nll_sum_nats: float
    context_len: int
    stride: int

    def to_row(self) -> dict[str, Any]:
        """The configuration and count columns of a ``ppl`` row (provenance is added by the caller)."""
        return {**self.model.columns("model"), "eval_set": self.eval_set, "num_eval_tokens": self.num_eval_tokens,
                "nll_sum_nats": self.nll_sum_nats}

    def summary(self) -> str:
        """One line: model, set, tokens, mean NLL and perplexity."""
        ppl = float(rates.perplexity(self.to_row()))
        return (f"{self.model.name} on {self.eval_set}: {self.num_eval_tokens} tokens, "
                f"mean NLL {self.nll_sum_nats / self.num_eval_tokens:.4f} nats, perplexity {ppl:.3f} "
                f"(context {self.context_len}, stride {self.stride})")


def eval_token_ids(path: str | os.PathLike, tokenizer=None, *, vocab_size: int | None = None,
                   max_tokens: int | None = None) -> np.ndarray:
    """Token ids of a held-out set.

    Parameters
    ----------
    path : path
        A ``.bin`` of little-endian uint16 ids (e.g. ``<corpus>/test.bin``), a text file, or a folder whose
        ``.py`` / ``.txt`` files (sorted by path) are joined with blank lines.
    tokenizer : transformers tokenizer, optional
        Needed for text; special tokens are not added.
    vocab_size : int, optional
        Checked against the largest id of a ``.bin``.
    max_tokens : int, optional
        Keep only the first ``max_tokens`` ids.

    Returns
    -------
    ndarray of int64, shape (num_tokens,)
    """
    path = _existing(path)
    if path.suffix == ".bin":
        ids = _read_bin(path, vocab_size)
    else:
        if tokenizer is None:
            raise ConfigError(f"{path}: text needs a tokenizer but the model has none; pass a .bin of token ids")
        ids = np.asarray(tokenizer(_read_text(path), add_special_tokens=False)["input_ids"], dtype=np.int64)
    ids = ids[:max_tokens] if max_tokens else ids
    if len(ids) < 2:
        raise InputError(f"{path}: fewer than 2 tokens to evaluate; pass more text")
    return ids


def _existing(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else :class:`InputError` saying what ``--eval`` takes."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"--eval {path}: no such file or folder; pass a .bin of token ids, a text file or a folder")
    return path


def _read_bin(path: Path, vocab_size: int | None) -> np.ndarray:
    """Token ids of a little-endian uint16 ``.bin``, checked against the vocabulary."""
    if path.stat().st_size % BIN_DTYPE.itemsize:
        raise InputError(f"{path}: size is not a multiple of 2 bytes; expected little-endian uint16 token ids")
    ids = np.fromfile(path, dtype=BIN_DTYPE).astype(np.int64)
    if vocab_size is not None and len(ids) and int(ids.max()) >= vocab_size:
        raise InputError(f"{path}: token id {int(ids.max())} >= model vocab size {vocab_size}; "
                         "the .bin was made with another tokenizer")
    return ids


def _read_text(path: Path) -> str:
    """A text file, or a folder's ``TEXT_SUFFIXES`` files (sorted by path) joined with blank lines."""
    if path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")
    files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{path}: no {'/'.join(TEXT_SUFFIXES)} files in this folder")
    return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def windows(num_tokens: int, context_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Strided windows ``(begin, end, first_scored)``: tokens ``[begin, end)`` are fed, ``[first_scored, end)`` scored.

    Every index in ``1 .. num_tokens - 1`` is scored by exactly one window when ``stride < context_len``
    (with ``stride == context_len`` the first token of each window has no context and is not scored).
    """
    if not 1 <= stride <= context_len:
        raise ConfigError(f"stride ({stride}) must be between 1 and the context length ({context_len})")
    out, prev_end = [], 0
    for begin in range(0, num_tokens - 1, stride):
        end = min(begin + context_len, num_tokens)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == num_tokens:
            break
    return out


def window_batches(spans: list[tuple[int, int, int]], size: int) -> list[list[tuple[int, int, int]]]:
    """Consecutive windows grouped by shape (length, unscored prefix), at most ``size`` per group."""
    groups: list[list[tuple[int, int, int]]] = []
    for span in spans:
        shape = (span[1] - span[0], span[2] - span[0])
        last = groups[-1] if groups else None
        if last and len(last) < size and (last[0][1] - last[0][0], last[0][2] - last[0][0]) == shape:
            last.append(span)
        else:
            groups.append([span])
    return groups


def nll_sum(model, ids: np.ndarray, *, context_len: int, stride: int, progress: bool = False) -> tuple[float, int]:
    """Summed NLL (nats, float32 log-softmax) and number of scored tokens of ``ids`` under ``model``.

    Windows of equal shape go through the model together (:data:`BATCH_WINDOWS` at a time).
    """
    import torch
    from rich.progress import track

    device = next(model.parameters()).device
    tokens = torch.as_tensor(ids, dtype=torch.long, device=device)
    total, count = 0.0, 0
    batches = window_batches(windows(len(ids), context_len, stride), BATCH_WINDOWS)
    with torch.inference_mode():
        for group in track(batches, description="perplexity", disable=not progress):
            rows = torch.stack([tokens[begin:end] for begin, end, _ in group])    # (n, L)
            skip = group[0][2] - group[0][0]                                      # unscored prefix of each row
            logits = model(rows).logits                                           # (n, L, V): i predicts i + 1
            scored = logits[:, skip - 1:-1].float()                               # predicts rows[:, skip:]
            total += float(torch.nn.functional.cross_entropy(scored.flatten(0, 1), rows[:, skip:].flatten(),
                                                             reduction="sum"))
            count += rows[:, skip:].numel()
    return total, count


def context_length(config, requested: int | None = None) -> int:
    """``requested``, else the ``max_position_embeddings`` of a model's (text) config capped at
    :data:`MAX_DEFAULT_CONTEXT`."""
    limit = getattr(config, "max_position_embeddings", None) or MAX_DEFAULT_CONTEXT
    if requested is None:
        return min(limit, MAX_DEFAULT_CONTEXT)
    checks.number("--context", requested, 2, limit, integer=True, note="the model's context length is the most")
    return requested


def evaluate(model, tokenizer, info: ModelInfo, eval_path: str | os.PathLike, *, eval_set: str | None = None,
             context_len: int | None = None, stride: int | None = None, max_tokens: int | None = None,
             progress: bool = False) -> PplResult:
    """Perplexity counts of a loaded model on a held-out set (see :func:`eval_token_ids` for ``eval_path``).

    ``stride`` defaults to half the context length.
    """
    ids = eval_token_ids(eval_path, tokenizer, vocab_size=info.vocab_size, max_tokens=max_tokens)
    context = context_length(model.config.get_text_config(), context_len)
    stride = stride or max(1, context // 2)
    total, count = nll_sum(model, ids, context_len=context, stride=stride, progress=progress)
    return PplResult(info, eval_set or str(eval_path), count, total, context, stride)


def measure_ppl(model_spec: str, eval_path: str | os.PathLike, out: str | os.PathLike | None = None, *,
                eval_set: str | None = None, dtype: str = "bfloat16", device: str = "auto",
                context_len: int | None = None, stride: int | None = None, max_tokens: int | None = None,
                seed: int = 0, experiment: str = "", trust_remote_code: bool = False,
                progress: bool = True) -> PplResult | None:
    """Load a model, evaluate it and append a ``ppl`` row to ``out`` (if given).

    Returns None (and measures nothing) when ``out`` already holds an ``ok`` row with the same run id. The
    options, the output CSV, the held-out path and the model's config are checked before the weights load.
    """
    if out is not None:
        checks.output_file("--out", out)
        io.repair_tail(out)
    if max_tokens is not None:
        checks.number("--max-tokens", max_tokens, 2, 2**53, integer=True)
    _existing(eval_path)
    with naming("--model"):
        config = inspect_model(model_spec, trust_remote_code=trust_remote_code).config
    context = context_length(config, context_len)
    if stride is not None:
        checks.number("--stride", stride, 1, context, integer=True, note="at most the context length")
    device = resolve_device(device)
    gpu = device_name(device)
    key = stable_run_id({"model": model_spec, "eval_path": str(eval_path), "eval_set": eval_set,
                         "dtype": dtype, "context_len": context_len, "stride": stride, "max_tokens": max_tokens,
                         "seed": seed, "experiment": experiment, "gpu_name": gpu})
    if out is not None and key in io.done_run_ids(out):
        return None
    model, tokenizer, info = load_model(model_spec, dtype=dtype, device=device,
                                        trust_remote_code=trust_remote_code, seed=seed)
    if info.head:
        raise ModelError(f"{model_spec} is a draft head, which predicts from a target's hidden states; measure "
                         "the perplexity of causal LMs")
    result = evaluate(model, tokenizer, info, eval_path, eval_set=eval_set, context_len=context_len,
                      stride=stride, max_tokens=max_tokens, progress=progress)
    if out is not None:
        row = {**provenance(gpu), "run_id": key, "status": "ok", "error": "", "dtype": canonical_dtype(dtype),
               "seed": seed, "experiment": experiment, **result.to_row()}
        io.append_row(out, row, "ppl")
    return result
