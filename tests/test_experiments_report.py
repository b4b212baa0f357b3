"""`sdlaws experiment report`: the results report built from the committed measurements, and its prediction
function checked against a hand computation."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sdlaws.experiments.report import (DraftAcceptance, measured_rank_rates, pooled_alpha, predict_tokens_per_s,
                                       render_markdown)
from sdlaws.hardware import Hardware
from sdlaws.roofline import ModelShape, ServingSetup

REPO = Path(__file__).resolve().parents[1]
MEASUREMENTS = REPO / "measurements"

# The CLI in a fresh interpreter, so that "no torch import" is checked on a clean sys.modules.
_RUN = """
import sys
from typer.testing import CliRunner
from sdlaws.cli import app
result = CliRunner().invoke(app, ["experiment", "report", "--measurements", sys.argv[1], "--out", sys.argv[2]])
print(result.output)
assert result.exit_code == 0, result.output
assert "torch" not in sys.modules and "transformers" not in sys.modules, "the report must not import torch"
"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    if not (MEASUREMENTS / "throughput" / "heldout.csv").is_file():
        pytest.skip("the committed measurements are not in this tree")
    out = tmp_path_factory.mktemp("report") / "results"
    proc = subprocess.run([sys.executable, "-c", _RUN, str(MEASUREMENTS), str(out)], capture_output=True,
                          text=True, env={"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_report_writes_fits_figures_json_and_markdown(report_dir):
    from sdlaws.fit import FitResult, load_fit

    data = json.loads((report_dir / "report.json").read_text())
    assert report_dir.with_suffix(".md").is_file()
    for name in data["files"]:
        assert (report_dir / name).stat().st_size > 0
    pngs = {n for n in data["files"] if n.endswith(".png")}
    assert {"thm11_loglinear_alpha_mle.png", "sdsl_ppl_plane.png", "thm13_topk_batch.png", "heldout.png"} <= pngs
    plane = load_fit(report_dir / "sdsl_ppl_plane.json")
    assert isinstance(plane, FitResult) and plane.law == "ppl_plane"
    assert plane.params["A"] == pytest.approx(data["plane"]["fit"]["params"]["A"])
    by_temperature = load_fit(report_dir / "thm11_loglinear_alpha_mle.json")
    assert set(by_temperature) == {0.0, 1.0}
    assert by_temperature[0.0].params["a"] == pytest.approx(
        data["thm11"]["responses"]["alpha_mle"]["T=0"]["loglinear"]["params"]["a"])
    for key in ("thm11", "thm12", "plane", "thm13"):
        assert data[key]["verdict"] in ("holds", "partly", "fails")


def test_markdown_is_rendered_from_report_json(report_dir):
    data = json.loads((report_dir / "report.json").read_text())
    text = report_dir.with_suffix(".md").read_text()
    assert text == render_markdown(data)
    h = data["heldout"]
    assert f"speedup {h['mape_speedup']:.1f}%" in text and f"tokens/s {h['mape_tokens_per_s']:.1f}%" in text
    assert f"{data['roofline']['fit_rows']['median_abs_pct_error']:.1f}%" in text
    table = [line for line in text.split("## Held-out")[1].split("##")[0].splitlines() if line.startswith("| ")]
    assert len(table) - 1 == h["num_configurations"]           # header + one line per configuration
    assert f"]({data['figures_link']}/heldout.png)" in text


def test_markdown_templates_type_no_numbers():
    """The markdown templates contain no numbers of their own, only labels (Thm 1.1, p = 1/2, batch 1, T = 0)."""
    import ast

    import sdlaws.experiments.report as report

    number = re.compile(r"(?<![\w.\-])\d+(?:\.\d+)?%?")
    labels = {"0", "1", "2", "1.1", "1.2", "1.3"}
    typed = set()
    for node in ast.parse(Path(report.__file__).read_text()).body:
        if isinstance(node, ast.FunctionDef) and (node.name.startswith("_md_") or node.name == "render_markdown"):
            typed |= {m for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                      for m in number.findall(c.value)}
    assert typed <= labels, f"numbers typed in the templates instead of read from report.json: {typed - labels}"


def test_report_errors_on_missing_measurements(tmp_path):
    from typer.testing import CliRunner

    from sdlaws.cli import app

    result = CliRunner().invoke(app, ["experiment", "report", "--measurements", str(tmp_path / "none"),
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "error:" in result.output and "--measurements" in result.output


# ----------------------------------------------------------------------------- prediction by hand (synthetic)

HBM_BYTES_PER_S = 1e9       # toy accelerator: memory-bound for these tiny passes, no launch cost
KV_BYTES_PER_TOKEN = 4.0    # K and V x 1 layer x 1 head x head_dim 1 x 2 bytes


def _toy_setup(kv_len: int) -> ServingSetup:
    hw = Hardware(name="toy", peak_bf16_flops_per_s=1e15, peak_fp8_flops_per_s=None, hbm_bytes_per_s=HBM_BYTES_PER_S,
                  memory_bytes=1e12, interconnect_bytes_per_s=0.0, flops_efficiency=1.0, hbm_efficiency=1.0,
                  launch_overhead_s=0.0)

    def shape(params):
        return ModelShape(name=f"m{params:g}", params=params, layers=1, hidden=1, heads=1, kv_heads=1, head_dim=1,
                          vocab=0, tied=True)

    return ServingSetup(target=shape(1e6), draft=shape(1e5), hardware=hw, kv_len=kv_len)


def _pass_s(params, batch, tokens, kv_len):
    """Hand roofline of a memory-bound pass: bf16 weights once + KV read and written, over the bandwidth."""
    return (2.0 * params + batch * (kv_len + tokens) * KV_BYTES_PER_TOKEN) / HBM_BYTES_PER_S


@pytest.mark.parametrize("method, gamma, topk", [("ar", 0, 1), ("chain", 2, 1), ("tree", 3, 4)])
def test_predict_tokens_per_s_matches_hand_computation(method, gamma, topk):
    batch, prompt, new, kv, tau = 2, 4, 5, 10, 1.5
    got = predict_tokens_per_s(_toy_setup(kv), method=method, batch_size=batch, num_spec_tokens=gamma,
                               tree_topk=topk, tau=1.0 if method == "ar" else tau, prompt_tokens=prompt,
                               max_new_tokens=new)
    prefill = _pass_s(1e6, batch, prompt, 0)
    if method == "ar":
        step, steps = _pass_s(1e6, batch, 1, kv), new - 1
    else:
        prefill += _pass_s(1e5, batch, prompt, 0)
        # chain: gamma draft passes of 1 token + verify gamma + 1; tree: depth passes of topk + verify topk*depth + 1
        step = gamma * _pass_s(1e5, batch, topk, kv) + _pass_s(1e6, batch, topk * gamma + 1, kv)
        steps = (new - 1) / tau
    assert got["prefill_s"] == pytest.approx(prefill, rel=1e-9)
    assert got["step_s"] == pytest.approx(step, rel=1e-9)
    assert got["decode_steps"] == pytest.approx(steps)
    assert got["tokens_per_s"] == pytest.approx(batch * new / (prefill + steps * step), rel=1e-9)


def test_acceptance_inputs_by_hand():
    acc = DraftAcceptance(alpha=0.5, rank_rates=np.array([0.5, 0.5]), source="hand")
    assert acc.tau("ar", 0, 1) == 1.0
    assert acc.tau("chain", 2, 1) == pytest.approx(1 + 0.5 + 0.25)                # Leviathan Eq. 1
    assert acc.tau("tree", 1, 2) == pytest.approx(1 + (1 - 0.5 * 0.5))          # level accepted by rank 1 or 2
    rows = pd.DataFrame({"method": ["chain", "chain"], "num_accepted_tokens": [10, 30], "alpha_mle": [0.5, 0.75]})
    assert pooled_alpha(rows) == pytest.approx(40 / 60)                           # (10 + 30) / (20 + 40)
    trees = pd.DataFrame({"method": ["tree"], "tree_topk": [2], "num_drafts": [10],
                          "num_accepted_per_rank": ["[6, 2]"], "num_accepted_per_pos": ["[5, 3]"]})
    # levels attempted = 10 drafts + 5 that passed level 1; shares 6/15, 2/15; c_2 = (2/15) / (1 - 6/15)
    assert measured_rank_rates(trees) == pytest.approx([6 / 15, (2 / 15) / (9 / 15)])
    assert not math.isnan(pooled_alpha(rows))
