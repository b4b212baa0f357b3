"""Unit tests of the engine's parts: sampling rules, tree bookkeeping, slot cache, config errors, stats."""

import numpy as np
import pytest
import torch
from scipy import stats as scistats

from sdlaws import schema
from sdlaws.errors import ConfigError
from sdlaws.measure import sampling, tree
from sdlaws.measure.engine import DecodeConfig, DecodeStats, SpecDecoder
from sdlaws.measure.kvcache import SlotCache, block_mask

pytestmark = pytest.mark.usefixtures("single_thread")


def test_inverse_cdf_sample_matches_weights_and_skips_zeros():
    weights = torch.tensor([0.0, 2.0, 0.0, 1.0, 5.0, 0.0])
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    draws = sampling.sample(weights.expand(len(u), -1), u).numpy()
    counts = np.bincount(draws, minlength=6)
    assert counts[[0, 2, 5]].sum() == 0
    assert sampling.sample(weights[None], torch.zeros(1)).item() == 1  # u = 0 never picks a zero-weight token
    expected = (weights / weights.sum()).numpy()[[1, 3, 4]] * len(u)
    assert scistats.chisquare(counts[[1, 3, 4]], expected).pvalue > 1e-3


def test_leviathan_accept_emits_exactly_the_target_distribution():
    """First emitted token (draft 1 if kept, else the replacement) ~ p_1, for any q (Leviathan Thm. A.1)."""
    gen = torch.Generator().manual_seed(1)
    rows, vocab, gamma = 100_000, 5, 2
    p = torch.softmax(torch.randn(gamma + 1, vocab, generator=gen) * 2, -1).expand(rows, -1, -1)
    q = torch.softmax(torch.randn(gamma + 1, vocab, generator=gen) * 2, -1)
    q[gamma] = 0
    q = q.expand(rows, -1, -1)
    draft = torch.stack([sampling.sample(q[:, i], torch.rand(rows, generator=gen)) for i in range(gamma)], 1)
    accepted, bonus = sampling.leviathan_accept(p, q, draft, torch.rand(rows, gamma + 1, generator=gen))
    first = torch.where(accepted > 0, draft[:, 0], bonus).numpy()
    counts = np.bincount(first, minlength=vocab)
    assert scistats.chisquare(counts, p[0, 0].numpy() * rows).pvalue > 1e-3
    full_rate = (accepted == gamma).double().mean().item()  # P(all kept) = prod_i sum_x min(p_i, q_i) (i.i.d.)
    assert full_rate == pytest.approx(float(torch.minimum(p[0, :gamma], q[0, :gamma]).sum(-1).prod()), abs=0.01)


def test_select_is_ancestor_closed_under_ties():
    shape = tree.TreeShape(topk=2, depth=3, budget=3)
    # pool: depth 1 = [0, 1]; depth 2 = [2..5] (children of frontier 0, 1); depth 3 = [6..9]
    score = torch.tensor([[0.0, -5.0, 0.0, -9.0, -6.0, -9.0, 0.0, -9.0, -9.0, -9.0]])  # ties along a path
    chosen = tree.select(score, shape.budget)
    assert chosen.tolist() == [[0, 2, 6]]  # parent before child on equal scores


def test_walk_follows_the_target_choice():
    # block: root(0) -> a(1), b(2); a -> c(3)
    token = torch.tensor([[9, 4, 5, 7]])
    depth = torch.tensor([[0, 1, 1, 2]])
    parent = torch.tensor([[0, 0, 0, 1]])
    for choice, expect in [([4, 7, 0, 1], [0, 1, 3]), ([5, 7, 0, 1], [0, 2]), ([6, 7, 0, 1], [0])]:
        taken = tree.walk(torch.tensor([choice]), token, depth, parent, max_depth=2)
        assert torch.nonzero(taken[0]).flatten().tolist() == expect
        path = tree.accepted_path(taken, depth, max_depth=2)
        assert path[0, : len(expect)].tolist() == expect


