#!/usr/bin/env bash
# Every pending GPU measurement, in priority order, as one background job that outlives a device call. A lent
# machine stays warm only ~30 s after a call returns, so start this with setsid and poll with back-to-back calls:
#
#   call 1:  WORK=/root/ho setsid nohup bash benchmarks/gpu_session.sh > /root/ho/session.log 2>&1 < /dev/null &
#            sleep 570; WORK=/root/ho OUT=$OUT bash benchmarks/gpu_collect.sh
#   call 2+: sleep 570; WORK=/root/ho OUT=$OUT bash benchmarks/gpu_collect.sh
#
# (where the image lacks pydantic, each call first installs the carried wheels: see docs/benchmarks.md). Steps and
# their estimated H200 minutes: 1. the planner's held-out suites and the rest of the Thm 1.3 sweep
# (benchmarks/gpu_heldout.sh, ~17); 2. the regression guard (benchmarks/gpu_guard.sh, ~5); 3. the bf16 audit
# (benchmarks/gpu_bf16_audit.sh, ~4); 4. Thm 1.2 on draft heads (`sdlaws experiment run head-depth`, ~7.5). A
# session's 30 device minutes hold steps 1-2 or 1 and 3-4; each step resumes where a re-run finds its files.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
work=${WORK:?set WORK to a scratch folder}
mkdir -p "$work/guard" "$work/audit" "$work/heads"
step() {  # name command...
  echo "[$(date -u +%H:%M:%S)] $1"; shift
  "$@"
  echo "[$(date -u +%H:%M:%S)] exit $?"
}
step "1. held-out suites and the Thm 1.3 sweep" env WORK="$work" bash benchmarks/gpu_heldout.sh
step "2. regression guard" env OUT="$work/guard" bash benchmarks/gpu_guard.sh
step "3. bf16 audit" env OUT="$work/audit" bash benchmarks/gpu_bf16_audit.sh
step "4. head-depth" python3 -m sdlaws experiment run head-depth --budget-s 580 --work "$work/runs-heads" \
  --out "$work/heads/head-depth.csv"
echo "[$(date -u +%H:%M:%S)] done"
