"""Intervals for fits whose rows share units: the pigeonhole (multiway cluster) bootstrap, leave-one-unit-out
prediction error, and the training seed of a row's model.

Rows of a target x draft grid are not independent: every row of one target shares that target's perplexity and
its measurement noise, every row of one draft likewise, and checkpoints of one training run share its seed.
The pigeonhole bootstrap (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2)) resamples each factor's
units independently with replacement and gives a row the product of its units' multiplicities
(:func:`sdlaws.fit.bootstrap.resample_counts`, which ``sdlaws fit --unit a,b`` uses too); its variance is
the sum of the one-way cluster variances, as in the multiway cluster-robust covariance of Cameron, Gelbach &
Miller (2011, "Robust inference with multiway clustering", J. Bus. Econ. Stat. 29(2)). Both need many units in
every factor: with 3 targets the between-target part of the variance rests on 3 values, which is why the
verdicts ask for a minimum number of units before they read an interval
(:func:`sdlaws.experiments.verdicts.plane_coefficient`).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from sdlaws.experiments.reporting import ALPHA, N_BOOT, SEED
from sdlaws.fit.bootstrap import resample_counts

#: ``-s<seed>`` ending the run directory of a model trained by ``sdlaws train`` (``L4-H256-T30M-s1/step-N``).
_SEED = re.compile(r"-s(\d+)(?:/|$)")
#: Seeds from which seed-to-seed variation is a factor of the bootstrap (one seed has no such variation to show).
MIN_SEEDS = 2


def model_seed(name: str) -> int:
    """Training seed of an sdlaws-trained model from its path (0 for any other model: one seed, no factor)."""
    match = _SEED.search(str(name))
    return int(match[1]) if match else 0


def cluster_bootstrap(fit, rows: pd.DataFrame, factors: Sequence[str], *, n_boot: int = N_BOOT, seed: int = SEED,
                      alpha: float = ALPHA) -> dict:
    """Percentile intervals of a linear law's parameters from the pigeonhole bootstrap over ``factors`` (columns
    of ``rows``, the rows ``fit`` used): every resample is the fit's own weighted least squares refitted with
    the resample's multiplicities. Resamples whose design loses rank (e.g. only one target drawn, so the target
    slope is not identified) are dropped and counted: the intervals are conditional on identification."""
    spec = fit.spec
    offset, design = spec.design(rows[list(fit.x)].to_numpy(dtype=float))
    z = spec.to_space(rows[fit.y].to_numpy(dtype=float)) - offset
    w = rows[fit.meta["weight"]].to_numpy(dtype=float) if fit.meta.get("weight") else np.ones(len(z))
    codes = np.stack([pd.factorize(rows[c])[0] for c in factors])
    draws = [beta for counts in resample_counts(codes, n_boot, seed) for m in counts
             if (beta := _wls(design, z, m * w)) is not None]
    out = {"method": "pigeonhole bootstrap over " + " x ".join(factors), "factors": factors,
           "units": {c: int(rows[c].nunique()) for c in factors}, "n_boot": n_boot,
           "n_dropped": n_boot - len(draws), "ci": {name: [None, None] for name in spec.params}}
    if draws:
        params = spec.from_coef(np.array(draws))
        lo, hi = np.percentile(params, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        out["ci"] = {name: [float(a), float(b)] for name, a, b in zip(spec.params, lo, hi)}
    return out


def _wls(design: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """Weighted least-squares coefficients, or None when the drawn rows do not identify them."""
    drawn = w > 0
    if np.linalg.matrix_rank(design[drawn]) < design.shape[1]:
        return None
    sw = np.sqrt(w[drawn])
    return np.linalg.lstsq(design[drawn] * sw[:, None], z[drawn] * sw, rcond=None)[0]


def leave_one_out_rmse(rows: pd.DataFrame, refit: Callable[[pd.DataFrame], object], unit: str) -> float | None:
    """Out-of-sample RMSE of ``y`` when each unit of ``unit`` (a whole draft, a whole target) is predicted by the
    law refitted on the other units (``refit(rows) -> FitResult``): the error of the law on a model it has not
    seen. None when some left-out fit is not identified (too few units left)."""
    from sdlaws.errors import InputError

    errors = []
    for _, held in rows.groupby(unit):
        try:
            fit = refit(rows.drop(held.index))
        except InputError:
            return None
        # the law itself, not FitResult.predict: a left-out unit is often outside the fitted range on purpose
        predicted = fit.spec.evaluate(held[list(fit.x)].to_numpy(dtype=float), fit.params.to_numpy())
        errors.append(held[fit.y].to_numpy(dtype=float) - predicted)
    return float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))


def seed_factors(rows: pd.DataFrame, factors: Sequence[str],
                 model: str = "draft_name") -> tuple[pd.DataFrame, list[str]]:
    """``rows`` with a ``train_seed`` column (the training seed of ``model``) and ``factors`` plus it when at
    least :data:`MIN_SEEDS` seeds are present, so that intervals pooled over rows include seed-to-seed noise."""
    rows = rows.assign(train_seed=[model_seed(n) for n in rows[model]])
    return rows, [*factors, "train_seed"] if rows["train_seed"].nunique() >= MIN_SEEDS else list(factors)


def with_seed_noise(summary: dict, fit, rows: pd.DataFrame, unit: str) -> dict:
    """``summary`` (:func:`~sdlaws.experiments.reporting.fit_summary` of ``fit`` on ``rows``) with its bootstrap
    intervals from the pigeonhole bootstrap over ``unit`` x training seed when the rows come from at least
    :data:`MIN_SEEDS` seeds: the checkpoints or drafts of one seed share its initialisation and data order, so a
    row bootstrap would count seed-to-seed variation as if it averaged out. Unchanged with one seed."""
    rows, factors = seed_factors(rows, [unit])
    if len(factors) == 1:
        return summary
    boot = cluster_bootstrap(fit, rows, factors)
    return {**summary, "boot_ci": boot["ci"], "n_boot": boot["n_boot"], "boot_unit": boot["method"]}
