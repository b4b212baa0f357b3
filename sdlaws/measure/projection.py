"""The fast path's Triton kernels around a layer's projections (CUDA only): the projection of few rows and its
choice against cuBLAS, the residual add + RMSNorm before the qkv and gate/up projections, SwiGLU after a cuBLAS
gate/up projection.

Why: at a decode step's few rows a projection reads its weight once and does little else, so its time is the weight
read plus fixed costs. cuBLAS follows the gate/up projection with a separate activation kernel, splits the sum over
K of narrow projections with a second, reduction launch, and picks its kernel by the row count, so a verification's
rows are not summed as an AR step's. :func:`linear` runs SwiGLU in the gate/up projection's epilogue, reduces a split
of K in the same launch (the last program of each output tile adds the partials in split order, with the counters
of :func:`sdlaws.measure.kernels.split_counters`), and one configuration serves every row count up to 16.
:func:`tuned_linear` times it against cuBLAS per weight shape once per process (the H200 sweep behind its
candidates: ``benchmarks/kernel_tune.py``, ``docs/benchmarks.md``). :func:`add_rms_norm` reduces each row in one
program whatever the row count, so that a verification's rows are normalised as an AR step's row.

The kernels are plain ``triton.jit`` functions: :mod:`tests.test_kernels` runs them on CPU through Triton's
interpreter against the PyTorch functions they replace.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from sdlaws.measure import kernels
from sdlaws.measure.kernels import MAX_SPLIT_TILES, check_shapes, split_counters

#: Most rows (batch x tokens) :func:`linear` is used for by the fast path; more rows are compute-bound GEMMs, which
#: cuBLAS tiles better.
LINEAR_MAX_ROWS = 64
#: Most rows one configuration (a row tile of this many) serves alike: a verification of up to this many rows sums
#: each row as an AR step of fewer does.
INVARIANT_ROWS = 16
#: Shared memory a :func:`linear` configuration may use per program (an H100's or H200's 227 KiB, less a margin).
SHARED_BYTES = 200 * 1024
@triton.jit
def _linear_kernel(x, w, bias, out, part, count, M, N, K, sxm, swn, som, up, k_split,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN: tl.constexpr,
                   SWIGLU: tl.constexpr, BIAS: tl.constexpr, IEEE: tl.constexpr, SPLIT: tl.constexpr):
    """Program (output column block, row block, split of K): ``BLOCK_M`` rows of ``x`` times ``BLOCK_N`` rows of
    ``w`` over the split's ``k_split`` columns of ``K``. With ``SPLIT`` > 1 each program stores its partial sums and
    the last program of a tile to finish adds the ``SPLIT`` partials in split order: one launch, and each output
    summed in one order whatever ``M`` or the programs' timing."""
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_live = rm < M
    n_live = rn < N
    k_start = tl.program_id(2) * k_split
    k_end = tl.minimum(K, k_start + k_split)
    x_ptr = x + rm[:, None].to(tl.int64) * sxm + k_start + rk[None, :]
    w_ptr = w + rn[:, None].to(tl.int64) * swn + k_start + rk[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k in range(k_start, k_end, BLOCK_K):
        if EVEN:  # K a multiple of the split and the split of BLOCK_K, N of BLOCK_N: weight loads unpredicated
            a = tl.load(x_ptr, mask=m_live[:, None], other=0.0)
            b = tl.load(w_ptr)
        else:
            k_live = rk < k_end - k
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
    if SPLIT == 1:
        _linear_epilogue(out, bias, acc, acc_up, rm, rn, m_live, n_live, som, SWIGLU, BIAS)
    else:
        cell = rm[:, None].to(tl.int64) * N + rn[None, :]
        live = m_live[:, None] & n_live[None, :]
        part_size = (tl.program_id(2).to(tl.int64) * 0 + M) * N  # int64 (M == 1 arrives as a constant, no .to)
        tl.store(part + tl.program_id(2) * part_size + cell, acc, mask=live)
        tile = tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)
        tl.debug_barrier()  # every thread's partials stored before the release below
        if tl.atomic_add(count + tile, 1, sem="acq_rel", scope="gpu") == SPLIT - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
            for split in range(SPLIT):
                total += tl.load(part + split * part_size + cell, mask=live, other=0.0, cache_modifier=".cg")
            tl.store(count + tile, 0)  # zero again for the next call (a CUDA graph's replay included)
            _linear_epilogue(out, bias, total, acc_up, rm, rn, m_live, n_live, som, SWIGLU, BIAS)


