#!/usr/bin/env bash
# Thm 1.3 at 8B scale: speculative throughput of a random Llama-3.1-8B target with a random Llama-3.2-1B draft
# under synthetic acceptance (every forward pass real, accept/reject drawn from a profile measured on a real pair).
#
#   OUT=out/thm13 bash benchmarks/gpu_thm13.sh [CSV]
#
# The profile is derived from the committed real pair (measurements/throughput/topk-batch.csv: top-16 depth-4
# tree at batch 128, T = 0) by sdlaws.rates.acceptance_profile; depths 5-8 repeat depth 4's row. Grid: AR; chains
# gamma 1-8; trees top-k 2-32 at depths 2, 3, 4, 6 with at most 64 verified draft tokens, top-k <= 16 from batch
# 32 and <= 8 from batch 128 (wider trees are dominated there by a factor > 2 in the step tables); batch 1-256;
# 3 repeats after one warm-up; kv 512 first, then kv 2048 at batch 1, 4, 16, 64, 256. Appends to one spec CSV
# ($OUT/thm13.csv) and resumes: a re-run skips rows already there.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
out=${OUT:?set OUT to the output folder}
csv=${1:-$out/thm13.csv}
profile=$out/profile.json
python3 - "$profile" <<'PY'
import json, sys
from sdlaws import rates
from sdlaws.io import read_measurements
rows = read_measurements("measurements/throughput/topk-batch.csv")
pair = rows[(rows.method == "tree") & (rows.tree_topk == 16) & (rows.batch_size == 128) & (rows.temperature == 0)]
q = [list(r) for r in rates.acceptance_profile(pair, depth=4, topk=16)]
json.dump({"profile": q + [q[-1]] * 4, "source": "measurements/throughput/topk-batch.csv: L12-H768 target, "
           "L2-H256 draft, tree top-16 depth 4, batch 128, T=0; depths 5-8 repeat depth 4"}, open(sys.argv[1], "w"))
PY
sweep() {  # kv batches gammas topks
  python3 -m sdlaws measure --target random:llama-3.1-8b --draft random:llama-3.2-1b --prompts random \
    --num-prompts 1 --max-prompt-len "$1" --max-new-tokens 32 --temperature 0 --repeats 3 --tree-budget 64 \
    --acceptance-profile "$profile" --experiment thm13-synthetic --batch "$2" --gamma "$3" --topk "$4" \
    --out "$csv" 2>&1 | grep -v "━" | tail -n 4
}
for kv in 512 2048; do
  small=1,2,4,8,16 mid=32,64 large=128,256 all=1,2,4,8,16,32,64,128,256
  [ "$kv" = 2048 ] && small=1,4,16 mid=64 large=256 all=1,4,16,64,256
  sweep $kv $all 1,2,3,4,5,6,8 1
  sweep $kv $small 2,3,4,6 2,4,8,16,32
  sweep $kv $mid 2,3,4,6 2,4,8,16
  sweep $kv $large 2,3,4,6 2,4,8
done
