"""Feature-level draft heads in the engine: drafts computed right, verification still lossless.

- An oracle head on a bigram target (a target whose layers add nothing, so its feature at ``i`` is the final norm
  of token ``i``'s embedding) predicts every feature exactly: every drafted token must be accepted.
- A random multi-layer head's drafts must equal those of an uncached reference run of the same head on the
  committed sequence (pairs of full-forward target features and next tokens), node by node and rank by rank:
  this checks the head's KV cache, positions, masks and feature bookkeeping.
- Greedy output equals the target's greedy output; samples at T > 0 follow the target's distribution (the
  chi-square test of ``test_engine_sampling``); synthetic acceptance follows its profile with a head draft.
"""

import math

import pytest
import torch

from sdlaws.errors import ConfigError, ModelError
from sdlaws.measure import engine
from sdlaws.measure.engine import DecodeConfig, SpecDecoder
from sdlaws.measure.fastpath import FastDecoderLM, FastHead
from sdlaws.measure.head import FeatureHead, head_config, target_features
from conftest import conditional_counts, within_4_sigma

PROMPTS = [[3, 1, 4, 1, 5, 9, 2], [6, 5], [3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]]  # ragged on purpose
BATCH = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [1]] * 2  # batch 8, ragged

pytestmark = pytest.mark.usefixtures("single_thread")

MAX_NEW = 16
CONFIGS = {
    "chain": DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=MAX_NEW),
    "tree": DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=2, max_new_tokens=MAX_NEW),
    "tree-budget": DecodeConfig(method="tree", num_spec_tokens=4, tree_topk=3, tree_budget=5, max_new_tokens=MAX_NEW),
}


def random_head(target, layers: int = 2, seed: int = 3) -> FeatureHead:
    """A random head for ``target`` with peaked logits (init std 0.2: clear argmax gaps, no near-ties)."""
    torch.manual_seed(seed)
    return FeatureHead(head_config(target.config, layers=layers, initializer_range=0.2)).eval()


def bigram_oracle(tiny_llama):
    """(target, head): a 1-layer target whose layer adds nothing and a 2-layer head that predicts its features.

    The target's feature at ``i`` is ``norm(embed(x_i))``; the head's ``fc`` passes the embedding half through,
    its layers add nothing, and the shared final norm makes its prediction ``norm(embed(x_{i+1}))``: exactly the
    target's next feature, so its logits are the target's.
    """
    target = tiny_llama(vocab=64, layers=1, seed=0, init_std=0.2)
    head = FeatureHead(head_config(target.config, layers=2)).eval()
    hidden = target.config.hidden_size
    with torch.no_grad():
        target.lm_head.weight.mul_(200.0)  # the greedy path outscores every other branch of the tree
        for layer in [*target.model.layers, *head.layers]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head.fc.weight.zero_()
        head.fc.weight[:, :hidden] = torch.eye(hidden)
        head.fc.bias.zero_()
    return target, head


@pytest.mark.parametrize("name", list(CONFIGS))
def test_oracle_head_accepts_every_draft(name, tiny_llama, greedy_reference):
    target, head = bigram_oracle(tiny_llama)
    cfg = CONFIGS[name]
    tokens, stats = SpecDecoder(target, head, cfg, max_prompt_len=16).generate(PROMPTS)
    assert tokens == [greedy_reference(target, p, MAX_NEW) for p in PROMPTS]
    full_path = min(cfg.num_spec_tokens, cfg.budget)
    assert stats.num_accepted_per_pos[:full_path] == [stats.num_drafts] * full_path
    assert stats.num_accepted_tokens == stats.num_drafts * full_path > 0
    if cfg.method == "tree":
        assert stats.num_accepted_per_rank == [stats.num_accepted_tokens] + [0] * (cfg.tree_topk - 1)


