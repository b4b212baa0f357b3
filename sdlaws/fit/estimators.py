"""Estimators: DataFrame + column names -> :class:`~sdlaws.fit.result.FitResult`.

- Laws linear in their coefficients (``fitter="ols"``) are fitted with statsmodels OLS, or WLS when the rows
  carry weights. With ``weight="auto"`` the weight of a rate derived from counts is the count it is a mean over
  (:data:`COUNT_WEIGHTS`, e.g. ``num_draft_tokens`` for ``acceptance_rate``): the binomial variance of a rate
  is proportional to 1/count, so rows measured on more tokens count more. This ignores that acceptance varies
  between prompts (over-dispersion); the residual scale is estimated, and a unit bootstrap (``unit=``) gives
  intervals that do not rely on the weights being right. Weights are rescaled to mean 1, so the prediction band
  is that of a new row with the average weight.
- Nonlinear laws (``fitter="nls"``) use :func:`scipy.optimize.least_squares` from every starting point of the
  law and keep the lowest cost; the covariance is ``s^2 (J'WJ)^-1`` from the Jacobian at the optimum.
- ``n_boot > 0`` adds percentile intervals from a seeded bootstrap over whole units (:mod:`sdlaws.fit.bootstrap`).

The log-likelihood ``llf`` is Gaussian in the fit space (statsmodels' formula, weights included) and, for
log-space laws, carries the Jacobian ``-sum(log y)`` so that it is a density of ``y`` and comparable across laws
fitted to the same rows (:func:`compare`).

One module because every estimator returns the same FitResult through shared helpers (weights,
intervals, bootstrap); a module per estimator would duplicate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import least_squares
from statsmodels.regression.linear_model import OLS, WLS

from sdlaws import __version__, checks, rates, schema
from sdlaws.errors import ConfigError, InputError
from sdlaws.fit.bootstrap import bootstrap_linear, bootstrap_refit
from sdlaws.fit.laws import LAWS, LawSpec, get_law
from sdlaws.fit.result import FitResult
from sdlaws.provenance import git_sha, now_utc

#: Derived rate -> the count it averages over; its regression weight under ``weight="auto"``.
COUNT_WEIGHTS = {"acceptance_rate": "num_draft_tokens", "alpha_mle": "num_draft_tokens",
                 "alpha_tau": "num_drafts", "mean_acceptance_length": "num_drafts"}
#: Prefixes of per-position rates (``pos_acceptance_rate_3``), which average over ``num_drafts``.
POSITION_RATE_PREFIXES = ("pos_acceptance_rate_", "cond_acceptance_rate_")
#: Nonlinear fits run the optimiser from this many starting points, those with the lowest initial cost.
MAX_STARTS = 3
#: Throughput column maximised to find the optimal top-k per batch size in measurement rows.
SCORE = "tokens_per_s"
#: Most bootstrap resamples a fit accepts (each one is a refit).
MAX_BOOTSTRAP = 100_000
#: Largest |x|, |y| or weight a fit takes: squares of larger values overflow float64 (about 1.8e308).
MAX_FIT_VALUE = 1e150


@dataclass
class _Estimate:
    """Point estimate, covariance (k, k), fit-space residuals (n,), method name and warnings for the summary."""

    theta: np.ndarray
    cov: np.ndarray
    resid: np.ndarray
    method: str
    notes: list[str]


@dataclass
class _Data:
    """The rows one fit uses. ``X`` (n, n_x) regressors, ``y`` (n,), ``w`` (n,) weights with mean 1,
    ``units`` (n,) unit codes, or (factors, n) for crossed unit columns; ``frame`` the rows themselves,
    ``inputs`` the measurement rows behind them."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    units: np.ndarray
    weight: str | None
    frame: pd.DataFrame
    inputs: pd.DataFrame
    dropped: int


