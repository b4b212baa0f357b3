"""Speculative throughput: expected tokens per step, speedup, tokens per FLOP and tokens per second.

Chain tau comes from :mod:`sdlaws.rates` (``expected_tokens_chain``: Leviathan Eq. 1; ``expected_tokens_positions``:
from per-position conditional rates) and the batch-1 speedup from :mod:`sdlaws.fit.laws` (``speedup_chain``, Leviathan
Thm 3.8, here ``walltime_speedup_chain``); all are re-exported. Symbols follow the papers (alpha, gamma, c, tau;
docs/formulas.md). Chain formulas are Leviathan et al. 2023
(arXiv 2211.17192) [P]; the Lambert-W closed form, the tokens-per-FLOP form and the tree model are [R].

Tree model (documented assumption, [R]): a tree of ``depth`` levels keeps ``topk`` candidates for the next token
at every level of the accepted path; ranked candidates are tried in order, candidate r being accepted with
conditional rate ``c_r`` given that ranks < r were rejected. A level is then accepted with
``a(k) = 1 - prod_{r<=k} (1 - c_r)`` and, levels being i.i.d., ``tau = (1 - a^(depth+1)) / (1 - a)``: Leviathan's
Eq. 1 with alpha replaced by a(k). It is an idealisation (EAGLE-2/SGLang keep the k best nodes per level across
branches, not k children of the accepted node), so it is an upper bound on tau for a given (k, depth).
"""

from __future__ import annotations

import numpy as np

from sdlaws.errors import ConfigError
from sdlaws.fit.laws import speedup_chain as walltime_speedup_chain  # Leviathan Thm 3.8 (batch 1, free verification)
from sdlaws.rates import expected_tokens_chain, expected_tokens_positions
from sdlaws.plan.setup import ServingSetup

__all__ = ["RANK_DECAY", "ar_tokens_per_s", "chain_tokens_per_s", "expected_tokens_chain",
           "expected_tokens_positions", "expected_tokens_tree", "gamma_star_closed_form", "level_acceptance",
           "optimal_gamma_chain", "rank_rates_from_alpha", "rank_rates_from_shares", "tokens_per_flop",
           "tree_tokens_per_s", "walltime_speedup_chain"]

# Default decay of conditional rank acceptance, c_r = alpha * RANK_DECAY^(r-1) [R assumption]: rank 2 is accepted
# half as often as rank 1 when rank 1 fails, rank 3 a quarter as often... Replace it by measured rank rates
# (Sequoia-style acceptance vector, ``rank_rates_from_shares``) whenever they exist.
RANK_DECAY = 0.5


def optimal_gamma_chain(alpha: float, c: float, gamma_max: int = 64) -> int:
    """Integer argmax over 1..gamma_max of Leviathan Thm 3.8 (Leviathan §3.5: "easily found numerically")."""
    gammas = np.arange(1, gamma_max + 1)
    return int(gammas[np.argmax(walltime_speedup_chain(alpha, gammas, c))])


def gamma_star_closed_form(alpha: float, c: float) -> float:
    """Continuous maximiser of Thm 3.8 via Lambert W (docs/formulas.md#optimal-gamma) [R].

    ``L = ln(1/alpha)``, ``s = L - 1 - L/c``; ``gamma* = (-1 - W_{-1}(-e^s)) / L - 1/c``, clamped at 0. For tiny c,
    ``-e^s`` underflows, so ``W_{-1}`` is then found from its log form ``w + ln(-w) = s`` (w < -1) by Newton.
    Evaluate the integer neighbours ``floor`` / ``ceil`` for the integer optimum.
    """
    if not (0.0 < alpha < 1.0 and 0.0 < c < 1.0):
        raise ConfigError(f"closed-form gamma* needs 0 < alpha < 1 and 0 < c < 1 (got alpha={alpha}, c={c})")
    L = np.log(1.0 / alpha)
    s = L - 1.0 - L / c
    if s > -700.0:  # exp(s) is representable
        from scipy.special import lambertw

        w = float(np.real(lambertw(-np.exp(s), k=-1)))
    else:
        w = _lambert_wm1_log(s)
    return max(0.0, (-1.0 - w) / L - 1.0 / c)


