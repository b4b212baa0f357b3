"""The static sizes of a decoder's workspace (:mod:`sdlaws.measure.engine`): prompt width, tree columns, verify
block and KV slots per row, from the longest prompt, the new tokens and the speculation shape.

Plain integers, no torch: the memory guard (:mod:`sdlaws.measure.memory`) sizes a sweep's caches from the same
layout before anything is allocated.
"""

from __future__ import annotations

from typing import NamedTuple

#: Slot counts are rounded up to a multiple of this (aligned rows for the attention kernels).
SLOT_ALIGN = 8
#: Most prompt slots (rows x the chunk's longest prompt) one prefill forward takes: a larger batch is prefilled in
#: chunks of rows, so its activations (the MLP's intermediate alone is 2 x 14336 bf16 values per token on an 8B)
#: stay a chunk's, not the batch's. 32,768 tokens keep each chunk's GEMMs compute-bound.
PREFILL_CHUNK_SLOTS = 32_768


def prefill_rows(batch_size: int, prompt_width: int) -> int:
    """Rows of the widest prefill chunk of ``batch_size`` rows whose prompts span ``prompt_width`` slots."""
    return min(batch_size, max(1, PREFILL_CHUNK_SLOTS // prompt_width))


def furthest_position(max_prompt_len: int, max_new_tokens: int, depth: int) -> int:
    """Positions a row may reach: the longest prompt, its new tokens, and a just-finished row's speculation (a
    tree of ``depth`` drafted past the end and verified)."""
    return max_prompt_len + max_new_tokens + 2 * depth


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


class CacheLayout(NamedTuple):
    """Static sizes of a workspace: they fix its KV caches and buffers (and the memory guard's estimate)."""

    num_refeed: int    # draft tokens the draft re-reads each step
    prompt_width: int  # W: slots of the left-padded prompts
    tree_cols: int     # draft slots of a tree's frontier nodes
    num_verify: int    # tokens of the verify block: root + budget
    num_slots: int     # S: slots per row of every KV cache


def cache_layout(max_prompt_len: int, max_new_tokens: int, depth: int, topk: int, budget: int,
                 head: bool = False) -> CacheLayout:
    """The :class:`CacheLayout` of a decoder: longest prompt, new tokens, tree depth (0 for ar), top-k (1 for
    chains and ar), drafted tokens verified per step (0 for ar) and whether the draft is a feature-level head."""
    # With k = 1 an LM draft's cache already holds the accepted chain (pending: the last draft token and the
    # bonus); a tree path was written at tree slots, so it is re-read whole. A head re-reads the root and the
    # accepted path with the target's features instead of its own.
    num_refeed = 2 if (topk == 1 and not head) else depth + 1
    prompt_width = round_up(max(max_prompt_len, num_refeed), SLOT_ALIGN)
    tree_cols = (depth - 1) * topk if depth else 0
    num_verify = 1 + budget
    # Largest slot a step can touch: a just-frozen row has length <= W + max_new + depth, then writes up to
    # max(verify block, commit of depth + 1 tokens, draft tree block) slots beyond it.
    slack = depth + max(num_verify, tree_cols + 1, depth + 1) + 1
    num_slots = round_up(prompt_width + max_new_tokens + slack, SLOT_ALIGN)
    return CacheLayout(num_refeed, prompt_width, tree_cols, num_verify, num_slots)
