"""Triton kernels of the fast path's attention block over the slot KV cache (CUDA only), and what its kernels
share: the split kernels' counters and a CUDA-graph timer.

Why: a profile of a graph-replayed batch-1 decode step of the Llama-3.1-8B shape on an H200
(``docs/benchmarks.md``) spent 0.29 ms in attention and 0.23 ms in KV-cache writes per step, against 0.005 ms
for reading the live KV cache at the copy bandwidth; at batch 64, 1.0 ms in attention. PyTorch's
``scaled_dot_product_attention`` with an additive mask reads every slot of the static cache, live or not, and
the rotary kernel, the cache scatter and the query's re-layout are three launches per layer. Here:

- :func:`rope_write` rotates the query and key heads of a fused QKV projection, writes the keys and values at
  each token's cache slot and the queries in the layout attention reads, in one launch;
- :func:`attention` computes masked attention for a few queries per row (decode, a chain's or a tree's
  verification) flash-decoding style: each program holds up to 64 of one KV head's query rows (the GQA group
  folded in, no K/V copy) and walks, in blocks, only the row's live range of slots (:func:`live_bounds`, one
  launch per forward: the first to the last slot some query of the row may attend), loading no slot no query may
  attend, so the bytes read are the live cache's; where the batch has too few KV heads to fill the GPU, the
  cache's blocks are shared among programs in fixed groups (the same whatever the live range, so that a
  verification sums a prefix exactly as an AR step does) and the last program of a head to finish merges the
  partial softmaxes, in share order. The output is written in the ``(B, n, heads * D)`` layout of the output
  projection's input;
and :mod:`sdlaws.measure.projection` holds the fast path's kernel for the projections of few rows.

Semantics of :func:`attention` are those of the engine's call ``F.scaled_dot_product_attention(q, k, v,
attn_mask=additive)`` for every query that may attend at least one slot; entries equal to the mask dtype's most
negative value (what the engine's masks hold where a query may not attend) or -inf count as masked. A query that
may attend no slot gets zeros (SDPA would average every slot). Scores and the softmax are float32; the
probabilities meet the values in the input dtype, as in flash attention; float32 inputs use IEEE float32 products
(no TF32), so an fp32 model keeps its own greedy tokens. Head sizes below 16 are zero-padded to 16 (the matrix
units' smallest tile).

A split kernel (:func:`attention` with shares, :func:`sdlaws.measure.projection.linear` with a split of K) counts its finished programs per
output tile in a per-device counter that the tile's last program zeroes again: calls on one device must not run
concurrently on two streams (the engine's run on one).

The kernels are plain ``triton.jit`` functions: :mod:`tests.test_kernels` runs them on CPU through Triton's
interpreter against the PyTorch reference of the same call.
"""

from __future__ import annotations

import functools
import statistics

import torch
import triton
import triton.language as tl

#: Slots per block of :func:`attention` where its programs share the cache's blocks (few rows; else 32).
BLOCK_S = 64
#: Most queries per KV head (GQA group x tokens per row) :func:`attention` is used for by the fast path; a longer
#: block (a prefill chunk) goes to SDPA, which tiles queries as well and reads the whole cache once per tile.
MAX_QUERIES = 256
#: Most folded query rows one program of :func:`attention` holds; more (65-256 rows: a large tree's verification)
#: are tiled over programs, each reading the live blocks again.
MAX_BLOCK_M = 64


