"""Continuous against static batching on the same prompts: the table of ``docs/benchmarks.md`` from a spec CSV.

``benchmarks/gpu_batching.sh`` measures each (method, batch size) once per ``--batching`` mode, with repeats.
Per (method, batch size, mode) this prints the decode steps, prefill seconds, decode seconds (total - prefill),
decode milliseconds per step and tokens/s (new tokens / total time), each as the mean over the repeats with their
range, and per (method, batch size) the continuous / static ratio of each mean.

Usage::

    python3 benchmarks/batching_report.py measurements/h200/batching.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from sdlaws import io, rates

#: (column, header, format) of the compared quantities.
QUANTITIES = [("num_steps", "decode steps", "{:.0f}"), ("prefill_s", "prefill s", "{:.2f}"),
              ("decode_s", "decode s", "{:.2f}"), ("decode_ms_per_step", "decode ms/step", "{:.2f}"),
              ("tokens_per_s", "tokens/s", "{:.0f}")]
KEYS = ["method", "batch_size", "batching"]


def per_run(spec: pd.DataFrame) -> pd.DataFrame:
    """One row per measured run (ok rows) with the compared quantities; rates come from :mod:`sdlaws.rates`."""
    df = rates.derive(spec[spec["status"].eq("ok")])
    step_s = rates.decode_step_s(df)
    return df[KEYS].assign(num_steps=df["num_steps"], prefill_s=df["prefill_time_s"],
                           decode_s=step_s * df["num_steps"], decode_ms_per_step=1e3 * step_s,
                           tokens_per_s=df["tokens_per_s"])


def batching_table(spec: pd.DataFrame) -> pd.DataFrame:
    """Per (method, batch size, mode): each quantity's mean, min and max over the repeats (``<q>``,
    ``<q>_min``, ``<q>_max``) and ``repeats``; then per (method, batch size) a ``continuous/static`` row of the
    means' ratios (its min/max columns empty)."""
    runs = per_run(spec)
    names = [q for q, _, _ in QUANTITIES]
    grouped = runs.groupby(KEYS, sort=True)[names]
    table = grouped.mean().join(grouped.min().add_suffix("_min")).join(grouped.max().add_suffix("_max"))
    table["repeats"] = grouped.size()
    table = table.reset_index()
    ratios = []
    for (method, batch), g in table.groupby(["method", "batch_size"], sort=True):
        modes = g.set_index("batching")
        if {"static", "continuous"} <= set(modes.index):
            ratio = modes.loc["continuous", names] / modes.loc["static", names]
            ratios.append({"method": method, "batch_size": batch, "batching": "continuous/static", **ratio})
    out = pd.concat([table, pd.DataFrame(ratios)], ignore_index=True)
    rank = out["batching"].map({"static": 0, "continuous": 1, "continuous/static": 2})
    return out.assign(_rank=rank).sort_values(["method", "batch_size", "_rank"]).drop(columns="_rank").reset_index(
        drop=True)


def markdown(table: pd.DataFrame) -> str:
    """The table in markdown: ``mean (min-max)`` per run mode, ``x ratio`` on the ratio rows."""
    head = "| method | batch | batching | " + " | ".join(h for _, h, _ in QUANTITIES) + " |"
    lines = [head, "|" + "---|" * (3 + len(QUANTITIES))]
    for r in table.to_dict(orient="records"):
        ratio = r["batching"] == "continuous/static"
        cells = [f"{r[q]:.2f}x" if ratio else _spread(r[q], r[f"{q}_min"], r[f"{q}_max"], fmt)
                 for q, _, fmt in QUANTITIES]
        lines.append(f"| {r['method']} | {r['batch_size']} | {r['batching']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _spread(mean: float, low: float, high: float, fmt: str) -> str:
    """``mean (low-high)``, or the mean alone where the repeats agree to the format's precision."""
    lo, hi = fmt.format(low), fmt.format(high)
    return fmt.format(mean) + ("" if lo == hi else f" ({lo}-{hi})")


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", type=Path, help="spec CSV of benchmarks/gpu_batching.sh")
    args = p.parse_args(argv)
    if not args.csv.is_file():
        p.error(f"no such file: {args.csv}")  # one line, exit 2
    text = markdown(batching_table(io.read_measurements(args.csv, table="spec")))
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
