"""Time `fit_law` on 10,000 rows with 1,000 bootstrap resamples (target: under 5 s on 2 cores).

Run: ``python benchmarks/bench_fit.py [--rows N] [--boot R] [--repeats K]``. Prints the median wall time of
``K`` repeats of one full fit (OLS/WLS + vectorised bootstrap), resampling rows and resampling 100 units.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd

from sdlaws.fit import fit_law

N_UNITS = 100  # e.g. prompts or models for the unit-resampling case


def synthetic_rows(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Acceptance-rate rows on a log-linear law in draft pretraining tokens, with per-row token counts."""
    rng = np.random.default_rng(seed)
    tokens = 10 ** rng.uniform(8, 12, n_rows)
    drafted = rng.integers(500, 5000, n_rows)
    rate = 0.05 * np.log10(tokens) + 0.1 + rng.normal(0, 1, n_rows) * 0.5 / np.sqrt(drafted)
    return pd.DataFrame({"draft_pretrain_tokens": tokens, "acceptance_rate": rate, "num_draft_tokens": drafted,
                         "prompt_set": rng.integers(0, N_UNITS, n_rows)})


def median_seconds(df: pd.DataFrame, n_boot: int, repeats: int, unit: str | None) -> float:
    """Median wall time of ``repeats`` fits with ``n_boot`` resamples."""
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        fit_law(df, "loglinear", y="acceptance_rate", unit=unit, n_boot=n_boot, seed=seed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    """Parse options, warm up, time, print one line per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--boot", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    df = synthetic_rows(args.rows)
    fit_law(df.head(100), "loglinear", y="acceptance_rate", n_boot=10)  # warm-up: imports, caches
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, numpy {np.__version__}")
    for label, unit in (("rows", None), (f"{N_UNITS} units", "prompt_set")):
        seconds = median_seconds(df, args.boot, args.repeats, unit)
        print(f"loglinear WLS, {args.rows} rows, {args.boot} resamples of {label}: median {seconds:.3f} s "
              f"over {args.repeats} repeats")


if __name__ == "__main__":
    main()
