"""Out-of-sample checks of the step-time law (:mod:`sdlaws.plan.cost`): every prediction below is made for rows
that the fit it comes from did not see.

- :func:`leave_one_point_out`: each row predicted from its own shape's surface built without it (the nine GPU
  parameters stay at the full fit: one row of hundreds moves them by far less than the errors reported, which
  :func:`leave_one_point_out` can check by refitting them too, ``refit=True``);
- :func:`leave_one_batch_out`: every row of one (shape, batch size) predicted after refitting the law and that
  shape's surface without them;
- :func:`leave_one_shape_out`: every row of one shape predicted by the law fitted on the other shapes alone;
- :func:`transfer_error`: rows of one GPU predicted from a law fitted on another GPU's rows, moved by datasheet
  ratios (:meth:`~sdlaws.plan.cost.StepTimeFit.transfer`).

Each returns one row per predicted step timing: ``model_name``, inputs, ``measured_s``, ``predicted_s``,
``pct_error``, and what the prediction used (``inputs``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sdlaws.hardware import Hardware
from sdlaws.plan.cost import StepTimeFit, Surface, _coords, _ok_steps, fit_steptime, step_shape

_KEYS = ["model_name", "batch_size", "tokens_per_row", "kv_len"]


def _frame(rows: pd.DataFrame, predicted: np.ndarray, inputs: str) -> pd.DataFrame:
    """Error table of predicted vs measured seconds."""
    measured = rows["median_time_s"].to_numpy(float)
    return rows[_KEYS].assign(measured_s=measured, predicted_s=predicted,
                              pct_error=100.0 * (predicted / measured - 1.0), inputs=inputs).reset_index(drop=True)


def leave_one_point_out(step_df: pd.DataFrame, hw: Hardware, *, refit: bool = False) -> pd.DataFrame:
    """Each row predicted by the law times its shape's residual surface built without that row.

    ``refit=True`` also refits the nine GPU parameters without the row (slower: one fit per row).
    """
    rows = _ok_steps(step_df)
    full = fit_steptime(rows, hw)
    predicted = np.empty(len(rows))
    for i in range(len(rows)):
        fit = fit_steptime(rows.drop(index=i), hw) if refit else full
        predicted[i] = _surface_prediction(fit, rows, i)
    return _frame(rows, predicted, "law (GPU params " + ("refitted" if refit else "of the full fit")
                  + ") x own-shape surface without the row")


def _surface_prediction(fit: StepTimeFit, rows: pd.DataFrame, i: int) -> float:
    """Prediction of row ``i`` from ``fit``'s law and a surface of its shape's other rows."""
    row = rows.iloc[i]
    name = str(row["model_name"])
    shape = fit.shapes[name]
    others = rows[(rows["model_name"].astype(str) == name) & (rows.index != i)]
    coords = _coords(others["batch_size"], others["tokens_per_row"], others["kv_len"])
    law_others = fit.law_s(shape, others["batch_size"], others["tokens_per_row"], others["kv_len"])
    surface = Surface(coords, np.log(others["median_time_s"].to_numpy(float) / law_others))
    point = _coords(row["batch_size"], row["tokens_per_row"], row["kv_len"])
    law = fit.law_s(shape, row["batch_size"], row["tokens_per_row"], row["kv_len"])
    return float(law[0] * np.exp(surface(point)[0][0]))


def leave_one_batch_out(step_df: pd.DataFrame, hw: Hardware) -> pd.DataFrame:
    """Rows of each (shape, batch size) predicted by a fit (law + surfaces) made without them."""
    rows = _ok_steps(step_df)
    parts = []
    for (name, batch), held in rows.groupby([rows["model_name"].astype(str), "batch_size"]):
        fit = fit_steptime(rows.drop(index=held.index), hw)
        predicted = fit.time_s(fit.shapes[name], held["batch_size"], held["tokens_per_row"], held["kv_len"])
        parts.append(_frame(held, predicted, f"law + surface without batch {batch} of this shape"))
    return pd.concat(parts, ignore_index=True)


def leave_one_shape_out(step_df: pd.DataFrame, hw: Hardware) -> pd.DataFrame:
    """Rows of each shape predicted by the law fitted on the other shapes (no table of its own)."""
    rows = _ok_steps(step_df)
    names = rows["model_name"].astype(str)
    parts = []
    for name in names.unique():
        held = rows[names == name]
        fit = fit_steptime(rows[names != name], hw)
        predicted = fit.law_s(step_shape(name), held["batch_size"], held["tokens_per_row"], held["kv_len"])
        others = ", ".join(sorted(set(names[names != name])))
        parts.append(_frame(held, predicted, f"law fitted on {others}"))
    return pd.concat(parts, ignore_index=True)


def transfer_error(source_df: pd.DataFrame, source_hw: Hardware, target_df: pd.DataFrame,
                   target_hw: Hardware) -> pd.DataFrame:
    """Rows of ``target_df`` (one GPU) predicted by the law fitted on ``source_df`` (another GPU), moved by
    datasheet ratios; only shapes measured on both GPUs are predicted."""
    fit = fit_steptime(source_df, source_hw).transfer(source_hw, target_hw)
    rows = _ok_steps(target_df)
    names = rows["model_name"].astype(str)
    held = rows[names.isin(set(fit.shapes))]
    predicted = np.empty(len(held))
    for name, pos in held.groupby(held["model_name"].astype(str)).indices.items():
        part = held.iloc[pos]
        predicted[pos] = fit.law_s(fit.shapes[name], part["batch_size"], part["tokens_per_row"], part["kv_len"])
    return _frame(held, predicted, f"law fitted on {fit.residuals['model_name'].nunique()} shapes of "
                                   f"{source_df['gpu_name'].iloc[0]}, {fit.source}")


def error_summary(errors: pd.DataFrame, by: str | None = "model_name") -> pd.DataFrame:
    """Median and max |error| (%) and the number of predictions, overall and per ``by`` group."""
    def stats(e: pd.Series) -> pd.Series:
        return pd.Series({"n": len(e), "median_abs_pct": e.abs().median(), "max_abs_pct": e.abs().max()})

    out = stats(errors["pct_error"]).to_frame("all").T
    if by is not None:
        out = pd.concat([errors.groupby(by)["pct_error"].apply(stats).unstack(), out])
    return out.assign(n=lambda d: d["n"].astype(int))
