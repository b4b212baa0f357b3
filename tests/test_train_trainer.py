"""Trainer: loss falls, log-spaced checkpoints with metadata, exact resume, concurrent == alone, HF loading."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from sdlaws.errors import ConfigError, InputError
from sdlaws.train.families import FAMILIES, TrainSpec, family_specs, format_tokens, parse_tokens
from sdlaws.train.trainer import (METADATA_FILE, TokenWindows, TrainConfig, list_checkpoints, lr_factor,
                                  train_family, wsd_branches, wsd_factor)

CONFIG = TrainConfig(seq_len=32, batch_size=4, device="cpu", warmup_fraction=0.1)  # 128 tokens per step
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def corpus(small_corpus):
    """The session's small corpus (conftest); training only reads it."""
    return small_corpus


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_loss_falls_and_checkpoints_land_at_log_spaced_tokens(corpus, tmp_path):
    spec = TrainSpec(layers=1, hidden_size=32, tokens=60 * 128, checkpoints=4, first_checkpoint_tokens=128, lr=1e-2)
    result = train_family([spec], corpus, tmp_path, CONFIG, progress=False)
    ckpts = result.checkpoints[spec.name]
    assert [c.tokens for c in ckpts] == [s * 128 for s in spec.checkpoint_steps(128)] == [128, 512, 1920, 7680]
    assert [c.path.name for c in ckpts] == [f"step-{c.tokens}" for c in ckpts]
    assert list_checkpoints(tmp_path / spec.name) == ckpts
    losses = [c.metadata["train_loss"] for c in ckpts]
    assert losses[-1] < losses[0] - 0.5, losses  # from ~ln(320) = 5.8 nats down
    meta = json.loads((ckpts[-1].path / METADATA_FILE).read_text())
    assert meta["params"] == sum(p.numel() for p in _weights(ckpts[-1].path).values()) == spec.params(corpus.vocab_size)
    assert meta["non_embedding_params"] == spec.params(corpus.vocab_size) - corpus.vocab_size * 32
    assert (meta["layers"], meta["hidden_size"], meta["pretrain_tokens"], meta["seed"]) == (1, 32, 7680, 0)
    assert meta["corpus_sha256"] == corpus.sha256 and meta["git_sha"] and meta["versions"]["torch"]
    assert meta["corpus_manifest_sha256"] == hashlib.sha256((corpus.path / "manifest.json").read_bytes()).hexdigest()
    assert meta["stopped_early"] is False and meta["dtype"] == "float32"


def test_resume_continues_exactly(corpus, tmp_path):
    spec = TrainSpec(layers=1, hidden_size=32, tokens=12 * 128, checkpoints=2, first_checkpoint_tokens=3 * 128)
    straight = train_family([spec], corpus, tmp_path / "a", CONFIG, progress=False).final(spec.name)
    first = train_family([spec], corpus, tmp_path / "b", CONFIG, until_tokens=6 * 128, progress=False)
    assert first.stopped_early and [c.tokens for c in first.checkpoints[spec.name]] == [384, 768]
    assert first.final(spec.name).metadata["stopped_early"] is True
    resumed = train_family([spec], corpus, tmp_path / "b", CONFIG, progress=False).final(spec.name)
    assert resumed.tokens == straight.tokens == 12 * 128
    a, b = _weights(straight.path), _weights(resumed.path)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    again = train_family([spec], corpus, tmp_path / "b", CONFIG, progress=False)  # finished: nothing to do
    assert again.final(spec.name).metadata == resumed.metadata
    with pytest.raises(ConfigError, match="other settings"):
        train_family([spec], corpus, tmp_path / "b", TrainConfig(seq_len=32, batch_size=8, device="cpu"))


