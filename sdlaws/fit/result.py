"""``FitResult``: a fitted law with its uncertainty, predictions, summary and JSON form.

Intervals follow statsmodels conventions (``conf_int(alpha)``, ``summary_frame`` columns ``mean``,
``mean_ci_lower/upper``, ``obs_ci_lower/upper``). Parameters listed in the law's ``log_params`` get their
intervals and normal draws on the log scale, which is exact for the log-space OLS laws (power, top-k).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from sdlaws import io
from sdlaws.errors import InputError
from sdlaws.fit.laws import LawSpec, get_law

FIT_FORMAT = "sdlaws-fit/1"
GROUP_FORMAT = "sdlaws-fit-group/1"


@dataclass
class FitResult:
    """A fitted scaling law.

    Attributes
    ----------
    law : str
        Key into :data:`sdlaws.fit.laws.LAWS`.
    params : Series
        Point estimates indexed by parameter name (from the full data, also when bootstrapped).
    cov : DataFrame
        Parameter covariance (analytic; the covariance of the draws when ``method == "bootstrap"``).
    nobs : int
        Rows used.
    x : tuple of str
        Regressor columns, in the order of the law's regressor arguments.
    y : str
        Response column.
    group : scalar or None
        Value of the group column this fit belongs to.
    method : {"ols", "wls", "nls", "bootstrap"}
    draws : DataFrame or None
        Bootstrap parameter draws (one row per resample).
    gof : dict
        Goodness of fit in the fit space (log y for log-space laws): ``r2``, ``rmse``, ``llf`` (on the y scale,
        comparable across laws with the same rows and weights), ``aic``, ``bic``, ``dof``, ``scale`` (residual
        variance per unit weight) and law-specific tests (e.g. ``wald_p_eq_0.5_t`` / ``_pvalue``).
    meta : dict
        Provenance: input files and rows, weight and unit columns, git sha, sdlaws version, timestamp.
    """

    law: str
    params: pd.Series
    cov: pd.DataFrame
    nobs: int
    x: tuple[str, ...]
    y: str
    group: Any = None
    method: str = "ols"
    draws: pd.DataFrame | None = None
    gof: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> LawSpec:
        """The :class:`~sdlaws.fit.laws.LawSpec` of :attr:`law`."""
        return get_law(self.law)

    def _t(self, alpha: float) -> float:
        """Two-sided t quantile with the residual degrees of freedom."""
        from scipy import stats  # lazy: ~1 s of import that loading or sampling a fit does not need

        return float(stats.t.ppf(1.0 - alpha / 2.0, self.gof["dof"]))

    def _coef(self) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (log for ``log_params``) and their covariance by the delta method."""
        theta = self.params.to_numpy(dtype=float)
        scale = np.where(self.spec.log_mask(), 1.0 / theta, 1.0)  # d beta / d theta
        return self.spec.to_coef(theta), self.cov.to_numpy() * np.outer(scale, scale)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Confidence intervals of the parameters, columns ``lower``, ``upper``.

        Percentile intervals of the bootstrap draws when present, else t intervals with ``dof`` degrees of
        freedom (on the log scale for ``log_params``). The default ``alpha = 0.05`` gives 95% intervals.
        """
        if self.draws is not None:
            q = self.draws.quantile([alpha / 2.0, 1.0 - alpha / 2.0])
            return pd.DataFrame({"lower": q.iloc[0], "upper": q.iloc[1]})
        beta, cov = self._coef()
        half = self._t(alpha) * np.sqrt(np.diag(cov))
        return pd.DataFrame({"lower": self.spec.from_coef(beta - half), "upper": self.spec.from_coef(beta + half)},
                            index=self.params.index)

    def _x_matrix(self, x) -> np.ndarray:
        """Regressors as an array (n, len(x)) from a DataFrame (by column name) or an array."""
        if isinstance(x, pd.DataFrame):
            missing = [c for c in self.x if c not in x.columns]
            if missing:
                raise InputError(f"predict: missing column(s) {', '.join(missing)}; the fit uses x = {', '.join(self.x)}")
            x = x[list(self.x)].to_numpy(dtype=float)
        return np.asarray(x, dtype=float).reshape(-1, len(self.x))

    def _warn_extrapolation(self, X: np.ndarray) -> None:
        """Warn when a regressor lies outside the range the law was fitted on."""
        for j, col in enumerate(self.x):
            low, high = self.meta.get("x_range", {}).get(col, (-np.inf, np.inf))
            if np.any((X[:, j] < low) | (X[:, j] > high)):
                warnings.warn(f"predict: {col} outside the fitted range [{low:g}, {high:g}]; extrapolating",
                              stacklevel=3)

    def predict(self, x, alpha: float = 0.05) -> pd.DataFrame:
        """Predicted mean with confidence (mean) and prediction (new observation) bands.

        Parameters
        ----------
        x : DataFrame with the :attr:`x` columns, or array of shape (n,) / (n, len(x))
        alpha : float
            1 - coverage of the bands.

        Returns
        -------
        DataFrame
            ``mean``, ``mean_ci_lower``, ``mean_ci_upper``, ``obs_ci_lower``, ``obs_ci_upper``. The mean band
            comes from the draws' percentiles when bootstrapped, else from the delta method; the observation band
            adds the residual variance of a row with the average weight. Bands are formed in the fit space.
        """
        X = self._x_matrix(x)
        self._warn_extrapolation(X)
        spec, t = self.spec, self._t(alpha)
        beta, cov = self._coef()
        mean = spec.fit_value(X, beta)
        if self.draws is not None:
            sims = spec.to_space(spec.evaluate(X, self.draws.to_numpy()))  # (R, n)
            low, high = np.nanquantile(sims, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
            var_mean = np.nanvar(sims, axis=0, ddof=1)
        else:
            jac = spec.jacobian(X, beta)
            var_mean = np.einsum("ij,jk,ik->i", jac, cov, jac)
            low, high = mean - t * np.sqrt(var_mean), mean + t * np.sqrt(var_mean)
        obs_half = t * np.sqrt(var_mean + self.gof["scale"])
        bands = {"mean": mean, "mean_ci_lower": low, "mean_ci_upper": high,
                 "obs_ci_lower": mean - obs_half, "obs_ci_upper": mean + obs_half}
        return pd.DataFrame({name: spec.from_space(v) for name, v in bands.items()})

    def sample(self, n: int, seed: int = 0) -> pd.DataFrame:
        """``n`` parameter draws for propagating uncertainty (e.g. into a plan).

        Bootstrap draws resampled with replacement when present, else multivariate normal around
        :attr:`params` with :attr:`cov` (log-normal for ``log_params``).
        """
        rng = np.random.default_rng(seed)
        if self.draws is not None:
            return self.draws.iloc[rng.integers(0, len(self.draws), n)].reset_index(drop=True)
        beta, cov = self._coef()
        draws = self.spec.from_coef(rng.multivariate_normal(beta, cov, size=n, method="svd"))
        return pd.DataFrame(draws, columns=self.params.index)

    def summary_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """Parameter table: ``coef``, ``std err`` and the interval bounds, labelled with the level."""
        ci = self.conf_int(alpha)
        return pd.DataFrame({"coef": self.params, "std err": np.sqrt(np.diag(self.cov.to_numpy())),
                             f"[{alpha / 2:g}": ci["lower"], f"{1 - alpha / 2:g}]": ci["upper"]})

    def summary(self, alpha: float = 0.05) -> str:
        """Text summary: law, data, parameter table with intervals, goodness of fit."""
        spec = self.spec
        head = [f"{self.law}: {spec.describe()}",
                f"y = {self.y}   x = {', '.join(self.x)}   group = {self.group}   method = {self.method}"
                f"   weight = {self.meta.get('weight')}   nobs = {self.nobs}"]
        head += [f"note: {note}" for note in self.notes()]
        table = self.summary_frame(alpha).to_string(float_format=lambda v: f"{v:.6g}")
        rule = "-" * max(len(line) for line in table.splitlines())
        return "\n".join([*head, rule, table, rule, self.gof_line()])

    def notes(self) -> list[str]:
        """Warnings recorded by the estimator and the bootstrap (non-convergence, dropped resamples)."""
        failed = self.meta.get("bootstrap_failed", 0)
        dropped = [f"{failed} of {self.meta['n_boot']} bootstrap resamples were degenerate and dropped"] if failed else []
        return [*self.meta.get("notes", []), *dropped]

    def gof_line(self) -> str:
        """Goodness of fit and tests on one line."""
        return "   ".join(f"{k} {v:.4g}" for k, v in self.gof.items() if k != "scale")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe dict (NaN stored as null); :meth:`from_dict` inverts it exactly."""
        draws = None if self.draws is None else {"columns": list(self.draws.columns),
                                                 "data": self.draws.to_numpy().tolist()}
        return io.plain({"format": FIT_FORMAT, "law": self.law, "params": self.params.to_dict(),
                           "cov": self.cov.to_numpy().tolist(), "nobs": self.nobs, "x": list(self.x), "y": self.y,
                           "group": self.group, "method": self.method, "draws": draws, "gof": self.gof,
                           "meta": self.meta})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FitResult":
        """Rebuild a result written by :meth:`to_dict`."""
        names = list(d["params"])
        params = pd.Series(np.array(list(d["params"].values()), dtype=float), index=names)
        cov = pd.DataFrame(np.array(d["cov"], dtype=float).reshape(len(names), len(names)), index=names, columns=names)
        draws = d.get("draws")
        if draws is not None:
            draws = pd.DataFrame(np.array(draws["data"], dtype=float), columns=draws["columns"])
        gof = {k: (math.nan if v is None else v) for k, v in d["gof"].items()}
        return cls(law=d["law"], params=params, cov=cov, nobs=int(d["nobs"]), x=tuple(d["x"]), y=d["y"],
                   group=d.get("group"), method=d["method"], draws=draws, gof=gof, meta=dict(d.get("meta", {})))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``; returns the path."""
        return io.save_json(self, path)


def save_fits(fits: Mapping[Any, FitResult], group: str, path: str | Path) -> Path:
    """Write the per-group fits of one call (``{group value: FitResult}``) to one JSON file."""
    return io.save_json({"format": GROUP_FORMAT, "group": group, "fits": [f.to_dict() for f in fits.values()]}, path)


def load_fits(path: str | Path) -> dict[Any, FitResult]:
    """Load a fit JSON as ``{group value: FitResult}``: every group of a grouped fit file (``sdlaws fit
    --group``, :func:`save_fits`), or ``{None: fit}`` for a file of one fit."""
    data = io.load_json(path)
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt == FIT_FORMAT:
        return {None: FitResult.from_dict(data)}
    if fmt == GROUP_FORMAT:
        fits = [FitResult.from_dict(d) for d in data["fits"]]
        return {f.group: f for f in fits}
    raise InputError(f"{path}: not an sdlaws fit JSON (format {fmt!r}); write one with `sdlaws fit ... --out DIR`")


def load_fit(path: str | Path) -> FitResult:
    """Load a fit JSON holding one fit (a grouped file of one group too); :func:`load_fits` reads every group.

    Raises
    ------
    InputError
        Not a fit file, or a grouped file of several groups.
    """
    fits = load_fits(path)
    if len(fits) != 1:
        raise InputError(f"{path}: holds fits for groups {sorted(map(str, fits))}; load them with load_fits, or fit "
                         "the group you need into its own file")
    return next(iter(fits.values()))
