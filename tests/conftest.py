"""Shared fixtures: tiny random Llama / GPT2 causal LMs built in memory (no download), a quick trainer, a small
corpus of standard-library source, valid ``spec`` rows and the target's greedy reference decode.

Each model fixture returns a factory, so a test picks the size and seed it needs::

    def test_x(tiny_llama):
        target = tiny_llama(vocab=32, layers=2, seed=0)

Test modules never import each other: what several of them share lives here.
"""

from __future__ import annotations

import math

import os
import shutil
import sysconfig
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402 -- importing torch does not import triton

if not torch.cuda.is_available():
    # no GPU: Triton kernels (sdlaws.measure.kernels) run on CPU through Triton's interpreter, which must be chosen
    # before triton is first imported (tests/test_kernels.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

#: Small, stable standard-library modules: real Python source for a corpus that builds in about a second.
STDLIB_MODULES = ["abc", "bisect", "colorsys", "copy", "fnmatch", "genericpath", "glob", "heapq", "keyword",
                  "linecache", "numbers", "opcode", "operator", "posixpath", "queue", "reprlib", "sched",
                  "shlex", "stat", "string", "textwrap", "this", "token", "tty", "types", "uu", "weakref",
                  "contextlib", "dataclasses", "fractions", "functools", "graphlib", "gzip", "hmac", "ipaddress",
                  "locale", "pprint", "random", "secrets", "statistics"]
#: Corpus settings that keep the tokenizer and the split fast on that source.
SMALL_CORPUS = dict(vocab_size=320, test_fraction=0.25, tokenizer_sample_bytes=300_000)


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


def _make_source_dir(root: Path) -> Path:
    """Copy the :data:`STDLIB_MODULES` that exist in this Python into ``root/src`` (plus one duplicate, one near
    duplicate, one empty file and one holding the EOS separator's text)."""
    from sdlaws.train.tokenizer import EOS_TOKEN

    src = root / "src"
    (src / "pkg").mkdir(parents=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    copied = [shutil.copy(stdlib / f"{m}.py", src / f"{m}.py")
              for m in STDLIB_MODULES if (stdlib / f"{m}.py").is_file()]
    assert len(copied) >= 20
    shutil.copy(src / "heapq.py", src / "pkg" / "heapq_copy.py")  # same content: must be deduplicated
    # one changed line: a near duplicate, removed by MinHash
    (src / "pkg" / "bisect_edited.py").write_text((src / "bisect.py").read_text() + "# edited copy\n")
    (src / "empty.py").write_text("")
    (src / "special.py").write_text(f"EOS = {EOS_TOKEN!r}  # the separator's text inside a file\n")
    return src


@pytest.fixture(scope="session")
def make_source_dir():
    """Factory: ``make_source_dir(root)`` copies standard-library source into ``root/src`` and returns it."""
    return _make_source_dir


@pytest.fixture(scope="session")
def small_corpus_config():
    """Keyword arguments of ``CorpusConfig`` for a corpus that builds in about a second (a fresh copy)."""
    return dict(SMALL_CORPUS)


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory) -> Path:
    """Standard-library source shared by the session's corpus tests (read-only)."""
    return _make_source_dir(tmp_path_factory.mktemp("corpus_src"))


@pytest.fixture(scope="session")
def small_corpus(source_dir, tmp_path_factory):
    """A corpus built once per session from :func:`source_dir` (read-only: copy it before changing it)."""
    from sdlaws.train.corpus import CorpusConfig, build_corpus

    config = CorpusConfig(sources=(str(source_dir),), **SMALL_CORPUS)
    return build_corpus(tmp_path_factory.mktemp("corpus") / "c", config, progress=False)


def _spec_row(**values) -> dict:
    """One valid ``spec`` row (chain draft, counts consistent); keyword arguments override columns."""
    from sdlaws.provenance import provenance

    row = {**provenance("cpu"), "run_id": "r", "status": "ok", "seed": 0, "target_name": "target-1b",
           "target_params": 1e9, "draft_name": "draft-a", "draft_layers": 2, "method": "chain", "num_spec_tokens": 4,
           "tree_topk": 1, "batch_size": 1, "temperature": 0.0, "prompt_set": "mt", "num_prompts": 8,
           "max_new_tokens": 64, "num_batches": 8, "num_new_tokens": 512, "num_steps": 200, "num_drafts": 200,
           "num_draft_tokens": 800, "num_accepted_tokens": 400, "prefill_time_s": 0.1, "total_time_s": 2.0}
    return {**row, **values}


@pytest.fixture(scope="session")
def spec_row():
    """Factory of one valid ``spec`` row: ``spec_row(method="tree", batch_size=8)``."""
    return _spec_row


def _greedy_reference(model, prompt: list[int], num_new: int) -> list[int]:
    """Target's greedy continuation, one full uncached forward per token."""
    import torch

    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(num_new):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt):].tolist()


@pytest.fixture(scope="session")
def greedy_reference():
    """``greedy_reference(model, prompt, num_new)``: what a lossless decoder must emit at T = 0."""
    return _greedy_reference


def within_4_sigma(successes: float, trials: float, p: float) -> bool:
    """``successes / trials`` is within 4 binomial standard deviations of ``p``."""
    return abs(successes - trials * p) <= 4 * math.sqrt(trials * p * (1 - p)) + 1e-9


def conditional_counts(stats) -> list[tuple[int, int]]:
    """(accepted at depth d, reached depth d - 1) for every depth d of a decoder's stats."""
    reached = [stats.num_drafts, *stats.num_accepted_per_pos[:-1]]
    return list(zip(stats.num_accepted_per_pos, reached))
