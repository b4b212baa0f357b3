"""Greedy (temperature 0) decoding is lossless: the engine's output equals the target's own greedy output.

The reference decodes one token at a time with a full forward over the whole sequence (no cache, no mask),
so it shares nothing with the engine but the weights.
"""

from dataclasses import replace

import pytest
import torch

from sdlaws.measure.engine import DecodeConfig, SpecDecoder

pytestmark = pytest.mark.usefixtures("single_thread")

MAX_NEW = 16
PROMPTS = [[3, 1, 4, 1, 5, 9, 2], [6, 5], [3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]]  # ragged on purpose

CONFIGS = {
    "ar": DecodeConfig(method="ar", max_new_tokens=MAX_NEW),
    "chain": DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=MAX_NEW),
    "tree": DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=2, max_new_tokens=MAX_NEW),
    "tree-budget": DecodeConfig(method="tree", num_spec_tokens=4, tree_topk=3, tree_budget=5, max_new_tokens=MAX_NEW),
}


def models(family, attn, tiny_llama, tiny_gpt2):
    """A target and a smaller, differently seeded draft (init_std 0.2: clear argmax gaps, no near-ties)."""
    make = tiny_llama if family == "llama" else tiny_gpt2
    return (make(vocab=64, layers=2, seed=0, attn=attn, init_std=0.2),
            make(vocab=64, layers=1, seed=1, attn=attn, init_std=0.2))


