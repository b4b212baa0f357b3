"""Published default laws the planner uses when no fitted law is given, and access to law parameters.

Every constant carries its provenance tag (``docs/formulas.md#provenance-tags``): [P] primary source,
[S] secondary (digests, not checked against the paper), [R] reconstruction.

A *law* here is anything with ``.law`` (name), ``.params`` (pandas Series) and ``.sample(n, seed)``
(DataFrame of parameter draws): a fitted ``sdlaws.fit.result.FitResult`` or a :class:`PublishedLaw`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sdlaws.errors import InputError
from sdlaws.fit import laws as fit_laws


@dataclass(frozen=True)
class PublishedLaw:
    """A law with published point estimates and, where defensible, a documented uncertainty.

    Attributes
    ----------
    law : str
        Law name (same names as fitted laws: ``ppl_plane``, ``chinchilla_loss``).
    params : pandas.Series
        Point estimates.
    source : str
        Citation with provenance tag.
    sd : dict
        Standard deviation per parameter used by :meth:`sample` (normal draws); parameters not listed are
        held fixed. Empty: no interval can be given (published point estimate).
    uncertainty : str
        What the draws represent, shown next to every interval derived from them (default: says which
        parameters are drawn, or that no interval can be given).
    """

    law: str
    params: pd.Series
    source: str
    sd: dict[str, float] = field(default_factory=dict)
    uncertainty: str = ""

    def sample(self, n: int, seed: int = 0) -> pd.DataFrame:
        """``n`` parameter draws: fixed parameters repeated, those in ``sd`` drawn normal around the estimate."""
        rng = np.random.default_rng(seed)
        draws = pd.DataFrame({k: np.full(n, float(v)) for k, v in self.params.items()})
        for name, sd in self.sd.items():
            draws[name] = rng.normal(float(self.params[name]), sd, size=n)
        return draws


# SDSL acceptance plane alpha = A * ppl_draft + B * ppl_target + C (docs/formulas.md#acceptance-plane) [S]: both
# qwen-long digests agree on A, B, C; R^2 0.602, MSE 0.00128 (first digest only). No parameter covariance was
# published, so the draws shift C by the plane's residual sd sqrt(MSE) = 0.0358: the scatter of a new
# draft/target pair around the plane, which is what a planner for a new pair faces. It is not a parameter CI.
SDSL_PLANE_MSE = 0.00128
SDSL_PLANE = PublishedLaw(
    law="ppl_plane",
    params=pd.Series({"A": -0.0067, "B": 0.01297, "C": 0.642}),
    source="SDSL arXiv 2603.11053 acceptance plane, coefficients from secondary digests [S] "
           "(docs/formulas.md#acceptance-plane)",
    sd={"C": float(np.sqrt(SDSL_PLANE_MSE))},
    uncertainty="alpha offset ~ N(0, 0.036): residual sd sqrt(MSE 0.00128) of the SDSL plane [S], "
                "not a parameter interval",
)

# Chinchilla loss L(N, D) = E + A / N^alpha + B / D^beta in nats/token; Hoffmann et al. 2022 published fit
# (docs/formulas.md#chinchilla-loss) [P constants]. No interval was published with these constants.
CHINCHILLA_LOSS = PublishedLaw(
    law="chinchilla_loss",
    params=pd.Series({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}),
    source="Hoffmann et al. 2022 (Chinchilla) loss law [P constants] (docs/formulas.md#chinchilla-loss)",
)

# SDSL pooled regression N* = mu * M + M0 ("Table 9" of a digest, docs/formulas.md#optimal-draft-size) [S]; shown
# next to the planner's own N* as a cross-check, never used to choose.
SDSL_NSTAR_MU = 2.71e-3
SDSL_NSTAR_M0 = 8.71e7

# Pretraining tokens assumed for draft and target perplexities when the user gives none: 2T, the middle column
# of the reconstruction check in docs/formulas.md#optimal-draft-size (N* depends weakly on D there: 2.94e8 at
# 300B, 2.61e8 at 15T).
DEFAULT_PRETRAIN_TOKENS = 2e12

# Scylla (arXiv 2505.07858) reports acceptance saturating around 50-100B draft pretraining tokens [S]
# (from a summary of the paper, not its text: docs/formulas.md#log-linear-laws).
SCYLLA_SATURATION_TOKENS = (5e10, 1e11)


def chinchilla_ppl(params, tokens, law: PublishedLaw | pd.Series = CHINCHILLA_LOSS):
    """Perplexity ``exp(E + A / N^alpha + B / D^beta)`` of a model of ``params`` parameters trained on ``tokens``."""
    p = law.params if isinstance(law, PublishedLaw) else law
    n, d = np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)
    return np.exp(p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"])


#: The laws that map (draft, target) perplexities to acceptance.
PLANE_LAWS = ("ppl_plane", "ppl_plane_log")


def plane_alpha(ppl_draft, ppl_target, A, B, C, law: str = "ppl_plane", eps: float = 1e-6):
    """An acceptance plane clipped to a probability in [0, 1 - eps] ([R]): SDSL's (:func:`sdlaws.fit.laws.ppl_plane`)
    or, with ``law="ppl_plane_log"``, the same in log perplexity (:func:`sdlaws.fit.laws.ppl_plane_log`)."""
    if law not in PLANE_LAWS:
        raise InputError(f"law {law!r} is not an acceptance plane; give one of {', '.join(PLANE_LAWS)}")
    plane = fit_laws.LAWS[law].func
    return np.clip(plane(np.asarray(ppl_draft), np.asarray(ppl_target), np.asarray(A), np.asarray(B),
                         np.asarray(C)), 0.0, 1.0 - eps)


def law_params(law, names: tuple[str, ...], *, role: str) -> pd.Series:
    """Point estimates of ``names`` from a law, matching parameter names case-insensitively.

    Raises
    ------
    InputError
        A parameter is missing; the message names the law and the parameters it has.
    """
    return _pick(law.params.to_frame().T, names, law, role).iloc[0]


def law_draws(law, names: tuple[str, ...], n: int, seed: int, *, role: str) -> pd.DataFrame:
    """``n`` draws of ``names`` from ``law.sample(n, seed)`` (case-insensitive names)."""
    return _pick(law.sample(n, seed), names, law, role).reset_index(drop=True)


def _pick(frame: pd.DataFrame, names: tuple[str, ...], law, role: str) -> pd.DataFrame:
    """Columns ``names`` of a parameter frame, matched case-insensitively."""
    lower = {str(c).lower(): c for c in frame.columns}
    missing = [n for n in names if n.lower() not in lower]
    if missing:
        raise InputError(f"{role} law {getattr(law, 'law', '?')!r} lacks parameter(s) {missing} "
                         f"(has {list(frame.columns)}); fit the law named in the docs")
    return frame[[lower[n.lower()] for n in names]].set_axis(list(names), axis=1).astype(float)


def _x_ranges(law) -> dict:
    """``{column: (low, high)}`` of the regressors a fitted law was fitted on (``FitResult.meta["x_range"]``);
    empty when the law does not record them (e.g. a published law)."""
    return (getattr(law, "meta", None) or {}).get("x_range") or {}


def law_x_range(law) -> tuple[float, float] | None:
    """Range of the (first) regressor a fitted law was fitted on (:func:`_x_ranges`); None when not recorded."""
    ranges = _x_ranges(law)
    columns = list(getattr(law, "x", ()) or ranges)
    if not columns or columns[0] not in ranges:
        return None
    low, high = ranges[columns[0]]
    return float(low), float(high)


def plane_extrapolation(plane, ppl_draft: float, ppl_target: float) -> str:
    """A warning when a fitted plane is evaluated at perplexities outside the ranges it was fitted on
    (:func:`_x_ranges` of its ``draft_ppl`` and ``target_ppl``); "" inside them or for a published plane."""
    ranges = _x_ranges(plane)
    outside = []
    for role, column, value in (("draft", "draft_ppl", ppl_draft), ("target", "target_ppl", ppl_target)):
        low, high = ranges.get(column, (-np.inf, np.inf))
        if not low <= value <= high:
            outside.append(f"{role} perplexity {value:.3g} outside the fitted {low:.3g}-{high:.3g}")
    return f"the {plane.law} fit is extrapolated: {'; '.join(outside)}" if outside else ""


def interval_note(law) -> str:
    """How intervals derived from ``law`` were obtained (fitted covariance draws vs published)."""
    if isinstance(law, PublishedLaw):
        if law.uncertainty:
            return law.uncertainty
        return f"normal draws of {sorted(law.sd)} around published values" if law.sd else \
            "no interval (published point estimate)"
    return f"draws from the fitted {getattr(law, 'law', 'law')} parameter distribution"
