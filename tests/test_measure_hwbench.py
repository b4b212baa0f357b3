"""Hardware micro-benchmarks and forward timing on CPU: valid JSON / step rows, and the timed forward is right."""

import json

import pandas as pd
import pytest
import torch

from sdlaws import io
from sdlaws.hardware import PROFILE_KEYS, from_measured_profile
from sdlaws.measure.hwbench import StepSweep, _forward_inputs, _prefilled_cache, measure_hardware, time_forward
from sdlaws.measure.models import load_model

TINY = "random:tiny?num_hidden_layers=1"


def test_cpu_profile_is_complete_and_loads_as_hardware(tmp_path):
    profile = measure_hardware("cpu", dtype="bfloat16")
    path = io.save_json(profile, tmp_path / "hw.json")
    data = json.loads(path.read_text())
    assert data["gpu_name"] == "cpu" and data["graph_launch_overhead_s"] is None
    for key in ("memory_bytes", "matmul_flops_per_s", "hbm_bytes_per_s", "launch_overhead_s"):
        assert data[key] > 0
    assert {"git_sha", "sdlaws_version", "timestamp_utc"} <= set(data) and set(PROFILE_KEYS) <= set(data)
    hw = from_measured_profile(data, source=str(path))  # the planner accepts it
    assert hw.hbm_bytes_per_s == data["hbm_bytes_per_s"]


def test_timed_forward_computes_the_continuation_of_the_cached_prefix():
    model, _, info = load_model(TINY, dtype="fp32", device="cpu")
    with torch.inference_mode():
        cache = _prefilled_cache(model, 2, 8, 12, torch.Generator().manual_seed(0))
        prefix = torch.randint(0, info.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
        inputs = _forward_inputs(model, 2, 8, 4, 12, cache, torch.Generator().manual_seed(1))
        timed = model(**inputs).logits
        full = model(torch.cat([prefix, inputs["input_ids"]], 1)).logits[:, 8:]
    torch.testing.assert_close(timed, full, rtol=1e-4, atol=1e-5)


def test_step_rows_are_valid_and_resumable(tmp_path):
    model, _, info = load_model(TINY, dtype="fp32", device="cpu")
    out = tmp_path / "steps.csv"
    sweep = StepSweep(batch_sizes=(1, 2), tokens_per_row=(1, 3), kv_len=8, num_repeats=2, num_warmup=1)
    rows = time_forward(model, info, sweep, gpu_name="cpu", on_row=lambda r: io.append_row(out, r, "step"))
    df = io.read_measurements(out, table="step")
    assert len(rows) == len(df) == 4 and set(df["status"]) == {"ok"}
    assert sorted(zip(df["batch_size"], df["tokens_per_row"])) == [(1, 1), (1, 3), (2, 1), (2, 3)]
    assert (df["median_time_s"] > 0).all() and (df["kv_len"] == 8).all() and (df["model_params"] == info.params).all()
    again = time_forward(model, info, sweep, gpu_name="cpu", done=io.done_run_ids(out))
    assert again == []


def test_measure_steps_times_the_fused_forward(tmp_path):
    """Regression: step timing of a Llama model goes through the engine's fused forward and every row is ok."""
    from sdlaws.measure.hwbench import measure_steps

    out = tmp_path / "steps.csv"
    rows = measure_steps("random:tiny", out, StepSweep(batch_sizes=(1, 2), tokens_per_row=(1, 3), kv_len=8,
                                                       num_repeats=1, num_warmup=0),
                         dtype="float32", device="cpu", progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 4
    df = io.read_measurements(out, table="step")
    assert (df["median_time_s"] > 0).all() and set(df["forward_impl"]) == {"fused"}


def test_gpt2_steps_record_stock_layers_and_the_law_refuses_them(tmp_path):
    """A model the fast path does not cover is timed on its stock layers and says so; the step-time law does not
    fit them beside fused-path rows (they go in as surfaces), and fits them alone."""
    from sdlaws.errors import InputError
    from sdlaws.hardware import get_preset
    from sdlaws.measure.hwbench import measure_steps
    from sdlaws.plan.cost import fit_steptime

    out, fused = tmp_path / "gpt2.csv", tmp_path / "llama.csv"
    sweep = StepSweep(batch_sizes=(1, 2, 4), tokens_per_row=(1, 2, 3, 4), kv_len=8, num_repeats=1, num_warmup=0)
    measure_steps("random:gpt2?n_layer=2&n_embd=64&n_head=4&vocab_size=128", out, sweep, dtype="float32",
                  device="cpu", progress=False)
    measure_steps("random:tiny", fused, sweep, dtype="float32", device="cpu", progress=False)
    stock = io.read_measurements(out, table="step")
    assert set(stock["forward_impl"]) == {"hf"}
    steps = io.read_measurements(fused, table="step")
    with pytest.raises(InputError, match="timed on stock Hugging Face layers"):
        fit_steptime(pd.concat([steps, stock]), get_preset("H100"))
    law = fit_steptime(steps, get_preset("H100"), surface_only=stock)
    assert law.source == f"fitted on {len(steps)} step timings, {len(stock)} more with surfaces only"
    # a stock-path table alone is one code path: fitted as it is (a model the fast path does not cover)
    assert fit_steptime(stock, get_preset("H100")).source == f"fitted on {len(stock)} step timings"


def test_law_refuses_the_fast_path_with_and_without_its_triton_kernels(tmp_path):
    """Rows timed with the Triton attention kernels ("fused-triton", what a CUDA run records) and without them
    ("fused") are two code paths: one fit refuses them together; rows recording no path are taken as they are."""
    from sdlaws.errors import InputError
    from sdlaws.hardware import get_preset
    from sdlaws.measure.hwbench import measure_steps
    from sdlaws.plan.cost import fit_steptime

    out = tmp_path / "tiny.csv"
    sweep = StepSweep(batch_sizes=(1, 2, 4), tokens_per_row=(1, 2, 3, 4), kv_len=8, num_repeats=1, num_warmup=0)
    measure_steps("random:tiny", out, sweep, dtype="float32", device="cpu", progress=False)
    steps = io.read_measurements(out, table="step")
    assert set(steps["forward_impl"]) == {"fused"}  # on CPU the fast path runs without the kernels
    half = len(steps) // 2
    mixed = steps.assign(forward_impl=["fused"] * half + ["fused-triton"] * (len(steps) - half))
    with pytest.raises(InputError, match=f"{half} rows fused, {len(steps) - half} rows fused-triton"):
        fit_steptime(mixed, get_preset("H100"))
    unrecorded = steps.assign(forward_impl=[None] * half + ["fused-triton"] * (len(steps) - half))
    assert fit_steptime(unrecorded, get_preset("H100")).source == f"fitted on {len(steps)} step timings"
