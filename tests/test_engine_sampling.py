"""Sampling (temperature > 0) is lossless: speculative samples follow the target's own distribution.

Small vocabulary (8 tokens), many sequences from one prompt. The exact distribution of each of the first
generated tokens, and of the pair (2nd, 3rd), is computed by enumerating every prefix through the target; a
chi-square test must not tell the engine's samples from it (Bonferroni-safe threshold), while the same test
must catch a deliberately wrong verifier, so the test can fail. The engine is seeded, so results are
deterministic.

Those first tokens come from one verify step that never reaches the bonus token of a fully accepted chain, so a
second family follows 9 tokens (two or more steps) of 4 different prompts decoded in one batch of 2000 rows: each
token's exact conditional given its prefix comes from one teacher-forced target forward, and the randomised
probability integral transforms of the tokens, Uniform(0, 1) and independent for a lossless decoder, get a
chi-square test per position and one over the bonus tokens of fully accepted drafts. The draft is close to the
target (about 20% of chain steps and 30% of tree steps accept their whole path) yet never equal to it; a decoder
that draws the bonus from the target's distribution one position too early must be rejected.
"""

import numpy as np
import pytest
import torch
from sampling_helpers import (CASES, NUM_NEW, P_MIN, STEP_ALPHA, STEP_CASES, VOCAB, draw, draw_steps,
                              exact_prefix_probs, p_values, randomized_pit, step_p_values, target_conditionals)

from sdlaws.measure import engine, sampling, tree

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


@pytest.fixture(scope="module")
def near_pair(pair, tiny_llama):
    """The target and a draft near it: the target's weights plus 15% noise, so the two disagree in every context
    (rejections, residual draws), with its logits halved (a flatter, tempered draft) so that a good share of the
    drafts is still accepted in full and the bonus path runs often (about 20% of chain steps, 30% of tree steps).
    """
    target = pair[0]
    draft = tiny_llama(vocab=VOCAB, layers=2, hidden=32, seed=0, init_std=0.3)  # a fresh copy of the target
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for weight in (w for w in draft.parameters() if w.dim() > 1):
            weight.add_(0.15 * weight.std() * torch.randn(weight.shape, generator=gen))
        draft.lm_head.weight.mul_(0.5)
    return target, draft


def _step_p_values(near_pair, name, monkeypatch) -> tuple[dict[str, float], np.ndarray]:
    """p-values of every generated position and of the bonus tokens (see ``step_p_values``), and the bonus mask."""
    target, draft = near_pair
    cfg = STEP_CASES[name]
    tokens, bonus = draw_steps(target, draft, cfg, monkeypatch)
    pit = randomized_pit(target_conditionals(target, tokens, cfg.temperature), tokens, seed=0)
    return step_p_values(pit, bonus), bonus


@pytest.mark.parametrize("name", list(STEP_CASES))
def test_every_token_of_several_steps_follows_the_target_conditional(name, near_pair, monkeypatch):
    """Each token given its prefix, over >= 2 verify steps and 4 prompts in one batch, is the target's sample; the
    bonus tokens after fully accepted drafts (in the first and in later steps) are tested on their own too."""
    pvals, bonus = _step_p_values(near_pair, name, monkeypatch)
    depth = STEP_CASES[name].num_spec_tokens
    assert bonus[:, 1 + depth].sum() > 200 and bonus[:, 2 + depth:].sum() > 200, bonus.sum(axis=0)
    assert min(pvals.values()) > STEP_ALPHA, pvals


def _bonus_from_parent(real):
    """Wrong target forward: every deepest block node gets its parent's logits, so the bonus after a fully
    accepted draft is drawn from the target's distribution at position gamma - 1 instead of gamma (those logits
    are used for nothing else: the deepest nodes have no children to verify)."""

    def forward(ws, cache, ids, positions, slots, mask, keep_last=0):
        logits, features = real(ws, cache, ids, positions, slots, mask, keep_last)
        if keep_last:  # prefill: no draft block
            return logits, features
        deepest = (ws.block_depth == ws.depth)[:, :, None]
        parent = logits.gather(1, ws.block_parent[:, :, None].expand_as(logits))
        return torch.where(deepest, parent, logits), features

    return forward


@pytest.mark.parametrize("name", list(STEP_CASES))
def test_step_test_detects_a_bonus_from_the_wrong_position(name, near_pair, monkeypatch):
    monkeypatch.setattr(engine._Workspace, "_target_forward", _bonus_from_parent(engine._Workspace._target_forward))
    pvals, _ = _step_p_values(near_pair, name, monkeypatch)
    assert pvals["bonus"] < STEP_ALPHA, pvals


@pytest.mark.parametrize("vocab", [128256, 32000, 151936, 50257, 300])
@pytest.mark.parametrize("lead", [(3,), (2, 5)])
def test_blocked_argmax_is_torch_argmax_including_ties(vocab, lead):
    gen = torch.Generator().manual_seed(vocab)
    # few distinct bf16 values: many rows have their maximum at several places, some across vocabulary blocks
    logits = torch.randint(0, 6, (*lead, vocab), generator=gen).to(torch.bfloat16)
    logits[..., -1] = 5  # a maximum in the last block too
    assert torch.equal(sampling.argmax(logits), logits.argmax(dim=-1))
    smooth = torch.randn((*lead, vocab), generator=gen)
    assert torch.equal(sampling.argmax(smooth), smooth.argmax(dim=-1))
    assert torch.equal(sampling.argmax(smooth[..., :1].expand(*lead, vocab)), torch.zeros(lead, dtype=torch.long))
