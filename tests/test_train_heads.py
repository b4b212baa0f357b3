"""`sdlaws train head`: a head learns a tiny trained target, checkpoints resume exactly, and it drafts in the engine."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from sdlaws.cli import app
from sdlaws.errors import ConfigError
from sdlaws.measure.engine import DecodeConfig, SpecDecoder
from sdlaws.measure.models import load_model
from sdlaws.train.corpus import CorpusConfig, build_corpus
from sdlaws.train.families import TrainSpec
from sdlaws.train.heads import HeadTrainConfig, head_train_flops_per_token, train_heads
from sdlaws.train.trainer import METADATA_FILE, TrainConfig, train_family

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = HeadTrainConfig(seq_len=32, batch_size=8, device="cpu", warmup_fraction=0.1)  # 256 tokens per step
runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_source_dir, small_corpus_config):
    """(corpus, target checkpoint path): a 1-layer, 64-wide target trained for a few seconds."""
    root = tmp_path_factory.mktemp("heads")
    corpus = build_corpus(root / "c", CorpusConfig(sources=(str(make_source_dir(root)),), **small_corpus_config),
                          progress=False)
    spec = TrainSpec(layers=1, hidden_size=64, tokens=60 * 256, lr=1e-2)
    config = TrainConfig(seq_len=32, batch_size=8, device="cpu", max_positions=128)  # room to decode past 32
    target = train_family([spec], corpus, root / "m", config, progress=False).final(spec.name)
    return corpus, target.path


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_head_learns_the_target_and_drafts_losslessly(setup, tmp_path, greedy_reference):
    corpus, target_path = setup
    result = train_heads(str(target_path), corpus, tmp_path, CONFIG, layers=[1], tokens=60 * 256, checkpoints=2,
                         first_checkpoint_tokens=3 * 256, lr=3e-3, progress=False)
    first, last = result.checkpoints["head-L1-T15.36k-s0"]
    assert last.metadata["train_feature_loss"] < first.metadata["train_feature_loss"]
    assert last.metadata["train_top1"] > first.metadata["train_top1"] + 0.2
    meta = json.loads((last.path / METADATA_FILE).read_text())
    head, _, info = load_model(str(last.path), dtype="float32", device="cpu")
    assert meta["kind"] == "head" and meta["target"] == str(target_path) and meta["pretrain_tokens"] == 60 * 256
    assert meta["params"] == info.params == sum(p.numel() for p in head.parameters()) and info.head
    assert meta["loss_weights"] == {"feature_smooth_l1": 1.0, "token_cross_entropy": 0.1}
    assert meta["flops_per_token"] == head_train_flops_per_token(head, 32) > 6 * meta["params"]
    assert meta["mfu"] is None and meta["feature_flops_per_token"] > 0  # no datasheet peak for a CPU
    target, _, _ = load_model(str(target_path), dtype="float32", device="cpu")
    prompts = [corpus.tokens("test")[40 * i: 40 * i + 5 + 3 * i].tolist() for i in range(3)]
    for cfg in (DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=24),
                DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=3, max_new_tokens=24)):
        tokens, stats = SpecDecoder(target, head, cfg, max_prompt_len=16).generate(prompts)
        assert tokens == [greedy_reference(target, p, 24) for p in prompts]
        assert stats.num_accepted_tokens / stats.num_drafts > 0.3  # a trained head, not a random one


def test_paused_and_resumed_equals_straight_through(setup, tmp_path):
    corpus, target_path = setup
    kwargs = dict(layers=[1, 2], tokens=8 * 256, checkpoints=2, first_checkpoint_tokens=2 * 256, progress=False)
    straight = train_heads(str(target_path), corpus, tmp_path / "a", CONFIG, **kwargs)
    paused = train_heads(str(target_path), corpus, tmp_path / "b", CONFIG, until_tokens=5 * 256, **kwargs)
    assert paused.stopped_early and paused.final("head-L2-T2.048k-s0").metadata["stopped_early"]
    resumed = train_heads(str(target_path), corpus, tmp_path / "b", CONFIG, **kwargs)
    for name in ("head-L1-T2.048k-s0", "head-L2-T2.048k-s0"):
        a, b = _weights(straight.final(name).path), _weights(resumed.final(name).path)
        assert resumed.final(name).tokens == 8 * 256 and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(ConfigError, match="other settings"):
        train_heads(str(target_path), corpus, tmp_path / "b", HeadTrainConfig(seq_len=32, batch_size=4, device="cpu"),
                    **kwargs)


def test_cli_trains_a_head_and_errors_are_one_line(setup, tmp_path):
    corpus, target_path = setup
    args = ["train", "head", "--target", str(target_path), "--corpus", str(corpus.path), "--tokens", "512",
            "--seq-len", "32", "--batch-size", "8", "--device", "cpu", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--layers", "1", "--json"])
    assert result.exit_code == 0, result.output
    heads = json.loads(result.stdout)
    assert list(heads) == ["head-L1-T512-s0"] and heads["head-L1-T512-s0"]["pretrain_tokens"] == 512
    head_dir = heads["head-L1-T512-s0"]["path"]
    for extra, message in [(["--layers", "0"], "distinct depths >= 1"), (["--layers", "1,1"], "distinct depths"),
                           (["--feature-noise", "-1"], "feature noise")]:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, [*args[:2], "--target", head_dir, *args[4:]])
    assert result.exit_code == 2 and "is a draft head" in result.output
