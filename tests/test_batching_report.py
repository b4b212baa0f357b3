"""benchmarks/batching_report.py: means, ranges and continuous/static ratios of a tiny synthetic spec frame."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import batching_report  # noqa: E402


def _spec(batching: str, steps: list[int], prefill: list[float], total: list[float]) -> pd.DataFrame:
    """Chain rows at batch 4, 400 new tokens each, one per repeat; only what the rates read is filled in."""
    n = len(steps)
    return pd.DataFrame({"status": "ok", "method": "chain", "batch_size": 4, "batching": batching, "repeat": range(n),
                         "num_spec_tokens": 3, "num_steps": steps, "prefill_time_s": prefill, "total_time_s": total,
                         "num_new_tokens": 400, "num_batches": 2, "max_new_tokens": 100, "num_drafts": 0,
                         "num_draft_tokens": 0, "num_accepted_tokens": 0, "draft_time_s": 0.0,
                         "verify_time_s": 0.0})


def test_means_ranges_and_ratios():
    spec = pd.concat([_spec("static", [100, 100], [1.0, 1.0], [3.0, 3.0]),
                      _spec("continuous", [80, 90], [2.0, 4.0], [3.6, 5.8]),
                      _spec("continuous", [0], [0.0], [1.0]).assign(status="failed")], ignore_index=True)
    table = batching_report.batching_table(spec).set_index("batching")
    assert list(table.index) == ["static", "continuous", "continuous/static"]
    cont = table.loc["continuous"]
    assert (cont["num_steps"], cont["num_steps_min"], cont["num_steps_max"]) == (85, 80, 90)  # failed row left out
    assert cont["prefill_s"] == pytest.approx(3.0) and cont["decode_s"] == pytest.approx(1.7)  # total - prefill
    # ms per step of each run (1.6 s / 80, 1.8 s / 90 = 20 ms), then their mean
    assert cont["decode_ms_per_step"] == pytest.approx(20.0) and cont["repeats"] == 2
    assert cont["tokens_per_s"] == pytest.approx((400 / 3.6 + 400 / 5.8) / 2)
    ratio = table.loc["continuous/static"]
    assert ratio["num_steps"] == pytest.approx(0.85) and ratio["prefill_s"] == pytest.approx(3.0)
    assert ratio["tokens_per_s"] == pytest.approx(cont["tokens_per_s"] / (400 / 3.0))
    md = batching_report.markdown(table.reset_index())
    assert "| chain | 4 | continuous | 85 (80-90) | 3.00 (2.00-4.00) |" in md and "| 0.85x | 3.00x |" in md
    assert "| chain | 4 | static | 100 | 1.00 | 2.00 | 20.00 | 133 |" in md  # equal repeats: no range


def test_missing_csv_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/batching_report.py", str(tmp_path / "none.csv")], cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and done.stderr.splitlines()[-1].endswith(f"no such file: {tmp_path / 'none.csv'}")
