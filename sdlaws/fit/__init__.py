"""Fitting half of sdlaws: scaling laws (:mod:`~sdlaws.fit.laws`), estimators with confidence intervals
(:mod:`~sdlaws.fit.estimators`, :mod:`~sdlaws.fit.bootstrap`) and the :class:`~sdlaws.fit.result.FitResult`.

The estimators (statsmodels, scipy.optimize: ~2 s of imports) load on first use, so that loading a fit
(``load_fit``, e.g. in ``sdlaws plan``) stays fast.

Example
-------
>>> from sdlaws.fit import fit_law                                      # doctest: +SKIP
>>> fit = fit_law(df, "loglinear", x="draft_layers", y="mean_acceptance_length")
>>> print(fit.summary()); fit.predict([1, 2, 4, 8]); fit.save("out/loglinear.json")
"""

from importlib import import_module

from sdlaws.fit.laws import LAWS, LawSpec, get_law
from sdlaws.fit.result import FitResult, load_fit, load_fits, save_fits

_ESTIMATORS = ("compare", "fill_perplexities", "fit_law", "fit_law_by", "fit_loglinear", "fit_ppl_plane", "fit_saturating",
               "fit_topk_batch", "optimal_topk", "used_rows")

__all__ = ["LAWS", "FitResult", "LawSpec", "get_law", "load_fit", "load_fits", "save_fits", *_ESTIMATORS]


def __getattr__(name: str):
    """Load the estimators module on first access to one of its names."""
    if name not in _ESTIMATORS:
        raise AttributeError(f"module 'sdlaws.fit' has no attribute {name!r}")
    return getattr(import_module("sdlaws.fit.estimators"), name)