@triton.jit
def _rope_write_kernel(qkv, cos, sin, slots, q_out, k_cache, v_cache, n, kv_heads, groups,
                       skb, skh, sks, svb, svh, svs,
                       HEADS: tl.constexpr, HALF: tl.constexpr, HALF_P2: tl.constexpr, BLOCK_H: tl.constexpr):
    """One token (program axis 0, ``b * n + j``) and ``BLOCK_H`` of its ``heads + 2 kv_heads`` heads (axis 1)."""
    tok = tl.program_id(0)
    b = tok // n
    j = tok % n
    head = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, HALF_P2)
    dim = 2 * HALF
    live = (head < HEADS + 2 * kv_heads)[:, None] & (d < HALF)[None, :]
    row = qkv + tok.to(tl.int64) * (HEADS + 2 * kv_heads) * dim + head[:, None] * dim + d[None, :]
    x1 = tl.load(row, mask=live, other=0.0).to(tl.float32)
    x2 = tl.load(row + HALF, mask=live, other=0.0).to(tl.float32)
    c1 = tl.load(cos + tok * dim + d, mask=d < HALF, other=0.0).to(tl.float32)[None, :]
    c2 = tl.load(cos + tok * dim + HALF + d, mask=d < HALF, other=0.0).to(tl.float32)[None, :]
    s1 = tl.load(sin + tok * dim + d, mask=d < HALF, other=0.0).to(tl.float32)[None, :]
    s2 = tl.load(sin + tok * dim + HALF + d, mask=d < HALF, other=0.0).to(tl.float32)[None, :]
    # HF's half-split rotary: x * cos + cat(-x2, x1) * sin, on query and key heads; values pass through
    rotated = (head < HEADS + kv_heads)[:, None]
    y1 = tl.where(rotated, x1 * c1 - x2 * s1, x1).to(q_out.dtype.element_ty)
    y2 = tl.where(rotated, x2 * c2 + x1 * s2, x2).to(q_out.dtype.element_ty)
    # queries: (B, kv_heads, groups * n, D), query head h = kv * groups + g at row g * n + j
    is_q = (head < HEADS)[:, None]
    kv = head // groups
    q_row = ((b * kv_heads + kv) * groups + head % groups) * n + j
    q_ptr = q_out + q_row.to(tl.int64)[:, None] * dim + d[None, :]
    tl.store(q_ptr, y1, mask=live & is_q)
    tl.store(q_ptr + HALF, y2, mask=live & is_q)
    # keys and values: at this token's slot of the (B, kv_heads, S, D) caches
    slot = tl.load(slots + tok).to(tl.int64)
    k_head = head - HEADS
    k_ptr = k_cache + b.to(tl.int64) * skb + k_head[:, None] * skh + slot * sks + d[None, :]
    is_k = ((head >= HEADS) & (head < HEADS + kv_heads))[:, None]
    tl.store(k_ptr, y1, mask=live & is_k)
    tl.store(k_ptr + HALF, y2, mask=live & is_k)
    v_head = head - HEADS - kv_heads
    v_ptr = v_cache + b.to(tl.int64) * svb + v_head[:, None] * svh + slot * svs + d[None, :]
    is_v = (head >= HEADS + kv_heads)[:, None]
    tl.store(v_ptr, y1, mask=live & is_v)
    tl.store(v_ptr + HALF, y2, mask=live & is_v)


