#!/usr/bin/env bash
# Every pending GPU measurement, in priority order, as one background job that outlives a device call. A lent
# machine stays warm only ~30 s after a call returns, so start this with setsid and poll with back-to-back calls:
#
#   call 1:  git rev-parse --short=12 HEAD > .gpu-sha (here, carried); then on the machine
#            WORK=/root/ho setsid nohup bash benchmarks/gpu_session.sh > /root/ho/session.log 2>&1 < /dev/null &
#            sleep 570; WORK=/root/ho OUT=$OUT bash benchmarks/gpu_collect.sh
#   call 2+: sleep 570; WORK=/root/ho OUT=$OUT bash benchmarks/gpu_collect.sh
#
# (where the image lacks pydantic, each call first installs the carried wheels: see docs/benchmarks.md). Each call
# brings the current tree, and each step below is read from it when the step starts, so a later call can bring
# fixed code for the steps still to come; rows record the sha in .gpu-sha of the call that brought it. Steps and
# their estimated H200 minutes: 1. the H200 pair suite and its profile (benchmarks/gpu_heldout.sh steps 1-2, ~9);
# 2. Thm 1.2 on draft heads (`sdlaws experiment run head-depth`, ~7.5); 3. the EAGLE-sized head and the rest of
# the 2048-token Thm 1.3 sweep (gpu_heldout.sh steps 5 and 4, ~5); 4. the regression guard (gpu_guard.sh, ~5);
# 5. the bf16 audit (gpu_bf16_audit.sh, ~4). Each step resumes where a re-run finds its files.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
work=${WORK:?set WORK to a scratch folder}
mkdir -p "$work/guard" "$work/audit" "$work/heads"
step() {  # name command...
  echo "[$(date -u +%H:%M:%S)] $1 (git $(gpu_sha))"; shift
  "$@"
  echo "[$(date -u +%H:%M:%S)] exit $?"
}
step "1. the H200 pair suite" env WORK="$work" STEPS="1 2" bash benchmarks/gpu_heldout.sh
step "2. head-depth" bash -c "SDLAWS_GIT_SHA=$(gpu_sha) python3 -m sdlaws experiment run head-depth --budget-s 580 \
  --work '$work/runs-heads' --out '$work/heads/head-depth.csv'"
step "3. EAGLE-sized head, 2048-token sweep" env WORK="$work" STEPS="5 4" bash benchmarks/gpu_heldout.sh
step "4. regression guard" env OUT="$work/guard" SDLAWS_GIT_SHA="$(gpu_sha)" bash benchmarks/gpu_guard.sh
step "5. bf16 audit" env OUT="$work/audit" SDLAWS_GIT_SHA="$(gpu_sha)" bash benchmarks/gpu_bf16_audit.sh
echo "[$(date -u +%H:%M:%S)] done"
