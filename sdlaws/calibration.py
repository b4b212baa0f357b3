"""Calibration of the roofline (:mod:`sdlaws.roofline`) on measured forward-pass times.

:func:`calibrate` fits the FLOP and bandwidth efficiencies and the per-kernel launch cost to the rows of a
``step`` table (:data:`sdlaws.schema.STEP_TIMING`) and reports the residual error; :func:`ok_step_rows` is the
row filter it shares with the step-time law (:mod:`sdlaws.plan.cost`): ok rows of one device and one
tensor-parallel size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sdlaws import schema
from sdlaws.errors import ConfigError, InputError
from sdlaws.hardware import Hardware
from sdlaws.roofline import ModelShape, forward_breakdown, named_shape

_CAL_PARAMS = ("flops_efficiency", "hbm_efficiency", "launch_overhead_s")
_CAL_BOUNDS = {"flops_efficiency": (1e-3, 1.0), "hbm_efficiency": (1e-3, 1.0), "launch_overhead_s": (1e-9, 1e-2)}


@dataclass(frozen=True)
class Calibration:
    """Roofline factors fitted to measured step times.

    Attributes
    ----------
    hardware : Hardware
        The input hardware with the fitted factors.
    params : pandas.Series
        Fitted ``flops_efficiency``, ``hbm_efficiency``, ``launch_overhead_s``.
    identified : dict
        Per parameter, whether the data constrain it (e.g. FLOP efficiency needs compute-bound rows); an
        unidentified parameter keeps the input hardware's value.
    residuals : pandas.DataFrame
        One row per step measurement: inputs, ``measured_s``, ``predicted_s``, ``pct_error``, ``memory_bound``.
    """

    hardware: Hardware
    params: pd.Series
    identified: dict[str, bool]
    residuals: pd.DataFrame = field(repr=False)

    @property
    def median_abs_pct_error(self) -> float:
        """Median of |predicted / measured - 1| x 100 over the rows."""
        return float(self.residuals["pct_error"].abs().median())

    @property
    def max_abs_pct_error(self) -> float:
        """Largest |predicted / measured - 1| x 100."""
        return float(self.residuals["pct_error"].abs().max())

    def summary(self) -> str:
        """Text report: fitted factors, which are identified, residual error."""
        lines = [f"Roofline calibration on {self.hardware.name} ({len(self.residuals)} step timings)"]
        for name, value in self.params.items():
            note = "" if self.identified[name] else "  (not identified by these rows: kept input value)"
            lines.append(f"  {name:<18} {value:.4g}{note}")
        lines.append(f"  median |error| {self.median_abs_pct_error:.1f}%   max |error| {self.max_abs_pct_error:.1f}%")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (JSON-ready)."""
        return dict(hardware=self.hardware.to_dict(), params=self.params.to_dict(), identified=self.identified,
                    median_abs_pct_error=self.median_abs_pct_error, max_abs_pct_error=self.max_abs_pct_error,
                    residuals=self.residuals.to_dict(orient="records"))


def _row_shape(row: pd.Series, shapes: dict[str, ModelShape]) -> ModelShape:
    """Shape of a step row: given shapes, else a named shape, else from params/layers/hidden."""
    name = str(row["model_name"])
    if name in shapes:
        return shapes[name]
    try:
        return named_shape(name)
    except ConfigError:
        layers = row.get("model_layers")
        hidden = row.get("hidden_size")
        return ModelShape.from_params(float(row["model_params"]), name=name,
                                      layers=int(layers) if pd.notna(layers) else None,
                                      hidden=int(hidden) if pd.notna(hidden) else None)


def _group_rows(step: pd.DataFrame, row_shapes: list[ModelShape]) -> list[tuple[ModelShape, np.ndarray]]:
    """Row indices per distinct shape, so each shape's rows are timed in one vectorised call."""
    groups: dict[ModelShape, list[int]] = {}
    for i, shape in enumerate(row_shapes):
        groups.setdefault(shape, []).append(i)
    return [(shape, np.array(idx)) for shape, idx in groups.items()]


def _breakdown(step: pd.DataFrame, groups, hw: Hardware, dtype: str) -> dict[str, np.ndarray]:
    """forward_breakdown of every step row (arrays in row order)."""
    out = {k: np.empty(len(step)) for k in ("time_s", "overhead_s", "memory_bound")}
    for shape, idx in groups:
        rows = step.iloc[idx]
        parts = forward_breakdown(shape, rows["batch_size"].to_numpy(float), rows["tokens_per_row"].to_numpy(float),
                                  rows["kv_len"].to_numpy(float), hw, dtype=dtype)
        for key in out:
            out[key][idx] = parts[key]
    return out


