"""Figures people can read: axes name quantities and units, probability bands stay in [0, 1], one style sheet,
SVG next to every PNG, and the serving figure shows the chain as well as the tree settings."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from typer.testing import CliRunner

from sdlaws.cli import app
from sdlaws.fit import fit_law
from sdlaws.plotting import _curves, error_bars, plot_fits, quantity


def _steep_alpha():
    """Acceptance rising quickly towards 1: a straight line's bands cross 1 at the top end."""
    x = np.geomspace(1e7, 1e10, 8)
    alpha = np.clip(0.55 + 0.14 * np.log10(x / 1e7) + np.random.default_rng(0).normal(0, 0.02, 8), 0, 0.995)
    return pd.DataFrame({"draft_pretrain_tokens": x, "alpha_mle": alpha})


def test_probability_bands_end_at_one_and_axes_have_quantities(tmp_path):
    rows = _steep_alpha()
    fit = fit_law(rows, "loglinear", x="draft_pretrain_tokens", y="alpha_mle", weight="none")
    assert fit.predict([1e10], alpha=0.05)["obs_ci_upper"].iloc[0] > 1  # the unclipped band leaves [0, 1]
    ax = Figure().subplots()
    _curves(ax, fit, error_bars(rows, fit), "C0", "fit", 0.05)
    band = ax.collections[-1].get_paths()[0].vertices[:, 1]
    dashed = np.concatenate([line.get_ydata() for line in ax.lines if line.get_linestyle() == "--"])
    assert band.max() <= 1 and dashed.max() <= 1 and dashed.min() >= 0
    assert ax.get_xlabel() == "draft pretraining tokens" and "α" in ax.get_ylabel()
    png = plot_fits({None: fit}, {None: rows}, tmp_path / "alpha.png")
    assert png.exists() and png.with_suffix(".svg").exists()


def test_quantity_labels():
    assert quantity("mean_acceptance_length").endswith("(tokens per target pass)")
    assert quantity("cond_acceptance_rate_2") == "acceptance, P(position 2 accepted | earlier accepted)"
    assert quantity("some_new_column") == "some new column"


def test_plan_figures_in_png_and_svg(tmp_path):
    result = CliRunner().invoke(app, ["plan", "serving", "--target", "llama-3.1-8b", "--hardware", "h200",
                                      "--samples", "20", "--batch", "1,16,256", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "serving.svg").read_text()
    assert (tmp_path / "serving.png").exists()
    for text in ("chain: draft length (num_spec_tokens)", "tree: depth (num_spec_tokens)", "batch size (sequences)"):
        assert text in svg  # svg.fonttype none keeps text as text
