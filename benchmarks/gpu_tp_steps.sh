#!/usr/bin/env bash
# Tensor-parallel step tables on one host with 2-8 GPUs: a random Llama-3.1-70B at tp 2/4/8 and a random
# Llama-3.1-8B at tp 1/2, for the planner's tensor-parallel cost (forward time per GPU + all-reduce term).
#
#   OUT=out/tp bash benchmarks/gpu_tp_steps.sh
#
# For each (shape, tp), largest model and widest split first, tp sizes beyond the visible GPUs skipped:
#   1. `sdlaws measure hardware --tp N --model SHAPE`: forward timings over batch 1..256 and 1..16 tokens per row
#      (1 = AR decode, gamma + 1 = chain verify, budget + 1 = tree verify) at KV length 512, each point with the
#      time of its all-reduces alone (allreduce_time_s), to $OUT/steps-tpN.csv (a step-time fit takes one tp
#      size, so each gets its own file); the device profile of that run is kept in $OUT/hw.jsonl.
#   2. `sdlaws measure --tp N`: whole AR, chain (gamma 4) and tree (top-4, depth 4, budget 16) decoding of the
#      shape with a random Llama-3.2-1B draft on every GPU, under the synthetic acceptance profile measured for
#      Thm 1.3 (measurements/h200/thm13-profile.json), to $OUT/spec-tpN.csv.
# Every launch re-runs itself under torchrun with NVLink multicast off; a re-run skips every point already in the
# CSVs (resumable). The variables below can be overridden (the CPU test runs it with tiny shapes and gloo).
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
out=${OUT:?set OUT to the output folder}
big=${BIG:-random:llama-3.1-70b}
small=${SMALL:-random:llama-3.1-8b}
draft=${DRAFT:-random:llama-3.2-1b}
device=${DEVICE:-cuda}
dtype=${DTYPE:-bf16}
batches=${BATCHES:-1,2,4,8,16,32,64,128,256}
tokens=${TOKENS:-1,2,3,4,6,8,12,16}
spec_batches=${SPEC_BATCHES:-1,4,16,64,256}
max_new=${MAX_NEW:-64}
profile=${PROFILE:-measurements/h200/thm13-profile.json}
gpus=${GPUS:-$(python3 -c "import torch; print(torch.cuda.device_count())")}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$out"

run() {  # model tp
  if (( $2 > gpus )); then echo "skip $1 at tp $2: $gpus GPUs visible"; return; fi
  echo "== $1 tp $2"
  python3 -m sdlaws measure hardware --tp "$2" --model "$1" --kv 512 --batch "$batches" --tokens "$tokens" \
    --repeats 10 --dtype "$dtype" --device "$device" --out "$out/hw.json" --timing-out "$out/steps-tp$2.csv" \
    2>&1 | grep -v "━" | tail -n 2
  python3 -c "import json; print(json.dumps({**json.load(open('$out/hw.json')), 'model_name': '$1', 'tp_size': $2}))" \
    >> "$out/hw.jsonl"
  python3 -m sdlaws measure --tp "$2" --target "$1" --draft "$draft" --gamma 4 --topk 1,4 --tree-budget 16 \
    --batch "$spec_batches" --prompts random --num-prompts 4 --max-prompt-len 512 --max-new-tokens "$max_new" \
    --acceptance-profile "$profile" --experiment tp-steps --dtype "$dtype" --device "$device" \
    --out "$out/spec-tp$2.csv" 2>&1 | grep -v "━" | tail -n 3
}
run "$big" 8
run "$big" 4
run "$big" 2
run "$small" 2
run "$small" 1
rm -f "$out/hw.json"
