"""Estimators against outside references: statsmodels OLS/WLS, scipy curve_fit, explicit bootstrap refits."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.optimize import curve_fit

from sdlaws.fit import fit_law, get_law
from sdlaws.fit.bootstrap import bootstrap_linear, resample_counts
from sdlaws.fit.laws import saturating


@pytest.fixture
def acceptance_rows():
    rng = np.random.default_rng(7)
    tokens = 10 ** rng.uniform(8, 12, 25)
    return pd.DataFrame({"draft_pretrain_tokens": tokens,
                         "mean_acceptance_length": 0.35 * np.log10(tokens) - 0.8 + rng.normal(0, 0.05, 25)})


def test_loglinear_equals_statsmodels_ols_on_log10_x(acceptance_rows):
    fit = fit_law(acceptance_rows, "loglinear", weight=None)
    exog = sm.add_constant(np.log10(acceptance_rows["draft_pretrain_tokens"].to_numpy()), prepend=False)
    ref = sm.OLS(acceptance_rows["mean_acceptance_length"].to_numpy(), exog).fit()
    np.testing.assert_allclose(fit.params, ref.params, rtol=1e-10)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.cov)), ref.bse, rtol=1e-10)
    np.testing.assert_allclose(fit.conf_int(0.1).to_numpy(), ref.conf_int(0.1), rtol=1e-10)
    for key, value in {"llf": ref.llf, "aic": ref.aic, "bic": ref.bic, "r2": ref.rsquared}.items():
        assert fit.gof[key] == pytest.approx(value, rel=1e-10)
    new = np.array([3e8, 2e11])
    frame = ref.get_prediction(sm.add_constant(np.log10(new), prepend=False)).summary_frame(alpha=0.05)
    mine = fit.predict(new)
    for col in ["mean", "mean_ci_lower", "mean_ci_upper", "obs_ci_lower", "obs_ci_upper"]:
        np.testing.assert_allclose(mine[col], frame[col], rtol=1e-10)


def test_weighted_plane_equals_statsmodels_wls():
    rng = np.random.default_rng(2)
    n = 30
    df = pd.DataFrame({"draft_ppl": rng.uniform(10, 40, n), "target_ppl": rng.uniform(5, 15, n),
                       "num_draft_tokens": rng.integers(500, 5000, n)})
    df["alpha_mle"] = ppl = (-0.0067 * df.draft_ppl + 0.013 * df.target_ppl + 0.642
                             + rng.normal(0, 1, n) * 0.5 / np.sqrt(df.num_draft_tokens))
    fit = fit_law(df, "ppl_plane")  # weight="auto" picks num_draft_tokens for alpha_mle
    ref = sm.WLS(ppl, sm.add_constant(df[["draft_ppl", "target_ppl"]], prepend=False),
                 weights=df.num_draft_tokens).fit()
    assert fit.method == "wls" and fit.meta["weight"] == "num_draft_tokens"
    np.testing.assert_allclose(fit.params, ref.params, rtol=1e-10)
    np.testing.assert_allclose(fit.cov.to_numpy(), ref.cov_params().to_numpy(), rtol=1e-10)
    assert fit.gof["r2"] == pytest.approx(ref.rsquared, rel=1e-10)


def test_power_law_is_ols_in_log_space_with_y_scale_likelihood():
    rng = np.random.default_rng(4)
    x = np.geomspace(1, 1e3, 20)
    y = 3.0 * x ** 0.6 * np.exp(rng.normal(0, 0.1, 20))
    fit = fit_law(pd.DataFrame({"x": x, "y": y}), "power", x="x", y="y")
    ref = sm.OLS(np.log(y), sm.add_constant(np.log(x))).fit()
    assert fit.params["c"] == pytest.approx(np.exp(ref.params[0]), rel=1e-10)
    assert fit.params["p"] == pytest.approx(ref.params[1], rel=1e-10)
    np.testing.assert_allclose(fit.conf_int().loc["c"], np.exp(ref.conf_int()[0]), rtol=1e-10)
    np.testing.assert_allclose(fit.conf_int().loc["p"], ref.conf_int()[1], rtol=1e-10)
    # density of y = density of log y / y
    assert fit.gof["llf"] == pytest.approx(ref.llf - np.sum(np.log(y)), rel=1e-10)


def test_saturating_equals_curve_fit():
    rng = np.random.default_rng(5)
    x = np.geomspace(1, 1e3, 30)
    y = saturating(x, 4.0, 2.5, 0.5) + rng.normal(0, 0.03, 30)
    fit = fit_law(pd.DataFrame({"x": x, "y": y}), "saturating", x="x", y="y")
    popt, pcov = curve_fit(saturating, x, y, p0=[4, 2, 0.4])
    np.testing.assert_allclose(fit.params, popt, rtol=1e-5)
    # curve_fit uses a 2-point Jacobian, ours is central: agree to ~1e-3 of the largest entry
    np.testing.assert_allclose(fit.cov.to_numpy(), pcov, rtol=1e-3, atol=1e-3 * np.abs(pcov).max())


def test_vectorised_bootstrap_equals_refitting_duplicated_rows():
    rng = np.random.default_rng(6)
    n = 40
    design = np.column_stack([rng.uniform(8, 12, n), np.ones(n)])
    z = design @ [0.3, -1.0] + rng.normal(0, 0.1, n)
    w = rng.uniform(0.5, 2.0, n)
    units = np.repeat(np.arange(10), 4)  # 10 units of 4 rows
    draws, failed = bootstrap_linear(design, z, w, units, 5, seed=11)
    counts = next(resample_counts(units, 5, seed=11))
    assert failed == 0
    for r in range(5):
        rows = np.repeat(np.arange(n), counts[r].astype(int))
        ref = sm.WLS(z[rows], design[rows], weights=w[rows]).fit()
        np.testing.assert_allclose(draws[r], ref.params, rtol=1e-9)


def test_crossed_factors_multiply_the_draws_of_each_factor():
    drafts, targets = np.repeat(np.arange(3), 2), np.tile(np.arange(2), 3)
    w = np.concatenate(list(resample_counts(np.stack([drafts, targets]), 200, 0)))
    # every resample draws 3 drafts and 2 targets, so the rows' weights add up to 3 x 2
    assert w.shape == (200, 6) and np.allclose(w.sum(axis=1), 6) and w.std(axis=0).min() > 0
    by_draft = np.stack([w[:, drafts == d].sum(axis=1) for d in range(3)], axis=1)
    by_target = np.stack([w[:, targets == t].sum(axis=1) for t in range(2)], axis=1)
    assert np.allclose(by_draft.sum(axis=1), by_target.sum(axis=1))
    # a row carries its draft's draw times its target's draw, so cross products match
    assert np.allclose(w[:, 0] * w[:, 3], w[:, 1] * w[:, 2])   # (d0,t0)(d1,t1) = (d0,t1)(d1,t0)


def _pigeonhole(codes, n_boot, seed):
    """The crossed-factor draws the committed results were computed with: every resample of the first factor,
    then of the next, from one generator."""
    rng = np.random.default_rng(seed)
    weights = np.ones((n_boot, len(codes[0])))
    for code in codes:
        k = int(code.max()) + 1
        picks = rng.integers(0, k, size=(n_boot, k)) + k * np.arange(n_boot)[:, None]
        weights *= np.bincount(picks.ravel(), minlength=n_boot * k).reshape(n_boot, k)[:, code]
    return weights


@pytest.mark.parametrize("chunk_cells", [2_000_000, 60])
def test_crossed_draws_do_not_depend_on_the_chunk_size(monkeypatch, chunk_cells):
    from sdlaws.fit import bootstrap

    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", chunk_cells)   # 60 cells: 10 resamples of 6 rows per chunk
    codes = np.stack([np.repeat(np.arange(3), 2), np.tile(np.arange(2), 3)])
    chunks = list(resample_counts(codes, 200, 4))
    assert len(chunks) == (1 if chunk_cells > 1200 else 20)
    np.testing.assert_array_equal(np.concatenate(chunks), _pigeonhole(codes, 200, 4))
    # one factor in one chunk: the same draws as one factor of the crossed scheme
    np.testing.assert_array_equal(np.concatenate(list(resample_counts(codes[0], 7, 4))),
                                  _pigeonhole(codes[:1], 7, 4))


def test_resamples_take_whole_units_and_are_seeded():
    units = np.repeat(np.arange(6), 3)
    first = np.concatenate(list(resample_counts(units, 50, seed=1)))
    again = np.concatenate(list(resample_counts(units, 50, seed=1)))
    np.testing.assert_array_equal(first, again)
    assert (first.reshape(50, 6, 3) == first.reshape(50, 6, 3)[:, :, :1]).all()  # rows of a unit move together
    assert (first.sum(axis=1) == 18).all()  # as many units as there are, with replacement


def test_design_of_topk_sqrt_has_offset():
    spec = get_law("topk_batch_sqrt")
    offset, design = spec.design(np.array([[4.0], [16.0]]))
    np.testing.assert_allclose(offset, -0.5 * np.log([4.0, 16.0]))
    np.testing.assert_allclose(design, [[1.0], [1.0]])


def test_unit_columns_parse_and_every_fitted_row_needs_a_unit():
    from sdlaws.errors import InputError
    from sdlaws.fit import fit_law

    rng = np.random.default_rng(2)
    df = pd.DataFrame({"x": np.geomspace(1e6, 1e9, 24), "d": np.repeat(list("abcdef"), 4),
                       "t": np.tile(list("uvwx"), 6), "a,b": np.repeat(np.arange(8), 3)})
    df["y"] = 0.3 * np.log10(df["x"]) + rng.normal(0, 0.05, len(df))
    crossed = fit_law(df, "loglinear", x="x", y="y", weight=None, unit="d, t", n_boot=50)   # spaces ignored
    listed = fit_law(df, "loglinear", x="x", y="y", weight=None, unit=["d", "t"], n_boot=50)
    pd.testing.assert_frame_equal(crossed.draws, listed.draws)
    comma = fit_law(df, "loglinear", x="x", y="y", weight=None, unit="a,b", n_boot=50)   # a column's own name
    assert not comma.draws.equals(crossed.draws)
    with pytest.raises(InputError, match="names a column twice"):
        fit_law(df, "loglinear", x="x", y="y", weight=None, unit="d,d", n_boot=50)
    with pytest.raises(InputError, match="unit column 't' is empty in 2 of the 24 rows"):
        fit_law(df.assign(t=df["t"].mask(df.index < 2)), "loglinear", x="x", y="y", weight=None, unit="d,t",
                n_boot=50)
