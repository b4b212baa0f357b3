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
# brings the current tree, and each step below is read from it when the step starts, so a later call can bring fixed
# code for the steps still to come; rows record the sha in .gpu-sha of the call that brought it. Steps and their
# estimated H200 minutes, for the engine with its Triton kernels (rotary + cache write; attention over each row's
# live slot range, its shares merged in the same launch; the projections of few rows on a kernel timed against
# cuBLAS per weight shape at a process's first call, SwiGLU in the gate/up epilogue; since the last run, not yet
# measured: the residual add + RMSNorm on a Triton kernel reducing each row in one program, the in-kernel norm gone):
# 1. the engine's and the kernels' GPU tests (~3): the timings after them are only quoted where they pass; 1b. which
# kernel call makes a batch-1 verification's first token leave the AR step's bits (batch_invariance.py, ~1.5);
# 2. the regression guard (gpu_guard.sh, ~5.5); 3. the bf16 audit (~4); 4. the verify
# and draft passes' kernels (profile_phases.py, ~1.5), 4c. those of bare forwards, the guard's compute-bound verify
# forwards included (~1); 5. the projection kernel's configurations against cuBLAS
# (kernel_tune.py, linear at 1 and 64 rows, ~4), 5b. attention's, a verification's 64-row tiles first (~2); 6. continuous against static batching, the chain at batch 64
# included (gpu_batching.sh, ~5); 7. the audit in fp32 at batch 1 and 8 (~3). Each step resumes where a re-run finds
# its files; STEPS (numbers, e.g. STEPS="1 1b 4 4b 4c") runs some of them. Earlier sessions' results (Thm 1.1 and the SDSL plane at scale, step tables, guards, sweeps, audit,
# batching, MFU, kernel configurations) are committed under measurements/h200/.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
work=${WORK:?set WORK to a scratch folder}
mkdir -p "$work"
# STEPS: the steps to run, by number (e.g. "1 1b 4 4b 4c"); default every step
steps=" ${STEPS:-1 1b 2 3 4 4b 4c 5 5b 6 7} "
step() {  # name command...
  [[ "$steps" == *" ${1%%.*} "* ]] || return 0
  echo "[$(date -u +%H:%M:%S)] $1 (git $(gpu_sha))"; shift
  "$@"
  echo "[$(date -u +%H:%M:%S)] exit $?"
}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
step "1. engine and kernel GPU tests" bash -c "mkdir -p '$work/guard' && [ -s '$work/guard/pytest.txt' ] || \
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_engine_gpu.py tests/test_kernels.py \
  > '$work/guard/pytest.txt' 2>&1; tail -n 1 '$work/guard/pytest.txt'"
step "1b. batch invariance of a batch-1 verification" bash -c "timeout 300 python3 benchmarks/batch_invariance.py \
  --tokens 5,9,16 --attention-tile 64 --out '$work/invariance.txt' > '$work/invariance.log' 2>&1; tail -n 20 '$work/invariance.log'"
step "2. regression guard, this tree's engine" env OUT="$work/guard" SDLAWS_GIT_SHA="$(gpu_sha)" bash benchmarks/gpu_guard.sh
step "3. bf16 audit" env OUT="$work/audit" SDLAWS_GIT_SHA="$(gpu_sha)" bash benchmarks/gpu_bf16_audit.sh
step "4. verify-pass kernels" python3 benchmarks/profile_phases.py --profile measurements/h200/heldout-profile.json \
  --phase verify --case ar,1,1,1,128 --case ar,1,1,64,128 --case chain,4,1,1,128 --out "$work/phases-verify.txt"
step "4b. draft-pass kernels" python3 benchmarks/profile_phases.py --profile measurements/h200/heldout-profile.json \
  --phase draft --case chain,4,1,1,128 --out "$work/phases-draft.txt"
step "4c. verify forwards' kernels" python3 benchmarks/profile_phases.py --forward 64,16 --forward 32,64 \
  --forward 1,1 --kv-len 256 --out "$work/phases-forward.txt"
step "5. projection configurations" bash -c "SDLAWS_GIT_SHA=$(gpu_sha) timeout 400 python3 benchmarks/kernel_tune.py \
  --only linear --rows 1,64 --out '$work/tune.csv' --budget-s 300 > '$work/tune.txt' 2>&1; tail -n 25 '$work/tune.txt'"
step "5b. attention configurations" bash -c "SDLAWS_GIT_SHA=$(gpu_sha) timeout 200 python3 benchmarks/kernel_tune.py \
  --only attention --out '$work/tune-attention.csv' --budget-s 90 > '$work/tune-attention.txt' 2>&1; \
  tail -n 12 '$work/tune-attention.txt'"
step "6. continuous against static batching" env WORK="$work" bash benchmarks/gpu_batching.sh
step "7. fp32 audit" env OUT="$work/audit-fp32" DTYPE=float32 BIG_BATCH=8 SDLAWS_GIT_SHA="$(gpu_sha)" \
  bash benchmarks/gpu_bf16_audit.sh
echo "[$(date -u +%H:%M:%S)] done"
