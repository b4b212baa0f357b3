"""`sdlaws import`: recorded vLLM (V1, early V1, V0 log, V0 exposition) and SGLang metrics become spec rows whose
derived rates equal the hand-computed ones; bad input stops with one line and writes nothing.

The recorded files (tests/data/engines/README.md) were written from the metric names and help strings in the
engines' code; the numbers are chosen so that the rates below can be worked out by hand.
"""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdlaws import derive_rates, read_measurements
from sdlaws.cli import app

DATA = Path(__file__).parent / "data" / "engines"
runner = CliRunner()


def _import(engine, *args):
    return runner.invoke(app, ["import", engine, *map(str, args)])


def _rows(path):
    return derive_rates(read_measurements(path))


def test_vllm_v1_window_of_two_scrapes(tmp_path):
    out = tmp_path / "spec.csv"
    result = _import("vllm", DATA / "vllm_v1_after.prom", "--before", DATA / "vllm_v1_before.prom", "--out", out,
                     "--window-s", 300)
    assert result.exit_code == 0, result.output
    df = _rows(out)
    assert list(df["source_labels"].map(lambda s: json.loads(s)["engine"])) == ["0", "1"]
    e0, e1 = df.iloc[0], df.iloc[1]
    # engine 0: after - before = 1000 drafts, 3000 drafted, 1850 accepted, per position 800 / 600 / 450
    assert (e0.num_drafts, e0.num_draft_tokens, e0.num_accepted_tokens) == (1000, 3000, 1850)
    assert json.loads(e0.num_accepted_per_pos) == [800, 600, 450] and e0.num_spec_tokens == 3
    assert e0.acceptance_rate == pytest.approx(1850 / 3000)
    assert e0.mean_acceptance_length == pytest.approx(2.85)
    assert [e0[f"pos_acceptance_rate_{i}"] for i in (1, 2, 3)] == pytest.approx([0.8, 0.6, 0.45])
    assert [e0[f"cond_acceptance_rate_{i}"] for i in (1, 2, 3)] == pytest.approx([0.8, 0.75, 0.75])
    assert e1.acceptance_rate == pytest.approx(720 / 1200) and e1.mean_acceptance_length == pytest.approx(2.8)
    # traffic counters: requests over both finished reasons, tokens, and the TTFT histogram's window mean
    assert (e0.num_prompts, e0.num_prompt_tokens, e0.num_new_tokens) == (15, 256000, 2850)
    assert e0.ttft_s == pytest.approx((0.05 + 0.07 + 0.09 + 0.06 + 0.08 + 0.2 - 0.21) / 3)
    assert e0.source_engine == "vllm" and e0.source_format == "prometheus:vllm-v1" and e0.source_window_s == 300
    assert e0.target_name == "meta-llama/Llama-3.1-8B-Instruct" and e0.method == "chain"


def test_vllm_v1_single_scrape_counts_since_start(tmp_path):
    out = tmp_path / "spec.csv"
    assert _import("vllm", DATA / "vllm_v1_after.prom", "--out", out, "--target", "llama-8b").exit_code == 0
    e0 = _rows(out).iloc[0]
    assert (e0.num_drafts, e0.num_accepted_tokens, e0.target_name) == (1200, 2220, "llama-8b")
    assert e0.mean_acceptance_length == pytest.approx(1 + 2220 / 1200)


def test_vllm_v1_early_needs_the_draft_length(tmp_path):
    out = tmp_path / "spec.csv"
    missing = _import("vllm", DATA / "vllm_v1_early.prom", "--out", out)
    assert missing.exit_code == 2 and "--num-spec-tokens" in missing.output and not out.exists()
    uneven = _import("vllm", DATA / "vllm_v1_early.prom", "--out", out, "--num-spec-tokens", 3)
    assert uneven.exit_code == 2 and "not a multiple" in uneven.output and not out.exists()
    assert _import("vllm", DATA / "vllm_v1_early.prom", "--out", out, "--num-spec-tokens", 4).exit_code == 0
    row = _rows(out).iloc[0]
    assert (row.num_drafts, row.source_format) == (1000, "prometheus:vllm-v1-early")
    assert row.acceptance_rate == pytest.approx(2650 / 4000) and row.mean_acceptance_length == pytest.approx(3.65)


