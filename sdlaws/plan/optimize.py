"""Optimisers: draft size, draft pretraining tokens, chain length (num_spec_tokens) and tree shape per batch size.

Each returns :class:`~sdlaws.plan.result.Plan` objects whose intervals come from sampling the laws' parameter
distributions (``law.sample(n, seed)``) and re-optimising for every draw; the recommended value itself comes from
the point estimates. Laws are fitted ``FitResult`` objects or the published defaults of :mod:`sdlaws.plan.priors`.

One module because the four optimisers share one pattern (optimise at the point estimate, then per
law draw for the interval) and its helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from sdlaws.errors import ConfigError
from sdlaws.fit import laws as fit_laws
from sdlaws.plan import priors
from sdlaws.plan.result import Plan, PlanSet
from sdlaws.plan.speedup import (RANK_DECAY, ar_tokens_per_s, chain_tokens_per_s, expected_tokens_chain,
                                 expected_tokens_positions, level_acceptance, optimal_gamma_chain,
                                 rank_rates_from_alpha, tokens_per_flop, tree_tokens_per_s)
from sdlaws.plan.setup import ServingSetup
from sdlaws.roofline import ModelShape, draft_like, min_draft_params

LEVEL = 0.95
MAX_NUM_SPEC_TOKENS_DRAFT = 20    # chain lengths searched when sizing the draft (optima 8-12: docs/formulas.md)
MAX_NUM_SPEC_TOKENS_SERVING = 16  # chain lengths searched per batch size
TOPKS = (1, 2, 4, 8)              # tree branching searched (SGLang default topk 4, EAGLE code 10: docs/peers.md)
MAX_TREE_NUM_SPEC_TOKENS = 10     # tree depths searched (EAGLE default depth 7, SGLang steps 5)
# Training FLOP utilisation to turn 6*N*D into GPU-seconds: Llama 3 405B reports 38-43% BF16 MFU on H100
# ("The Llama 3 Herd of Models", Table 4).
TRAIN_MFU = 0.4
# Targets of the N* versus M table (parameters).
NSTAR_TABLE_TARGETS = (1e9, 3e9, 8e9, 13e9, 30e9, 70e9, 110e9, 405e9)


def _interval(values: np.ndarray, level: float, *, discrete: bool = False) -> tuple[float, float]:
    """Central percentile interval; ``discrete`` keeps it on observed values (integer num_spec_tokens, top-k, grid
    points)."""
    method = "inverted_cdf" if discrete else "linear"
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], method=method)
    return float(lo), float(hi)


def _has_spread(draws: np.ndarray | None) -> bool:
    """Whether draws (samples on axis 0) vary, i.e. an interval can be given."""
    return draws is not None and len(draws) > 1 and bool(np.ptp(np.asarray(draws), axis=0).max() > 0)


def draft_grid(target_params: float, points: int = 161) -> np.ndarray:
    """Log grid of draft sizes from 1e6 parameters to half the target (a draft must be smaller)."""
    return np.logspace(6.0, np.log10(target_params / 2.0), points)


# ------------------------------------------------------------------------------------------------ acceptance

@dataclass(frozen=True)
class Acceptance:
    """Per-token acceptance alpha of draft sizes: point estimates, draws, and where the spread comes from."""

    point: np.ndarray        # (N,)
    draws: np.ndarray        # (S, N)
    ci_kind: str
    #: ``alpha``'s inputs outside the data the plane was fitted on, per draft size (N,): a sentence or ""
    extrapolated: np.ndarray | None = None

    @property
    def has_interval(self) -> bool:
        """Whether the draws differ (an interval can be given)."""
        return _has_spread(self.draws)


def sdsl_alpha(draft_params, target_params: float, *, plane=priors.SDSL_PLANE, loss=priors.CHINCHILLA_LOSS,
               draft_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS,
               target_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS, samples: int = 200,
               seed: int = 0) -> Acceptance:
    """alpha of each draft size from the SDSL pipeline (docs/formulas.md#acceptance-plane).

    Perplexities from the Chinchilla-form loss law at the given pretraining tokens, then the acceptance plane
    ``alpha = A ppl_draft + B ppl_target + C`` (or its log-perplexity form, a ``ppl_plane_log`` fit) clipped to
    [0, 1). Draws: ``plane.sample(samples, seed)``.
    """
    n = np.atleast_1d(np.asarray(draft_params, dtype=float))
    ppl_draft = priors.chinchilla_ppl(n, draft_tokens, loss)
    ppl_target = priors.chinchilla_ppl(target_params, target_tokens, loss)
    names = ("A", "B", "C")
    p = priors.law_params(plane, names, role="ppl_plane")
    d = priors.law_draws(plane, names, samples, seed, role="ppl_plane")
    point = priors.plane_alpha(ppl_draft, ppl_target, p["A"], p["B"], p["C"], law=plane.law)
    draws = priors.plane_alpha(ppl_draft[None, :], ppl_target, d["A"].to_numpy()[:, None],
                               d["B"].to_numpy()[:, None], d["C"].to_numpy()[:, None], law=plane.law)
    outside = np.array([priors.plane_extrapolation(plane, pd_, ppl_target) for pd_ in ppl_draft])
    return Acceptance(point=point, draws=draws, ci_kind=priors.interval_note(plane), extrapolated=outside)


# ---------------------------------------------------------------------------------------------- draft size

def _best(speedup: np.ndarray) -> tuple[int, int]:
    """(draft index, num_spec_tokens index) of the largest speedup in an (N, G) array."""
    n, g = np.unravel_index(np.argmax(speedup), speedup.shape)
    return int(n), int(g)


def _draft_size_plan(grid, lengths, throughput: np.ndarray, throughput_draws: np.ndarray | None,
                     ar_throughput: float, acc: Acceptance, *, objective: str, unit: str, inputs: dict,
                     level: float) -> Plan:
    """Maximise ``throughput`` (N, G) over draft size and num_spec_tokens (the chain ``lengths`` searched), and
    ``throughput_draws`` (S, N, G) per draw;
    speedup is throughput over the autoregressive ``ar_throughput`` in the same unit."""
    speedup = throughput / ar_throughput                           # (N, G)
    n_best, g_best = _best(speedup)
    curve = pd.DataFrame({"draft_params": grid, "speedup": speedup.max(axis=1),
                          "objective": speedup.max(axis=1) * ar_throughput,
                          "num_spec_tokens": lengths[np.argmax(speedup, axis=1)], "alpha": acc.point})
    ci = speedup_ci = None
    if throughput_draws is not None:
        draws = throughput_draws / ar_throughput                   # (S, N, G)
        per_n = draws.max(axis=2)                                  # (S, N)
        log_n = np.log10(grid[per_n.argmax(axis=1)])
        ci = tuple(float(10**v) for v in _interval(log_n, level, discrete=True))
        speedup_ci = _interval(draws[:, n_best, g_best], level)
        curve["speedup_lower"], curve["speedup_upper"] = (np.quantile(per_n, q, axis=0)
                                                          for q in ((1 - level) / 2, (1 + level) / 2))
    warnings = ()
    if n_best in (0, len(grid) - 1):
        warnings += (f"optimum at the edge of the draft-size grid ({grid[0]:.3g}-{grid[-1]:.3g} params)",)
    if g_best == len(lengths) - 1:
        warnings += (f"best num_spec_tokens is the largest searched ({lengths[-1]}); raise max_num_spec_tokens",)
    if acc.extrapolated is not None and acc.extrapolated[n_best]:
        warnings += (acc.extrapolated[n_best],)
    target = inputs["target_params"]
    return Plan(quantity="draft_params", value=float(grid[n_best]), unit="params", objective=objective,
                ci=ci, ci_kind=acc.ci_kind if ci else "no interval (published point estimate)",
                speedup=float(speedup[n_best, g_best]), speedup_ci=speedup_ci,
                settings={"num_spec_tokens": int(lengths[g_best]), "alpha": float(acc.point[n_best]),
                          "draft_to_target": float(grid[n_best] / target),
                          unit: float(speedup[n_best, g_best] * ar_throughput),
                          "sdsl_shortcut_params": priors.SDSL_NSTAR_MU * target + priors.SDSL_NSTAR_M0},
                inputs=inputs, curve=curve, warnings=warnings, level=level)


def _draft_inputs(target: ModelShape, plane, loss, draft_tokens, target_tokens, samples, seed, **extra) -> dict:
    """Inputs echoed by draft-size plans."""
    return dict(target=target.to_dict(), target_params=target.params, plane=_law_echo(plane), loss=_law_echo(loss),
                draft_pretrain_tokens=draft_tokens, target_pretrain_tokens=target_tokens, samples=samples,
                seed=seed, **extra)


def _law_echo(law) -> dict:
    """Name, parameters, source and interval kind of a law, plain types."""
    return dict(law=getattr(law, "law", "?"), params=law.params.to_dict(),
                source=getattr(law, "source", "fitted FitResult"), interval=priors.interval_note(law))


def optimal_draft_size(target: ModelShape, *, plane=priors.SDSL_PLANE, loss=priors.CHINCHILLA_LOSS,
                       draft_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS,
                       target_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS,
                       max_num_spec_tokens: int = MAX_NUM_SPEC_TOKENS_DRAFT, grid_points: int = 161,
                       samples: int = 200, seed: int = 0, level: float = LEVEL) -> Plan:
    """SDSL optimal draft size N*: maximise tokens/FLOP ``tau / (2 N gamma + 2 M)`` over N and gamma (the
    num_spec_tokens of a chain).

    alpha(N) comes from :func:`sdsl_alpha`; N on a log grid (:func:`draft_grid`), gamma = 1..max_num_spec_tokens.
    With the published plane and D = D' = 2T the reconstruction gives N* ~ 2.7e8 for M = 70B
    (docs/formulas.md#optimal-draft-size, [R] on [S] coefficients). The interval re-optimises N for every plane
    draw.
    """
    grid, lengths = draft_grid(target.params, grid_points), np.arange(1, max_num_spec_tokens + 1)
    acc = sdsl_alpha(grid, target.params, plane=plane, loss=loss, draft_tokens=draft_tokens,
                     target_tokens=target_tokens, samples=samples, seed=seed)
    point = tokens_per_flop(acc.point[:, None], lengths, grid[:, None], target.params)           # (N, G)
    draws = tokens_per_flop(acc.draws[..., None], lengths, grid[:, None], target.params) if acc.has_interval else None
    inputs = _draft_inputs(target, plane, loss, draft_tokens, target_tokens, samples, seed,
                           max_num_spec_tokens=max_num_spec_tokens)
    return _draft_size_plan(grid, lengths, point, draws, 1.0 / (2.0 * target.params), acc,
                            objective="tokens/FLOP (SDSL, one target pass per step)", unit="tokens_per_flop",
                            inputs=inputs, level=level)


def draft_size_by_batch(setup: ServingSetup, batch_sizes, *, plane=priors.SDSL_PLANE, loss=priors.CHINCHILLA_LOSS,
                        draft_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS,
                        target_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS,
                        max_num_spec_tokens: int = MAX_NUM_SPEC_TOKENS_DRAFT, grid_points: int = 161,
                        samples: int = 200, seed: int = 0, level: float = LEVEL) -> list[Plan]:
    """Draft size maximising roofline tokens/s at each batch size (wall-clock objective), one Plan per batch.

    tokens/s = ``B tau / (gamma t_draft(N, B) + t_verify(M, B, gamma + 1))`` with drafts of N parameters shaped by
    :func:`sdlaws.roofline.draft_like` (a real architecture sharing the target's vocabulary); speedup is relative to autoregressive decoding at the same batch.
    """
    target = setup.target
    grid, lengths = draft_grid(target.params, grid_points), np.arange(1, max_num_spec_tokens + 1)
    grid = grid[grid >= min_draft_params(target)]  # a real draft holds the target's vocabulary
    acc = sdsl_alpha(grid, target.params, plane=plane, loss=loss, draft_tokens=draft_tokens,
                     target_tokens=target_tokens, samples=samples, seed=seed)
    tau = expected_tokens_chain(acc.point[:, None], lengths)                                        # (N, G)
    tau_draws = expected_tokens_chain(acc.draws[..., None], lengths) if acc.has_interval else None  # (S, N, G)
    batches = np.asarray(batch_sizes)
    steps_s = np.stack([setup.with_draft(draft_like(setup.target, n)).chain_step_time_s(batches[:, None], lengths)
                        for n in grid], axis=1)                                                    # (B, N, G)
    plans = []
    for batch, step_s in zip(batch_sizes, steps_s):
        draws = batch * tau_draws / step_s if tau_draws is not None else None                      # tokens/s
        inputs = _draft_inputs(target, plane, loss, draft_tokens, target_tokens, samples, seed,
                               max_num_spec_tokens=max_num_spec_tokens, batch_size=int(batch),
                               serving=setup.to_dict())
        ar = float(ar_tokens_per_s(setup, batch))
        plans.append(_draft_size_plan(grid, lengths, batch * tau / step_s, draws, ar, acc,
                                      objective=f"tokens/s (roofline, {setup.hardware.name}, batch {batch})",
                                      unit="tokens_per_s", inputs=inputs, level=level))
    return plans


def draft_size_table(targets=NSTAR_TABLE_TARGETS, **kwargs) -> pd.DataFrame:
    """N* versus target size M (SDSL tokens/FLOP), next to the SDSL shortcut ``mu M + M0`` [S].

    ``targets``: parameter counts or :class:`ModelShape`; ``kwargs`` go to :func:`optimal_draft_size`.
    """
    rows = []
    for t in targets:
        shape = t if isinstance(t, ModelShape) else ModelShape.from_params(float(t))
        plan = optimal_draft_size(shape, **kwargs)
        lo, hi = plan.ci or (np.nan, np.nan)
        rows.append(dict(target_params=shape.params, draft_params=plan.value, draft_params_lower=lo,
                         draft_params_upper=hi, draft_to_target=plan.settings["draft_to_target"],
                         num_spec_tokens=plan.settings["num_spec_tokens"], alpha=plan.settings["alpha"],
                         speedup=plan.speedup,
                         sdsl_shortcut_params=plan.settings["sdsl_shortcut_params"]))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- pretraining D

def acceptance_kind(law) -> str | None:
    """``"tau"`` or ``"alpha"`` of a fitted law's response column (``law.y``, :data:`sdlaws.rates.ACCEPTANCE_KINDS`),
    None for a response that is neither."""
    from sdlaws.rates import ACCEPTANCE_KINDS

    return ACCEPTANCE_KINDS.get(str(getattr(law, "y", "") or ""))


def _serve_seconds_per_token(setup: ServingSetup, batch_size: int, acc: np.ndarray, kind: str,
                             num_spec_tokens: int | None, max_num_spec_tokens: int) -> np.ndarray:
    """GPU-seconds per served token at acceptance ``acc`` (any shape): a chain of ``num_spec_tokens`` drafts, or of
    the best length up to ``max_num_spec_tokens``."""
    if kind == "tau":
        tau = np.maximum(acc, 1.0)
        return setup.chain_step_time_s(batch_size, num_spec_tokens) / (batch_size * tau)
    lengths = np.arange(1, max_num_spec_tokens + 1)
    alpha = np.clip(acc, 0.0, 1.0 - 1e-9)
    tau = expected_tokens_chain(alpha[..., None], lengths)
    per_length = setup.chain_step_time_s(batch_size, lengths) / (batch_size * tau)
    return per_length.min(axis=-1)


def optimal_pretraining_tokens(law, setup: ServingSetup, *, serve_tokens: float, batch_size: int = 1,
                               kind: str | None = None, num_spec_tokens: int | None = None,
                               train_mfu: float = TRAIN_MFU,
                               data_range: tuple[float, float] | None = None,
                               grid=np.logspace(8.0, 14.0, 241), samples: int = 200, seed: int = 0,
                               level: float = LEVEL) -> Plan:
    """Draft pretraining tokens D* minimising training + serving GPU-seconds on ``setup.hardware``.

    ``cost(D) = 6 N D / (peak_bf16 * train_mfu) + serve_tokens * s_per_token(acc(D))`` with the fitted
    log-linear law ``acc = a log10(D) + b`` (Scylla Thm 1.1 form; no published coefficients exist,
    docs/formulas.md#log-linear-laws [NF], so a fitted law is required). The optimum is where one more decade of
    tokens saves less serving time than it costs to train. ``kind`` says whether acc is tau (served with the
    chain length ``num_spec_tokens`` it was measured at) or alpha (the chain length re-optimised at each D).

    Raises
    ------
    ConfigError
        Missing draft, serve volume, unknown acceptance kind, or tau kind without num_spec_tokens.
    """
    kind = kind or acceptance_kind(law)
    if kind not in ("tau", "alpha"):
        raise ConfigError("cannot tell whether the log-linear law predicts tau or alpha; pass --acceptance tau|alpha")
    if kind == "tau" and not num_spec_tokens:
        raise ConfigError("a tau law needs the chain length it was measured at; pass --num-spec-tokens")
    if setup.draft is None or not serve_tokens > 0:
        raise ConfigError("pretraining budget needs a draft (--draft/--draft-params) and --serve-tokens > 0")
    p = priors.law_params(law, ("a", "b"), role="loglinear")
    draws = priors.law_draws(law, ("a", "b"), samples, seed, role="loglinear")
    log_d = np.log10(grid)
    train_s = 6.0 * setup.draft.params * grid / (setup.hardware.peak_bf16_flops_per_s * train_mfu)

    def total_s(a, b):
        """Training + serving GPU-seconds over the token grid, and the acceptance there."""
        acc = fit_laws.loglinear(grid, np.asarray(a)[..., None], np.asarray(b)[..., None])
        serve_s = serve_tokens * _serve_seconds_per_token(setup, batch_size, acc, kind, num_spec_tokens,
                                                          MAX_NUM_SPEC_TOKENS_SERVING)
        return train_s + serve_s, acc

    point_s, acc_point = total_s(p["a"], p["b"])
    best = int(np.argmin(point_s))
    ar_s = float(setup.target_time_s(batch_size, 1)) / batch_size
    sd_s = (point_s - train_s) / serve_tokens
    curve = pd.DataFrame({"draft_pretrain_tokens": grid, "objective": point_s / 3600.0, "acceptance": acc_point,
                          "speedup": ar_s / sd_s})
    ci = speedup_ci = None
    if _has_spread(draws.to_numpy()):
        draw_s, _ = total_s(draws["a"].to_numpy(), draws["b"].to_numpy())
        ci = tuple(float(v) for v in 10 ** np.asarray(_interval(log_d[draw_s.argmin(axis=1)], level, discrete=True)))
        speedup_ci = _interval(ar_s / ((draw_s[:, best] - train_s[best]) / serve_tokens), level)
        curve["objective_lower"], curve["objective_upper"] = (np.quantile(draw_s, q, axis=0) / 3600.0
                                                              for q in ((1 - level) / 2, (1 + level) / 2))
    nxt = min(best + int(round(1.0 / (log_d[1] - log_d[0]))), len(grid) - 1)  # one decade further on the grid
    settings = {"acceptance": float(acc_point[best]), "acceptance_kind": kind, "num_spec_tokens": num_spec_tokens,
                "train_gpu_hours": float(train_s[best] / 3600.0),
                "serve_gpu_hours": float((point_s[best] - train_s[best]) / 3600.0),
                "next_decade_train_gpu_hours": float((train_s[nxt] - train_s[best]) / 3600.0),
                "next_decade_serve_saving_gpu_hours": float((point_s[best] - train_s[best]
                                                             - (point_s[nxt] - train_s[nxt])) / 3600.0)}
    inputs = dict(law=_law_echo(law), serving=setup.to_dict(), serve_tokens=serve_tokens, batch_size=batch_size,
                  train_mfu=train_mfu, data_range=data_range, samples=samples, seed=seed)
    return Plan(quantity="draft_pretrain_tokens", value=float(grid[best]), unit="tokens",
                objective=f"training + serving GPU-hours ({setup.hardware.name}, batch {batch_size})", ci=ci,
                ci_kind=priors.interval_note(law) if ci else "no interval (law without parameter spread)",
                speedup=float(ar_s / sd_s[best]), speedup_ci=speedup_ci, settings=settings, inputs=inputs,
                curve=curve, warnings=_pretraining_warnings(grid, best, p["a"], data_range), level=level)


def _pretraining_warnings(grid, best: int, slope: float, data_range) -> tuple[str, ...]:
    """Slope, extrapolation / saturation and grid-edge warnings of a D* plan."""
    value = grid[best]
    lo_sat, hi_sat = priors.SCYLLA_SATURATION_TOKENS
    saturation = (f"Scylla reports acceptance saturating around {lo_sat:.0e}-{hi_sat:.0e} pretraining tokens [S], "
                  "which a log-linear law cannot represent")
    out = []
    if slope <= 0:
        out.append("the fitted law does not increase with tokens (slope <= 0): more pretraining never pays")
    if data_range is None:
        out.append(f"fitted data range unknown, so extrapolation cannot be checked; {saturation}")
    elif not data_range[0] <= value <= data_range[1]:
        out.append(f"D* = {value:.3g} is outside the fitted range {data_range[0]:.3g}-{data_range[1]:.3g} tokens: "
                   f"the law is extrapolated; {saturation}")
    elif value > lo_sat:
        out.append(saturation)
    if best in (0, len(grid) - 1):
        out.append(f"optimum at the edge of the token grid ({grid[0]:.0e}-{grid[-1]:.0e})")
    return tuple(out)


# ------------------------------------------------------------------------------------------------ serving

@dataclass(frozen=True)
class ServingAcceptance:
    """Acceptance of the served draft: alpha point and draws, optional measured rank / position rates."""

    alpha: float
    alpha_draws: np.ndarray | None = None      # (S,)
    ci_kind: str = "no interval (acceptance given as a number)"
    rank_rates: np.ndarray | None = None       # conditional rank rates c_r (fixed), overrides the alpha decay
    position_rates: np.ndarray | None = None   # chain per-position conditional rates alpha_1..alpha_gamma
    source: str | None = None                  # where it comes from (a published pair), echoed in the plan

    def alphas(self) -> np.ndarray:
        """Point first, then the draws: shape (1 + S,)."""
        draws = self.alpha_draws if _has_spread(self.alpha_draws) else np.empty(0)
        return np.concatenate([[self.alpha], draws])


def _chain_tau(acc: ServingAcceptance, lengths: np.ndarray) -> np.ndarray:
    """(1 + S, G) tau of chains of each of ``lengths`` from alpha; measured per-position rates, when given,
    replace it (point only)."""
    if acc.position_rates is not None:
        return np.array([[expected_tokens_positions(acc.position_rates[:g]) for g in lengths]])
    return expected_tokens_chain(acc.alphas()[:, None], lengths)


def _tree_tau(acc: ServingAcceptance, topks: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """(1 + S, K, D) tau of top-k trees (speedup.py tree model)."""
    if acc.rank_rates is not None:
        rates = np.broadcast_to(acc.rank_rates, (len(acc.alphas()), len(acc.rank_rates)))
    else:
        rates = rank_rates_from_alpha(acc.alphas(), int(topks.max()))
    level = level_acceptance(rates, topks)                               # (1 + S, K)
    return expected_tokens_chain(level[:, :, None], depths[None, None, :])


def _pick(speedup: np.ndarray, level: float) -> tuple[tuple, tuple | None, tuple | None]:
    """Best configuration of the point row, interval of each draw's best index, speedup interval at the best."""
    flat = speedup.reshape(len(speedup), -1)
    best = np.unravel_index(int(np.argmax(flat[0])), speedup.shape[1:])
    if len(speedup) == 1:
        return best, None, None
    draw_best = np.array(np.unravel_index(flat[1:].argmax(axis=1), speedup.shape[1:]))   # (ndim, S)
    return best, draw_best, _interval(speedup[(slice(1, None), *best)], level)


def serving_plan(setup: ServingSetup, batch_sizes, acc: ServingAcceptance, *, topk_law=None,
                 max_num_spec_tokens: int = MAX_NUM_SPEC_TOKENS_SERVING, topks=TOPKS,
                 max_tree_num_spec_tokens: int = MAX_TREE_NUM_SPEC_TOKENS, samples: int = 200, seed: int = 0,
                 level: float = LEVEL) -> PlanSet:
    """Optimal chain length and top-k tree (num_spec_tokens, tree_topk, verified tokens) per batch size on the
    roofline.

    For each batch B: tokens/s of every chain length 1..max_num_spec_tokens and every tree (k in ``topks``, depth
    1..max_tree_num_spec_tokens, ``k * depth + 1`` tokens verified) from :class:`~sdlaws.plan.setup.ServingSetup`
    step times; the best is recommended; intervals re-optimise for every acceptance draw. The fitted ``k* = c B^-p`` law
    (``topk_law``, a ``topk_batch`` FitResult) is shown alongside, with its own interval.

    Returns
    -------
    PlanSet
        Plans ``num_spec_tokens`` (chain) and ``tree_topk`` (tree) per batch, table ``serving``.
    """
    if setup.draft is None:
        raise ConfigError("serving plan needs a draft model (size or shape)")
    lengths, topks = np.arange(1, max_num_spec_tokens + 1), np.asarray(topks)
    depths = np.arange(1, max_tree_num_spec_tokens + 1)
    if acc.position_rates is not None:
        lengths = lengths[: len(acc.position_rates)]
    chain_tau, tree_tau = _chain_tau(acc, lengths), _tree_tau(acc, topks, depths)
    law_k = _topk_law_predictions(topk_law, batch_sizes, samples, seed, level) if topk_law is not None else None
    plans, rows, warnings = [], [], []
    for i, batch in enumerate(batch_sizes):
        ar = float(ar_tokens_per_s(setup, batch))
        chain, row_chain = _chain_at(setup, batch, lengths, chain_tau, acc, ar, level)
        tree, row_tree = _tree_at(setup, batch, topks, depths, tree_tau, acc, ar, level)
        row = dict(batch_size=int(batch), ar_tokens_per_s=ar, **row_chain, **row_tree)
        if law_k is not None:
            row.update(law_k[i])
        plans += [chain, tree]
        rows.append(row)
    table = pd.DataFrame(rows)
    edge = table.loc[table["tree_num_spec_tokens"].eq(depths.max()) | table["tree_topk"].eq(topks.max()),
                     "batch_size"].tolist()
    if edge:
        warnings.append(f"batch {', '.join(map(str, edge))}: best tree at the search limit (depth {depths.max()} or "
                        f"top-k {topks.max()}); the idealised tree model is optimistic for large trees")
    too_big = table.loc[~table["fits_memory"], "batch_size"].tolist()
    if too_big:
        warnings.append(f"batch {', '.join(map(str, too_big))}: weights + KV cache exceed {setup.hardware.name} "
                        f"memory ({setup.hardware.memory_bytes / 2**30:.0f} GiB per GPU); use --tp, fp8 or a "
                        "shorter context (those rows assume they fit)")
    inputs = dict(serving=setup.to_dict(), alpha=acc.alpha, rank_rates=_list(acc.rank_rates),
                  position_rates=_list(acc.position_rates), acceptance_source=acc.source,
                  rank_decay=None if acc.rank_rates is not None else RANK_DECAY,
                  topk_law=_law_echo(topk_law) if topk_law is not None else None,
                  max_num_spec_tokens=max_num_spec_tokens, topks=list(map(int, topks)),
                  max_tree_num_spec_tokens=max_tree_num_spec_tokens, samples=samples, seed=seed)
    return PlanSet(title=f"Serving plan: {setup.target.name} with a {setup.draft.params:.3g}-parameter draft on "
                         f"{setup.hardware.name} (tp={setup.tp})", plans=tuple(plans),
                   tables={"serving": table}, inputs=inputs, warnings=tuple(warnings))


def _list(values) -> list | None:
    """Floats of an array, or None."""
    return None if values is None else [float(v) for v in values]


def _serving_inputs(setup: ServingSetup, batch: int, acc: ServingAcceptance) -> dict:
    """Inputs echoed by a per-batch serving plan (the whole serving setup, hardware included)."""
    return dict(batch_size=int(batch), alpha=acc.alpha, serving=setup.to_dict())


def _chain_at(setup, batch, lengths, tau, acc, ar, level) -> tuple[Plan, dict]:
    """Best chain length (of ``lengths``) at one batch size: Plan and table-row fields."""
    speedup = chain_tokens_per_s(setup, tau, lengths, batch) / ar      # (1 + S, G)
    (g,), draw_best, speedup_ci = _pick(speedup, level)
    ci = _interval(lengths[draw_best[0]], level, discrete=True) if draw_best is not None else None
    c = float(setup.draft_time_s(batch, 1) / setup.target_time_s(batch, 1))
    leviathan = optimal_gamma_chain(acc.alpha, c, int(lengths.max()))  # Thm 3.8: verification assumed free
    plan = Plan(quantity="num_spec_tokens", value=int(lengths[g]), unit="draft tokens/step",
                objective=f"tokens/s (roofline, {setup.hardware.name}, batch {batch}, chain)", ci=ci,
                ci_kind=acc.ci_kind if ci else "no interval", speedup=float(speedup[0, g]), speedup_ci=speedup_ci,
                settings={"batch_size": int(batch), "num_spec_tokens": int(lengths[g]), "cost_ratio_c": c,
                          "leviathan_num_spec_tokens": leviathan},
                inputs=_serving_inputs(setup, batch, acc), level=level)
    row = dict(chain_num_spec_tokens=int(lengths[g]), chain_num_spec_tokens_lower=ci[0] if ci else np.nan,
               chain_num_spec_tokens_upper=ci[1] if ci else np.nan, cost_ratio_c=c,
               leviathan_num_spec_tokens=leviathan,
               chain_tokens_per_s=float(speedup[0, g] * ar), chain_speedup=float(speedup[0, g]),
               chain_speedup_lower=speedup_ci[0] if speedup_ci else np.nan,
               chain_speedup_upper=speedup_ci[1] if speedup_ci else np.nan)
    return plan, row


def _tree_at(setup, batch, topks, depths, tau, acc, ar, level) -> tuple[Plan, dict]:
    """Best top-k tree at one batch size: Plan and table-row fields."""
    speedup = tree_tokens_per_s(setup, tau, topks[:, None], depths[None, :], batch) / ar   # (1 + S, K, D)
    (k, d), draw_best, speedup_ci = _pick(speedup, level)
    ci = _interval(topks[draw_best[0]], level, discrete=True) if draw_best is not None else None
    topk, depth = int(topks[k]), int(depths[d])
    verify = topk * depth + 1
    memory_bound = bool(_verify_memory_bound(setup, batch, verify))
    plan = Plan(quantity="tree_topk", value=topk, unit="candidates/level",
                objective=f"tokens/s (roofline, {setup.hardware.name}, batch {batch}, top-k tree)", ci=ci,
                ci_kind=acc.ci_kind if ci else "no interval", speedup=float(speedup[0, k, d]), speedup_ci=speedup_ci,
                settings={"batch_size": int(batch), "num_spec_tokens": depth, "tree_topk": topk,
                          "tree_verify_tokens": verify, "verify_memory_bound": memory_bound},
                inputs=_serving_inputs(setup, batch, acc), level=level)
    row = dict(tree_num_spec_tokens=depth, tree_topk=topk, tree_topk_lower=ci[0] if ci else np.nan,
               tree_topk_upper=ci[1] if ci else np.nan, tree_verify_tokens=verify,
               tree_tokens_per_s=float(speedup[0, k, d] * ar), tree_speedup=float(speedup[0, k, d]),
               tree_speedup_lower=speedup_ci[0] if speedup_ci else np.nan,
               tree_speedup_upper=speedup_ci[1] if speedup_ci else np.nan, verify_memory_bound=memory_bound,
               fits_memory=bool(setup.fits(batch, verify)))
    return plan, row


#: A verification pass costing at most this multiple of a one-token decode pass counts as nearly free.
NEARLY_FREE_VERIFY = 1.25


def _verify_memory_bound(setup: ServingSetup, batch: int, verify_tokens: int) -> bool:
    """Whether verification is nearly free (memory-bound): the pass over ``verify_tokens`` per row costs at most
    :data:`NEARLY_FREE_VERIFY` times a one-token pass at the same batch, under the setup's cost model (the
    step-time law when one is set, which sees what a roofline's kink hides)."""
    ratio = setup.target_time_s(batch, verify_tokens) / setup.target_time_s(batch, 1)
    return bool(ratio <= NEARLY_FREE_VERIFY)


def _topk_law_predictions(law, batch_sizes, samples: int, seed: int, level: float) -> list[dict]:
    """A fitted ``topk_batch`` (``k* = c B^-p``) or ``topk_batch_sqrt`` (p = 1/2) law at each batch size,
    evaluated with the law's own function from :mod:`sdlaws.fit.laws`, with an interval from its draws."""
    spec = fit_laws.get_law(law.law)
    point = priors.law_params(law, spec.params, role=law.law)
    draws = priors.law_draws(law, spec.params, samples, seed, role=law.law)
    out = []
    for batch in batch_sizes:
        k_draws = spec.func(float(batch), **{n: draws[n].to_numpy() for n in spec.params})
        lo, hi = _interval(k_draws, level) if _has_spread(k_draws) else (np.nan, np.nan)
        out.append(dict(law_topk=float(spec.func(float(batch), **point.to_dict())), law_topk_lower=lo,
                        law_topk_upper=hi))
    return out


# --------------------------------------------------------------------------------------------- full plan

def draft_size_report(setup: ServingSetup, batch_sizes, *, plane=priors.SDSL_PLANE, loss=priors.CHINCHILLA_LOSS,
                      draft_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS,
                      target_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS, samples: int = 200, seed: int = 0,
                      level: float = LEVEL) -> PlanSet:
    """Draft size by SDSL tokens/FLOP and by roofline tokens/s per batch, plus N* versus target size M.

    Tables ``draft_size_vs_target`` (:func:`draft_size_table`) and ``draft_size_by_batch``; the first plan is the
    SDSL N*, then one roofline plan per batch size.
    """
    common = dict(plane=plane, loss=loss, draft_tokens=draft_tokens, target_tokens=target_tokens, samples=samples,
                  seed=seed, level=level)
    sdsl = optimal_draft_size(setup.target, **common)
    by_batch = draft_size_by_batch(setup, batch_sizes, **common)
    targets = sorted({*NSTAR_TABLE_TARGETS, setup.target.params})
    table = draft_size_table([setup.target if t == setup.target.params else t for t in targets], **common)
    batch_table = pd.DataFrame([dict(batch_size=p.inputs["batch_size"], draft_params=p.value,
                                     draft_params_lower=(p.ci or (np.nan, np.nan))[0],
                                     draft_params_upper=(p.ci or (np.nan, np.nan))[1],
                                     num_spec_tokens=p.settings["num_spec_tokens"], speedup=p.speedup)
                                for p in by_batch])
    objectives = (f"Two draft-size optima: the SDSL N* maximises tokens per FLOP (one target pass per step; no "
                  f"hardware), the roofline N* maximises tokens/s at each batch size on {setup.hardware.name}. "
                  "`sdlaws plan` and `sdlaws plan serving` serve the SDSL N* unless a draft is given.")
    return PlanSet(title=f"Draft size for {setup.target.name} ({setup.target.params:.3g} params)",
                   plans=(sdsl, *by_batch), tables={"draft_size_vs_target": table, "draft_size_by_batch": batch_table},
                   inputs=dict(_draft_inputs(setup.target, plane, loss, draft_tokens, target_tokens, samples, seed),
                               serving=setup.to_dict(), draft_size_objectives=objectives),
                   warnings=tuple(dict.fromkeys(w for p in (sdsl, *by_batch) for w in p.warnings)))


def sdsl_acceptance(draft_params: float, target_params: float, **kwargs) -> ServingAcceptance:
    """Serving acceptance of one draft size from the SDSL pipeline (:func:`sdsl_alpha`), with its draws."""
    acc = sdsl_alpha(draft_params, target_params, **kwargs)
    return ServingAcceptance(alpha=float(acc.point[0]), alpha_draws=acc.draws[:, 0], ci_kind=acc.ci_kind)


def full_plan(setup: ServingSetup, batch_sizes, *, plane=priors.SDSL_PLANE, loss=priors.CHINCHILLA_LOSS,
              draft_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS,
              target_tokens: float = priors.DEFAULT_PRETRAIN_TOKENS, acceptance: ServingAcceptance | None = None,
              topk_law=None, samples: int = 200, seed: int = 0, level: float = LEVEL) -> PlanSet:
    """:func:`draft_size_report` + :func:`serving_plan`.

    The served draft is ``setup.draft`` when given, else a draft of the SDSL N* (recorded in the serving plan's
    inputs); its acceptance is ``acceptance`` when given, else alpha from the SDSL pipeline at its size.
    """
    common = dict(plane=plane, loss=loss, draft_tokens=draft_tokens, target_tokens=target_tokens, samples=samples,
                  seed=seed)
    report = draft_size_report(setup, batch_sizes, level=level, **common)
    served = served_setup(setup, report.plans[0])
    acceptance = acceptance or sdsl_acceptance(served.draft.params, setup.target.params, **common)
    serving = serving_plan(served, batch_sizes, acceptance, topk_law=topk_law, samples=samples, seed=seed,
                           level=level)
    return report + replace(serving, inputs={**serving.inputs, "served_draft": _served_draft(
        report.plans[0], served.draft, given=setup.draft is not None)})


def served_setup(setup: ServingSetup, nstar: Plan | None) -> ServingSetup:
    """The setup that is served: ``setup`` when it has a draft (``nstar`` unused, may be None), else ``setup`` with
    a draft of the SDSL N* (``nstar``, a plan of :func:`optimal_draft_size`) built as a real architecture with the
    target's vocabulary."""
    return setup if setup.draft is not None else setup.with_draft(draft_like(setup.target, nstar.value))


def _served_draft(sdsl: Plan, draft: ModelShape, *, given: bool) -> str:
    """Which draft the serving plan serves: the given one, or the SDSL N* built as a real architecture."""
    if given:
        return (f"Draft served: the given {draft.name} ({draft.params:.3g} params); the draft-size tables show what "
                "the laws would choose instead.")
    return (f"Draft served: the SDSL N* ({sdsl.value:.3g} params), built as a {draft.params:.3g}-parameter "
            "architecture with the target's vocabulary; the roofline N* table is for comparison.")