def _lambert_wm1_log(s: float, iterations: int = 50) -> float:
    """Solve ``w + ln(-w) = s`` for w < -1 (the -1 branch of W at -e^s) by Newton from ``s - ln(-s)``."""
    w = s - np.log(-s)
    for _ in range(iterations):
        step = (w + np.log(-w) - s) / (1.0 + 1.0 / w)
        w -= step
        if abs(step) < 1e-13 * abs(w):
            break
    return float(w)


def tokens_per_flop(alpha, gamma, draft_params, target_params):
    """SDSL-style throughput ``Theta = tau / (2 N gamma + 2 M)`` tokens/FLOP (docs/formulas.md#tokens-per-flop) [R].

    Charges ``2N`` FLOPs per drafted token and one target pass ``2M`` per step (the memory-bound "parallel
    verification is free" regime); ``Theta / Theta_AR`` equals Thm 3.8 with ``c = N / M``.
    """
    gamma = np.asarray(gamma, dtype=float)
    flops_per_step = 2.0 * np.asarray(draft_params) * gamma + 2.0 * np.asarray(target_params)
    return expected_tokens_chain(alpha, gamma) / flops_per_step


def rank_rates_from_alpha(alpha, max_rank: int, decay: float = RANK_DECAY) -> np.ndarray:
    """Conditional rank acceptance ``c_r = alpha * decay^(r-1)``, r = 1..max_rank (default assumption, [R]).

    Broadcasts: ``alpha`` of shape (S,) gives (S, max_rank).
    """
    return np.asarray(alpha, dtype=float)[..., None] * decay ** np.arange(max_rank)


def rank_rates_from_shares(shares) -> np.ndarray:
    """Conditional rank rates from a Sequoia-style acceptance vector.

    ``shares[r]`` = fraction of tree levels whose accepted token was the (r+1)-th ranked candidate (mutually
    exclusive, summing to <= 1), e.g. ``num_accepted_per_rank`` over levels attempted. Then
    ``c_r = shares[r] / (1 - sum_{j<r} shares[j])``.
    """
    shares = np.asarray(shares, dtype=float)
    if shares.ndim != 1 or (shares < 0).any() or shares.sum() > 1.0 + 1e-9:
        raise ConfigError(f"rank acceptance shares (--rank-acceptance) must be >= 0 and sum to <= 1 (share of "
                          f"levels won by each rank), got {shares.tolist()}")
    before = 1.0 - np.concatenate([[0.0], np.cumsum(shares)[:-1]])
    return np.divide(shares, before, out=np.zeros_like(shares), where=before > 0)


def level_acceptance(rank_rates, topk):
    """``a(k) = 1 - prod_{r<=k} (1 - c_r)``: a tree level is accepted by one of its top-k candidates.

    ``rank_rates`` has ranks on the last axis, shape (..., R); ``topk`` is an int or a 1-D array of K values,
    giving shape (...) or (..., K).
    """
    rates = np.asarray(rank_rates, dtype=float)
    reject = np.cumprod(1.0 - rates, axis=-1)  # (..., R): P(ranks 1..r all rejected)
    topk = np.asarray(topk, dtype=int)
    if (topk < 1).any() or (topk > rates.shape[-1]).any():
        raise ConfigError(f"topk must be in 1..{rates.shape[-1]} (number of rank rates given)")
    return 1.0 - np.take(reject, topk - 1, axis=-1)


def expected_tokens_tree(rank_rates, topk, depth):
    """tau of a top-k tree of ``depth`` levels: Eq. 1 with alpha -> a(k) (module docstring)."""
    return expected_tokens_chain(level_acceptance(rank_rates, topk), depth)


def ar_tokens_per_s(setup: ServingSetup, batch_size):
    """Autoregressive decode tokens/s: ``B / t_target(B, 1)``."""
    return np.asarray(batch_size, dtype=float) / setup.target_time_s(batch_size, 1)


def chain_tokens_per_s(setup: ServingSetup, tau, gamma, batch_size):
    """Chain tokens/s ``B * tau / (gamma * t_draft(B) + t_verify(B, gamma + 1))``."""
    return np.asarray(batch_size, dtype=float) * np.asarray(tau) / setup.chain_step_time_s(batch_size, gamma)


def tree_tokens_per_s(setup: ServingSetup, tau, topk, depth, batch_size):
    """Tree tokens/s ``B * tau / (depth * t_draft(B, topk) + t_verify(B, topk * depth + 1))``."""
    return np.asarray(batch_size, dtype=float) * np.asarray(tau) / setup.tree_step_time_s(batch_size, topk, depth)