@pytest.mark.parametrize("family,attn", [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa")])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_equals_target_greedy(family, attn, name, tiny_llama, tiny_gpt2, greedy_reference):
    target, draft = models(family, attn, tiny_llama, tiny_gpt2)
    expected = [greedy_reference(target, p, MAX_NEW) for p in PROMPTS]
    decoder = SpecDecoder(target, draft, CONFIGS[name], max_prompt_len=16)
    batched, stats = decoder.generate(PROMPTS)
    assert batched == expected
    assert [decoder.generate([p])[0][0] for p in PROMPTS] == expected  # batch 1, same decoder (cache reuse)
    assert stats.num_new_tokens == len(PROMPTS) * MAX_NEW


@pytest.mark.parametrize("cfg", [CONFIGS["chain"], CONFIGS["tree"],
                                 DecodeConfig(method="tree", num_spec_tokens=4, tree_topk=3, max_new_tokens=MAX_NEW)])
def test_self_draft_accepts_everything(cfg, tiny_llama, greedy_reference):
    """draft == target: every step accepts a full-depth path (chains: every drafted token), rank-1 children only."""
    target = tiny_llama(vocab=64, layers=2, seed=0)
    with torch.no_grad():  # sharpen the logits: the greedy path then outscores the other branches of the tree
        target.lm_head.weight.mul_(200.0)
    tokens, stats = SpecDecoder(target, target, cfg, max_prompt_len=16).generate(PROMPTS)
    assert tokens == [greedy_reference(target, p, MAX_NEW) for p in PROMPTS]
    depth = cfg.num_spec_tokens
    full_path = min(depth, cfg.budget)
    assert stats.num_accepted_per_pos[:full_path] == [stats.num_drafts] * full_path
    assert stats.num_accepted_tokens == stats.num_drafts * full_path
    if cfg.method == "chain":
        assert stats.num_accepted_tokens == stats.num_draft_tokens
    else:
        assert stats.num_accepted_per_rank == [stats.num_accepted_tokens] + [0] * (cfg.tree_topk - 1)


@pytest.mark.parametrize("name", ["chain", "tree"])
def test_trained_pair_partial_acceptance_stays_lossless(name, trained_pair, greedy_reference):
    target, draft, stream = trained_pair
    prompts = [stream[100 * i: 100 * i + 5 + 3 * i].tolist() for i in range(4)]
    cfg = DecodeConfig(method=name, num_spec_tokens=4, tree_topk=3 if name == "tree" else 1, max_new_tokens=32)
    tokens, stats = SpecDecoder(target, draft, cfg, max_prompt_len=16).generate(prompts)
    assert tokens == [greedy_reference(target, p, 32) for p in prompts]
    per_step = stats.num_accepted_tokens / stats.num_drafts
    assert 0.3 < per_step < 0.9 * cfg.num_spec_tokens  # neither trivially 0 nor everything


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("name", ["ar", "chain", "tree", "tree-budget"])
def test_counters_add_up(name, temperature, trained_pair):
    target, draft, stream = trained_pair
    prompts = [stream[50 * i: 50 * i + 4 + 2 * i].tolist() for i in range(5)]
    cfg = replace(CONFIGS[name], temperature=temperature, max_new_tokens=20)
    tokens, stats = SpecDecoder(target, draft, cfg, max_prompt_len=16).generate(prompts)
    batch, max_new = len(prompts), cfg.max_new_tokens
    assert [len(t) for t in tokens] == [max_new] * batch
    assert stats.num_batches == 1 and stats.num_new_tokens == batch * max_new
    assert stats.num_prompt_tokens == sum(map(len, prompts))
    assert 1 <= stats.num_steps <= max_new - 1
    if name == "ar":
        assert stats.num_steps == max_new - 1 and stats.num_drafts == stats.num_accepted_tokens == 0
        return
    # every live row commits accepted + 1 tokens per step; together they cover all tokens after the first
    assert stats.num_accepted_tokens + stats.num_drafts >= batch * (max_new - 1)
    assert stats.num_drafts <= batch * stats.num_steps
    assert stats.num_draft_tokens == stats.num_drafts * cfg.budget
    per_pos = stats.num_accepted_per_pos
    assert len(per_pos) == cfg.num_spec_tokens
    assert all(a >= b for a, b in zip([stats.num_drafts] + per_pos, per_pos))  # non-increasing
    assert sum(per_pos) == stats.num_accepted_tokens
    if cfg.method == "tree":
        assert len(stats.num_accepted_per_rank) == cfg.tree_topk
        assert sum(stats.num_accepted_per_rank) == stats.num_accepted_tokens
    assert stats.total_time_s >= stats.prefill_time_s + stats.draft_time_s + stats.verify_time_s > 0
    assert stats.peak_memory_bytes == 0  # CPU


def test_batch_sizes_share_one_decoder(tiny_llama, greedy_reference):
    """Several batch sizes through one decoder (workspaces are kept per batch size, the oldest evicted)."""
    target, draft = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2), tiny_llama(vocab=64, layers=1, seed=1)
    expected = [greedy_reference(target, p, MAX_NEW) for p in PROMPTS]
    decoder = SpecDecoder(target, draft, CONFIGS["tree"], max_prompt_len=40)  # prefill narrower than the cache
    for batch in ([0], [0, 1], [0, 1, 2], [2], [1, 2]):
        tokens, stats = decoder.generate([PROMPTS[i] for i in batch])
        assert tokens == [expected[i] for i in batch]
        assert stats.num_new_tokens == len(batch) * MAX_NEW


@pytest.mark.parametrize("name,draft_kind", [("ar", None), ("chain", "lm"), ("tree", "lm"), ("chain", "head"),
                                             ("tree", "head")])
def test_a_batch_prefilled_in_chunks_decodes_as_one_prefill(name, draft_kind, tiny_llama, greedy_reference,
                                                             monkeypatch):
    """With a chunk budget of 16 prompt slots (SLOT_ALIGN-rounded prompts of 8 and 16 slots: one or two rows a
    chunk), the batch is prefilled in several forwards of different widths and still decodes the target's greedy
    tokens, for LM drafts and feature heads."""
    from test_engine_heads import random_head

    from sdlaws.measure import engine, layout

    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2)
    draft = {"head": lambda: random_head(target), "lm": lambda: tiny_llama(vocab=64, layers=1, seed=1, init_std=0.2),
             None: lambda: None}[draft_kind]()
    widths = []
    real = engine._Workspace._load
    monkeypatch.setattr(layout, "PREFILL_CHUNK_SLOTS", 16)
    monkeypatch.setattr(engine._Workspace, "_load",
                        lambda ws, prompts, *a, **k: (widths.append(len(prompts)), real(ws, prompts, *a, **k))[1])
    decoder = SpecDecoder(target, draft, CONFIGS[name], max_prompt_len=16)
    tokens, _ = decoder.generate(PROMPTS)
    assert tokens == [greedy_reference(target, p, MAX_NEW) for p in PROMPTS]
    assert len(widths) > 1 and sum(widths) == len(PROMPTS)


def test_sampled_runs_do_not_depend_on_the_prefill_chunks(tiny_llama, monkeypatch):
    """T > 0: the same sequences whether the batch is prefilled at once or in chunks of one or two rows (the first
    tokens' uniforms are one draw for the batch). On CPU pieces of a draw equal one draw, so this checks the path
    (the slices of the draw each chunk takes); tests/test_engine_gpu.py checks the property where they differ."""
    from dataclasses import replace

    from sdlaws.measure import layout

    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2)
    draft = tiny_llama(vocab=64, layers=1, seed=1, init_std=0.2)
    cfg = replace(CONFIGS["chain"], temperature=1.0)
    whole, _ = SpecDecoder(target, draft, cfg, max_prompt_len=16).generate(PROMPTS)
    monkeypatch.setattr(layout, "PREFILL_CHUNK_SLOTS", 16)
    assert SpecDecoder(target, draft, cfg, max_prompt_len=16).generate(PROMPTS)[0] == whole


