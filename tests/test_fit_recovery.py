"""Parameter recovery for every law, and calibration of the 95% intervals over many simulated datasets."""

import numpy as np
import pandas as pd
import pytest

from sdlaws.fit import LAWS, fit_law
from sdlaws.fit.laws import loglinear

ALPHA = 0.05
N_SIMS = 400  # datasets per coverage check; the binomial SD of a 95% coverage estimate is then 1.1 points


def _simulate(name: str, truth: dict[str, float], x: dict[str, np.ndarray], noise: float, seed: int) -> pd.DataFrame:
    """Rows ``x`` plus y from law ``name`` at ``truth`` with Gaussian noise in the law's fit space."""
    spec = LAWS[name]
    rng = np.random.default_rng(seed)
    X = np.column_stack([x[c] for c in spec.x_args])
    mean = spec.to_space(spec.evaluate(X, np.array([truth[p] for p in spec.params])))
    return pd.DataFrame({**x, "y": spec.from_space(mean + rng.normal(0.0, noise, len(X)))})


def _designs(seed: int = 0) -> dict[str, tuple[dict, dict, float]]:
    """law -> (true parameters, regressor columns, noise SD in the fit space)."""
    rng = np.random.default_rng(seed)
    batch = np.repeat(2.0 ** np.arange(9), 2)
    gamma = np.repeat(np.arange(1.0, 9.0), 4)
    return {
        "loglinear": ({"a": 0.4, "b": -1.0}, {"x": np.geomspace(1e8, 1e12, 30)}, 0.05),
        "saturating": ({"y_max": 4.0, "A": 2.5, "p": 0.5}, {"x": np.geomspace(1, 1e3, 40)}, 0.05),
        "ppl_plane": ({"A": -0.0067, "B": 0.013, "C": 0.642},
                      {"ppl_draft": rng.uniform(10, 40, 40), "ppl_target": rng.uniform(5, 15, 40)}, 0.03),
        "ppl_plane_log": ({"A": -0.3, "B": 0.14, "C": 1.28},
                          {"ppl_draft": rng.uniform(7, 40, 40), "ppl_target": rng.uniform(4, 8, 40)}, 0.03),
        "topk_batch": ({"c": 16.0, "p": 0.5}, {"batch_size": batch}, 0.1),
        "topk_batch_sqrt": ({"c": 16.0}, {"batch_size": batch}, 0.1),
        "linear": ({"a": 2.71e-3, "b": 8.71e7}, {"x": np.geomspace(1e9, 1e11, 12)}, 5e6),
        "power": ({"c": 3.0, "p": 0.7}, {"x": np.geomspace(1, 1e4, 20)}, 0.1),
        "tau_chain": ({"alpha": 0.75}, {"gamma": gamma}, 0.1),
        "speedup_chain": ({"alpha": 0.8, "c": 0.05}, {"gamma": gamma}, 0.05),
    }


def _fit(name: str, df: pd.DataFrame, **kwargs):
    return fit_law(df, name, x=list(LAWS[name].x_args), y="y", **kwargs)


def test_every_law_has_a_recovery_design():
    assert set(_designs()) == set(LAWS)


@pytest.mark.parametrize("name", list(LAWS))
def test_parameter_recovery(name):
    truth, x, noise = _designs()[name]
    fit = _fit(name, _simulate(name, truth, x, noise / 10, seed=1))
    se = np.sqrt(np.diag(fit.cov))
    for (param, value), err in zip(truth.items(), se):
        assert abs(fit.params[param] - value) < 4 * err, (param, fit.params[param], value, err)
        assert fit.params[param] == pytest.approx(value, rel=0.05, abs=1e-3 * abs(value) + 1e-12)


@pytest.mark.parametrize("name", ["loglinear", "ppl_plane", "topk_batch", "saturating"])
def test_confidence_intervals_cover_the_truth_95_percent(name):
    truth, x, noise = _designs()[name]
    hits = np.zeros(len(truth))
    for seed in range(N_SIMS):
        ci = _fit(name, _simulate(name, truth, x, noise, seed)).conf_int(ALPHA)
        hits += [(ci.loc[p, "lower"] <= v <= ci.loc[p, "upper"]) for p, v in truth.items()]
    coverage = dict(zip(truth, hits / N_SIMS))
    assert all(0.91 <= c <= 0.99 for c in coverage.values()), coverage


def test_bootstrap_intervals_are_calibrated():
    truth, x, noise = {"a": 0.4, "b": -1.0}, {"x": np.geomspace(1e8, 1e12, 60)}, 0.05
    hits = np.zeros(2)
    n_sims = 200
    for seed in range(n_sims):
        ci = _fit("loglinear", _simulate("loglinear", truth, x, noise, seed), n_boot=300, seed=seed).conf_int(ALPHA)
        hits += [(ci.loc[p, "lower"] <= v <= ci.loc[p, "upper"]) for p, v in truth.items()]
    assert all(0.91 <= h / n_sims <= 0.99 for h in hits), hits / n_sims


def test_unit_bootstrap_covers_when_rows_within_a_unit_are_correlated():
    # 30 draft models (units) x 5 prompt sets: each model has its own offset, so its 5 rows are not independent.
    # Row-level t intervals then undercover; resampling whole models restores the level.
    n_models, per_model, n_sims = 30, 5, 150
    tokens = np.repeat(np.geomspace(1e8, 1e12, n_models), per_model)
    units = np.repeat(np.arange(n_models), per_model)
    naive, clustered = 0, 0
    for seed in range(n_sims):
        rng = np.random.default_rng(seed)
        y = loglinear(tokens, 0.4, -1.0) + rng.normal(0, 0.1, n_models)[units] + rng.normal(0, 0.02, len(units))
        df = pd.DataFrame({"x": tokens, "y": y, "model": units})
        naive += _covers(fit_law(df, "loglinear", x="x", y="y"), "a", 0.4)
        clustered += _covers(fit_law(df, "loglinear", x="x", y="y", unit="model", n_boot=300, seed=seed), "a", 0.4)
    assert naive / n_sims < 0.85
    assert 0.90 <= clustered / n_sims <= 0.99


def _covers(fit, param: str, value: float) -> bool:
    ci = fit.conf_int(ALPHA).loc[param]
    return bool(ci["lower"] <= value <= ci["upper"])
