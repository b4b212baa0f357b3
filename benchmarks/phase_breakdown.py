"""Where a decode step's time goes, from ``benchmarks/profile_phases.py``'s output: kernel classes and GEMMs.

Each case of a profile file gives the chosen phase's graph-replayed milliseconds per step, the same phase's
kernels replayed eagerly under ``torch.profiler`` (the top rows of its kernel table, names cut with ``...``) and
their summed CUDA time per run (one run is one phase of one decode step). Per case this prints:

1. the phase's graph-replayed ms per step, the kernels' summed ms, the gap between them (launch and dependency
   latency between kernels) and the kernels' ms per step by class: GEMMs (``nvjet*``, ``cutlass*``, ``*gemm*``, the
   fast path's Triton projection ``_linear_kernel``, SwiGLU included where it runs the gate/up projection),
   cuBLASLt's split-K reductions, attention (cuDNN SDPA, flash, the fast path's own Triton attention and its
   merge), KV writes (scatter kernels called a whole number of times per layer and pass; the fast path's Triton
   rotary + cache write, which replaces the rotary kernel and the scatter), element-wise kernels (compiled
   ``triton_*``: RMSNorm + residual add, SwiGLU, rotary; the fast path's own ``_add_rms_norm_kernel`` and
   ``_silu_mul_kernel``), argmax and other reductions (``at::native::reduce_kernel``); ``other`` is the rest of the summed time
   (ATen element-wise kernels, memsets, copies, and the kernels below the table's top rows);
2. each GEMM's microseconds per call against the time its weights take at the copy bandwidth (``--hw``: a
   ``sdlaws measure hardware`` profile; ``hbm_bytes_per_s``), and the phase against its floor (weights and the
   KV cache of the mean context, prompt + half of profile_phases.py's 32 new tokens, at the copy bandwidth).

Which GEMM multiplies which weight is not in the table: a kernel called once per pass is the LM head; the
kernels called a whole number of times per layer and pass, ranked by time per call, take the layer's weight
matrices ranked by size (gate-up, down, qkv, o for a Llama layer), one per call per layer; a kernel that runs
two of them is compared with their mean size. The Triton projection runs every matrix of a layer and the LM head
under one name, so its calls are in no GEMM column (``benchmarks/kernel_tune.py`` times each projection on it).
The verify phase is one pass of the target per step; the draft
phase is gamma passes of the draft.

Usage::

    python3 benchmarks/phase_breakdown.py measurements/h200/phases-verify.txt measurements/h200/phases-draft.txt \\
        --hw measurements/h200/guard/hw.json
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from sdlaws.roofline import ModelShape, kv_cache_bytes, named_shape

NEW_TOKENS = 32  # profile_phases.py decodes 32 new tokens per case
BYTES = 2  # bf16 weights and cache

#: (class, name prefixes) in the order they are tried; a kernel matching none is ``other``.
CLASSES = [
    ("split-K reduce", ("void cublasLt::splitKreduce",)),
    ("GEMMs", ("nvjet", "cutlass", "void cutlass", "sm90_xmma_gemm", "ampere_bf16", "void gemv", "_linear_kernel")),
    ("attention", ("cudnn_generated_fort_native_sdpa", "flash", "void pytorch_flash", "fmha", "void fmha",
                   "_attention_kernel", "_merge_kernel")),
    ("KV writes", ("void at::native::_scatter_gather_elementwise_kernel", "void at::native::index_elementwise",
                   "_rope_write_kernel")),
    ("element-wise", ("triton_", "_add_rms_norm_kernel", "_silu_mul_kernel")),
    ("argmax/reduce", ("void at::native::reduce_kernel",)),
]
CLASS_NAMES = ["GEMMs", "split-K reduce", "attention", "KV writes", "element-wise", "argmax/reduce", "other"]
HEADER = re.compile(r"^== (\w+) gamma=(\d+) topk=(\d+) batch=(\d+) prompt=(\d+): graphs: draft ([\d.]+) ms/step, "
                    r"verify ([\d.]+) ms/step")
EAGER = re.compile(r"^eager (draft|verify) phase ([\d.]+) ms/run, kernels ([\d.]+) ms/run")
TOTAL = re.compile(r"^Self CUDA time total: ([\d.]+)(us|ms|s)")
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Kernel:
    name: str
    ms: float  # self CUDA time over all profiled runs
    calls: int


@dataclass
class Case:
    method: str
    gamma: int
    topk: int
    batch: int
    prompt: int
    graph_ms: dict[str, float]  # phase -> graph-replayed ms per step
    phase: str = ""
    kernel_ms: float = 0.0  # summed kernel time per run
    total_ms: float = 0.0  # summed kernel time over all runs
    kernels: list[Kernel] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return round(self.total_ms / self.kernel_ms)

    @property
    def passes(self) -> int:
        """Forward passes in one run of the phase: gamma draft passes, one target pass."""
        return self.gamma if self.phase == "draft" else 1

    @property
    def label(self) -> str:
        what = "AR" if self.method == "ar" else f"{self.method} gamma {self.gamma}" + (
            f" top-{self.topk}" if self.method == "tree" else "")
        return f"{what}, batch {self.batch}, {self.phase}"


def _ms(text: str) -> float:
    value = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if value is None:
        raise ValueError(f"not a time: {text!r}")
    return float(value.group(1)) * UNITS[value.group(2)]


def parse(text: str) -> list[Case]:
    """The cases of a profile_phases.py output: header, eager line, kernel table (Self CUDA and calls columns)."""
    cases: list[Case] = []
    columns: list[str] | None = None
    for line in text.splitlines():
        if m := HEADER.match(line):
            method, gamma, topk, batch, prompt = m.group(1), *map(int, m.group(2, 3, 4, 5))
            cases.append(Case(method, gamma, topk, batch, prompt,
                              {"draft": float(m.group(6)), "verify": float(m.group(7))}))
            columns = None
        elif m := EAGER.match(line):
            cases[-1].phase, cases[-1].kernel_ms = m.group(1), float(m.group(3))
        elif m := TOTAL.match(line):
            cases[-1].total_ms = float(m.group(1)) * UNITS[m.group(2)]
        elif line.strip().startswith("Name "):
            columns = re.split(r"\s{2,}", line.strip())
        elif columns and line.strip() and not line.lstrip().startswith("---") and cases:
            cells = re.split(r"\s{2,}", line.strip())
            if len(cells) != len(columns):
                continue  # a summary line
            row = dict(zip(columns, cells))
            cases[-1].kernels.append(Kernel(row["Name"], _ms(row["Self CUDA"]), int(row["# of Calls"])))
    for case in cases:
        if not (case.phase and case.kernel_ms > 0 and case.total_ms > 0 and case.kernels):
            raise ValueError(f"{case.label or case.method}: incomplete profile (no eager line, table or total)")
    return cases


def kernel_class(name: str, calls: int, per_layer_pass: int) -> str:
    """The class of a kernel by its (possibly truncated) name's prefix; scatters are KV writes only when called a
    whole number of times per layer and pass (``per_layer_pass`` calls = one per layer and pass)."""
    for cls, prefixes in CLASSES:
        if name.startswith(prefixes):
            if cls == "KV writes" and calls % per_layer_pass:
                return "other"
            return cls
    return "other"


def layer_matrices(shape: ModelShape) -> list[tuple[str, float]]:
    """A Llama layer's weight matrices, largest first, with their bytes."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    mats = [("gate-up", 2 * shape.hidden * shape.intermediate), ("down", shape.intermediate * shape.hidden),
            ("qkv", shape.hidden * (q + 2 * kv)), ("o", q * shape.hidden)]
    return sorted(((name, BYTES * n) for name, n in mats), key=lambda m: -m[1])


