"""Measured numbers quoted in hand-written documents match the committed files they come from."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_training_doc_quotes_the_committed_mfu_run():
    m = json.loads((ROOT / "measurements/h200/train-mfu.json").read_text())
    text = " ".join((ROOT / "docs/training.md").read_text().split())    # line breaks do not matter
    assert m["compile"] and m["params"] >= 50e6 and m["timed_steps"] < m["step"]
    for quoted in (f"git `{m['git_sha']}`", f"{m['params'] / 1e6:.1f} M parameters", f"{m['timed_steps']} timed steps",
                   f"MFU {100 * m['mfu_measured']:.1f}% of the {m['measured_matmul_flops_per_s'] / 1e12:.0f} TFLOP/s",
                   f"{100 * m['mfu']:.1f}% of the {m['peak_flops_per_s'] / 1e12:.0f} TFLOP/s datasheet peak",
                   f"{m['tokens_per_s'] / 1e3:.0f} k tokens/s"):
        assert quoted in text, quoted
