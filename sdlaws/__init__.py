"""sdlaws: measure speculative decoding, fit its scaling laws, plan draft models and serving settings.

The public API is re-exported here lazily, so ``import sdlaws`` stays light (no torch import) until a
measurement name is touched.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# name -> "module:attribute"
_API = {
    "SdlawsError": "sdlaws.errors:SdlawsError",
    "read_measurements": "sdlaws.io:read_measurements",
    "derive_rates": "sdlaws.rates:derive",
    "alpha_from_tau": "sdlaws.rates:alpha_from_tau",
    "expected_tokens_chain": "sdlaws.rates:expected_tokens_chain",
    "FitResult": "sdlaws.fit.result:FitResult",
    "load_fit": "sdlaws.fit.result:load_fit",
    "load_fits": "sdlaws.fit.result:load_fits",
    "fit_law": "sdlaws.fit.estimators:fit_law",
    "fit_law_by": "sdlaws.fit.estimators:fit_law_by",
    "fit_loglinear": "sdlaws.fit.estimators:fit_loglinear",
    "fit_saturating": "sdlaws.fit.estimators:fit_saturating",
    "fit_ppl_plane": "sdlaws.fit.estimators:fit_ppl_plane",
    "fit_topk_batch": "sdlaws.fit.estimators:fit_topk_batch",
    "compare_fits": "sdlaws.fit.estimators:compare",
    "LAWS": "sdlaws.fit.laws:LAWS",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'sdlaws' has no attribute {name!r}")
    module, attr = _API[name].split(":")
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value
