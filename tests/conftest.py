"""Shared fixtures: tiny random Llama / GPT2 causal LMs built in memory (no download), and a quick trainer.

Each model fixture returns a factory, so a test picks the size and seed it needs::

    def test_x(tiny_llama):
        target = tiny_llama(vocab=32, layers=2, seed=0)
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_tiny_llama(vocab: int = 64, layers: int = 2, hidden: int = 32, heads: int = 4, kv_heads: int = 2,
                    seed: int = 0, attn: str = "sdpa", init_std: float = 0.02, max_positions: int = 512):
    """Random ``LlamaForCausalLM`` in fp32 on CPU, eval mode.

    ``init_std`` is transformers' ``initializer_range``; larger values give peakier next-token distributions.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=max_positions, initializer_range=init_std,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


def make_tiny_gpt2(vocab: int = 64, layers: int = 2, hidden: int = 32, heads: int = 4, seed: int = 0,
                   attn: str = "sdpa", init_std: float = 0.02, max_positions: int = 256):
    """Random ``GPT2LMHeadModel`` (absolute position embeddings) in fp32 on CPU, eval mode."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_positions,
                        initializer_range=init_std, bos_token_id=None, eos_token_id=None)
    config._attn_implementation = attn
    return GPT2LMHeadModel(config).eval()


def train_lm(model, stream, *, steps: int, seq_len: int = 32, batch_size: int = 32, lr: float = 3e-3,
             seed: int = 0):
    """Train ``model`` for ``steps`` Adam steps on random windows of the 1-D token tensor ``stream``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch_size,), generator=gen)
        batch = torch.stack([stream[s:s + seq_len + 1] for s in starts.tolist()])
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def markov_stream(vocab: int, length: int, *, noise: float, seed: int = 0, rule_seed: int = 0):
    """First-order Markov token stream: ``x_t = rule[x_{t-1}]`` with probability ``1 - noise``, else uniform.

    ``rule`` is a random permutation drawn with ``rule_seed``; ``seed`` draws the noise.
    """
    import torch

    rule = torch.randperm(vocab, generator=torch.Generator().manual_seed(rule_seed))
    gen = torch.Generator().manual_seed(seed)
    random = torch.randint(0, vocab, (length,), generator=gen)
    keep = (torch.rand(length, generator=gen) >= noise).tolist()
    out = random.clone()
    for t in range(1, length):
        if keep[t]:
            out[t] = rule[out[t - 1]]
    return out


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tiny-model work on one CPU thread (much faster than 2 contended OpenMP threads).

    Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``; the thread count is restored after.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_llama():
    """Factory for tiny random Llama models: ``tiny_llama(vocab=..., layers=..., seed=...)``."""
    return make_tiny_llama


@pytest.fixture(scope="session")
def tiny_gpt2():
    """Factory for tiny random GPT2 models: ``tiny_gpt2(vocab=..., layers=..., seed=...)``."""
    return make_tiny_gpt2


@pytest.fixture(scope="session")
def trained_pair():
    """(target, draft, stream): tiny Llamas trained for a few seconds on a Markov stream (vocab 32).

    The target (2 layers, width 64) learns the stream's rule; the draft (1 layer, width 32) is trained on the
    same stream mixed with one following another rule, so its argmax agrees with the target's only part of
    the time and greedy acceptance lies well inside (0, 1).
    """
    import torch

    stream = markov_stream(32, 10_000, noise=0.2, seed=0)
    other = markov_stream(32, 10_000, noise=0.2, seed=1, rule_seed=1)
    target = train_lm(make_tiny_llama(vocab=32, layers=2, hidden=64, seed=1), stream, steps=60, seq_len=16, seed=1)
    draft = train_lm(make_tiny_llama(vocab=32, layers=1, hidden=32, seed=2), torch.cat([stream, other]),
                     steps=40, seq_len=16, seed=2)
    return target, draft, stream