def head_reference_logprobs(target, head, committed: list[int], drafted: list[int]) -> torch.Tensor:
    """The head's log-probabilities after ``committed + drafted``: target features for the committed pairs, the
    head's own predicted features for the drafted ones (EAGLE's drafting), no cache."""
    with torch.no_grad():
        ids = torch.tensor([committed])
        features = target_features(target, input_ids=ids)[:, :-1]  # f_0 .. f_{n-2}, paired with x_1 .. x_{n-1}
        pairs = ids[:, 1:]
        predicted, logits = head.predict(head(pairs, features, torch.arange(pairs.shape[1])[None])[:, -1:])
        for token in drafted:  # each drafted token is paired with the prediction at its parent
            pairs = torch.cat([pairs, torch.tensor([[token]])], dim=1)
            features = torch.cat([features, predicted], dim=1)
            predicted, logits = head.predict(head(pairs, features, torch.arange(pairs.shape[1])[None])[:, -1:])
        return torch.log_softmax(logits[0, 0], dim=-1)


def record_drafts(monkeypatch) -> list[dict]:
    """Spy on the draft phase: per step and live row, the committed tokens and the verify block it wrote."""
    records = []
    original = engine._Workspace._draft

    def spy(ws):
        original(ws)
        for row in range(ws.batch_size):
            pad, length = int(ws.pad[row]), int(ws.length[row])
            if length - int(ws.prompt_len[row]) < ws.cfg.max_new_tokens:
                records.append({"committed": ws.seq[row, pad:pad + length].tolist(),
                                "token": [0, *ws.block_token[row].tolist()], "depth": ws.block_depth[row].tolist(),
                                "parent": ws.block_parent[row].tolist(), "rank": ws.block_rank[row].tolist()})
    monkeypatch.setattr(engine._Workspace, "_draft", spy)
    return records


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_head_drafts_equal_an_uncached_reference_and_output_is_greedy(family, name, tiny_llama, tiny_gpt2,
                                                                      greedy_reference, monkeypatch):
    make = tiny_llama if family == "llama" else tiny_gpt2
    target = make(vocab=64, layers=2, seed=0, init_std=0.2)
    head = random_head(target)
    records = record_drafts(monkeypatch)
    decoder = SpecDecoder(target, head, CONFIGS[name], max_prompt_len=16)
    # the head's layers run on the fused path, for a GPT-2 target (LayerNorm final norm) too
    assert isinstance(decoder.draft, FastHead) and decoder.head
    calls = []
    monkeypatch.setattr(FastHead, "_run", lambda self, *a: calls.append(1) or FastDecoderLM._run(self, *a))
    expected = [greedy_reference(target, p, MAX_NEW) for p in PROMPTS]
    assert decoder.generate(PROMPTS)[0] == expected  # ragged batch
    assert [decoder.generate([p])[0][0] for p in PROMPTS] == expected  # batch 1, same decoder
    assert calls
    checked = 0
    for rec in records[::3]:  # every third (step, row): enough to cover positions, ranks and depths
        for node in range(1, len(rec["token"])):
            path, at = [], node  # the drafted tokens from the root down to this node's parent
            while rec["depth"][at] > 1:
                at = rec["parent"][at]
                path.insert(0, rec["token"][at])
            ref = head_reference_logprobs(target, head, rec["committed"], path)
            top = ref.topk(CONFIGS[name].tree_topk)
            # the node is its parent's rank-r child (compared by log-probability: immune to exact ties)
            assert ref[rec["token"][node]] == pytest.approx(float(top.values[rec["rank"][node]]), abs=1e-4)
            checked += 1
    assert checked > 20


@pytest.mark.parametrize("case", ["chain-T1", "tree-T1"])
def test_head_samples_follow_the_target(case):
    from conftest import make_tiny_llama
    from sampling_helpers import CASES, P_MIN, VOCAB, draw, exact_prefix_probs, p_values

    target = make_tiny_llama(vocab=VOCAB, layers=2, hidden=32, seed=0, init_std=0.3)
    head = random_head(target, layers=1, seed=5)
    cfg = CASES[case]
    samples = draw(target, head, cfg)
    pvals = p_values(samples, exact_prefix_probs(target, cfg.temperature, samples.shape[1]))
    assert min(pvals.values()) > P_MIN, pvals


