"""Synthetic acceptance: real forward passes, accept/reject drawn from an acceptance profile.

The statistical checks use binomial 4-sigma bounds on counts from seeded runs (deterministic), and show that
the same bounds reject a profile whose rows are shifted by one depth, so an off-by-one in the row indexing
cannot pass.
"""

import csv
import itertools
import math

import pandas as pd
import pytest
from conftest import conditional_counts, within_4_sigma
from typer.testing import CliRunner

from sdlaws import io, rates, schema
from sdlaws.cli import app
from sdlaws.errors import ConfigError, InputError
from sdlaws.fit import fit_law
from sdlaws.measure.config import MeasureConfig
from sdlaws.measure.engine import DecodeConfig, SpecDecoder
from sdlaws.measure.sweep import expand_grid, run_id, run_sweep

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [1]] * 2  # batch 8, ragged
TINY = "random:tiny?num_hidden_layers=1"


@pytest.fixture(scope="module")
def pair():
    from conftest import make_tiny_llama

    return make_tiny_llama(vocab=64, layers=1, seed=0), make_tiny_llama(vocab=64, layers=1, seed=1)


def decode(pair, prompts=PROMPTS, **config):
    """(tokens, stats, workspace) of one generate call."""
    decoder = SpecDecoder(*pair, DecodeConfig(**config), max_prompt_len=8)
    tokens, stats = decoder.generate(prompts)
    return tokens, stats, decoder._workspaces[len(prompts)]


def test_certain_acceptance_accepts_every_draft(pair):
    tokens, stats, _ = decode(pair, method="chain", num_spec_tokens=3, max_new_tokens=40,
                              acceptance_profile=[[1.0], [1.0], [1.0]])
    assert stats.num_drafts > 0 and stats.num_accepted_tokens == 3 * stats.num_drafts
    assert [len(t) for t in tokens] == [40] * len(PROMPTS)


def test_zero_acceptance_accepts_nothing_and_emits_the_target_tokens(pair, greedy_reference):
    """Only bonus tokens are committed, and the bonus is the target's own argmax: the target's greedy output."""
    prompts = PROMPTS[:4]
    tokens, stats, _ = decode(pair, prompts, method="tree", num_spec_tokens=2, tree_topk=2, max_new_tokens=12,
                              acceptance_profile=((0.0, 0.0), (0.0, 0.0)))
    assert stats.num_accepted_tokens == 0 and stats.num_steps == 11
    assert tokens == [greedy_reference(pair[0], p, 12) for p in prompts]


def test_chain_conditional_acceptance_follows_the_profile(pair):
    q = ((0.8,), (0.5,), (0.9,))
    _, stats, _ = decode(pair, method="chain", num_spec_tokens=3, max_new_tokens=160, acceptance_profile=q)
    counts = conditional_counts(stats)
    assert counts[-1][1] > 150  # enough trials at the deepest level for a sharp test
    assert all(within_4_sigma(a, n, row[0]) for (a, n), row in zip(counts, q))
    shifted = q[1:] + q[:1]
    assert not all(within_4_sigma(a, n, row[0]) for (a, n), row in zip(counts, shifted))
    assert rates.expected_tokens_profile(q, 3) == pytest.approx(1 + 0.8 + 0.4 + 0.36)


def outcomes(q, tree) -> dict[tuple, float]:
    """Probability of each accepted rank path (None = rejected) of a depth-2 tree holding the rank paths ``tree``."""
    out = {}
    for path in itertools.product([None, 0, 1], repeat=2):
        p, prefix = 1.0, ()
        for depth, rank in enumerate(path):
            if prefix is None:  # rejected above: nothing more to accept
                p *= rank is None
                continue
            drafted = [r for r in (0, 1) if prefix + (r,) in tree]
            p *= 1 - sum(q[depth][r] for r in drafted) if rank is None else q[depth][rank] * (rank in drafted)
            prefix = None if rank is None else prefix + (rank,)
        out[path] = p
    return out


