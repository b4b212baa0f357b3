"""A target and a draft served on one hardware type, and the time of one speculative step built from their passes.

:func:`speculative_step_s` is the one step structure of the planner: some draft passes, then one target pass that
verifies the drafted tokens. :class:`ServingSetup` prices its passes (the roofline, or a fitted step-time law)
and times the idealised chain and tree steps of :mod:`sdlaws.plan.optimize`; :mod:`sdlaws.plan.serving` times
the passes sdlaws's own engine runs with the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

import numpy as np

from sdlaws.dtypes import dtype_name
from sdlaws.errors import ConfigError
from sdlaws.hardware import Hardware
from sdlaws.roofline import ModelShape, forward_time_s, kv_cache_bytes, param_bytes

#: ``pass_s(batch_size, tokens_per_row) -> seconds`` of one forward pass of one model.
PassTime = Callable[[Any, Any], Any]


def speculative_step_s(draft_s: PassTime, target_s: PassTime, batch_size, draft_passes: Iterable[tuple[Any, Any]],
                verify_tokens):
    """Seconds of one speculative step: the draft passes, given as ``(tokens per row, how many)``, then one target
    pass verifying ``verify_tokens`` per row. No draft passes: an autoregressive step. Broadcasts over arrays."""
    drafting = 0.0
    for tokens, count in draft_passes:
        drafting = drafting + count * draft_s(batch_size, tokens)
    return drafting + target_s(batch_size, verify_tokens)


@dataclass(frozen=True)
class ServingSetup:
    """A target (and optionally a draft) served on one hardware type: what the step-time functions need.

    The target is split over ``tp`` GPUs (tensor parallel); the draft runs unsplit (replicated), as small drafts
    usually are. ``kv_len`` is the mean cached context per sequence during decode.
    """

    target: ModelShape
    hardware: Hardware
    draft: ModelShape | None = None
    kv_len: int = 1024
    dtype: str = "bfloat16"
    kv_dtype: str | None = None
    tp: int = 1
    forward: Any = None  # a fitted step-time law (sdlaws.plan.cost.StepTimeFit) replacing the roofline

    def __post_init__(self) -> None:
        """Dtypes spelled one way in every plan (``bf16`` is printed as ``bfloat16``); a measured step-time law
        times unsplit forwards only."""
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if self.kv_dtype is not None:
            object.__setattr__(self, "kv_dtype", dtype_name(self.kv_dtype))
        if self.forward is not None and self.tp != 1:
            raise ConfigError("measured step tables (--steps) time one GPU; tensor parallelism needs the roofline")

    def forward_time_s(self, shape: ModelShape, batch_size, tokens_per_row, tp: int = 1):
        """One pass of ``shape``: the step-time law when one is set, else the roofline."""
        if self.forward is not None:
            b, n = np.broadcast_arrays(np.asarray(batch_size, dtype=float), np.asarray(tokens_per_row, dtype=float))
            return self.forward.time_s(shape, b.ravel(), n.ravel(), float(self.kv_len)).reshape(b.shape)
        return forward_time_s(shape, batch_size, tokens_per_row, self.kv_len, self.hardware, dtype=self.dtype,
                              kv_dtype=self.kv_dtype, tp=tp)

    def with_draft(self, draft: ModelShape) -> "ServingSetup":
        """Copy with another draft."""
        return replace(self, draft=draft)

    def target_time_s(self, batch_size, tokens_per_row):
        """One target pass (decode: 1 token per row; verification: the verified tokens per row)."""
        return self.forward_time_s(self.target, batch_size, tokens_per_row, tp=self.tp)

    def draft_time_s(self, batch_size, tokens_per_row=1):
        """One draft pass (chain: 1 token per row; tree: top-k candidate tokens per row)."""
        if self.draft is None:
            raise ConfigError("no draft model in this serving setup; give a draft size or shape")
        return self.forward_time_s(self.draft, batch_size, tokens_per_row)

    def chain_step_time_s(self, batch_size, num_spec_tokens):
        """One chain step: ``num_spec_tokens`` draft passes + one target pass verifying ``num_spec_tokens + 1``
        tokens per row."""
        n = np.asarray(num_spec_tokens, dtype=float)
        return speculative_step_s(self.draft_time_s, self.target_time_s, batch_size, [(1, n)], n + 1)

    def tree_step_time_s(self, batch_size, tree_topk, num_spec_tokens):
        """One tree step: ``num_spec_tokens`` (the depth) draft passes of ``tree_topk`` tokens per row + verifying
        ``tree_topk * num_spec_tokens + 1``."""
        k, n = np.asarray(tree_topk, dtype=float), np.asarray(num_spec_tokens, dtype=float)
        return speculative_step_s(self.draft_time_s, self.target_time_s, batch_size, [(k, n)], k * n + 1)

    def memory_bytes_per_gpu(self, batch_size, tokens_per_row=1) -> np.ndarray:
        """Weights + KV cache per GPU (target split over tp, draft replicated)."""
        cached = self.kv_len + np.asarray(tokens_per_row, dtype=float)
        kv_dtype = self.kv_dtype or self.dtype
        need = (param_bytes(self.target.params, self.dtype) + kv_cache_bytes(self.target, batch_size, cached,
                                                                              kv_dtype)) / self.tp
        if self.draft is not None:
            need = need + param_bytes(self.draft.params, self.dtype) + kv_cache_bytes(self.draft, batch_size,
                                                                                       cached, kv_dtype)
        return need

    def fits(self, batch_size, tokens_per_row=1) -> np.ndarray:
        """Whether weights + KV fit in device memory (activations and fragmentation not counted)."""
        return self.memory_bytes_per_gpu(batch_size, tokens_per_row) <= self.hardware.memory_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict echoing every input."""
        return dict(target=self.target.to_dict(), draft=self.draft.to_dict() if self.draft else None,
                    hardware=self.hardware.to_dict(), kv_len=self.kv_len, dtype=self.dtype,
                    kv_dtype=self.kv_dtype or self.dtype, tp=self.tp)