def test_synthetic_acceptance_with_a_head_follows_the_profile(tiny_llama, greedy_reference):
    target = tiny_llama(vocab=64, layers=1, seed=0)
    q = ((0.8,), (0.5,), (0.9,))
    cfg = DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=160, acceptance_profile=q)
    _, stats = SpecDecoder(target, random_head(target, layers=1), cfg, max_prompt_len=8).generate(BATCH)
    counts = conditional_counts(stats)
    assert counts[-1][1] > 150 and all(within_4_sigma(a, n, row[0]) for (a, n), row in zip(counts, q))
    zero = DecodeConfig(method="tree", num_spec_tokens=2, tree_topk=2, max_new_tokens=12,
                        acceptance_profile=((0.0, 0.0), (0.0, 0.0)))
    tokens, stats = SpecDecoder(target, random_head(target, layers=1), zero, max_prompt_len=8).generate(BATCH[:4])
    assert stats.num_accepted_tokens == 0 and tokens == [greedy_reference(target, p, 12) for p in BATCH[:4]]


def test_trained_pair_target_with_a_random_head_counts_add_up(trained_pair):
    """Counters and per-sequence counts stay consistent with a head, at T = 1 (chain sampling) too."""
    target, _, stream = trained_pair
    prompts = [stream[50 * i: 50 * i + 4 + 2 * i].tolist() for i in range(5)]
    for cfg in (DecodeConfig(method="chain", num_spec_tokens=3, temperature=1.0, max_new_tokens=20),
                DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=3, tree_budget=4, max_new_tokens=20)):
        tokens, stats = SpecDecoder(target, random_head(target, layers=1), cfg, max_prompt_len=16).generate(prompts)
        assert [len(t) for t in tokens] == [20] * 5
        assert sum(stats.num_accepted_per_pos) == stats.num_accepted_tokens == sum(stats.num_accepted_per_seq)
        assert sum(stats.num_drafts_per_seq) == stats.num_drafts
        assert stats.num_accepted_tokens + stats.num_drafts >= 5 * 19


def test_heads_are_drafts_only_and_must_fit_their_target(tiny_llama):
    target = tiny_llama(vocab=64, layers=2, seed=0)
    head = random_head(target)
    with pytest.raises(ConfigError, match="cannot be the target"):
        SpecDecoder(head, None, DecodeConfig(method="ar"))
    narrow = FeatureHead(head_config(tiny_llama(vocab=64, hidden=16, heads=2, kv_heads=1).config)).eval()
    with pytest.raises(ModelError, match="16 wide"):
        SpecDecoder(target, narrow, CONFIGS["chain"])
    assert not any("embed" in n or "lm_head" in n for n, _ in head.named_parameters())
    assert math.isclose(sum(p.numel() for p in head.parameters()),
                        2 * 32 * 32 + 32 + 2 * sum(p.numel() for p in head.layers[1].parameters()) - 32)


def test_a_wrapped_head_is_wrapped_once_rebuilt_after_training_and_trains_through_its_own_forward(tiny_llama):
    """wrap() of a wrapper is the wrapper; a head whose weights change in place (an optimizer step) gets fused
    weights built again; without a cache the wrapper's call is the head's forward, with its gradients."""
    from sdlaws.measure import fastpath

    target = tiny_llama(vocab=64, layers=2, seed=0)
    head = random_head(target).attach(target)
    fast = fastpath.wrap(head)
    assert fastpath.wrap(fast) is fast and fastpath.wrap(head) is fast
    with torch.no_grad():
        head.layers[0].self_attn.q_proj.weight.add_(1.0)
    rebuilt = fastpath.wrap(head)
    assert rebuilt is not fast and torch.equal(rebuilt.layers[0].qkv_w[:head.config.hidden_size],
                                               head.layers[0].self_attn.q_proj.weight)
    ids = torch.randint(0, 64, (2, 5))
    features = torch.randn(2, 5, head.config.hidden_size)
    out = rebuilt(ids, features, torch.arange(5).expand(2, 5))
    assert out.requires_grad
    out.sum().backward()
    assert head.fc.weight.grad is not None