def fit_law(df: pd.DataFrame, law: str, *, x: str | Sequence[str] | None = None, y: str | None = None,
            weight: str | None = "auto", unit: str | None = None, n_boot: int = 0, seed: int = 0,
            progress: bool = False) -> FitResult:
    """Fit the law ``law`` to the rows of ``df`` (one fit; :func:`fit_law_by` fits once per group).

    Parameters
    ----------
    df : DataFrame
        Rows with the x, y (and weight, group, unit) columns: derived measurement rows
        (``sdlaws.rates.derive``) or any numeric table. ``source_file`` / ``source_row`` columns, when present,
        are recorded as provenance.
    law : str
        Key of :data:`sdlaws.fit.laws.LAWS`.
    x : str or sequence of str, optional
        Regressor column(s), in the order of the law's regressors; the law's default when omitted.
    y : str, optional
        Response column; the law's default when omitted.
    weight : str or None
        Weight column, ``"auto"`` (the count behind a derived rate, see :data:`COUNT_WEIGHTS`) or None/"none"
        (ordinary least squares).
    unit : str, optional
        Column whose values are resampled as whole units by the bootstrap (default: rows); several
        comma-separated columns are crossed factors (e.g. ``draft_name,target_name``), each resampled
        independently (the pigeonhole bootstrap).
    n_boot : int
        Bootstrap resamples (0: analytic intervals only).
    seed : int
        Bootstrap seed.
    progress : bool
        Show a progress bar for slow (nonlinear) bootstraps.

    Returns
    -------
    FitResult

    Raises
    ------
    ConfigError
        Unknown law or wrong number of x columns.
    InputError
        Missing or non-numeric column, bad weight, x or y outside the law's domain or not finite, too few rows,
        a degenerate design (fewer distinct x than parameters, or collinear x columns), or an acceptance fit
        whose rows are all synthetic-acceptance runs.

    Notes
    -----
    Rows with ``acceptance_source == "synthetic"`` (acceptance drawn from a profile, not measured) are left out
    of acceptance fits, with a note in each result saying how many.
    """
    df, spec, xcols, ycol, options = _prepare(df, law, x, y, dict(weight=weight, unit=unit, n_boot=n_boot, seed=seed,
                                                                  progress=progress))
    return _fit_one(df, spec, xcols, ycol, **options)


def fit_law_by(df: pd.DataFrame, law: str, group: str, *, x: str | Sequence[str] | None = None,
               y: str | None = None, weight: str | None = "auto", unit: str | None = None, n_boot: int = 0,
               seed: int = 0, progress: bool = False) -> dict[Any, FitResult]:
    """Fit the law once per value of the column ``group``: ``{group value: FitResult}`` in sorted order (the
    options are :func:`fit_law`'s)."""
    df, spec, xcols, ycol, options = _prepare(df, law, x, y, dict(weight=weight, unit=unit, n_boot=n_boot, seed=seed,
                                                                  progress=progress))
    _require(df, [group])
    return {_plain(value): _fit_one(sub, spec, xcols, ycol, group=(group, _plain(value)), **options)
            for value, sub in df.groupby(group, sort=True)}


def _prepare(df: pd.DataFrame, law: str, x, y, options: dict[str, Any]):
    """Checked options, the law, its columns and the rows it may use (synthetic acceptance left out, noted)."""
    spec = get_law(law)
    checks.number("--bootstrap", options["n_boot"], 0, MAX_BOOTSTRAP, integer=True, note="0 = analytic intervals")
    checks.number("--seed", options["seed"], 0, 2**63 - 1, integer=True)
    xcols, ycol = _columns(spec, x, y)
    df, notes = _measured_acceptance(df, spec, [*xcols, ycol])
    return df, spec, xcols, ycol, {**options, "n_boot": int(options["n_boot"]), "notes": notes}


def fit_loglinear(df: pd.DataFrame, **kwargs) -> FitResult:
    """Fit Scylla's log-linear law ``y = a*log10(x) + b`` (see :func:`fit_law` for the options)."""
    return fit_law(df, "loglinear", **kwargs)


def fit_saturating(df: pd.DataFrame, **kwargs) -> FitResult:
    """Fit the saturating alternative ``y = y_max - A*x^(-p)`` (see :func:`fit_law` for the options)."""
    return fit_law(df, "saturating", **kwargs)


def fit_ppl_plane(df: pd.DataFrame, **kwargs) -> FitResult:
    """Fit SDSL's plane ``alpha = A*ppl_draft + B*ppl_target + C`` (see :func:`fit_law` for the options)."""
    return fit_law(df, "ppl_plane", **kwargs)


