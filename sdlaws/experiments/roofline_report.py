"""The roofline section of the results document: calibrate the roofline on the ``topk-batch`` experiment's
forward-pass timings (its ``step`` table), starting from the GPU profile measured in the same session, and test it
on timings of other models and another context length.

:func:`sdlaws.calibration.calibrate` fits three factors (matmul and bandwidth efficiency, launch overhead); the
errors are reported with the measured profile and calibrated, on the fitted rows and on the held-out ones. The
section reads the ``step`` table that :mod:`sdlaws.experiments.topk_batch` declares, plus :data:`FILES`; that
module registers it as the experiment's second section.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sdlaws.experiments import verdicts
from sdlaws.experiments.reporting import Analysis, Doc, Tables, f, listed, table
from sdlaws.formatting import pct

#: The measured GPU profile the calibration starts from, and the timings it is tested on.
FILES = {"hardware": ("bench/hw-h100.json", "hardware"), "bench_steps": ("bench/steps-*.csv", "step")}
PROFILE_FACTORS = ("flops_efficiency", "hbm_efficiency", "launch_overhead_s")


def step_errors(step: pd.DataFrame, hw) -> pd.DataFrame:
    """Roofline time of every step row on ``hw`` and its error: ``model``, ``measured_s``, ``predicted_s``,
    ``pct_error`` (predicted / measured - 1, in %)."""
    from sdlaws.plan.cost import short_name, step_shape
    from sdlaws.roofline import forward_time_s

    parts = []
    for name, rows in step.groupby("model_name", sort=False):
        shape = step_shape(name, rows["model_params"].iloc[0])
        predicted = forward_time_s(shape, rows["batch_size"].to_numpy(float), rows["tokens_per_row"].to_numpy(float),
                                   rows["kv_len"].to_numpy(float), hw)
        parts.append(pd.DataFrame({"model": short_name(name), "measured_s": rows["median_time_s"].to_numpy(float),
                                   "predicted_s": predicted}))
    out = pd.concat(parts, ignore_index=True)
    out["pct_error"] = 100.0 * (out["predicted_s"] / out["measured_s"] - 1.0)
    return out


def _errors(errors: pd.DataFrame) -> dict[str, Any]:
    """Median and max |error| (%) overall and per model, and the row counts."""
    per_model = errors.groupby("model", sort=False)["pct_error"]
    return {"median_abs_pct_error": float(errors["pct_error"].abs().median()),
            "max_abs_pct_error": float(errors["pct_error"].abs().max()), "num_rows": len(errors),
            "per_model": {m: {"median_abs_pct_error": float(e.abs().median()), "median_pct_error": float(e.median()),
                              "num_rows": int(len(e))} for m, e in per_model}}


def analyse(tables: Tables) -> Analysis:
    """Calibrate on ``step`` from the measured profile; errors before and after, on fitted and held-out rows."""
    from sdlaws.plan.cost import step_shape
    from sdlaws.calibration import calibrate

    step, held, hw = tables["step"], tables["bench_steps"], tables["hardware"]
    shapes = {n: step_shape(n, p) for n, p in step.groupby("model_name")["model_params"].first().items()}
    cal = calibrate(step, hw, shapes=shapes)
    fitted, heldout = step_errors(step, cal.hardware), step_errors(held, cal.hardware)
    data = {"profile": {k: float(getattr(hw, k)) for k in PROFILE_FACTORS},
            "calibrated": {k: float(v) for k, v in cal.params.items()}, "identified": cal.identified,
            "fit_rows": _errors(fitted), "fit_rows_profile": _errors(step_errors(step, hw)),
            "heldout_rows": _errors(heldout), "heldout_rows_profile": _errors(step_errors(held, hw)),
            "hardware": cal.hardware.to_dict(), "kv_len": sorted(int(v) for v in step["kv_len"].unique()),
            "heldout_kv_len": sorted(int(v) for v in held["kv_len"].unique()),
            "verify_cost": verify_cost(step, cal.hardware)}
    frames = {"fitted": fitted, "held out": heldout}
    return Analysis(data, fits={"roofline_calibration": (cal, None)},
                    figures={"roofline.png": lambda path: _figure(frames, path)})


def verify_cost(step: pd.DataFrame, hw) -> dict[str, Any]:
    """At the smallest batch, the largest trained model's forward time with the fewest tokens per row above 1 over
    its time with 1 token: measured and on the calibrated roofline (how far verification is from free)."""
    from sdlaws.plan.cost import short_name, step_shape
    from sdlaws.roofline import forward_time_s

    trained = step[step["model_name"].map(lambda n: short_name(n) != n)]
    target = trained.loc[trained["model_params"].idxmax()]
    smallest = trained["batch_size"].min()
    rows = trained[trained["model_name"].eq(target["model_name"]) & trained["batch_size"].eq(smallest)]
    one = rows[rows["tokens_per_row"].eq(1)].iloc[0]
    more = rows[rows["tokens_per_row"].gt(1)].sort_values("tokens_per_row").iloc[0]
    times = forward_time_s(step_shape(target["model_name"], target["model_params"]), int(one["batch_size"]),
                           np.array([1.0, float(more["tokens_per_row"])]), float(one["kv_len"]), hw)
    return {"model": short_name(target["model_name"]), "batch_size": int(one["batch_size"]),
            "tokens_per_row": int(more["tokens_per_row"]),
            "measured_ratio": float(more["median_time_s"] / one["median_time_s"]),
            "predicted_ratio": float(times[1] / times[0])}


def _figure(frames: dict[str, pd.DataFrame], path):
    """Predicted against measured forward-pass times, one colour per (row set, model)."""
    from sdlaws.plotting import predicted_vs_measured

    rows = pd.concat([frame.assign(group=f"{kind}: " + frame["model"]) for kind, frame in frames.items()])
    return predicted_vs_measured(rows["measured_s"], rows["predicted_s"], rows["group"], path,
                                 quantity="forward-pass time (s)", title="calibrated roofline")


def summary(d: dict) -> list[list[str]]:
    """The summary table's row: the calibrated error on the fitted rows."""
    return [["Roofline calibration", "", f"median error {pct(d['fit_rows']['median_abs_pct_error'])} on "
                                         f"{d['fit_rows']['num_rows']} step timings"]]


