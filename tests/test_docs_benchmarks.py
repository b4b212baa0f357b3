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
PREVIOUS_GUARD = H200 / "guard-7c8569a90c27"
#: the guards of the kernels' history, oldest first: before them, their first version, the live range only, the
#: projections and one-launch attention
HISTORY = [H200 / "guard-bdef9b59c3e2", H200 / "guard-fc3116931cee", H200 / "guard-d1462063c8c2", PREVIOUS_GUARD]
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
    verify = [v for t, v in old.items() if t.startswith("verify forward")]
    matmul = json.loads((PREVIOUS_GUARD / "guard.json").read_text())["matmul_flops_per_s"] / 1e12
    assert (f"AR batch 1 at {old['AR batch 1, % of floor']:.1f}% of its floor "
            f"({old['AR batch 1 step vs gpt-fast']:.3f} ms), AR batch 64 at {old['AR batch 64, % of floor']:.1f}%, "
            f"the draft forward at {old['draft forward batch 1, % of floor']:.1f}%, the draft forward inside a chain "
            f"step {old['draft forward inside a chain step / bare draft forward']:.3f}x, the chain step at "
            f"{old['chain gamma 4 step batch 1, % of floor']:.1f}%, the verify forwards at {min(verify):.1f}-"
            f"{max(verify):.1f}% of a {matmul:.0f} TFLOP/s matmul rate, the tree's verification "
            f"{old['tree verification / chain verification (same tokens)']:.3f}x a chain's") in TEXT


def test_changes_quoted_in_prose_are_the_two_guards():
    before, after = (pd.read_csv(folder / "guard.csv").set_index("config")["step_s"]
                     for folder in (PREVIOUS_GUARD, H200 / "guard"))
    change = 100 * (after / before - 1)
    verify = change[[c for c in change.index if c.startswith("forward target") and c.split(" x")[1] not in ("1", "5")]]
    rate = [json.loads((f / "guard.json").read_text())["matmul_flops_per_s"] for f in (PREVIOUS_GUARD, H200 / "guard")]
    assert (f"The verify forwards are {-verify.max():.1f}-{-verify.min():.1f}% faster (batch 64 x 16 tokens from "
            f"{before['forward target b64 x16'] * 1e3:.3f} to {after['forward target b64 x16'] * 1e3:.3f} ms; this "
            f"card's matmul rate is {100 * (rate[1] / rate[0] - 1):.1f}% higher, part of it) and the batch-64 AR step "
            f"{-change['sdlaws ar b64']:.1f}% faster") in TEXT
    assert (verify < 0).all() and change["sdlaws ar b64"] < 0
    batch1 = change[[c for c in change.index if c.startswith("sdlaws") and " b1" in c]]
    assert (f"The batch-1 configurations changed by {batch1.min():+.1f}% (AR) to {batch1.max():+.1f}% (tree)"
            in TEXT) and batch1.idxmin() == "sdlaws ar b1" and batch1.idxmax() == "sdlaws tree g4 top2 b1"
    hf = change[[c for c in change.index if c.startswith("hf-static")]]
    assert (f"changed by {hf['hf-static target b1']:+.1f}%, {hf['hf-static target b64']:+.1f}% and "
            f"{hf['hf-static draft b1']:+.1f}% between the two machines") in TEXT
    bandwidth = [json.loads((f / "guard.json").read_text())["hbm_bytes_per_s"] for f in (PREVIOUS_GUARD, H200 / "guard")]
    assert (f"(copy bandwidth {100 * (bandwidth[1] / bandwidth[0] - 1):+.1f}%, matmul rate "
            f"{100 * (rate[1] / rate[0] - 1):+.1f}%)") in TEXT


def test_every_norm_choice_of_the_guard_is_unfused():
    """The prose says the in-kernel norm lost every timing: each norm choice recorded in the guard's rows."""
    spec = pd.read_csv(H200 / "guard" / "spec.csv")
    # each row carries every choice its process had made so far: distinct keys, not cells
    norms = {k: v for cell in spec["kernel_choices"] for k, v in json.loads(cell).items() if " norm " in k}
    assert set(norms.values()) == {"unfused"}
    assert f"each of the {len(norms)} distinct norm choices in `spec.csv`'s `kernel_choices` is `unfused`" in TEXT


