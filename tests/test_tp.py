"""Tensor parallelism on CPU: two gloo processes split a target and compute what one process computes.

- the split forward (DTensor Hugging Face path and the fused fast path) equals the one-process forward (fp32);
- chain and tree speculative decoding with a split target give the one-process target's greedy output, the
  same on both ranks;
- ``sdlaws measure --tp 2`` and ``sdlaws measure hardware --tp 2`` (re-launched under torchrun) write the
  usual rows with ``tp_size`` (and ``allreduce_time_s`` for steps), rank 0 only;
- a grid spread over two processes (``--shard``) appending to one CSV covers it once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from sdlaws import io, schema
from sdlaws.errors import ConfigError, InputError
from sdlaws.measure.config import MeasureConfig
from sdlaws.measure.sweep import RunConfig, expand_grid, run_id, shard_runs

ROOT = Path(__file__).resolve().parent.parent
RANKS = 2
MAX_NEW = 12
PROMPTS = [[3, 1, 4, 1, 5, 9, 2], [6, 5], [3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]]
SPECS = ["random:tiny", "random:tiny?tie_word_embeddings=false"]  # LM head whole (tied) and split over the vocab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(worker, *args) -> list:
    """Run ``worker(rank, *args)`` in RANKS gloo processes (the environment torchrun gives); their JSON results."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_rank_main, args=(_free_port(), folder, worker, args), nprocs=RANKS)
        return [json.loads((Path(folder) / f"{rank}.json").read_text()) for rank in range(RANKS)]


def _rank_main(rank, port, folder, worker, args):
    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(RANKS))
    torch.set_num_threads(1)
    (Path(folder) / f"{rank}.json").write_text(json.dumps(worker(rank, *args)))


def _forward_worker(rank):
    """Logit differences split vs whole, for each spec: HF (DTensor) forward and fused forward over a cache."""
    import torch

    from sdlaws.measure import tp
    from sdlaws.measure.fastpath import FastDecoderLM
    from sdlaws.measure.kvcache import SlotCache
    from sdlaws.measure.models import load_model

    mesh = tp.join(RANKS, "cpu")
    ids = torch.tensor([PROMPTS[2]])
    n, slots = ids.shape[1], 16
    mask = torch.where(torch.arange(slots) <= torch.arange(n)[:, None], 0.0, torch.finfo(torch.float32).min)
    out = {}
    for spec in SPECS:
        whole, _, whole_info = load_model(spec, dtype="float32", device="cpu", seed=3)
        split, _, split_info = load_model(spec, dtype="float32", device="cpu", seed=3, mesh=mesh)
        with torch.inference_mode():
            ref = whole(input_ids=ids).logits
            cache = SlotCache(split.config.num_hidden_layers, slots)
            cache.write_slots = torch.arange(n)[None]
            fused = FastDecoderLM(split)(input_ids=ids, position_ids=torch.arange(n)[None],
                                         attention_mask=mask[None, None], past_key_values=cache).logits
            out[spec] = dict(hf=float((split(input_ids=ids).logits - ref).abs().max()),
                             fused=float((fused - ref).abs().max()), scale=float(ref.abs().max()),
                             kv_heads=cache.layers[0].keys.shape[1], same_info=whole_info == split_info)
    return out


def _greedy_worker(rank, model_dir):
    """Greedy tokens of decoding with a split target (fused forward; the tree also through the DTensor HF
    forward; chain and tree also with a feature-level head drafting from the split target's features), and whether
    the ranks agree."""
    import torch

    from sdlaws.measure import tp
    from sdlaws.measure.engine import DecodeConfig, SpecDecoder
    from sdlaws.measure.head import FeatureHead, head_config
    from sdlaws.measure.models import load_model

    mesh = tp.join(RANKS, "cpu")
    target, _, _ = load_model(str(model_dir / "target"), dtype="float32", device="cpu", mesh=mesh)
    draft, _, _ = load_model(str(model_dir / "draft"), dtype="float32", device="cpu")
    torch.manual_seed(3)  # the same head on both ranks
    head = FeatureHead(head_config(target.config, layers=1, initializer_range=0.2)).eval()
    configs = {"ar": DecodeConfig(method="ar", max_new_tokens=MAX_NEW),
               "chain": DecodeConfig(method="chain", num_spec_tokens=3, max_new_tokens=MAX_NEW),
               "tree": DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=2, max_new_tokens=MAX_NEW)}
    configs["tree-hf"] = replace(configs["tree"], fused_forward=False)
    drafts = {**dict.fromkeys(configs, draft), "chain-head": head, "tree-head": head}
    configs.update({"chain-head": configs["chain"], "tree-head": configs["tree"]})
    out = {}
    for name, config in configs.items():
        tokens, stats = SpecDecoder(target, drafts[name], config, max_prompt_len=16).generate(PROMPTS)
        out[name] = dict(tokens=tokens, same=tp.same_on_ranks(tokens, "cpu"), accepted=stats.num_accepted_tokens)
    return out


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    """A target and a draft saved as model directories (init_std 0.2: clear argmax gaps, no near-ties)."""
    from conftest import make_tiny_llama

    path = tmp_path_factory.mktemp("pair")
    make_tiny_llama(vocab=64, layers=2, hidden=32, heads=4, kv_heads=2, seed=0, init_std=0.2).save_pretrained(
        path / "target")
    make_tiny_llama(vocab=64, layers=1, hidden=32, heads=4, kv_heads=2, seed=1, init_std=0.2).save_pretrained(
        path / "draft")
    return path


