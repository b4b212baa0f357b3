"""`sdlaws plan export`: each engine's file validates against that engine's documented schema
(tests/engine_schemas.py), carries the plan's choice at every planned batch size, and names the plan's inputs."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine_schemas import parse_sglang, parse_trtllm, parse_vllm
from sdlaws.cli import app
from sdlaws.plan.export import brackets, export

ROOT = Path(__file__).resolve().parent.parent
H200 = ROOT / "measurements" / "h200"
runner = CliRunner()


@pytest.fixture(scope="module")
def roofline_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("roofline")
    result = runner.invoke(app, ["plan", "serving", "--target", "llama-3.1-8b", "--draft", "llama-3.2-1b",
                                 "--hardware", "h200", "--samples", "20", "--batch", "1,4,16,64,256",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "plan.json"


@pytest.fixture(scope="module")
def engine_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine")
    result = runner.invoke(app, ["plan", "serving", "--target", "random:llama-3.1-8b", "--draft",
                                 "random:llama-3.2-1b", "--hardware", "h200", "--steps", str(H200 / "steps.csv"),
                                 "--profile", str(H200 / "thm13-profile.json"), "--kv-len", "528",
                                 "--max-new-tokens", "32", "--batch", "1,4,16,64,256", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "plan.json"


def _export(plan, engine, tmp_path, *args):
    out = tmp_path / f"spec.{engine}"
    result = runner.invoke(app, ["plan", "export", str(plan), "--engine", engine, "--out", str(out), *args])
    return result, out


def _k_at(table, batch):
    """vLLM's K at a batch size from its inclusive [start, end, K] table."""
    return next(k for lo, hi, k in table if lo <= batch <= hi)


def test_vllm_export_of_the_roofline_plan(roofline_plan, tmp_path):
    result, out = _export(roofline_plan, "vllm", tmp_path, "--draft", "meta-llama/Llama-3.2-1B-Instruct")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    config = parse_vllm(text)
    serving = json.loads(roofline_plan.read_text())["tables"]["serving"]
    for row in serving:  # the plan's chain length at every planned batch size (0 where it predicts a slowdown)
        assert _k_at(config.num_speculative_tokens_per_batch_size, row["batch_size"]) == \
            (row["chain_num_spec_tokens"] if row["chain_speedup"] >= 1 else 0)
    assert config.num_speculative_tokens_per_batch_size[-1][1] == 1024
    assert config.model == "meta-llama/Llama-3.2-1B-Instruct" and config.method == "draft_model"
    for named in ("llama-3.1-8b", "llama-3.2-1b", "H200", "bfloat16", "Cost model", "alpha =", str(roofline_plan)):
        assert named in text


def test_all_engines_from_the_engine_search(engine_plan, tmp_path):
    plan = json.loads(engine_plan.read_text())
    candidates = plan["tables"]["engine_candidates"]
    vllm = parse_vllm(_export(engine_plan, "vllm", tmp_path)[1].read_text())
    trt_text = _export(engine_plan, "trtllm", tmp_path, "--method", "Eagle3")[1].read_text()
    trt = parse_trtllm(trt_text)
    sglang = parse_sglang(_export(engine_plan, "sglang", tmp_path, "--method", "EAGLE3")[1].read_text())
    for b in (1, 4, 16, 64, 256):
        here = [r for r in candidates if r["batch_size"] == b]
        ar = next(r["decode_tokens_per_s"] for r in here if r["method"] == "ar")
        chain = max((r for r in here if r["method"] == "chain"), key=lambda r: r["decode_tokens_per_s"])
        k = chain["num_spec_tokens"] if chain["decode_tokens_per_s"] > ar else 0
        assert _k_at(vllm.num_speculative_tokens_per_batch_size, b) == k
        schedule = trt.draft_len_schedule
        assert schedule[max(s for s in schedule if s <= b)] == min(k, trt.max_draft_len)
        flags = next(v for (lo, hi), v in sglang.items() if lo <= b <= hi)
        best = max((r for r in here if r["method"] != "ar"), key=lambda r: r["decode_tokens_per_s"])
        if best["decode_tokens_per_s"] <= ar:
            assert flags is None
        else:
            assert (flags.speculative_num_steps, flags.speculative_eagle_topk, flags.speculative_num_draft_tokens) \
                == (best["num_spec_tokens"], best["tree_topk"], best["tree_budget"] + 1)
    assert trt.decoding_type == "Eagle3" and "profile of" in trt_text


def _plan(ks, speedups=None):
    """A minimal roofline plan with chain lengths ``ks`` at batch sizes 1, 8, 64."""
    speedups = speedups or [1.5] * len(ks)
    rows = [dict(batch_size=b, chain_num_spec_tokens=k, chain_speedup=s, tree_num_spec_tokens=k, tree_topk=1,
                 tree_verify_tokens=k + 1, tree_speedup=s) for b, k, s in zip((1, 8, 64), ks, speedups)]
    setup = dict(target=dict(name="t", params=8e9), draft=dict(name="d", params=1e9), hardware=dict(name="H200"),
                 dtype="bfloat16", tp=1, kv_len=1024)
    return dict(title="test plan", tables=dict(serving=rows), inputs=dict(serving=setup, alpha=0.7))


def test_trtllm_schedule_keeps_batch_one_at_the_maximum():
    text = export(_plan([2, 4, 1]), "trtllm")
    config = parse_trtllm(text)
    assert config.draft_len_schedule == {1: 2, 23: 1} and "lowered" in text  # 4 at batch 8 clamped to 2


def test_brackets_split_at_the_geometric_midpoint():
    found = brackets([1, 4, 16], [3, 3, 1], [2.0, 1.8, 1.2], 100)
    assert [(b.lo, b.hi, b.value) for b in found] == [(1, 8, 3), (9, 100, 1)]
    assert found[0].speedup == 1.8


def test_export_errors(roofline_plan, tmp_path):
    for args, words in ((("--engine", "tgi"), "use one of"), (("--engine", "vllm", "--method", "EAGLE"), "--method"),
                        (("--engine", "vllm", "--max-batch", "8"), "--max-batch")):
        result = runner.invoke(app, ["plan", "export", str(roofline_plan), "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 2 and result.output.startswith("error: ") and words in result.output
        assert not (tmp_path / "x").exists()
    no_table = tmp_path / "plan.json"
    no_table.write_text(json.dumps({"title": "draft size", "tables": {}, "inputs": {}}))
    result, out = _export(no_table, "vllm", tmp_path)
    assert result.exit_code == 2 and "no per-batch serving plan" in result.output and not out.exists()
    never = tmp_path / "never.json"
    never.write_text(json.dumps(_plan([2, 1, 1], [0.9, 0.8, 0.7])))
    result, out = _export(never, "trtllm", tmp_path)
    assert result.exit_code == 2 and "no speedup" in result.output and not out.exists()