def test_prefill_chunks_keep_rows_times_slots_within_the_budget(monkeypatch):
    from sdlaws.measure import engine, layout

    monkeypatch.setattr(layout, "PREFILL_CHUNK_SLOTS", 32)
    used = lambda prompts: 8 * -(-max(map(len, prompts)) // 8)   # noqa: E731 (the workspace's rounding, 8-slot)
    prompts = [[1] * n for n in (3, 5, 9, 2, 20, 1, 1, 1, 1)]
    chunks = engine._prefill_chunks(list(range(9)), prompts, used)
    assert [[r for r, _ in c] for c in chunks] == [[0, 1], [2, 3], [4], [5, 6, 7, 8]]
    assert all(len(c) == 1 or len(c) * used([p for _, p in c]) <= 32 for c in chunks)


CHAIN_CASES = {"T0": {}, "T1": {"temperature": 1.0},
               "synthetic": {"acceptance_profile": ((0.6,), (0.5,), (0.7,))}}


@pytest.mark.parametrize("gamma", [1, 3])
@pytest.mark.parametrize("draft_kind", ["lm", "head"])
@pytest.mark.parametrize("case", list(CHAIN_CASES))
def test_the_chain_draft_equals_the_tree_draft_with_one_child(case, draft_kind, gamma, tiny_llama, monkeypatch):
    """A full chain's own draft phase (_draft_chain: no pool, the mask grown by a slot per level, the block
    structure set once) gives the tokens and counts of the general tree draft at k = 1, for LM drafts and heads,
    greedy, sampled and under synthetic acceptance, over a ragged batch, static and continuous (refills)."""
    from sdlaws.measure import engine
    from test_engine_heads import random_head

    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2)
    draft = random_head(target) if draft_kind == "head" else tiny_llama(vocab=64, layers=1, seed=1, init_std=0.2)
    changes = dict(CHAIN_CASES[case])
    if "acceptance_profile" in changes:
        changes["acceptance_profile"] = changes["acceptance_profile"][:gamma]
    cfg = replace(CONFIGS["chain"], num_spec_tokens=gamma, **changes)
    prompts = PROMPTS + [[2, 7], [1, 8, 2, 8]]

    def run():
        dec = SpecDecoder(target, draft, cfg, max_prompt_len=16)
        return dec.generate(PROMPTS), dec.serve(prompts, 2), dec._workspace(len(PROMPTS)).full_chain
    static, served, full_chain = run()
    assert full_chain
    real_init = engine._Workspace.__init__

    def as_tree(ws, *args):  # the same workspace, drafting through the general tree path
        real_init(ws, *args)
        ws.full_chain = False
    monkeypatch.setattr(engine._Workspace, "__init__", as_tree)
    for (tokens, stats), (tree_tokens, tree_stats) in zip((static, served), run()[:2]):
        assert tokens == tree_tokens
        for name in ("num_steps", "num_drafts", "num_accepted_tokens", "num_accepted_per_pos",
                     "num_accepted_per_seq"):
            assert getattr(stats, name) == getattr(tree_stats, name), name


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_ar_step_equals_the_block_step_with_an_empty_block(temperature, tiny_llama, monkeypatch):
    """AR's own verify phase (_verify_ar) gives the tokens and counts of the general block verify with no draft,
    static and continuous batching (refills, frozen rows), greedy and sampled."""
    from sdlaws.measure import engine

    target = tiny_llama(vocab=64, layers=2, seed=0, init_std=0.2)
    cfg = replace(CONFIGS["ar"], temperature=temperature)
    prompts = PROMPTS + [[2, 7], [1, 8, 2, 8]]

    def run():
        dec = SpecDecoder(target, None, cfg, max_prompt_len=16)
        return dec.generate(PROMPTS), dec.serve(prompts, 2)
    (own, own_stats), (served, served_stats) = run()
    monkeypatch.setattr(engine._Workspace, "_verify_ar", engine._Workspace._verify_block)
    (block, block_stats), (served_block, served_block_stats) = run()
    assert own == block and served == served_block
    for a, b in ((own_stats, block_stats), (served_stats, served_block_stats)):
        assert (a.num_steps, a.num_steps_per_seq) == (b.num_steps, b.num_steps_per_seq)
