"""GPU regression guard: sdlaws's decoding speed on an 8B/1B shape pair against its memory-bandwidth floor and HF.

In one run on one GPU (``benchmarks/gpu_guard.sh`` launches it), on a random Llama-3.1-8B target and a random
Llama-3.2-1B draft, bf16, 128-token random prompts, 256 new tokens, greedy:

1. the device profile (:func:`sdlaws.measure.hwbench.measure_hardware`: copy bandwidth, matmul rate) -> ``hw.json``;
2. sdlaws decoding through its own sweep (:func:`sdlaws.measure.sweep.run_sweep`) -> ``spec.csv``: AR at batch 1
   and 64; a gamma-4 chain at batch 1; a top-2 depth-4 tree with a budget of 4 at batch 1, which verifies the
   same 5 tokens per step as the chain, so their ``verify_step_s`` compare a tree verification with a chain one;
3. bare forwards from the step-table timer (:func:`sdlaws.measure.hwbench.measure_steps`) -> ``steps.csv``: the
   draft at batch 1, the target at batch 1 and 64 for 1 token and at batch 1 for the 5 a verification checks, and
   the target's compute-bound verify forwards (batch 64 x 16 and 32 tokens, batch 32 x 32 and 64: 1024 and 2048
   rows), whose FLOP rate ``matmul_pct`` is set against the matmul rate measured in 1.;
4. Hugging Face ``generate(cache_implementation="static")``, greedy, on the AR shapes (target at batch 1 and 64,
   draft at batch 1) -> ``hf.jsonl``;
5. the report (:func:`report`): one row per configuration with its decode step time and bandwidth floor ->
   ``guard.csv``, ``guard.json`` (with provenance and the device profile) and ``guard.md`` (a table ready for
   ``docs/benchmarks.md``); ``pytest.txt``, when the shell script left it there, adds its summary line.

The floor of a step is the bytes its forwards must read at the copy bandwidth measured in the same run:
matmul weights (every weight but an untied input-embedding table, a lookup) plus the KV cache of the mean
context, prompt + half the new tokens, per row (:func:`bench_measure_gpu.floor_bytes`), for the target's
forward and each of gamma draft forwards of a speculative step. ``floor_pct`` = floor / measured step time.

Random weights: a random draft and target almost never agree, so a speculative step commits one token and
every configuration runs ``new_tokens - 1`` steps; the timings do not depend on the weights' values.

Every stage appends to its file and skips what is already there, so a cut run resumes where it stopped (the
stages are ordered most-needed first). ``--smoke`` runs the same stages on CPU with ``random:tiny`` shapes, fp32
and a few tokens, in seconds (the floors then use the CPU's copy rate).

Usage::

    python3 benchmarks/gpu_guard.py --out $OUT               # one H200: about 4 minutes
    python3 benchmarks/gpu_guard.py --smoke --out out/guard  # CPU smoke run
    python3 benchmarks/gpu_guard.py --report-only --out $OUT # rebuild the report from the files in $OUT
    python3 benchmarks/gpu_guard.py --targets guard.csv      # the engine's targets checked on a guard table
    python3 benchmarks/gpu_guard.py --compare OLD_DIR NEW_DIR   # what changed between two guard runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_measure_gpu, when imported from elsewhere
from bench_measure_gpu import floor_bytes  # noqa: E402

from sdlaws import io, rates  # noqa: E402
from sdlaws.measure.config import MeasureConfig  # noqa: E402
from sdlaws.provenance import describe, provenance  # noqa: E402

EXPERIMENT = "gpu-guard"


@dataclass(frozen=True)
class Workload:
    """Models, shapes and lengths of a guard run."""

    target: str = "random:llama-3.1-8b"
    draft: str = "random:llama-3.2-1b"
    dtype: str = "bfloat16"
    device: str = "cuda"
    prompt_len: int = 128
    new_tokens: int = 256
    big_batch: int = 64
    num_prompts: int = 4    # decoded one at a time at batch 1; the large batch repeats them
    gamma: int = 4
    tree_topk: int = 2

    @property
    def context(self) -> int:
        """Mean context of a decode step: the prompt plus half the new tokens (the floor's KV length)."""
        return self.prompt_len + self.new_tokens // 2


#: The CPU smoke run: tiny shapes (an untied target, so that its greedy output is not its last token repeated).
SMOKE = Workload(target="random:tiny?tie_word_embeddings=false", draft="random:tiny?num_hidden_layers=1",
                 dtype="float32", device="cpu", prompt_len=8, new_tokens=8, big_batch=4, num_prompts=2)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="output folder (resumed when it holds earlier files)")
    p.add_argument("--smoke", action="store_true", help="CPU, random:tiny shapes, fp32, a few tokens")
    p.add_argument("--new-tokens", type=int, help="new tokens per sequence (default 256; 8 with --smoke)")
    p.add_argument("--report-only", action="store_true", help="only rebuild guard.csv/json/md from --out")
    p.add_argument("--targets", type=Path, metavar="GUARD_CSV", help="print the targets checked on a guard.csv")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"),
                   help="print the step times of two guard runs' folders side by side")
    args = p.parse_args(argv)
    if args.out is None and args.targets is None and args.compare is None:
        p.error("--out, --targets or --compare is required")
    if args.targets is not None and not args.targets.is_file():
        p.error(f"no guard table at {args.targets}")  # one line, exit 2
    for folder in args.compare or ():
        missing = [name for name in ("guard.csv", "guard.json") if not (folder / name).is_file()]
        if missing:
            p.error(f"{folder}: no {' or '.join(missing)} (a guard run's folder holds both)")
    return args


