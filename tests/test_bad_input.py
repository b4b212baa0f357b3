"""Bad input to every command: one ``error:`` line naming the problem, exit code 2, and every output untouched.

The workspace holds good outputs of all four commands (a fit, a plan, a measured spec CSV, a ppl CSV, a hardware
profile, a corpus) before any case runs. Each case points its output option at them, and the whole workspace
is hashed before and after: a bad command writes nothing, creates nothing and replaces nothing. Cases tagged
``#N`` are cases of issue 12 (``docs/reliability.md`` lists all 34 with the behaviour before and after; #30-#33,
a failure half-way and concurrent or killed sweeps, are in ``test_reliability.py``); the others are this suite's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sdlaws import io
from sdlaws.cli import app
from sdlaws.provenance import provenance
from measure_helpers import tiny_model_dir
from conftest import _spec_row as spec_row
from conftest import _make_source_dir as make_source_dir

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
TINY = "random:tiny?num_hidden_layers=1"
CPU = ["--device", "cpu", "--dtype", "fp32"]
HW = {"name": "x", "peak_bf16_flops_per_s": 9e14, "peak_fp8_flops_per_s": None, "hbm_bytes_per_s": 3e12,
      "memory_bytes": 8e10, "interconnect_bytes_per_s": 9e11}


@dataclass(frozen=True)
class Case:
    """``argv`` (with ``{ws}`` standing for the workspace), a fragment the error line must hold, and an issue tag."""

    argv: str
    fragment: str
    issue: str = ""


def _xy(n: int = 6, x=None, y=None, header: str = "x,y") -> str:
    xs = x or [i + 1 for i in range(n)]
    ys = y or [2 * v + 1 + 0.1 * (i % 2) for i, v in enumerate(xs)]
    return header + "\n" + "".join(f"{a},{b}\n" for a, b in zip(xs, ys))


def _spec(path: Path, **values) -> None:
    """Three valid spec rows; ``values`` overwrite the first one."""
    rows = [spec_row(run_id=f"r{i}", draft_layers=i + 1, num_new_tokens=1000) for i in range(3)]
    rows[0].update(values)
    pd.DataFrame(rows).to_csv(path, index=False)


def _step_rows(path: Path, **values) -> None:
    for i, b in enumerate((1, 2, 4)):
        row = {**provenance("cpu"), "run_id": f"s{i}", "status": "ok", "model_name": "m", "model_params": 1e9,
               "batch_size": b, "tokens_per_row": 1, "kv_len": 16, "num_repeats": 3, "median_time_s": 0.01 * b}
        io.append_row(path, {**row, **(values if i == 0 else {})}, "step")


def _inputs(d: Path) -> None:
    """Every bad (and good) input file the cases read, in ``d``."""
    d.mkdir()
    files = {
        "xy.csv": _xy(), "three.csv": _xy(3), "inf.csv": _xy(y=[1, 2, "inf", 4, 5, 6]),
        "big.csv": _xy(y=[1, 2, 1e308, 4, 5, 6]),
        "huge_x.csv": _xy(x=[1, 2, 3, 4, 5, 1e200]), "const.csv": _xy(x=[5] * 6),
        "two_x.csv": _xy(x=[1, 1, 1, 2, 2, 2]), "dup.csv": _xy(header="x,x"),
        "short.csv": "x,y\n1,2\n2\n3,4\n4,5\n", "empty.csv": "", "header.csv": "x,y\n",
        "plane.csv": "a,b,y\n" + "".join(f"{v},{2 * v},{v + 1}\n" for v in range(1, 8)),
        "neg_y.csv": _xy(y=[1, -2, 3, 4, 5, 6]),
        "afile": "a regular file\n", "notfit.json": '{"format": "other"}', "broken.json": "{not json",
        "prompts_bad.jsonl": '{"prompt": "ok"}\nnot json\n', "profile_bad.json": "[[1.5]]",
        "hw_str.json": json.dumps({**HW, "peak_bf16_flops_per_s": "989e12"}),
        "hw_bool.json": json.dumps({**HW, "memory_bytes": True}),
        "hw_nan.json": json.dumps({**HW, "hbm_bytes_per_s": float("nan")}),
        "hw_neg.json": json.dumps({**HW, "hbm_bytes_per_s": -1.0}),
        "hw_missing.json": json.dumps({k: v for k, v in HW.items() if k != "memory_bytes"}),
        "hw_extra.json": json.dumps({**HW, "bandwidth": 1}), "hw_list.json": "[1, 2]",
        "hw_profile_str.json": json.dumps({"gpu_name": "NVIDIA H100", "memory_bytes": "80GB",
                                           "matmul_flops_per_s": 7e14, "hbm_bytes_per_s": 3e12,
                                           "launch_overhead_s": 1e-5}),
    }
    for name, text in files.items():
        (d / name).write_text(text)
    (d / "latin1.csv").write_bytes("x,y\n1,\xe9\n".encode("latin-1"))
    _spec(d / "spec.csv")
    _spec(d / "spec_inf.csv", total_time_s="inf")
    _spec(d / "spec_big.csv", num_draft_tokens=1e308)
    _spec(d / "spec_acc.csv", num_accepted_tokens=900, num_draft_tokens=800)
    _spec(d / "spec_new.csv", num_accepted_tokens=700, num_new_tokens=600)
    _spec(d / "spec_prefill.csv", prefill_time_s=5.0, total_time_s=2.0)
    _step_rows(d / "steps_neg.csv", median_time_s=-0.5)
    io.append_row(d / "ppl_inf.csv", {**provenance("cpu"), "run_id": "p", "status": "ok", "model_name": "m",
                                      "eval_set": "e", "num_eval_tokens": 10, "nll_sum_nats": float("inf")}, "ppl")
    (d / "bad_model").mkdir()
    (d / "bad_model" / "config.json").write_text("{this is not json")
    (d / "no_config_model").mkdir()


def _ok(*argv: str) -> None:
    result = runner.invoke(app, list(argv))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace with bad inputs under in/ and good outputs of every command."""
    ws = tmp_path_factory.mktemp("ws")
    _inputs(ws / "in")
    _ok("fit", str(ws / "in" / "xy.csv"), "--law", "linear", "--x", "x", "--y", "y", "--out", str(ws / "fit"))
    _ok("plan", "draft-size", "--target", "qwen2.5-7b", "--batch", "1", "--samples", "20", "--out", str(ws / "plan"))
    _ok("measure", "--target", TINY, "--prompts", "random", "--num-prompts", "2", "--max-new-tokens", "4",
        "--max-prompt-len", "8", *CPU, "--out", str(ws / "spec.csv"))
    io.append_row(ws / "ppl.csv", {**provenance("cpu"), "run_id": "p", "status": "ok", "model_name": TINY,
                                   "eval_set": "e", "num_eval_tokens": 10, "nll_sum_nats": 60.0}, "ppl")
    shutil.copy(ROOT / "measurements" / "bench" / "hw-h100.json", ws / "hw.json")
    tiny_model_dir(ws / "model", spec="random:tiny?num_hidden_layers=1&vocab_size=300")  # with a tokenizer
    _ok("train", "corpus", "--source", str(make_source_dir(ws)), "--vocab", "300", "--test-fraction", "0.25",
        "--out", str(ws / "corpus"))
    return ws


