#!/usr/bin/env bash
# The planner's two held-out suites on one H200, and the Thm 1.3 sweep completed, as one background job.
#
#   WORK=/root/heldout bash benchmarks/gpu_heldout.sh     (start it with setsid; ~20 minutes; resumes)
#
# 1. Real acceptance: the throughput pair (L12-H768 target; L2-H256, L1-H128, L4-H256 drafts and the unseen
#    L2-H128) trained on the H200, its top-k x batch grid and step tables (``topk-batch``), then the calibration
#    configurations and 35 held-out ones (``heldout`` at scale h200) -> $WORK/pairs/.
# 2. The acceptance profile of that pair, by the recipe of the 512-token sweep (benchmarks/gpu_thm13.sh: the
#    top-16 depth-4 tree at batch 128, T = 0; depths 5-8 repeat depth 4) -> $WORK/pairs/profile.json.
# 3. Thm 1.3 at 512-token prompts, depth-1 trees (top-k 2-16 at batch 1-32: the measured optimum sat at the
#    grid's shallowest depth, 2), with the committed sweep's profile -> $WORK/thm13.csv.
# 4. Thm 1.3 at 2048-token prompts with the committed sweep's profile (measurements/h200/heldout-profile.json, the
#    previous H200 pair suite's, by the recipe of 2.): chains gamma 1-8, trees of depth 1-2 (top-k 2-16 to batch
#    16, 2-8 at 64, 32 at 1 and 4, 2 at 256), batch 1, 4, 16, 64, 256 -> $WORK/thm13.csv.
# 5. An EAGLE-sized head (head:random:llama-3.1-8b?layers=1) as the draft, the profile of 4., 512- and 2048-token
#    prompts, batch 1, 4, 16, 64 (and 256 at 512), 2 repeats -> $WORK/heads.csv.
# 6. The rows sdlaws.defects sets aside, re-measured with the fixed engine -> $WORK/thm13-fixed.csv (not a default
#    step: STEPS=6).
# 7. Batch 256 at 2048-token prompts (out of memory before prefills were chunked) -> $WORK/thm13-b256.csv (STEPS=7).
# STEPS (default "1 2 3 4 5") picks steps. Every step appends to its CSV and skips rows already there, so a re-run
# on the same machine resumes; steps 3-5 also resume the committed sweep (measurements/h200/thm13.csv) on a fresh
# one. Rows record the sha in .gpu-sha where a device call wrote one (gpu_common.sh). 3-5 are timing runs under
# synthetic acceptance (every forward pass real, accept/reject drawn from the profile), repeats after a warm-up.
# Needs pydantic and its dependencies where the GPU image lacks them (wheels in .whl, see the device notes).
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
work=${WORK:?set WORK to a scratch folder}
mkdir -p "$work/pairs"
h100_profile=$work/thm13-profile.json
cp measurements/h200/thm13-profile.json "$h100_profile"
# steps 4-5 resume the committed 2048-token sweep, so they keep its profile (the previous H200 pair suite's);
# step 2 writes the new suite's profile beside its CSVs
profile=$work/heldout-profile.json
cp measurements/h200/heldout-profile.json "$profile"
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
steps=" ${STEPS:-1 2 3 4 5} "
want() { [[ $steps == *" $1 "* ]]; }

if want 1; then
log "1. pairs: train, grid, step tables, calibration and held-out configurations"
# a fresh machine retrains the pair: the rows of a run resume only within that run (the models' paths carry the
# corpus hash, and the committed suite's corpus, sha256 870e1e0f, predates near-duplicate removal), so a new run
# writes a new, complete suite
SDLAWS_GIT_SHA=$(gpu_sha) python3 -m sdlaws experiment run suite --only topk-batch,heldout --scale h200 --work "$work/runs" \
  --out "$work/pairs" --budget-s 900 2>&1 | grep -v "━"
fi