@pytest.mark.parametrize("q, tree", [
    # EAGLE-2 keeps the 4 likeliest paths .5, .3, .3, .18: the rank-1 children at depth 2 (.1, .06) are left out
    (((0.5, 0.3), (0.6, 0.2)), {(0,), (1,), (0, 0), (1, 0)}),
    # .9, .54, .27, .05: both children of the rank-0 node, none of the rank-1 node
    (((0.9, 0.05), (0.6, 0.3)), {(0,), (1,), (0, 0), (0, 1)}),
])
def test_tree_acceptance_follows_the_profile_and_the_budgeted_tree(pair, q, tree):
    _, stats, ws = decode(pair, method="tree", num_spec_tokens=2, tree_topk=2, max_new_tokens=160,
                          acceptance_profile=q)
    nodes = sorted(zip(ws.block_depth[0, 1:].tolist(), ws.block_rank[0, 1:].tolist()))
    assert nodes == sorted((len(path), path[-1]) for path in tree)
    law = outcomes(q, tree)
    reach1 = sum(p for path, p in law.items() if path[0] is not None)
    reach2 = sum(p for path, p in law.items() if path[1] is not None)
    (a1, n1), (a2, n2) = conditional_counts(stats)
    assert within_4_sigma(a1, n1, reach1) and within_4_sigma(a2, n2, reach2 / reach1)
    n = stats.num_drafts
    for rank, count in enumerate(stats.num_accepted_per_rank):  # accepted nodes of each rank, over both depths
        per_draft = {path: sum(r == rank for r in path) for path in law}
        mean = sum(p * per_draft[path] for path, p in law.items())
        var = sum(p * per_draft[path] ** 2 for path, p in law.items()) - mean ** 2
        assert abs(count - n * mean) <= 4 * math.sqrt(n * var)


@pytest.mark.parametrize("config, message", [
    (dict(method="chain", temperature=1.0, acceptance_profile=((0.5,),) * 4), "temperature 0"),
    (dict(method="chain", num_spec_tokens=4, acceptance_profile=((0.5,),) * 3), "3 row"),
    (dict(method="tree", num_spec_tokens=2, tree_topk=2, acceptance_profile=((0.8, 0.3), (0.5,))), "sums to 1.1"),
    (dict(method="chain", num_spec_tokens=1, acceptance_profile=((1.5,),)), "outside"),
    (dict(method="ar", acceptance_profile=((0.5,),)), "needs a draft"),
])
def test_invalid_profiles_raise_config_error(pair, config, message):
    with pytest.raises(ConfigError, match=message):
        SpecDecoder(*pair, DecodeConfig(**config), max_prompt_len=8)


def _sweep_config(**kw):
    base = dict(targets=(TINY,), drafts=(TINY,), num_spec_tokens=(2,), topks=(1, 2), batch_sizes=(2,), prompts="random",
                num_prompts=2, max_new_tokens=6, max_prompt_len=6, dtype="fp32", device="cpu")
    return MeasureConfig(**{**base, **kw})