FIT = [
    Case("fit {ws}/in/inf.csv --law linear --x x --y y --out {ws}/fit", "inf.csv line 4: column y must be finite",
         "#1"),
    Case("fit {ws}/in/big.csv --law linear --x x --y y --out {ws}/fit", "big.csv line 4: column y must be finite",
         "#2"),
    Case("fit {ws}/in/spec_inf.csv --law loglinear --x draft_layers --y acceptance_rate --out {ws}/fit",
         "spec_inf.csv line 2: column total_time_s 'inf' is not finite"),
    Case("fit {ws}/in/spec_big.csv --law loglinear --x draft_layers --y acceptance_rate --out {ws}/fit",
         "column num_draft_tokens is 1e+308, above the 9.0072e+15 a count can physically be"),
    Case("fit {ws}/in --law linear --x x --y y --out {ws}/fit", "is a directory, not a CSV file", "#3"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --bootstrap -5 --out {ws}/fit",
         "--bootstrap -5 is out of range; expected an integer in [0, 100000]", "#4"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --bootstrap 1000000 --out {ws}/fit", "--bootstrap 1000000"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --bootstrap abc --out {ws}/fit",
         "Invalid value for '--bootstrap'"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --bootstrap 10 --seed -1 --out {ws}/fit", "--seed -1"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --out {ws}/in/afile", "--out {ws}/in/afile: is a file", "#5"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --out {ws}/in/afile/sub", "afile is a file, not a directory",
         "#6"),
    Case("fit {ws}/in/const.csv --law linear --x x --y y --out {ws}/fit",
         "law linear has 2 parameters but x takes only 1 distinct value(s) (5)", "#24"),
    Case("fit {ws}/in/two_x.csv --law saturating --x x --y y --out {ws}/fit", "takes only 2 distinct value(s)"),
    Case("fit {ws}/in/plane.csv --law ppl_plane --x a,b --y y --out {ws}/fit", "the columns a, b move together"),
    Case("fit {ws}/in/dup.csv --law linear --x x --y x.1 --out {ws}/fit",
         "dup.csv line 1: column name(s) 'x' appear more than once", "#25"),
    Case("fit {ws}/in/spec_acc.csv --law loglinear --x draft_layers --y acceptance_rate --out {ws}/fit",
         "num_accepted_tokens > num_draft_tokens (900 > 800) is impossible", "#23"),
    Case("fit {ws}/in/spec_new.csv --law loglinear --x draft_layers --y acceptance_rate --out {ws}/fit",
         "num_accepted_tokens > num_new_tokens (700 > 600) is impossible"),
    Case("fit {ws}/in/spec_prefill.csv --law loglinear --x draft_layers --y acceptance_rate --out {ws}/fit",
         "prefill_time_s > total_time_s (5 > 2) is impossible"),
    Case("fit {ws}/in/steps_neg.csv --law linear --x batch_size --y median_time_s --out {ws}/fit",
         "column median_time_s is negative"),
    Case("fit {ws}/in/short.csv --law linear --x x --y y --out {ws}/fit", "line 3 has 1 cells, the header 2"),
    Case("fit {ws}/in/latin1.csv --law linear --x x --y y --out {ws}/fit", "not UTF-8 text"),
    Case("fit {ws}/in/empty.csv --law linear --x x --y y --out {ws}/fit", "empty.csv: file is empty"),
    Case("fit {ws}/in/header.csv --law linear --x x --y y --out {ws}/fit", "no data rows"),
    Case("fit {ws}/in/huge_x.csv --law linear --x x --y y --out {ws}/fit",
         "column x must be finite and at most 1e+150"),
    Case("fit {ws}/in/neg_y.csv --law power --x x --y y --out {ws}/fit", "column y must be > 0"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --group nope --out {ws}/fit", "no column 'nope'"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --unit nope --out {ws}/fit", "no column 'nope'"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --compare cubic --out {ws}/fit", "unknown law 'cubic'", "#34"),
    Case("fit {ws}/in/three.csv --law linear --x x --y y --compare saturating --out {ws}/fit",
         "law saturating has 3 parameters but only 3 usable row(s)", "#28"),
    Case("fit {ws}/in/xy.csv --law cubic --out {ws}/fit", "unknown law 'cubic'"),
    Case("fit {ws}/in/xy.csv --law linear --x x,y,x --y y --out {ws}/fit", "law linear takes 1 x column"),
    Case("fit {ws}/in/nope*.csv --law linear --x x --y y --out {ws}/fit", "no such file"),
    Case("fit {ws}/in/spec.csv --law ppl_plane --y acceptance_rate --ppl {ws}/in --out {ws}/fit",
         "is a directory, not a CSV file"),
    Case("fit {ws}/in/spec.csv --law ppl_plane --y acceptance_rate --ppl {ws}/in/ppl_inf.csv --out {ws}/fit",
         "column nll_sum_nats 'inf' is not finite"),
    Case("fit --law linear --out {ws}/fit", "pass CSV file(s) and --law NAME"),
    Case("fit {ws}/in/xy.csv --law linear --x x --y y --nope --out {ws}/fit", "No such option: --nope"),
]

PLAN = [
    Case("plan --target-params 1e308 --out {ws}/plan", "--target-params 1e+308 is out of range", "#26"),
    Case("plan --target-params 0 --out {ws}/plan", "--target-params 0 is out of range"),
    Case("plan --target-params nan --out {ws}/plan", "--target-params nan is out of range"),
    Case("plan serving --target llama-3-8b --draft-params 1e20 --out {ws}/plan", "--draft-params 1e+20"),
    Case("plan --target llama-3-8b --batch 0 --out {ws}/plan", "--batch 0 is out of range"),
    Case("plan --target llama-3-8b --batch 1.5 --out {ws}/plan", "--batch 1.5 is out of range"),
    Case("plan --target llama-3-8b --batch 1e7 --out {ws}/plan", "--batch 10000000 is out of range"),
    Case("plan --target llama-3-8b --batch 1,x --out {ws}/plan", "--batch '1,x': expected comma-separated"),
    Case("plan --target llama-3-8b --kv-len -1 --out {ws}/plan", "--kv-len -1 is out of range"),
    Case("plan --target llama-3-8b --tp 0 --out {ws}/plan", "--tp 0 is out of range"),
    Case("plan --target llama-3-8b --samples 0 --out {ws}/plan", "--samples 0 is out of range"),
    Case("plan --target llama-3-8b --seed -1 --out {ws}/plan", "--seed -1 is out of range"),
    Case("plan --target llama-3-8b --draft-tokens 0 --out {ws}/plan", "--draft-tokens 0 is out of range"),
    Case("plan serving --target llama-3-8b --alpha 1.5 --out {ws}/plan", "--alpha 1.5"),
    Case("plan serving --target llama-3-8b --alpha nan --out {ws}/plan", "--alpha nan"),
    Case("plan serving --target llama-3-8b --alpha 0.8 --rank-acceptance 0.9,0.5 --out {ws}/plan",
         "sum to <= 1"),
    Case("plan serving --target llama-3-8b --rank-acceptance 0.5 --out {ws}/plan", "need --alpha"),
    Case("plan serving --target llama-3-8b --alpha 0.8 --position-acceptance 0.8,2 --out {ws}/plan",
         "--position-acceptance 2 is out of range"),
    Case("plan --target llama-3-8b --hardware tpu9 --out {ws}/plan", "unknown hardware 'tpu9'"),
    Case("plan --target llama-3-8b --hardware {ws}/in/hw_str.json --out {ws}/plan",
         "peak_bf16_flops_per_s: input should be a valid number, got '989e12'", "#13"),
    Case("plan --target llama-3-8b --hardware {ws}/in/hw_bool.json --out {ws}/plan", "memory_bytes: input should be"),
    Case("plan --target llama-3-8b --hardware {ws}/in/hw_nan.json --out {ws}/plan", "should be a finite number"),
    Case("plan --target llama-3-8b --hardware {ws}/in/hw_neg.json --out {ws}/plan", "hbm_bytes_per_s must be > 0"),
    Case("plan --target llama-3-8b --hardware {ws}/in/hw_missing.json --out {ws}/plan",
         "lacks key(s) ['memory_bytes']"),
    Case("plan --target llama-3-8b --hardware {ws}/in/hw_extra.json --out {ws}/plan", "unknown key(s) ['bandwidth']"),
    Case("plan --target llama-3-8b --hardware {ws}/in/hw_list.json --out {ws}/plan", "expected a JSON object"),
    Case("plan --target llama-3-8b --hardware {ws}/in/hw_profile_str.json --out {ws}/plan",
         "memory_bytes: input should be a valid number, got '80GB'"),
    Case("plan --target llama-3-8b --hardware {ws}/in/broken.json --out {ws}/plan", "not valid JSON"),
    Case("plan --target llama-3-8b --out {ws}/in/afile", "--out {ws}/in/afile: is a file", "#7"),
    Case("plan --target llama-3-8b --out {ws}/in/afile/sub", "afile is a file, not a directory", "#8"),
    Case("plan --target llama-9000 --out {ws}/plan", "llama-9000"),
    Case("plan --target llama-3-8b --target-params 8e9 --out {ws}/plan", "give only one of --target"),
    Case("plan --target-config {ws}/in/missing.json --out {ws}/plan", "missing.json"),
    Case("plan --target llama-3-8b --fit {ws}/in --out {ws}/plan", "is a directory; expected a JSON file"),
    Case("plan --target llama-3-8b --fit {ws}/in/notfit.json --out {ws}/plan", "not an sdlaws fit JSON"),
    Case("plan --target llama-3-8b --dtype fp7 --out {ws}/plan", "--dtype: unknown dtype 'fp7'"),
    Case("plan pretraining --target llama-3-8b --out {ws}/plan", "needs a fitted log-linear law"),
    Case("plan pretraining --target llama-3-8b --train-mfu 0 --out {ws}/plan", "--train-mfu 0 is out of range"),
    Case("plan pretraining --target llama-3-8b --gamma 0 --out {ws}/plan", "--num-spec-tokens 0 is out of range"),
    Case("plan --target llama-3-8b --steps {ws}/in --out {ws}/plan", "is a directory, not a CSV file"),
    Case("plan serving --target llama-3-8b --profile {ws}/in/missing.json --out {ws}/plan", "missing.json"),
    Case("plan serving --target llama-3-8b --max-new-tokens 0 --out {ws}/plan", "--max-new-tokens 0 is out of range"),
]

MEASURE = [
    Case("measure --target {tiny} --prompts random --batch 1e20 --out {ws}/spec.csv",
         "--batch 1e+20 is out of range; expected an integer in [1, 1048576]", "#27"),
    Case("measure --target {tiny} --prompts random --batch 0 --out {ws}/spec.csv", "--batch 0 is out of range"),
    Case("measure --target {tiny} --prompts random --batch 2.5 --out {ws}/spec.csv", "--batch 2.5 is out of range"),
    Case("measure --target {tiny} --prompts random --batch 1000000 --out {ws}/spec.csv",
         "the largest configuration (random:tiny?num_hidden_layers=1 ar b=1000000 T=0) needs at least"),
    Case("measure --target {tiny} --draft {tiny} --num-spec-tokens 0 --out {ws}/spec.csv",
         "--num-spec-tokens 0 is out of range"),
    Case("measure --target {tiny} --draft {tiny} --gamma 1000 --out {ws}/spec.csv",
         "--num-spec-tokens 1000 is out of range"),
    Case("measure --target {tiny} --draft {tiny} --topk 0 --out {ws}/spec.csv", "--topk 0 is out of range"),
    Case("measure --target {tiny} --temperature nan --out {ws}/spec.csv", "--temperature nan is out of range"),
    Case("measure --target {tiny} --temperature -1 --out {ws}/spec.csv", "--temperature -1 is out of range"),
    Case("measure --target {tiny} --num-prompts 0 --out {ws}/spec.csv", "--num-prompts 0 is out of range"),
    Case("measure --target {tiny} --prompts code --num-prompts 100000000 --out {ws}/spec.csv",
         "--num-prompts 100000000 is out of range", "#14"),
    Case("measure --target {tiny} --prompts random --num-prompts 100000 --max-prompt-len 1000000 --out {ws}/spec.csv",
         "random prompts of --max-prompt-len 1000000 tokens need"),
    Case("measure --target {tiny} --prompts random --max-new-tokens 1000000 --out {ws}/spec.csv",
         "positions exceed the 2048-token context of random:tiny", "#21"),
    Case("measure --target {tiny} --draft {tiny} --gamma 8 --prompts random --max-new-tokens 1530 "
         "--out {ws}/spec.csv", "+ 16 of speculation slack"),
    Case("measure --target {tiny} --max-new-tokens 0 --out {ws}/spec.csv", "--max-new-tokens 0 is out of range"),
    Case("measure --target {tiny} --max-prompt-len 0 --out {ws}/spec.csv", "--max-prompt-len 0 is out of range"),
    Case("measure --target {tiny} --repeats 0 --out {ws}/spec.csv", "--repeats 0 is out of range"),
    Case("measure --target {tiny} --draft {tiny} --topk 2 --tree-budget 0 --out {ws}/spec.csv",
         "--tree-budget 0 is out of range"),
    Case("measure --target {tiny} --seed -1 --out {ws}/spec.csv", "--seed -1 is out of range"),
    Case("measure --target {tiny} --dtype int4 --out {ws}/spec.csv", "--dtype int4: unknown dtype"),
    Case("measure --target {tiny} --gamma 1,x --out {ws}/spec.csv",
         "--num-spec-tokens '1,x': expected comma-separated"),
    Case("measure --target {tiny} --prompts {ws}/in/missing.jsonl --out {ws}/spec.csv", "neither a built-in set"),
    Case("measure --target {ws}/model --prompts {ws}/in/prompts_bad.jsonl --out {ws}/spec.csv",
         "prompts_bad.jsonl line 2: not valid JSON"),
    Case("measure --target {ws}/model --draft {tiny} --prompts code --max-new-tokens 1 --out {ws}/spec.csv",
         "its vocabulary has 512 tokens, the target {ws}/model's 300"),
    Case("measure --target {tiny} --out {ws}/spec.csv",
         "--prompts humaneval is a text set, but --target random:tiny?num_hidden_layers=1 has no tokenizer", "#22"),
    Case("measure --target {ws}/in/missing_model --prompts random --out {ws}/spec.csv",
         "--target {ws}/in/missing_model: no such model directory", "#15"),
    Case("measure --target {ws}/in/bad_model --prompts random --out {ws}/spec.csv",
         "--target {ws}/in/bad_model: cannot load model", "#16"),
    Case("measure --target {ws}/in/no_config_model --prompts random --out {ws}/spec.csv", "no config.json"),
    Case("measure --target random:nope --prompts random --out {ws}/spec.csv", "unknown random shape 'nope'", "#17"),
    Case("measure --target random:tiny?layers --prompts random --out {ws}/spec.csv", "is not key=value", "#18"),
    Case("measure --target random:tiny?layers=2 --prompts random --out {ws}/spec.csv", "unknown config field(s)",
         "#19"),
    Case("measure --target {tiny} --draft random:tiny?vocab_size=256 --prompts random --out {ws}/spec.csv",
         "its vocabulary has 256 tokens, the target", "#20"),
    Case("measure --target {tiny} --draft {ws}/in/missing_model --prompts random --out {ws}/spec.csv",
         "--draft {ws}/in/missing_model: no such model directory"),
    Case("measure --target {tiny} --prompts random --out {ws}/in", "--out {ws}/in: is a directory", "#9"),
    Case("measure --target {tiny} --prompts random --out {ws}/in/afile/x.csv", "afile is a file, not a directory",
         "#10"),
    Case("measure --target {tiny} --prompts random --out {ws}/in/xy.csv", "not an sdlaws measurement CSV"),
    Case("measure --target {tiny} --prompts random --out {ws}/ppl.csv", "header does not match the 'spec' schema"),
    Case("measure --target {tiny} --prompts random --acceptance-profile 1.5 --out {ws}/spec.csv", "profile"),
    Case("measure --target {tiny} --draft {tiny} --temperature 1 --acceptance-profile 0.5 --out {ws}/spec.csv",
         "needs --temperature 0"),
    Case("measure --target {tiny} --ppl {ws}/in/missing.csv --out {ws}/spec.csv", "--ppl"),
    Case("measure --draft {tiny} --out {ws}/spec.csv", "pass --target"),
    Case("measure ppl --model {tiny} --eval {ws}/in/missing.bin --out {ws}/ppl.csv", "--eval {ws}/in/missing.bin"),
    Case("measure ppl --model {tiny} --eval {ws}/in/xy.csv --context 1 --out {ws}/ppl.csv", "--context 1"),
    Case("measure ppl --model {tiny} --eval {ws}/in/xy.csv --context 100000 --out {ws}/ppl.csv",
         "--context 100000 is out of range; expected an integer in [2, 2048]"),
    Case("measure ppl --model {tiny} --eval {ws}/in/xy.csv --stride 0 --out {ws}/ppl.csv", "--stride 0"),
    Case("measure ppl --model {tiny} --eval {ws}/in/xy.csv --max-tokens 1 --out {ws}/ppl.csv", "--max-tokens 1"),
    Case("measure ppl --model {tiny} --eval {ws}/in/xy.csv --out {ws}/in", "--out {ws}/in: is a directory"),
    Case("measure ppl --model random:nope --eval {ws}/in/xy.csv --out {ws}/ppl.csv", "unknown random shape"),
    Case("measure hardware --device cpu --batch 0 --out {ws}/hw.json", "--batch 0 is out of range"),
    Case("measure hardware --device cpu --kv 0 --out {ws}/hw.json", "--kv 0 is out of range"),
    Case("measure hardware --device cpu --out {ws}/in", "--out {ws}/in: is a directory"),
    Case("measure hardware --device cpu --model random:nope --out {ws}/hw.json", "unknown random shape", "#29"),
    Case("measure hardware --device cpu --model {tiny} --kv 100000 --out {ws}/hw.json",
         "--kv 100000 + --tokens 16 = 100016 positions exceed the 2048-token context"),
    Case("measure hardware --device cpu --model {tiny} --timing-out {ws}/in --out {ws}/hw.json",
         "--timing-out {ws}/in: is a directory"),
]

TRAIN = [
    Case("train corpus --out {ws}/in/afile", "--out {ws}/in/afile: is a file", "#11"),
    Case("train corpus --out {ws}/in/afile/sub", "afile is a file, not a directory", "#12"),
    Case("train corpus --out {ws}/new --vocab 10", "--vocab 10 is out of range"),
    Case("train corpus --out {ws}/new --vocab 100000", "--vocab 100000 is out of range"),
    Case("train corpus --out {ws}/new --test-fraction 0", "--test-fraction 0 is out of range"),
    Case("train corpus --out {ws}/new --test-fraction nan", "--test-fraction nan is out of range"),
    Case("train corpus --out {ws}/new --max-tokens abc", "--max-tokens 'abc': cannot read a token count"),
    Case("train corpus --out {ws}/new --max-tokens inf", "--max-tokens inf is out of range"),
    Case("train corpus --out {ws}/new --source {ws}/in/missing_dir", "source directory does not exist"),
    Case("train corpus --out {ws}/new --seed -1", "--seed -1 is out of range"),
    Case("train corpus --out {ws}/corpus --source {ws}/src --vocab 400", "holds a corpus built with other settings"),
    Case("train model --corpus {ws}/in/missing --tokens 1k --layers 1 --hidden 32 --out {ws}/models",
         "--corpus {ws}/in/missing: no such directory"),
    Case("train model --corpus {ws}/in/afile --tokens 1k --layers 1 --hidden 32 --out {ws}/models",
         "--corpus {ws}/in/afile: is a file"),
    Case("train model --corpus {ws}/in --tokens 1k --layers 1 --hidden 32 --out {ws}/models", "no manifest.json"),
    Case("train model --corpus {ws}/corpus --tokens abc --layers 1 --hidden 32 --out {ws}/models",
         "--tokens 'abc': cannot read a token count"),
    Case("train model --corpus {ws}/corpus --tokens 0 --layers 1 --hidden 32 --out {ws}/models",
         "--tokens 0 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens inf --layers 1 --hidden 32 --out {ws}/models",
         "--tokens inf is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 0 --hidden 32 --out {ws}/models",
         "--layers 0 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 100000 --hidden 32 --out {ws}/models",
         "--layers 100000 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1024 --hidden 65536 --device cpu --out {ws}/models",
         "needs at least"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 100 --heads 3 --out {ws}/models",
         "not divisible by 3 heads"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --seq-len 1 --out {ws}/models",
         "--seq-len 1 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --batch-size 0 --out {ws}/models",
         "--batch-size 0 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --lr 0 --out {ws}/models",
         "--lr 0 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --lr nan --out {ws}/models",
         "--lr nan is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --checkpoints 0 --out {ws}/models",
         "--checkpoints 0 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --family nope --out {ws}/models", "unknown family 'nope'"),
    Case("train model --corpus {ws}/corpus --tokens 1k --family depth --layers 2 --out {ws}/models",
         "describe a single model"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --out {ws}/in/afile",
         "--out {ws}/in/afile: is a file"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --seed -1 --out {ws}/models",
         "--seed -1 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --time-limit-s -1 --out {ws}/models",
         "--time-limit-s -1 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --first-checkpoint abc "
         "--out {ws}/models", "--first-checkpoint 'abc'"),
    Case("train model --corpus {ws}/corpus --tokens 1k --layers 1 --hidden 32 --until-tokens 0 --out {ws}/models",
         "--until-tokens 0 is out of range"),
    Case("train model --corpus {ws}/corpus --tokens 1k --out {ws}/models", "say which model to train"),
]

CASES = FIT + PLAN + MEASURE + TRAIN


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (and the set of directories), by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return out


def test_the_table_is_large_and_covers_the_issue():
    assert len(CASES) >= 100 and all(len(table) >= 20 for table in (FIT, PLAN, MEASURE, TRAIN))
    tags = [c.issue for c in CASES if c.issue]
    assert len(tags) == len(set(tags))  # the other issue cases are the concurrency, fault and clobber tests


@pytest.mark.parametrize("case", CASES, ids=[c.argv.split(" --out")[0][:80] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, ws):
    argv = case.argv.format(ws=ws, tiny=TINY).split()
    if argv[0] == "measure":  # on the CPU, in float32, unless the case is about those options
        for option, value in (("--device", "cpu"), ("--dtype", "fp32")):
            argv += [] if option in argv else [option, value]
    before = _snapshot(ws)
    result = runner.invoke(app, argv)
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert case.fragment.format(ws=ws, tiny=TINY) in lines[0], lines[0]
    assert result.stdout == "" and "Traceback" not in result.output
    assert _snapshot(ws) == before
