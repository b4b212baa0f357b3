"""The fused fast path computes the same logits as the Hugging Face forward it replaces."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sdlaws.measure.fastpath import FastDecoderLM, supports
from sdlaws.measure.kvcache import SlotCache

S = 32  # cache slots


def _models():
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
                                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                                         tie_word_embeddings=True))
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    return [llama.eval(), qwen.eval()]


def _mask(allowed: torch.Tensor) -> torch.Tensor:
    """Bool (B, n, S) -> additive float (B, 1, n, S), the engine's mask format."""
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]


def _step(fast, cache, ids, slots, positions, allowed, keep=0):
    cache.write_slots = slots
    return fast(input_ids=ids, position_ids=positions, attention_mask=_mask(allowed), past_key_values=cache,
                logits_to_keep=keep).logits


@pytest.mark.parametrize("model", _models(), ids=["llama3-rope-gqa", "qwen2-bias"])
def test_prefill_then_decode_matches_hf(model):
    assert supports(model, S)
    fast, cache = FastDecoderLM(model), SlotCache(model.config.num_hidden_layers, S)
    ids = torch.randint(0, 97, (2, 9))
    ref = model(input_ids=ids).logits  # plain causal forward without cache: the ground truth
    n = 6  # prefill 6 tokens, then 3 single-token steps through the cache
    allowed = (torch.arange(S) <= torch.arange(n)[:, None]).expand(2, n, S)
    out = _step(fast, cache, ids[:, :n], torch.arange(n).expand(2, n), torch.arange(n).expand(2, n), allowed)
    torch.testing.assert_close(out, ref[:, :n], atol=1e-4, rtol=1e-4)
    for t in range(n, 9):
        allowed = (torch.arange(S) <= t).expand(2, 1, S)
        step = _step(fast, cache, ids[:, t:t + 1], torch.full((2, 1), t), torch.full((2, 1), t), allowed, keep=1)
        torch.testing.assert_close(step[:, 0], ref[:, t], atol=1e-4, rtol=1e-4)


def test_masked_hole_is_ignored():
    """A slot the mask excludes (a rejected draft token) does not change the result."""
    model = _models()[0]
    fast, cache = FastDecoderLM(model), SlotCache(model.config.num_hidden_layers, S)
    ids = torch.randint(0, 97, (1, 5))
    ref = model(input_ids=ids).logits[:, -1]
    seq = torch.cat([ids[:, :4], torch.tensor([[7]]), ids[:, 4:]], dim=1)  # slot 4 holds a rejected token
    valid = torch.tensor([True, True, True, True, False, True] + [False] * (S - 6))
    allowed = (torch.arange(S) <= torch.arange(6)[:, None]) & valid
    out = _step(fast, cache, seq, torch.arange(6)[None], torch.tensor([[0, 1, 2, 3, 4, 4]]), allowed[None])
    torch.testing.assert_close(out[:, -1], ref, atol=1e-4, rtol=1e-4)


def test_fused_kernels_allow_a_sweep_of_specialisations():
    """Compiling the fused element-wise kernels raises dynamo's per-function recompile limit, so a sweep over
    several model widths does not hit FailOnRecompileLimitHit (compiling itself is lazy: nothing runs here)."""
    import torch

    from sdlaws.measure.fastpath import RECOMPILE_LIMIT, element_kernels

    element_kernels.cache_clear()
    torch._dynamo.config.recompile_limit = 8
    try:
        element_kernels(True)
        assert torch._dynamo.config.recompile_limit >= RECOMPILE_LIMIT
    finally:
        element_kernels.cache_clear()


def test_kept_logits_read_the_lm_head_once():
    """``logits_to_keep`` of a multi-token pass (the draft's re-read) hands the LM head a contiguous input: the
    strided slice it cuts would run as a batched matmul over the expanded weight, one full weight read per row
    (on an H200 that cost the 1B-shape draft 0.12 ms per row and step; ``benchmarks/profile_phases.py``)."""
    model = _models()[0]
    fast, cache = FastDecoderLM(model), SlotCache(model.config.num_hidden_layers, S)
    inputs, logits = [], fast._logits
    fast._logits = lambda h: inputs.append(h) or logits(h)
    allowed = (torch.arange(S) <= torch.arange(3)[:, None]).expand(4, 3, S)
    cache.write_slots = torch.arange(3).expand(4, 3)
    out = fast(input_ids=torch.randint(0, 97, (4, 3)), position_ids=torch.arange(3).expand(4, 3),
               attention_mask=_mask(allowed), past_key_values=cache, logits_to_keep=1).logits
    assert out.shape == (4, 1, 97) and inputs[0].shape == (4, 1, 64)
    assert inputs[0].is_contiguous()
