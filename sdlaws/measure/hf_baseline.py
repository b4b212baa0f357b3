"""Reference timings of Hugging Face ``generate()``: assisted generation at batch size 1, and plain greedy decoding
with a static KV cache at any batch size.

Used by ``benchmarks/bench_measure_gpu.py`` and ``benchmarks/gpu_guard.py`` to compare sdlaws's decoder with the
stock implementation on the same models and prompts. For assisted generation (:func:`hf_assisted_generate`) the draft length is pinned so
that both decode the same way: ``num_assistant_tokens`` = gamma, schedule ``"constant"`` (no +2/-1 re-tuning) and ``assistant_confidence_threshold`` = 0 (no early stop
of the draft), set on the draft's generation config for the duration of the call. Decoding is greedy and
``min_new_tokens = max_new_tokens`` forces every prompt to generate exactly ``max_new_tokens`` tokens.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from sdlaws.errors import ConfigError


@dataclass(frozen=True)
class HFBaselineResult:
    """Summed counts and wall time of HF assisted generation over the prompts (batch size 1)."""

    num_prompts: int
    num_new_tokens: int
    total_time_s: float
    num_spec_tokens: int
    max_new_tokens: int

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of wall time (same definition as :func:`sdlaws.rates.derive`)."""
        return self.num_new_tokens / self.total_time_s

    def to_dict(self) -> dict:
        """Counts, settings and ``tokens_per_s``."""
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}


@contextmanager
def pinned_assistant(draft, gamma: int):
    """Pin the draft's assisted-generation settings (constant gamma, no confidence stop); restore them after."""
    config = draft.generation_config
    keys = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
    saved = {k: getattr(config, k, None) for k in keys}
    config.num_assistant_tokens, config.num_assistant_tokens_schedule = gamma, "constant"
    config.assistant_confidence_threshold = 0.0
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(config, k, v)


def hf_assisted_generate(target, draft, prompts: list[list[int]], *, gamma: int, max_new_tokens: int,
                         warmup: bool = True) -> HFBaselineResult:
    """Time ``target.generate(assistant_model=draft)`` on each prompt at batch size 1 (greedy).

    Parameters
    ----------
    target, draft : transformers.PreTrainedModel
        On the same device; sharing a tokenizer.
    prompts : list of list of int
        Token ids, one prompt per call.
    gamma : int
        Draft tokens per step (pinned, see the module docstring).
    max_new_tokens : int
        Tokens generated per prompt.
    warmup : bool
        Run one untimed generate on the first prompt first (CUDA kernels, allocator).

    Returns
    -------
    HFBaselineResult
    """
    import torch

    if gamma < 1 or max_new_tokens < 1 or not prompts:
        raise ConfigError(f"need gamma >= 1, max_new_tokens >= 1 and prompts (got {gamma}, {max_new_tokens}, "
                          f"{len(prompts)} prompts)")
    device = next(target.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pad = target.generation_config.eos_token_id
    pad = (pad[0] if isinstance(pad, list) else pad) if pad is not None else 0
    total_s, new_tokens = 0.0, 0
    with pinned_assistant(draft, gamma), torch.inference_mode():
        for i, ids in enumerate(([prompts[0]] if warmup else []) + list(prompts)):
            input_ids = torch.tensor([ids], device=device)
            sync()
            start = time.perf_counter()
            out = target.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                  assistant_model=draft, do_sample=False, max_new_tokens=max_new_tokens,
                                  min_new_tokens=max_new_tokens, pad_token_id=pad)
            sync()
            if i >= int(warmup):
                total_s += time.perf_counter() - start
                new_tokens += out.shape[1] - input_ids.shape[1]
    return HFBaselineResult(len(prompts), new_tokens, total_s, gamma, max_new_tokens)


@dataclass(frozen=True)
class HFStaticResult:
    """Summed counts and wall times of greedy ``generate(cache_implementation="static")`` over static batches."""

    num_sequences: int
    batch_size: int
    num_batches: int
    max_new_tokens: int
    total_time_s: float     # whole generate calls (prefill + decode)
    prefill_time_s: float   # the same batches generating one token: prefill and the first token only

    @property
    def decode_step_s(self) -> float:
        """Seconds of one decode step (one new token for every row), prefill excluded."""
        return (self.total_time_s - self.prefill_time_s) / (self.num_batches * (self.max_new_tokens - 1))

    def to_dict(self) -> dict:
        """Counts, times and ``decode_step_s``."""
        return {**asdict(self), "decode_step_s": self.decode_step_s}


def hf_static_generate(model, batches: list[list[list[int]]], *, max_new_tokens: int,
                       warmup: bool = True) -> HFStaticResult:
    """Time greedy ``model.generate(cache_implementation="static")`` on each batch of equal-length prompts.

    Each batch is timed twice: generating ``max_new_tokens`` tokens, and generating one (its prefill), so that the
    decode time is the difference; ``min_new_tokens = max_new_tokens`` stops EOS from ending a row early. Prompts
    of one batch must have one length: this baseline does not pad.

    Raises
    ------
    ConfigError
        No batches, ragged or unequal batches, or ``max_new_tokens < 2`` (no decode step to time).
    """
    import torch

    if max_new_tokens < 2 or not batches or len({len(b) for b in batches}) != 1 or any(
            len({len(p) for p in b}) != 1 for b in batches):
        raise ConfigError(f"need max_new_tokens >= 2 (got {max_new_tokens}) and batches of equal size whose "
                          "prompts share one length")
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pad = model.generation_config.eos_token_id
    pad = (pad[0] if isinstance(pad, list) else pad) if pad is not None else 0

    def timed(ids, new_tokens: int) -> float:
        sync()
        start = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad,
                       cache_implementation="static")
        sync()
        return time.perf_counter() - start

    total = prefill = 0.0
    with torch.inference_mode():
        for i, batch in enumerate(([batches[0]] if warmup else []) + list(batches)):
            ids = torch.tensor(batch, device=device)
            full, first = timed(ids, max_new_tokens), timed(ids, 1)
            if i >= int(warmup):  # the first call allocates the static cache and warms the kernels
                total, prefill = total + full, prefill + first
    return HFStaticResult(sum(map(len, batches)), len(batches[0]), len(batches), max_new_tokens, total, prefill)
