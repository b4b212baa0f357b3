#!/usr/bin/env bash
# Training throughput of the trainer at the size the science runs need (one H200, about 4 minutes): a corpus of
# this machine's Python sources (30 M train tokens; the content does not change the speed), then an 85 M-parameter
# L12-H768 model, bf16 autocast, fused AdamW, torch.compile, 65,536-token steps, trained for 150 s. The trainer
# times steps with CUDA events and leaves the first steps of a process (compilation) out of the MFU.
#
#   WORK=/root/ho bash benchmarks/gpu_train_mfu.sh     -> $WORK/mfu/ (metadata JSON of the checkpoint; no weights
#                                                          are collected by gpu_collect.sh)
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
work=${WORK:?set WORK to a scratch folder}
runs=$work/runs/mfu    # weights stay under runs/, which gpu_collect.sh leaves out
mkdir -p "$runs" "$work/mfu"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
[ -f "$runs/corpus/manifest.json" ] || python3 -m sdlaws train corpus --out "$runs/corpus" --vocab 8192 \
  --max-tokens 30M --heldout-tokens 262144 2>&1 | grep -v "━" | tail -n 4
train() {  # out-folder seconds compile-flag
  SDLAWS_GIT_SHA=$(gpu_sha) python3 -m sdlaws train model --corpus "$runs/corpus" --layers 12 --hidden 768 \
    --tokens 2G --checkpoints 1 "$3" --time-limit-s "$2" --out "$runs/$1" 2>&1 | grep -v "━" | tail -n 4
}
train models 150 --compile
# without a compiled model's metadata (compilation failed), the eager trainer's for comparison
ls "$runs"/models/*/*/sdlaws_train.json > /dev/null 2>&1 || train models 90 --no-compile
for f in "$runs"/models/*/*/sdlaws_train.json; do
  [ -f "$f" ] && cp "$f" "$work/mfu/$(basename "$(dirname "$(dirname "$f")")").json"
done
python3 - "$work/mfu" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    m = json.loads(f.read_text())
    print(f.stem, {k: m.get(k) for k in ("params", "tokens_per_s", "mfu", "mfu_measured", "measured_matmul_flops_per_s")})
PY