@triton.jit
def _linear_epilogue(out, bias, acc, acc_up, rm, rn, m_live, n_live, som, SWIGLU: tl.constexpr,
                     BIAS: tl.constexpr):
    """Bias, SwiGLU and the store of one output tile."""
    if BIAS:
        acc += tl.load(bias + rn, mask=n_live, other=0.0).to(tl.float32)[None, :]
    if SWIGLU:
        # rounded to the dtype first, as the unfused projection's outputs are; then silu(gate) * up in float32
        gate = acc.to(out.dtype.element_ty).to(tl.float32)
        acc = gate * tl.sigmoid(gate) * acc_up.to(out.dtype.element_ty).to(tl.float32)
    ptr = out + rm[:, None].to(tl.int64) * som + rn[None, :]
    tl.store(ptr, acc.to(out.dtype.element_ty), mask=m_live[:, None] & n_live[None, :])


@triton.jit
def _silu_mul_kernel(gate_up, out, n_out, s_in, s_out, BLOCK: tl.constexpr):
    """Program (row, column block): ``silu(gate) * up`` of ``BLOCK`` columns, ``up`` ``n_out`` columns after
    ``gate`` in the row, in float32, rounded once."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = cols < n_out
    gate = tl.load(gate_up + row * s_in + cols, mask=live, other=0.0).to(tl.float32)
    up = tl.load(gate_up + row * s_in + n_out + cols, mask=live, other=0.0).to(tl.float32)
    tl.store(out + row * s_out + cols, (gate * tl.sigmoid(gate) * up).to(out.dtype.element_ty), mask=live)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation of a fused gate/up projection's output ``(..., 2F)`` -> ``(..., F)``: ``silu(gate) * up`` in
    float32, rounded once (as the projection kernel's epilogue and the compiled element-wise kernel compute it).

    Why: above :data:`LINEAR_MAX_ROWS` rows the gate/up projection runs on cuBLAS and this follows it; the compiled
    (shape-polymorphic) element-wise kernel took 66 us a layer at 1024 rows on an H200, three times its bytes at the
    copy bandwidth."""
    check_shapes(gate_up.shape[-1] % 2 == 0, "silu_mul: gate_up (..., 2F), an even last dimension", gate_up)
    n_out = gate_up.shape[-1] // 2
    rows = gate_up.reshape(-1, 2 * n_out)  # a view where the rows are evenly strided (a projection's output is)
    rows = rows if rows.stride(-1) == 1 else rows.contiguous()
    out = gate_up.new_empty((rows.shape[0], n_out))
    block = 1024
    _silu_mul_kernel[(rows.shape[0], triton.cdiv(n_out, block))](rows, out, n_out, rows.stride(0), out.stride(0),
                                                                 BLOCK=block, num_warps=4)
    return out.view(*gate_up.shape[:-1], n_out)


