"""docs/benchmarks.md quotes the committed H200 results as the repository's code renders them today."""

import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import batching_report  # noqa: E402
import gpu_guard  # noqa: E402
import phase_breakdown  # noqa: E402

from sdlaws import io  # noqa: E402
from sdlaws.roofline import named_shape  # noqa: E402

DOC = (ROOT / "docs" / "benchmarks.md").read_text()
TEXT = " ".join(DOC.split())  # prose: line breaks do not matter
H200 = ROOT / "measurements" / "h200"
PREVIOUS_GUARD = H200 / "guard-bdef9b59c3e2"
FIRST_KERNELS_GUARD = H200 / "guard-fc3116931cee"  # the same session's first version of the Triton kernels
NUMBER_WORDS = ["None", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten", "Eleven"]


def test_guard_tables_are_the_committed_ones():
    assert (H200 / "guard" / "guard.md").read_text().strip() in DOC
    checks = gpu_guard.target_checks(pd.read_csv(H200 / "guard" / "guard.csv"))
    assert gpu_guard.targets_markdown(checks).strip() in DOC
    assert f"{NUMBER_WORDS[int(checks['met'].sum())]} of the {NUMBER_WORDS[len(checks)].lower()} are met" in TEXT


def _measured(folder):
    return gpu_guard.target_checks(pd.read_csv(folder / "guard.csv")).set_index("target")["measured"]


def test_guard_comparison_is_the_two_committed_runs():
    assert gpu_guard.compare_markdown(PREVIOUS_GUARD, H200 / "guard").strip() in DOC
    info = json.loads((H200 / "guard" / "guard.json").read_text())
    assert (f"HF's step takes {info['hf_over_sdlaws_ar_b1']:.2f}x the engine's AR at batch 1 and "
            f"{info['hf_over_sdlaws_ar_b64']:.2f}x at batch 64") in TEXT
    # the previous guard's targets, quoted in a sentence, as its own guard.csv gives them
    old = _measured(PREVIOUS_GUARD)
    assert (f"AR batch 1 at {old['AR batch 1, % of floor']:.1f}% of its floor "
            f"({old['AR batch 1 step vs gpt-fast']:.3f} ms), AR batch 64 at {old['AR batch 64, % of floor']:.1f}%, "
            f"the draft forward at {old['draft forward batch 1, % of floor']:.1f}%, the draft forward inside a chain "
            f"step {old['draft forward inside a chain step / bare draft forward']:.3f}x, the chain step at "
            f"{old['chain gamma 4 step batch 1, % of floor']:.1f}%, the tree's verification "
            f"{old['tree verification / chain verification (same tokens)']:.3f}x a chain's (met)") in TEXT


def test_changes_quoted_in_prose_are_the_two_guards():
    before, after = (pd.read_csv(folder / "guard.csv").set_index("config")["step_s"]
                     for folder in (PREVIOUS_GUARD, H200 / "guard"))
    change = {config: f"{100 * (after[config] / before[config] - 1):+.1f}%" for config in before.index}
    sd = {config: c.lstrip("-") for config, c in change.items() if c.startswith("-")}  # faster: quoted as "by x%"
    assert all(config in sd for config in change if config.startswith("sdlaws"))  # "every configuration is faster"
    assert (f"AR by {sd['sdlaws ar b1']} at batch 1 and {sd['sdlaws ar b64']} at batch 64, the chain by "
            f"{sd['sdlaws chain g4 b1']} and the tree by {sd['sdlaws tree g4 top2 b1']} (both phases), the bare target "
            f"forward by {sd['forward target b1 x1']} (batch 1) to {sd['forward target b1 x5']} (5 tokens), the bare "
            f"draft forward by {sd['forward draft b1 x1']}") in TEXT
    assert (f"changed by {change['hf-static target b1']}, {change['hf-static target b64']} and "
            f"{change['hf-static draft b1']} between the two machines") in TEXT


def test_first_kernel_version_is_its_committed_guard():
    first, now = _measured(FIRST_KERNELS_GUARD), _measured(H200 / "guard")
    steps = pd.read_csv(FIRST_KERNELS_GUARD / "guard.csv").set_index("config")["step_s"] * 1e3
    assert (f"AR at batch 1 took {steps['sdlaws ar b1']:.3f} ms ({first['AR batch 1, % of floor']:.1f}% of its floor), "
            f"at batch 64 {steps['sdlaws ar b64']:.3f} ms ({first['AR batch 64, % of floor']:.1f}%)") in TEXT
    steps_now = pd.read_csv(H200 / "guard" / "guard.csv").set_index("config")["step_s"] * 1e3
    assert f"gave the {steps_now['sdlaws ar b1']:.3f} and {steps_now['sdlaws ar b64']:.3f} ms above" in TEXT
    assert now["AR batch 1 step vs gpt-fast"] < first["AR batch 1 step vs gpt-fast"]


def test_attention_summary_is_the_committed_run():
    import attention_paths

    assert attention_paths.summary(H200 / "attention.csv").strip() in DOC


def test_audit_table_is_the_committed_report():
    assert (H200 / "audit" / "audit.md").read_text().strip() in DOC


def test_batching_table_is_rendered_from_the_committed_csv():
    table = batching_report.batching_table(io.read_measurements(H200 / "batching.csv", table="spec"))
    assert batching_report.markdown(table).strip() in DOC


def test_one_row_refill_history_is_the_committed_csv():
    table = batching_report.batching_table(io.read_measurements(H200 / "batching-one-row-refills.csv", table="spec"))
    ratio = table[table["batching"].eq("continuous/static")].set_index(["method", "batch_size"])
    tps, pre = ratio["tokens_per_s"], ratio["prefill_s"]
    assert (f"tokens/s was then {tps['ar', 16]:.2f}x and {tps['ar', 64]:.2f}x of static for AR and "
            f"{tps['chain', 16]:.2f}x and {tps['chain', 64]:.2f}x for the chain at batch 16 and 64, with prefills of "
            f"{pre['ar', 16]:.2f}x and {pre['ar', 64]:.2f}x (AR) and {pre['chain', 16]:.2f}x and "
            f"{pre['chain', 64]:.2f}x (chain)") in TEXT


def test_phase_breakdown_tables_are_rendered_from_the_committed_profiles():
    bandwidth = json.loads((H200 / "guard" / "hw.json").read_text())["hbm_bytes_per_s"]
    rows = phase_breakdown.read([H200 / "phases-verify.txt", H200 / "phases-draft.txt"], "random:llama-3.1-8b",
                                "random:llama-3.2-1b", bandwidth)
    for table in phase_breakdown.markdown(rows, bandwidth).split("\n\n"):
        assert table.strip() in DOC
    # the weights' sizes the text quotes are the shapes'
    for model, quoted in (("random:llama-3.1-8b", "the 8B's gate-up {:.0f} MB, down {:.0f} MB, qkv {:.0f} MB, o "
                                                  "{:.0f} MB and LM head {:.0f} MB"),
                          ("random:llama-3.2-1b", "the 1B's {:.0f}, {:.0f}, {:.0f}, {:.0f} and {:.0f} MB")):
        shape = named_shape(model)
        sizes = [b / 1e6 for _, b in phase_breakdown.layer_matrices(shape)] + [2 * shape.vocab * shape.hidden / 1e6]
        assert quoted.format(*sizes) in TEXT
    # the rotary + cache-write kernel's and attention's shares of the batch-1 AR step, per layer (32) and step
    ar, ar64 = rows[0], rows[1]
    assert (f"The rotary + cache-write kernel takes {ar['classes']['KV writes'] * 1e3 / 32:.1f} us per layer at batch "
            f"1 ({ar['classes']['KV writes']:.3f} ms per step") in TEXT
    assert (f"of the non-GEMM time, attention is {ar['classes']['attention']:.3f} ms, the element-wise kernels "
            f"(residual add + RMSNorm twice and SwiGLU per layer) {ar['classes']['element-wise']:.3f} ms and "
            f"cuBLASLt's split-K reductions (two per layer, after the down and o GEMMs) "
            f"{ar['classes']['split-K reduce']:.3f} ms") in TEXT
    assert f"at batch 64 it is {ar64['classes']['attention'] * 1e3 / 32:.1f} us per layer" in TEXT
    # the batch-1 AR step's distance to its floor, as the sentence after the tables splits it
    assert ar["label"] == "AR, batch 1, verify"
    assert (f"at the floor ({ar['floor_ms']:.3f} ms) would need the {ar['non_gemm_ms'] - ar['kv_ms']:.3f} ms of "
            f"non-GEMM kernels beyond the KV copy, the {ar['gap_ms']:.3f} ms gap and the "
            f"{ar['gemm_over_weights_ms']:.3f} ms of GEMM time beyond the weights' copy removed from its "
            f"{ar['graph_ms']:.3f} ms") in TEXT


def test_audit_report_is_what_the_current_rule_gives(tmp_path):
    import shutil

    import gpu_bf16_audit

    for name in ("audit.csv", "audit.json"):
        shutil.copy(H200 / "audit" / name, tmp_path / name)
    gpu_bf16_audit.report_only(tmp_path)
    assert (tmp_path / "audit.md").read_text() == (H200 / "audit" / "audit.md").read_text()
