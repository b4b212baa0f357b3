"""Published pairs as acceptance priors: the table in data/ (every row sourced, settings recognised, numbers in
range) and `sdlaws plan --pair NAME`."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sdlaws.cli import app
from sdlaws.errors import InputError
from sdlaws.plan import pairs
from sdlaws.rates import expected_tokens_chain, expected_tokens_positions
from sdlaws.roofline import named_shape

runner = CliRunner()
PAIRS = pairs.load_pairs()
TABLE = pd.read_csv(pairs.table_path())


def test_table_has_sourced_rows_of_every_draft_kind():
    assert len(PAIRS) >= 8
    assert {"eagle2", "eagle3", "medusa", "mtp"} <= {p.draft_method for p in PAIRS.values()}
    for row in TABLE.itertuples():
        assert row.source.strip() and row.url.startswith("https://") and row.tag in pairs.TAGS, row.name
        assert row.benchmark in pairs.BENCHMARKS and row.method in pairs.METHODS, row.name


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_row_numbers_are_in_range_and_shapes_resolve(name):
    pair = PAIRS[name]
    assert pair.num_spec_tokens >= 1 and 1.0 <= pair.tau <= pair.num_spec_tokens + 1
    assert pair.temperature is None or 0.0 <= pair.temperature <= 2.0
    assert all(0.0 <= p <= 1.0 for p in pair.positions) and list(pair.positions) == sorted(pair.positions)[::-1]
    for spec in filter(None, (pair.target_shape, pair.draft_shape)):
        assert named_shape(spec).params > 0


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_acceptance_model_reproduces_the_published_tau(name):
    pair = PAIRS[name]
    acc = pairs.acceptance(pair)
    assert float(expected_tokens_chain(acc.alpha, pair.num_spec_tokens)) == pytest.approx(pair.tau, abs=1e-9)
    if pair.positions:  # the chain rates give back the published per-position rates, hence tau to rounding
        assert np.cumprod(acc.position_rates) == pytest.approx(pair.positions)
        assert expected_tokens_positions(acc.position_rates) == pytest.approx(pair.tau, abs=pairs.TAU_ROUNDING)
    assert pair.name in acc.source and pair.source in acc.source


BAD_ROWS = {
    "no source": ({"source": ""}, "empty source"),
    "unknown benchmark": ({"benchmark": "vibes"}, "benchmark 'vibes'"),
    "tau above depth + 1": ({"mean_acceptance_length": 4.5}, "outside [1, 4]"),
    "rising per-position rates": ({"pos_acceptance_rate_2": 0.8}, "non-increasing"),
    "tau off the rates": ({"mean_acceptance_length": 2.9}, "differs from 1 + the per-position rates"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_rows_are_rejected_naming_row_and_field(case, tmp_path):
    change, message = BAD_ROWS[case]
    frame = TABLE[TABLE["name"].eq("llama-3.1-8b-eagle3-vllm")].assign(**change)
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    with pytest.raises(InputError, match="llama-3.1-8b-eagle3-vllm") as err:
        pairs.load_pairs(tmp_path / "pairs.csv")
    assert message in str(err.value)


def _plan(*args):
    return runner.invoke(app, ["plan", *args])


def test_full_plan_from_a_pair_on_h200():
    result = _plan("--pair", "llama-3.1-8b-eagle3-vllm", "--hardware", "h200", "--batch", "1,64", "--samples", "20",
                   "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    inputs = data["inputs"]
    assert "llama-3.1-8b-eagle3-vllm" in inputs["acceptance_source"] and "vLLM" in inputs["acceptance_source"]
    assert inputs["position_rates"] == pytest.approx([0.7296, 0.5208 / 0.7296, 0.3545 / 0.5208])
    assert inputs["serving"]["target"]["name"] == "llama-3.1-8b" and "head" in inputs["serving"]["draft"]["name"]
    assert inputs["served_draft"].startswith("Draft served: the given")
    assert all(r["chain_num_spec_tokens"] <= 3 for r in data["tables"]["serving"])  # no rates beyond the published 3
    assert "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3" in data["engine_flags"][0]["vllm"]


def test_serving_plan_from_a_tree_pair_says_which_row_and_source(tmp_path):
    result = _plan("serving", "--pair", "vicuna-7b-eagle2-specbench", "--hardware", "h200", "--batch", "1",
                   "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "Acceptance: published pair vicuna-7b-eagle2-specbench" in out and "Spec-Bench Leaderboard.md" in out
    assert "chain-equivalent of a tree" in out
    export = runner.invoke(app, ["plan", "export", str(tmp_path / "plan.json"), "--engine", "vllm", "--out",
                                 str(tmp_path / "vllm.yaml")])
    assert export.exit_code == 0, export.output
    assert "vicuna-7b-eagle2-specbench" in (tmp_path / "vllm.yaml").read_text()


ERRORS = {
    "unknown pair": (["--pair", "nope"], ["unknown pair 'nope'", "llama-3.1-8b-eagle3-vllm"]),
    "pair and alpha": (["--pair", "llama-3.1-8b-eagle3-vllm", "--alpha", "0.7"], ["--pair", "--alpha"]),
    "pair and profile": (["serving", "--pair", "llama-3.1-8b-eagle3-vllm", "--profile", "p.json"], ["--profile"]),
    "no target shape": (["--pair", "qwen3-8b-eagle3-vllm"], ["Qwen/Qwen3-8B", "--target"]),
    "no draft shape": (["--pair", "vicuna-7b-medusa-specbench"], ["medusa-vicuna-7b-v1.3", "--draft"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_pair_errors_are_one_line_with_exit_code_2(case):
    args, fragments = ERRORS[case]
    result = _plan(*args, "--batch", "1")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert all(f in lines[0] for f in fragments), lines[0]


def test_a_pair_without_shapes_plans_with_given_shapes():
    result = _plan("serving", "--pair", "deepseek-r1-mtp3-trtllm", "--target", "llama-3.1-70b", "--draft",
                   "llama-3.2-1b", "--batch", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["inputs"]["alpha"] == pytest.approx(PAIRS["deepseek-r1-mtp3-trtllm"].alpha)
    assert data["inputs"]["position_rates"] is None