def test_split_forward_equals_the_whole_forward():
    for rank in _spawn(_forward_worker):
        for spec in SPECS:
            r = rank[spec]
            assert r["hf"] <= 1e-5 * r["scale"] and r["fused"] <= 1e-5 * r["scale"], (spec, r)
            assert r["kv_heads"] == 1  # each rank caches its own half of the 2 KV heads
            assert r["same_info"]  # parameter counts are those of the whole model


def test_speculative_decoding_with_a_split_target_is_lossless(pair_dir, greedy_reference):
    from conftest import make_tiny_llama

    target = make_tiny_llama(vocab=64, layers=2, hidden=32, heads=4, kv_heads=2, seed=0, init_std=0.2)
    expected = [greedy_reference(target, p, MAX_NEW) for p in PROMPTS]
    ranks = _spawn(_greedy_worker, pair_dir)
    assert ranks[0] == ranks[1]
    for name, result in ranks[0].items():
        assert result["tokens"] == expected, name
        assert result["same"], name
    assert ranks[0]["chain"]["accepted"] > 0 and ranks[0]["tree"]["accepted"] > 0


def _sdlaws(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -m sdlaws ARGS`` in a subprocess (the command a user types)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "sdlaws", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT, check=False)


def test_measure_tp_writes_spec_rows_with_tp_size(tmp_path):
    out = tmp_path / "spec.csv"
    done = _sdlaws("measure", "--tp", "2", "--target", "random:tiny?tie_word_embeddings=false",
                   "--draft", "random:tiny?num_hidden_layers=1", "--gamma", "2", "--topk", "1,2", "--batch", "2",
                   "--prompts", "random", "--num-prompts", "2", "--max-new-tokens", "4", "--max-prompt-len", "5",
                   "--dtype", "fp32", "--device", "cpu", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("3 configurations ->") == 1  # printed by rank 0 only
    df = io.read_measurements(out, table="spec")
    assert list(df["method"]) == ["ar", "chain", "tree"] and set(df["status"]) == {"ok"}  # one row each
    assert set(df["tp_size"]) == {2} and df["run_id"].is_unique


def test_measure_hardware_tp_writes_step_rows_with_allreduce_times(tmp_path):
    steps = tmp_path / "steps.csv"
    done = _sdlaws("measure", "hardware", "--tp", "2", "--model", "random:tiny?tie_word_embeddings=false",
                   "--batch", "1,4", "--tokens", "1,3", "--kv", "8", "--repeats", "2", "--dtype", "fp32",
                   "--device", "cpu", "--out", str(tmp_path / "hw.json"), "--timing-out", str(steps))
    assert done.returncode == 0, done.stdout + done.stderr
    df = io.read_measurements(steps, table="step")
    assert len(df) == 4 and set(df["status"]) == {"ok"} and set(df["tp_size"]) == {2}
    assert (df["allreduce_time_s"] > 0).all() and (df["median_time_s"] > 0).all()
    assert json.loads((tmp_path / "hw.json").read_text())["gpu_name"] == "cpu"


@pytest.mark.parametrize("args, message", [
    (["measure", "--target", "random:tiny", "--tp", "0", "--device", "cpu"], "--tp 0 is out of range"),
    (["measure", "--target", "random:tiny", "--tp", "2", "--device", "cuda:1"], "names one GPU"),
    (["measure", "--target", "random:tiny", "--shard", "2/2", "--device", "cpu"], "--shard 2/2: expected i/n"),
    (["measure", "--target", "random:tiny", "--shard", "x", "--device", "cpu"], "--shard 'x': expected i/n"),
    (["measure", "hardware", "--tp", "0", "--device", "cpu"], "--tp 0 is out of range"),
    (["measure", "hardware", "--tp", "2", "--model", "random:tiny?num_key_value_heads=1", "--device", "cpu"],
     "--tp 2 must divide num_key_value_heads=1"),
    (["measure", "--target", "/no/such/model", "--tp", "2", "--device", "cpu"], "no such model directory"),
    (["measure", "--target", "random:tiny", "--tp", "2", "--device", "cpu"], "has no tokenizer"),  # before launch
    (["measure", "hardware", "--tp", "2", "--model", "head:random:tiny", "--device", "cpu"], "head is not split"),
])
def test_bad_split_options_exit_2_with_one_line(args, message):
    from typer.testing import CliRunner

    from sdlaws.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_memory_guard_counts_a_split_targets_share_and_a_whole_draft():
    from sdlaws.measure import memory
    from sdlaws.roofline import ModelShape
    from sdlaws.shapes import SHAPES

    target, draft = (ModelShape.from_hf_config(SHAPES[name]) for name in ("llama-3.1-70b", "llama-3.2-1b"))
    kw = dict(dtype="bfloat16", batch_size=8, longest_prompt=512, max_new_tokens=128, depth=4, topk=1, budget=4,
              cuda=True)
    one, four = memory.need("x", target, draft, **kw), memory.need("x", target, draft, tp_size=4, **kw)
    alone = memory.need("x", None, draft, **kw)  # the draft's part
    assert four.weights - alone.weights == pytest.approx((one.weights - alone.weights) / 4)
    assert four.kv_cache - alone.kv_cache == pytest.approx((one.kv_cache - alone.kv_cache) / 4)
    assert memory.need("x", target, None, **kw) == memory.need("x", target, None, tp_size=1, **kw)


def test_plan_refuses_sizes_the_split_cannot_divide():
    from sdlaws.measure import tp
    from sdlaws.measure.models import random_config

    assert set(tp.plan(random_config("random:tiny"), 2)) == {
        f"model.layers.*.{m}" for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert "lm_head" in tp.plan(random_config("random:tiny?tie_word_embeddings=false"), 2)
    with pytest.raises(ConfigError, match="--tp 4 must divide num_key_value_heads=2"):
        tp.plan(random_config("random:tiny"), 4)
    gpt2 = random_config("random:tiny")
    gpt2.base_model_tp_plan = {"h.*.attn.c_attn": "colwise_gather_output"}
    with pytest.raises(ConfigError, match="no column/row-wise tensor-parallel plan"):
        tp.plan(gpt2, 2)


def _config(**kw):
    base = dict(targets=("t",), drafts=("d",), num_spec_tokens=(1, 2), topks=(1, 2), batch_sizes=(1, 2), prompts="random",
                num_prompts=3, max_new_tokens=4, max_prompt_len=6, dtype="fp32", device="cpu")
    return MeasureConfig(**{**base, **kw})


def test_split_rows_have_their_own_run_ids():
    run = RunConfig("t", "d", "chain", 2, 1, 2, 1, 0.0)
    assert run_id(run, _config(), "gpu") != run_id(run, _config(tp_size=2), "gpu")
    assert run_id(run, _config(), "gpu") == run_id(run, _config(tp_size=1), "gpu")


def test_shards_cover_the_grid_once_and_keep_repeats_together():
    runs = expand_grid(_config(repeats=2))
    shards = [shard_runs(runs, i, 3) for i in range(3)]
    assert sorted(map(repr, sum(shards, []))) == sorted(map(repr, runs))
    for share in shards:  # both repeats of a grid point in the same shard, next to each other
        assert all(share[i].first() == share[i + 1].first() for i in range(0, len(share), 2))
    with pytest.raises(ConfigError, match="--shard 3/3"):
        shard_runs(runs, 3, 3)


def _shard_worker(index, count, out):
    """One process of a sharded sweep, with the fake decoder of the sweep tests."""
    from measure_helpers import fake_factory

    return _sweep(out, (index, count), fake_factory()[0])


def _sweep(out, shard, factory) -> int:
    """Configurations measured by one (sharded) fake-decoder sweep into ``out``."""
    from sdlaws.measure.sweep import run_sweep

    config = _config(targets=("random:tiny?num_hidden_layers=1",), drafts=("random:tiny?num_hidden_layers=1",))
    return run_sweep(config, out, decoder_factory=factory, shard=shard, progress=False).num_ok


def test_two_process_sharded_sweep_equals_one_process_sweep(tmp_path):
    import multiprocessing

    from measure_helpers import fake_factory

    single = tmp_path / "single.csv"
    _sweep(single, None, fake_factory()[0])
    shared = tmp_path / "shared.csv"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        counts = pool.starmap(_shard_worker, [(0, 2, shared), (1, 2, shared)])
    one, two = io.read_measurements(single, table="spec"), io.read_measurements(shared, table="spec")
    assert sum(counts) == len(one) == len(two) == 2 + 2 * 2 * 2 and counts[0] > 0 and counts[1] > 0
    assert two["run_id"].is_unique and set(two["run_id"]) == set(one["run_id"])
    assert _sweep(shared, (0, 2), fake_factory()[0]) == 0  # resumed: nothing left in its share


def test_step_fits_refuse_mixed_tensor_parallel_sizes():
    from sdlaws.calibration import ok_step_rows

    rows = pd.DataFrame({"status": ["ok"] * 4, "gpu_name": ["h200"] * 4, "tp_size": [1, 1, 2, 2]})
    with pytest.raises(InputError, match=r"step rows mix tensor-parallel sizes \[1, 2\]"):
        ok_step_rows(rows, 1, "the step-time law")
    assert len(ok_step_rows(rows.assign(tp_size=[2, 2, 2, 2]), 1, "the step-time law")) == 4
    assert len(ok_step_rows(rows.drop(columns="tp_size"), 1, "the step-time law")) == 4  # absent = one GPU


def test_speedup_pairs_rows_with_the_baseline_of_their_tp_size():
    from sdlaws.rates import derive

    rows = pd.DataFrame({
        "status": "ok", "target_name": "t", "batch_size": 1, "temperature": 0.0, "prompt_set": "p",
        "max_new_tokens": 8, "gpu_name": "g", "num_prompts": 1, "num_prompt_tokens": 4, "num_batches": 1,
        "num_steps": 4, "num_drafts": [0, 4, 0, 4], "num_draft_tokens": [0, 8, 0, 8],
        "num_accepted_tokens": [0, 4, 0, 4], "num_spec_tokens": [0, 2, 0, 2],
        "method": ["ar", "chain", "ar", "chain"], "num_new_tokens": 8, "prefill_time_s": 0.1,
        "total_time_s": [2.0, 1.0, 1.0, 1.0], "tp_size": [None, None, 2, 2]})
    speedup = derive(rows)["speedup"].tolist()
    assert speedup == pytest.approx([1.0, 2.0, 1.0, 1.0])  # tp 2 chain vs tp 2 ar; absent tp_size = 1
    assert schema.tp_sizes(rows).tolist() == [1, 1, 2, 2]


@pytest.mark.slow
def test_gpu_tp_script_runs_on_cpu_and_resumes(tmp_path):
    """benchmarks/gpu_tp_steps.sh with tiny shapes, gloo and two "GPUs": tp 8 and 4 skipped, tp 2 and 1 measured,
    each tp size in its own CSVs; a re-run adds nothing."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OUT": str(tmp_path), "GPUS": "2",
           "BIG": "random:tiny?tie_word_embeddings=false", "SMALL": "random:tiny",
           "DRAFT": "random:tiny?num_hidden_layers=1", "DEVICE": "cpu", "DTYPE": "fp32", "BATCHES": "1,2",
           "TOKENS": "1,2", "SPEC_BATCHES": "2", "MAX_NEW": "4"}

    def script():
        done = subprocess.run(["bash", "benchmarks/gpu_tp_steps.sh"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    first = script()
    assert "at tp 8: 2 GPUs visible" in first and "at tp 4: 2 GPUs visible" in first
    tables = {name: io.read_measurements(tmp_path / f"{name}.csv")
              for name in ("steps-tp2", "steps-tp1", "spec-tp2", "spec-tp1")}
    assert len(tables["steps-tp2"]) == 2 * 4 and set(tables["steps-tp2"]["tp_size"]) == {2}  # both shapes
    assert (tables["steps-tp2"]["allreduce_time_s"] > 0).all()
    assert set(tables["steps-tp1"]["tp_size"]) == {1} and tables["steps-tp1"]["allreduce_time_s"].isna().all()
    assert sorted(tables["spec-tp2"]["method"]) == ["ar", "ar", "chain", "chain", "tree", "tree"]
    assert all(set(t["status"]) == {"ok"} for t in tables.values())
    assert len((tmp_path / "hw.jsonl").read_text().splitlines()) == 3
    script()
    assert all(len(io.read_measurements(tmp_path / f"{name}.csv")) == len(t) for name, t in tables.items())