def test_concurrent_models_see_the_same_tokens_as_alone(corpus, tmp_path):
    small = TrainSpec(layers=1, hidden_size=32, tokens=5 * 128)
    other = TrainSpec(layers=2, hidden_size=32, tokens=8 * 128, seed=1)
    together = train_family([small, other], corpus, tmp_path / "both", CONFIG, progress=False)
    alone = train_family([small], corpus, tmp_path / "alone", CONFIG, progress=False)
    a, b = _weights(together.final(small.name).path), _weights(alone.final(small.name).path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert together.final(other.name).tokens == 8 * 128


def test_time_limit_saves_what_was_reached(corpus, tmp_path):
    spec = TrainSpec(layers=1, hidden_size=32, tokens=50 * 128)
    result = train_family([spec], corpus, tmp_path, TrainConfig(seq_len=32, batch_size=4, device="cpu",
                                                                time_limit_s=0.0), progress=False)
    assert result.stopped_early and result.checkpoints[spec.name] == []
    with pytest.raises(InputError, match="no checkpoint"):
        result.final(spec.name)


def test_checkpoint_loads_as_a_hugging_face_model(corpus, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = TrainSpec(layers=1, hidden_size=32, tokens=2 * 128)
    path = train_family([spec], corpus, tmp_path, CONFIG, progress=False).final(spec.name).path
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    ids = tok("def f(x):\n    return", return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, ids.shape[1], corpus.vocab_size)
    assert model.config.max_position_embeddings == CONFIG.seq_len and tok.eos_token_id == corpus.eos_id


def test_windows_are_seeded_contiguous_slices():
    tokens = np.arange(1000, dtype=np.uint16)
    windows = TokenWindows(tokens, seq_len=16, batch_size=3, seed=7)
    batch = windows.batch(5)
    assert batch.shape == (3, 17) and batch.dtype == np.int64
    assert np.array_equal(batch, windows.batch(5)) and not np.array_equal(batch, windows.batch(6))
    assert (np.diff(batch, axis=1) == 1).all()
    with pytest.raises(InputError, match="fewer than one window"):
        TokenWindows(tokens[:10], seq_len=16, batch_size=1, seed=0)


def test_schedule_and_checkpoint_spacing():
    factors = [lr_factor(s, 100, 0.1, 0.1) for s in range(100)]
    assert factors[9] == 1.0 and factors[0] == pytest.approx(0.1) and factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    steps = TrainSpec(4, 256, tokens=80_000_000, checkpoints=8).checkpoint_steps(65_536)
    assert steps[-1] == round(80_000_000 / 65_536) and steps == sorted(set(steps)) and len(steps) == 8
    ratios = np.diff(np.log(steps[1:]))
    assert np.allclose(ratios, ratios.mean(), rtol=0.2)  # log-spaced (first steps are rounded)


def test_specs_families_and_token_parsing():
    assert TrainSpec(2, 128, tokens=30_000_000).name == "L2-H128-T30M-s0"
    assert {(s.layers, s.hidden_size) for s in family_specs("depth", tokens=1000)} == set(FAMILIES["depth"])
    assert parse_tokens("1.5k") == 1500 and parse_tokens("80M") == 80_000_000 and parse_tokens("2e6") == 2_000_000
    assert format_tokens(150_000_000) == "150M"
    with pytest.raises(ConfigError, match="unknown family"):
        family_specs("nope", tokens=1)
    with pytest.raises(ConfigError, match="divisible"):
        TrainSpec(2, 100, tokens=1, heads=3)
    with pytest.raises(ConfigError, match="cannot read"):
        parse_tokens("lots")


WSD = TrainConfig(seq_len=32, batch_size=4, device="cpu", warmup_fraction=0.0, schedule="wsd", decay_fraction=0.2,
                  loss_window=4, heldout_eval_tokens=2048)
#: Metadata that depends on the clock or the host, not on the training.
TIMING = {"busy_time_s", "timed_steps", "tokens_per_s", "mfu", "mfu_measured", "measured_matmul_flops_per_s",
          "timestamp_utc", "train_config"}


def _same_run(a, b) -> None:
    """Two checkpoints hold identical weights and identical metadata apart from timing and settings."""
    wa, wb = _weights(a.path), _weights(b.path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert {k: v for k, v in a.metadata.items() if k not in TIMING} == \
        {k: v for k, v in b.metadata.items() if k not in TIMING}


def test_wsd_schedule_shape():
    assert [wsd_factor(s, 100, 0.1, None) for s in (0, 9, 50, 99)] == [0.1, 1.0, 1.0, 1.0]   # warm-up, stable
    decay = [wsd_factor(s, 100, 0.1, (80, 20)) for s in range(78, 100)]
    assert decay[:3] == [1.0, 1.0, 1.0] and all(a > b for a, b in zip(decay[2:], decay[3:]))
    assert decay[-1] == pytest.approx(1 - (19 / 20) ** 0.5)
    assert wsd_branches([10, 20, 100], 0.2) == {10: 8, 20: 16, 100: 80}
    with pytest.raises(ConfigError, match="stable phase"):
        wsd_branches([1, 10], 0.2)


def test_wsd_branches_are_finished_runs_and_resume_exactly(corpus, tmp_path):
    spec = TrainSpec(layers=1, hidden_size=32, tokens=20 * 128, checkpoints=2, first_checkpoint_tokens=10 * 128,
                     lr=1e-2, name="m")
    straight = train_family([spec], corpus, tmp_path / "a", WSD, progress=False)
    finished = straight.checkpoints["m"]
    assert [c.path.name for c in finished] == ["decay-1280", "decay-2560"] and not straight.stopped_early
    assert [c.tokens for c in list_checkpoints(tmp_path / "a" / "m")] == [8 * 128, 16 * 128]   # trunk, separate
    for ckpt, start in zip(finished, (8, 16)):
        m = ckpt.metadata
        assert (m["branch"], m["decay_start_tokens"], m["finished_run"], m["decay_fraction"]) == \
            ("decay", start * 128, True, 0.2)
        assert m["heldout_set"] == corpus.heldout_name and 0 < m["heldout_loss"] < 10
        assert m["final_window_steps"] == 4 and 0 < m["final_window_train_loss"] < 10
    assert "heldout_loss" not in list_checkpoints(tmp_path / "a" / "m")[0].metadata   # the trunk is unfinished
    # the 10-step branch is the run trained with a budget of 10 steps: WSD's finished run at that budget
    alone = train_family([TrainSpec(1, 32, tokens=10 * 128, lr=1e-2, name="m")], corpus, tmp_path / "b", WSD,
                         progress=False)
    _same_run(alone.final("m"), finished[0])
    # three commands (stops inside the first branch, then inside the second) finish as one
    for until in (9 * 128, 18 * 128):
        paused = train_family([spec], corpus, tmp_path / "c", WSD, until_tokens=until, progress=False)
        assert paused.stopped_early and all(not p.name.endswith(f"-{until}") for p in (tmp_path / "c" / "m").iterdir())
    resumed = train_family([spec], corpus, tmp_path / "c", WSD, progress=False).checkpoints["m"]
    for a, b in zip(finished, resumed, strict=True):
        _same_run(a, b)


def test_killed_run_resumes_from_its_periodic_save(corpus, tmp_path, monkeypatch):
    from sdlaws.train.trainer import FamilyTrainer

    spec = TrainSpec(layers=1, hidden_size=32, tokens=12 * 128, checkpoints=2, first_checkpoint_tokens=3 * 128)
    config = TrainConfig(seq_len=32, batch_size=4, device="cpu", checkpoint_every_s=0.0)
    straight = train_family([spec], corpus, tmp_path / "a", config, progress=False).checkpoints[spec.name]
    step, calls = FamilyTrainer._step, []

    def dies_at_step_8(self, run, batch):
        """The command is killed (no save on the way out) as its eighth step starts."""
        calls.append(run.step)
        if len(calls) == 8:
            raise KeyboardInterrupt
        step(self, run, batch)

    monkeypatch.setattr(FamilyTrainer, "_step", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        train_family([spec], corpus, tmp_path / "b", config, progress=False)
    monkeypatch.setattr(FamilyTrainer, "_step", step)
    assert (tmp_path / "b" / spec.name / "latest").is_dir()          # saved after step 7
    resumed = train_family([spec], corpus, tmp_path / "b", config, progress=False).checkpoints[spec.name]
    for a, b in zip(straight, resumed, strict=True):
        _same_run(a, b)
    assert not (tmp_path / "b" / spec.name / "latest").exists()      # superseded by the final checkpoint


def test_metadata_records_tokens_per_second_and_model_flop_utilisation(corpus, tmp_path, monkeypatch):
    from sdlaws.train.trainer import FamilyTrainer

    monkeypatch.setattr(FamilyTrainer, "_peak_flops_per_s", lambda self: 1e12)   # CPU has no datasheet peak
    spec = TrainSpec(layers=1, hidden_size=32, tokens=5 * 128)
    m = train_family([spec], corpus, tmp_path, CONFIG, progress=False).final(spec.name).metadata
    # the first UNTIMED_STEPS (2) steps of a process are compile/autotune time, left out of the throughput
    assert m["step"] == 5 and m["timed_steps"] == 3
    flops = spec.train_flops_per_token(corpus.vocab_size, 32) * 3 * 128
    assert m["flops_per_token"] * 3 * 128 == flops and m["tokens_per_s"] == pytest.approx(384 / m["busy_time_s"])
    assert m["peak_flops_per_s"] == 1e12 and m["mfu"] == pytest.approx(flops / m["busy_time_s"] / 1e12)
    assert m["measured_matmul_flops_per_s"] > 0
    assert m["mfu_measured"] == pytest.approx(flops / m["busy_time_s"] / m["measured_matmul_flops_per_s"])
    off = train_family([spec], corpus, tmp_path / "off", TrainConfig(seq_len=32, batch_size=4, device="cpu",
                                                                     measure_matmul=False), progress=False)
    assert off.final(spec.name).metadata["mfu_measured"] is None