@triton.jit
def _add_rms_norm_kernel(x, delta, weight, res_out, out, D, eps, BLOCK: tl.constexpr):
    """Program ``row``: ``r = x + delta`` rounded to the dtype (the residual stream), and ``r * rsqrt(mean(r^2) +
    eps) * weight`` in float32, rounded once; the row's sum of squares in one fixed order."""
    row = tl.program_id(0).to(tl.int64) * D
    cols = tl.arange(0, BLOCK)
    live = cols < D
    r = (tl.load(x + row + cols, mask=live, other=0.0).to(tl.float32)
         + tl.load(delta + row + cols, mask=live, other=0.0).to(tl.float32)).to(res_out.dtype.element_ty)
    tl.store(res_out + row + cols, r, mask=live)
    rf = r.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(rf * rf, axis=0) / D + eps)
    w = tl.load(weight + cols, mask=live, other=0.0).to(tl.float32)
    tl.store(out + row + cols, (rf * rstd * w).to(out.dtype.element_ty), mask=live)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    """Residual add and the RMSNorm of its result, ``(x + delta, rms_norm(x + delta) * weight)``, in one launch.

    Why: the compiled element-wise kernel it replaces picks its reduction by the number of rows (its shapes are
    dynamic), so a verification's first row could be normalised with other bits than the AR step's one row; here one
    program reduces each whole row (up to 65536 wide) in one order whatever the row count.

    ``x`` and ``delta`` ``(..., D)`` contiguous, of one shape and dtype; ``weight`` ``(D,)``."""
    dim = x.shape[-1]
    check_shapes(x.is_contiguous() and delta.is_contiguous() and delta.shape == x.shape and delta.dtype == x.dtype
                 and weight.shape == (dim,) and weight.is_contiguous() and x.device == delta.device == weight.device
                 and dim <= 65536,
                 "add_rms_norm: x and delta (..., D) contiguous, alike in shape, dtype and device, weight (D,) "
                 "contiguous, D <= 65536", x, delta, weight)
    res, out = torch.empty_like(x), torch.empty_like(x)
    block = triton.next_power_of_2(dim)
    _add_rms_norm_kernel[(x.numel() // dim,)](x, delta, weight, res, out, dim, eps, BLOCK=block,
                                              num_warps=min(16, max(4, block // 1024)))
    return res, out


@functools.lru_cache(maxsize=8)
def shared_bytes(device: torch.device) -> int:
    """Shared memory a :func:`linear` configuration may use per program on ``device``: :data:`SHARED_BYTES`, less
    where the GPU opts in to less (24 KiB kept for the kernel's other buffers)."""
    if device.type != "cuda":
        return SHARED_BYTES
    optin = getattr(torch.cuda.get_device_properties(device.index or 0), "shared_memory_per_block_optin", 0)
    return min(SHARED_BYTES, optin - 24 * 1024) if optin else SHARED_BYTES


def linear_config(rows: int, dtype: torch.dtype = torch.bfloat16, swiglu: bool = False, block_n: int = 32,
                  block_k: int = 256, num_stages: int = 5, split: int = 1, smem: int = SHARED_BYTES) -> dict:
    """A :func:`linear` configuration for ``rows`` rows: ``BLOCK_M`` 16 up to 16 rows (so that a verification's
    rows are summed as an AR step's), else 64; pipeline stages cut to fit ``smem`` bytes of shared memory
    (:func:`shared_bytes` of the device) with the tiles of a stage: the rows' and the weight's (twice with
    ``swiglu``)."""
    block_m = INVARIANT_ROWS if rows <= INVARIANT_ROWS else 64
    stage_bytes = (block_m + block_n * (2 if swiglu else 1)) * block_k * dtype.itemsize
    stages = max(1, min(num_stages, smem // stage_bytes))
    return dict(block_m=block_m, block_n=block_n, block_k=block_k, num_warps=4, num_stages=stages, split=split)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, swiglu: bool = False,
           config: dict | None = None):
    """``F.linear(x, weight, bias)`` for few rows on a Triton kernel; with ``swiglu``, SwiGLU of a fused gate/up
    projection: ``weight`` ``(2F, K)`` (gate rows, then up rows) gives ``silu(x @ gate.T) * (x @ up.T)``
    ``(..., F)`` in one launch.

    Why: at a decode step's few rows a projection reads its weight once and does little else, so its time is the
    weight read plus fixed costs; cuBLAS follows the gate/up projection with a separate activation kernel, splits
    the sum over ``K`` of narrow projections with a second, reduction launch, and picks its split by the row count,
    so that a verification's rows are not summed as an AR step's. Here SwiGLU runs in the epilogue, a split of
    ``K`` is reduced in the same launch (by the last program of each tile, in split order), and one configuration
    serves every row count up to 16, each row summed alike.

    Parameters
    ----------
    x : Tensor
        ``(..., K)`` with a unit last stride, rows evenly strided.
    weight : Tensor
        ``(N, K)`` (``(2F, K)`` with ``swiglu``), contiguous.
    bias : Tensor, optional
        ``(N,)`` (not with ``swiglu``).
    config : dict, optional
        :func:`linear_config`'s keys (``split`` 1 with ``swiglu``); default ``linear_config(rows)``.

    Returns
    -------
    Tensor ``(..., N)`` (``(..., F)`` with ``swiglu``)
    """
    k_dim = x.shape[-1]
    rows = x.reshape(-1, k_dim)
    n_out = weight.shape[0] // 2 if swiglu else weight.shape[0]
    cfg = config or linear_config(rows.shape[0], x.dtype, swiglu, smem=shared_bytes(x.device))
    split = cfg["split"]
    grid = (triton.cdiv(n_out, cfg["block_n"]), triton.cdiv(rows.shape[0], cfg["block_m"]), split)
    check_shapes(weight.is_contiguous() and weight.shape[1] == k_dim and rows.stride(-1) == 1
                 and (not swiglu or (weight.shape[0] % 2 == 0 and bias is None and split == 1))
                 and (bias is None or bias.shape == (n_out,)) and (split == 1 or grid[0] * grid[1] <= MAX_SPLIT_TILES),
                 "linear: x (..., K) with unit last stride, weight (N, K) contiguous ((2F, K), no bias and no split "
                 f"with swiglu), bias (N,), at most {MAX_SPLIT_TILES} output tiles when split", x, weight)
    out = x.new_empty((rows.shape[0], n_out))
    k_split = triton.cdiv(triton.cdiv(k_dim, split), cfg["block_k"]) * cfg["block_k"]
    even = k_dim % k_split == 0 and n_out % cfg["block_n"] == 0
    if split > 1:
        part = x.new_empty((split * rows.shape[0] * n_out,), dtype=torch.float32)
        count = split_counters(x.device)
    else:
        part = count = out  # unused
    _linear_kernel[grid](rows, weight, weight if bias is None else bias, out, part, count, rows.shape[0], n_out,
                         k_dim, rows.stride(0), weight.stride(0), out.stride(0), n_out, k_split,
                         BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"], EVEN=even,
                         SWIGLU=swiglu, BIAS=bias is not None, IEEE=x.dtype == torch.float32, SPLIT=split,
                         num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out.view(*x.shape[:-1], n_out)


#: (BLOCK_N, BLOCK_K, stages, split) :func:`tuned_linear` times against cuBLAS: every configuration that was the
#: fastest at some projection and row count of the Llama-3.1-8B and Llama-3.2-1B shapes on an H200
#: (``benchmarks/kernel_tune.py``), and splits of K for the narrow ones (few output blocks, so few programs).
LINEAR_CANDIDATES = ((32, 256, 5, 1), (64, 128, 5, 1), (16, 256, 5, 1), (32, 128, 5, 1), (64, 128, 3, 1),
                     (32, 256, 5, 2), (32, 128, 5, 4), (16, 128, 5, 4), (32, 128, 5, 8))
#: The same for the gate/up projection with SwiGLU (its weight is the widest; never split).
SWIGLU_CANDIDATES = ((64, 128, 3, 1), (32, 128, 3, 1), (32, 256, 5, 1))
#: Weights smaller than this are not timed (latency-bound either way): the first candidate runs.
TUNE_MIN_BYTES = 1 << 22
#: Weight bytes each timed graph cycles through (copies of the weight): several times an H200's 50 MB L2.
TUNE_BYTES = 256e6
_CHOICES: dict = {}


def tuned_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, swiglu: bool = False,
                 fallback=None):
    """:func:`linear` in the configuration, or ``fallback(x, weight, bias)`` (cuBLAS), that ran fastest for this
    weight shape, dtype and row class (up to 16 rows; 17 to :data:`LINEAR_MAX_ROWS`) on this GPU: timed once per
    process at the first call outside a CUDA graph capture (:func:`choose_linear`; the engine's warm-up makes it).
    One choice serves every row count up to 16: where it is the kernel, a verification's rows are summed as an AR
    step's of the same batch (cuBLAS picks its kernel by the row count); a choice is per process and GPU, so two runs
    may differ in the last bits (rows record the choices: :func:`linear_choices`).

    ``fallback`` computes the same function (for ``swiglu``: the activated gate/up projection); None: never cuBLAS.
    A weight too small to time, or met first inside a capture, runs the first candidate, or ``fallback`` where that
    does not fit the GPU.
    """
    rows = x.numel() // x.shape[-1]
    # a kernel-only choice (no fallback: a batch-invariant model's) is kept apart from one that may be cuBLAS
    key = (x.device, rows <= INVARIANT_ROWS, tuple(weight.shape), swiglu, bias is not None, x.dtype, fallback is None)
    choice = _CHOICES.get(key, False)
    untimed = choice is False and not _timeable(x, weight)
    if untimed:
        choice = linear_config(rows, x.dtype, swiglu, *(SWIGLU_CANDIDATES if swiglu else LINEAR_CANDIDATES)[0],
                               smem=shared_bytes(x.device))
    elif choice is False:
        choice = _CHOICES[key] = choose_linear(x, weight, bias, swiglu, fallback)
    if choice is None:
        return fallback(x, weight, bias)
    if fallback is None or not untimed:
        return linear(x, weight, bias, swiglu, choice)
    try:
        return linear(x, weight, bias, swiglu, choice)
    except triton.runtime.errors.OutOfResources:  # less shared memory than counted
        return fallback(x, weight, bias)


def _timeable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`tuned_linear` times its choice for ``weight`` now: on a GPU, a weight worth it, outside a
    CUDA graph capture."""
    return (x.device.type == "cuda" and weight.numel() * weight.element_size() >= TUNE_MIN_BYTES
            and not torch.cuda.is_current_stream_capturing())


def choose_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, swiglu: bool = False,
                  fallback=None) -> dict | None:
    """The fastest of ``fallback`` (returned as None) and :func:`linear` in each candidate configuration
    (:data:`LINEAR_CANDIDATES`, :data:`SWIGLU_CANDIDATES`) on ``x``'s rows, each timed in a CUDA graph cycling
    over copies of ``weight`` (as a forward's layers each read their own; fewer where memory is short); a
    configuration that does not fit the GPU (shared memory) or its memory is passed over."""
    rows = x.numel() // x.shape[-1]
    nbytes = weight.numel() * weight.element_size()
    try:
        copies = [weight] + [torch.empty_like(weight).normal_() for _ in range(min(7, int(TUNE_BYTES // nbytes)))]
    except torch.OutOfMemoryError:
        copies = [weight]  # timed on the one weight: L2 may hold part of it, for every candidate alike
    smem = shared_bytes(x.device)
    configs = [linear_config(rows, x.dtype, swiglu, *c, smem=smem)
               for c in (SWIGLU_CANDIDATES if swiglu else LINEAR_CANDIDATES)]
    best, best_us = None, float("inf")
    for config in ([None] if fallback is not None else []) + configs:
        def call(w, config=config):
            return fallback(x, w, bias) if config is None else linear(x, w, bias, swiglu, config)
        try:
            us = kernels.graph_us_per_call([functools.partial(call, w) for w in copies], replays=10, repeats=3)
        except (triton.runtime.errors.OutOfResources, torch.OutOfMemoryError):
            continue
        if us < best_us:
            best, best_us = config, us
    if best is None and fallback is None:
        raise RuntimeError(f"no configuration of the projection kernel runs a {tuple(weight.shape)} weight here")
    return best


def linear_choices() -> dict[str, str]:
    """What :func:`tuned_linear` chose in this process, compactly: ``"ROWS NxK[ swiglu][ bias][ kernel-only]
    DTYPE"`` (rows ``1-16`` or ``17-64``, the weight's shape; ``kernel-only``: chosen without cuBLAS, for a
    batch-invariant model) -> ``"cublas"`` or ``"BLOCK_N/BLOCK_K/stages/split"``; rows record it
    as ``kernel_choices`` (what ran is chosen per GPU and process, so it is provenance)."""
    out = {}
    for (_, small, shape, swiglu, bias, dtype, kernel_only), choice in _CHOICES.items():
        rows = f"1-{INVARIANT_ROWS}" if small else f"{INVARIANT_ROWS + 1}-{LINEAR_MAX_ROWS}"
        key = (f"{rows} {shape[0]}x{shape[1]}{' swiglu' if swiglu else ''}"
               f"{' bias' if bias else ''}{' kernel-only' if kernel_only else ''} {str(dtype).removeprefix('torch.')}")
        out[key] = "cublas" if choice is None else "/".join(
            str(choice[k]) for k in ("block_n", "block_k", "num_stages", "split"))
    return out