def test_vllm_v0_log_lines(tmp_path):
    """The last line is vLLM 0.6.3's, posted in github.com/vllm-project/vllm/issues/9539: K=3, A=8547, D=13311,
    E=10616. Drafts = D / K = 4437; accepted prefix = E - drafts = 6179 (A counts non-prefix positions too)."""
    out = tmp_path / "spec.csv"
    assert _import("vllm", DATA / "vllm_v0.log", "--out", out, "--target", "opt").exit_code == 0
    row = _rows(out).iloc[0]
    assert (row.num_drafts, row.num_draft_tokens, row.num_accepted_tokens) == (4437, 13311, 6179)
    assert row.mean_acceptance_length == pytest.approx(10616 / 4437)
    assert round(row.mean_acceptance_length / (3 + 1), 3) == 0.598  # the line's "System efficiency"
    windowed = tmp_path / "window.csv"
    result = _import("vllm", DATA / "vllm_v0.log", "--before", DATA / "vllm_v0_before.log", "--out", windowed,
                     "--target", "opt")
    assert result.exit_code == 0, result.output
    row = _rows(windowed).iloc[0]
    assert (row.num_drafts, row.num_accepted_tokens) == ((13311 - 6612) / 3, (10616 - 5262) - (13311 - 6612) / 3)


def test_vllm_v0_exposition_is_refused(tmp_path):
    out = tmp_path / "spec.csv"
    result = _import("vllm", DATA / "vllm_v0.prom", "--out", out, "--num-spec-tokens", 3)
    assert result.exit_code == 2 and result.output.startswith("error: ") and "sums" in result.output
    assert not out.exists()


def test_sglang_responses(tmp_path):
    out = tmp_path / "spec.csv"
    result = _import("sglang", DATA / "sglang_generate.jsonl", "--out", out, "--target", "llama-8b")
    assert result.exit_code == 0, result.output
    row = _rows(out).iloc[0]
    assert (row.num_drafts, row.num_draft_tokens, row.num_accepted_tokens, row.num_spec_tokens) == (140, 420, 255, 3)
    assert json.loads(row.num_accepted_per_pos) == [110, 85, 60]  # from the summed histograms [30, 25, 25, 60]
    assert row.acceptance_rate == pytest.approx(255 / 420) and row.mean_acceptance_length == pytest.approx(395 / 140)
    assert (row.num_prompts, row.num_new_tokens, row.num_prompt_tokens) == (2, 397, 200)


def test_sglang_metrics_and_missing_target_are_refused(tmp_path):
    out = tmp_path / "spec.csv"
    gauges = _import("sglang", DATA / "sglang_metrics.prom", "--out", out, "--target", "x")
    assert gauges.exit_code == 2 and "gauges" in gauges.output
    unnamed = _import("sglang", DATA / "sglang_generate.jsonl", "--out", out)
    assert unnamed.exit_code == 2 and "--target" in unnamed.output and not out.exists()


def test_counter_reset_and_disagreeing_draft_length(tmp_path):
    out = tmp_path / "spec.csv"
    reset = _import("vllm", DATA / "vllm_v1_before.prom", "--before", DATA / "vllm_v1_after.prom", "--out", out)
    assert reset.exit_code == 2 and "restarted" in reset.output
    clash = _import("vllm", DATA / "vllm_v1_after.prom", "--out", out, "--num-spec-tokens", 5)
    assert clash.exit_code == 2 and "3 draft positions" in clash.output and not out.exists()


def test_not_metrics(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    out = tmp_path / "spec.csv"
    for engine in ("vllm", "sglang"):
        result = _import(engine, junk, "--out", out, "--target", "x")
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_fit_and_rates_accept_imported_rows(tmp_path):
    out = tmp_path / "spec.csv"
    _import("vllm", DATA / "vllm_v1_after.prom", "--before", DATA / "vllm_v1_before.prom", "--out", out)
    _import("vllm", DATA / "vllm_v1_early.prom", "--out", out, "--num-spec-tokens", 4)
    result = runner.invoke(app, ["fit", str(out), "--law", "tau_chain", "--out", str(tmp_path / "fit")])
    assert result.exit_code == 0, result.output
    fitted = json.loads((tmp_path / "fit" / "tau_chain.json").read_text())
    assert 0.7 < fitted["params"]["alpha"] < 0.9