def measure_sdlaws(w: Workload, spec_csv: Path) -> None:
    """AR at batch 1 and the large batch; then chain and tree at batch 1 (the AR row is shared, not re-run)."""
    from sdlaws.measure.sweep import run_sweep

    base = dict(targets=(w.target,), prompts="random", num_prompts=w.num_prompts, max_prompt_len=w.prompt_len,
                max_new_tokens=w.new_tokens, dtype=w.dtype, device=w.device, experiment=EXPERIMENT)
    ar = MeasureConfig(**base, batch_sizes=(1, w.big_batch))
    # tree budget = gamma: the tree verifies as many tokens per step as the chain (gamma + the root)
    spec = MeasureConfig(**base, drafts=(w.draft,), num_spec_tokens=(w.gamma,), topks=(1, w.tree_topk),
                         tree_budget=w.gamma)
    for config in (ar, spec):
        print(run_sweep(config, spec_csv, progress=False).summary())
        # the sweep's lock files are only for concurrent sweeps; left in the output they would count as files
        shutil.rmtree(spec_csv.parent / f".{spec_csv.name}.claims", ignore_errors=True)


def measure_forwards(w: Workload, steps_csv: Path) -> None:
    """Bare graph-replayed forwards at the mean context: draft at batch 1; target at batch 1 (1 token, and the
    gamma + 1 of a verification) and at the large batch (1 token)."""
    from sdlaws.measure.hwbench import StepSweep, measure_steps

    points = [(w.draft, (1,), (1,)), (w.target, (1,), (1, w.gamma + 1)), (w.target, (w.big_batch,), (1,)),
              (w.target, (w.big_batch,), VERIFY_TOKENS), (w.target, (w.big_batch // 2,), tuple(2 * t for t in VERIFY_TOKENS))]
    for model, batches, tokens in points:
        measure_steps(model, steps_csv, StepSweep(batch_sizes=batches, tokens_per_row=tokens, kv_len=w.context),
                      dtype=w.dtype, device=w.device, progress=False)


def hf_points(w: Workload) -> list[tuple[str, str, int]]:
    """(name, model, batch size) of the HF static-cache configurations: the AR shapes."""
    return [(f"hf-static {role} b{b}", model, b)
            for role, model, b in (("target", w.target, 1), ("target", w.target, w.big_batch),
                                   ("draft", w.draft, 1))]


def measure_hf(w: Workload, hf_jsonl: Path) -> None:
    """HF greedy ``generate(cache_implementation="static")`` on the sweep's prompts; a line per configuration."""
    from sdlaws.measure.hf_baseline import hf_static_generate
    from sdlaws.measure.models import free_device_memory, load_model
    from sdlaws.measure.prompts import load_prompts
    from sdlaws.measure.sweep import full_batches

    done = {row["config"] for row in read_jsonl(hf_jsonl)}
    for name, spec, batch in hf_points(w):
        if name in done:
            continue
        model, _, _ = load_model(spec, dtype=w.dtype, device=w.device)
        # the sweep's prompts: same set, count, seed and length
        prompts = load_prompts("random", num_prompts=w.num_prompts, max_prompt_len=w.prompt_len,
                               vocab_size=model.config.get_text_config().vocab_size).token_ids
        result = hf_static_generate(model, full_batches(prompts, batch), max_new_tokens=w.new_tokens)
        with hf_jsonl.open("a") as f:
            f.write(json.dumps({"config": name, "model": spec, **result.to_dict()}) + "\n")
        del model
        free_device_memory(w.device)


def read_jsonl(path: Path) -> list[dict]:
    """Lines of a JSON-lines file (none when it is absent; a torn last line of a cut run is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def floor_step_s(w: Workload, model: str, batch: int, draft_passes: int, bandwidth: float) -> float:
    """Bandwidth floor of one decode step: a target forward and ``draft_passes`` draft forwards."""
    nbytes = floor_bytes(model, batch, w.context, w.dtype)
    if draft_passes:
        nbytes += draft_passes * floor_bytes(w.draft, batch, w.context, w.dtype)
    return nbytes / bandwidth


def sdlaws_rows(w: Workload, spec_csv: Path, bandwidth: float) -> list[dict]:
    """One row per sdlaws decoding configuration (the last ok row of each in the spec table)."""
    if not spec_csv.is_file():
        return []
    df = rates.derive(io.read_measurements(spec_csv, table="spec", ok_only=True))
    df = df[df["experiment"].eq(EXPERIMENT) & df["max_new_tokens"].eq(w.new_tokens)]
    rows = []
    for (method, batch), group in df.groupby(["method", "batch_size"], sort=False):
        r = group.iloc[-1]
        steps = r["num_steps"]
        step_s = (r["total_time_s"] - r["prefill_time_s"]) / steps
        label = "ar" if method == "ar" else f"{method} g{w.gamma}" + (f" top{w.tree_topk}" if method == "tree" else "")
        rows.append(dict(
            config=f"sdlaws {label} b{batch}", impl="sdlaws", model=w.target, method=method, batch_size=int(batch),
            tokens_per_pass=1 if method == "ar" else w.gamma + 1, step_s=step_s, tpot_s=r["tpot_s"],
            decode_tokens_per_s=r["decode_tokens_per_s"], verify_step_s=r["verify_time_s"] / steps,
            draft_step_s=r["draft_time_s"] / steps if method != "ar" else None,
            floor_step_s=floor_step_s(w, w.target, int(batch), 0 if method == "ar" else w.gamma, bandwidth)))
    return rows


def forward_rows(w: Workload, steps_csv: Path, bandwidth: float, matmul_flops_per_s: float | None) -> list[dict]:
    """One row per bare forward of the step table (median of its repeats), with its FLOP rate as a share of the
    measured matmul rate (``matmul_pct``)."""
    from sdlaws.roofline import forward_flops, named_shape

    if not steps_csv.is_file():
        return []
    df = io.read_measurements(steps_csv, table="step", ok_only=True)
    df = df[df["kv_len"].eq(w.context) & df["model_name"].isin([w.target, w.draft])]
    rows = []
    for (model, batch, tokens), group in df.groupby(["model_name", "batch_size", "tokens_per_row"], sort=False):
        role = "draft" if model == w.draft else "target"
        step_s = float(group["median_time_s"].iloc[-1])
        flops = float(forward_flops(named_shape(model), batch, tokens, w.context))
        rows.append(dict(config=f"forward {role} b{batch} x{tokens}", impl="forward", model=model, method="forward",
                         batch_size=int(batch), tokens_per_pass=int(tokens), step_s=step_s,
                         floor_step_s=floor_step_s(w, model, int(batch), 0, bandwidth),
                         matmul_pct=100 * flops / step_s / matmul_flops_per_s if matmul_flops_per_s else None))
    return rows


def hf_rows(w: Workload, hf_jsonl: Path, bandwidth: float) -> list[dict]:
    """One row per HF static-cache configuration (the last line of each)."""
    last = {row["config"]: row for row in read_jsonl(hf_jsonl)}
    rows = []
    for name, model, batch in hf_points(w):
        if name in last:
            step_s = last[name]["decode_step_s"]
            rows.append(dict(config=name, impl="hf-static", model=model, method="ar", batch_size=batch,
                             tokens_per_pass=1, step_s=step_s, tpot_s=step_s, decode_tokens_per_s=batch / step_s,
                             floor_step_s=floor_step_s(w, model, batch, 0, bandwidth)))
    return rows


COLUMNS = ["config", "impl", "model", "method", "batch_size", "tokens_per_pass", "step_s", "tpot_s",
           "decode_tokens_per_s", "verify_step_s", "draft_step_s", "floor_step_s", "matmul_pct", "floor_pct"]
#: Tokens per row of the compute-bound verify forwards at the large batch (twice as many at half of it).
VERIFY_TOKENS = (16, 32)
#: Rows per forward from which a verify forward counts as compute-bound for the matmul-rate target.
COMPUTE_BOUND_ROWS = 1024


def guard_table(w: Workload, out: Path, bandwidth: float, matmul_flops_per_s: float | None = None) -> pd.DataFrame:
    """Every configuration measured so far, with ``floor_pct`` = floor / measured step time."""
    rows = (sdlaws_rows(w, out / "spec.csv", bandwidth)
            + forward_rows(w, out / "steps.csv", bandwidth, matmul_flops_per_s) + hf_rows(w, out / "hf.jsonl", bandwidth))
    table = pd.DataFrame(rows, columns=COLUMNS[:-1])
    table["floor_pct"] = 100.0 * table["floor_step_s"] / table["step_s"]
    return table


def pytest_summary(path: Path) -> str:
    """The summary line of the GPU tests' log (``pytest.txt``), or ``not run``."""
    if not path.is_file():
        return "not run"
    lines = [ln.strip("= ") for ln in path.read_text().splitlines() if " in " in ln and any(
        word in ln for word in ("passed", "failed", "error", "skipped"))]
    return lines[-1] if lines else "no summary line (cut off?)"


def summary(w: Workload, table: pd.DataFrame, hw: dict, tests: str) -> dict:
    """Provenance, workload, device rates and the guard's headline ratios."""
    step = dict(zip(table["config"], table["step_s"]))

    def ratio(a: str, b: str) -> float | None:
        return step[a] / step[b] if a in step and b in step else None
    chain, tree = f"sdlaws chain g{w.gamma} b1", f"sdlaws tree g{w.gamma} top{w.tree_topk} b1"
    verify = dict(zip(table["config"], table["verify_step_s"]))
    return {**provenance(hw.get("gpu_name", "")), "workload": asdict(w), "hbm_bytes_per_s": hw.get("hbm_bytes_per_s"),
            "matmul_flops_per_s": hw.get("matmul_flops_per_s"), "gpu_tests": tests,
            "tree_over_chain_verify": (verify[tree] / verify[chain]) if tree in verify and chain in verify else None,
            "hf_over_sdlaws_ar_b1": ratio("hf-static target b1", "sdlaws ar b1"),
            f"hf_over_sdlaws_ar_b{w.big_batch}": ratio(f"hf-static target b{w.big_batch}", f"sdlaws ar b{w.big_batch}"),
            "rows": table.to_dict(orient="records")}


def markdown(info: dict, table: pd.DataFrame) -> str:
    """The table and its provenance line, ready to paste into ``docs/benchmarks.md``."""
    w = info["workload"]
    head = (f"{describe(info)}; {w['target']} <- {w['draft']}, {w['dtype']}, "
            f"{w['prompt_len']}-token prompts, {w['new_tokens']} new tokens, greedy; copy bandwidth "
            f"{_num(info['hbm_bytes_per_s'], 1e9, '{:.0f}')} GB/s, matmul "
            f"{_num(info['matmul_flops_per_s'], 1e12, '{:.3g}')} TFLOP/s; GPU tests: {info['gpu_tests']}.")
    lines = [head, "", "| configuration | batch | tokens/pass | step ms | verify ms | draft ms | tokens/s | floor ms "
             "| % of floor |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.config} | {r.batch_size} | {r.tokens_per_pass} | {_num(r.step_s, 1e-3)} | "
                     f"{_num(r.verify_step_s, 1e-3)} | {_num(r.draft_step_s, 1e-3)} | "
                     f"{_num(r.decode_tokens_per_s, 1, '{:.1f}')} | {_num(r.floor_step_s, 1e-3)} | "
                     f"{_num(r.floor_pct, 1, '{:.0f}%')} |")
    return "\n".join(lines) + "\n"


#: gpt-fast's batch-1 decode step of the same random Llama-3.1-8B shape, measured earlier on an H200 (quoted:
#: that run's files are not in this repository); the engine's AR at batch 1 is to beat it.
GPT_FAST_AR_B1_S = 4.94e-3


def target_checks(table: pd.DataFrame) -> pd.DataFrame:
    """The engine's speed targets checked on a guard table: one row per target with the measured value, the
    goal, the direction (``>=``, ``<=`` or ``<``) and whether it is met. Rows a table lacks are left out."""
    by = table.set_index("config")
    chain = table[table["method"].eq("chain")]
    tree = table[table["method"].eq("tree")]
    big = table[table["impl"].eq("sdlaws") & table["method"].eq("ar") & table["batch_size"].gt(1)]
    checks = []

    def add(name: str, value, op: str, goal: float, unit: str):
        if value is not None and not pd.isna(value):
            met = {">=": value >= goal, "<=": value <= goal, "<": value < goal}[op]
            checks.append(dict(target=name, measured=float(value), op=op, goal=goal, unit=unit, met=bool(met)))
    if "sdlaws ar b1" in by.index:
        add("AR batch 1, % of floor", by.loc["sdlaws ar b1", "floor_pct"], ">=", 85, "%")
        add("AR batch 1 step vs gpt-fast", by.loc["sdlaws ar b1", "step_s"] * 1e3, "<", GPT_FAST_AR_B1_S * 1e3, "ms")
    for r in big.itertuples():
        add(f"AR batch {r.batch_size}, % of floor", r.floor_pct, ">=", 75, "%")
    if "forward draft b1 x1" in by.index:
        draft_forward = by.loc["forward draft b1 x1", "step_s"]
        add("draft forward batch 1, % of floor", by.loc["forward draft b1 x1", "floor_pct"], ">=", 60, "%")
        for r in chain.itertuples():
            # the draft phase runs gamma forwards (gamma = the verified tokens minus the root)
            per_forward = r.draft_step_s / (r.tokens_per_pass - 1)
            add(f"draft forward inside a chain step / bare draft forward", per_forward / draft_forward, "<=", 1.1, "x")
    for r in chain.itertuples():
        add(f"chain gamma {r.tokens_per_pass - 1} step batch {r.batch_size}, % of floor", r.floor_pct, ">=", 70, "%")
    if "matmul_pct" in table:
        verify = table[table["impl"].eq("forward") & (table["batch_size"] * table["tokens_per_pass"]).ge(
            COMPUTE_BOUND_ROWS) & table["matmul_pct"].notna()]
        for r in verify.itertuples():
            add(f"verify forward batch {r.batch_size} x {r.tokens_per_pass}, % of matmul rate", r.matmul_pct, ">=",
                80, "%")
    if len(chain) and len(tree):
        add("tree verification / chain verification (same tokens)",
            tree["verify_step_s"].iloc[0] / chain["verify_step_s"].iloc[0], "<=", 1.1, "x")
    return pd.DataFrame(checks, columns=["target", "measured", "op", "goal", "unit", "met"])


def targets_markdown(checks: pd.DataFrame) -> str:
    """The target checks as a markdown table."""
    fmt = {"%": "{:.1f}%", "ms": "{:.3f} ms", "x": "{:.3f}x"}
    lines = ["| target | measured | goal | met |", "|---|---|---|---|"]
    for r in checks.itertuples():
        goal = f"{r.goal:g}{' ' if r.unit == 'ms' else ''}{r.unit}"
        lines.append(f"| {r.target} | {fmt[r.unit].format(r.measured)} | {r.op} {goal} | "
                     f"{'yes' if r.met else 'no'} |")
    return "\n".join(lines) + "\n"


def compare_markdown(before: Path, after: Path) -> str:
    """Two guard runs side by side (their folders' ``guard.csv`` and ``guard.json``): each configuration both
    measured, with its step ms in each run, the change in percent, and its verify and draft ms (before -> after);
    the first row is the copy bandwidth each run measured (its floors' denominator)."""
    runs = [(json.loads((d / "guard.json").read_text()), pd.read_csv(d / "guard.csv")) for d in (before, after)]
    (info0, t0), (info1, t1) = runs
    old = t0.set_index("config")

    def change(a: float, b: float) -> str:
        return f"{100 * (b / a - 1):+.1f}%"

    def pair(a, b) -> str:
        return "-" if pd.isna(a) and pd.isna(b) else f"{_num(a, 1e-3)} -> {_num(b, 1e-3)}"
    lines = [f"| configuration | step ms, `{info0['git_sha']}` | step ms, `{info1['git_sha']}` | change | "
             "verify ms | draft ms |", "|---|---|---|---|---|---|"]
    bw0, bw1 = info0["hbm_bytes_per_s"], info1["hbm_bytes_per_s"]
    lines.append(f"| copy bandwidth, GB/s | {bw0 / 1e9:.0f} | {bw1 / 1e9:.0f} | {change(bw0, bw1)} | - | - |")
    for r in t1.itertuples():
        if r.config not in old.index:
            continue
        o = old.loc[r.config]
        lines.append(f"| {r.config} | {_num(o.step_s, 1e-3)} | {_num(r.step_s, 1e-3)} | {change(o.step_s, r.step_s)} | "
                     f"{pair(o.verify_step_s, r.verify_step_s)} | {pair(o.draft_step_s, r.draft_step_s)} |")
    return "\n".join(lines) + "\n"


def _num(value, unit: float, fmt: str = "{:.3f}") -> str:
    """``value / unit`` formatted, or a dash for a missing value."""
    return "-" if value is None or pd.isna(value) else fmt.format(value / unit)


def report(w: Workload, out: Path) -> dict:
    """Write ``guard.csv``, ``guard.json`` and ``guard.md`` from the files in ``out``; return the summary."""
    hw = json.loads((out / "hw.json").read_text())
    table = guard_table(w, out, hw["hbm_bytes_per_s"], hw.get("matmul_flops_per_s"))
    table.to_csv(out / "guard.csv", index=False)
    info = summary(w, table, hw, pytest_summary(out / "pytest.txt"))
    io.save_json(info, out / "guard.json")
    (out / "guard.md").write_text(markdown(info, table) + "\n" + targets_markdown(target_checks(table)))
    return info


def main(argv=None) -> dict:
    """Measure what ``--out`` lacks, stage by stage, then write the report."""
    from sdlaws.measure.hwbench import measure_hardware

    args = parse_args(argv)
    if args.targets is not None:
        print(targets_markdown(target_checks(pd.read_csv(args.targets))), end="")
        return {}
    if args.compare is not None:
        print(compare_markdown(*args.compare), end="")
        return {}
    w = SMOKE if args.smoke else Workload()
    if args.new_tokens:
        w = replace(w, new_tokens=args.new_tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        hw = measure_hardware(w.device, dtype=w.dtype)  # every run: seconds, and the floors need this machine's
        io.save_json(hw, args.out / "hw.json")
        print(hw.summary(), flush=True)
        measure_sdlaws(w, args.out / "spec.csv")
        measure_forwards(w, args.out / "steps.csv")
        measure_hf(w, args.out / "hf.jsonl")
    info = report(w, args.out)
    print((args.out / "guard.md").read_text())
    return info


if __name__ == "__main__":
    main()
