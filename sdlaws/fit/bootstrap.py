"""Seeded bootstrap that resamples whole units (rows, or prompts / models / runs via a unit column).

A resample draws as many units as there are, with replacement, and gives every row of a unit drawn ``m``
times the multiplicity ``m``. Rows may belong to units of several crossed factors (e.g. drafts x targets): each
factor's units are then drawn independently and a row's multiplicity is the product of its units' draws, the
pigeonhole bootstrap (Owen 2007), whose intervals carry the noise of every factor. Fits on a resample are
weighted fits with weight ``m * w`` (``w`` the row's regression weight), which is identical to refitting on the
duplicated rows and lets the linear case run as one batched solve of the weighted normal equations (no Python
loop over resamples).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

#: Resample x row cells per chunk: bounds the (resamples, rows) multiplicity matrix to ~16 MB of float64.
CHUNK_CELLS = 2_000_000
#: Resamples whose equilibrated normal matrix is worse conditioned than this are singular (e.g. all rows drawn
#: share one x); they are dropped and counted.
MAX_CONDITION = 1e10


def resample_counts(units: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield row multiplicities of ``n_boot`` unit resamples, in chunks of shape (r, n_rows).

    Parameters
    ----------
    units : array of int, shape (n_rows,) or (n_factors, n_rows)
        Unit code of each row, ``0 .. n_units - 1`` (per factor).
    n_boot : int
        Number of resamples.
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same resamples.
    """
    rng = np.random.default_rng(seed)
    factors = np.atleast_2d(units)
    n_units = [int(codes.max()) + 1 for codes in factors]
    chunk = max(1, CHUNK_CELLS // max(factors.shape[1], *n_units))
    if len(factors) == 1:  # drawn chunk by chunk: with one unit per row, the draws are as large as the rows
        for start in range(0, n_boot, chunk):
            yield _unit_draws(rng, n_units[0], min(chunk, n_boot - start))[:, factors[0]].astype(float)
        return
    # crossed factors: every resample's draws of each factor first, so that they do not depend on the chunk size
    # (their units are few: (n_boot, units) per factor)
    draws = [_unit_draws(rng, k, n_boot) for k in n_units]
    for start in range(0, n_boot, chunk):
        counts = np.ones((min(chunk, n_boot - start), factors.shape[1]))
        for codes, drawn in zip(factors, draws):
            counts *= drawn[start:start + len(counts)][:, codes]
        yield counts


def _unit_draws(rng: np.random.Generator, k: int, r: int) -> np.ndarray:
    """(r, k): how many times each of ``k`` units is drawn in each of ``r`` resamples of ``k`` draws."""
    picks = rng.integers(0, k, size=(r, k)) + k * np.arange(r)[:, None]
    return np.bincount(picks.ravel(), minlength=r * k).reshape(r, k)


def bootstrap_linear(design: np.ndarray, z: np.ndarray, weights: np.ndarray, units: np.ndarray,
                     n_boot: int, seed: int) -> tuple[np.ndarray, int]:
    """Bootstrap the coefficients of a weighted least-squares fit ``z ~ design``.

    Parameters
    ----------
    design : array, shape (n, k)
    z : array, shape (n,)
        Response in the fit space, offset removed.
    weights : array, shape (n,)
        Regression weights.
    units, n_boot, seed
        See :func:`resample_counts`.

    Returns
    -------
    draws : array, shape (n_ok, k)
        Coefficients of the resamples whose normal equations are well conditioned.
    n_failed : int
        Resamples dropped as singular.
    """
    norm = np.sqrt(np.sum(design ** 2, axis=0))  # equilibrate columns so the condition test is scale-free
    scaled = design / norm
    k = scaled.shape[1]
    outer = (scaled[:, :, None] * scaled[:, None, :]).reshape(len(z), k * k) * weights[:, None]  # (n, k*k)
    cross = scaled * (weights * z)[:, None]                                                      # (n, k)
    draws = []
    for counts in resample_counts(units, n_boot, seed):
        gram = (counts @ outer).reshape(-1, k, k)  # (r, k, k) X' M W X per resample
        rhs = counts @ cross                        # (r, k)    X' M W z
        ok = np.linalg.cond(gram) < MAX_CONDITION
        draws.append(np.linalg.solve(gram[ok], rhs[ok][..., None])[..., 0] / norm)
    draws = np.concatenate(draws)
    return draws, n_boot - len(draws)


def bootstrap_refit(refit: Callable[[np.ndarray], np.ndarray | None], units: np.ndarray, n_boot: int, seed: int,
                    *, progress: bool = False) -> tuple[np.ndarray, int]:
    """Bootstrap any estimator by calling ``refit(multiplicities)`` once per resample.

    Parameters
    ----------
    refit : callable
        Takes the row multiplicities (n,) of one resample and returns the parameter vector, or None when the
        fit fails (the resample is then dropped and counted).
    units, n_boot, seed
        See :func:`resample_counts`.
    progress : bool
        Show a rich progress bar.

    Returns
    -------
    draws : array, shape (n_ok, k), or (0, 0) when every resample failed
    n_failed : int
    """
    from rich.progress import Progress

    draws = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("bootstrap", total=n_boot)
        for counts in resample_counts(units, n_boot, seed):
            for row in counts:
                theta = refit(row)
                if theta is not None:
                    draws.append(theta)
                bar.advance(task)
    return (np.array(draws) if draws else np.empty((0, 0))), n_boot - len(draws)
