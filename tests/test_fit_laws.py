"""The law functions and the registry that drives fitting (sdlaws.fit.laws)."""

import inspect

import numpy as np
import pytest

from sdlaws.errors import ConfigError
from sdlaws.fit.laws import (LAWS, get_law, loglinear, ppl_plane, saturating, speedup_chain, topk_batch,
                             topk_batch_sqrt)
from sdlaws.rates import expected_tokens_chain


def test_known_values():
    assert loglinear(1000.0, 0.5, 1.0) == pytest.approx(2.5)
    assert saturating(4.0, 3.0, 2.0, 0.5) == pytest.approx(2.0)
    assert ppl_plane(20.0, 10.0, -0.0067, 0.01297, 0.642) == pytest.approx(0.642 - 0.134 + 0.1297)
    assert topk_batch(16.0, 8.0, 0.75) == pytest.approx(1.0)
    assert topk_batch_sqrt(16.0, 8.0) == pytest.approx(2.0)


def test_speedup_chain_matches_leviathan():
    # Thm 3.8 with c = 0 is Eq. 1; Cor 3.9: gamma = 1 gives (1 + alpha) / (1 + c).
    assert speedup_chain(0.8, 4, 0.0) == pytest.approx((1 - 0.8 ** 5) / 0.2)
    assert speedup_chain(0.6, 1, 0.05) == pytest.approx(1.6 / 1.05)
    np.testing.assert_allclose(speedup_chain(0.7, np.arange(1, 6), 0.0), expected_tokens_chain(0.7, np.arange(1, 6)))


@pytest.mark.parametrize("name", list(LAWS))
def test_spec_splits_signature_into_regressors_and_params(name):
    spec = LAWS[name]
    assert set(spec.x_args) | set(spec.params) == set(inspect.signature(spec.func).parameters)
    assert not set(spec.x_args) & set(spec.params)
    assert spec.fitter in ("ols", "nls") and spec.space in ("identity", "log")
    assert spec.fitter == "nls" or spec.starts is None
    assert len(spec.x) in (0, len(spec.x_args))


@pytest.mark.parametrize("name", [n for n, s in LAWS.items() if s.fitter == "ols"])
def test_ols_laws_are_linear_in_their_coefficients(name):
    spec = LAWS[name]
    rng = np.random.default_rng(3)
    X = rng.uniform(1.0, 100.0, size=(20, len(spec.x_args)))
    offset, design = spec.design(X)
    for _ in range(5):
        beta = rng.normal(size=len(spec.params))
        np.testing.assert_allclose(offset + design @ beta, spec.fit_value(X, beta), rtol=1e-12, atol=1e-12)


def test_evaluate_broadcasts_over_draws():
    spec = LAWS["loglinear"]
    draws = np.array([[1.0, 0.0], [2.0, 1.0]])
    x = np.array([[10.0], [100.0], [1000.0]])
    np.testing.assert_allclose(spec.evaluate(x, draws), [[1, 2, 3], [3, 5, 7]])


def test_nonlinear_jacobian_matches_analytic():
    spec = LAWS["saturating"]
    x = np.geomspace(1, 1e4, 9)[:, None]
    y_max, A, p = 3.0, 2.0, 0.4
    analytic = np.column_stack([np.ones(9), -x[:, 0] ** -p, A * x[:, 0] ** -p * np.log(x[:, 0])])
    np.testing.assert_allclose(spec.jacobian(x, np.array([y_max, A, p])), analytic, rtol=1e-7, atol=1e-9)


def test_log_params_round_trip():
    spec = LAWS["topk_batch"]
    params = np.array([[12.0, 0.5], [3.0, -0.2]])
    np.testing.assert_allclose(spec.from_coef(spec.to_coef(params)), params)
    assert spec.to_coef(params)[0, 0] == pytest.approx(np.log(12.0))


def test_unknown_law_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown law 'cubic'"):
        get_law("cubic")
