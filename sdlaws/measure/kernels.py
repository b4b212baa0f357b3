"""Triton kernels of the fast path's attention block over the slot KV cache (CUDA only).

Why: a profile of a graph-replayed batch-1 decode step of the Llama-3.1-8B shape on an H200
(``docs/benchmarks.md``) spent 0.29 ms in attention and 0.23 ms in KV-cache writes per step, against 0.005 ms
for reading the live KV cache at the copy bandwidth; at batch 64, 1.0 ms in attention. PyTorch's
``scaled_dot_product_attention`` with an additive mask reads every slot of the static cache, live or not, and
the rotary kernel, the cache scatter and the query's re-layout are three launches per layer. Here:

- :func:`rope_write` rotates the query and key heads of a fused QKV projection, writes the keys and values at
  each token's cache slot and the queries in the layout attention reads, in one launch;
- :func:`attention` computes masked attention for a few queries per row (decode, a chain's or a tree's
  verification) flash-decoding style: each program holds up to 64 of one KV head's query rows (the GQA group
  folded in, no K/V copy) and walks, in blocks, only the row's live range of slots (:func:`live_bounds`, from the mask once per
  forward: the first to the last slot some query of the row may attend), loading no slot no query may attend,
  so the bytes read are the live cache's; where the batch has too few KV heads to fill the GPU, the cache's
  blocks are shared among programs in fixed groups (the same whatever the live range, so that a verification
  sums a prefix exactly as an AR step does) and a second launch merges the partial softmaxes. The output is written in the
  ``(B, n, heads * D)`` layout of the output projection's input.

Semantics are those of the engine's call ``F.scaled_dot_product_attention(q, k, v, attn_mask=additive)`` for
every query that may attend at least one slot; entries equal to the mask dtype's most negative value (what the
engine's masks hold where a query may not attend) or -inf count as masked. A query that may attend no slot gets
zeros (SDPA would average every slot). Scores and the softmax are float32; the probabilities meet the values in the input dtype, as in
flash attention; float32 inputs use IEEE float32 products (no TF32), so an fp32 model keeps its own greedy
tokens. Head sizes below 16 are zero-padded to 16 (the matrix units' smallest tile).

The kernels are plain ``triton.jit`` functions: :mod:`tests.test_kernels` runs them on CPU through Triton's
interpreter against the PyTorch reference of the same call.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

#: Slots per block of :func:`attention`.
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
    _check(qkv.is_contiguous() and cos.shape == sin.shape == (bsz, n, dim) and cos.is_contiguous()
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
def _attention_kernel(q, k, v, mask, bounds, out, part_m, part_l, part_acc, n, kv_heads, groups, num_rows,
                      num_slots, blocks_per_split, scale, skb, skh, sks, svb, svh, svs, smb, smj, sms, masked,
                      DIM: tl.constexpr, D_P2: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr,
                      SPLITS: tl.constexpr, IEEE: tl.constexpr):
    """Program (b * kv_heads + kv, row tile, split): ``BLOCK_M`` query rows of one KV head over its share of the
    row's live blocks of slots."""
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
        # a slot no query may attend holds whatever an earlier step left there (stale, even NaN): zero its values
        # so that a zero probability cannot meet them (its scores are replaced below)
        vb = tl.where((tl.max(allowed.to(tl.int32), axis=0) > 0)[:, None], vb, tl.zeros_like(vb))  # keeps the dtype
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


@triton.jit
def _store_rows(out, o, b, kv, rows, row_live, n, kv_heads, groups, d, d_live, DIM: tl.constexpr):
    """Store output rows of one KV head in the ``(B, n, heads * D)`` layout: row ``g * n + j`` is token ``j``'s
    query head ``kv * groups + g``."""
    j = rows % n
    head = kv * groups + rows // n
    ptr = out + ((b * n + j).to(tl.int64) * (kv_heads * groups) + head)[:, None] * DIM + d[None, :]
    tl.store(ptr, o.to(out.dtype.element_ty), mask=row_live[:, None] & d_live[None, :])


