"""Time the step-time law's fit on 500 step rows and one `sdlaws plan serving --steps --profile` (targets: both
under 2 s on 2 cores), and `sdlaws validate` on each shipped held-out suite (target: under 10 s).

Run: ``python benchmarks/bench_plan.py [--repeats K]``. The 500 rows are the first 500 of the committed H200 step
tables (``measurements/h200/steps.csv``); the plan is the README's measured-cost-model example, run in-process
through the CLI; the validations are the commands of the results document's held-out section
(:data:`sdlaws.experiments.heldout.SUITES`). Prints the median wall time of ``K`` repeats of each.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLAN = ["plan", "serving", "--target", "random:llama-3.1-8b", "--draft", "random:llama-3.2-1b", "--hardware", "h200",
        "--steps", str(ROOT / "measurements/h200/steps.csv"), "--profile",
        str(ROOT / "measurements/h200/thm13-profile.json"), "--kv-len", "528", "--max-new-tokens", "32", "--json"]


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    """Print the two timings and the machine they ran on."""
    from typer.testing import CliRunner

    from sdlaws.cli import app
    from sdlaws.experiments.heldout import SUITES, command
    from sdlaws.hardware import load_hardware
    from sdlaws.io import read_measurements
    from sdlaws.plan.cost import fit_steptime

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rows = read_measurements(ROOT / "measurements/h200/steps.csv", table="step", ok_only=True).head(500)
    hw = load_hardware("h200")
    fit_s = median_seconds(lambda: fit_steptime(rows, hw), args.repeats)
    runner = CliRunner()

    def plan():
        result = runner.invoke(app, PLAN)
        assert result.exit_code == 0, result.output
    plan_s = median_seconds(plan, args.repeats)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"step-time law fit on {len(rows)} rows: median {fit_s:.3f} s over {args.repeats} repeats (goal < 2 s)")
    print(f"plan serving --steps --profile (9 batch sizes x 28 configurations): median {plan_s:.3f} s (goal < 2 s)")
    os.chdir(ROOT)  # the validate commands name repository-relative paths
    for suite in SUITES:
        def validate(args_=command(suite).split()[1:] + ["--json"]):
            result = runner.invoke(app, args_)
            assert result.exit_code == 0, result.output
        print(f"validate, {suite.title}: median {median_seconds(validate, args.repeats):.3f} s (goal < 10 s)")


if __name__ == "__main__":
    main()