def _steps_ms(folder):
    return pd.read_csv(folder / "guard.csv").set_index("config")["step_s"] * 1e3


def test_kernel_history_is_the_committed_guards():
    (before, first, live, projections), now = (_steps_ms(f) for f in HISTORY), _steps_ms(H200 / "guard")
    pct = _measured(HISTORY[1])
    assert (f"AR took {before['sdlaws ar b1']:.3f} ms at batch 1 and {before['sdlaws ar b64']:.3f} ms at batch 64; "
            f"their first version") in TEXT
    assert (f"{first['sdlaws ar b1']:.3f} ms ({pct['AR batch 1, % of floor']:.1f}% of its floor) and "
            f"{first['sdlaws ar b64']:.3f} ms ({pct['AR batch 64, % of floor']:.1f}%)") in TEXT
    assert (f"{live['sdlaws ar b1']:.3f} and {live['sdlaws ar b64']:.3f} ms; the projections and the one-launch "
            f"attention (`7c8569a90c27`), {projections['sdlaws ar b1']:.3f} and {projections['sdlaws ar b64']:.3f} ms; "
            f"this guard's engine (`85ac8cbeddbb`), {now['sdlaws ar b1']:.3f} and {now['sdlaws ar b64']:.3f} ms") in TEXT
    assert projections["sdlaws ar b1"] < live["sdlaws ar b1"] < first["sdlaws ar b1"] < before["sdlaws ar b1"]


def test_targets_as_the_prose_says():
    new, old = _measured(H200 / "guard"), _measured(PREVIOUS_GUARD)
    checks = gpu_guard.target_checks(pd.read_csv(H200 / "guard" / "guard.csv")).set_index("target")
    assert (f"AR at batch 1 stays at {new['AR batch 1, % of floor']:.1f}% of its floor (the bare 8B forward at "
            f"{pd.read_csv(H200 / 'guard' / 'guard.csv').set_index('config').loc['forward target b1 x1', 'floor_pct']:.0f}%), "
            f"the 1B draft forward is at {new['draft forward batch 1, % of floor']:.1f}% and the chain step at "
            f"{new['chain gamma 4 step batch 1, % of floor']:.1f}% "
            f"({old['draft forward batch 1, % of floor']:.1f}% and {old['chain gamma 4 step batch 1, % of floor']:.1f}% "
            f"before)") in TEXT
    assert f"AR at batch 64 is at {new['AR batch 64, % of floor']:.1f}% of its floor" in TEXT
    assert checks.loc["AR batch 64, % of floor", "met"]
    info = json.loads((H200 / "guard" / "guard.json").read_text())
    verify = [v for t, v in new.items() if t.startswith("verify forward")]
    assert (f"run at {min(verify):.0f}-{max(verify):.0f}% of this run's matmul rate, "
            f"{info['matmul_flops_per_s'] / 1e12:.0f} TFLOP/s ({min(verify):.1f}-{max(verify):.1f}%: "
            f"{80 - max(verify):.1f} to {80 - min(verify):.1f} points short of 80%)") in TEXT
    assert max(verify) < 80


