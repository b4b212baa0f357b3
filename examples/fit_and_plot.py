"""Fit Scylla's Thm 1.1 (acceptance log-linear in draft pretraining tokens) to the shipped measurements, compare it
with the saturating alternative, plot it and save the fit.

    python examples/fit_and_plot.py [OUT_DIR]

Reads ``measurements/acceptance/pretrain-tokens.csv`` (one draft's checkpoints against one target, chain gamma 4,
T = 0 and 1); writes ``OUT_DIR/loglinear.json`` and ``OUT_DIR/loglinear.png``.
"""

import sys
from pathlib import Path

from sdlaws import derive_rates, fit_law, read_measurements
from sdlaws.fit.estimators import used_rows
from sdlaws.plotting import plot_fits

ROOT = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1] if len(sys.argv) > 1 else "fits")
out.mkdir(parents=True, exist_ok=True)

rows = derive_rates(read_measurements(ROOT / "measurements/acceptance/pretrain-tokens.csv"))
greedy = rows[(rows["temperature"] == 0) & (rows["method"] == "chain")]
fits = {law: fit_law(greedy, law, x="draft_pretrain_tokens", y="alpha_mle") for law in ("loglinear", "saturating")}
print(fits["loglinear"].summary())
print("95% intervals:\n", fits["loglinear"].conf_int(0.05))
better = min(fits, key=lambda law: fits[law].gof["aic"])
print(f"AIC prefers {better} (loglinear {fits['loglinear'].gof['aic']:.1f}, "
      f"saturating {fits['saturating'].gof['aic']:.1f})")
print("alpha at 1e6 and 1e7 draft tokens:\n", fits["loglinear"].predict([1e6, 1e7]))  # inside the data
fits["loglinear"].save(out / "loglinear.json")
plot_fits({None: fits["loglinear"]}, {None: used_rows(greedy, fits["loglinear"])}, out / "loglinear.png")
print(f"wrote {out / 'loglinear.json'} and {out / 'loglinear.png'}")
