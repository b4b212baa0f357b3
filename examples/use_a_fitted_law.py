"""Use a fitted law in your own code: load the SDSL acceptance plane fitted by ``sdlaws experiment report``
(``docs/results/sdsl_ppl_plane.json``), predict the acceptance of a draft/target pair you have not measured with
its interval, and carry the parameter uncertainty into a quantity of your own (here Leviathan's expected tokens per
chain step, gamma 4) by sampling the fit.

    python examples/use_a_fitted_law.py [OUT_DIR]

Writes ``OUT_DIR/tau_draws.csv`` (one expected-tokens value per parameter draw).
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sdlaws import load_fit
from sdlaws.rates import expected_tokens_chain

ROOT = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1] if len(sys.argv) > 1 else "law")
out.mkdir(parents=True, exist_ok=True)

plane = load_fit(ROOT / "docs/results/sdsl_ppl_plane.json")
print(plane.summary())
pair = pd.DataFrame({"draft_ppl": [40.0], "target_ppl": [20.0]})   # inside the fitted ranges
print("alpha with 95% bands:\n", plane.predict(pair))

draws = plane.sample(1000, seed=0)                                  # parameter draws: A, B, C
alpha = (draws[["A", "B"]].to_numpy() @ pair.iloc[0].to_numpy() + draws["C"].to_numpy()).clip(0.0, 0.999)
tau = expected_tokens_chain(alpha, 4)
low, high = np.percentile(tau, [2.5, 97.5])
print(f"expected tokens per step at gamma 4: {np.median(tau):.2f} [{low:.2f}, {high:.2f}] (95% of draws)")
pd.DataFrame({"alpha": alpha, "tau": tau}).to_csv(out / "tau_draws.csv", index=False)
print(f"wrote {out / 'tau_draws.csv'}")
