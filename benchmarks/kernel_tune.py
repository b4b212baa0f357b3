"""Configurations of the fast path's Triton kernels timed at the engine's shapes, against what they replace.

    python3 benchmarks/kernel_tune.py --out $OUT/tune.csv            # one H200: about 6 minutes, most of it compiling
    python3 benchmarks/kernel_tune.py --out $OUT/tune.csv --only linear --rows 1
    python3 benchmarks/kernel_tune.py --summary measurements/h200/tune.csv   # the fastest configuration per case

Two sweeps, each row one (case, implementation, configuration):

- ``linear``: the projections of the random Llama-3.1-8B shape (target) and Llama-3.2-1B shape (draft), bf16, at
  ``--rows`` rows (batch x tokens of a forward): cuBLAS (``F.linear``; for the MLP's fused gate/up projection
  followed by the fast path's SwiGLU kernel, :func:`sdlaws.measure.projection.silu_mul`, as it runs it) against
  :func:`sdlaws.measure.projection.linear` over a grid of ``BLOCK_N x BLOCK_K x stages x split of K`` (``BLOCK_M`` 16
  up to 16 rows, else 64; SwiGLU in the epilogue for gate/up, never split). The weight bytes per call over the time
  is compared with the device-to-device copy bandwidth measured in the same run (% of copy). ``chosen`` marks what
  the fast path's own timing at a process's first call picks (:func:`sdlaws.measure.projection.choose_linear`).
- ``attention``: :func:`sdlaws.measure.kernels.attention` over the slot cache (the cases and inputs of
  ``attention_paths.py``: ``batch x n x S``) over a grid of slot block sizes, warps, pipeline stages and shares of
  the cache's blocks (the share count for the block size, twice it and half of it), then
  :func:`sdlaws.measure.kernels.attention_config`'s configuration with ``zero_dead=False`` (dead slots' values not
  zeroed: what that zeroing costs; the inputs' dead slots hold finite values, so its output is still checked);
  ``chosen`` marks :func:`sdlaws.measure.kernels.attention_config`'s. The first case, batch 64 x 16 tokens, is a
  compute-bound verification's tiles of 64 folded rows.

Each timing captures, in one CUDA graph, one call on each of several copies of the weights (or KV caches), as a
forward runs one per layer, so that no copy is read from L2 by the next call and the launches follow each other as
in a forward; the graph is replayed and timed with CUDA events (median of ``--repeats``). Every output is compared
with cuBLAS's (linear) or a float32 reference (attention); a row over tolerance is ``WRONG`` and the run exits 1.
Rows are appended to the CSV as they are measured and a re-run skips the rows already there, so a run cut short
resumes; ``--budget-s`` stops starting new cases after that many seconds.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attention_paths import make_inputs, reference as attention_reference  # noqa: E402 (benchmarks/ is sys.path[0])

from sdlaws import provenance
from sdlaws.measure import hwbench

#: name -> (output rows N of the weight, K, swiglu): Llama-3.1-8B and Llama-3.2-1B projections (gate/up fused).
LINEAR_SHAPES = {
    "8b-qkv": (6144, 4096, False), "8b-o": (4096, 4096, False), "8b-gate_up": (28672, 4096, True),
    "8b-down": (4096, 14336, False), "8b-lm_head": (128256, 4096, False),
    "1b-qkv": (3072, 2048, False), "1b-o": (2048, 2048, False), "1b-gate_up": (16384, 2048, True),
    "1b-down": (2048, 8192, False), "1b-lm_head": (128256, 2048, False),
}
LINEAR_GRID = dict(block_n=(16, 32, 64), block_k=(128, 256), num_stages=(3, 5), split=(1, 2, 4, 8))
#: (batch, tokens per row, slots); first the compute-bound verification's tiles of 64 folded rows (16 tokens a row)
ATTENTION_CASES = ((64, 16, 384), (1, 1, 384), (1, 5, 384), (64, 1, 384), (64, 5, 384), (1, 1, 2048), (64, 1, 2048))
ATTENTION_GRID = dict(block_s=(32, 64, 128), num_warps=(2, 4, 8), num_stages=(2, 3))
#: Bytes of weights (or KV caches) one timed graph cycles through: several times the H200's 50 MB L2.
CYCLE_BYTES = 512e6
FIELDS = ["sweep", "case", "rows", "impl", "config", "chosen", "us", "bytes", "pct_copy", "max_err", "status", "copies",
          "copy_bps", "gpu", "torch", "triton", "git_sha", "timestamp"]


def grid_configs(grid: dict) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def config_key(config: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


def linear_rows(copy_bps: float, rows_list, repeats: int, done, deadline: float):
    """Rows of the linear sweep, one (shape, rows, impl, config) at a time."""
    from sdlaws.measure import kernels, projection

    silu_mul = projection.silu_mul  # what follows a cuBLAS gate/up projection on the fast path
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name, (n_w, k_dim, swiglu) in LINEAR_SHAPES.items():
        nbytes = 2.0 * n_w * k_dim
        copies = max(1, min(16, math.ceil(CYCLE_BYTES / nbytes)))
        weights = [torch.randn(n_w, k_dim, device="cuda", generator=gen, dtype=torch.bfloat16) * k_dim ** -0.5
                   for _ in range(copies)]
        for rows in rows_list:
            if time.monotonic() > deadline:
                return
            x = torch.randn(rows, k_dim, device="cuda", generator=gen, dtype=torch.bfloat16)
            expect = (silu_mul(F.linear(x, weights[0])) if swiglu else F.linear(x, weights[0])).float()
            # what the fast path would run (its own timing, at the first call of a process)
            choice = projection.choose_linear(x, weights[0], None, swiglu,
                                           lambda h, w, b: silu_mul(F.linear(h, w)) if swiglu else F.linear(h, w))
            impls = [("cublas", None)] + [("triton", cfg) for cfg in grid_configs(LINEAR_GRID)
                                          if not (swiglu and cfg["split"] > 1)]
            for impl, cfg in impls:
                key = (name, str(rows), impl, config_key(cfg or {}))
                if key in done:
                    continue
                if impl == "cublas":
                    def call(w, x=x):
                        return silu_mul(F.linear(x, w)) if swiglu else F.linear(x, w)
                else:
                    def call(w, x=x, cfg=cfg):
                        return projection.linear(x, w, swiglu=swiglu, config=projection.linear_config(rows, x.dtype, swiglu,
                                                                                                 **cfg))
                chosen = (choice is None if impl == "cublas"
                          else projection.linear_config(rows, x.dtype, swiglu, **cfg) == choice)
                row = dict(sweep="linear", case=name, rows=rows, impl=impl, config=config_key(cfg or {}),
                           chosen=chosen, bytes=nbytes, copies=copies)
                try:
                    err = (call(weights[0]).float() - expect).abs().max().item()
                    us = kernels.graph_us_per_call([lambda w=w: call(w) for w in weights], repeats=repeats)
                except Exception as exc:  # a configuration out of shared memory or registers: recorded, not fatal
                    yield {**row, "status": f"failed: {str(exc).splitlines()[0][:120]}"}
                    continue
                tol = 2e-2 * max(1.0, expect.abs().max().item())
                yield {**row, "us": us, "pct_copy": 100 * nbytes / copy_bps / (us * 1e-6), "max_err": err,
                       "status": "ok" if err <= tol else "WRONG"}
        del weights
        torch.cuda.empty_cache()


def attention_rows(copy_bps: float, repeats: int, done, deadline: float):
    """Rows of the attention sweep, one (case, config) at a time."""
    from sdlaws.measure import kernels

    for batch, n, slots in ATTENTION_CASES:
        if time.monotonic() > deadline:
            return
        x = make_inputs(batch, n, slots, torch.bfloat16, "cuda")
        expect = attention_reference(x).transpose(1, 2).reshape(batch, n, -1)
        live_bytes = 2.0 * sum(x.live) * x.keys.shape[1] * x.keys.shape[3] * 2
        layers = max(1, min(32, math.ceil(CYCLE_BYTES / (2.0 * x.keys.numel() * 2))))
        caches = [(x.keys.clone(), x.values.clone()) for _ in range(layers)]
        bounds = kernels.live_bounds(x.token_mask)
        case = f"{batch}x{n}x{slots}"
        heads, device = batch * x.keys.shape[1], torch.device("cuda")
        default = kernels.attention_config(heads, x.q_fold.shape[2], slots, device)
        # the grid, then the fast path's own configuration without zeroing dead slots' values (what that costs)
        engine = {**default, "zero_dead": True}
        bound = {k: default[k] for k in ("block_s", "num_warps", "num_stages", "splits")} | {"zero_dead": False}
        for cfg in grid_configs(ATTENTION_GRID) + [bound]:
            programs = heads * default["tiles"]
            shares = kernels.num_splits(programs, slots, device, cfg["block_s"])
            for splits in [cfg["splits"]] if "splits" in cfg else sorted({shares, shares * 2, max(1, shares // 2)}):
                full = {**cfg, "splits": splits}
                key = (case, str(batch * n), "triton", config_key(full))
                if key in done:
                    continue

                def call(k, v, full=full):
                    return kernels.attention(x.q_fold, k, v, x.token_mask, n, bounds=bounds, **full)
                row = dict(sweep="attention", case=case, rows=batch * n, impl="triton", config=config_key(full),
                           chosen=all(engine[k] == v for k, v in full.items()), bytes=live_bytes, copies=layers)
                try:
                    err = (call(x.keys, x.values).float() - expect).abs().max().item()
                    us = kernels.graph_us_per_call([lambda k=k, v=v: call(k, v) for k, v in caches], repeats=repeats)
                except Exception as exc:
                    yield {**row, "status": f"failed: {str(exc).splitlines()[0][:120]}"}
                    continue
                yield {**row, "us": us, "pct_copy": 100 * live_bytes / copy_bps / (us * 1e-6), "max_err": err,
                       "status": "ok" if err <= 2e-2 else "WRONG"}
        del caches, x
        torch.cuda.empty_cache()


def summary(path: Path) -> str:
    """Markdown: per case and rows, cuBLAS (linear), what the fast path chose and the sweep's fastest."""
    import pandas as pd

    df = pd.read_csv(path)
    ok = df[df.status == "ok"]
    lines = ["| sweep | case | rows | cuBLAS us (% copy) | chosen us (% copy) | fastest us (% copy) | fastest config |",
             "|---|---|---|---|---|---|---|"]
    for (sweep, case, rows), group in ok.groupby(["sweep", "case", "rows"], sort=False):
        triton = group[group.impl == "triton"]
        if triton.empty:
            continue
        best = triton.loc[triton.us.idxmin()]
        base = group[group.impl == "cublas"]

        def cell(frame):
            if frame.empty:
                return "-"
            r = frame.iloc[0]
            return f"{r.us:.2f} ({r.pct_copy:.0f}%)"
        chosen = group[group.chosen.astype(bool)] if "chosen" in group else group.head(0)  # a run before the column
        lines.append(f"| {sweep} | {case} | {rows} | {cell(base)} | {cell(chosen)} "
                     f"| {cell(best.to_frame().T)} "
                     f"| {best.config} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="CSV to append rows to (resumed: rows already there are skipped)")
    parser.add_argument("--only", choices=("linear", "attention"), help="run one sweep")
    parser.add_argument("--rows", default="1,5,64", help="rows of the linear sweep, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no new case after this many seconds")
    parser.add_argument("--summary", type=Path, help="print the summary table of a CSV and exit")
    args = parser.parse_args(argv)
    if args.summary is None and args.out is None:
        parser.error("give --out (a run) or --summary (a table of a run)")
    try:
        args.rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error(f"--rows {args.rows!r}: comma-separated positive integers, e.g. 1,5,64")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary is not None:
        print(summary(args.summary))
        return 0
    if not torch.cuda.is_available():
        print("kernel_tune.py times CUDA graphs: run it on a GPU machine", file=sys.stderr)
        return 2
    import triton

    done = set()
    if args.out.exists():
        with args.out.open() as f:
            done = {(r["case"], r["rows"], r["impl"], r["config"]) for r in csv.DictReader(f)}
    copy_bps = hwbench.copy_bytes_per_s("cuda", hwbench.GPU_SIZES)
    meta = dict(copy_bps=copy_bps, gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__, git_sha=provenance.git_sha(), timestamp=provenance.now_utc())
    print(f"copy bandwidth {copy_bps / 1e12:.2f} TB/s; {len(done)} rows already in {args.out}", flush=True)
    deadline = time.monotonic() + args.budget_s
    sweeps = []
    if args.only in (None, "linear"):
        sweeps.append(linear_rows(copy_bps, args.rows, args.repeats, done, deadline))
    if args.only in (None, "attention"):
        sweeps.append(attention_rows(copy_bps, args.repeats, done, deadline))
    wrong = 0
    new = not args.out.exists()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        if new:
            writer.writeheader()
        for row in itertools.chain(*sweeps):
            writer.writerow({**row, **meta})
            f.flush()
            wrong += row["status"] == "WRONG"
            us = f"{row['us']:.2f} us ({row['pct_copy']:.0f}% copy)" if "us" in row else row["status"]
            print(f"{row['sweep']} {row['case']} rows={row['rows']} {row['impl']} {row['config']}: {us}", flush=True)
    print(summary(args.out))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
