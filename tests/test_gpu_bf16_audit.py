"""benchmarks/gpu_bf16_audit.py: exact on CPU in fp32, and its verdict rule flips where the margins say so."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_bf16_audit as audit  # noqa: E402


def test_fp32_cpu_run_is_identical_everywhere(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "HF_HUB_OFFLINE": "1", "OUT": str(tmp_path), "SMOKE": "1"}
    done = subprocess.run(["bash", "benchmarks/gpu_bf16_audit.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = pd.read_csv(tmp_path / "audit.csv")
    w = audit.SMOKE
    # 2 AR + 2 drafts x 2 methods x 2 batch sizes, each with `single` (batch 1) or `big_batch` sequences
    assert len(rows) == 5 * (w.single + w.big_batch)
    assert rows["equal_ar"].all() and rows["equal_hf"].all()  # fp32 greedy is exact
    summary = pd.read_csv(tmp_path / "audit-summary.csv").set_index("config")
    assert set(summary["verdict"]) == {"identical", "reference"}  # the AR rows are the references
    assert (summary.loc[summary["method"].ne("ar"), "verdict"] == "identical").all()
    assert '"verdict": "identical"' in (tmp_path / "audit.json").read_text()
    tokens = audit.read_tokens(tmp_path / "tokens.jsonl")
    assert len({t for seq in tokens["hf greedy"] for t in seq}) > w.big_batch  # a varied output, not one token repeated


#: Kernel flips: margins of a few bf16 ulps (2^-5 at logits of magnitude 4-8), as engine AR vs HF measured them.
NEAR_TIES = [0.0, 0.0, 0.03125, 0.03125, 0.0625, 0.0625, 0.09375, 0.125]


@pytest.mark.parametrize("margins, reference, expected", [
    ([], NEAR_TIES, "identical"),
    ([], [], "identical"),                                  # no difference needs no reference
    (NEAR_TIES[::-1], NEAR_TIES, "numerical"),              # the same distribution
    ([0.0, 0.03125, 0.0625, 0.5], NEAR_TIES, "numerical"),  # one larger margin alone does not shift them
    ([0.5, 0.75, 1.0, 1.25, 1.5], NEAR_TIES, "bug"),        # every difference above every kernel flip
    ([0.5, 0.75, 1.0, 1.25, 1.5], [], "undecided"),         # no reference: nothing to compare with
    ([1.5], NEAR_TIES, "undecided"),                        # one difference cannot reach p < 0.01 against 8
    ([1.5, 2.0], NEAR_TIES * 8, "bug"),                     # ... two can against 64 (1 / C(66, 2) < 0.01)
])
def test_verdict_rule(margins, reference, expected):
    assert audit.verdict(margins, reference) == expected


def test_smallest_p_is_the_most_extreme_outcome():
    assert audit.smallest_p(4, 4) == pytest.approx(1 / 70) and audit.smallest_p(5, 5) == pytest.approx(1 / 252)
    # the test's own p-value of that outcome (no ties: exact) is the bound
    assert audit.margin_test([5, 6, 7, 8, 9], [0, 1, 2, 3, 4]) == pytest.approx(1 / 252)


def test_margin_step_is_the_grid_the_margins_lie_on():
    assert audit.margin_step(NEAR_TIES) == 2.0 ** -5 and audit.margin_step([0.0, float("nan")]) is None
    assert audit.margin_step([0.75, 1.5]) == 0.25 and audit.margin_step([3.0]) == 1.0


def test_worst_verdict_wins():
    assert audit.worst(["identical", "numerical", "identical"]) == "numerical"
    assert audit.worst(["numerical", "undecided"]) == "undecided" and audit.worst(["undecided", "bug"]) == "bug"
    assert audit.worst([]) == "identical" and audit.worst(["reference", "identical"]) == "identical"


def test_first_difference():
    assert audit.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert audit.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert audit.first_difference([1, 2], [1, 2, 3]) == 2


def test_differences_get_their_position_margin_and_verdict():
    """A chain sequence that leaves the AR output at token 2: the margin is asked after the common prefix, and a
    clear margin there makes the configuration a bug, a tiny one a numerical flip."""
    w = audit.AuditWorkload(drafts=("d",), big_batch=2, single=1)
    prompts = [[7, 7], [8, 8]]
    same = [[1, 2, 3, 4], [5, 6, 7, 8]]
    tokens = {name: [list(s) for s in (same[:1] if batch == 1 else same)]
              for name, _, _, batch in audit.configurations(w)}
    tokens["hf greedy"] = [list(s) for s in same]
    tokens["chain d b2"][1][2] = 99
    asked = []

    def probe(ids, margin=1.0):
        asked.append(ids)
        return margin
    rows = audit.audit_rows(w, tokens, prompts, probe)
    bad = rows[rows["config"].eq("chain d b2") & rows["prompt"].eq(1)].iloc[0]
    assert (bad["equal_ar"], bad["first_diff_ar"], bad["token_ar"], bad["ref_token_ar"]) == (False, 2, 99, 7)
    assert asked == [[8, 8, 5, 6]] * 2  # prompt + the common prefix, against AR and against HF
    assert rows.drop(index=bad.name)[["equal_ar", "equal_hf"]].all().all()
    summary = audit.summarize(rows).set_index("config")
    # AR equals HF here, so there is no reference to judge the one difference by
    assert summary.loc["chain d b2", "verdict"] == "undecided" and summary.loc["chain d b2", "equal_ar"] == 0.5
    assert summary.loc["tree d b2", "verdict"] == "identical" and summary.loc["ar b2", "verdict"] == "reference"


def _rows(config: str, method: str, margins_ar: list, margins_hf: list, batch: int = 64) -> pd.DataFrame:
    """Per-sequence audit rows of one configuration with the given first-difference margins (None: equal)."""
    return pd.DataFrame({"config": config, "draft": "", "method": method, "batch_size": batch,
                         "prompt": range(len(margins_ar)), "equal_ar": [m is None for m in margins_ar],
                         "first_diff_ar": [None if m is None else 1 for m in margins_ar], "margin_ar": margins_ar,
                         "equal_hf": [m is None for m in margins_hf],
                         "first_diff_hf": [None if m is None else 1 for m in margins_hf], "margin_hf": margins_hf})


def test_summary_judges_each_configuration_by_the_ar_vs_hf_reference_of_its_batch():
    near, clear = NEAR_TIES * 2, [0.5 + 0.25 * i for i in range(16)]
    rows = pd.concat([_rows("ar b64", "ar", [None] * 16, near), _rows("chain d b64", "chain", near, near),
                      _rows("tree d b64", "tree", clear, near),
                      _rows("ar b1", "ar", [None] * 4, [None] * 4, batch=1),
                      _rows("chain d b1", "chain", [0.1] * 4, [0.1] * 4, batch=1)], ignore_index=True)
    summary = audit.summarize(rows).set_index("config")
    assert summary["verdict"].to_dict() == {"ar b64": "reference", "chain d b64": "numerical", "tree d b64": "bug",
                                            "ar b1": "reference", "chain d b1": "undecided"}
    assert summary.loc["tree d b64", "p_value"] < audit.ALPHA < summary.loc["chain d b64", "p_value"]
    assert summary.loc["tree d b64", "reference_differences"] == 16 and summary.loc["ar b1", "differences_ar"] == 0


def test_report_only_rebuilds_the_verdicts_from_the_csv_and_keeps_the_run_provenance(tmp_path):
    near = NEAR_TIES * 2
    rows = pd.concat([_rows("ar b64", "ar", [None] * 16, near), _rows("chain d b64", "chain", near, near)])
    rows.to_csv(tmp_path / "audit.csv", index=False)
    run = {"timestamp_utc": "2026-12-01T17:36:24+00:00", "git_sha": "97b74118ed5f", "gpu_name": "NVIDIA H200",
           "torch_version": "2.11.0", "transformers_version": "5.17.0", "sdlaws_version": "0.1.0",
           "workload": {**audit.asdict(audit.AuditWorkload()), "margin": 0.25}, "verdict": "bug"}
    (tmp_path / "audit.json").write_text(json.dumps(run))
    info = audit.main(["--report-only", "--out", str(tmp_path)])
    assert info["verdict"] == "numerical" and info["git_sha"] == "97b74118ed5f" and info["report_git_sha"]
    assert "margin" not in info["workload"] and info["workload"]["alpha"] == audit.ALPHA
    assert "verdict: **numerical**" in (tmp_path / "audit.md").read_text()
    assert list(pd.read_csv(tmp_path / "audit-summary.csv")["verdict"]) == ["reference", "numerical"]


def test_report_only_without_the_run_files_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu_bf16_audit.py", "--report-only", "--out", str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "needs audit.csv and audit.json" in done.stderr.splitlines()[-1]


@pytest.mark.parametrize("flag", ["--big-batch", "--new-tokens"])
def test_a_non_positive_size_is_one_line_exit_2_and_writes_nothing(flag, tmp_path):
    out = tmp_path / "audit"
    done = subprocess.run([sys.executable, "benchmarks/gpu_bf16_audit.py", "--smoke", flag, "0", "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and f"{flag} must be at least 1" in done.stderr.splitlines()[-1]
    assert not out.exists()
