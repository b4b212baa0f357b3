"""`sdlaws fit` end to end: shipped paper tables and sdlaws measurement tables -> summary, JSON, PNG."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sdlaws import io, load_fit, load_fits
from sdlaws.cli import app
from sdlaws.fit import LAWS, fit_law_by
from sdlaws.provenance import provenance

DATA = Path(__file__).resolve().parent.parent / "data"
runner = CliRunner()


def write_layer_sweep(path: Path, spec_row, *, seed: int = 0) -> Path:
    """Spec rows whose acceptance rate follows 0.25*log10(layers) + 0.4, with varying draft-token counts."""
    rng = np.random.default_rng(seed)
    for i, layers in enumerate(np.repeat(np.arange(1, 11), 2)):
        drafted = int(rng.integers(400, 4000))
        accepted = int(round(drafted * (0.25 * np.log10(layers) + 0.4 + rng.normal(0, 0.01))))
        steps = drafted // 4  # batch 1: one draft per step, each step emits its accepted tokens and one more
        io.append_row(path, spec_row(run_id=f"r{i}", draft_name=f"draft-{layers}", draft_layers=layers,
                                     num_draft_tokens=drafted, num_drafts=steps, num_steps=steps,
                                     num_accepted_tokens=accepted, num_new_tokens=accepted + steps,
                                     prompt_set=["mt", "code"][i % 2]))
    return path


def _fit_cli(*args: str):
    result = runner.invoke(app, ["fit", *args], env={"COLUMNS": "200"})  # wide enough for untruncated tables
    assert result.exit_code == 0, result.output
    return result


def test_list_shows_every_law():
    out = _fit_cli("--list").output
    assert all(name in out for name in LAWS)


def test_quick_start_on_shipped_nstar_table(tmp_path):
    out = _fit_cli(str(DATA / "sdsl_nstar_table.csv"), "--law", "linear", "--x", "target_params", "--y",
                   "nstar_params", "--group", "source", "--out", str(tmp_path)).output
    assert "SDSL digest 1" in out and "[0.025" in out and "0.975]" in out
    fits = load_fits(tmp_path / "linear_source.json")
    assert set(fits) == {"SDSL digest 1", "SDSL digest 2"}
    assert (tmp_path / "linear_source.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(DATA / "sdsl_nstar_table.csv")
    again = fit_law_by(table, "linear", "source", x="target_params", y="nstar_params")
    for name, fit in fits.items():
        pd.testing.assert_frame_equal(fit.predict([2e10, 1e11]), again[name].predict([2e10, 1e11]))
        assert fit.meta["inputs"][0]["file"].endswith("sdsl_nstar_table.csv")


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.csv")))
def test_every_shipped_table_has_source_and_tag(name):
    table = pd.read_csv(DATA / name)
    assert {"source", "tag"} <= set(table.columns) and set(table["tag"]) <= {"P", "S"}


def test_json_flag_prints_the_saved_fit(tmp_path):
    out = _fit_cli(str(DATA / "specbench_leaderboard.csv"), "--law", "linear", "--x", "mean_accepted_tokens",
                   "--y", "speedup_overall", "--json", "--out", str(tmp_path)).output
    assert json.loads(out) == json.loads((tmp_path / "linear.json").read_text())


def test_measurement_table_gets_derived_rates_and_count_weights(spec_row, tmp_path):
    csv = write_layer_sweep(tmp_path / "sweep.csv", spec_row)
    _fit_cli(str(csv), "--law", "loglinear", "--x", "draft_layers", "--y", "acceptance_rate", "--out", str(tmp_path))
    fit = load_fit(tmp_path / "loglinear.json")
    assert fit.method == "wls" and fit.meta["weight"] == "num_draft_tokens"
    ci = fit.conf_int()
    assert ci.loc["a", "lower"] < 0.25 < ci.loc["a", "upper"] and ci.loc["b", "lower"] < 0.4 < ci.loc["b", "upper"]
    assert fit.meta["inputs"] == [{"file": str(csv), "rows": "1-20"}]


def test_unit_bootstrap_and_comparison(spec_row, tmp_path):
    csv = write_layer_sweep(tmp_path / "sweep.csv", spec_row)
    out = _fit_cli(str(csv), "--law", "loglinear", "--x", "draft_layers", "--y", "acceptance_rate",
                   "--unit", "draft_name", "--bootstrap", "200", "--seed", "1", "--compare", "saturating",
                   "--out", str(tmp_path)).output
    fit = load_fit(tmp_path / "loglinear.json")
    assert fit.method == "bootstrap" and fit.meta["unit"] == "draft_name" and len(fit.draws) > 150
    table = pd.read_csv(tmp_path / "loglinear_compare.csv")
    assert set(table["name"]) == {"loglinear", "saturating"} and "akaike_weight" in out


def test_ppl_plane_with_perplexities_joined_by_model_name(spec_row, tmp_path):
    rng = np.random.default_rng(3)
    spec, ppl = tmp_path / "spec.csv", tmp_path / "ppl.csv"
    draft_ppl = {f"d{i}": p for i, p in enumerate(rng.uniform(10, 40, 6))}
    target_ppl = {"t0": 6.0, "t1": 9.0, "t2": 12.0}
    for name, value in {**draft_ppl, **target_ppl}.items():
        io.append_row(ppl, {**provenance("cpu"), "run_id": name, "status": "ok", "model_name": name,
                            "eval_set": "wiki", "num_eval_tokens": 1000, "nll_sum_nats": 1000 * np.log(value)},
                      table="ppl")
    for i, (d, t) in enumerate((d, t) for d in draft_ppl for t in target_ppl):
        alpha = -0.0067 * draft_ppl[d] + 0.013 * target_ppl[t] + 0.642 + rng.normal(0, 0.005)
        drafted = 4000
        io.append_row(spec, spec_row(run_id=f"s{i}", draft_name=d, target_name=t, num_drafts=1000,
                                     num_steps=1000, num_new_tokens=1000 + int(alpha * drafted),
                                     num_draft_tokens=drafted, num_accepted_tokens=int(alpha * drafted),
                                     num_accepted_per_pos=json.dumps([int(1000 * alpha ** j) for j in range(1, 5)])))
    _fit_cli(str(spec), "--law", "ppl_plane", "--y", "acceptance_rate", "--ppl", str(ppl), "--out", str(tmp_path))
    fit = load_fit(tmp_path / "ppl_plane.json")
    assert fit.x == ("draft_ppl", "target_ppl") and fit.nobs == 18
    assert fit.params["A"] == pytest.approx(-0.0067, abs=0.001) and fit.params["B"] == pytest.approx(0.013, abs=0.002)
    assert (tmp_path / "ppl_plane.png").exists()


def test_topk_law_from_measurement_rows(spec_row, tmp_path):
    csv = tmp_path / "tree.csv"
    for b in (1, 2, 4, 8, 16, 32):
        for k in (1, 2, 4, 8, 16):
            best = np.log2(16 / np.sqrt(b))
            seconds = 1.0 / (b * (20 - (np.log2(k) - best) ** 2))  # tokens/s quadratic in log2 k
            io.append_row(csv, spec_row(run_id=f"{b}-{k}", method="tree", batch_size=b, tree_topk=k,
                                        total_time_s=512 * seconds))
    _fit_cli(str(csv), "--law", "topk_batch", "--out", str(tmp_path))
    fit = load_fit(tmp_path / "topk_batch.json")
    assert fit.nobs == 6 and fit.params["p"] == pytest.approx(0.5, abs=1e-6)


def test_crossed_units_give_the_reports_two_way_intervals(tmp_path):
    """``--unit draft_name,target_name`` on the committed at-scale plane: the pigeonhole bootstrap of the results
    document (sdlaws.experiments.multiway), several times wider than resampling rows, which hides that the rows of
    one target share its perplexity."""
    from sdlaws import rates
    from sdlaws.experiments.multiway import cluster_bootstrap
    from sdlaws.fit import fill_perplexities, used_rows

    root = Path(__file__).resolve().parents[1] / "measurements" / "h200" / "science"
    args = (str(root / "ppl-plane.csv"), "--law", "ppl_plane", "--ppl", str(root / "ppl-plane-ppl.csv"),
            "--group", "temperature", "--bootstrap", "1000")
    _fit_cli(*args, "--unit", "draft_name,target_name", "--out", str(tmp_path / "crossed"))
    _fit_cli(*args, "--out", str(tmp_path / "rows"))
    crossed = load_fits(tmp_path / "crossed" / "ppl_plane_temperature.json")[0.0]
    rows = load_fits(tmp_path / "rows" / "ppl_plane_temperature.json")[0.0]
    assert crossed.meta["unit"] == "draft_name,target_name"
    width = {name: fit.conf_int().diff(axis=1)["upper"] for name, fit in (("crossed", crossed), ("rows", rows))}
    assert (width["crossed"]["A"] > 2 * width["rows"]["A"]) and (width["crossed"]["B"] > width["rows"]["B"])
    # the report's routine on the same rows, same seed
    spec = rates.derive(io.read_measurements(root / "ppl-plane.csv", ok_only=True))
    df = fill_perplexities(spec, io.read_measurements(root / "ppl-plane-ppl.csv", table="ppl"))
    two_way = cluster_bootstrap(crossed, used_rows(df, crossed), ["draft_name", "target_name"], n_boot=1000, seed=0)
    np.testing.assert_allclose(crossed.conf_int().loc["A"].to_numpy(), two_way["ci"]["A"], rtol=1e-12)
