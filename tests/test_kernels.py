"""The fast path's Triton kernels (rotary + cache write, attention over the slot cache; the projection kernel of
``sdlaws.measure.projection``) against the PyTorch code they replace, and the engine's greedy tokens with them:
on a GPU natively, without one through Triton's interpreter (chosen in ``conftest.py``; numpy: float32 and
float16; its bfloat16 matmul is not exact there, so bfloat16 is checked on GPU in ``test_engine_gpu.py``)."""

import pytest
import torch

from sdlaws.measure import fastpath
from sdlaws.measure.engine import DecodeConfig, SpecDecoder
from sdlaws.measure.kvcache import SlotCache, block_mask

triton = pytest.importorskip("triton", reason="Triton (a dependency of CUDA builds of torch; the test extra)")


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def kernels():
    """``sdlaws.measure.kernels``, on a GPU or in Triton's interpreter."""
    if DEVICE == "cpu" and not triton.knobs.runtime.interpret:
        pytest.skip("no GPU and Triton's interpreter is off (set TRITON_INTERPRET=1 before triton is imported)")
    from sdlaws.measure import kernels as module

    return module


@pytest.fixture(scope="module")
def projection(kernels):
    """``sdlaws.measure.projection``, on a GPU or in Triton's interpreter."""
    from sdlaws.measure import projection as module

    return module


