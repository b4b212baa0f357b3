"""Sampling (temperature > 0) is lossless: speculative samples follow the target's own distribution.

Small vocabulary (8 tokens), many sequences from one prompt. The exact distribution of each of the first
generated tokens, and of the pair (2nd, 3rd), is computed by enumerating every prefix through the target; a
chi-square test must not tell the engine's samples from it (Bonferroni-safe threshold), while the same test
must catch a deliberately wrong verifier, so the test can fail. The engine is seeded, so results are
deterministic.
"""

import numpy as np
import pytest
import torch
from scipy import stats as scistats

from sdlaws.measure import sampling, tree
from sdlaws.measure.engine import DecodeConfig, SpecDecoder

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = 8
PROMPT = [1, 2, 3]
NUM_NEW = 4  # token 1 comes from prefill; tokens 2..4 from the first speculative step(s)
NUM_SAMPLES = 3000
BATCH = 1000
P_MIN = 1e-3  # ~6 tests per configuration: a false alarm has probability < 1%


@pytest.fixture(scope="module")
def pair(tiny_llama):
    """A target and a clearly different draft (different seed and size, peaked-ish logits)."""
    target = tiny_llama(vocab=VOCAB, layers=2, hidden=32, seed=0, init_std=0.3)
    draft = tiny_llama(vocab=VOCAB, layers=1, hidden=16, seed=5, init_std=0.3)
    return target, draft


def exact_prefix_probs(model, temperature: float, length: int) -> np.ndarray:
    """``P(x_1..x_length)`` under the target at ``temperature``, shape ``(VOCAB,) * length``."""
    joint = torch.ones(1)
    prefixes = [[]]
    with torch.no_grad():
        for _ in range(length):
            ids = torch.tensor([PROMPT + p for p in prefixes])
            step = torch.softmax(model(input_ids=ids).logits[:, -1].double() / temperature, dim=-1)
            joint = (joint[:, None] * step).flatten()
            prefixes = [p + [v] for p in prefixes for v in range(VOCAB)]
    return joint.numpy().reshape((VOCAB,) * length)


def draw(target, draft, cfg: DecodeConfig) -> np.ndarray:
    """``(NUM_SAMPLES, NUM_NEW)`` engine samples from PROMPT."""
    decoder = SpecDecoder(target, draft, cfg, max_prompt_len=len(PROMPT))
    rows = []
    for _ in range(NUM_SAMPLES // BATCH):
        tokens, _ = decoder.generate([PROMPT] * BATCH)
        rows.extend(tokens)
    return np.array(rows)


def chi_square_p(observed_cells: np.ndarray, expected_prob: np.ndarray) -> float:
    """Chi-square goodness-of-fit p-value; cells with expected count < 5 are pooled into one."""
    counts = np.bincount(observed_cells, minlength=expected_prob.size).astype(float)
    expected = expected_prob.ravel() * counts.sum()
    small = expected < 5
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return float(scistats.chisquare(counts, expected * counts.sum() / expected.sum()).pvalue)


def p_values(samples: np.ndarray, joint: np.ndarray) -> dict[str, float]:
    """p-values of the marginals of tokens 1..NUM_NEW and of the pair (token 2, token 3)."""
    out = {}
    for pos in range(NUM_NEW):
        marginal = joint.sum(axis=tuple(a for a in range(NUM_NEW) if a != pos))
        out[f"token{pos + 1}"] = chi_square_p(samples[:, pos], marginal)
    pair = joint.sum(axis=(0, 3))
    out["tokens2-3"] = chi_square_p(samples[:, 1] * VOCAB + samples[:, 2], pair)
    return out


CASES = {
    "chain-T1": DecodeConfig(method="chain", num_spec_tokens=3, temperature=1.0, max_new_tokens=NUM_NEW),
    "chain-T0.6": DecodeConfig(method="chain", num_spec_tokens=2, temperature=0.6, max_new_tokens=NUM_NEW),
    "tree-T1": DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=2, temperature=1.0, max_new_tokens=NUM_NEW),
}


@pytest.mark.parametrize("name", list(CASES))
def test_speculative_samples_follow_target(name, pair):
    target, draft = pair
    cfg = CASES[name]
    pvals = p_values(draw(target, draft, cfg), exact_prefix_probs(target, cfg.temperature, NUM_NEW))
    assert min(pvals.values()) > P_MIN, pvals


def _accept_every_draft(p, q, draft_tokens, u):
    """Wrong chain verifier: keeps every drafted token (the output then follows the draft, not the target)."""
    gamma = draft_tokens.shape[1]
    return torch.full_like(draft_tokens[:, 0], gamma), sampling.sample(p[:, gamma], u[:, gamma])


_walk = tree.walk


def _follow_top_child(choice, token, depth, parent, max_depth):
    """Wrong tree verifier: walks the draft's top-ranked children without asking the target."""
    n = token.shape[1]
    index = torch.where(depth > 0, torch.arange(n), n)  # the root (its own "parent") must not count as a child
    first_child = torch.zeros_like(choice)
    first_child.scatter_reduce_(1, parent, index, "amin", include_self=False)  # best-ranked child of each node
    return _walk(token.gather(1, first_child), token, depth, parent, max_depth)


@pytest.mark.parametrize("name,module,attr,wrong", [
    ("chain-T1", sampling, "leviathan_accept", _accept_every_draft),
    ("tree-T1", tree, "walk", _follow_top_child),
])
def test_chi_square_detects_a_wrong_verifier(name, module, attr, wrong, pair, monkeypatch):
    target, draft = pair
    cfg = CASES[name]
    monkeypatch.setattr(module, attr, wrong)
    pvals = p_values(draw(target, draft, cfg), exact_prefix_probs(target, cfg.temperature, NUM_NEW))
    assert min(pvals.values()) < P_MIN, pvals