def render(d: dict, doc: Doc) -> list[str]:
    """Calibrated factors, errors per model on fitted and held-out timings, what they say."""
    rows = [[label, name, str(cal["num_rows"]), pct(prof["median_abs_pct_error"]), pct(cal["median_abs_pct_error"]),
             pct(cal["median_pct_error"])]
            for label, block in (("fitted", "fit_rows"), ("held out", "heldout_rows"))
            for (name, cal), prof in zip(d[block]["per_model"].items(), d[f"{block}_profile"]["per_model"].values())]
    v, fitted, held = d["verify_cost"], d["fit_rows"], d["heldout_rows"]
    factors = ", ".join(f"{k} {f(d['calibrated'][k])} (profile {f(d['profile'][k])})" for k in d["calibrated"])
    return ["## Roofline calibration", "",
            f"`sdlaws.calibration.calibrate` on {fitted['num_rows']} forward-pass timings (`throughput/step.csv`: "
            f"{listed(fitted['per_model'])}, cached context {listed(d['kv_len'])}), starting from the measured "
            f"profile `bench/hw-h100.json`. Fitted: {factors}. Timings at context {listed(d['heldout_kv_len'])} "
            f"(`bench/steps-*.csv`: {listed(held['per_model'])}) are held out.", "",
            *table(["set", "model", "rows", "median error, measured profile", "median error, calibrated",
                    "median signed error, calibrated"], rows),
            f"Median absolute error on the fitted rows: {pct(d['fit_rows_profile']['median_abs_pct_error'])} with "
            f"the measured profile, {pct(fitted['median_abs_pct_error'])} calibrated (max "
            f"{pct(fitted['max_abs_pct_error'])}); on the held-out models "
            f"{pct(d['heldout_rows_profile']['median_abs_pct_error'])} and {pct(held['median_abs_pct_error'])}. "
            + verdicts.calibration_transfer(fitted["median_abs_pct_error"], held["median_abs_pct_error"],
                                            d["heldout_rows_profile"]["median_abs_pct_error"]) + " "
            + verdicts.efficiency_shift({k: d["calibrated"][k] / d["profile"][k] for k in d["calibrated"]
                                         if k.endswith("_efficiency")}) + " "
            + verdicts.verify_cost(v["measured_ratio"], v["predicted_ratio"], v["tokens_per_row"],
                                   f"For {v['model']} at batch {v['batch_size']}"), "",
            doc.fig("roofline.png"), ""]
