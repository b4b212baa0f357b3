#!/usr/bin/env bash
# Forward-pass step tables of several random-weight shapes on one GPU, for the measured cost model.
#
#   OUT=out/steps bash benchmarks/gpu_step_tables.sh [CSV]
#
# Every shape goes through `sdlaws measure hardware --model random:NAME` (copy bandwidth, matmul rate and launch
# cost first, gathered in $OUT/hw.jsonl; then the forward timings), appending to one step CSV ($OUT/steps.csv unless CSV is given); a
# re-run skips the points already in it. Shapes are timed most-needed first so that a cut run keeps the
# tables the planner uses (8B target, 1B draft). Budget: about 8 minutes on an H200.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
out=${OUT:?set OUT to the output folder}
csv=${1:-$out/steps.csv}
batches=1,2,4,8,16,32,64,128,256
tokens=1,2,3,4,6,8,12,16,24,32
step() {  # model kv tokens
  python3 -m sdlaws measure hardware --model "$1" --kv "$2" --tokens "$3" --batch "$batches" --repeats 10 \
    --out "$out/hw.json" --timing-out "$csv" 2>&1 | grep -v "^\s*$" | tail -n 3
  python3 -c "import json; print(json.dumps({**json.load(open('$out/hw.json')), 'model_name': '$1'}))" \
    >> "$out/hw.jsonl"  # the device profile measured before this shape
}
step random:llama-3.1-8b 512 "$tokens"
step random:llama-3.2-1b 512 "$tokens"
step random:llama-3.1-8b 2048 "$tokens"
step random:llama-3.2-1b 2048 "$tokens"
step random:llama-3.2-3b 512 "$tokens"
step random:qwen2.5-7b 512 "$tokens"
step random:mistral-7b 512 "$tokens"
step random:qwen2.5-32b 512 1,2,3,4,6,8,12,16
rm -f "$out/hw.json"
