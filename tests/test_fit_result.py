"""FitResult: intervals, predictions, draws, summary and the JSON round trip through load_fit."""

import json

import numpy as np
import pandas as pd
import pytest

from sdlaws import load_fit, load_fits
from sdlaws.errors import InputError
from sdlaws.fit import FitResult, fit_law, fit_law_by, save_fits
from sdlaws.fit.laws import saturating


@pytest.fixture
def rows():
    rng = np.random.default_rng(0)
    layers = np.repeat(np.arange(1.0, 11.0), 3)
    return pd.DataFrame({"draft_layers": layers, "prompt_set": np.tile(["mt", "code", "math"], 10),
                         "mean_acceptance_length": 1.2 * np.log10(layers) + 2.0 + rng.normal(0, 0.05, 30),
                         "sat": saturating(layers, 3.0, 1.5, 0.8) + rng.normal(0, 0.02, 30)})


def _fits(rows):
    common = dict(x="draft_layers")
    return {"ols": fit_law(rows, "loglinear", **common),
            "bootstrap": fit_law(rows, "loglinear", unit="prompt_set", n_boot=200, seed=3, **common),
            "nls": fit_law(rows, "saturating", y="sat", **common)}


@pytest.mark.parametrize("kind", ["ols", "bootstrap", "nls"])
def test_json_round_trip_gives_identical_predictions(rows, kind, tmp_path):
    fit = _fits(rows)[kind]
    path = fit.save(tmp_path / "fit.json")
    back = load_fit(path)
    x = np.array([1.5, 4.0, 12.0])
    with pytest.warns(UserWarning, match="outside the fitted range"):
        expected = fit.predict(x)
    with pytest.warns(UserWarning):
        pd.testing.assert_frame_equal(back.predict(x), expected, check_exact=True)
    pd.testing.assert_frame_equal(back.conf_int(), fit.conf_int(), check_exact=True)
    assert back.method == fit.method and back.meta == json.loads(json.dumps(fit.meta))


def test_grouped_file_loads_as_dict_by_group(rows, tmp_path):
    fits = fit_law_by(rows, "loglinear", "prompt_set", x="draft_layers")
    back = load_fits(save_fits(fits, "prompt_set", tmp_path / "fits.json"))
    assert set(back) == {"mt", "code", "math"}
    for name, fit in fits.items():
        pd.testing.assert_frame_equal(back[name].predict([2.0, 5.0]), fit.predict([2.0, 5.0]), check_exact=True)
        assert back[name].group == name and fit.nobs == 10


def test_bands_nest_and_bootstrap_intervals_are_percentiles(rows):
    fits = _fits(rows)
    band = fits["ols"].predict(pd.DataFrame({"draft_layers": [2.0, 8.0]}))
    assert (band.obs_ci_lower < band.mean_ci_lower).all() and (band.mean_ci_lower < band["mean"]).all()
    assert (band["mean"] < band.mean_ci_upper).all() and (band.mean_ci_upper < band.obs_ci_upper).all()
    boot = fits["bootstrap"]
    np.testing.assert_allclose(boot.conf_int(0.1)["lower"], boot.draws.quantile(0.05))
    assert boot.method == "bootstrap" and len(boot.draws) + boot.meta["bootstrap_failed"] == 200


def test_wider_level_gives_wider_intervals(rows):
    fit = _fits(rows)["ols"]
    narrow, wide = fit.conf_int(0.1), fit.conf_int(0.01)
    assert (wide["lower"] < narrow["lower"]).all() and (wide["upper"] > narrow["upper"]).all()


def test_sample_uses_draws_or_the_normal_approximation(rows):
    fits = _fits(rows)
    normal = fits["ols"].sample(20_000, seed=1)
    np.testing.assert_allclose(normal.mean(), fits["ols"].params, rtol=0.01)
    np.testing.assert_allclose(normal.cov(), fits["ols"].cov, rtol=0.05)
    boot = fits["bootstrap"].sample(50, seed=2)
    assert boot.apply(tuple, axis=1).isin(fits["bootstrap"].draws.apply(tuple, axis=1)).all()
    pd.testing.assert_frame_equal(fits["ols"].sample(5, seed=9), fits["ols"].sample(5, seed=9))


def test_log_scale_parameters_sample_positive():
    b = np.repeat(2.0 ** np.arange(6), 2)
    k = 4.0 * b ** -0.5 * np.exp(np.random.default_rng(1).normal(0, 0.4, len(b)))
    fit = fit_law(pd.DataFrame({"batch_size": b, "tree_topk": k}), "topk_batch")
    assert (fit.sample(5000, seed=0)["c"] > 0).all()
    assert fit.conf_int().loc["c", "lower"] > 0


def test_summary_shows_level_gof_and_notes(rows):
    text = _fits(rows)["bootstrap"].summary(alpha=0.1)
    for part in ("loglinear", "[0.05", "0.95]", "std err", "r2", "aic", "method = bootstrap", "nobs = 30"):
        assert part in text


def test_provenance_names_input_rows(rows):
    rows = rows.assign(source_file="a.csv", source_row=range(1, 31))
    fit = fit_law(rows[rows.draft_layers != 3], "loglinear", x="draft_layers")
    assert fit.meta["inputs"] == [{"file": "a.csv", "rows": "1-6,10-30"}]
    assert {"git_sha", "sdlaws_version", "timestamp_utc"} <= set(fit.meta)
    assert fit.meta["x_range"] == {"draft_layers": [1.0, 10.0]}


def test_load_fit_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"format": "plan"}')
    with pytest.raises(InputError, match="not an sdlaws fit JSON"):
        load_fit(path)


def test_from_dict_restores_nan_written_as_null(rows):
    fit = _fits(rows)["ols"]
    fit.gof["extra"] = float("nan")
    data = json.loads(json.dumps(fit.to_dict()))
    assert data["gof"]["extra"] is None
    assert np.isnan(FitResult.from_dict(data).gof["extra"])


def test_load_fit_is_one_fit_and_load_fits_every_group(rows, tmp_path):
    fits = fit_law_by(rows, "loglinear", "prompt_set", x="draft_layers")
    path = save_fits(fits, "prompt_set", tmp_path / "fits.json")
    with pytest.raises(InputError, match="load_fits"):
        load_fit(path)
    one = fit_law(rows, "loglinear", x="draft_layers")
    assert list(load_fits(one.save(tmp_path / "one.json"))) == [None]
    assert isinstance(load_fit(tmp_path / "one.json"), FitResult)
