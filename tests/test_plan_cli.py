"""`sdlaws plan` CLI: happy paths with --json, sub-commands, --fit dispatch, figures, and one-line errors."""

import json
import sys
import types

import pandas as pd
import pytest
from typer.testing import CliRunner

from sdlaws.cli import app
from sdlaws.plan.priors import PublishedLaw

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["plan", *args])


def test_full_plan_json_70b_on_h200():
    result = _run("--target", "llama-3.1-70b", "--hardware", "h200", "--samples", "50", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    sdsl = data["plans"][0]
    assert sdsl["quantity"] == "draft_params" and 1e8 < sdsl["value"] < 5e8 and sdsl["ci"][0] <= sdsl["value"]
    serving = data["tables"]["serving"]
    assert [r["batch_size"] for r in serving] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert all(r["chain_speedup_lower"] <= r["chain_speedup"] <= r["chain_speedup_upper"] for r in serving)
    flags = data["engine_flags"]
    assert "num_speculative_tokens" in flags[0]["vllm"] and "--speculative-eagle-topk" in flags[0]["sglang"]
    assert data["inputs"]["serving"]["hardware"]["name"] == "H200"


def test_full_plan_tables():
    result = _run("--target-params", "8e9", "--hardware", "h100", "--batch", "1,16", "--samples", "20")
    assert result.exit_code == 0, result.output
    for text in ("N* versus target size", "Serving settings per batch size", "--speculative-config",
                 "--speculative-num-draft-tokens", "interval:"):
        assert text in result.stdout


def test_serving_with_measured_alpha_and_named_draft():
    result = _run("serving", "--target", "llama-3-8b", "--draft", "llama-3.2-1b", "--alpha", "0.8",
                  "--rank-acceptance", "0.7,0.1,0.05,0.02,0.01,0.01,0.01,0.01", "--batch", "1,64", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert all(p["ci"] is None for p in data["plans"])
    assert '"model": "llama-3.2-1b"' in data["engine_flags"][0]["vllm"]


def test_draft_size_subcommand_writes_figure(tmp_path):
    result = _run("draft-size", "--target", "qwen2.5-7b", "--batch", "1", "--samples", "20", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "draft_size.png").stat().st_size > 0
    assert json.loads((tmp_path / "plan.json").read_text())["plans"][0]["quantity"] == "draft_params"


@pytest.fixture
def fake_fits(monkeypatch):
    """Stand-in for sdlaws.fit.result.load_fit: file name -> law object with the FitResult surface."""
    laws = {
        "topk.json": PublishedLaw(law="topk_batch", params=pd.Series({"c": 8.0, "p": 0.5}), source="t", sd={"c": 0.5}),
        "loglinear.json": PublishedLaw(law="loglinear", params=pd.Series({"a": 0.3, "b": -0.5}), source="t",
                                       sd={"a": 0.02}),
        "other.json": PublishedLaw(law="saturating", params=pd.Series({"a": 1.0}), source="t"),
    }
    module = types.ModuleType("sdlaws.fit.result")
    module.load_fit = lambda path: laws[str(path).split("/")[-1]]
    monkeypatch.setitem(sys.modules, "sdlaws.fit.result", module)


def test_fits_are_dispatched_by_law(fake_fits, tmp_path):
    result = _run("--target", "llama-3-8b", "--batch", "1,4,64", "--samples", "20", "--fit", "topk.json", "--fit",
                  "loglinear.json", "--serve-tokens", "1e11", "--acceptance", "tau", "--gamma", "4", "--json",
                  "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [round(r["law_topk"], 6) for r in data["tables"]["serving"]] == [8.0, 4.0, 1.0]
    assert any(p["quantity"] == "draft_pretrain_tokens" for p in data["plans"])
    assert {"serving.png", "pretraining.png", "draft_size.png"} <= {p.name for p in tmp_path.iterdir()}


def test_unused_law_is_rejected(fake_fits):
    result = _run("serving", "--target", "llama-3-8b", "--fit", "other.json")
    assert result.exit_code == 2 and "saturating" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--target", "llama-3.1-70b", "--hardware", "tpu9"], "unknown hardware 'tpu9'"),
    (["--hardware", "h200"], "no target model"),
    (["serving", "--target", "llama-3-8b", "--batch", "0,4"], "--batch"),
    (["pretraining", "--target", "llama-3-8b"], "log-linear law"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    result = _run(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output


def test_real_fit_results_drive_the_plan(tmp_path):
    """Integration with sdlaws.fit: fitted loglinear (tau) and plane JSONs change the plan and give intervals."""
    import numpy as np

    fit = pytest.importorskip("sdlaws.fit")
    rng = np.random.default_rng(0)
    tokens = np.repeat([1e9, 3e9, 1e10, 3e10, 1e11], 4)
    tau = 0.4 * np.log10(tokens) - 1.2 + rng.normal(0, 0.05, tokens.size)
    fit.fit_loglinear(pd.DataFrame({"draft_pretrain_tokens": tokens, "mean_acceptance_length": tau}),
                      weight=None).save(tmp_path / "loglinear.json")
    ppl_d, ppl_t = rng.uniform(8, 30, 40), rng.uniform(5, 9, 40)
    alpha = -0.006 * ppl_d + 0.012 * ppl_t + 0.66 + rng.normal(0, 0.02, 40)
    fit.fit_ppl_plane(pd.DataFrame({"draft_ppl": ppl_d, "target_ppl": ppl_t, "alpha_mle": alpha}),
                      weight=None).save(tmp_path / "plane.json")
    result = _run("--target", "llama-3-8b", "--batch", "1,8", "--samples", "50", "--json", "--gamma", "4",
                  "--serve-tokens", "1e11", "--fit", str(tmp_path / "loglinear.json"), "--fit",
                  str(tmp_path / "plane.json"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "fitted ppl_plane" in data["plans"][0]["ci_kind"]
    pre = [p for p in data["plans"] if p["quantity"] == "draft_pretrain_tokens"][0]
    assert pre["settings"]["acceptance_kind"] == "tau" and pre["ci"][0] < pre["ci"][1]
    # The fit recorded its token range (1e9-1e11), so an optimum outside it is flagged as extrapolation.
    outside = not 1e9 <= pre["value"] <= 1e11
    assert any("outside the fitted range" in w for w in pre["warnings"]) == outside


def test_steps_csv_fits_the_step_time_law(tmp_path):
    from sdlaws.hardware import get_preset
    from sdlaws.plan.cost import law_time_s, prior, workload
    from sdlaws.roofline import named_shape

    truth = prior(get_preset("h100")) * pd.Series({"hbm_bytes_per_s": 0.9, "matmul_flops_per_s": 0.8, "fixed_s": 3.0,
                                                   "layer_s": 1.5, "smooth_p": 1.2, "attention_bytes_factor": 1.1,
                                                   "attention_flops_per_s": 1.0, "gemm_half_rows": 0.5,
                                                   "elementwise_factor": 2.0})
    shape = named_shape("llama-3-8b")
    grid = [(b, n) for b in (1, 4, 16, 64, 256) for n in (1, 2, 4, 8, 16, 32)]
    times = law_time_s(truth, workload(shape, [b for b, _ in grid], [n for _, n in grid], 256))
    rows = [dict(run_id=f"r{b}-{n}", status="ok", timestamp_utc="2026-01-01T00:00:00+00:00", git_sha="x",
                 sdlaws_version="0", gpu_name="NVIDIA H100 80GB HBM3", model_name="random:llama-3-8b",
                 model_params=shape.params, batch_size=b, tokens_per_row=n, kv_len=256, num_repeats=5,
                 median_time_s=float(t)) for (b, n), t in zip(grid, times)]
    pd.DataFrame(rows).to_csv(tmp_path / "steps.csv", index=False)
    result = _run("serving", "--target", "llama-3-8b", "--draft-params", "1e8", "--alpha", "0.7", "--batch", "1,64",
                  "--steps", str(tmp_path / "steps.csv"), "--hardware", "h100", "--kv-len", "256", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    cost = data["inputs"]["cost_model"]
    assert cost["kind"] == "steptime" and "step-time law fitted on 30 step timings" in cost["statement"]
    residuals = pd.DataFrame(data["tables"]["step_law_residuals"])
    assert len(residuals) == len(rows)
    assert (residuals["law_s"] / residuals["measured_s"] - 1).abs().max() < 0.005  # the law reproduces its truth
    # one shape at one KV length leaves directions of the nine parameters to the prior: the bandwidth is
    # recovered to within the spread those directions allow
    assert cost["params"]["hbm_bytes_per_s"] == pytest.approx(truth["hbm_bytes_per_s"], rel=0.1)
    # the serving table's AR rate is the law's: batch / t(batch, 1 token)
    ar = {r["batch_size"]: r["ar_tokens_per_s"] for r in data["tables"]["serving"]}
    law_1 = law_time_s(truth, workload(shape, [1, 64], [1, 1], 256))
    assert ar[1] == pytest.approx(1 / law_1[0], rel=0.01) and ar[64] == pytest.approx(64 / law_1[1], rel=0.01)


def test_plan_without_steps_says_it_runs_on_the_datasheet_roofline():
    result = _run("serving", "--target", "llama-3-8b", "--draft-params", "1e8", "--alpha", "0.7", "--batch", "1",
                  "--hardware", "h200")
    assert result.exit_code == 0, result.output
    assert "datasheet roofline of H200" in " ".join(result.stdout.split())


def test_full_plan_says_which_draft_size_it_serves_and_spells_dtype_one_way():
    result = _run("--target", "llama-3.1-70b", "--hardware", "h200", "--batch", "1,8", "--samples", "20",
                  "--dtype", "bf16")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    for text in ("SDSL N* versus target size M (objective: tokens per FLOP", "Roofline N* per batch size (objective: "
                 "tokens/s)", "Two draft-size optima", "Draft served: the SDSL N*", "bfloat16, context"):
        assert text in out, text
    assert "bf16," not in out


def test_draft_size_subcommand_states_both_objectives():
    result = _run("draft-size", "--target", "llama-3-8b", "--batch", "1", "--samples", "20", "--json")
    assert result.exit_code == 0, result.output
    objectives = json.loads(result.stdout)["inputs"]["draft_size_objectives"]
    assert "tokens per FLOP" in objectives and "tokens/s" in objectives and "serve the SDSL N*" in objectives