def rope_write(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slots: torch.Tensor, keys: torch.Tensor,
               values: torch.Tensor, heads: int) -> torch.Tensor:
    """Rotary embedding and cache write of a fused QKV projection; the rotated queries, folded for attention.

    Parameters
    ----------
    qkv : Tensor
        ``(B, n, heads + 2 kv_heads, D)`` contiguous: query heads, key heads, value heads.
    cos, sin : Tensor
        ``(B, n, D)`` contiguous rotary tables at each token's position (HF half-split layout).
    slots : Tensor
        ``(B, n)`` long, contiguous: the cache slot each token's key and value go to, each in ``[0, S)`` (not
        checked: that would take a host synchronisation; the engine's slots are).
    keys, values : Tensor
        ``(B, kv_heads, S, D)`` caches (any strides with a unit last one), written in place.
    heads : int
        Query heads.

    Returns
    -------
    Tensor
        ``(B, kv_heads, groups * n, D)``: query head ``kv * groups + g`` of token ``j`` at row ``g * n + j``.
    """
    bsz, n, total, dim = qkv.shape
    kv_heads = (total - heads) // 2
    groups = heads // kv_heads
    check_shapes(qkv.is_contiguous() and cos.shape == sin.shape == (bsz, n, dim) and cos.is_contiguous()
           and sin.is_contiguous() and slots.shape == (bsz, n) and slots.is_contiguous()
           and keys.shape == values.shape and keys.shape[:2] == (bsz, kv_heads) and keys.shape[3] == dim
           and keys.stride(3) == values.stride(3) == 1,
           "rope_write: qkv (B, n, heads + 2 kv_heads, D) and cos, sin (B, n, D) contiguous, slots (B, n) "
           "contiguous, keys and values (B, kv_heads, S, D) with unit last stride", qkv, cos, sin, slots, keys)
    q = qkv.new_empty((bsz, kv_heads, groups * n, dim))
    block_h = min(16, triton.next_power_of_2(total))
    grid = (bsz * n, triton.cdiv(total, block_h))
    _rope_write_kernel[grid](qkv, cos, sin, slots, q, keys, values, n, kv_heads, groups,
                             *keys.stride()[:3], *values.stride()[:3],
                             HEADS=heads, HALF=dim // 2, HALF_P2=triton.next_power_of_2(dim // 2), BLOCK_H=block_h)
    return q


@triton.jit
def _attention_kernel(q, k, v, mask, bounds, out, part_m, part_l, part_acc, count, n, kv_heads, groups, num_rows,
                      num_slots, blocks_per_split, scale, skb, skh, sks, svb, svh, svs, smb, smj, sms, masked,
                      DIM: tl.constexpr, D_P2: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr,
                      SPLITS: tl.constexpr, IEEE: tl.constexpr, ZERO_DEAD: tl.constexpr = True):
    """Program (b * kv_heads + kv, row tile, split): ``BLOCK_M`` query rows of one KV head over its share of the
    row's live blocks of slots. With ``SPLITS`` > 1 each program stores its partial softmax and the last program of
    the (KV head, row tile) to finish merges the ``SPLITS`` partials in share order (no second launch)."""
    bh = tl.program_id(0)
    b = bh // kv_heads
    kv = bh % kv_heads
    split = tl.program_id(2)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_live = rows < num_rows
    j = rows % n  # token of the row (its mask row); g = rows // n is its query head within the group
    d = tl.arange(0, D_P2)
    d_live = d < DIM
    q_ptr = q + (bh.to(tl.int64) * num_rows + rows[:, None]) * DIM + d[None, :]
    qb = tl.load(q_ptr, mask=row_live[:, None] & d_live[None, :], other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D_P2), tl.float32)
    # the row's live blocks [lo, hi) that fall in this program's fixed share of the cache's blocks: fixed, so that
    # a block is summed in the same program and order whatever the live range (a verification's ends later than
    # an AR step's over the same prefix, and must not regroup the prefix's partial sums)
    first = tl.maximum(tl.load(bounds + 2 * b) // BLOCK_S, split * blocks_per_split)
    last = tl.minimum(tl.cdiv(tl.load(bounds + 2 * b + 1), BLOCK_S), (split + 1) * blocks_per_split)
    for blk in tl.range(first, last):
        s_idx = blk * BLOCK_S + tl.arange(0, BLOCK_S)
        s_live = s_idx < num_slots
        # keys and values loaded without waiting for the mask (a load that depends on another one cannot be
        # issued ahead by the loop's pipelining); the slots no query may attend are taken out after
        kv_mask = s_live[:, None] & d_live[None, :]
        kb = tl.load(k + b.to(tl.int64) * skb + kv * skh + s_idx[:, None].to(tl.int64) * sks + d[None, :],
                     mask=kv_mask, other=0.0)
        vb = tl.load(v + b.to(tl.int64) * svb + kv * svh + s_idx[:, None].to(tl.int64) * svs + d[None, :],
                     mask=kv_mask, other=0.0)
        m_ptr = mask + b.to(tl.int64) * smb + j[:, None] * smj + s_idx[None, :] * sms
        add = tl.load(m_ptr, mask=row_live[:, None] & s_live[None, :], other=float("-inf")).to(tl.float32)
        allowed = add > masked
        if ZERO_DEAD:
            # a slot no query may attend holds whatever an earlier step left there (stale, even NaN): zero its values
            # so that a zero probability cannot meet them (its scores are replaced below)
            vb = tl.where((tl.max(allowed.to(tl.int32), axis=0) > 0)[:, None], vb, tl.zeros_like(vb))  # keeps dtype
        if IEEE:
            s = tl.dot(qb, tl.trans(kb), input_precision="ieee")
        else:
            s = tl.dot(qb, tl.trans(kb))
        s = tl.where(allowed, s * scale + add, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing allowed yet stays at 0
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, vb, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb)
        m_i = m_new
    if SPLITS == 1:
        _store_rows(out, acc / tl.where(l_i > 0, l_i, 1.0)[:, None], b, kv, rows, row_live, n, kv_heads, groups,
                    d, d_live, DIM)
    else:
        part = (bh * SPLITS + split).to(tl.int64) * num_rows + rows
        tl.store(part_m + part, m_i, mask=row_live)
        tl.store(part_l + part, l_i, mask=row_live)
        tl.store(part_acc + part[:, None] * D_P2 + d[None, :], acc, mask=row_live[:, None])
        tile = bh * tl.num_programs(1) + tl.program_id(1)
        tl.debug_barrier()  # every thread's partials stored before the release below
        if tl.atomic_add(count + tile, 1, sem="acq_rel", scope="gpu") == SPLITS - 1:
            _merge_rows(out, part_m, part_l, part_acc, bh, rows, row_live, n, kv_heads, groups, num_rows, d, DIM,
                        D_P2, BLOCK_M, SPLITS)
            tl.store(count + tile, 0)  # zero again for the next call (a CUDA graph's replay included)


@triton.jit
def _store_rows(out, o, b, kv, rows, row_live, n, kv_heads, groups, d, d_live, DIM: tl.constexpr):
    """Store output rows of one KV head in the ``(B, n, heads * D)`` layout: row ``g * n + j`` is token ``j``'s
    query head ``kv * groups + g``."""
    j = rows % n
    head = kv * groups + rows // n
    ptr = out + ((b * n + j).to(tl.int64) * (kv_heads * groups) + head)[:, None] * DIM + d[None, :]
    tl.store(ptr, o.to(out.dtype.element_ty), mask=row_live[:, None] & d_live[None, :])


@triton.jit
def _merge_rows(out, part_m, part_l, part_acc, bh, rows, row_live, n, kv_heads, groups, num_rows, d,
                DIM: tl.constexpr, D_P2: tl.constexpr, BLOCK_M: tl.constexpr, SPLITS: tl.constexpr):
    """Merge the ``SPLITS`` partial softmaxes of rows ``rows`` of KV head ``bh`` (in share order) and store them;
    the partials are read past L1 (other programs wrote them)."""
    sp = tl.arange(0, SPLITS)
    part = (bh * SPLITS + sp[:, None]).to(tl.int64) * num_rows + rows[None, :]  # (SPLITS, BLOCK_M)
    m = tl.load(part_m + part, mask=row_live[None, :], other=float("-inf"), cache_modifier=".cg")
    l = tl.load(part_l + part, mask=row_live[None, :], other=0.0, cache_modifier=".cg")
    m_max = tl.max(m, axis=0)
    weight = tl.exp(m - tl.where(m_max == float("-inf"), 0.0, m_max)[None, :])  # 0 for an empty split
    total = tl.sum(weight * l, axis=0)
    acc = tl.zeros((BLOCK_M, D_P2), tl.float32)
    for s in range(SPLITS):
        w = tl.sum(tl.where(sp[:, None] == s, weight, 0.0), axis=0)
        chunk = tl.load(part_acc + ((bh * SPLITS + s).to(tl.int64) * num_rows + rows)[:, None] * D_P2 + d[None, :],
                        mask=row_live[:, None], other=0.0, cache_modifier=".cg")
        acc += w[:, None] * chunk
    b = bh // kv_heads
    kv = bh % kv_heads
    _store_rows(out, acc / tl.where(total > 0, total, 1.0)[:, None], b, kv, rows, row_live, n, kv_heads, groups,
                d, d < DIM, DIM)


def check_shapes(ok: bool, expected: str, *tensors: torch.Tensor) -> None:
    """Raise ValueError naming ``expected`` and the shapes given unless ``ok``: a kernel given other shapes would
    read or write out of bounds rather than fail."""
    if not ok:
        raise ValueError(f"{expected}; got shapes {', '.join(str(tuple(t.shape)) for t in tensors)}")


@functools.lru_cache(maxsize=8)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_splits(programs: int, num_slots: int, device: torch.device, block_s: int = BLOCK_S) -> int:
    """Shares the blocks of ``block_s`` of the ``num_slots`` slots are split into, per (row, KV head, row tile), a
    power of two: on a CUDA ``device`` one block per share where about two programs per multiprocessor allow it,
    else as many shares as that many programs (one elsewhere, e.g. the interpreter)."""
    if device.type != "cuda":
        return 1
    want = triton.cdiv(2 * _multiprocessors(device.index or 0), programs)
    blocks = triton.cdiv(num_slots, block_s)
    if want >= blocks:
        return triton.next_power_of_2(blocks)
    return triton.next_power_of_2(want + 1) // 2  # the largest power of two <= want


def attention_config(heads: int, num_rows: int, num_slots: int, device: torch.device,
                     block_m: int | None = None) -> dict:
    """How :func:`attention` runs ``heads`` (batch x KV heads) of ``num_rows`` folded queries each over
    ``num_slots`` slots: ``block_m`` query rows per program (given, or from the rows) in ``tiles`` row tiles,
    ``splits`` shares of the slot blocks of ``block_s`` slots, ``num_warps`` and ``num_stages``. Where the programs
    fill the GPU without sharing (a large batch), blocks of 32 slots and 2 warps (4 for tiles of 64 rows, whose
    output would not fit 2 warps' registers: 157 us a layer at batch 64 x 16 tokens on an H200 with 2); else blocks
    of 64, 4 warps, 2 stages and shares (the fastest of a sweep on an H200 at batch 64 and 1,
    ``benchmarks/kernel_tune.py``). The order over the slots' blocks and shares does not depend on the tokens per
    row; within a block, a tile of 64 rows at a full batch (a verification of 9 tokens and more) is reduced by 4
    warps where an AR step's tile of 16 has 2, another thread layout, whose effect on the bits is not measured."""
    block_m = block_m or max(16, min(MAX_BLOCK_M, triton.next_power_of_2(num_rows)))
    tiles = triton.cdiv(num_rows, block_m)
    if device.type == "cuda" and heads * tiles >= 2 * _multiprocessors(device.index or 0):
        # 2 warps hold up to 32 rows' float32 output (64 registers a thread); 64 rows need 4, or they spill
        return dict(block_m=block_m, tiles=tiles, splits=1, block_s=32, num_warps=2 if block_m <= 32 else 4,
                    num_stages=3)
    return dict(block_m=block_m, tiles=tiles, splits=num_splits(heads * tiles, num_slots, device), block_s=BLOCK_S,
                num_warps=4, num_stages=2)


@triton.jit
def _bounds_kernel(mask, bounds, n, num_slots, smb, smj, sms, masked, BLOCK: tl.constexpr):
    """Program ``b``: the first slot and one past the last that some of row ``b``'s ``n`` queries may attend."""
    b = tl.program_id(0)
    lo = num_slots
    hi = 0
    for start in range(0, num_slots, BLOCK):
        slot = start + tl.arange(0, BLOCK)
        live = tl.zeros((BLOCK,), tl.int32)
        for j in range(n):
            add = tl.load(mask + b.to(tl.int64) * smb + j * smj + slot * sms, mask=slot < num_slots,
                          other=float("-inf")).to(tl.float32)
            live = tl.maximum(live, (add > masked).to(tl.int32))
        lo = tl.minimum(lo, tl.min(tl.where(live > 0, slot, num_slots), axis=0))
        hi = tl.maximum(hi, tl.max(tl.where(live > 0, slot + 1, 0), axis=0))
    tl.store(bounds + 2 * b, tl.minimum(lo, hi))
    tl.store(bounds + 2 * b + 1, hi)


def live_bounds(mask: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` int32: per row, the first slot and one past the last that some query may attend, from an
    additive ``(B, 1, n, S)`` mask (any strides; ``(0, 0)`` for a row with none); one launch per forward, shared
    by the layers."""
    bsz, _, n, num_slots = mask.shape
    bounds = torch.empty((bsz, 2), dtype=torch.int32, device=mask.device)
    mb, _, mj, ms = mask.stride()
    _bounds_kernel[(bsz,)](mask, bounds, n, num_slots, mb, mj, ms, torch.finfo(mask.dtype).min,
                           BLOCK=min(1024, triton.next_power_of_2(num_slots)))
    return bounds


def attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, n: int,
              bounds: torch.Tensor | None = None, **config) -> torch.Tensor:
    """Masked attention of folded queries over the slot cache, reading only the rows' live slots.

    Parameters
    ----------
    q : Tensor
        ``(B, kv_heads, groups * n, D)`` contiguous (:func:`rope_write`'s output).
    keys, values : Tensor
        ``(B, kv_heads, S, D)``, unit last stride.
    mask : Tensor
        ``(B, 1, n, S)`` additive float (0 where a query attends, the dtype's most negative value where not);
        any strides (an expanded mask is read as it is).
    n : int
        Tokens per row.
    bounds : Tensor, optional
        :func:`live_bounds` of ``mask`` (computed here if not given; a forward computes it once for its layers).
    config
        :func:`attention_config`'s keys, to override them (benchmarks sweep them; a ``block_m`` given sets the
        others as :func:`attention_config` would for it, unless given too): e.g. ``splits``, the shares
        the cache's blocks are split into (fixed groups of consecutive blocks, each program reading the row's live
        ones in its group; a power of two), merged by the last program of each to finish. ``zero_dead=False`` skips
        zeroing the values of slots no query attends: only a benchmark's bound on that step's cost, wrong where such
        a slot holds a non-finite stale value.

    Returns
    -------
    Tensor
        ``(B, n, heads * D)``, ``q``'s dtype.
    """
    bsz, kv_heads, num_rows, dim = q.shape
    groups, num_slots = num_rows // n, keys.shape[2]
    cfg = {**attention_config(bsz * kv_heads, num_rows, num_slots, q.device, config.get("block_m")), **config}
    block_m, tiles, splits, block_s = cfg["block_m"], cfg["tiles"], cfg["splits"], cfg["block_s"]
    check_shapes(q.is_contiguous() and num_rows % n == 0 and keys.shape == values.shape
           and keys.shape[:2] == (bsz, kv_heads) and keys.shape[3] == dim and keys.stride(3) == values.stride(3) == 1
           and mask.shape == (bsz, 1, n, num_slots) and splits & (splits - 1) == 0
           and (splits == 1 or bsz * kv_heads * tiles <= MAX_SPLIT_TILES),
           "attention: q (B, kv_heads, groups n, D) contiguous, keys and values (B, kv_heads, S, D) with unit last "
           f"stride, mask (B, 1, n, S), splits a power of two, at most {MAX_SPLIT_TILES} KV heads x row tiles when "
           "split", q, keys, mask)
    bounds = live_bounds(mask) if bounds is None else bounds
    check_shapes(bounds.shape == (bsz, 2) and bounds.dtype == torch.int32 and bounds.is_contiguous(),
           "attention: bounds (B, 2) int32 contiguous (live_bounds of the mask)", bounds)
    d_p2 = max(16, triton.next_power_of_2(dim))
    out = q.new_empty((bsz, n, kv_heads * groups * dim))
    if splits > 1:
        part_m = q.new_empty((bsz * kv_heads * splits * num_rows,), dtype=torch.float32)
        part_l = torch.empty_like(part_m)
        part_acc = q.new_empty((part_m.numel(), d_p2), dtype=torch.float32)
        count = split_counters(q.device)
    else:
        part_m = part_l = part_acc = count = out  # unused
    mb, _, mj, ms = mask.stride()
    _attention_kernel[(bsz * kv_heads, tiles, splits)](
        q, keys, values, mask, bounds, out, part_m, part_l, part_acc, count, n, kv_heads, groups, num_rows,
        num_slots, triton.cdiv(triton.cdiv(num_slots, block_s), splits), dim ** -0.5, *keys.stride()[:3],
        *values.stride()[:3], mb, mj, ms, torch.finfo(mask.dtype).min,
        DIM=dim, D_P2=d_p2, BLOCK_M=block_m, BLOCK_S=block_s, SPLITS=splits, IEEE=q.dtype == torch.float32,
        ZERO_DEAD=cfg.get("zero_dead", True), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out


#: Tiles one split call may have (KV heads x row tiles of :func:`attention`, output tiles of a projection): the
#: size of the per-device counters of finished programs.
MAX_SPLIT_TILES = 1 << 16


_COUNTERS: dict = {}


def split_counters(device: torch.device) -> torch.Tensor:
    """Per device, the finished-program counter of each tile of a split call (:func:`attention`, a projection's;
    zero between calls: each call's last program of a tile zeroes it again). Made outside any CUDA graph capture
    (``FastDecoderLM`` makes it when built): made inside one, it would come from the graph's memory pool and be
    zeroed only by the graph's replays."""
    counters = _COUNTERS.get(device)
    if counters is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("the split kernels' counters must be made before a CUDA graph capture: call "
                               "sdlaws.measure.kernels.split_counters(device) first")
        counters = _COUNTERS[device] = torch.zeros(MAX_SPLIT_TILES, dtype=torch.int32, device=device)
    return counters


def graph_us_per_call(calls, *, replays: int = 20, repeats: int = 5) -> float:
    """Median microseconds per call of ``calls`` (zero-argument CUDA callables) captured in sequence in one CUDA
    graph and replayed ``replays`` times per timing (CUDA events): launches follow each other as in a captured
    forward, with no host overhead between them. Warm-up calls (and any compile) run on a side stream first."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / (replays * len(calls)))
    return statistics.median(times)
