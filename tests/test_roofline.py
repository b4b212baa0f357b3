"""Roofline cost model: shapes, hand-computed pass times, the Thm 1.3 regime change, calibration."""

import json

import numpy as np
import pandas as pd
import pytest

from sdlaws.errors import ConfigError, InputError
from sdlaws.hardware import Hardware, get_preset
from sdlaws.calibration import calibrate
from sdlaws.plan.setup import ServingSetup
from sdlaws.roofline import (KERNELS_PER_LAYER, KERNELS_PER_PASS, ModelShape, forward_breakdown, forward_time_s,
                             kv_bytes_per_token, named_shape)

# A round-number machine and model so every term can be computed by hand.
HW = Hardware(name="toy", peak_bf16_flops_per_s=1e15, peak_fp8_flops_per_s=2e15, hbm_bytes_per_s=1e12,
              memory_bytes=80e9, interconnect_bytes_per_s=400e9, flops_efficiency=1.0, hbm_efficiency=1.0,
              launch_overhead_s=0.0)
TOY = ModelShape(name="toy", params=1e9, layers=10, hidden=512, heads=8, kv_heads=8, head_dim=64, vocab=0, tied=True)


@pytest.mark.parametrize("name, published", [
    ("GPT-2", 124_439_808),             # HF openai-community/gpt2 parameter count
    ("Llama-3-8B", 8.03e9), ("llama-3.1-70b", 70.55e9), ("Llama-3.1-405B", 405.85e9),  # Meta model cards
    ("Qwen/Qwen2.5-7B-Instruct", 7.62e9), ("Qwen2.5-0.5B", 0.49e9), ("Mistral-7B", 7.24e9),
])
def test_named_shapes_match_published_parameter_counts(name, published):
    assert named_shape(name).params == pytest.approx(published, rel=0.01)


def test_unknown_shape_lists_names():
    with pytest.raises(ConfigError, match="llama-3-70b"):
        named_shape("gpt-17")