def calibrate(step_df: pd.DataFrame, hw: Hardware, *, shapes: dict[str, ModelShape] | None = None,
              dtype: str | None = None) -> Calibration:
    """Fit ``flops_efficiency``, ``hbm_efficiency`` and ``launch_overhead_s`` to measured forward-pass times.

    Least squares on log time (``scipy.optimize.least_squares``, bounded, from several starts), so every row
    weighs by its relative error. A factor that no row is sensitive to (no compute-bound rows for the FLOP
    efficiency, no memory-bound rows for the bandwidth) is held at the input value and reported unidentified;
    the per-kernel launch cost is always fitted.

    Parameters
    ----------
    step_df : DataFrame
        Rows of the ``step`` table (:data:`sdlaws.schema.STEP_TIMING`) from one device; failed rows are dropped.
    hw : Hardware
        Peaks to calibrate (the preset of the measured device).
    shapes : dict, optional
        ``model_name -> ModelShape``; otherwise a named shape matching ``model_name`` (``random:llama-3-8b``),
        else a shape from ``model_params``/``model_layers``/``hidden_size``.
    dtype : str, optional
        Compute dtype; default: the rows' ``dtype`` column if uniform, else ``bfloat16``.

    Returns
    -------
    Calibration

    Raises
    ------
    InputError
        No ok rows, rows from several devices, or fewer rows than the 3 parameters.
    """
    from scipy.optimize import least_squares

    step = ok_step_rows(step_df, len(_CAL_PARAMS), "calibration")
    dtype = dtype or _uniform(step, "dtype") or "bfloat16"
    groups = _group_rows(step, [_row_shape(r, shapes or {}) for _, r in step.iterrows()])
    log_measured = np.log(step["median_time_s"].to_numpy(dtype=float))

    def hardware_at(theta: np.ndarray, names: list[str]) -> Hardware:
        """Hardware with the named factors set to exp(theta)."""
        return hw.with_efficiency(**dict(zip(names, np.exp(theta))))

    def fit(names: list[str]) -> Hardware:
        """Best of several bounded least-squares fits of the named factors (log space)."""
        lo = np.log([_CAL_BOUNDS[n][0] for n in names])
        hi = np.log([_CAL_BOUNDS[n][1] for n in names])

        def resid(theta):
            """Log predicted minus log measured time, per row."""
            return np.log(_breakdown(step, groups, hardware_at(theta, names), dtype)["time_s"]) - log_measured

        # Several starts over the log box guard against the kink of max(compute, memory).
        runs = [least_squares(resid, lo + f * (hi - lo), bounds=(lo, hi)) for f in (0.25, 0.5, 0.75)]
        return hardware_at(min(runs, key=lambda r: r.cost).x, names)

    fitted = fit(list(_CAL_PARAMS))
    memory_bound = _breakdown(step, groups, fitted, dtype)["memory_bound"].astype(bool)
    identified = {"flops_efficiency": bool((~memory_bound).any()), "hbm_efficiency": bool(memory_bound.any()),
                  "launch_overhead_s": True}
    if not all(identified.values()):
        fitted = fit([n for n in _CAL_PARAMS if identified[n]])
    parts = _breakdown(step, groups, fitted, dtype)
    measured = np.exp(log_measured)
    residuals = step[["model_name", "batch_size", "tokens_per_row", "kv_len"]].assign(
        measured_s=measured, predicted_s=parts["time_s"], pct_error=100.0 * (parts["time_s"] / measured - 1.0),
        memory_bound=parts["memory_bound"].astype(bool))
    params = pd.Series({n: getattr(fitted, n) for n in _CAL_PARAMS})
    source = f"{hw.source}; calibrated on {len(step)} step timings"
    return Calibration(hardware=fitted.with_efficiency(source=source), params=params, identified=identified,
                       residuals=residuals)


def ok_step_rows(step_df: pd.DataFrame, min_rows: int, what: str) -> pd.DataFrame:
    """Ok ``step`` rows of one device and one tensor-parallel size, at least ``min_rows`` of them (``what`` names
    the fit in messages)."""
    step = step_df[step_df["status"].astype(str).eq("ok")] if "status" in step_df else step_df
    if "gpu_name" in step and step["gpu_name"].nunique() > 1:
        raise InputError(f"step rows come from several devices {sorted(step['gpu_name'].unique())}; fit one "
                         "device at a time (filter on gpu_name)")
    tp = sorted(int(size) for size in schema.tp_sizes(step).unique())
    if len(tp) > 1:
        raise InputError(f"step rows mix tensor-parallel sizes {tp}; fit one GPU configuration at a time "
                         "(filter on tp_size)")
    if len(step) < min_rows:
        raise InputError(f"{what} needs at least {min_rows} ok step rows (got {len(step)}); measure more batch "
                         "sizes / tokens per row")
    return step.reset_index(drop=True)


def _uniform(df: pd.DataFrame, column: str) -> str | None:
    """The single value of a column, or None when it varies or is absent."""
    if column in df and df[column].nunique() == 1 and str(df[column].iloc[0]).strip():
        return str(df[column].iloc[0])
    return None
