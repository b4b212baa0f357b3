"""Continuous batching (:meth:`SpecDecoder.serve`): a finished row is refilled with the next waiting prompt.

At temperature 0 every sequence must come out exactly as under static batching and as the target's own greedy
output, whatever its batch-mates and whichever row it lands in (AR, chain, tree, LM draft and feature head);
the per-sequence counters must be each prompt's own (equal to the static ones), and the batch must finish in no
more decode steps than static batches of the same prompts. At T > 0 the samples must still follow the target's
distribution after refills; synthetic acceptance must still follow its profile.
"""

import numpy as np
import pytest
from conftest import conditional_counts, within_4_sigma
from sampling_helpers import CASES, NUM_NEW, P_MIN, PROMPT, exact_prefix_probs, p_values
from test_engine_heads import random_head

from sdlaws.errors import ConfigError
from sdlaws.measure.engine import DecodeConfig, SpecDecoder

pytestmark = pytest.mark.usefixtures("single_thread")

MAX_NEW = 12
# 6 prompts of different lengths: batches of 2 and 3 divide them (static rows then have no cyclic repeats)
PROMPTS = [[3, 1, 4, 1, 5, 9, 2], [6, 5], [3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4], [1], [2, 7, 1, 8, 2, 8],
           [9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]

CONFIGS = {
    "ar": DecodeConfig(method="ar", max_new_tokens=MAX_NEW),
    "chain": DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=MAX_NEW),
    "tree": DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=2, max_new_tokens=MAX_NEW),
    "tree-budget": DecodeConfig(method="tree", num_spec_tokens=4, tree_topk=3, tree_budget=5, max_new_tokens=MAX_NEW),
}


def static(decoder, prompts, batch_size):
    """Tokens and per-sequence counters of static batches of ``batch_size`` (``prompts`` divides into them)."""
    tokens, drafts, accepted, steps = [], [], [], []
    for i in range(0, len(prompts), batch_size):
        out, stats = decoder.generate(prompts[i:i + batch_size])
        tokens += out
        drafts += stats.num_drafts_per_seq
        accepted += stats.num_accepted_per_seq
        steps += stats.num_steps_per_seq
    return tokens, (drafts, accepted, steps)


def check_same_as_static(decoder, prompts, batch_size, expected):
    """serve() gives the target's greedy tokens and the static per-sequence counters, in fewer steps."""
    tokens, stats = decoder.serve(prompts, batch_size)
    static_tokens, static_counts = static(decoder, prompts, batch_size)
    assert tokens == static_tokens == expected
    assert (stats.num_drafts_per_seq, stats.num_accepted_per_seq, stats.num_steps_per_seq) == static_counts
    assert stats.num_drafts == sum(stats.num_drafts_per_seq)
    assert stats.num_accepted_tokens == sum(stats.num_accepted_per_seq) == sum(stats.num_accepted_per_pos)
    assert stats.num_batches == -(-len(prompts) // batch_size)
    assert stats.num_new_tokens == len(prompts) * MAX_NEW
    assert max(stats.num_steps_per_seq) <= stats.num_steps <= sum(stats.num_steps_per_seq)
    return stats


@pytest.mark.parametrize("batch_size", [2, 3])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_lm_draft_matches_static_and_target_greedy(name, batch_size, tiny_llama, greedy_reference):
    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2)
    draft = tiny_llama(vocab=64, layers=1, seed=1, init_std=0.2)
    decoder = SpecDecoder(target, draft, CONFIGS[name], max_prompt_len=16)
    check_same_as_static(decoder, PROMPTS, batch_size, [greedy_reference(target, p, MAX_NEW) for p in PROMPTS])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_hugging_face_forward_matches_static_and_target_greedy(attn, tiny_gpt2, greedy_reference):
    """GPT2 runs through its Hugging Face forward (no fused fast path): the row views of the cache go through
    transformers' own cache calls."""
    target = tiny_gpt2(vocab=64, layers=2, seed=0, attn=attn, init_std=0.2)
    draft = tiny_gpt2(vocab=64, layers=1, seed=1, attn=attn, init_std=0.2)
    decoder = SpecDecoder(target, draft, CONFIGS["tree"], max_prompt_len=16)
    check_same_as_static(decoder, PROMPTS, 3, [greedy_reference(target, p, MAX_NEW) for p in PROMPTS])


@pytest.mark.parametrize("batch_size", [2, 3])
@pytest.mark.parametrize("name", ["chain", "tree"])
def test_head_draft_matches_static_and_target_greedy(name, batch_size, tiny_llama, greedy_reference):
    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2)
    decoder = SpecDecoder(target, random_head(target), CONFIGS[name], max_prompt_len=16)
    check_same_as_static(decoder, PROMPTS, batch_size, [greedy_reference(target, p, MAX_NEW) for p in PROMPTS])