def test_from_hf_config_file_and_errors(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shape = ModelShape.from_hf_config(tmp_path)  # a model directory works too
    assert shape == ModelShape.from_hf_config(tmp_path / "config.json")
    assert shape.params == named_shape("llama-3-8b").params and shape.kv_heads == 8 and shape.head_dim == 128
    with pytest.raises(InputError, match="intermediate_size"):
        ModelShape.from_hf_config({k: v for k, v in cfg.items() if k != "intermediate_size"})
    with pytest.raises(ConfigError, match="mixture-of-experts"):
        ModelShape.from_hf_config({**cfg, "num_local_experts": 8})
    with pytest.raises(InputError, match="no such"):
        ModelShape.from_hf_config(tmp_path / "missing.json")


def test_from_params_keeps_the_parameter_count():
    shape = ModelShape.from_params(1e8)
    assert shape.params == 1e8 and shape.matmul_params == 1e8
    assert 12 * shape.layers * shape.hidden**2 == pytest.approx(1e8, rel=0.05)


def test_decode_pass_by_hand():
    # B=1, one token, 100 cached: weights 2e9 bytes + KV (100 + 1) * 2*10*8*64*2 bytes, read at 1e12 B/s.
    assert kv_bytes_per_token(TOY) == 20480
    parts = forward_breakdown(TOY, 1, 1, 100, HW)
    assert parts["bytes"] == 2e9 + 101 * 20480
    assert parts["flops"] == 2e9 + 4 * 10 * 8 * 64 * (100 + 1)
    assert parts["time_s"] == pytest.approx((2e9 + 101 * 20480) / 1e12)
    assert bool(parts["memory_bound"])


def test_compute_bound_pass_by_hand():
    # B=1000 rows x 8 tokens, no cache: 2e9 * 8000 linear FLOPs + attention over (8+1)/2 keys on average.
    flops = 2e9 * 8000 + 4 * 10 * 8 * 64 * 8000 * 4.5
    assert forward_time_s(TOY, 1000, 8, 0, HW) == pytest.approx(flops / 1e15)


def test_overhead_dtype_and_tensor_parallel_terms():
    slow = HW.with_efficiency(launch_overhead_s=1e-6)
    base = float(forward_time_s(TOY, 1, 1, 0, HW))
    kernels = KERNELS_PER_LAYER * 10 + KERNELS_PER_PASS
    assert forward_time_s(TOY, 1, 1, 0, slow) == pytest.approx(base + kernels * 1e-6)
    assert forward_breakdown(TOY, 1, 1, 0, HW, dtype="fp8")["bytes"] == pytest.approx(1e9 + 1 * 10240)
    # tp=2: half the bytes per GPU plus 2 all-reduces per layer of 1*1*512*2 bytes, ring factor 2(tp-1)/tp = 1,
    # at half the 400 GB/s bidirectional link.
    tp2 = forward_breakdown(TOY, 1, 1, 0, HW, tp=2)
    assert tp2["allreduce_s"] == pytest.approx(2 * 10 * 1.0 * 1024 / 200e9)
    assert tp2["time_s"] == pytest.approx(base / 2 + 2 * 10 * 1024 / 200e9)
    with pytest.raises(ConfigError, match="dtype"):
        forward_time_s(TOY, 1, 1, 0, HW, dtype="float7")


def test_regime_change_verification_free_then_linear():
    """Scylla Thm 1.3: verifying more tokens is ~free while memory-bound, ~linear once compute-bound."""
    target, hw = named_shape("llama-3-70b"), get_preset("h100")
    tokens = np.array([1, 2, 4, 8, 16])
    small = forward_time_s(target, 1, tokens, 1024, hw)
    assert small.max() / small.min() < 1.01
    large = forward_time_s(target, 256, np.array([4, 8]), 1024, hw)
    assert 1.8 < large[1] / large[0] <= 2.0
    assert not forward_breakdown(target, 256, 8, 1024, hw)["memory_bound"]


def test_serving_setup_step_times_and_memory():
    setup = ServingSetup(target=TOY, hardware=HW, draft=ModelShape.from_params(1e7), kv_len=100)
    chain = setup.chain_step_time_s(4, 3)
    assert chain == pytest.approx(3 * setup.draft_time_s(4, 1) + setup.target_time_s(4, 4))
    tree = setup.tree_step_time_s(4, 2, 3)
    assert tree == pytest.approx(3 * setup.draft_time_s(4, 2) + setup.target_time_s(4, 7))
    assert bool(setup.fits(1)) and not bool(setup.fits(10**6))


def _synthetic_steps(truth: Hardware, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for name in ("random:llama-3-8b", "random:llama-3.2-1b"):
        shape = named_shape(name)
        for batch in (1, 4, 16, 64, 256):
            for tokens in (1, 4, 16):
                t = float(forward_time_s(shape, batch, tokens, 512, truth)) * rng.lognormal(0.0, 0.01)
                rows.append(dict(status="ok", gpu_name="NVIDIA H100 80GB HBM3", model_name=name,
                                 model_params=shape.params, batch_size=batch, tokens_per_row=tokens, kv_len=512,
                                 num_repeats=10, median_time_s=t))
    return pd.DataFrame(rows)


def test_calibrate_recovers_known_factors():
    preset = get_preset("h100")
    truth = preset.with_efficiency(flops_efficiency=0.55, hbm_efficiency=0.75, launch_overhead_s=6e-6)
    cal = calibrate(_synthetic_steps(truth), preset)
    assert all(cal.identified.values())
    assert cal.params["flops_efficiency"] == pytest.approx(0.55, rel=0.05)
    assert cal.params["hbm_efficiency"] == pytest.approx(0.75, rel=0.05)
    assert cal.params["launch_overhead_s"] == pytest.approx(6e-6, rel=0.15)
    assert cal.median_abs_pct_error < 2.0
    assert cal.hardware.flops_efficiency == cal.params["flops_efficiency"]
    assert "median |error|" in cal.summary() and cal.to_dict()["residuals"]


def test_calibrate_flags_unidentified_flops_efficiency():
    preset = get_preset("h100")
    steps = _synthetic_steps(preset.with_efficiency(hbm_efficiency=0.7))
    memory_only = steps[steps["batch_size"] * steps["tokens_per_row"] <= 16]
    cal = calibrate(memory_only, preset)
    assert not cal.identified["flops_efficiency"]
    assert cal.params["flops_efficiency"] == preset.flops_efficiency
    assert cal.params["hbm_efficiency"] == pytest.approx(0.7, rel=0.05)


def test_calibrate_input_errors():
    steps = _synthetic_steps(get_preset("h100"))
    with pytest.raises(InputError, match="at least 3"):
        calibrate(steps.head(2), get_preset("h100"))
    mixed = steps.assign(gpu_name=["a", "b"] * (len(steps) // 2))
    with pytest.raises(InputError, match="several devices"):
        calibrate(mixed, get_preset("h100"))


def test_serving_setup_spells_dtypes_as_torch_does():
    target, hw = named_shape("llama-3-8b"), get_preset("h100")
    setup = ServingSetup(target=target, hardware=hw, dtype="bf16", kv_dtype="FP16")
    assert (setup.dtype, setup.kv_dtype, setup.to_dict()["dtype"]) == ("bfloat16", "float16", "bfloat16")
    with pytest.raises(ConfigError, match="unknown dtype 'bf17'"):
        ServingSetup(target=target, hardware=hw, dtype="bf17")
