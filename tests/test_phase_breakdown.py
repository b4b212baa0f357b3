"""benchmarks/phase_breakdown.py: parsing profile_phases.py's output, kernel classes, GEMMs against their weights."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import phase_breakdown  # noqa: E402

# hidden 64, intermediate 256, 2 layers, q 64, kv 32: gate-up 64 KiB, down 32 KiB, qkv 16 KiB, o 8 KiB (bf16)
SHAPE = "random:tiny?intermediate_size=256"
COLUMNS = ["Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg", "Self CUDA", "Self CUDA %",
           "CUDA total", "CUDA time avg", "# of Calls"]


def _table(rows: list[tuple[str, str, int]]) -> str:
    """A kernel table laid out as torch.profiler prints it (names right-aligned in 90 columns, cut with '...')."""
    rule = "-" * 90 + "  " + "  ".join("-" * 12 for _ in COLUMNS) + "  "
    lines = [rule, f"{'Name':>90}  " + "  ".join(f"{c:>12}" for c in COLUMNS) + "  ", rule]
    for name, cuda, calls in rows:
        name = name if len(name) <= 90 else name[:87] + "..."
        cells = ["0.00%", "0.000us", "0.00%", "0.000us", "0.000us", cuda, "1.00%", cuda, "1.000us", str(calls)]
        lines.append(f"{name:>90}  " + "  ".join(f"{c:>12}" for c in cells) + "  ")
    return "\n".join([*lines, rule])


def _case(header: str, phase: str, kernel_ms: float, rows, total: str) -> str:
    return (f"{header}\neager {phase} phase 20.000 ms/run, kernels {kernel_ms:.3f} ms/run\n{_table(rows)}\n"
            f"Self CPU time total: 40.000ms\nSelf CUDA time total: {total}\n")


# 10 runs of one pass of 2 layers: per-layer kernels are called 20 times (or 40: two matrices per layer)
VERIFY = _case("== ar gamma=1 topk=1 batch=1 prompt=128: graphs: draft 0.000 ms/step, verify 1.500 ms/step", "verify",
               1.0, [("nvjet_sm90_tst_128x8_64x12_2x1_v_bz_TNT", "4.000ms", 20),            # gate-up: 200 us/call
                     ("nvjet_sm90_tst_64x8_64x16_4x1_v_bz_splitK_TNT", "2.000ms", 20),     # down: 100 us/call
                     ("nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT", "1.200ms", 40),            # qkv and o: 30 us/call
                     ("nvjet_sm90_tst_256x8_64x6_2x1_v_bz_TNT", "0.500ms", 10),            # LM head, once per pass
                     ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_cga1x1x1",
                      "0.600ms", 20),
                     ("void at::native::_scatter_gather_elementwise_kernel<128, 8, at::native::_cuda_scatter_"
                      "gather_internal_kernel<true, c10::BFloat16>", "0.400ms", 40),     # 2 per layer: KV writes
                     ("void at::native::_scatter_gather_elementwise_kernel<128, 8, at::native::_cuda_scatter_"
                      "gather_internal_kernel<true, long>", "0.100ms", 30),              # 3 per run: other
                     ("triton_red_fused__fused_rms_norm_add_0", "0.300ms", 40),
                     ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16>",
                      "0.200ms", 20),
                     ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<c10::BFloat16, "
                      "at::native::ArgMaxOps<c10::BFloat16>, unsigned int, long, 4> >", "350.000us", 10),
                     ("Memset (Device)", "50.000us", 10)],
               "10.000ms")
# gamma 2 draft passes per run, 10 runs: per-layer kernels 40 times, the LM head 20
DRAFT = _case("== chain gamma=2 topk=1 batch=4 prompt=64: graphs: draft 1.200 ms/step, verify 1.000 ms/step", "draft",
              0.9, [("nvjet_sm90_tst_128x8_64x12_2x1_v_bz_TNT", "4.000ms", 40),
                    ("nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT", "2.000ms", 120),           # down, qkv, o
                    ("nvjet_sm90_tst_256x8_64x6_2x1_v_bz_TNT", "1.000ms", 20)],
              "9.000ms")


def test_parse_reads_headers_eager_lines_and_truncated_names():
    verify, draft = phase_breakdown.parse(VERIFY + "\n" + DRAFT)
    assert (verify.method, verify.batch, verify.phase, verify.runs, verify.passes) == ("ar", 1, "verify", 10, 1)
    assert (draft.method, draft.gamma, draft.phase, draft.runs, draft.passes) == ("chain", 2, "draft", 10, 2)
    assert verify.graph_ms == {"draft": 0.0, "verify": 1.5} and verify.kernel_ms == 1.0
    names = [k.name for k in verify.kernels]
    assert len(names) == 11 and names[4].endswith("...") and len(names[4]) == 90
    assert verify.kernels[9].ms == pytest.approx(0.35) and verify.kernels[9].calls == 10
    assert draft.label == "chain gamma 2, batch 4, draft" and verify.label == "AR, batch 1, verify"
    with pytest.raises(ValueError, match="incomplete profile"):
        phase_breakdown.parse(VERIFY.split("eager")[0])


def test_classes_sum_to_the_kernels_and_gemms_meet_their_weights():
    from sdlaws.roofline import named_shape

    case = phase_breakdown.parse(VERIFY)[0]
    r = phase_breakdown.breakdown(case, named_shape(SHAPE), bandwidth=1e9)  # 1 GB/s: 1 us per kB
    c = r["classes"]
    assert c["GEMMs"] == pytest.approx(0.77) and c["split-K reduce"] == pytest.approx(0.02)
    assert c["attention"] == pytest.approx(0.06) and c["KV writes"] == pytest.approx(0.04)
    assert c["element-wise"] == pytest.approx(0.03) and c["argmax/reduce"] == pytest.approx(0.035)
    # other: the 3-per-run scatter, the memset, and what the table does not list (1.0 - 0.97 ms)
    assert c["other"] == pytest.approx(0.01 + 0.005 + 0.03) and sum(c.values()) == pytest.approx(case.kernel_ms)
    g = r["gemms"]
    assert list(g) == ["gate-up", "down", "qkv+o", "LM head"]
    assert g["gate-up"]["us_per_call"] == pytest.approx(200) and g["gate-up"]["copy_us"] == pytest.approx(65.536)
    assert g["qkv+o"]["bytes_per_call"] == (16384 + 8192) / 2 and g["LM head"]["bytes_per_call"] == 2 * 512 * 64
    assert r["gap_ms"] == pytest.approx(0.5)
    # phase - floor = gap + (GEMMs - weights' copy) + (non-GEMM kernels - KV copy), by construction
    parts = r["gap_ms"] + r["gemm_over_weights_ms"] + r["non_gemm_ms"] - r["kv_ms"]
    assert r["graph_ms"] - r["floor_ms"] == pytest.approx(parts)
    text = phase_breakdown.gemms_markdown([r], 1e9)
    assert "| AR, batch 1, verify | 200.0 us, 3.05x | 100.0 us, 3.05x | qkv+o: 30.0 us, 2.44x | (with qkv) |" in text


def test_draft_phase_counts_gamma_passes():
    from sdlaws.roofline import named_shape

    shape = named_shape(SHAPE)
    r = phase_breakdown.breakdown(phase_breakdown.parse(DRAFT)[0], shape, bandwidth=1e9)
    assert list(r["gemms"]) == ["gate-up", "down+qkv+o", "LM head"]  # 1 + 3 calls per layer and pass
    assert r["weights_ms"] == pytest.approx(1e3 * 2 * 2 * shape.matmul_params / 1e9)
    assert r["kv_ms"] == pytest.approx(1e3 * 2 * 4 * (64 + 16) * 2 * 2 * 2 * 16 * 2 / 1e9)  # passes x batch x ctx


def test_a_kernel_count_that_fits_no_layer_leaves_the_gemms_unassigned():
    from sdlaws.roofline import named_shape

    line = next(ln for ln in VERIFY.splitlines() if "64x16_4x1_v_bz_TNT" in ln)
    odd = VERIFY.replace(line, line[:-4] + "30  ")  # 3 calls per layer: with gate-up and down, 5 matrices, not 4
    assert odd != VERIFY
    r = phase_breakdown.breakdown(phase_breakdown.parse(odd)[0], named_shape(SHAPE), bandwidth=1e9)
    assert list(r["gemms"]) == ["LM head"]


def test_cli_prints_the_tables_and_refuses_missing_files(tmp_path, capsys):
    (tmp_path / "p.txt").write_text(VERIFY)
    (tmp_path / "hw.json").write_text(json.dumps({"hbm_bytes_per_s": 2e9}))
    text = phase_breakdown.main([str(tmp_path / "p.txt"), "--hw", str(tmp_path / "hw.json"), "--target", SHAPE])
    assert capsys.readouterr().out == text and text.count("| AR, batch 1, verify |") == 3
    with pytest.raises(SystemExit) as exc:
        phase_breakdown.main([str(tmp_path / "missing.txt"), "--hw", str(tmp_path / "hw.json")])
    assert exc.value.code == 2
