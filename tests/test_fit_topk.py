"""Optimal top-k from measurement rows, the topk laws, the Wald test of p = 1/2 and model comparison."""

import numpy as np
import pandas as pd
import pytest

from sdlaws.errors import InputError
from sdlaws.fit import compare, fit_law, fit_topk_batch, optimal_topk
from sdlaws.fit.laws import loglinear, saturating

BATCHES = 2.0 ** np.arange(9)
TOPKS = 2.0 ** np.arange(11)  # 1 .. 1024: every optimum below is interior


def _measurements(c: float, p: float, noise: float, seed: int = 0) -> pd.DataFrame:
    """tokens/s peaked (quadratic in log2 k) at k* = c*B^(-p), two repeats per (B, k), plus ar rows."""
    rng = np.random.default_rng(seed)
    b, k = (a.ravel() for a in np.meshgrid(BATCHES, TOPKS, indexing="ij"))
    b, k = np.repeat(b, 2), np.repeat(k, 2)
    peak = np.log2(c * b ** -p) + rng.normal(0, noise, len(b) // 2).repeat(2)  # per-(B, k) jitter of the optimum
    score = 1000.0 * b * (10.0 - (np.log2(k) - peak) ** 2)
    rows = pd.DataFrame({"batch_size": b, "tree_topk": k, "tokens_per_s": score, "method": "tree"})
    ar = pd.DataFrame({"batch_size": BATCHES, "tree_topk": 1.0, "tokens_per_s": 1e9, "method": "ar"})
    rows = pd.concat([rows, ar], ignore_index=True)
    return rows.assign(source_file="sweep.csv", source_row=np.arange(1, len(rows) + 1))


def test_optimal_topk_finds_the_vertex_and_ignores_ar_rows():
    best = optimal_topk(_measurements(c=32.0, p=0.5, noise=0.0))
    np.testing.assert_allclose(best["tree_topk"], 32.0 * BATCHES ** -0.5, rtol=1e-9)
    assert (best["num_k"] == len(TOPKS)).all()


def test_optimum_on_the_grid_edge_is_not_extrapolated():
    rows = pd.DataFrame({"batch_size": 1, "tree_topk": [1, 2, 4], "tokens_per_s": [3.0, 2.0, 1.0]})
    assert optimal_topk(rows)["tree_topk"].tolist() == [1.0]


def test_topk_fit_on_measurement_rows_recovers_the_exponent():
    fit = fit_topk_batch(_measurements(c=32.0, p=0.5, noise=0.1, seed=1))
    ci = fit.conf_int()
    assert ci.loc["p", "lower"] < 0.5 < ci.loc["p", "upper"]
    assert fit.params["c"] == pytest.approx(32.0, rel=0.15)
    assert fit.nobs == len(BATCHES)
    assert fit.meta["inputs"] == [{"file": "sweep.csv", "rows": f"1-{len(BATCHES) * len(TOPKS) * 2}"}]


def test_wald_test_of_p_half():
    kept = fit_topk_batch(_measurements(c=32.0, p=0.5, noise=0.1, seed=2))
    rejected = fit_topk_batch(_measurements(c=512.0, p=1.0, noise=0.1, seed=2))
    assert kept.gof["wald_p_eq_0.5_pvalue"] > 0.05
    assert rejected.gof["wald_p_eq_0.5_pvalue"] < 1e-6


def test_likelihood_ratio_matches_wald_for_nested_topk_laws():
    rows = _measurements(c=256.0, p=0.8, noise=0.2, seed=3)
    free, fixed = fit_topk_batch(rows), fit_topk_batch(rows, p_free=False)
    table = compare([free, fixed])
    row = table.loc["topk_batch_sqrt"]
    assert row["lr_vs"] == "topk_batch" and row["lr_df"] == 1
    # Gaussian linear models: LR = n log(1 + t^2 / dof) exactly, t the Wald statistic.
    t, n, dof = free.gof["wald_p_eq_0.5_t"], free.nobs, free.gof["dof"]
    assert row["lr_stat"] == pytest.approx(n * np.log1p(t ** 2 / dof), rel=1e-9)
    assert np.isnan(table.loc["topk_batch", "lr_stat"])
    assert table["akaike_weight"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("truth,preferred", [("saturating", "saturating"), ("loglinear", "loglinear")])
def test_aic_prefers_the_law_that_generated_the_data(truth, preferred):
    rng = np.random.default_rng(4)
    x = np.geomspace(1e8, 1e12, 40)
    mean = saturating(x / 1e8, 4.0, 2.0, 0.8) if truth == "saturating" else loglinear(x, 0.4, -1.0)
    rows = pd.DataFrame({"x": x, "y": mean + rng.normal(0, 0.03, len(x))})
    table = compare([fit_law(rows, law, x="x", y="y") for law in ("loglinear", "saturating")])
    assert table["delta_aic"].idxmin() == preferred


def test_compare_refuses_fits_to_different_rows():
    rows = pd.DataFrame({"x": np.arange(1.0, 9.0), "y": np.arange(1.0, 9.0) ** 0.5})
    with pytest.raises(InputError, match="same rows"):
        compare([fit_law(rows, "linear", x="x", y="y"), fit_law(rows.iloc[:6], "power", x="x", y="y")])
