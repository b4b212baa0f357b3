"""`sdlaws measure` CLI: sweep, ppl and hardware happy paths; bad input exits 2 with one line."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sdlaws import io
from sdlaws.cli import app

TINY = "random:tiny?num_hidden_layers=1"
runner = CliRunner()


def test_sweep_happy_path_and_resume(tmp_path):
    out = tmp_path / "x.csv"
    args = ["measure", "--target", TINY, "--draft", TINY, "--num-spec-tokens", "2", "--batch", "2", "--prompts",
            "random", "--num-prompts", "2", "--max-new-tokens", "4", "--max-prompt-len", "5", "--dtype", "fp32",
            "--device", "cpu", "--experiment", "cli-test", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "num_spec_tokens" in result.output and "2 configurations" in result.output  # config echoed, grid size
    df = io.read_measurements(out, table="spec")
    assert list(df["method"]) == ["ar", "chain"] and set(df["status"]) == {"ok"}
    assert set(df["experiment"]) == {"cli-test"} and set(df["dtype"]) == {"float32"}
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "2 already in" in again.output
    assert len(io.read_measurements(out, table="spec")) == 2


@pytest.mark.parametrize("args, message", [
    (["measure", "--target", TINY, "--gamma", "1,x"], "--num-spec-tokens '1,x': expected comma-separated numbers"),
    (["measure", "--target", TINY, "--prompts", "missing.jsonl"], "neither a built-in set"),
    (["measure", "--draft", TINY], "pass --target"),
    (["measure", "--target", TINY, "--temperature", "-1"], "--temperature -1 is out of range"),
    (["measure", "--target", TINY, "--batching", "dynamic"], "--batching 'dynamic': use one of static, continuous"),
    (["measure", "ppl", "--eval", "x.bin"], "pass --model"),
    (["measure", "ppl", "--model", "/no/such/dir", "--eval", __file__, "--device", "cpu"], "no such model directory"),
])
def test_bad_input_exits_2_with_one_line(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_ppl_command(tmp_path):
    ids = np.random.default_rng(0).integers(0, 512, size=40).astype("<u2")
    ids.tofile(tmp_path / "test.bin")
    out = tmp_path / "ppl.csv"
    result = runner.invoke(app, ["measure", "ppl", "--model", TINY, "--eval", str(tmp_path / "test.bin"),
                                 "--eval-set", "toy", "--context", "16", "--dtype", "fp32", "--device", "cpu",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = io.read_measurements(out, table="ppl").iloc[0]
    assert (row["model_name"], row["eval_set"], row["num_eval_tokens"]) == (TINY, "toy", 39)
    # random weights (std 0.02) give nearly uniform predictions: perplexity close to the vocabulary size
    assert np.exp(row["nll_sum_nats"] / row["num_eval_tokens"]) == pytest.approx(512, rel=0.05)


def test_hardware_command_on_cpu(tmp_path):
    hw, steps = tmp_path / "hw.json", tmp_path / "steps.csv"
    result = runner.invoke(app, ["measure", "hardware", "--device", "cpu", "--out", str(hw), "--model", TINY,
                                 "--batch", "1", "--tokens", "1,2", "--kv", "4", "--repeats", "2",
                                 "--timing-out", str(steps), "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    assert json.loads(hw.read_text())["gpu_name"] == "cpu"
    assert len(io.read_measurements(steps, table="step", ok_only=True)) == 2


def test_measure_help_lists_subcommands():
    result = runner.invoke(app, ["measure", "--help"])
    assert result.exit_code == 0 and "ppl" in result.output and "hardware" in result.output