def breakdown(case: Case, shape: ModelShape, bandwidth: float) -> dict:
    """Per step: graph ms, kernel ms, gap, ms per class; per GEMM: matrices, calls, us per call, bytes; floor."""
    runs, passes = case.runs, case.passes
    per_layer_pass = runs * passes * shape.layers
    classes = dict.fromkeys(CLASS_NAMES, 0.0)
    per_layer, lm_head = [], None
    for k in case.kernels:
        cls = kernel_class(k.name, k.calls, per_layer_pass)
        classes[cls] += k.ms / runs
        if cls == "GEMMs":
            if k.calls == runs * passes:
                lm_head = k
            elif k.calls % per_layer_pass == 0:
                per_layer.append(k)
    classes["other"] = case.kernel_ms - sum(v for c, v in classes.items() if c != "other")
    gemms: dict[str, dict] = {}
    mats = layer_matrices(shape)
    if sum(k.calls // per_layer_pass for k in per_layer) == len(mats):
        for k in sorted(per_layer, key=lambda k: -k.ms / k.calls):
            share = [mats.pop(0) for _ in range(k.calls // per_layer_pass)]
            names = "+".join(name for name, _ in share)
            gemms[names] = dict(kernel=k.name, us_per_call=1e3 * k.ms / k.calls,
                                bytes_per_call=sum(b for _, b in share) / len(share))
    if lm_head is not None:
        gemms["LM head"] = dict(kernel=lm_head.name, us_per_call=1e3 * lm_head.ms / lm_head.calls,
                                bytes_per_call=BYTES * shape.vocab * shape.hidden)
    for g in gemms.values():
        g["copy_us"] = 1e6 * g["bytes_per_call"] / bandwidth
        g["ratio"] = g["us_per_call"] / g["copy_us"]
    graph = case.graph_ms[case.phase]
    weights_ms = 1e3 * passes * BYTES * shape.matmul_params / bandwidth
    context = case.prompt + NEW_TOKENS / 2
    kv_ms = 1e3 * passes * float(kv_cache_bytes(shape, case.batch, context, "bfloat16")) / bandwidth
    return dict(label=case.label, graph_ms=graph, kernel_ms=case.kernel_ms, gap_ms=graph - case.kernel_ms,
                classes=classes, gemms=gemms, weights_ms=weights_ms, kv_ms=kv_ms, floor_ms=weights_ms + kv_ms,
                gemm_over_weights_ms=classes["GEMMs"] - weights_ms,
                non_gemm_ms=case.kernel_ms - classes["GEMMs"])


def read(paths: list[Path], target: str, draft: str, bandwidth: float) -> list[dict]:
    """Every case of the profile files, broken down (the verify phase runs ``target``, the draft phase ``draft``)."""
    shapes = {"verify": named_shape(target), "draft": named_shape(draft)}
    return [breakdown(case, shapes[case.phase], bandwidth) for path in paths for case in parse(path.read_text())]


def classes_markdown(rows: list[dict]) -> str:
    """Table 1: ms per step, graph-replayed phase, summed kernels, the gap, and each kernel class."""
    lines = ["| case | phase (graphs) | kernels | gap | " + " | ".join(CLASS_NAMES) + " |",
             "|---|" + "---|" * (3 + len(CLASS_NAMES))]
    for r in rows:
        cells = [r["graph_ms"], r["kernel_ms"], r["gap_ms"], *(r["classes"][c] for c in CLASS_NAMES)]
        lines.append(f"| {r['label']} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    return "\n".join(lines) + "\n"


GEMM_COLUMNS = ["gate-up", "down", "qkv", "o", "LM head"]


def gemms_markdown(rows: list[dict], bandwidth: float) -> str:
    """Table 2: each GEMM's us per call and its ratio to its weights' copy time; all GEMMs of a step against all
    its weights at the copy bandwidth."""
    lines = [f"| case | {' | '.join(GEMM_COLUMNS)} | GEMMs, ms per step | weights at {bandwidth / 1e12:.2f} TB/s, "
             "ms per step |", "|---|" + "---|" * (len(GEMM_COLUMNS) + 2)]
    for r in rows:
        cells = []
        for col in GEMM_COLUMNS:
            key = next((k for k in r["gemms"] if col in k.split("+") or k == col), None)
            if key is None:
                cells.append("-")
            elif "+" in key and not key.startswith(col):
                cells.append(f"(with {key.split('+')[0]})")
            else:
                g = r["gemms"][key]
                both = f"{key}: " if "+" in key else ""
                cells.append(f"{both}{g['us_per_call']:.1f} us, {g['ratio']:.2f}x")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['classes']['GEMMs']:.3f} | "
                     f"{r['weights_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def floor_markdown(rows: list[dict]) -> str:
    """Table 3: the phase against its floor (weights + KV of the mean context at the copy bandwidth), and the
    three parts of the difference: the gap between kernels, the GEMMs' time beyond their weights' copy time, and
    the non-GEMM kernels' time beyond the KV cache's copy time (they hold the attention that reads it)."""
    lines = ["| case | phase ms (graphs) | floor ms | phase / floor | phase - floor | gap | GEMMs - weights' copy "
             "| non-GEMM kernels - KV copy |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["graph_ms"], r["floor_ms"]]
        parts = [r["graph_ms"] - r["floor_ms"], r["gap_ms"], r["gemm_over_weights_ms"], r["non_gemm_ms"] - r["kv_ms"]]
        lines.append(f"| {r['label']} | " + " | ".join(f"{v:.3f}" for v in cells)
                     + f" | {r['graph_ms'] / r['floor_ms']:.2f}x | " + " | ".join(f"{v:.3f}" for v in parts) + " |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], bandwidth: float) -> str:
    """The three tables, a blank line between them."""
    return "\n".join((classes_markdown(rows), gemms_markdown(rows, bandwidth), floor_markdown(rows)))


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profiles", type=Path, nargs="+", help="outputs of benchmarks/profile_phases.py")
    p.add_argument("--hw", type=Path, required=True, help="hardware profile JSON with hbm_bytes_per_s")
    p.add_argument("--target", default="random:llama-3.1-8b")
    p.add_argument("--draft", default="random:llama-3.2-1b")
    args = p.parse_args(argv)
    for path in (*args.profiles, args.hw):
        if not path.is_file():
            p.error(f"no such file: {path}")  # one line, exit 2
    bandwidth = float(json.loads(args.hw.read_text())["hbm_bytes_per_s"])
    try:
        rows = read(args.profiles, args.target, args.draft, bandwidth)
    except ValueError as exc:
        p.error(str(exc))
    text = markdown(rows, bandwidth)
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
