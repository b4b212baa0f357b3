"""CUDA-only checks of the graph path: captured phases give the same tokens as eager ones and the reference.

Skipped without a GPU (CI is CPU-only); the lead runs them on the GPU machine with
``pytest -m gpu tests/test_engine_gpu.py``.
"""

from dataclasses import replace

import pytest
import torch

from sdlaws.measure.engine import DecodeConfig, SpecDecoder

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PROMPTS = [[3, 1, 4, 1, 5, 9, 2], [6, 5], [3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]]
CONFIGS = [
    DecodeConfig(method="ar", max_new_tokens=24),
    DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=24),
    DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=2, max_new_tokens=24),
    DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=24, temperature=1.0),
    DecodeConfig(method="tree", num_spec_tokens=4, tree_topk=3, tree_budget=6, max_new_tokens=24, temperature=0.8),
    DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=2, max_new_tokens=24,
                 acceptance_profile=((0.6, 0.2), (0.5, 0.3), (0.7,))),
    DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=24, acceptance_profile=((0.6,), (0.5,), (0.7,))),
]


def greedy_reference(model, prompt, num_new):
    ids = torch.tensor([prompt], device="cuda")
    with torch.no_grad():
        for _ in range(num_new):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt):].tolist()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.method}-T{c.temperature}"
                         + ("-synthetic" if c.acceptance_profile else ""))
def test_graphs_match_eager(cfg, family, tiny_llama, tiny_gpt2):
    make = tiny_llama if family == "llama" else tiny_gpt2
    target = make(vocab=64, layers=2, seed=0, init_std=0.2).cuda()
    draft = make(vocab=64, layers=1, seed=1, init_std=0.2).cuda()
    eager = SpecDecoder(target, draft, replace(cfg, cuda_graphs=False), max_prompt_len=16)
    graphed = SpecDecoder(target, draft, cfg, max_prompt_len=16)
    first, stats = graphed.generate(PROMPTS)  # captures
    again, _ = graphed.generate(PROMPTS[::-1])  # replays with new inputs in the same buffers
    runners = [graphed._workspaces[len(PROMPTS)].verify_phase, graphed._workspaces[len(PROMPTS)].draft_phase]
    assert all(r.captured for r in runners if r is not None)
    assert first == eager.generate(PROMPTS)[0]  # same seed: same uniforms, same tokens
    assert again == eager.generate(PROMPTS[::-1])[0]
    if cfg.temperature == 0 and cfg.acceptance_profile is None:  # synthetic acceptance is lossy by design
        assert first == [greedy_reference(target, p, cfg.max_new_tokens) for p in PROMPTS]
    assert stats.peak_memory_bytes > 0 and stats.verify_time_s > 0


SERVE_PROMPTS = PROMPTS + [[2, 7, 1, 8, 2, 8], [9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1], [4, 4, 4, 4]]


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=lambda c: c.method)
def test_continuous_batching_with_chunked_prefills_matches_eager_under_graphs(cfg, tiny_llama, monkeypatch):
    """serve(): refills (several rows in one prefill) between graph replays, every prefill chunked (at most 16
    prompt slots: one or two rows a chunk), give the eager tokens and the target's greedy output."""
    from sdlaws.measure import layout

    monkeypatch.setattr(layout, "PREFILL_CHUNK_SLOTS", 16)
    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2).cuda()
    draft = tiny_llama(vocab=64, layers=1, seed=1, init_std=0.2).cuda()
    graphed = SpecDecoder(target, None if cfg.method == "ar" else draft, cfg, max_prompt_len=16)
    eager = SpecDecoder(target, None if cfg.method == "ar" else draft, replace(cfg, cuda_graphs=False),
                        max_prompt_len=16)
    tokens, _ = graphed.serve(SERVE_PROMPTS, 3)
    assert graphed._workspaces[3].verify_phase.captured
    assert tokens == eager.serve(SERVE_PROMPTS, 3)[0]
    assert tokens == [greedy_reference(target, p, cfg.max_new_tokens) for p in SERVE_PROMPTS]


def test_sampled_first_tokens_do_not_depend_on_the_prefill_chunks(tiny_llama, monkeypatch):
    """T > 0: a batch prefilled in chunks (at most 16 prompt slots, one row a chunk) samples the same first tokens,
    and so the same sequences, as one prefill: the uniforms are drawn for all rows at once (a CUDA generator's
    draws in pieces differ from one draw)."""
    from sdlaws.measure import layout

    cfg = CONFIGS[3]  # chain, T = 1
    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2).cuda()
    draft = tiny_llama(vocab=64, layers=1, seed=1, init_std=0.2).cuda()
    whole = SpecDecoder(target, draft, replace(cfg, cuda_graphs=False), max_prompt_len=16).generate(PROMPTS)[0]
    monkeypatch.setattr(layout, "PREFILL_CHUNK_SLOTS", 16)
    chunked = SpecDecoder(target, draft, replace(cfg, cuda_graphs=False), max_prompt_len=16).generate(PROMPTS)[0]
    assert chunked == whole


HEAD_CONFIGS = [cfg for cfg in CONFIGS if cfg.method != "ar"]


@pytest.mark.parametrize("cfg", HEAD_CONFIGS, ids=lambda c: f"{c.method}-T{c.temperature}"
                         + ("-synthetic" if c.acceptance_profile else ""))
