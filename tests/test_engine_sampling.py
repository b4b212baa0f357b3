"""Sampling (temperature > 0) is lossless: speculative samples follow the target's own distribution.

Small vocabulary (8 tokens), many sequences from one prompt. The exact distribution of each of the first
generated tokens, and of the pair (2nd, 3rd), is computed by enumerating every prefix through the target; a
chi-square test must not tell the engine's samples from it (Bonferroni-safe threshold), while the same test
must catch a deliberately wrong verifier, so the test can fail. The engine is seeded, so results are
deterministic.
"""

import pytest
import torch
from sampling_helpers import CASES, NUM_NEW, P_MIN, VOCAB, draw, exact_prefix_probs, p_values

from sdlaws.measure import sampling, tree

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def pair(tiny_llama):
    """A target and a clearly different draft (different seed and size, peaked-ish logits)."""
    target = tiny_llama(vocab=VOCAB, layers=2, hidden=32, seed=0, init_std=0.3)
    draft = tiny_llama(vocab=VOCAB, layers=1, hidden=16, seed=5, init_std=0.3)
    return target, draft


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
