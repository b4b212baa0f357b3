"""`sdlaws train corpus` and `sdlaws train model` through the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sdlaws.cli import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("single_thread")


def test_corpus_then_model_then_resume(make_source_dir, tmp_path):
    src = make_source_dir(tmp_path)
    result = runner.invoke(app, ["train", "corpus", "--out", str(tmp_path / "c"), "--source", str(src),
                                 "--vocab", "300", "--test-fraction", "0.25", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["tokenizer"]["vocab_size"] <= 300 and manifest["splits"]["test"]["num_files"] >= 1
    args = ["train", "model", "--corpus", str(tmp_path / "c"), "--out", str(tmp_path / "m"), "--layers", "1",
            "--hidden", "32", "--tokens", "1k", "--checkpoints", "2", "--seq-len", "32", "--batch-size", "4",
            "--device", "cpu", "--json"]
    first = runner.invoke(app, args + ["--until-tokens", "256"])
    assert first.exit_code == 0, first.output
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    ckpts = json.loads(done.stdout)["checkpoints"]["L1-H32-T1k-s0"]
    assert [c["pretrain_tokens"] for c in ckpts][-1] == 1024 and ckpts[-1]["stopped_early"] is False
    wsd = [*args[:5], str(tmp_path / "wsd"), *args[6:], "--schedule", "wsd", "--decay-fraction", "0.25",
           "--checkpoint-every-s", "0", "--first-checkpoint", "512"]
    paused = json.loads(runner.invoke(app, wsd + ["--until-tokens", "640"]).stdout)   # first branch finished
    assert paused["stopped_early"] and [c["pretrain_tokens"] for c in paused["checkpoints"]["L1-H32-T1k-s0"]] == [512]
    finished = json.loads(runner.invoke(app, wsd).stdout)["checkpoints"]["L1-H32-T1k-s0"]
    assert [(c["pretrain_tokens"], c["branch"], c["decay_start_tokens"]) for c in finished] == \
        [(512, "decay", 384), (1024, "decay", 768)]


def test_cli_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["train", "model", "--corpus", str(tmp_path), "--tokens", "1k", "--layers", "1"])
    assert result.exit_code == 2 and "error: say which model to train" in result.output
    result = runner.invoke(app, ["train", "model", "--corpus", str(tmp_path), "--tokens", "1k", "--family", "depth",
                                 "--device", "cpu"])
    assert result.exit_code == 2 and "no manifest.json" in result.output
    result = runner.invoke(app, ["train", "model", "--corpus", str(tmp_path), "--tokens", "1k", "--family", "depth",
                                 "--lr", "1e-3"])
    assert result.exit_code == 2 and "describe a single model" in result.output
    result = runner.invoke(app, ["train", "corpus", "--out", str(tmp_path / "c"), "--vocab", "10"])
    assert result.exit_code == 2 and "--vocab 10 is out of range" in result.output
