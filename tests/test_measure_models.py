"""Model specs: parsing, random shapes (checked against published parameter counts), local dirs, errors."""

import time

import pytest
import torch

from measure_helpers import tiny_model_dir
from sdlaws.errors import ModelError
from sdlaws.measure.models import load_model, parse_spec, random_config
from sdlaws.shapes import SHAPES


def test_parse_spec_forms(tmp_path):
    spec = parse_spec("random:llama-3.2-1b?num_hidden_layers=4&rms_norm_eps=1e-6&tie_word_embeddings=false")
    assert (spec.kind, spec.name) == ("random", "llama-3.2-1b")
    assert spec.overrides == {"num_hidden_layers": 4, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}
    hub = parse_spec("EleutherAI/pythia-160m@step1000")
    assert (hub.kind, hub.name, hub.revision) == ("hub", "EleutherAI/pythia-160m", "step1000")
    assert parse_spec(str(tmp_path)).kind == "local"


@pytest.mark.parametrize("spec, message", [
    ("/no/such/model/dir", "no such model directory"),
    ("./relative/missing", "no such model directory"),
    ("random:nope", "unknown random shape"),
    ("random:tiny?num_hidden_layers", "is not key=value"),
    ("random:tiny?no_such_field=3", "unknown config field"),
    ("", "empty model spec"),
])
def test_bad_specs_fail_fast_with_one_line(spec, message):
    start = time.perf_counter()
    with pytest.raises(ModelError, match=message) as err:
        load_model(spec, device="cpu")
    assert "\n" not in str(err.value)
    assert time.perf_counter() - start < 5


def test_uncached_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        load_model("sdlaws-test/does-not-exist@v1", device="cpu")
    assert time.perf_counter() - start < 5


# Published parameter counts (model cards / safetensors metadata of the hub repos named in SHAPES' comments).
PUBLISHED_PARAMS = {"llama-3.2-1b": 1_235_814_400, "llama-3.1-8b": 8_030_261_248, "qwen2.5-0.5b": 494_032_768,
                    "smollm2-135m": 134_515_008, "gpt2": 124_439_808}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_random_shapes_match_published_parameter_counts(name):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(random_config(f"random:{name}"))
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[name]


def test_every_shape_builds_a_config():
    for name in SHAPES:
        assert random_config(f"random:{name}").vocab_size > 0


def test_random_model_is_seeded_typed_and_tied():
    a, tok, info = load_model("random:tiny?num_hidden_layers=1", dtype="bf16", device="cpu", seed=3)
    b, _, _ = load_model("random:tiny?num_hidden_layers=1", dtype="bf16", device="cpu", seed=3)
    c, _, _ = load_model("random:tiny?num_hidden_layers=1", dtype="bf16", device="cpu", seed=4)
    assert tok is None and a.dtype == torch.bfloat16
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert a.lm_head.weight is a.model.embed_tokens.weight  # tie_word_embeddings honoured
    assert float(a.lm_head.weight.detach().float().std()) == pytest.approx(0.02, rel=0.1)
    assert (info.layers, info.hidden_size, info.vocab_size) == (1, 64, 512)
    assert info.params == sum(p.numel() for p in a.parameters())
    logits = a(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def test_local_dir_loads_with_tokenizer_and_train_metadata(tmp_path):
    meta = {"params": 12345, "layers": 1, "pretrain_tokens": 1e6}
    path = tiny_model_dir(tmp_path / "m", train_meta=meta)
    model, tok, info = load_model(str(path), dtype="fp32", device="cpu")
    assert tok is not None and len(tok) <= info.vocab_size
    assert (info.params, info.layers, info.pretrain_tokens, info.name) == (12345, 1, 1e6, str(path))


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path), device="cpu")


def test_malformed_train_metadata_is_reported(tmp_path):
    path = tiny_model_dir(tmp_path / "m", tokenizer=False)
    (path / "sdlaws_train.json").write_text("{not json")
    with pytest.raises(ModelError, match="sdlaws_train.json: not valid JSON"):
        load_model(str(path), dtype="fp32", device="cpu")


def test_bad_dtype():
    with pytest.raises(ModelError, match="unknown dtype"):
        load_model("random:tiny", dtype="int3", device="cpu")


def test_partial_train_metadata_keeps_measured_fields(tmp_path):
    path = tiny_model_dir(tmp_path / "m", tokenizer=False, train_meta={"pretrain_tokens": 5e5, "other": 1})
    model, tok, info = load_model(str(path), dtype="fp32", device="cpu")
    assert tok is None  # no tokenizer files in the directory
    assert info.pretrain_tokens == 5e5 and info.layers == 1
    assert info.params == sum(p.numel() for p in model.parameters())