def test_head_draft_graphs_match_eager(cfg, tiny_llama):
    """A feature-level draft head: captured phases (features out of the verify graph, the head's refeed and tree
    in the draft graph) give the eager tokens, and at T = 0 the target's greedy output."""
    from sdlaws.measure.head import FeatureHead, head_config

    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2).cuda()
    torch.manual_seed(3)
    head = FeatureHead(head_config(target.config, layers=2, initializer_range=0.2)).cuda().eval()
    eager = SpecDecoder(target, head, replace(cfg, cuda_graphs=False), max_prompt_len=16)
    graphed = SpecDecoder(target, head, cfg, max_prompt_len=16)
    first, stats = graphed.generate(PROMPTS)
    again, _ = graphed.generate(PROMPTS[::-1])
    ws = graphed._workspaces[len(PROMPTS)]
    assert ws.verify_phase.captured and ws.draft_phase.captured
    assert first == eager.generate(PROMPTS)[0] and again == eager.generate(PROMPTS[::-1])[0]
    if cfg.temperature == 0:  # the fused head (compiled element-wise kernels) against stock HF layers, fp32
        stock = SpecDecoder(target, head, replace(cfg, cuda_graphs=False, fused_forward=False), max_prompt_len=16)
        assert first == stock.generate(PROMPTS)[0]
    if cfg.temperature == 0 and cfg.acceptance_profile is None:
        assert first == [greedy_reference(target, p, cfg.max_new_tokens) for p in PROMPTS]
    assert stats.draft_time_s > 0 and stats.verify_time_s > 0


@pytest.mark.parametrize("method", ["tree", "chain"])
def test_random_eagle_head_on_the_8b_shape_runs_synthetic_bf16(method):
    """The timing configuration of a head at scale: head:random:llama-3.1-8b on a 2-layer 8B-shaped target,
    bf16, CUDA graphs, fused target forward, synthetic acceptance; a top-4 tree and a chain (its own draft phase,
    whose bf16 mask grows in place)."""
    from sdlaws.measure.models import load_model

    target, _, _ = load_model("random:llama-3.1-8b?num_hidden_layers=2", dtype="bf16", device="cuda")
    head, _, info = load_model("head:random:llama-3.1-8b?layers=1", dtype="bf16", device="cuda", seed=1)
    assert 2.4e8 < info.params < 2.6e8  # fc 2h x h + one 8B layer: EAGLE's head size
    cfg = (DecodeConfig(method="tree", num_spec_tokens=4, tree_topk=4, tree_budget=8, max_new_tokens=32,
                        acceptance_profile=((0.6, 0.2), (0.6, 0.2), (0.5, 0.2), (0.5,))) if method == "tree" else
           DecodeConfig(method="chain", num_spec_tokens=4, max_new_tokens=32,
                        acceptance_profile=((0.6,), (0.6,), (0.5,), (0.5,))))
    decoder = SpecDecoder(target, head, cfg, max_prompt_len=64)
    prompts = [list(range(1, 40))] * 8
    decoder.warmup(prompts)
    tokens, stats = decoder.generate(prompts)
    assert [len(t) for t in tokens] == [32] * 8 and stats.num_accepted_tokens > 0
    assert stats.draft_time_s > 0 and stats.verify_time_s > 0


def test_bfloat16_runs_and_counts(tiny_llama):
    target = tiny_llama(vocab=256, layers=4, hidden=128, seed=0).to("cuda", torch.bfloat16)
    draft = tiny_llama(vocab=256, layers=1, hidden=64, seed=1).to("cuda", torch.bfloat16)
    decoder = SpecDecoder(target, draft, DecodeConfig(method="tree", num_spec_tokens=4, tree_topk=4,
                                                      max_new_tokens=64), max_prompt_len=16)
    decoder.warmup(PROMPTS * 4)
    tokens, stats = decoder.generate(PROMPTS * 4)
    assert [len(t) for t in tokens] == [64] * 12
    assert sum(stats.num_accepted_per_pos) == stats.num_accepted_tokens
    assert stats.draft_time_s > 0 and stats.total_time_s > stats.verify_time_s


def test_fused_element_kernels_match_eager():
    """The Triton-compiled element-wise kernels of the fast path compute the eager functions (bf16 tolerance)."""
    from sdlaws.measure.fastpath import element_kernels

    eager, fused = element_kernels(False), element_kernels(True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for rows in (1, 7):  # shape-polymorphic: a second shape must not need another code path
        qkv = torch.randn(rows, 3, 10, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
        cos, sin = (torch.randn(rows, 3, 1, 64, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in "cs")
        for rotated in (6, 8):  # the q + k heads of two models
            torch.testing.assert_close(fused.rotary(qkv, cos, sin, rotated), eager.rotary(qkv, cos, sin, rotated),
                                       atol=2e-2, rtol=2e-2)
        x, d = (torch.randn(rows, 3, 256, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in "xd")
        w = torch.randn(256, device="cuda", dtype=torch.bfloat16, generator=gen)
        for got, want in zip(fused.add_rms_norm(x, d, w, 1e-5), eager.add_rms_norm(x, d, w, 1e-5)):
            torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
        gu = torch.randn(rows, 3, 512, device="cuda", dtype=torch.bfloat16, generator=gen)
        torch.testing.assert_close(fused.silu_mul(gu), eager.silu_mul(gu), atol=2e-2, rtol=2e-2)


def test_blocked_argmax_matches_torch_argmax_on_cuda():
    """The greedy choice's two-pass argmax on the GPU: ties (first index), inf and NaN as torch.argmax."""
    from sdlaws.measure import sampling

    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randint(0, 6, (64, 128256), device="cuda", generator=gen).to(torch.bfloat16)
    logits[1, 1000] = float("inf")
    logits[2, 5] = float("nan")
    logits[3] = float("-inf")
    assert torch.equal(sampling.argmax(logits), logits.argmax(dim=-1))