@triton.jit
def _merge_kernel(out, part_m, part_l, part_acc, n, kv_heads, groups, num_rows,
                  DIM: tl.constexpr, D_P2: tl.constexpr, BLOCK_M: tl.constexpr, SPLITS: tl.constexpr):
    """Program (b * kv_heads + kv, row tile): merge the ``SPLITS`` partial softmaxes of its rows."""
    bh = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_live = rows < num_rows
    d = tl.arange(0, D_P2)
    sp = tl.arange(0, SPLITS)
    part = (bh * SPLITS + sp[:, None]).to(tl.int64) * num_rows + rows[None, :]  # (SPLITS, BLOCK_M)
    m = tl.load(part_m + part, mask=row_live[None, :], other=float("-inf"))
    l = tl.load(part_l + part, mask=row_live[None, :], other=0.0)
    m_max = tl.max(m, axis=0)
    weight = tl.exp(m - tl.where(m_max == float("-inf"), 0.0, m_max)[None, :])  # 0 for an empty split
    total = tl.sum(weight * l, axis=0)
    acc = tl.zeros((BLOCK_M, D_P2), tl.float32)
    for s in range(SPLITS):
        w = tl.sum(tl.where(sp[:, None] == s, weight, 0.0), axis=0)
        chunk = tl.load(part_acc + ((bh * SPLITS + s).to(tl.int64) * num_rows + rows)[:, None] * D_P2 + d[None, :],
                        mask=row_live[:, None], other=0.0)
        acc += w[:, None] * chunk
    b = bh // kv_heads
    kv = bh % kv_heads
    _store_rows(out, acc / tl.where(total > 0, total, 1.0)[:, None], b, kv, rows, row_live, n, kv_heads, groups,
                d, d < DIM, DIM)


def _check(ok: bool, expected: str, *tensors: torch.Tensor) -> None:
    """Raise ValueError naming ``expected`` and the shapes given unless ``ok``: a kernel given other shapes would
    read or write out of bounds rather than fail."""
    if not ok:
        raise ValueError(f"{expected}; got shapes {', '.join(str(tuple(t.shape)) for t in tensors)}")


@functools.lru_cache(maxsize=8)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_splits(programs: int, num_slots: int, device: torch.device) -> int:
    """Shares the blocks of the ``num_slots`` slots are split into, per (row, KV head, row tile), a power of two:
    on a CUDA ``device`` one block per share where about two programs per multiprocessor allow it, else as many
    shares as that many programs (one elsewhere, e.g. the interpreter)."""
    if device.type != "cuda":
        return 1
    want = triton.cdiv(2 * _multiprocessors(device.index or 0), programs)
    blocks = triton.cdiv(num_slots, BLOCK_S)
    if want >= blocks:
        return triton.next_power_of_2(blocks)
    return triton.next_power_of_2(want + 1) // 2  # the largest power of two <= want


def grid(heads: int, num_rows: int, num_slots: int, device: torch.device) -> tuple[int, int, int]:
    """``(BLOCK_M, row tiles, shares of the slot blocks)`` of :func:`attention` for ``heads`` (batch x KV heads) of
    ``num_rows`` folded queries each over ``num_slots`` slots."""
    block_m = max(16, min(MAX_BLOCK_M, triton.next_power_of_2(num_rows)))
    tiles = triton.cdiv(num_rows, block_m)
    return block_m, tiles, num_splits(heads * tiles, num_slots, device)