def test_block_mask_and_slot_cache_move():
    mask = block_mask(torch.tensor([1]), torch.tensor([3]), torch.tensor([4]),
                      torch.tensor([[True, False], [True, True]]), cache_len=7, dtype=torch.float32)
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [[0, 1, 1, 0, 1, 0, 0], [0, 1, 1, 0, 1, 1, 0]]
    cache = SlotCache(num_layers=1, max_cache_len=5)
    cache.write_slots = torch.tensor([[0, 1, 2, 3, 4]])
    values = torch.arange(5.0).view(1, 1, 5, 1)
    cache.update(values, values.clone(), 0)
    cache.move(torch.tensor([[3, 2]]), torch.tensor([[1, 2]]))  # 3 -> 1; 2 -> 2 is a no-op
    assert cache.layers[0].keys.flatten().tolist() == [0.0, 3.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("kwargs,draft,message", [
    (dict(method="chain", num_spec_tokens=0), True, "num_spec_tokens"),
    (dict(method="tree", tree_topk=0), True, "tree_topk"),
    (dict(method="tree", num_spec_tokens=2, tree_topk=2, tree_budget=5), True, "tree_budget"),
    (dict(method="chain", tree_topk=2), True, "tree_topk"),
    (dict(method="chain"), False, "draft"),
    (dict(method="ar", temperature=-1.0), False, "temperature"),
    (dict(method="beam"), False, "method"),
    (dict(method="ar", max_new_tokens=1000), False, "max_position_embeddings"),
])
def test_impossible_configs_raise_config_error(kwargs, draft, message, tiny_llama):
    target = tiny_llama(vocab=16, layers=1)
    with pytest.raises(ConfigError, match=message):
        SpecDecoder(target, tiny_llama(vocab=16, layers=1) if draft else None, DecodeConfig(**kwargs),
                    max_prompt_len=8)


def test_vocab_mismatch_and_bad_prompts_raise(tiny_llama):
    target = tiny_llama(vocab=16, layers=1)
    flash = tiny_llama(vocab=16, layers=1)
    flash.config._attn_implementation = "flash_attention_2"  # as if loaded with it (needs a GPU to load for real)
    with pytest.raises(ConfigError, match="attention implementation"):
        SpecDecoder(target, flash, DecodeConfig(method="chain"))
    with pytest.raises(ConfigError, match="vocabularies"):
        SpecDecoder(target, tiny_llama(vocab=17, layers=1), DecodeConfig(method="chain"))
    decoder = SpecDecoder(target, None, DecodeConfig(method="ar", max_new_tokens=2), max_prompt_len=4)
    for prompts in ([], [[1], []], [[1, 2, 3, 4, 5]]):
        with pytest.raises(ConfigError):
            decoder.generate(prompts)


def test_max_new_tokens_one_needs_no_decode_step(tiny_llama):
    target = tiny_llama(vocab=16, layers=1)
    tokens, stats = SpecDecoder(target, target, DecodeConfig(max_new_tokens=1), max_prompt_len=4).generate([[1, 2]])
    assert len(tokens[0]) == 1 and stats.num_steps == 0 and stats.num_drafts == 0


def test_stats_add_and_row_keys_match_schema():
    a = DecodeStats(num_batches=1, num_drafts=3, num_accepted_per_pos=[3, 1], verify_time_s=0.5, peak_memory_bytes=7)
    b = DecodeStats(num_batches=1, num_drafts=2, num_accepted_per_pos=[2, 2, 1], verify_time_s=0.25,
                    peak_memory_bytes=5)
    total = a + b
    assert total.num_batches == 2 and total.num_drafts == 5
    assert total.num_accepted_per_pos == [5, 3, 1]
    assert total.verify_time_s == 0.75 and total.peak_memory_bytes == 7
    spec_columns = {c.name for c in schema.SPEC_RUN}
    assert set(total.to_row()) <= spec_columns


def _moved_reference(buf, src, dst):
    """Per-row, per-layer reference of SlotCache.move on one ``(B, H, S, D)`` tensor: read every source first."""
    out = buf.clone()
    for b in range(buf.shape[0]):
        out[b, :, dst[b]] = buf[b, :, src[b]]
    return out


@pytest.mark.parametrize("heads", [(2, 2, 2), (2, 1, 2)])   # per layer; (2, 1, 2): a layer of another shape
def test_slot_cache_move_of_every_layer_at_once_equals_layer_by_layer(heads):
    """The cache keeps its layers in one stacked tensor (one gather and one scatter per move) when they share a
    shape; a layer of another shape makes it move layer by layer. Either way: overlapping moves, several rows."""
    gen = torch.Generator().manual_seed(0)
    cache = SlotCache(num_layers=len(heads), max_cache_len=6)
    cache.write_slots = torch.arange(6).expand(2, 6)
    for i, h in enumerate(heads):
        cache.update(torch.randn(2, h, 6, 3, generator=gen), torch.randn(2, h, 6, 3, generator=gen), i)
    assert cache._stack.uniform == (len(set(heads)) == 1)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    # distinct destinations per row (as the engine's moves have; scatter with duplicates is undefined on CUDA)
    src, dst = torch.tensor([[4, 5, 2], [1, 3, 3]]), torch.tensor([[2, 3, 1], [0, 1, 3]])
    cache.move(src, dst)
    for layer, (keys, values) in zip(cache.layers, before):
        assert torch.equal(layer.keys, _moved_reference(keys, src, dst))
        assert torch.equal(layer.values, _moved_reference(values, src, dst))


@pytest.mark.parametrize("heads", [(2, 2, 2), (2, 1, 2)])
def test_one_write_of_keys_and_values_together_equals_two(heads):
    """update_pair (one scatter into a stacked layer, else update) leaves the cache as update does, in stacked
    layers and in layers with tensors of their own, at ragged per-row slots."""
    gen = torch.Generator().manual_seed(0)
    caches = [SlotCache(num_layers=len(heads), max_cache_len=7) for _ in range(2)]
    for slots in (torch.tensor([[0, 1, 2], [2, 3, 4]]), torch.tensor([[5], [3]])):
        for cache in caches:
            cache.write_slots = slots
        for i, h in enumerate(heads):
            kv = torch.randn(2, slots.shape[1], 2 * h, 3, generator=gen)  # (B, n, 2H, D): keys' heads first
            pair = caches[0].layers[i].update_pair(kv)
            single = caches[1].update(kv[:, :, :h].transpose(1, 2), kv[:, :, h:].transpose(1, 2), i)
            assert all(torch.equal(a, b) for a, b in zip(pair, single))
    assert caches[0]._stack.uniform == (len(set(heads)) == 1)


def test_a_cache_allocated_from_a_prefill_stacks_only_layers_that_all_match():
    """write_rows allocates the full cache from a scratch cache: one stack when every layer has the same shape;
    tensors of their own (no stack sized by the first layer) when one layer differs."""
    for heads, stacked in (((2, 2, 2), True), ((1, 2, 2), False)):
        part = SlotCache(num_layers=3, max_cache_len=4)
        part.write_slots = torch.arange(4).expand(1, 4)
        for i, h in enumerate(heads):
            part.update(torch.ones(1, h, 4, 3), torch.ones(1, h, 4, 3), i)
        full = SlotCache(num_layers=3, max_cache_len=6)
        full.write_rows(part, torch.tensor([1]), 2, batch=2)
        assert (full._stack.tensor is not None) == stacked and full._stack.uniform == stacked
        assert [tuple(layer.keys.shape) for layer in full.layers] == [(2, h, 6, 3) for h in heads]
        assert all(layer.keys[1, :, 2:].eq(1).all() and layer.keys[0].eq(0).all() for layer in full.layers)
