"""benchmarks/gpu_bf16_audit.py: exact on CPU in fp32, and its verdict rule flips where the margins say so."""

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
    summary = pd.read_csv(tmp_path / "audit-summary.csv")
    assert set(summary["verdict"]) == {"identical"} and '"verdict": "identical"' in (tmp_path / "audit.json").read_text()
    tokens = audit.read_tokens(tmp_path / "tokens.jsonl")
    assert len({t for seq in tokens["hf greedy"] for t in seq}) > w.big_batch  # a varied output, not one token repeated


@pytest.mark.parametrize("margins, threshold, expected", [
    ([], 0.25, "identical"),
    ([0.01, 0.2], 0.25, "numerical"),
    ([0.01, 0.3], 0.25, "bug"),         # one difference at a clear margin is enough
    ([0.01, 0.3], 0.5, "numerical"),    # ... unless the threshold says it is within the arithmetic's reach
    ([0.25], 0.25, "bug"),              # the threshold itself is not below it
])
def test_verdict_rule(margins, threshold, expected):
    assert audit.verdict(margins, threshold) == expected


def test_worst_verdict_wins():
    assert audit.worst(["identical", "numerical", "identical"]) == "numerical"
    assert audit.worst(["numerical", "bug"]) == "bug" and audit.worst([]) == "identical"


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
    summary = audit.summarize(rows, threshold=0.25).set_index("config")
    assert summary.loc["chain d b2", "verdict"] == "bug" and summary.loc["chain d b2", "equal_ar"] == 0.5
    assert summary.loc["tree d b2", "verdict"] == "identical"
    tiny = audit.summarize(audit.audit_rows(w, tokens, prompts, lambda ids: 0.01), threshold=0.25)
    assert tiny.set_index("config").loc["chain d b2", "verdict"] == "numerical"
