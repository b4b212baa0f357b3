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
# fixed code for the steps still to come; rows record the sha in .gpu-sha of the call that brought it. Steps and
# their estimated H200 minutes: 1. the regression guard with the engine's GPU tests (gpu_guard.sh, ~5); 2. the
# Thm 1.3 sweep rows timed with the LM-head defect, re-measured (gpu_heldout.sh step 6, ~9); 3. the bf16 audit
# (gpu_bf16_audit.sh, ~4); 4. continuous against static batching (gpu_batching.sh, ~2); 5. the trainer's MFU at
# 85 M parameters (gpu_train_mfu.sh, ~4); 6. the EAGLE-sized head's remaining rows (gpu_heldout.sh step 5,
# resumes, ~3). Each step resumes where a re-run finds its files.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
work=${WORK:?set WORK to a scratch folder}
mkdir -p "$work/guard" "$work/audit"
step() {  # name command...
  echo "[$(date -u +%H:%M:%S)] $1 (git $(gpu_sha))"; shift
  "$@"
  echo "[$(date -u +%H:%M:%S)] exit $?"
}
[ -f "$work/heads.csv" ] || cp measurements/h200/heads.csv "$work/heads.csv"   # step 6 resumes the committed rows
step "1. regression guard" env OUT="$work/guard" SDLAWS_GIT_SHA="$(gpu_sha)" bash benchmarks/gpu_guard.sh
step "2. set-aside sweep rows" env WORK="$work" STEPS="6" bash benchmarks/gpu_heldout.sh
step "3. bf16 audit" env OUT="$work/audit" SDLAWS_GIT_SHA="$(gpu_sha)" bash benchmarks/gpu_bf16_audit.sh
step "4. continuous vs static batching" env WORK="$work" bash benchmarks/gpu_batching.sh
step "5. trainer MFU" env WORK="$work" bash benchmarks/gpu_train_mfu.sh
step "6. EAGLE-sized head" env WORK="$work" STEPS="5" bash benchmarks/gpu_heldout.sh
echo "[$(date -u +%H:%M:%S)] done"