def live_bounds(mask: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` int32: per row, the first slot and one past the last that some query may attend, from an
    additive ``(B, 1, n, S)`` mask (``(0, 0)`` for a row with none); one reduction per forward, shared by the
    layers."""
    live = (mask > torch.finfo(mask.dtype).min).any(dim=2)[:, 0]  # (B, S)
    slot = torch.arange(1, live.shape[1] + 1, device=mask.device, dtype=torch.int32)
    hi = torch.where(live, slot, 0).amax(dim=1)
    lo = torch.where(live, slot - 1, live.shape[1]).amin(dim=1).clamp(max=hi)
    return torch.stack((lo, hi), dim=1).to(torch.int32)


def attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, n: int,
              bounds: torch.Tensor | None = None, splits: int | None = None, num_warps: int = 4,
              num_stages: int = 3) -> torch.Tensor:
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
    splits : int, optional
        Shares the cache's blocks are split into (fixed groups of consecutive blocks, each program reading the
        row's live ones in its group), merged by a second launch (a power of two); default :func:`grid`'s.
    num_warps, num_stages : int
        The attention kernel's warps and software-pipeline stages (benchmarks sweep them).

    Returns
    -------
    Tensor
        ``(B, n, heads * D)``, ``q``'s dtype.
    """
    bsz, kv_heads, num_rows, dim = q.shape
    groups, num_slots = num_rows // n, keys.shape[2]
    block_m, tiles, default_splits = grid(bsz * kv_heads, num_rows, num_slots, q.device)
    splits = splits or default_splits
    _check(q.is_contiguous() and num_rows % n == 0 and keys.shape == values.shape
           and keys.shape[:2] == (bsz, kv_heads) and keys.shape[3] == dim and keys.stride(3) == values.stride(3) == 1
           and mask.shape == (bsz, 1, n, num_slots) and splits & (splits - 1) == 0,
           "attention: q (B, kv_heads, groups n, D) contiguous, keys and values (B, kv_heads, S, D) with unit last "
           "stride, mask (B, 1, n, S), splits a power of two", q, keys, mask)
    bounds = live_bounds(mask) if bounds is None else bounds
    _check(bounds.shape == (bsz, 2) and bounds.dtype == torch.int32 and bounds.is_contiguous(),
           "attention: bounds (B, 2) int32 contiguous (live_bounds of the mask)", bounds)
    d_p2 = max(16, triton.next_power_of_2(dim))
    out = q.new_empty((bsz, n, kv_heads * groups * dim))
    if splits > 1:
        part_m = q.new_empty((bsz * kv_heads * splits * num_rows,), dtype=torch.float32)
        part_l = torch.empty_like(part_m)
        part_acc = q.new_empty((part_m.numel(), d_p2), dtype=torch.float32)
    else:
        part_m = part_l = part_acc = out  # unused
    mb, _, mj, ms = mask.stride()
    _attention_kernel[(bsz * kv_heads, tiles, splits)](
        q, keys, values, mask, bounds, out, part_m, part_l, part_acc, n, kv_heads, groups, num_rows,
        keys.shape[2], triton.cdiv(triton.cdiv(keys.shape[2], BLOCK_S), splits), dim ** -0.5, *keys.stride()[:3], *values.stride()[:3], mb, mj, ms, torch.finfo(mask.dtype).min,
        DIM=dim, D_P2=d_p2, BLOCK_M=block_m, BLOCK_S=BLOCK_S, SPLITS=splits, IEEE=q.dtype == torch.float32,
        num_warps=num_warps, num_stages=num_stages)
    if splits > 1:
        _merge_kernel[(bsz * kv_heads, tiles)](out, part_m, part_l, part_acc, n, kv_heads, groups, num_rows,
                                               DIM=dim, D_P2=d_p2, BLOCK_M=block_m, SPLITS=splits)
    return out


#: Most rows (batch x tokens) :func:`linear` is used for by the fast path; more rows are compute-bound GEMMs, which
#: cuBLAS tiles better.
LINEAR_MAX_ROWS = 64


@triton.jit
def _linear_kernel(x, w, bias, out, M, N, K, sxm, swn, som, up,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN: tl.constexpr,
                   SWIGLU: tl.constexpr, BIAS: tl.constexpr, IEEE: tl.constexpr):
    """Program (output column block, row block): ``BLOCK_M`` rows of ``x`` times ``BLOCK_N`` rows of ``w`` over
    all of ``K`` (no split of ``K``: each output is summed in one program, in one order whatever ``M``)."""
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_live = rm < M
    n_live = rn < N
    x_ptr = x + rm[:, None].to(tl.int64) * sxm + rk[None, :]
    w_ptr = w + rn[:, None].to(tl.int64) * swn + rk[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN:  # K a multiple of BLOCK_K and N of BLOCK_N: the weight's loads need no predicate
            a = tl.load(x_ptr, mask=m_live[:, None], other=0.0)
            b = tl.load(w_ptr)
        else:
            k_live = rk < K - k * BLOCK_K
            a = tl.load(x_ptr, mask=m_live[:, None] & k_live[None, :], other=0.0)
            b = tl.load(w_ptr, mask=n_live[:, None] & k_live[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(a, tl.trans(b), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, tl.trans(b), acc)
        if SWIGLU:  # the up projection's rows, ``up`` rows further down the fused gate/up weight
            if EVEN:
                bu = tl.load(w_ptr + up * swn)
            else:
                bu = tl.load(w_ptr + up * swn, mask=n_live[:, None] & k_live[None, :], other=0.0)
            if IEEE:
                acc_up = tl.dot(a, tl.trans(bu), acc_up, input_precision="ieee")
            else:
                acc_up = tl.dot(a, tl.trans(bu), acc_up)
        x_ptr += BLOCK_K
        w_ptr += BLOCK_K
    if BIAS:
        acc += tl.load(bias + rn, mask=n_live, other=0.0).to(tl.float32)[None, :]
    if SWIGLU:
        # rounded to the dtype first, as the unfused projection's outputs are; then silu(gate) * up in float32
        gate = acc.to(out.dtype.element_ty).to(tl.float32)
        acc = gate * tl.sigmoid(gate) * acc_up.to(out.dtype.element_ty).to(tl.float32)
    ptr = out + rm[:, None].to(tl.int64) * som + rn[None, :]
    tl.store(ptr, acc.to(out.dtype.element_ty), mask=m_live[:, None] & n_live[None, :])


def linear_config(rows: int) -> dict:
    """``BLOCK_M``, ``BLOCK_N``, ``BLOCK_K``, warps and pipeline stages of :func:`linear` for ``rows`` rows."""
    return dict(block_m=16 if rows <= 16 else 64, block_n=32, block_k=256, num_warps=4, num_stages=4)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, swiglu: bool = False,
           **config) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for few rows, each output summed over ``K`` in one program; with ``swiglu``,
    SwiGLU of a fused gate/up projection: ``weight`` ``(2F, K)`` (gate rows, then up rows) gives
    ``silu(x @ gate.T) * (x @ up.T)`` ``(..., F)`` in one launch.

    Why: at a decode step's few rows a projection reads its weight once and does almost nothing else, so the time is
    the weight read plus fixed costs; cuBLAS splits the reduction over ``K`` for the narrow projections (a second,
    reduction launch per GEMM) and its choice of split depends on the row count, so a verification's rows are not
    summed as an AR step's. Here one program sums a block of outputs over all of ``K`` for every row count up to
    :data:`LINEAR_MAX_ROWS` (one ``BLOCK_M`` tile up to 16 rows), and SwiGLU runs in the epilogue.

    Parameters
    ----------
    x : Tensor
        ``(..., K)`` with a unit last stride, rows evenly strided.
    weight : Tensor
        ``(N, K)`` (``(2F, K)`` with ``swiglu``), contiguous.
    bias : Tensor, optional
        ``(N,)`` (not with ``swiglu``).
    config
        :func:`linear_config`'s keys, to override them (benchmarks).
    """
    k_dim = x.shape[-1]
    rows = x.reshape(-1, k_dim)
    n_out = weight.shape[0] // 2 if swiglu else weight.shape[0]
    _check(weight.is_contiguous() and weight.shape[1] == k_dim and rows.stride(-1) == 1
           and (not swiglu or (weight.shape[0] % 2 == 0 and bias is None))
           and (bias is None or bias.shape == (n_out,)),
           "linear: x (..., K) with unit last stride, weight (N, K) contiguous ((2F, K) and no bias with swiglu), "
           "bias (N,)", x, weight)
    cfg = {**linear_config(rows.shape[0]), **config}
    out = x.new_empty((rows.shape[0], n_out))
    grid = (triton.cdiv(n_out, cfg["block_n"]), triton.cdiv(rows.shape[0], cfg["block_m"]))
    even = k_dim % cfg["block_k"] == 0 and n_out % cfg["block_n"] == 0
    _linear_kernel[grid](rows, weight, weight if bias is None else bias, out, rows.shape[0], n_out, k_dim,
                         rows.stride(0), weight.stride(0), out.stride(0), n_out,
                         BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"], EVEN=even,
                         SWIGLU=swiglu, BIAS=bias is not None, IEEE=x.dtype == torch.float32,
                         num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out.view(*x.shape[:-1], n_out)
