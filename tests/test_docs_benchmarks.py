"""docs/benchmarks.md quotes the committed H200 results as the repository's code renders them today."""

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import batching_report  # noqa: E402
import gpu_guard  # noqa: E402

from sdlaws import io  # noqa: E402

DOC = (ROOT / "docs" / "benchmarks.md").read_text()
H200 = ROOT / "measurements" / "h200"


def test_guard_tables_are_the_committed_ones():
    assert (H200 / "guard" / "guard.md").read_text().strip() in DOC
    targets = gpu_guard.targets_markdown(gpu_guard.target_checks(pd.read_csv(H200 / "guard" / "guard.csv")))
    assert targets.strip() in DOC


def test_audit_table_is_the_committed_report():
    assert (H200 / "audit" / "audit.md").read_text().strip() in DOC


def test_batching_table_is_rendered_from_the_committed_csv():
    table = batching_report.batching_table(io.read_measurements(H200 / "batching.csv", table="spec"))
    assert batching_report.markdown(table).strip() in DOC


def test_audit_report_is_what_the_current_rule_gives(tmp_path):
    import shutil

    import gpu_bf16_audit

    for name in ("audit.csv", "audit.json"):
        shutil.copy(H200 / "audit" / name, tmp_path / name)
    gpu_bf16_audit.report_only(tmp_path)
    assert (tmp_path / "audit.md").read_text() == (H200 / "audit" / "audit.md").read_text()
