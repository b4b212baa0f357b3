#!/usr/bin/env bash
# Every pending GPU measurement, in priority order, as one background job that outlives a device call. A lent
# machine stays warm only ~30 s after a call returns, so start this with setsid and poll with back-to-back calls:
#
#   call 1:  git rev-parse --short=12 HEAD > .gpu-sha (here, carried); then on the machine, from a copy (a later
#            call rewrites the tree, and bash reads a running script as it goes)
#            mkdir -p /root/ho; cp benchmarks/gpu_session.sh benchmarks/gpu_common.sh /root/ho/
#            WORK=/root/ho setsid nohup bash /root/ho/gpu_session.sh > /root/ho/session.log 2>&1 < /dev/null &
#            sleep 570; WORK=/root/ho OUT=$OUT bash benchmarks/gpu_collect.sh
#   call 2+: sleep 570; WORK=/root/ho OUT=$OUT bash benchmarks/gpu_collect.sh
#
# (where the image lacks pydantic, each call first installs the carried wheels: see docs/benchmarks.md). Each call
# brings the current tree, and each step below is read from it when the step starts, so a later call can bring
# fixed code for the steps still to come; rows record the sha in .gpu-sha of the call that brought it. Steps and their
# estimated H200 minutes: 1. the engine's GPU tests (~1.3): the guard and the timings after it are only quoted where
# they pass; 2. the regression guard on this engine (blocked argmax, one KV write per layer, fused heads, its own
# chain draft phase; gpu_guard.sh, ~5); 3. the EAGLE-sized head's held-out rows from scratch with fused heads
# (gpu_heldout.sh step 5 into a fresh heads.csv, ~4: they replace the stock-layer rows, now in hf-layers/, as the
# head's held-out suite); 4. the attention paths at the engine's shapes (attention_paths.py, ~2); 5. the verify and
# draft passes' kernels again (profile_phases.py, ~2); 6. continuous against static batching again, the chain at
# batch 64 included (gpu_batching.sh, ~3); 7. the audit in fp32 at batch 1 and 8 (~3); 8. the Thm 1.3 sweep's batch
# 256 at 2048-token prompts (~7). Each step resumes where a re-run finds its files. Earlier sessions' results
# (Thm 1.1 and the SDSL plane at scale, step tables, guard, sweeps, audit, batching, MFU) are committed under
# measurements/h200/.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
work=${WORK:?set WORK to a scratch folder}
mkdir -p "$work"
step() {  # name command...
  echo "[$(date -u +%H:%M:%S)] $1 (git $(gpu_sha))"; shift
  "$@"
  echo "[$(date -u +%H:%M:%S)] exit $?"
}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
attention() {  # skipped where an earlier run finished it (the CSV is written at the end, even with a WRONG row)
  [ -f "$work/attention.csv" ] && { echo "attention.csv already there"; return 0; }
  SDLAWS_GIT_SHA=$(gpu_sha) timeout 300 python3 benchmarks/attention_paths.py --out "$work/attention.csv" \
    > "$work/attention.txt" 2>&1
  local rc=$?
  grep -E "^copy bandwidth|^FAILED" "$work/attention.txt"; tail -n 1 "$work/attention.txt"
  return $rc
}
step "1. engine GPU tests" bash -c "mkdir -p '$work/guard' && timeout 240 python3 -m pytest -q -p no:cacheprovider \
  tests/test_engine_gpu.py > '$work/guard/pytest.txt' 2>&1; tail -n 1 '$work/guard/pytest.txt'"
step "2. regression guard, this tree's engine" env OUT="$work/guard" SDLAWS_GIT_SHA="$(gpu_sha)" \
  bash benchmarks/gpu_guard.sh
step "3. EAGLE-sized head rows, fused heads" env WORK="$work" STEPS="5" bash benchmarks/gpu_heldout.sh
step "4. attention paths" attention
step "5. verify-pass kernels" python3 benchmarks/profile_phases.py --profile measurements/h200/heldout-profile.json \
  --phase verify --case ar,1,1,1,128 --case ar,1,1,64,128 --case chain,4,1,1,128 --out "$work/phases-verify.txt"
step "5. draft-pass kernels" python3 benchmarks/profile_phases.py --profile measurements/h200/heldout-profile.json \
  --phase draft --case chain,4,1,1,128 --out "$work/phases-draft.txt"
step "6. continuous against static batching" env WORK="$work" bash benchmarks/gpu_batching.sh
step "7. fp32 audit" env OUT="$work/audit-fp32" DTYPE=float32 BIG_BATCH=8 SDLAWS_GIT_SHA="$(gpu_sha)" \
  bash benchmarks/gpu_bf16_audit.sh
step "8. batch 256 at 2048-token prompts, chunked prefills" env WORK="$work" STEPS="7" bash benchmarks/gpu_heldout.sh
echo "[$(date -u +%H:%M:%S)] done"