def fit_topk_batch(df: pd.DataFrame, *, p_free: bool = True, **kwargs) -> FitResult:
    """Fit ``k* = c*B^(-p)`` (``p_free``) or ``k* = c*B^(-1/2)`` to optimal top-k rows or to measurement rows.

    Rows with a ``tokens_per_s`` column are measurements: the optimum per batch size is found first with
    :func:`optimal_topk`. A ``p_free`` fit reports the Wald test of p = 1/2 in its ``gof``.
    """
    return fit_law(df, "topk_batch" if p_free else "topk_batch_sqrt", **kwargs)


def _columns(spec: LawSpec, x, y) -> tuple[tuple[str, ...], str]:
    """Resolve x columns and y column (defaults of the law) and check the number of x columns."""
    xcols = spec.x if x is None else ((x,) if isinstance(x, str) else tuple(x))
    ycol = spec.y if y is None else y
    if not xcols or ycol is None:
        raise ConfigError(f"law {spec.name} has no default columns; pass x and y (--x COL --y COL)")
    if len(xcols) != len(spec.x_args):
        example = ",".join(spec.x or spec.x_args)
        raise ConfigError(f"law {spec.name} takes {len(spec.x_args)} x column(s) ({', '.join(spec.x_args)}), "
                          f"got {len(xcols)}: {', '.join(xcols)}; pass them comma-separated, e.g. --x {example}")
    return xcols, ycol


