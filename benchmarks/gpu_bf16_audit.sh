#!/usr/bin/env bash
# bf16 losslessness audit (benchmarks/gpu_bf16_audit.py): greedy chain and tree decoding of a random Llama-3.1-8B
# target (drafts: a random Llama-3.2-1B, and the target itself) at batch 1 and 64, compared sequence by sequence
# with the engine's AR output and HF greedy generate, with the top-2 logit margin where they first differ.
# One H200: about 4 minutes.
#
#   SDLAWS_GIT_SHA=$(git rev-parse --short=12 HEAD) OUT=out/audit bash benchmarks/gpu_bf16_audit.sh
#
# Writes to $OUT: tokens.jsonl (every decoded sequence), audit.csv (per sequence), audit-summary.csv, audit.json,
# audit.md (per configuration, with the verdict). With RESUME set to a folder holding an earlier run's
# tokens.jsonl, it is copied in first and only the configurations it lacks are decoded. NEW_TOKENS=N decodes N
# tokens instead of 256; DTYPE=float32 is the exact reference run (a difference that survives it is not bf16
# rounding), BIG_BATCH=N decodes N prompts instead of 64; SMOKE=1 runs it on CPU in fp32 with tiny shapes.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
out=${OUT:?set OUT to the output folder}
mkdir -p "$out"
if [ -n "${RESUME:-}" ] && [ -f "$RESUME/tokens.jsonl" ]; then cp -n "$RESUME/tokens.jsonl" "$out/"; fi
opts=()
[ -n "${SMOKE:-}" ] && opts+=(--smoke)
[ -n "${NEW_TOKENS:-}" ] && opts+=(--new-tokens "$NEW_TOKENS")
[ -n "${DTYPE:-}" ] && opts+=(--dtype "$DTYPE")
[ -n "${BIG_BATCH:-}" ] && opts+=(--big-batch "$BIG_BATCH")
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_bf16_audit.py "${opts[@]}" --out "$out"