def test_kernel_sweep_summary_and_its_prose_are_the_committed_run():
    import kernel_tune

    path = H200 / "tune-559352efa8c3.csv"
    assert kernel_tune.summary(path).strip() in DOC
    df = pd.read_csv(path)
    lin = df[(df.sweep == "linear") & (df.status == "ok")]
    best = lin[lin.impl == "triton"].groupby(["case", "rows"]).us.min()
    cublas = lin[lin.impl == "cublas"].set_index(["case", "rows"]).us
    gain = 100 * (1 - best / cublas)  # % shorter than cuBLAS
    gate_up = gain[[c for c in gain.index if c[0].endswith("gate_up")]]
    lm_head = gain[[c for c in gain.index if c[0].endswith("lm_head")]]
    assert f"(by {gate_up.min():.1f}-{gate_up.max():.0f}%" in TEXT and f"on the LM head ({lm_head.min():.0f}-" \
           f"{lm_head.max():.0f}%)" in TEXT
    assert (gain[[("1b-down", r) for r in (1, 5, 64)]] < 0).all()  # "lost on the 1B's down"


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
    # the profiles ran in the session of the previous guard: its copy bandwidth
    bandwidth = json.loads((PREVIOUS_GUARD / "hw.json").read_text())["hbm_bytes_per_s"]
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
            f"(residual add + RMSNorm, twice per layer) {ar['classes']['element-wise']:.3f} ms and the rotary + "
            f"cache write {ar['classes']['KV writes']:.3f} ms") in TEXT
    assert ar["classes"]["split-K reduce"] == 0  # "both gone": no cuBLASLt reduction in the batch-1 step
    assert (f"Attention now takes {ar['classes']['attention'] * 1e3 / 32:.1f} us per layer at batch 1 "
            f"({ar['classes']['attention']:.3f} ms per step") in TEXT
    assert (f"The GEMMs of a batch-1 AR step take {ar['classes']['GEMMs']:.3f} ms against {ar['weights_ms']:.3f} ms "
            "for its weights") in TEXT
    chain, draft = rows[2], rows[3]
    assert (f"takes {chain['graph_ms'] - ar['graph_ms']:.2f} ms more than a 1-token step, "
            f"{chain['gap_ms'] - ar['gap_ms']:.2f} ms of it in the gap between kernels and "
            f"{chain['classes']['other'] - ar['classes']['other']:.2f} ms in `other`") in TEXT
    assert f"the GEMMs take {draft['classes']['GEMMs']:.3f} ms against {draft['weights_ms']:.3f} ms" in TEXT
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


def test_audit_prose_is_the_committed_run():
    rows = pd.read_csv(H200 / "audit" / "audit.csv")
    summary = pd.read_csv(H200 / "audit" / "audit-summary.csv").set_index("config")
    spec = summary[summary.method != "ar"]

    def first_diffs(method, batch):
        part = rows[(rows.method == method) & (rows.batch_size == batch)]
        return part.first_diff_ar.dropna().astype(int)
    chain, tree = first_diffs("chain", 1), first_diffs("tree", 1)
    assert (f"the chain first at tokens {chain.min()}-{chain.max()}, the tree at tokens {tree.min()}-{tree.max()}"
            in TEXT)
    b1, b64 = spec[spec.batch_size == 1], spec[spec.batch_size == 64]
    assert (b1.equal_ar == 0).all()  # "still differs from the engine's AR in all 8 sequences"
    assert f"p = {b1.p_value.min():.2f}-{b1.p_value.max():.2f}" in TEXT
    assert f"p = {b64.p_value.min():.2f}-{b64.p_value.max():.2f}" in TEXT
    chain64 = first_diffs("chain", 64)
    equal = int(round(summary.loc["chain llama-3.2-1b b64", "equal_ar"] * 64))
    assert (f"{equal} of 64 chain sequences now equal the engine's AR" in TEXT
            and f"(median token {chain64.median():.0f}, the earliest {chain64.min()};" in TEXT)
    assert set(spec.verdict) == {"numerical"}


def test_readme_speed_sentence_is_the_committed_guard():
    """The README quotes the current guard: its sha, the batch-1 AR step against its floor and HF's, the verify
    forwards' share of the matmul rate."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    table = pd.read_csv(H200 / "guard" / "guard.csv").set_index("config")
    info = json.loads((H200 / "guard" / "guard.json").read_text())
    verify = [v for t, v in _measured(H200 / "guard").items() if t.startswith("verify forward")]
    ar = table.loc["sdlaws ar b1"]
    assert (f"(the regression guard, git `{info['git_sha']}`), a batch-1 AR step of a random Llama-3.1-8B shape takes "
            f"{ar['step_s'] * 1e3:.2f} ms, {ar['floor_pct']:.0f}% of the bandwidth floor") in readme
    assert f"against {table.loc['hf-static target b1', 'step_s'] * 1e3:.2f} ms for HF's static-cache" in readme
    assert f"run at {min(verify):.0f}-{max(verify):.0f}% of the card's measured bf16 matmul rate" in readme