def _measured_acceptance(df: pd.DataFrame, spec: LawSpec, cols: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """``df`` without synthetic-acceptance rows when the fit is about acceptance, and the note saying so.

    An acceptance fit has an acceptance rate among its columns or an ``alpha`` parameter (tau_chain,
    speedup_chain): a synthetic row's acceptance is the profile it was given, so it would fit the profile.
    """
    synthetic = schema.synthetic_acceptance(df)
    acceptance = "alpha" in spec.params or any(c in COUNT_WEIGHTS or c.startswith(POSITION_RATE_PREFIXES)
                                               for c in cols)
    if not (acceptance and synthetic.any()):
        return df, []
    present = [c for c in cols if c in df.columns]  # a missing column is reported later, by _require
    values = df.loc[~synthetic, present].apply(pd.to_numeric, errors="coerce")
    if not values.notna().all(axis=1).any():
        raise InputError(f"{_sources(df)}: the rows with {', '.join(cols)} are synthetic-acceptance timing runs "
                         f"(acceptance_source = synthetic) and law {spec.name} fits acceptance; pass rows measured "
                         "with real acceptance")
    note = (f"left out {int(synthetic.sum())} synthetic-acceptance row(s) (acceptance_source = synthetic): "
            "their acceptance was drawn from a profile, not measured")
    return df[~synthetic], [note]


def _fit_one(df: pd.DataFrame, spec: LawSpec, xcols, ycol, *, weight, unit, n_boot, seed, progress,
             notes: Sequence[str] = (), group: tuple[str, Any] | None = None) -> FitResult:
    """Fit one law to one set of rows (one group), with provenance, ``notes`` and optional bootstrap."""
    data = _select(df, spec, xcols, ycol, weight, unit, group)
    est = (_ols if spec.fitter == "ols" else _nls)(spec, data)
    gof = {**_gof(spec, data, est.resid), **_wald_tests(spec, est.theta, est.cov, len(data.y))}
    names = list(spec.params)
    result = FitResult(law=spec.name, params=pd.Series(est.theta, index=names),
                       cov=pd.DataFrame(est.cov, index=names, columns=names), nobs=len(data.y), x=tuple(xcols),
                       y=ycol, group=None if group is None else group[1], method=est.method, gof=gof,
                       meta={**_meta(data, xcols, unit, group), "notes": [*notes, *est.notes]})
    return _bootstrap(result, spec, data, n_boot, seed, progress) if n_boot else result


def _require(df: pd.DataFrame, cols: Sequence[str]) -> None:
    """Raise :class:`InputError` naming the files and the missing columns."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        shown = ", ".join(str(c) for c in df.columns[:30] if c not in ("source_file", "source_row"))
        raise InputError(f"{_sources(df)}: no column {', '.join(map(repr, missing))}; available: {shown}; "
                         "choose another with --x/--y/--weight/--group/--unit")


def _sources(df: pd.DataFrame) -> str:
    """The input files of ``df`` for messages (``<data>`` for a plain DataFrame)."""
    if "source_file" in df.columns and len(df):
        return ", ".join(pd.unique(df["source_file"].astype(str)))
    return "<data>"


def _where(frame: pd.DataFrame, mask: pd.Series) -> str:
    """Location of the first row where ``mask`` is true: 'file line N' (CSV line, header = 1) or 'row i'."""
    row = frame[mask.to_numpy()].iloc[0]
    if "source_file" in frame.columns:
        return f"{row['source_file']} line {int(row['source_row']) + 1}"
    return f"row {row.name}"


def _weight_column(weight: str | None, ycol: str, df: pd.DataFrame) -> str | None:
    """Resolve ``weight`` (column, "auto" or None/"none") to a column name or None."""
    if weight is None or weight == "none":
        return None
    if weight != "auto":
        return weight
    count = COUNT_WEIGHTS.get(ycol) or ("num_drafts" if ycol.startswith(POSITION_RATE_PREFIXES) else None)
    return count if count in df.columns else None


def _select(df, spec: LawSpec, xcols, ycol, weight, unit, group) -> _Data:
    """Check the columns and pick the usable rows (raising one-line :class:`InputError` on bad input)."""
    wcol = _weight_column(weight, ycol, df)
    factors = _unit_columns(unit, df)
    _require(df, [*xcols, ycol, *factors, *([wcol] if wcol else [])])
    measured = None
    if spec.name.startswith("topk") and SCORE in df.columns:
        measured = _speculative_rows(df, [*xcols, ycol, SCORE])
        df = optimal_topk(measured, x=xcols[0], k=ycol)
    frame = df.copy()
    for col in [*xcols, ycol, *([wcol] if wcol else [])]:
        frame[col] = _numeric(frame, col)
    usable = frame[[*xcols, ycol]].notna().all(axis=1)
    frame, dropped = frame[usable], int((~usable).sum())
    _check_domain(frame, spec, xcols, ycol, wcol, group)
    _check_design(frame, spec, xcols, group)
    _check_units(frame, factors)
    # crossed unit columns (``a,b``): the pigeonhole bootstrap over all of them (sdlaws.fit.bootstrap)
    units = np.stack([pd.factorize(frame[c])[0] for c in factors]) if factors else np.arange(len(frame))
    w = frame[wcol].to_numpy(dtype=float) if wcol else np.ones(len(frame))
    return _Data(X=frame[list(xcols)].to_numpy(dtype=float), y=frame[ycol].to_numpy(dtype=float), w=w / w.mean(),
                 units=units, weight=wcol, frame=frame, inputs=frame if measured is None else measured,
                 dropped=dropped)


def _unit_columns(unit: str | Sequence[str] | None, df: pd.DataFrame) -> list[str]:
    """The bootstrap's unit columns: one column (whose name may hold a comma), comma-separated crossed factors
    (spaces around the commas ignored), or a sequence of names."""
    if not unit:
        return []
    names = [unit] if isinstance(unit, str) and unit in df.columns else (
        [c.strip() for c in unit.split(",")] if isinstance(unit, str) else list(unit))
    if len(set(names)) < len(names):
        raise InputError(f"--unit {unit!r} names a column twice; give each factor once")
    return names


def _check_units(frame: pd.DataFrame, factors: Sequence[str]) -> None:
    """Every fitted row needs a unit: an empty one would be resampled as if it were another unit."""
    for col in factors:
        empty = frame[col].isna() | frame[col].astype(str).str.strip().eq("")
        if empty.any():
            raise InputError(f"{_sources(frame)}: unit column {col!r} is empty in {int(empty.sum())} of the "
                             f"{len(frame)} rows fitted; fill it or choose another --unit")


def _numeric(frame: pd.DataFrame, col: str) -> pd.Series:
    """``frame[col]`` as numbers; empty cells become NaN, text raises :class:`InputError` with its location."""
    values = pd.to_numeric(frame[col], errors="coerce")
    text = frame[col].astype(str).str.strip()
    bad = values.isna() & frame[col].notna() & text.ne("") & text.str.lower().ne("nan")
    if bad.any():
        raise InputError(f"{_where(frame, bad)}: column {col} has {frame.loc[bad, col].iloc[0]!r}, not a number; "
                         "fix or delete that row, or pick a numeric column")
    return values


def _check_domain(frame, spec: LawSpec, xcols, ycol, wcol, group) -> None:
    """Raise :class:`InputError` for x or y outside the law's domain, bad weights, or too few rows."""
    where = "" if group is None else f" ({group[0]} = {group[1]})"
    used = [*xcols, ycol, *([wcol] if wcol else [])]
    checks = [(c, ~frame[c].abs().le(MAX_FIT_VALUE) & frame[c].notna(), f"finite and at most {MAX_FIT_VALUE:g} in "
               "size (larger values overflow the least-squares sums)") for c in used]
    checks += [(c, frame[c] <= 0, "> 0 (the law takes its log or power)") for c in xcols if spec.log_x]
    checks += [(ycol, frame[ycol] <= 0, "> 0 (the law is fitted on log y)")] if spec.space == "log" else []
    checks += [(wcol, frame[wcol].isna() | (frame[wcol] <= 0), "a positive count")] if wcol else []
    for col, bad, need in checks:
        if bad.any():
            raise InputError(f"{_where(frame, bad)}: column {col} must be {need}, got {frame.loc[bad, col].iloc[0]}; "
                             "fix or delete that row")
    k = len(spec.params)
    if len(frame) <= k:
        raise InputError(f"{_sources(frame)}{where}: law {spec.name} has {k} parameters but only {len(frame)} usable "
                         f"row(s) with numeric {', '.join([*xcols, ycol])}; add rows (at least {k + 1})")


def _check_design(frame: pd.DataFrame, spec: LawSpec, xcols, group) -> None:
    """:class:`InputError` when the x values cannot identify the law's parameters: fewer distinct x (rows of the
    x columns) than parameters, or, for laws linear in their coefficients, a design matrix of lower rank (x
    columns that move together)."""
    where = "" if group is None else f" ({group[0]} = {group[1]})"
    k, names = len(spec.params), ", ".join(xcols)
    distinct = frame[list(xcols)].drop_duplicates()
    if len(distinct) < k:
        shown = ", ".join(" / ".join(f"{v:g}" for v in row) for row in distinct.to_numpy(dtype=float)[:5])
        raise InputError(f"{_sources(frame)}{where}: law {spec.name} has {k} parameters but {names} takes only "
                         f"{len(distinct)} distinct value(s) ({shown}); the fit is undetermined, measure at least "
                         f"{k} different x")
    if spec.fitter == "ols":
        _, design = spec.design(frame[list(xcols)].to_numpy(dtype=float))
        if np.linalg.matrix_rank(design) < design.shape[1]:
            raise InputError(f"{_sources(frame)}{where}: the columns {names} move together (the design matrix of "
                             f"law {spec.name} has rank {np.linalg.matrix_rank(design)} < {design.shape[1]}); "
                             "their effects cannot be told apart, vary them independently")


def _ols(spec: LawSpec, data: _Data) -> _Estimate:
    """OLS/WLS in the fit space; the covariance of ``log_params`` is mapped back by the delta method."""
    offset, design = spec.design(data.X)
    z = spec.to_space(data.y) - offset
    weighted = not np.allclose(data.w, 1.0)
    res = (WLS(z, design, weights=data.w) if weighted else OLS(z, design)).fit()
    theta = spec.from_coef(res.params)
    jac = np.where(spec.log_mask(), theta, 1.0)  # d theta / d beta
    return _Estimate(theta, res.cov_params() * np.outer(jac, jac), z - design @ res.params,
                     "wls" if weighted else "ols", [])


def _least_squares(spec: LawSpec, data: _Data, w: np.ndarray, starts):
    """Lowest-cost :func:`least_squares` solution from the :data:`MAX_STARTS` best ``starts``, weights ``w``.

    A run stopped by the evaluation limit (status 0) still counts: its point is the best found, and the
    caller reports it as not converged. Returns None when no start has finite residuals.
    """
    z, sw = spec.to_space(data.y), np.sqrt(w)
    lower, upper = (np.asarray(b, dtype=float) for b in spec.bounds)

    def residuals(theta):
        """Weighted residuals (n,) at parameters ``theta``."""
        return sw * (spec.fit_value(data.X, theta) - z)

    clipped = [np.clip(start, lower, upper) for start in starts]
    costs = [np.sum(residuals(start) ** 2) for start in clipped]
    ranked = [clipped[i] for i in np.argsort(costs) if np.isfinite(costs[i])][:MAX_STARTS]
    best = None
    for start in ranked:
        sol = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac")
        if sol.status >= 0 and (best is None or sol.cost < best.cost):
            best = sol
    return best


def _nls(spec: LawSpec, data: _Data) -> _Estimate:
    """Multi-start nonlinear least squares; covariance ``s^2 (J'WJ)^-1`` at the optimum (NaN if singular)."""
    sol = _least_squares(spec, data, data.w, spec.starts(data.X, spec.to_space(data.y)))
    if sol is None:
        raise InputError(f"{_sources(data.frame)}: law {spec.name} cannot be evaluated at any starting point; "
                         "check that x and y are in the law's domain or try another law")
    resid = spec.fit_value(data.X, sol.x) - spec.to_space(data.y)
    jac = spec.jacobian(data.X, sol.x) * np.sqrt(data.w)[:, None]
    scale = np.sum(data.w * resid ** 2) / (len(resid) - len(sol.x))
    notes = [] if sol.success else [f"not converged ({sol.message}); the best point found is reported, "
                                    "often a parameter running off to a limit (saturating: p -> 0, no ceiling)"]
    try:
        cov = scale * np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        cov = np.full((len(sol.x), len(sol.x)), np.nan)
        notes.append("singular Jacobian: the parameters are not identifiable from these rows (covariance NaN)")
    return _Estimate(sol.x, cov, resid, "nls", notes)


def _gof(spec: LawSpec, data: _Data, resid: np.ndarray) -> dict[str, float]:
    """R2, RMSE, log-likelihood (y scale), AIC, BIC, residual dof and scale (variance per unit weight)."""
    n, k, w = len(resid), len(spec.params), data.w
    z = spec.to_space(data.y)
    ssr = float(np.sum(w * resid ** 2))
    sst = float(np.sum(w * (z - np.average(z, weights=w)) ** 2))
    # statsmodels WLS.loglike, plus the log-Jacobian of y -> log y for log-space laws
    llf = -0.5 * n * (np.log(2 * np.pi * ssr / n) + 1) + 0.5 * np.sum(np.log(w))
    llf -= float(np.sum(np.log(data.y))) if spec.space == "log" else 0.0
    return {"r2": 1 - ssr / sst if sst > 0 else float("nan"), "rmse": float(np.sqrt(ssr / np.sum(w))),
            "llf": float(llf), "aic": float(-2 * llf + 2 * k), "bic": float(-2 * llf + k * np.log(n)),
            "dof": n - k, "scale": ssr / (n - k)}


def _wald_tests(spec: LawSpec, theta: np.ndarray, cov: np.ndarray, nobs: int) -> dict[str, float]:
    """t tests of each restriction that another registered law places on this one (e.g. p = 1/2 for top-k)."""
    out = {}
    for other in LAWS.values():
        if other.restricts and other.restricts[0] == spec.name:
            _, param, value = other.restricts
            j = spec.params.index(param)
            t = (theta[j] - value) / np.sqrt(cov[j, j])
            out[f"wald_{param}_eq_{value:g}_t"] = float(t)
            out[f"wald_{param}_eq_{value:g}_pvalue"] = float(2 * stats.t.sf(abs(t), nobs - len(theta)))
    return out


def _meta(data: _Data, xcols, unit, group) -> dict[str, Any]:
    """Provenance of a fit: input rows, options, x range, code version and time."""
    x_range = {c: [float(data.frame[c].min()), float(data.frame[c].max())] for c in xcols}
    return {"inputs": _inputs(data.inputs), "weight": data.weight, "unit": unit,
            "group_column": None if group is None else group[0], "dropped_rows": data.dropped,
            "x_range": x_range, "git_sha": git_sha(), "sdlaws_version": __version__, "timestamp_utc": now_utc()}


def _inputs(frame: pd.DataFrame) -> list[dict[str, str]]:
    """Input rows by file, as compact ranges of CSV data rows ('1-40,42'); DataFrame index without files."""
    if "source_file" not in frame.columns:
        return [{"file": "<DataFrame>", "rows": _ranges(frame.index)}]
    return [{"file": str(f), "rows": _ranges(rows["source_row"])} for f, rows in frame.groupby("source_file")]


def _ranges(values) -> str:
    """Integers as compact ranges: [1, 2, 3, 5] -> '1-3,5'."""
    values = sorted(int(v) for v in values)
    runs, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            runs.append(str(v) if start == v else f"{start}-{v}")
            start = None
    return ",".join(runs)


def _bootstrap(result: FitResult, spec: LawSpec, data: _Data, n_boot: int, seed: int, progress: bool) -> FitResult:
    """Replace the analytic intervals of ``result`` by bootstrap draws over whole units."""
    if spec.fitter == "ols":
        offset, design = spec.design(data.X)
        coef, failed = bootstrap_linear(design, spec.to_space(data.y) - offset, data.w, data.units, n_boot, seed)
        draws = spec.from_coef(coef)
    else:
        start = [result.params.to_numpy()]

        def refit(counts):
            """Parameters on one resample (row multiplicities ``counts``), or None."""
            sol = _least_squares(spec, data, data.w * counts, start)
            return None if sol is None else sol.x

        draws, failed = bootstrap_refit(refit, data.units, n_boot, seed, progress=progress)
    if len(draws) < 2:
        raise InputError(f"{_sources(data.frame)}: every bootstrap resample was degenerate; use more rows or units")
    result.draws = pd.DataFrame(draws, columns=result.params.index)
    result.cov = result.draws.cov()
    result.method = "bootstrap"
    result.meta.update(n_boot=n_boot, seed=seed, bootstrap_failed=failed)
    return result


def optimal_topk(df: pd.DataFrame, *, x: str = "batch_size", k: str = "tree_topk", score: str = SCORE) -> pd.DataFrame:
    """Optimal top-k per batch size from measurement rows.

    Rows with the same (batch size, k) are repeats: their median ``score`` is taken (``ar`` rows are ignored).
    At each batch size the k with the highest median score is found; when it is interior, a parabola through it
    and its two neighbours in (log2 k, score) gives a continuous optimum, clipped to the neighbours' range.
    Other knobs (depth, budget) should be held fixed, or separated with ``group``.

    Returns
    -------
    DataFrame
        One row per batch size: ``x``, ``k`` (the optimum), ``score`` (best median score), ``num_k`` (distinct k
        measured).
    """
    profile = _speculative_rows(df, [x, k, score]).groupby([x, k])[score].median().reset_index()
    best = [{x: b, k: _vertex(np.log2(sub[k].to_numpy(dtype=float)), sub[score].to_numpy()),
             score: sub[score].max(), "num_k": len(sub)} for b, sub in profile.groupby(x, sort=True)]
    return pd.DataFrame(best, columns=[x, k, score, "num_k"])


def _speculative_rows(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Rows with values in ``cols`` that are not ``ar`` baselines."""
    keep = df[cols].notna().all(axis=1)
    return df[keep & df["method"].ne("ar")] if "method" in df.columns else df[keep]


def _vertex(u: np.ndarray, s: np.ndarray) -> float:
    """2 ** (argmax of s over u), refined by a parabola through the best point and its neighbours."""
    i = int(np.argmax(s))
    if i == 0 or i == len(u) - 1:
        return float(2 ** u[i])
    a, b, _ = np.polyfit(u[i - 1:i + 2], s[i - 1:i + 2], 2)
    top = -b / (2 * a) if a < 0 else u[i]
    return float(2 ** np.clip(top, u[i - 1], u[i + 1]))


def fill_perplexities(spec_rows: pd.DataFrame, ppl_rows: pd.DataFrame) -> pd.DataFrame:
    """Fill empty ``draft_ppl`` / ``target_ppl`` of spec rows from a validated ``ppl`` table, by model name.

    Repeated rows of one model are pooled (summed NLL over summed tokens, :func:`sdlaws.rates.perplexity`). The
    ppl table must hold one ``eval_set`` so that all perplexities are on the same text.
    """
    sets = sorted(pd.unique(ppl_rows["eval_set"].astype(str)))
    if len(sets) > 1:
        raise InputError(f"{_sources(ppl_rows)}: perplexities on several eval sets ({', '.join(sets)}); "
                         "keep the rows of one eval_set")
    pooled = ppl_rows.groupby("model_name")[["nll_sum_nats", "num_eval_tokens"]].sum()
    by_name = rates.perplexity(pooled)
    out = spec_rows.copy()
    for role in ("draft", "target"):
        col, names = f"{role}_ppl", out[f"{role}_name"].astype(str)
        current = out[col] if col in out.columns else pd.Series(np.nan, index=out.index)
        out[col] = current.fillna(names.map(by_name))
        missing = out[col].isna() & names.ne("")
        if missing.any():
            raise InputError(f"{_sources(ppl_rows)}: no perplexity for {role} model {names[missing].iloc[0]!r}; "
                             "measure it (sdlaws measure ppl) and pass that CSV with --ppl")
    return out


def used_rows(df: pd.DataFrame, fit: FitResult) -> pd.DataFrame:
    """The rows of ``df`` that ``fit`` used (after group selection, top-k optimum and NaN drop), e.g. to plot."""
    group_col = fit.meta.get("group_column")
    if group_col is not None:
        df = df[df[group_col].map(_plain) == fit.group]
    group = None if group_col is None else (group_col, fit.group)
    return _select(df, fit.spec, fit.x, fit.y, fit.meta.get("weight") or "none", fit.meta.get("unit"), group).frame


def compare(fits: Mapping[str, FitResult] | Sequence[FitResult]) -> pd.DataFrame:
    """Compare fits of different laws to the same rows: log-likelihood, AIC, BIC and nested LR tests.

    Parameters
    ----------
    fits : mapping name -> FitResult, or sequence of FitResult (named by law)

    Returns
    -------
    DataFrame
        Indexed by name: ``law``, ``nobs``, ``k``, ``llf``, ``aic``, ``bic``, ``r2``, ``delta_aic``,
        ``akaike_weight``, and for a law that restricts another law in the table (``topk_batch_sqrt`` inside
        ``topk_batch``) the likelihood-ratio test ``lr_vs``, ``lr_stat``, ``lr_df``, ``lr_pvalue`` (chi-square).
    """
    items = dict(fits) if isinstance(fits, Mapping) else {f.law: f for f in fits}
    keys = {(f.y, f.nobs, f.meta.get("weight")) for f in items.values()}
    if len(keys) != 1:
        raise InputError(f"compare: fits use different y, row counts or weights {sorted(map(str, keys))}; "
                         "fit every law to the same rows")
    table = pd.DataFrame({name: {"law": f.law, "nobs": f.nobs, "k": len(f.params), "llf": f.gof["llf"],
                                 "aic": f.gof["aic"], "bic": f.gof["bic"], "r2": f.gof["r2"]}
                          for name, f in items.items()}).T
    table[["llf", "aic", "bic", "r2"]] = table[["llf", "aic", "bic", "r2"]].astype(float)
    table["delta_aic"] = table["aic"] - table["aic"].min()
    relative = np.exp(-0.5 * table["delta_aic"])
    table["akaike_weight"] = relative / relative.sum()
    lr = [_lr_test(f, items) for f in items.values()]
    return table.join(pd.DataFrame(lr, index=table.index, columns=["lr_vs", "lr_stat", "lr_df", "lr_pvalue"]))


def _lr_test(fit: FitResult, items: Mapping[str, FitResult]) -> tuple:
    """(full law, LR statistic, dof, p-value) of ``fit`` against the law it restricts, if that is in ``items``."""
    restricts = fit.spec.restricts
    full = next((name for name, f in items.items() if restricts and f.law == restricts[0]), None)
    if full is None:
        return (None, np.nan, np.nan, np.nan)
    big = items[full]
    stat = 2.0 * (big.gof["llf"] - fit.gof["llf"])
    dof = len(big.params) - len(fit.params)
    return (full, stat, dof, float(stats.chi2.sf(stat, dof)))


def _plain(value: Any) -> Any:
    """Numpy scalar -> Python scalar (JSON-safe group values)."""
    return value.item() if isinstance(value, np.generic) else value