def test_sweep_rows_are_synthetic_and_kept_out_of_acceptance_fits(tmp_path):
    """A draft identical to the target accepts everything for real; a zero profile accepts nothing."""
    out = tmp_path / "x.csv"
    config = _sweep_config(acceptance_profile=[[0.0, 0.0], [0.0, 0.0]])
    assert run_sweep(config, out, progress=False).num_ok == 3
    df = rates.derive(io.read_measurements(out, table="spec"))
    assert list(df["acceptance_source"]) == ["target", "synthetic", "synthetic"]
    assert list(df["acceptance_profile"].fillna("")) == ["", "[[0.0,0.0],[0.0,0.0]]", "[[0.0,0.0],[0.0,0.0]]"]
    assert (df.loc[df["method"] != "ar", "num_accepted_tokens"] == 0).all()
    ar, chain = expand_grid(config)[:2]
    other = _sweep_config(acceptance_profile=[[0.5], [0.5]])
    assert run_id(ar, config, "cpu") == run_id(ar, _sweep_config(), "cpu")  # shared AR baseline
    assert len({run_id(chain, c, "cpu") for c in (config, other, _sweep_config())}) == 3
    with pytest.raises(InputError, match="synthetic"):
        fit_law(df, "tau_chain")
    result = CliRunner().invoke(app, ["fit", str(out), "--law", "tau_chain", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "synthetic" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_fits_drop_synthetic_rows_with_a_note():
    df = pd.DataFrame({"num_spec_tokens": [1, 2, 3, 4, 1, 2], "mean_acceptance_length": [1.7, 2.2, 2.6, 2.8, 2, 3],
                       "acceptance_source": ["target"] * 4 + ["synthetic"] * 2})
    fit = fit_law(df, "tau_chain")
    assert fit.nobs == 4 and any("left out 2 synthetic" in note for note in fit.notes())
    timing = fit_law(df, "linear", x="num_spec_tokens", y="num_spec_tokens")  # not an acceptance fit: all rows
    assert timing.nobs == 6 and not timing.notes()


def test_old_csv_without_the_columns_reads_and_takes_real_rows_only(tmp_path):
    old = tmp_path / "old.csv"
    names = [c.name for c in schema.SPEC_RUN if c.name not in ("acceptance_source", "acceptance_profile")]
    with open(old, "w", newline="") as fh:
        csv.writer(fh).writerow(names)
    row = {"run_id": "r", "status": "ok", "timestamp_utc": "t", "git_sha": "x", "sdlaws_version": "0",
           "gpu_name": "cpu", "target_name": "t", "method": "ar", "num_spec_tokens": 0, "tree_topk": 1,
           "batch_size": 1, "temperature": 0.0, "prompt_set": "p", "num_prompts": 1, "max_new_tokens": 2,
           "num_batches": 1, "num_new_tokens": 2, "num_steps": 1, "num_drafts": 0, "num_draft_tokens": 0,
           "num_accepted_tokens": 0, "prefill_time_s": 0.1, "total_time_s": 0.2}
    io.append_row(old, {**row, "acceptance_source": "target", "acceptance_profile": ""})
    df = io.read_measurements(old, table="spec")
    assert "acceptance_source" not in df and not schema.synthetic_acceptance(df).any()
    # a synthetic row migrates the file to the full header: the earlier row reads as measured acceptance
    io.append_row(old, {**row, "run_id": "s", "acceptance_source": "synthetic", "acceptance_profile": "[[0.5]]"})
    df = io.read_measurements(old, table="spec")
    assert df["acceptance_source"].tolist() == ["target", "synthetic"]
    assert schema.synthetic_acceptance(df).tolist() == [False, True]


def test_measure_config_and_cli_reject_bad_profiles(tmp_path):
    with pytest.raises(ConfigError, match="temperature 0"):
        _sweep_config(acceptance_profile=[[0.5], [0.5]], temperatures=(0.0, 1.0))
    with pytest.raises(ConfigError, match="1 row"):
        _sweep_config(acceptance_profile=[[0.5]])
    bad_json = tmp_path / "q.json"
    bad_json.write_text('{"rows": [[0.5]]}')
    for text, message in [("0.8,x;0.5", "neither a JSON file"), ("0.9,0.2;0.5", "sums to 1.1"),
                          (str(bad_json), "'profile' key")]:
        result = CliRunner().invoke(app, ["measure", "--target", TINY, "--draft", TINY, "--gamma", "2",
                                          "--acceptance-profile", text])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


def test_cli_reads_profile_files_and_inline_rows(tmp_path):
    from sdlaws.measure import profile

    path = tmp_path / "q.json"
    path.write_text('{"profile": [[0.8, 0.1], [0.7]], "source": "hand-made"}')
    assert profile.parse(str(path)) == ((0.8, 0.1), (0.7,)) == profile.parse("0.8,0.1;0.7")
    path.write_text("[[0.8, 0.1], [0.7]]")
    assert profile.parse(str(path)) == ((0.8, 0.1), (0.7,))
    assert profile.to_json(((0.8, 0.1), (0.7,))) == "[[0.8,0.1],[0.7]]"


def test_acceptance_profile_from_measured_counts():
    tree = {"num_drafts": 100, "num_accepted_per_pos": "[80, 40, 36]", "num_accepted_per_rank": "[117, 39]"}
    q = rates.acceptance_profile(tree, depth=3, topk=2)  # depth rates .8, .5, .9; rank shares .75, .25
    assert [list(row) for row in q] == [pytest.approx(r) for r in ([0.6, 0.2], [0.375, 0.125], [0.675, 0.225])]
    chain = pd.DataFrame([{"num_drafts": 60, "num_accepted_per_pos": "[48, 24]", "num_accepted_per_rank": "[]"},
                          {"num_drafts": 40, "num_accepted_per_pos": "[32, 16]", "num_accepted_per_rank": "[]"}])
    assert rates.acceptance_profile(chain, depth=2, topk=2) == ((0.8,), (0.5,))  # pooled counts, rank 0 only
    assert rates.acceptance_profile(pd.Series(tree), depth=1) == ((0.8 * 117 / 156,),)
    with pytest.raises(InputError, match="3 position"):
        rates.acceptance_profile(tree, depth=4, topk=2)


def test_per_sequence_counts_add_up_to_the_totals_and_the_batch_waits_for_its_slowest_row(pair):
    from sdlaws.measure.engine import DecodeConfig, SpecDecoder

    target, draft = pair
    cfg = DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=24, cuda_graphs=False,
                       acceptance_profile=((0.7,), (0.5,), (0.4,)))
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10], [11, 12, 13, 14]]
    dec = SpecDecoder(target, draft, cfg, max_prompt_len=8)
    _, first = dec.generate(prompts[:2])
    _, second = dec.generate(prompts[2:])
    stats = first + second
    assert len(stats.num_drafts_per_seq) == len(stats.num_accepted_per_seq) == len(stats.num_steps_per_seq) == 4
    assert sum(stats.num_drafts_per_seq) == stats.num_drafts
    assert sum(stats.num_accepted_per_seq) == stats.num_accepted_tokens
    assert max(first.num_steps_per_seq) == first.num_steps and max(second.num_steps_per_seq) == second.num_steps
    # every sequence committed max_new_tokens - 1 tokens after the prefill's first: accepted + one per step
    for accepted, steps in zip(stats.num_accepted_per_seq, stats.num_steps_per_seq):
        assert accepted + steps >= cfg.max_new_tokens - 1