def reference(q, keys, values, mask, n):
    """The fast path's PyTorch attention (mask folded over the GQA group, SDPA), in float32."""
    out = fastpath._sdpa_folded(q.float(), keys.float(), values.float(),
                                fastpath._fold_mask(mask.float(), q.shape[2] // n), n)
    return out


def ragged_case(batch, n, slots, heads, kv_heads, dim, dtype, tree=False, seed=0):
    """Queries, caches and an engine mask with ragged rows; every slot no query may attend holds NaN, so reading
    one poisons the output."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(batch, kv_heads, slots, dim, generator=gen).to(dtype)
    values = torch.randn(batch, kv_heads, slots, dim, generator=gen).to(dtype)
    q = torch.randn(batch, kv_heads, heads // kv_heads * n, dim, generator=gen).to(dtype)
    start = torch.randint(0, 70, (batch,), generator=gen)
    end = start + torch.randint(1, 90, (batch,), generator=gen)
    block = end + torch.randint(0, 3, (batch,), generator=gen)
    if tree:  # a binary tree's ancestor-or-self order (node i's parent is (i - 1) // 2)
        anc = torch.eye(n, dtype=torch.bool)
        for i in range(1, n):
            anc[i] |= anc[(i - 1) // 2]
    else:
        anc = torch.tril(torch.ones(n, n, dtype=torch.bool))
    mask = block_mask(start, end, block, anc, slots, dtype)
    dead = (mask[:, 0] < 0).all(dim=1)  # (B, S): no query of the row attends the slot
    clean = [t.clone() for t in (keys, values)]
    for t in (keys, values):
        t.masked_fill_(dead[:, None, :, None], float("nan"))
    return [t.to(DEVICE) for t in (q, keys, values, mask)] + [[t.to(DEVICE) for t in clean]]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
@pytest.mark.parametrize("batch,n,slots,heads,kv_heads,dim,tree,splits", [
    (2, 1, 200, 8, 2, 16, False, 1),    # decode, GQA 4
    (3, 5, 260, 4, 2, 8, False, 2),     # a chain's verification, head size 8 zero-padded to 16, 2 slot ranges
    (2, 7, 190, 4, 4, 32, True, 4),     # a tree's, no GQA, 4 ranges (some empty)
    (1, 40, 150, 8, 2, 16, False, 2),   # 160 query rows: three row tiles
])
def test_attention_matches_sdpa_and_reads_no_dead_slot(kernels, dtype, tol, batch, n, slots, heads, kv_heads, dim,
                                                       tree, splits):
    q, keys, values, mask, clean = ragged_case(batch, n, slots, heads, kv_heads, dim, dtype, tree)
    out = kernels.attention(q, keys, values, mask, n, splits=splits)
    assert out.shape == (batch, n, heads * dim) and out.dtype == dtype
    assert torch.allclose(out.float(), reference(q, *clean, mask, n), atol=tol, rtol=tol)


def test_attention_zeroes_dead_slots_values_unless_a_benchmark_asks_not_to(kernels):
    """The NaN a dead slot inside a live block holds reaches the output only with ``zero_dead=False`` (the
    benchmarks' bound on what the zeroing costs): it is the zeroing that keeps stale values out."""
    q, keys, values, mask, clean = ragged_case(2, 5, 260, 4, 2, 8, torch.float32, tree=True)
    assert torch.isfinite(kernels.attention(q, keys, values, mask, 5)).all()
    assert torch.isnan(kernels.attention(q, keys, values, mask, 5, zero_dead=False)).any()
    assert torch.allclose(kernels.attention(q, *clean, mask, 5, zero_dead=False),
                          kernels.attention(q, keys, values, mask, 5), atol=1e-6)


@pytest.mark.skipif(DEVICE == "cpu", reason="needs a GPU: Llama-3.1-8B attention shapes, bfloat16")
@pytest.mark.parametrize("batch,n,slots", [(1, 1, 384), (64, 1, 384), (1, 5, 2048), (8, 16, 2048)])
def test_attention_at_8b_shapes_in_bfloat16(kernels, batch, n, slots):
    q, keys, values, mask, clean = ragged_case(batch, n, slots, 32, 8, 128, torch.bfloat16, tree=n > 8)
    out = kernels.attention(q, keys, values, mask, n)  # the fast path's default slot ranges
    assert torch.allclose(out.float(), reference(q, *clean, mask, n), atol=2e-2, rtol=2e-2)


def test_verification_sums_the_prefix_as_an_ar_step(kernels):
    """A query attending the same slots gets the same bits from a 1-token step and from a 3-token verification
    whose block crosses into the next block of slots (its live range ends later): the shares of blocks are fixed.
    One query head per KV head, so that the query sits in the same tile row in both calls (the interpreter's
    products, numpy's, may round a row differently at another position)."""
    slots, dim, neg = 300, 16, torch.finfo(torch.float32).min
    gen = torch.Generator().manual_seed(3)
    keys, values = (torch.randn(1, 2, slots, dim, generator=gen).to(DEVICE) for _ in range(2))
    q_v = torch.randn(1, 2, 3, dim, generator=gen).to(DEVICE)  # tokens at slots 127, 128, 129
    mask_ar = torch.full((1, 1, 1, slots), neg, device=DEVICE)
    mask_ar[..., 10:128] = 0  # the AR step of the token at slot 127: prefix 10..126 and itself
    anc = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    mask_v = block_mask(torch.tensor([10]), torch.tensor([127]), torch.tensor([127]), anc, slots,
                        torch.float32).to(DEVICE)
    for splits in (2, 4):
        out_ar = kernels.attention(q_v[:, :, :1].contiguous(), keys, values, mask_ar, 1, splits=splits)
        out_v = kernels.attention(q_v, keys, values, mask_v, 3, splits=splits)
        assert torch.equal(out_v[:, 0], out_ar[:, 0])


def test_attention_query_with_no_slot_gets_zeros(kernels):
    q, keys, values, mask, clean = ragged_case(2, 1, 130, 4, 2, 16, torch.float32)
    mask[1] = torch.finfo(torch.float32).min  # row 1 may attend nothing
    out = kernels.attention(q, *clean, mask, 1, splits=2)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.allclose(out[0], reference(q, *clean, mask, 1)[0], atol=1e-5)


def test_live_bounds_span_first_to_last_attended_slot(kernels):
    neg = torch.finfo(torch.float32).min
    mask = torch.full((3, 1, 2, 10), neg)
    mask[0, 0, 0, 2:5] = 0  # row 0: query 0 sees 2..4, query 1 sees 7
    mask[0, 0, 1, 7] = 0
    mask[1, 0, :, 9] = 0    # row 1: the last slot only; row 2: nothing
    assert kernels.live_bounds(mask.to(DEVICE)).tolist() == [[2, 8], [9, 10], [0, 0]]
    # over several blocks of slots (2500 > 1024), an expanded float16 mask: the PyTorch expression of the same bounds
    neg16 = torch.finfo(torch.float16).min
    wide = torch.full((2, 1, 3, 2500), neg16, dtype=torch.float16)
    wide[0, 0, 2, 1000:2100] = 0
    wide[1, 0, 0, 5] = 0
    wide[1, 0, 1, 2499] = 0
    live = (wide > neg16).any(dim=2)[:, 0]
    slot = torch.arange(2500)
    expect = torch.stack([torch.where(live, slot, 2500).amin(1), torch.where(live, slot + 1, 0).amax(1)], 1)
    assert expect.tolist() == [[1000, 2100], [5, 2500]]
    assert kernels.live_bounds(wide.to(DEVICE)[:1].expand(2, 1, 3, 2500)).tolist() == [[1000, 2100]] * 2
    assert kernels.live_bounds(wide.to(DEVICE)).tolist() == expect.tolist()


def test_rope_write_matches_rotary_and_scatter(kernels):
    batch, n, heads, kv_heads, dim, slots = 2, 3, 8, 2, 16, 40
    gen = torch.Generator().manual_seed(1)
    qkv, cos, sin = (torch.randn(batch, n, *shape, generator=gen).to(DEVICE)
                     for shape in ((heads + 2 * kv_heads, dim), (dim,), (dim,)))
    write = torch.tensor([[5, 6, 7], [10, 11, 30]], device=DEVICE)
    stack = torch.full((2, batch, kv_heads, slots, dim), 7.0, device=DEVICE)  # keys, values
    q = kernels.rope_write(qkv, cos, sin, write, stack[0], stack[1], heads)
    rotated = fastpath._rotary(qkv, cos.unsqueeze(2), sin.unsqueeze(2), heads + kv_heads)
    assert torch.allclose(q, rotated[:, :, :heads].transpose(1, 2).reshape(q.shape), atol=1e-6)
    expect = torch.full_like(stack, 7.0)
    kv = rotated[:, :, heads:].view(batch, n, 2, kv_heads, dim).permute(2, 0, 3, 1, 4)  # (2, B, H, n, D)
    expect.scatter_(3, write[None, :, None, :, None].expand(kv.shape), kv)
    assert torch.allclose(stack, expect, atol=1e-6)  # written at the slots, nothing else touched


def test_num_splits_and_attention_config(monkeypatch):
    from sdlaws.measure import kernels

    monkeypatch.setattr(kernels, "_multiprocessors", lambda index: 132)
    gpu = torch.device("cuda", 0)
    # (programs, slots) -> shares, a power of 2: one block of 64 slots each where about 2 programs per
    # multiprocessor allow it, else that many programs
    assert [kernels.num_splits(p, s, gpu) for p, s in [(8, 384), (8, 2048), (8, 4096), (32, 4096), (512, 4096)]] \
        == [8, 32, 32, 8, 1]
    assert kernels.num_splits(8, 4096, torch.device("cpu")) == 1
    # a batch whose programs fill the GPU unshared reads blocks of 32 slots with 2 warps; fewer share blocks of 64;
    # an AR step (4 folded rows) and a gamma-4 verification (20) of the same batch run alike
    for batch, expect in [(64, dict(splits=1, block_s=32, num_warps=2)), (1, dict(splits=8, block_s=64, num_warps=4))]:
        for rows in (4, 20):
            cfg = kernels.attention_config(batch * 8, rows, 384, gpu)
            assert {k: cfg[k] for k in expect} == expect
    # 16 tokens a row (64 folded rows, one tile) at batch 64: the same slot blocks, 4 warps (2 would spill)
    assert {k: v for k, v in kernels.attention_config(64 * 8, 64, 384, gpu).items() if k != "num_stages"} == dict(
        block_m=64, tiles=1, splits=1, block_s=32, num_warps=4)


@pytest.mark.parametrize("method", ["chain", "tree"])
def test_engine_greedy_tokens_with_kernels(kernels, tiny_llama, method):
    """The fast path on the kernels (forced on, interpreted) keeps HF's greedy tokens for chain and tree."""
    target = tiny_llama(vocab=64, layers=2, hidden=64, heads=4, kv_heads=2, seed=0, init_std=0.2)
    draft = tiny_llama(vocab=64, layers=1, hidden=64, heads=4, kv_heads=2, seed=1, init_std=0.2)
    for model in (target, draft):
        model.to(DEVICE)
        fastpath.wrap(model).triton = True
        assert fastpath.wrap(model).impl == "fused-triton"  # what the rows it times record
    prompts = [[3, 1, 4, 1, 5], [6, 5], [2, 7, 1, 8, 2, 8, 1]]
    cfg = DecodeConfig(method=method, num_spec_tokens=3, tree_topk=2 if method == "tree" else 1, max_new_tokens=10)
    tokens, _ = SpecDecoder(target, draft, cfg, max_prompt_len=8).generate(prompts)
    with torch.no_grad():
        for prompt, got in zip(prompts, tokens):
            ids = torch.tensor([prompt], device=DEVICE)
            for _ in range(10):
                ids = torch.cat([ids, target(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            assert got == ids[0, len(prompt):].tolist()


def _two_forwards(model, triton_on, prompt_len, shared):
    """Logits of a prompt of ``prompt_len`` tokens in each of 2 rows and then of one decode step, through the fast
    path with the kernels on or off, over a fresh slot cache of 160 slots (rows left-padded by 0 and 3 slots; by 0
    both where they ``shared`` one mask and one position row)."""
    fast = fastpath.wrap(model)
    fast.triton = triton_on
    batch, slots = 2, 160
    cache, pad = SlotCache(model.config.num_hidden_layers, slots), torch.tensor([0, 0 if shared else 3])
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_len + 1), generator=gen).to(DEVICE)
    out = []
    for start, n in ((0, prompt_len), (prompt_len, 1)):
        write = (pad[:, None] + torch.arange(start, start + n)).to(DEVICE)
        cache.write_slots = write
        anc = torch.tril(torch.ones(n, n, dtype=torch.bool))
        mask = block_mask(pad, pad + start, pad + start, anc, slots, torch.float32).to(DEVICE)
        positions = torch.arange(start, start + n, device=DEVICE)[None].expand(batch, n)
        if shared:  # one mask and one position row for the whole batch
            mask, positions = mask[:1], positions[:1]
        out.append(fast(input_ids=ids[:, start:start + n], position_ids=positions, attention_mask=mask,
                        past_key_values=cache).logits)
    return out


@pytest.mark.parametrize("prompt_len,shared", [(6, False), (140, False), (6, True)])
def test_fast_forward_on_kernels_matches_pytorch_path(kernels, tiny_llama, prompt_len, shared):
    """Head size 80 (not a power of two); a 6-token prompt runs the attention kernel, a 140-token one (280 query
    rows per KV head) rotary + cache write and then SDPA; a batch-1 mask and position row (rows padded alike)
    falls back to PyTorch for rotary and matches too."""
    model = tiny_llama(vocab=64, layers=2, hidden=160, heads=2, kv_heads=1, seed=4, init_std=0.2).to(DEVICE)
    on = _two_forwards(model, True, prompt_len, shared)
    off = _two_forwards(model, False, prompt_len, shared)
    for a, b in zip(on, off):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_kernels_refuse_shapes_they_would_read_out_of_bounds(kernels):
    q = torch.zeros(2, 2, 4, 16, device=DEVICE)
    keys = torch.zeros(2, 2, 100, 16, device=DEVICE)
    with pytest.raises(ValueError, match="mask \\(B, 1, n, S\\)"):
        kernels.attention(q, keys, keys, torch.zeros(1, 1, 1, 100, device=DEVICE), 1)  # one mask row for 2
    with pytest.raises(ValueError, match="power of two"):
        kernels.attention(q, keys, keys, torch.zeros(2, 1, 1, 100, device=DEVICE), 1, splits=3)
    qkv = torch.zeros(2, 1, 6, 16, device=DEVICE)
    with pytest.raises(ValueError, match="cos, sin \\(B, n, D\\)"):
        kernels.rope_write(qkv, torch.zeros(1, 1, 16, device=DEVICE), torch.zeros(1, 1, 16, device=DEVICE),
                           torch.zeros(2, 1, dtype=torch.long, device=DEVICE), keys, keys, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_silu_mul_matches_the_element_wise_kernel(projection, dtype):
    """The Triton SwiGLU activation (after a cuBLAS gate/up projection) equals silu(gate) * up computed in float32
    and rounded once, over a width that is not a multiple of its block, rows strided."""
    gen = torch.Generator().manual_seed(0)
    gate_up = torch.randn(3, 2, 2 * 1100 + 8, generator=gen).to(dtype)[..., :2200].to(DEVICE)
    gate, up = gate_up.float().chunk(2, dim=-1)
    want = (torch.nn.functional.silu(gate) * up).to(dtype)
    assert torch.allclose(projection.silu_mul(gate_up).float(), want.float(), atol=1e-5 if dtype == torch.float32
                          else 1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="silu_mul"):
        projection.silu_mul(gate_up[..., :2199])


def _rounded_norm(x, delta, weight, eps, dtype):
    """The function add_rms_norm computes: ``r = x + delta`` rounded to ``dtype``; ``r * rsqrt(mean(r^2) + eps) *
    weight`` in float64, for a reference within one rounding of the kernel's float32."""
    res = (x.double() + delta.double()).to(dtype)
    r = res.double()
    return res, r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_add_rms_norm_matches_the_element_wise_kernel_and_reduces_rows_alike(projection, dtype):
    """The Triton residual add + RMSNorm: the residual stream ``x + delta`` rounded to the dtype, the norm of that
    rounded stream with its epsilon and weight, rounded once; over a width that is not a power of 2 and rows in two
    leading dimensions; a row among 6 gets the bits it gets alone (a verification's first row as an AR step's)."""
    gen = torch.Generator().manual_seed(0)
    # rows of small values (the epsilon matters) and large x against small delta (the rounding of x + delta shows)
    scale = torch.tensor([1e-3, 1.0, 30.0]).view(1, 3, 1)
    x = (scale * torch.randn(2, 3, 1000, generator=gen)).to(dtype).to(DEVICE)
    delta = (scale * 1e-3 * torch.randn(2, 3, 1000, generator=gen)).to(dtype).to(DEVICE)
    weight = (1 + 0.1 * torch.randn(1000, generator=gen)).to(dtype).to(DEVICE)
    eps = 1e-5
    res, out = projection.add_rms_norm(x, delta, weight, eps)
    want_res, want = _rounded_norm(x, delta, weight, eps, dtype)
    assert res.shape == out.shape == x.shape and torch.equal(res, want_res)
    ulp = torch.finfo(dtype).eps  # outputs of magnitude ~1: within about an ulp (a dropped epsilon moves the
    assert torch.allclose(out.double(), want, rtol=ulp, atol=ulp), (out.double() - want).abs().max()  # small rows 3x)
    # the same as the function it replaces (fastpath's add + RMSNorm) in float32
    if dtype == torch.float32:
        assert torch.allclose(out, fastpath._add_rms_norm(x, delta, weight, eps)[1], rtol=1e-5, atol=1e-7)
    alone = projection.add_rms_norm(x[1:2, 0:1], delta[1:2, 0:1], weight, eps)
    assert torch.equal(alone[0], res[1:2, 0:1]) and torch.equal(alone[1], out[1:2, 0:1])
    with pytest.raises(ValueError, match="add_rms_norm"):
        projection.add_rms_norm(x, delta[:1], weight, eps)
    with pytest.raises(ValueError, match="add_rms_norm"):  # a strided weight would be read as a contiguous one
        projection.add_rms_norm(x, delta, torch.ones(2000, dtype=dtype, device=DEVICE)[::2], eps)


@pytest.mark.skipif(DEVICE == "cpu", reason="needs a GPU: bfloat16 (the interpreter truncates it)")
def test_element_wise_kernels_round_once_in_bfloat16(projection):
    """In bf16 add + RMSNorm and SwiGLU are within one rounding of the float64 function of their inputs, and
    SwiGLU is bit for bit ``silu(gate) * up`` computed in float32 and rounded once."""
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x, delta = (torch.randn(7, 4096, device=DEVICE, generator=gen, dtype=torch.bfloat16) for _ in range(2))
    weight = 1 + 0.1 * torch.randn(4096, device=DEVICE, generator=gen, dtype=torch.bfloat16)
    res, out = projection.add_rms_norm(x, delta, weight, 1e-5)
    want_res, want = _rounded_norm(x, delta, weight, 1e-5, torch.bfloat16)
    assert torch.equal(res, want_res) and torch.allclose(out.double(), want, rtol=2 ** -7, atol=0)
    gate_up = torch.randn(7, 2 * 14336, device=DEVICE, generator=gen, dtype=torch.bfloat16)
    gate, up = gate_up.float().chunk(2, dim=-1)
    assert torch.equal(projection.silu_mul(gate_up), (torch.nn.functional.silu(gate) * up).bfloat16())


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
@pytest.mark.parametrize("rows,n_out,k_dim,tiles", [
    (1, 96, 512, {}),                                   # a decode row: BLOCK_M 16, BLOCK_N 32, BLOCK_K 256
    (5, 100, 80, dict(block_k=64)),                     # N and K not multiples of the blocks (masked loads)
    (40, 64, 256, dict(block_k=64)),                    # BLOCK_M 64
    (70, 48, 128, dict(block_n=16, block_k=32)),        # two row blocks
    (3, 96, 512, dict(block_k=64, split=4)),            # K split in 4, reduced by the last program of each tile
    (20, 40, 300, dict(block_n=16, block_k=32, split=3)),  # a split that leaves a short last share, masked
])
def test_linear_matches_f_linear(projection, dtype, tol, rows, n_out, k_dim, tiles):
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, k_dim, generator=gen).to(dtype).to(DEVICE)
    weight = (torch.randn(n_out, k_dim, generator=gen) / k_dim ** 0.5).to(dtype).to(DEVICE)
    bias = torch.randn(n_out, generator=gen).to(dtype).to(DEVICE)
    config = projection.linear_config(rows, dtype, **tiles)
    for _ in range(2):  # twice: a split call leaves its tile counters as it found them
        got = projection.linear(x.view(1, rows, k_dim), weight, bias, config=config)
        assert got.shape == (1, rows, n_out) and got.dtype == dtype
        assert torch.allclose(got[0].float(), torch.nn.functional.linear(x.float(), weight.float(), bias.float()),
                              atol=tol, rtol=tol)
    if config["split"] == 1:
        # SwiGLU of the weight read as gate rows then up rows: the projections rounded to the dtype, as unfused
        gate, up = torch.nn.functional.linear(x.float(), weight.float()).to(dtype).float().chunk(2, dim=-1)
        swiglu = projection.linear(x, weight, swiglu=True, config=projection.linear_config(rows, dtype, True, **tiles))
        assert swiglu.shape == (rows, n_out // 2)
        assert torch.allclose(swiglu.float(), torch.nn.functional.silu(gate) * up, atol=tol, rtol=tol)


@pytest.mark.parametrize("split", [1, 4])
def test_linear_sums_a_row_alike_for_any_row_count_up_to_16(projection, split):
    """A verification's rows (here 5) get the bits the same row gets alone, as in an AR step: one configuration
    sums each output over K in one order whatever the row count (cuBLAS picks its split of K by the row count)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 512, generator=gen).half().to(DEVICE)
    weight = torch.randn(64, 512, generator=gen).half().to(DEVICE)
    together = projection.linear(x, weight, config=projection.linear_config(5, torch.float16, split=split))
    for i in range(5):
        alone = projection.linear(x[i:i + 1], weight, config=projection.linear_config(1, torch.float16, split=split))
        assert torch.equal(alone, together[i:i + 1])


def test_linear_refuses_shapes_it_would_read_out_of_bounds(projection):
    x = torch.zeros(3, 64, device=DEVICE)
    with pytest.raises(ValueError, match="weight \\(N, K\\)"):
        projection.linear(x, torch.zeros(32, 48, device=DEVICE))
    with pytest.raises(ValueError, match="no bias and no split with swiglu"):
        projection.linear(x, torch.zeros(32, 64, device=DEVICE), torch.zeros(16, device=DEVICE), swiglu=True)
    with pytest.raises(ValueError, match="no bias and no split with swiglu"):
        projection.linear(x, torch.zeros(32, 64, device=DEVICE), swiglu=True, config=projection.linear_config(3, split=2))
    with pytest.raises(ValueError, match="bias \\(N,\\)"):
        projection.linear(x, torch.zeros(32, 64, device=DEVICE), torch.zeros(31, device=DEVICE))


def test_linear_config_fits_shared_memory(projection):
    # stages cut so that (BLOCK_M + BLOCK_N [x 2 with SwiGLU]) x BLOCK_K elements per stage fit SHARED_BYTES
    for rows, dtype, swiglu in [(1, torch.bfloat16, False), (64, torch.bfloat16, True), (64, torch.float32, True)]:
        cfg = projection.linear_config(rows, dtype, swiglu, block_n=64, block_k=256, num_stages=5)
        stage = (cfg["block_m"] + 64 * (1 + swiglu)) * 256 * dtype.itemsize
        assert 1 <= cfg["num_stages"] <= 5 and cfg["num_stages"] * stage <= projection.SHARED_BYTES
    assert projection.linear_config(1, torch.bfloat16, block_n=64, block_k=256)["num_stages"] == 5
    assert projection.linear_config(64, torch.float32, True, block_n=64, block_k=256)["num_stages"] == 1


def test_choose_linear_takes_the_fastest_that_compiles(kernels, projection, monkeypatch):
    """The choice is the fastest timed candidate, cuBLAS (None) included; one that runs out of shared memory is
    passed over."""
    def timer(values):
        values = iter(values)

        def fake(calls, **_):
            value = next(values)
            if value is None:
                raise triton.runtime.errors.OutOfResources(300000, 232448, "shared memory")
            return value
        return fake
    x = torch.zeros(1, 64, device=DEVICE)
    weight = torch.zeros(32, 64, device=DEVICE)
    candidates = len(projection.LINEAR_CANDIDATES)
    # cuBLAS 5 us, candidate 0 4 us, candidate 1 out of shared memory, candidate 2 3 us (the fastest), others 9
    monkeypatch.setattr(kernels, "graph_us_per_call", timer([5.0, 4.0, None, 3.0] + [9.0] * (candidates - 3)))
    choice = projection.choose_linear(x, weight, fallback=torch.nn.functional.linear)
    assert choice == projection.linear_config(1, torch.float32, False, *projection.LINEAR_CANDIDATES[2])
    monkeypatch.setattr(kernels, "graph_us_per_call", timer([1.0] + [9.0] * candidates))
    assert projection.choose_linear(x, weight, fallback=torch.nn.functional.linear) is None  # cuBLAS was fastest
    # out of memory while timing one candidate: passed over too; none left and no fallback: one clear error
    oom = iter([torch.OutOfMemoryError("CUDA out of memory"), 2.0] + [9.0] * candidates)

    def timer_oom(calls, **_):
        value = next(oom)
        if isinstance(value, Exception):
            raise value
        return value
    monkeypatch.setattr(kernels, "graph_us_per_call", timer_oom)
    assert projection.choose_linear(x, weight, fallback=torch.nn.functional.linear) == projection.linear_config(
        1, torch.float32, False, *projection.LINEAR_CANDIDATES[0])
    monkeypatch.setattr(kernels, "graph_us_per_call", timer([None] * candidates))
    with pytest.raises(RuntimeError, match="no configuration of the projection kernel"):
        projection.choose_linear(x, weight)


def test_untimed_projection_falls_back_where_the_kernel_does_not_fit(projection, monkeypatch):
    """A weight too small to time runs the first candidate; where that needs more shared memory than the GPU has,
    the fallback (cuBLAS) computes it instead of the forward failing."""
    def no_room(*args, **kwargs):
        raise triton.runtime.errors.OutOfResources(300000, 101376, "shared memory")
    monkeypatch.setattr(projection, "linear", no_room)
    x = torch.ones(2, 64, device=DEVICE)
    weight = torch.ones(32, 64, device=DEVICE)
    out = projection.tuned_linear(x, weight, fallback=lambda h, w, b: torch.nn.functional.linear(h, w) + 1)
    assert torch.equal(out, torch.full((2, 32), 65.0, device=DEVICE))


@pytest.mark.skipif(DEVICE == "cpu", reason="needs a GPU: Llama-3.1-8B and 3.2-1B projection shapes, bfloat16")
@pytest.mark.parametrize("n_out,k_dim,swiglu", [(4096, 4096, False), (2048, 8192, False), (28672, 4096, True)])
def test_linear_candidates_at_model_shapes_in_bfloat16(projection, n_out, k_dim, swiglu):
    """Every configuration tuned_linear may choose computes F.linear (SwiGLU) in bf16 and sums a verification's
    rows as the same row alone; the tuned choice as well."""
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(5, k_dim, device=DEVICE, generator=gen, dtype=torch.bfloat16)
    weight = torch.randn(n_out, k_dim, device=DEVICE, generator=gen, dtype=torch.bfloat16) * k_dim ** -0.5
    full = torch.nn.functional.linear(x.float(), weight.float())
    if swiglu:
        gate, up = full.bfloat16().float().chunk(2, dim=-1)
        full = torch.nn.functional.silu(gate) * up
    for tiles in projection.SWIGLU_CANDIDATES if swiglu else projection.LINEAR_CANDIDATES:
        together = projection.linear(x, weight, swiglu=swiglu, config=projection.linear_config(5, x.dtype, swiglu, *tiles))
        assert torch.allclose(together.float(), full, atol=2e-2, rtol=2e-2), tiles
        alone = projection.linear(x[2:3], weight, swiglu=swiglu,
                               config=projection.linear_config(1, x.dtype, swiglu, *tiles))
        assert torch.equal(alone, together[2:3]), tiles

    def fallback(h, w, bias):
        out = torch.nn.functional.linear(h, w)
        gate, up = out.chunk(2, dim=-1)
        return torch.nn.functional.silu(gate) * up if swiglu else out
    tuned = projection.tuned_linear(x, weight, swiglu=swiglu, fallback=fallback)
    assert torch.allclose(tuned.float(), full, atol=2e-2, rtol=2e-2)
    assert any(key.split()[1] == f"{n_out}x{k_dim}" for key in projection.linear_choices())


def test_choices_rows_record(projection, monkeypatch):
    """Rows on the Triton path record the projection kernel's choices of the process, compactly; others nothing."""
    import json

    monkeypatch.setattr(projection, "_CHOICES", {
        (torch.device("cuda", 0), True, (6144, 4096), False, False, torch.bfloat16, True):
            projection.linear_config(1, torch.bfloat16, False, 32, 128, 5, 4),
        (torch.device("cuda", 0), False, (28672, 4096), True, False, torch.bfloat16, False): None})
    assert projection.linear_choices() == {"1-16 6144x4096 kernel-only bfloat16": "32/128/5/4",
                                        "17-64 28672x4096 swiglu bfloat16": "cublas"}
    assert json.loads(fastpath.kernel_choices("fused-triton")) == projection.linear_choices()
    assert fastpath.kernel_choices("fused") == fastpath.kernel_choices("hf") == ""


def test_engine_target_sums_its_rows_alike_on_the_kernel_only(kernels, projection, tiny_llama, monkeypatch):
    """The engine's target wrapper is batch-invariant: up to 16 rows its projections have no cuBLAS fallback (the
    kernel only, chosen apart from a non-invariant model's choice for the same shape), above 16 they may; the draft
    keeps cuBLAS as a choice everywhere."""
    target, draft = (tiny_llama(vocab=64, layers=1, hidden=64, heads=4, kv_heads=2, seed=s) for s in (0, 1))
    dec = SpecDecoder(target, draft, DecodeConfig(method="chain", num_spec_tokens=2), max_prompt_len=8)
    assert dec.target.invariant and not dec.draft.invariant
    dec.target.triton = dec.draft.triton = True  # the kernels' path (on CPU through the interpreter)
    for fast, rows, kernel_only in [(dec.target, 16, True), (dec.target, 17, False), (dec.draft, 1, False)]:
        linear, swiglu = fast._matmuls(rows)
        assert (linear.keywords["fallback"] is None) == kernel_only
        assert (swiglu.keywords["fallback"] is None) == kernel_only
    # a kernel-only choice and a cuBLAS-or-kernel one for the same shape are two entries: here cuBLAS "times"
    # fastest, and the kernel-only call still runs the kernel
    monkeypatch.setattr(projection, "_CHOICES", {})
    monkeypatch.setattr(projection, "_timeable", lambda x, weight: True)
    config = projection.linear_config(1, torch.float32)
    monkeypatch.setattr(projection, "choose_linear",
                        lambda x, w, b, swiglu, fallback: None if fallback is not None else config)
    x, weight = torch.randn(1, 64, device=DEVICE), torch.randn(32, 64, device=DEVICE)
    cublas = projection.tuned_linear(x, weight, fallback=lambda h, w, b: torch.full((1, 32), 7.0, device=DEVICE))
    kernel = projection.tuned_linear(x, weight, fallback=None)
    assert torch.equal(cublas, torch.full((1, 32), 7.0, device=DEVICE))
    assert torch.allclose(kernel, torch.nn.functional.linear(x, weight), atol=1e-5)
    assert projection.linear_choices() == {"1-16 32x64 float32": "cublas", "1-16 32x64 kernel-only float32":
                                           "/".join(str(config[k]) for k in ("block_n", "block_k", "num_stages",
                                                                             "split"))}


def test_kernels_compile_for_hopper_with_any_integer_argument():
    """The kernels' bodies through Triton's compiler front end (to Triton IR) for sm_90, no GPU needed, every
    constexpr branch the fast path launches, each integer argument as an int32 and as the constant 1 Triton makes of
    a 1 (one row): the interpreter runs the bodies as numpy and
    misses what only compiling finds (``M.to(...)`` on a constant 1 once failed the first GPU call)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    root = str(Path(__file__).resolve().parent.parent)  # this tree's sdlaws, not an installed copy's
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    script = Path(__file__).with_name("hopper_compile.py")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert " kernel configurations compile for sm_90" in done.stdout
