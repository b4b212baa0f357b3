"""From a vLLM server's /metrics to the speculation config it should run, in four sdlaws commands.

    python examples/vllm_roundtrip.py [OUT_DIR]

1. `sdlaws import vllm`: the server's speculative-decoding counters become spec rows. data/ holds two dumps
   (`curl -s localhost:8000/metrics`) of a Llama-3.1-8B-Instruct server drafting with Llama-3.2-1B-Instruct, one
   week at K = 3 and one at K = 5.
2. `sdlaws fit --law tau_chain`: the per-token acceptance alpha that explains both mean acceptance lengths.
3. `sdlaws plan serving --alpha`: the best draft length per batch size on an H200 under that alpha.
4. `sdlaws plan export --engine vllm`: that choice as a `vllm serve --config` file with a per-batch-size table.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRAFT = "meta-llama/Llama-3.2-1B-Instruct"


def sdlaws(*args) -> None:
    subprocess.run([sys.executable, "-m", "sdlaws", *map(str, args)], check=True)


out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="sdlaws-vllm-"))
for dump in sorted((HERE / "data").glob("vllm_metrics_k*.prom")):
    sdlaws("import", "vllm", dump, "--draft", DRAFT, "--out", out / "spec.csv")
sdlaws("fit", out / "spec.csv", "--law", "tau_chain", "--out", out / "fit")
alpha = json.loads((out / "fit" / "tau_chain.json").read_text())["params"]["alpha"]
sdlaws("plan", "serving", "--target", "llama-3.1-8b", "--draft", "llama-3.2-1b", "--hardware", "h200",
       "--alpha", f"{alpha:.4f}", "--samples", "50", "--out", out / "plan")
sdlaws("plan", "export", out / "plan" / "plan.json", "--engine", "vllm", "--draft", DRAFT, "--out", out / "vllm.yaml")
print((out / "vllm.yaml").read_text())
