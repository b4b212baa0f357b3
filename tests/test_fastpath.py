"""The fused fast path computes the same logits as the Hugging Face forward it replaces."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sdlaws.measure.fastpath import FastDecoderLM, supports

L = 32  # KV buffer slots


def _hf_reference(model, ids):
    # plain causal forward without cache: the ground truth for a contiguous prompt
    return model(input_ids=ids).logits


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


@pytest.mark.parametrize("model", _models(), ids=["llama3-rope-gqa", "qwen2-bias"])
def test_prefill_then_decode_matches_hf(model):
    assert supports(model, L)
    fast = FastDecoderLM(model, max_batch_size=2, max_cache_len=L)
    ids = torch.randint(0, 97, (2, 9))
    ref = _hf_reference(model, ids)
    n = 6  # prefill 6 tokens, then 3 single-token steps through the cache
    causal = torch.tril(torch.ones(n, L, dtype=torch.bool))
    out = fast(input_ids=ids[:, :n], position_ids=torch.arange(n).expand(2, n),
               attention_mask=causal.expand(2, 1, n, L), cache_position=torch.arange(n)).logits
    torch.testing.assert_close(out, ref[:, :n], atol=1e-4, rtol=1e-4)
    for t in range(n, 9):
        mask = torch.zeros(2, 1, 1, L, dtype=torch.bool)
        mask[..., : t + 1] = True
        step = fast(input_ids=ids[:, t:t + 1], position_ids=torch.full((2, 1), t), attention_mask=mask,
                    cache_position=torch.tensor([t])).logits
        torch.testing.assert_close(step[:, 0], ref[:, t], atol=1e-4, rtol=1e-4)


def test_masked_hole_is_ignored():
    """A slot the mask excludes (a rejected draft token) does not change the result."""
    model = _models()[0]
    fast = FastDecoderLM(model, max_batch_size=1, max_cache_len=L)
    ids = torch.randint(0, 97, (1, 5))
    ref = _hf_reference(model, ids)[:, -1]
    junk = torch.tensor([[7]])
    seq = torch.cat([ids[:, :4], junk, ids[:, 4:]], dim=1)  # slot 4 holds a rejected token
    valid = torch.tensor([True, True, True, True, False, True])
    mask = (torch.tril(torch.ones(6, 6, dtype=torch.bool)) & valid)[None, None]
    mask = torch.nn.functional.pad(mask, (0, L - 6))
    pos = torch.tensor([[0, 1, 2, 3, 4, 4]])
    out = fast(input_ids=seq, position_ids=pos, attention_mask=mask, cache_position=torch.arange(6)).logits
    torch.testing.assert_close(out[:, -1], ref, atol=1e-4, rtol=1e-4)
