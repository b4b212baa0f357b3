"""Leviathan closed forms, tokens/FLOP, and the top-k tree acceptance model (sdlaws.plan.speedup)."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from sdlaws.errors import ConfigError
from sdlaws.plan.speedup import (_lambert_wm1_log, expected_tokens_chain, expected_tokens_positions,
                                 expected_tokens_tree, gamma_star_closed_form, level_acceptance, optimal_gamma_chain,
                                 rank_rates_from_alpha, rank_rates_from_shares, tokens_per_flop,
                                 walltime_speedup_chain)

ALPHAS = np.linspace(0.05, 0.95, 19)
COSTS = np.array([1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5])


def test_corollary_3_9_lower_bound_holds_and_is_attained_at_gamma_1():
    for alpha in ALPHAS:
        for c in COSTS[COSTS < alpha]:
            bound = (1 + alpha) / (1 + c)
            assert walltime_speedup_chain(alpha, 1, c) == pytest.approx(bound)
            best = walltime_speedup_chain(alpha, optimal_gamma_chain(alpha, c), c)
            assert best >= bound - 1e-12 and bound > 1.0


# Table of docs/formulas.md#optimal-gamma: (alpha, c) -> continuous gamma* from the closed form (brute force agrees
# to ~0.01).
CLOSED_FORM_TABLE = [((0.7, 0.005), 11.153), ((0.8, 0.05), 7.857), ((0.6, 0.01), 6.866), ((0.9, 0.1), 9.646),
                     ((0.5, 1e-4), 11.761)]


@pytest.mark.parametrize("args, expected", CLOSED_FORM_TABLE)
def test_closed_form_matches_table_and_brute_force(args, expected):
    alpha, c = args
    closed = gamma_star_closed_form(alpha, c)
    assert closed == pytest.approx(expected, abs=2e-3)
    brute = minimize_scalar(lambda g: -walltime_speedup_chain(alpha, g, c), bounds=(0, 60), method="bounded",
                            options={"xatol": 1e-8}).x
    assert closed == pytest.approx(brute, abs=1e-3)
    # The integer optimum found numerically (Leviathan §3.5) is the better of floor / ceil of gamma*.
    lo, hi = int(np.floor(closed)), int(np.ceil(closed))
    better = lo if walltime_speedup_chain(alpha, lo, c) >= walltime_speedup_chain(alpha, hi, c) else hi
    assert optimal_gamma_chain(alpha, c) == better


def test_lambert_log_form_agrees_with_scipy_where_both_work():
    from scipy.special import lambertw

    for s in (-5.0, -50.0, -600.0):
        assert _lambert_wm1_log(s) == pytest.approx(float(np.real(lambertw(-np.exp(s), k=-1))), rel=1e-10)


def test_closed_form_rejects_impossible_inputs():
    with pytest.raises(ConfigError):
        gamma_star_closed_form(0.7, 0.0)


def test_tokens_per_flop_over_ar_is_theorem_3_8_with_flop_ratio():
    n, m = 3e8, 7e10
    for alpha in (0.5, 0.7):
        for gamma in (1, 5, 10):
            ratio = tokens_per_flop(alpha, gamma, n, m) * 2 * m
            assert ratio == pytest.approx(walltime_speedup_chain(alpha, gamma, n / m))


def test_position_rates_reduce_to_chain_when_constant():
    assert expected_tokens_positions([0.7] * 5) == pytest.approx(float(expected_tokens_chain(0.7, 5)))


def test_tree_model():
    rates = rank_rates_from_alpha(0.6, 8)
    assert level_acceptance(rates, 1) == pytest.approx(0.6)
    assert expected_tokens_tree(rates, 1, 4) == pytest.approx(float(expected_tokens_chain(0.6, 4)))
    levels = level_acceptance(rates, np.array([1, 2, 4, 8]))
    assert np.all(np.diff(levels) > 0) and levels[-1] < 1
    with pytest.raises(ConfigError):
        level_acceptance(rates, 9)


def test_rank_shares_round_trip():
    shares = np.array([0.55, 0.15, 0.06, 0.02])  # Sequoia-style: share of levels won by each rank
    conditional = rank_rates_from_shares(shares)
    for k in range(1, 5):
        assert level_acceptance(conditional, k) == pytest.approx(shares[:k].sum())
    with pytest.raises(ConfigError):
        rank_rates_from_shares([0.7, 0.5])