@pytest.mark.parametrize("name", ["chain", "tree"])
def test_partial_acceptance_refills_rows_at_different_steps(name, trained_pair, greedy_reference):
    """A trained pair accepts part of the drafts, so rows finish at different steps and refills interleave;
    continuous batching then takes fewer decode steps than static batches of the same prompts."""
    target, draft, stream = trained_pair
    prompts = [stream[100 * i: 100 * i + 3 + 2 * i].tolist() for i in range(6)]
    cfg = DecodeConfig(method=name, num_spec_tokens=4, tree_topk=3 if name == "tree" else 1, max_new_tokens=MAX_NEW)
    decoder = SpecDecoder(target, draft, cfg, max_prompt_len=16)
    stats = check_same_as_static(decoder, prompts, 2, [greedy_reference(target, p, MAX_NEW) for p in prompts])
    assert len(set(stats.num_steps_per_seq)) > 1  # rows did finish at different steps
    static_steps = sum(decoder.generate(prompts[i:i + 2])[1].num_steps for i in range(0, 6, 2))
    assert stats.num_steps <= static_steps


def test_fewer_prompts_than_rows_and_one_new_token(tiny_llama, greedy_reference):
    """Fewer prompts than rows use one row each; with one new token every prompt is done at its prefill."""
    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2)
    draft = tiny_llama(vocab=64, layers=1, seed=1, init_std=0.2)
    decoder = SpecDecoder(target, draft, CONFIGS["chain"], max_prompt_len=16)
    tokens, stats = decoder.serve(PROMPTS[:2], 4)
    assert tokens == [greedy_reference(target, p, MAX_NEW) for p in PROMPTS[:2]] and stats.num_batches == 1
    one = SpecDecoder(target, draft, DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=1),
                      max_prompt_len=16)
    tokens, stats = one.serve(PROMPTS, 2)
    assert tokens == [greedy_reference(target, p, 1) for p in PROMPTS] and stats.num_steps == 0
    with pytest.raises(ConfigError, match="batch_size"):
        one.serve(PROMPTS, 0)


def test_samples_follow_target_after_refills(tiny_llama):
    """T > 0: the chi-square test of test_engine_sampling on samples of which most come from refilled rows."""
    target = tiny_llama(vocab=8, layers=2, hidden=32, seed=0, init_std=0.3)
    draft = tiny_llama(vocab=8, layers=1, hidden=16, seed=5, init_std=0.3)
    cfg = CASES["chain-T1"]
    tokens, _ = SpecDecoder(target, draft, cfg, max_prompt_len=len(PROMPT)).serve([PROMPT] * 1500, 100)
    pvals = p_values(np.array(tokens), exact_prefix_probs(target, cfg.temperature, NUM_NEW))
    assert min(pvals.values()) > P_MIN, pvals


def test_synthetic_acceptance_follows_the_profile(tiny_llama):
    q = ((0.8,), (0.5,), (0.9,))
    pair = tiny_llama(vocab=64, layers=1, seed=0), tiny_llama(vocab=64, layers=1, seed=1)
    cfg = DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=40, acceptance_profile=q)
    _, stats = SpecDecoder(*pair, cfg, max_prompt_len=16).serve(PROMPTS * 4, 3)
    counts = conditional_counts(stats)
    assert counts[-1][1] > 150
    assert all(within_4_sigma(a, n, row[0]) for (a, n), row in zip(counts, q))
    assert stats.num_accepted_tokens == sum(stats.num_accepted_per_seq)


def _spy_refills(monkeypatch) -> list[list[int]]:
    """The rows of every refill call from now on."""
    from sdlaws.measure import engine

    calls, real = [], engine._Workspace.refill

    def spy(ws, rows, prompts):
        calls.append(list(rows))
        return real(ws, rows, prompts)

    monkeypatch.setattr(engine._Workspace, "refill", spy)
    return calls


def test_rows_done_at_the_same_step_are_refilled_by_one_prefill(tiny_llama, greedy_reference, monkeypatch):
    """AR rows all finish at the same step: each wave of waiting prompts is one prefill of every row, not one
    prefill per row (a one-row prefill per finished row cost continuous batching its throughput on a GPU)."""
    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2)
    decoder = SpecDecoder(target, None, CONFIGS["ar"], max_prompt_len=16)
    decoder.warmup(PROMPTS, 2)
    calls = _spy_refills(monkeypatch)
    check_same_as_static(decoder, PROMPTS, 2, [greedy_reference(target, p, MAX_NEW) for p in PROMPTS])
    assert calls == [[0, 1], [0, 1]]


def test_rows_refilled_together_need_not_be_neighbours(trained_pair, greedy_reference, monkeypatch):
    """Rows that finish together anywhere in the batch (here rows that are not adjacent) share one prefill and
    still decode exactly the target's greedy tokens."""
    target, draft, stream = trained_pair
    prompts = [stream[53 * i: 53 * i + 3 + i % 5].tolist() for i in range(12)]  # found to refill rows 0 and 3 at once
    cfg = DecodeConfig(method="chain", num_spec_tokens=4, max_new_tokens=MAX_NEW)
    decoder = SpecDecoder(target, draft, cfg, max_prompt_len=24)
    calls = _spy_refills(monkeypatch)
    check_same_as_static(decoder, prompts, 4, [greedy_reference(target, p, MAX_NEW) for p in prompts])
    assert sum(map(len, calls)) == 8 and any(len(c) > 1 and c != list(range(c[0], c[-1] + 1)) for c in calls), calls
