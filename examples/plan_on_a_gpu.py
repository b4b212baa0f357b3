"""Plan speculative decoding for an 8B target with a 1B draft on an H200 from measured step times: which engine
configuration (AR, chain gamma, tree depth x top-k) to run at each batch size, and the predicted speedup.

    python examples/plan_on_a_gpu.py [OUT_DIR]

Fits the step-time law to ``measurements/h200/steps.csv`` (forward passes measured on one H200), takes the
acceptance profile in ``measurements/h200/thm13-profile.json`` (per depth and rank, from a measured pair) and
searches the engine's configurations; writes ``OUT_DIR/engine_plan.csv``. The same plan from the command line:
``sdlaws plan serving --target random:llama-3.1-8b --draft random:llama-3.2-1b --hardware h200 --steps
measurements/h200/steps.csv --profile measurements/h200/thm13-profile.json --kv-len 528 --max-new-tokens 32``.
"""

import sys
from pathlib import Path

from sdlaws.hardware import load_hardware
from sdlaws.io import read_measurements
from sdlaws.measure.profile import parse
from sdlaws.plan.cost import fit_steptime
from sdlaws.plan.serving import engine_plan
from sdlaws.plan.setup import ServingSetup
from sdlaws.roofline import named_shape

ROOT = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1] if len(sys.argv) > 1 else "plan")
out.mkdir(parents=True, exist_ok=True)

h200 = load_hardware("h200")
law = fit_steptime(read_measurements(ROOT / "measurements/h200/steps.csv", table="step", ok_only=True), h200)
print(law.summary())
setup = ServingSetup(named_shape("random:llama-3.1-8b"), h200, draft=named_shape("random:llama-3.2-1b"),
                     kv_len=528, forward=law)
plan = engine_plan(setup, [1, 4, 16, 64, 256], parse(str(ROOT / "measurements/h200/thm13-profile.json")),
                   max_new_tokens=32)
best = plan.tables["engine_serving"]
print(best[["batch_size", "label", "tau", "decode_tokens_per_s", "decode_speedup"]].to_string(index=False))
best.to_csv(out / "engine_plan.csv", index=False)
print(f"wrote {out / 'engine_plan.csv'}")