if want 2; then
log "2. acceptance profile of the pair"
python3 - "$work/pairs/topk-batch.csv" "$work/pairs/profile.json" <<'PY'
import json, sys
from sdlaws import rates
from sdlaws.io import read_measurements
rows = read_measurements(sys.argv[1], table="spec")
pair = rows[(rows.method == "tree") & (rows.tree_topk == 16) & (rows.batch_size == 128) & (rows.temperature == 0)]
q = [list(r) for r in rates.acceptance_profile(pair, depth=4, topk=16)]
json.dump({"profile": q + [q[-1]] * 4, "source": "the H200 held-out suite's topk-batch grid (measurements/h200/"
           "pairs/topk-batch.csv): L12-H768 target, L2-H256 draft, tree top-16 depth 4, batch 128, T=0; depths "
           "5-8 repeat depth 4"}, open(sys.argv[2], "w"))
PY
fi

sweep() {  # csv profile draft kv batches gammas topks repeats
  SDLAWS_GIT_SHA=$(gpu_sha) python3 -m sdlaws measure --target random:llama-3.1-8b --draft "$3" --prompts random \
    --num-prompts 1 --max-prompt-len "$4" --max-new-tokens 32 --temperature 0 --repeats "$8" --tree-budget 64 \
    --acceptance-profile "$2" --experiment thm13-synthetic --batch "$5" --gamma "$6" --topk "$7" \
    --out "$1" 2>&1 | grep -v "━" | tail -n 2
}
thm=$work/thm13.csv
[ -f "$thm" ] || cp measurements/h200/thm13.csv "$thm"
if want 3; then
log "3. Thm 1.3, 512-token prompts: depth-1 trees"
sweep "$thm" "$h100_profile" random:llama-3.2-1b 512 1,2,4,8,16,32 1 2,4,8,16 3
fi
if want 4; then
log "4. Thm 1.3, 2048-token prompts"
sweep "$thm" "$profile" random:llama-3.2-1b 2048 1,4,16,64 1,2,3,4,6,8 1 3
sweep "$thm" "$profile" random:llama-3.2-1b 2048 256 1,2,4 1 3
sweep "$thm" "$profile" random:llama-3.2-1b 2048 1,4,16 1,2 2,4,8,16 3
sweep "$thm" "$profile" random:llama-3.2-1b 2048 64 1,2 2,4,8 3
sweep "$thm" "$profile" random:llama-3.2-1b 2048 1,4 1,2 32 3
sweep "$thm" "$profile" random:llama-3.2-1b 2048 256 1,2 2 3
fi
if want 5; then
log "5. EAGLE-sized head"
head="head:random:llama-3.1-8b?layers=1"
for kv in 512 2048; do
  sweep "$work/heads.csv" "$profile" "$head" $kv 1,4,16,64 1,2,4,6 1 2
  sweep "$work/heads.csv" "$profile" "$head" $kv 1,4,16,64 2 4,8 2
done
sweep "$work/heads.csv" "$profile" "$head" 512 256 1,2,4 1 2
fi
if want 6; then
# rows that sdlaws.defects sets aside (timed at 8fe13df/c3d041c with the LM head read once per row), re-measured
# with the fixed engine into their own file: run ids carry no git sha, so a resume of thm13.csv would skip them
log "6. the set-aside sweep rows, fixed engine"
fixed=$work/thm13-fixed.csv
sweep "$fixed" "$h100_profile" random:llama-3.2-1b 512 4,8,16,32 1 2,4,8,16 3
sweep "$fixed" "$profile" random:llama-3.2-1b 2048 4,16,64 1,2,3,4,6,8 1 3
sweep "$fixed" "$profile" random:llama-3.2-1b 2048 4,16 1,2 2,4,8,16,32 3
sweep "$fixed" "$profile" random:llama-3.2-1b 2048 64 1,2 2,4,8 3
fi
if want 7; then
# batch 256 at 2048-token prompts ran out of memory while a batch was prefilled in one forward; since prefills run
# in chunks of rows, measured again into their own file (failed rows of thm13.csv share their run ids)
log "7. batch 256 at 2048-token prompts"
sweep "$work/thm13-b256.csv" "$profile" random:llama-3.2-1b 2048 256 1,2,4 1 3
sweep "$work/thm13-b256.csv" "$profile" random:llama-3.2-1b 2048 256 1,2 2 3
fi
log "done"
