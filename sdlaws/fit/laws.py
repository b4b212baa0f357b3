"""Scaling-law functional forms as pure numpy functions, and the registry :data:`LAWS` that drives fitting.

Every law takes its regressors first and its parameters after, as keyword-compatible arguments, so that
``law(**{x_arg: column}, **{param: value})`` evaluates it and numpy broadcasting evaluates it over many
parameter draws at once (parameters of shape ``(R, 1)`` against regressors of shape ``(n,)`` give ``(R, n)``).
Symbols follow the papers; the equations, their sources and the provenance tags [P]/[S]/[R]/[NF] are in
``docs/formulas.md``.

Each :class:`LawSpec` states the space in which the law is fitted (where possible, one in which it is linear):

- ``fitter="ols"``: the law is *linear in its coefficients* ``beta`` in the fit space (``y`` or ``log y``),
  where ``beta`` equals the parameters except that those in ``log_params`` enter as ``log(param)``. The design
  matrix is obtained by evaluating the law at unit coefficient vectors (:meth:`LawSpec.design`), so it can never
  drift from the law itself.
- ``fitter="nls"``: nonlinear least squares from several starting points (:attr:`LawSpec.starts`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from sdlaws.errors import ConfigError
from sdlaws.rates import expected_tokens_chain

#: Exponent of the inverse-square-root top-k law, k* ~ B^(-1/2): Scylla Thm 1.3 as reconstructed from a roofline
#: (docs/formulas.md#top-k-versus-batch-size) [R].
SQRT_EXPONENT = 0.5


def loglinear(x, a, b):
    """Log-linear law ``y = a*log10(x) + b``.

    Scylla (arXiv 2505.07858) Theorem 1.1 with ``x`` = draft pretraining tokens and Theorem 1.2 with ``x`` =
    draft decoder layers or parameters; ``y`` is the acceptance (most likely tau). The form is [S] (a summary of
    the paper and an author's GitHub comment, docs/formulas.md#log-linear-laws); the theorem text and coefficients
    are [NF].
    """
    return a * np.log10(x) + b


def saturating(x, y_max, A, p):
    """Power law toward a ceiling, ``y = y_max - A*x**(-p)`` (the alternative to :func:`loglinear`).

    Not from the papers: the alternative the log-linear laws are tested against [R] (docs/formulas.md#log-linear-laws).
    For ``p -> 0`` it approaches a log-linear curve; a finite ``y_max`` means acceptance plateaus.
    """
    return y_max - A * np.power(x, -p)


def ppl_plane(ppl_draft, ppl_target, A, B, C):
    """SDSL acceptance plane ``alpha = A*ppl_draft + B*ppl_target + C``.

    SDSL (arXiv 2603.11053) equation E1 [S] (docs/formulas.md#acceptance-plane); the digests report A = -0.0067,
    B = 0.01297, C = 0.642, R2 = 0.602 (see ``data/sdsl_plane_coefficients.csv``).
    """
    return A * ppl_draft + B * ppl_target + C


def ppl_plane_log(ppl_draft, ppl_target, A, B, C):
    """The acceptance plane in log perplexity, ``alpha = A*ln(ppl_draft) + B*ln(ppl_target) + C``.

    Not from the papers: the alternative to :func:`ppl_plane` that the results document compares with it [R]
    (docs/formulas.md#acceptance-plane). Perplexity is the exponential of the cross-entropy, so this form is linear
    in the models' losses; ``docs/results.md`` says which form AIC and leave-one-out error prefer on the committed
    planes.
    """
    return A * np.log(ppl_draft) + B * np.log(ppl_target) + C


def linear(x, a, b):
    """Straight line ``y = a*x + b`` (e.g. SDSL's N* = mu*M + M0, docs/formulas.md#optimal-draft-size [S])."""
    return a * x + b


def power(x, c, p):
    """Power law ``y = c*x**p``, fitted as a line in log-log space (multiplicative errors)."""
    return c * np.power(x, p)


def topk_batch(batch_size, c, p):
    """Optimal tree top-k versus batch size, ``k* = c*B**(-p)``, exponent free.

    Scylla (arXiv 2505.07858) Theorem 1.3 as reconstructed from a roofline [R]
    (docs/formulas.md#top-k-versus-batch-size): the statement in the paper is [NF]; the reconstruction gives
    p = 1/2 when the verified tokens grow as k**2.
    """
    return power(batch_size, c, -p)


def topk_batch_sqrt(batch_size, c):
    """Optimal tree top-k versus batch size with the exponent fixed, ``k* = c*B**(-1/2)``.

    The restricted form of :func:`topk_batch` ([R], docs/formulas.md#top-k-versus-batch-size); compare the two
    with a likelihood-ratio test (:func:`sdlaws.fit.estimators.compare`) or the Wald test reported by a
    ``topk_batch`` fit.
    """
    return topk_batch(batch_size, c, SQRT_EXPONENT)


def speedup_chain(alpha, gamma, c):
    """Expected walltime speedup of a chain draft, ``tau(alpha, gamma) / (gamma*c + 1)``.

    Leviathan et al. 2023 (arXiv 2211.17192) Theorem 3.8 [P]; ``tau`` is Eq. 1,
    :func:`sdlaws.rates.expected_tokens_chain`, and ``c`` the draft/target cost coefficient (Def. 3.7).
    """
    return expected_tokens_chain(alpha, gamma) / (gamma * c + 1.0)


def _saturating_starts(X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Starting points for :func:`saturating`: for each exponent on a grid, ``y_max`` and ``A`` by least squares.

    For fixed ``p`` the law is linear in (y_max, A) (variable projection), so each start is the best curve
    with that exponent.
    """
    x = X[:, 0]
    starts = []
    for p in (0.05, 0.1, 0.2, 0.5, 1.0, 2.0):
        basis = np.column_stack([np.ones_like(x), -np.power(x, -p)])
        (y_max, A), *_ = np.linalg.lstsq(basis, y, rcond=None)
        starts.append(np.array([y_max, A, p]))
    return starts


def _grid_starts(*grids: Sequence[float]) -> Callable[[np.ndarray, np.ndarray], list[np.ndarray]]:
    """Starting points on the Cartesian product of per-parameter grids (independent of the data)."""
    points = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, len(grids))
    return lambda X, y: list(points)


@dataclass(frozen=True)
class LawSpec:
    """A fittable law: the function, its parameters, default columns and how it is fitted.

    Attributes
    ----------
    name : str
        Registry key (also the ``--law`` value).
    func : callable
        The pure law function; its first ``len(x_args)`` arguments are regressors, the rest parameters.
    x_args : tuple of str
        Argument names of ``func`` that take the regressors, in the order of ``x``.
    x : tuple of str
        Default CSV columns for ``x_args`` (empty when the law has no natural default).
    y : str or None
        Default CSV column of the response.
    equation, citation : str
        For ``--list``, summaries and plots; ``citation`` ends with the provenance tag.
    linear_in : str
        What the law is linear in (how it is fitted), in words.
    fitter : {"ols", "nls"}
        Least squares on a design matrix (statsmodels OLS/WLS) or nonlinear least squares (scipy).
    space : {"identity", "log"}
        Space of the residuals: ``y`` or ``log(y)`` (multiplicative errors).
    log_params : tuple of str
        Parameters whose coefficient in the fit is ``log(param)``; their intervals and draws are formed on the
        log scale (exact for the log-space OLS laws).
    log_x : bool
        Plot with a logarithmic x axis.
    starts : callable or None
        ``starts(X, y) -> list of parameter vectors`` for ``nls``.
    bounds : tuple of float sequences
        Lower and upper parameter bounds for ``nls``.
    restricts : tuple (law, param, value) or None
        This law is ``law`` with ``param`` fixed at ``value`` (nested models: likelihood-ratio and Wald tests).
    params : tuple of str
        The other arguments of ``func``, in signature order (derived).
    """

    name: str
    func: Callable
    x: tuple[str, ...]
    y: str | None
    equation: str
    citation: str
    linear_in: str
    fitter: str = "ols"
    space: str = "identity"
    log_params: tuple[str, ...] = ()
    log_x: bool = False
    starts: Callable[[np.ndarray, np.ndarray], list[np.ndarray]] | None = None
    bounds: tuple[Sequence[float], Sequence[float]] | None = None
    restricts: tuple[str, str, float] | None = None
    x_args: tuple[str, ...] = ("x",)
    params: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        """Derive ``params``: the arguments of ``func`` that are not regressors."""
        names = tuple(inspect.signature(self.func).parameters)
        object.__setattr__(self, "params", tuple(n for n in names if n not in self.x_args))

    def evaluate(self, X: np.ndarray, params) -> np.ndarray:
        """Law values at regressors ``X`` (n, n_x) for ``params`` (k,) -> (n,), or for draws (R, k) -> (R, n)."""
        X = np.asarray(X, dtype=float).reshape(len(X), len(self.x_args))
        P = np.asarray(params, dtype=float)
        xs = {name: X[:, j] for j, name in enumerate(self.x_args)}
        ps = {name: P[..., j, None] if P.ndim == 2 else P[j] for j, name in enumerate(self.params)}
        return self.func(**xs, **ps)

    def to_space(self, y):
        """Map law values or observations into the fit space (``log`` for multiplicative-error laws)."""
        return np.log(y) if self.space == "log" else np.asarray(y, dtype=float)

    def from_space(self, z):
        """Inverse of :meth:`to_space`."""
        return np.exp(z) if self.space == "log" else np.asarray(z, dtype=float)

    def log_mask(self) -> np.ndarray:
        """Boolean mask over ``params``: True where the coefficient is ``log(param)``."""
        return np.array([name in self.log_params for name in self.params])

    def to_coef(self, params) -> np.ndarray:
        """Parameters -> fit coefficients ``beta`` (log of the ``log_params``); works on (k,) and (R, k)."""
        return self._map_logs(params, np.log)

    def from_coef(self, beta) -> np.ndarray:
        """Fit coefficients -> parameters (inverse of :meth:`to_coef`)."""
        return self._map_logs(beta, np.exp)

    def _map_logs(self, values, fn) -> np.ndarray:
        """Apply ``fn`` to the ``log_params`` entries (last axis) of a copy of ``values``."""
        out = np.array(values, dtype=float)
        mask = self.log_mask()
        out[..., mask] = fn(out[..., mask])
        return out

    def fit_value(self, X: np.ndarray, beta) -> np.ndarray:
        """The law in the fit space as a function of the coefficients ``beta``."""
        return self.to_space(self.evaluate(X, self.from_coef(beta)))

    def design(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offset (n,) and design matrix (n, k) of an ``ols`` law: ``fit_value(X, beta) = offset + design @ beta``.

        Read off the law at ``beta = 0`` and at the unit vectors, which is exact for a law linear in ``beta``.
        """
        k = len(self.params)
        offset = self.fit_value(X, np.zeros(k))
        columns = [self.fit_value(X, np.eye(k)[j]) - offset for j in range(k)]
        return offset, np.column_stack(columns)

    def jacobian(self, X: np.ndarray, beta) -> np.ndarray:
        """Derivative (n, k) of :meth:`fit_value` with respect to ``beta``.

        Exact (the design matrix) for ``ols`` laws; central differences with step ``eps**(1/3)`` relative to
        ``max(|beta|, 0.01)`` for ``nls`` laws.
        """
        if self.fitter == "ols":
            return self.design(X)[1]
        beta = np.asarray(beta, dtype=float)
        steps = np.finfo(float).eps ** (1 / 3) * np.maximum(np.abs(beta), 1e-2)
        cols = [(self.fit_value(X, beta + h * e) - self.fit_value(X, beta - h * e)) / (2 * h)
                for h, e in zip(steps, np.eye(len(beta)))]
        return np.column_stack(cols)

    def describe(self) -> str:
        """One-line description: equation and citation."""
        return f"{self.equation}  [{self.citation}]"


def _registry(*specs: LawSpec) -> dict[str, LawSpec]:
    """Index law specs by name."""
    return {spec.name: spec for spec in specs}


LAWS: dict[str, LawSpec] = _registry(
    LawSpec("loglinear", loglinear, ("draft_pretrain_tokens",), "mean_acceptance_length",
            "y = a*log10(x) + b", "Scylla Thm 1.1 (pretraining tokens) / Thm 1.2 (layers, params) [S]",
            "a, b (OLS on log10 x)", log_x=True),
    LawSpec("saturating", saturating, ("draft_pretrain_tokens",), "mean_acceptance_length",
            "y = y_max - A*x^(-p)", "power law toward a ceiling, alternative to loglinear [R]",
            "y_max, A for fixed p (nonlinear in p)", fitter="nls", log_x=True, starts=_saturating_starts,
            bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, np.inf])),
    LawSpec("ppl_plane", ppl_plane, ("draft_ppl", "target_ppl"), "alpha_mle",
            "alpha = A*ppl_draft + B*ppl_target + C", "SDSL E1 [S]", "A, B, C (OLS)",
            x_args=("ppl_draft", "ppl_target")),
    LawSpec("ppl_plane_log", ppl_plane_log, ("draft_ppl", "target_ppl"), "alpha_mle",
            "alpha = A*ln(ppl_draft) + B*ln(ppl_target) + C", "log form of SDSL E1, the alternative [R]",
            "A, B, C (OLS on ln ppl)", log_x=True, x_args=("ppl_draft", "ppl_target")),
    LawSpec("topk_batch", topk_batch, ("batch_size",), "tree_topk",
            "k* = c*B^(-p)", "Scylla Thm 1.3, roofline reconstruction [R]",
            "log c, p (OLS on log k*, log B)", space="log", log_params=("c",), log_x=True, x_args=("batch_size",)),
    LawSpec("topk_batch_sqrt", topk_batch_sqrt, ("batch_size",), "tree_topk",
            "k* = c*B^(-1/2)", "Scylla Thm 1.3 with p = 1/2, roofline reconstruction [R]",
            "log c (OLS on log k* + log(B)/2)", space="log", log_params=("c",), log_x=True,
            restricts=("topk_batch", "p", SQRT_EXPONENT), x_args=("batch_size",)),
    LawSpec("linear", linear, (), None, "y = a*x + b", "straight line, e.g. SDSL N* = mu*M + M0 [S]",
            "a, b (OLS)"),
    LawSpec("power", power, (), None, "y = c*x^p", "power law", "log c, p (OLS on log y, log x)",
            space="log", log_params=("c",), log_x=True),
    LawSpec("tau_chain", expected_tokens_chain, ("num_spec_tokens",), "mean_acceptance_length",
            "tau = (1 - alpha^(gamma+1)) / (1 - alpha)", "Leviathan Eq. 1 [P]", "nonlinear in alpha",
            fitter="nls", starts=_grid_starts((0.3, 0.6, 0.9)), bounds=([0.0], [1.0]), x_args=("gamma",)),
    LawSpec("speedup_chain", speedup_chain, ("num_spec_tokens",), "speedup",
            "S = tau(alpha, gamma) / (gamma*c + 1)", "Leviathan Thm 3.8 [P]", "nonlinear in alpha, c",
            fitter="nls", starts=_grid_starts((0.3, 0.6, 0.9), (0.01, 0.1)), bounds=([0.0, 0.0], [1.0, np.inf]),
            x_args=("gamma",)),
)


def get_law(name: str) -> LawSpec:
    """Return the :class:`LawSpec` called ``name`` or raise a one-line :class:`ConfigError`."""
    if name not in LAWS:
        raise ConfigError(f"unknown law {name!r}; choose one of {', '.join(LAWS)} (see `sdlaws fit --list`)")
    return LAWS[name]
