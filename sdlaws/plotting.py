"""Plots of fitted laws: data with error bars, fitted curve, confidence and prediction bands.

Uses matplotlib's object API (:class:`~matplotlib.figure.Figure`, no pyplot), so it needs no display and leaves
no global state. Imported by the CLI only when it writes a plot.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sdlaws import io
from sdlaws.fit.estimators import COUNT_WEIGHTS
from sdlaws.fit.result import FitResult

#: Points on the fitted curve.
CURVE_POINTS = 200
#: The style sheet of every sdlaws figure.
STYLE = Path(__file__).with_name("sdlaws.mplstyle")

#: Axis labels of the columns figures plot: the quantity and its unit (columns not listed: see :func:`quantity`).
QUANTITIES = {
    "mean_acceptance_length": "mean acceptance length τ (tokens per target pass)",
    "acceptance_rate": "draft acceptance rate (accepted / drafted tokens)",
    "alpha_mle": "per-token acceptance α (censored-geometric MLE)",
    "alpha_tau": "per-token acceptance α (from τ)",
    "draft_pretrain_tokens": "draft pretraining tokens",
    "target_pretrain_tokens": "target pretraining tokens",
    "draft_params": "draft parameters",
    "target_params": "target parameters",
    "draft_layers": "draft layers",
    "draft_ppl": "draft perplexity",
    "target_ppl": "target perplexity",
    "num_spec_tokens": "draft length γ (tokens per step)",
    "batch_size": "batch size (sequences)",
    "tree_topk": "tree top-k (candidates per depth)",
    "speedup": "speedup over autoregressive (×)",
    "decode_speedup": "decode speedup over autoregressive (×)",
    "tokens_per_s": "throughput (tokens/s)",
    "decode_tokens_per_s": "decode throughput (tokens/s)",
}
#: Columns holding probabilities: their bands are clipped to [0, 1].
PROBABILITY = re.compile(r"^(acceptance_rate|alpha_mle|alpha_tau|(pos|cond)_acceptance_rate_\d+)$")


def quantity(column: str) -> str:
    """Axis label of a column: its quantity and unit, else the column name in words."""
    if column in QUANTITIES:
        return QUANTITIES[column]
    position = re.fullmatch(r"(pos|cond)_acceptance_rate_(\d+)", column)
    if position:
        kind = "P(first {} accepted)" if position[1] == "pos" else "P(position {} accepted | earlier accepted)"
        return f"acceptance, {kind.format(position[2])}"
    return column.replace("_", " ")


def styled(draw):
    """Draw under the sdlaws style sheet (rc parameters are read when artists are made and saved)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(fname=STYLE):
            return draw(*args, **kwargs)
    return wrapper


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG at ``path`` and as SVG next to it, each atomically (:func:`sdlaws.io.save_figure`);
    returns the PNG path."""
    io.save_figure(fig, Path(path).with_suffix(".svg"))
    return io.save_figure(fig, path)


def error_bars(rows: pd.DataFrame, fit: FitResult) -> pd.DataFrame:
    """Points to plot: ``x`` columns, ``y`` and its standard error ``y_se`` (NaN when unknown).

    Rows sharing the same x are averaged and get the standard error of their mean (the spread between
    repeats, prompts or models). Otherwise a rate in [0, 1] weighted by the count it averages over gets the
    binomial standard error ``sqrt(y (1 - y) / count)``.
    """
    cols, y = list(fit.x), fit.y
    if rows.duplicated(cols).any():
        agg = rows.groupby(cols)[y].agg(["mean", "sem"]).reset_index()
        return agg.rename(columns={"mean": y, "sem": "y_se"})
    out = rows[cols + [y]].copy()
    count = fit.meta.get("weight")
    binomial = count in set(COUNT_WEIGHTS.values()) and out[y].between(0, 1).all()
    out["y_se"] = np.sqrt(out[y] * (1 - out[y]) / rows[count]) if binomial else np.nan
    return out


@styled
def plot_fits(fits: Mapping[Any, FitResult], rows: Mapping[Any, pd.DataFrame], path: str | Path,
              *, alpha: float = 0.05) -> Path:
    """Plot one law fitted to one or several groups and save it as PNG (and SVG).

    Parameters
    ----------
    fits : mapping group value -> FitResult (key None for an ungrouped fit)
    rows : mapping group value -> the rows that fit used (:func:`sdlaws.fit.estimators.used_rows`)
    path : path of the PNG
    alpha : float
        1 - coverage of the bands.

    Returns
    -------
    Path
        Laws of one regressor are drawn as curves over the data (log x for log laws, log y for log-space laws);
        laws of several regressors as observed versus predicted.
    """
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.subplots()
    first = next(iter(fits.values()))
    draw = _curves if len(first.x) == 1 else _observed_vs_predicted
    for i, (group, fit) in enumerate(fits.items()):
        draw(ax, fit, error_bars(rows[group], fit), f"C{i}", _label(group, fit), alpha)
    ax.set_title(f"{first.law}: {first.spec.equation}\n{1 - alpha:.0%} bands: shaded mean, dashed new observation")
    ax.legend()
    return save(fig, path)


def _label(group: Any, fit: FitResult) -> str:
    """Legend entry: group and fitted parameters."""
    params = ", ".join(f"{k}={v:.3g}" for k, v in fit.params.items())
    return params if group is None else f"{group}: {params}"


def _curves(ax, fit: FitResult, points: pd.DataFrame, color: str, label: str, alpha: float) -> None:
    """Data with error bars, fitted mean, shaded confidence band and dashed prediction band."""
    x = points[fit.x[0]].to_numpy(dtype=float)
    log_x = fit.spec.log_x
    grid = (np.geomspace if log_x else np.linspace)(x.min(), x.max(), CURVE_POINTS)
    band = fit.predict(grid, alpha=alpha)
    if PROBABILITY.match(fit.y):  # a probability's bands end at 0 and 1, whatever the linear law says
        bands = [c for c in band.columns if c.endswith(("_lower", "_upper"))]
        band[bands] = band[bands].clip(0.0, 1.0)
    ax.errorbar(x, points[fit.y], yerr=points["y_se"], fmt="o", ms=4, color=color, capsize=2)
    ax.plot(grid, band["mean"], color=color, label=label)
    ax.fill_between(grid, band["mean_ci_lower"], band["mean_ci_upper"], color=color, alpha=0.25, lw=0)
    ax.plot(grid, band["obs_ci_lower"], color=color, ls="--", lw=0.8)
    ax.plot(grid, band["obs_ci_upper"], color=color, ls="--", lw=0.8)
    ax.set_xscale("log" if log_x else "linear")
    ax.set_yscale("log" if fit.spec.space == "log" else "linear")
    ax.set_xlabel(quantity(fit.x[0]))
    ax.set_ylabel(quantity(fit.y))


def _observed_vs_predicted(ax, fit: FitResult, points: pd.DataFrame, color: str, label: str, alpha: float) -> None:
    """Observed y (with error bars) against the predicted mean (with its confidence interval) and y = x."""
    pred = fit.predict(points[list(fit.x)], alpha=alpha)
    xerr = np.vstack([pred["mean"] - pred["mean_ci_lower"], pred["mean_ci_upper"] - pred["mean"]])
    ax.errorbar(pred["mean"], points[fit.y], xerr=xerr, yerr=points["y_se"], fmt="o", ms=4, color=color,
                capsize=2, label=label)
    both = np.concatenate([pred["mean"], points[fit.y]])
    ax.plot([both.min(), both.max()], [both.min(), both.max()], color="0.5", lw=0.8)
    ax.set_xlabel(f"predicted {quantity(fit.y)} from {', '.join(map(quantity, fit.x))}")
    ax.set_ylabel(f"observed {quantity(fit.y)}")


@styled
def predicted_vs_measured(measured, predicted, groups, path: str | Path, *, quantity: str, title: str) -> Path:
    """Log-log scatter of predicted against measured values, one colour per group, with the identity line."""
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")
    ax = fig.subplots()
    measured, predicted, groups = np.asarray(measured, float), np.asarray(predicted, float), np.asarray(groups)
    for name in dict.fromkeys(groups):
        keep = groups == name
        ax.scatter(measured[keep], predicted[keep], s=10, alpha=0.7, label=str(name).removeprefix("random:"))
    lo, hi = np.nanmin([measured, predicted]) / 1.2, np.nanmax([measured, predicted]) * 1.2
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, label="identity")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel=f"measured {quantity}",
           ylabel=f"predicted {quantity}", title=title)
    ax.legend()
    return save(fig, path)


@styled
def speedup_by_batch(table: pd.DataFrame, path: str | Path) -> Path:
    """Decode speedup over AR versus batch size: the best configuration of each top-k (over depths), with the
    min-max range of the repeats."""
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.subplots()
    ar = table[table["method"] == "ar"].set_index("batch_size")["measured"]
    spec = table[table["method"] != "ar"]
    for k, g in spec.groupby("tree_topk"):
        best = g.loc[g.groupby("batch_size")["measured"].idxmax()].set_index("batch_size")
        base = ar.reindex(best.index)
        ax.errorbar(best.index, best["measured"] / base, yerr=[(best["measured"] - best["lower"]) / base,
                                                              (best["upper"] - best["measured"]) / base],
                    marker="o", capsize=2, label="chain" if k == 1 else f"tree top-{k}")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(xscale="log", xlabel="batch size (sequences)", ylabel="decode speedup over AR",
           title="8B target + 1B draft, H200, synthetic acceptance")
    ax.legend()
    return save(fig, path)


def plan_figures(plan_set, out: Path) -> None:
    """draft_size, serving and pretraining figures (PNG and SVG) of a plan set
    (:class:`sdlaws.plan.result.PlanSet`) for the parts it holds."""
    styled(_draw_plan_figures)(plan_set, Path(out))


def _draw_plan_figures(plan_set, out: Path) -> None:
    """The figures of :func:`plan_figures`, under the style sheet."""
    drafts = plan_set.select("draft_params")
    if drafts:
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        for plan in drafts[:2]:  # SDSL tokens/FLOP and the roofline at the first batch size
            plan.plot(ax, label=plan.objective)
        ax.set(xlabel="draft parameters", ylabel="predicted speedup over autoregressive (×)",
               title="Throughput versus draft size\n(dashed: optimum; shaded: 95% interval)")
        ax.legend()
        save(fig, out / "draft_size.png")
    if "serving" in plan_set.tables:
        _serving_figure(plan_set.tables["serving"], out / "serving.png")
    pre = plan_set.select("draft_pretrain_tokens")
    if pre:
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        pre[0].plot(ax, y="objective", label="training + serving GPU-hours")
        ax.set(yscale="log", xlabel="draft pretraining tokens", ylabel="training + serving cost (GPU-hours)")
        ax.legend()
        save(fig, out / "pretraining.png")


def _serving_figure(serving, path: Path) -> None:
    """serving: optimal chain length and tree shape (depth, top-k) versus batch size, with the fitted law."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    b, k = serving["batch_size"], serving["tree_topk"]
    ax.plot(b, serving["chain_num_spec_tokens"], marker="s", label="chain: draft length (num_spec_tokens)")
    ax.plot(b, serving["tree_num_spec_tokens"], marker="^", label="tree: depth (num_spec_tokens)")
    ax.errorbar(b, k, yerr=[k - serving["tree_topk_lower"].fillna(k), serving["tree_topk_upper"].fillna(k) - k],
                marker="o", capsize=3, label="tree: top-k (candidates per depth)")
    if "law_topk" in serving:
        ax.plot(b, serving["law_topk"], "k--", label="fitted k* = c B^-p")
        ax.fill_between(b, serving["law_topk_lower"], serving["law_topk_upper"], color="k", alpha=0.1)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="batch size (sequences)", ylabel="draft tokens per step (num_spec_tokens) or candidates (top-k)",
           title="Optimal speculation settings versus batch size (roofline)\n(bars: 95% interval of top-k)")
    ax.legend()
    save(fig, path)
