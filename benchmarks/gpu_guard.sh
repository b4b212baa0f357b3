#!/usr/bin/env bash
# GPU regression guard (benchmarks/gpu_guard.py): sdlaws AR, chain and tree decoding of a random Llama-3.1-8B
# target with a random Llama-3.2-1B draft, bare forwards, HF static-cache generate, the copy bandwidth and matmul
# rate, each configuration's bandwidth floor; then the engine's GPU tests. One H200: about 5 minutes.
#
#   SDLAWS_GIT_SHA=$(git rev-parse --short=12 HEAD) OUT=out/guard bash benchmarks/gpu_guard.sh
#
# Writes to $OUT (at most 8 files): hw.json, spec.csv, steps.csv, hf.jsonl (measurements), pytest.txt (GPU
# tests), guard.csv, guard.json, guard.md (the report). With RESUME set to a folder holding an earlier run's
# files, those are copied in first and only what they lack is measured. NEW_TOKENS=N decodes N tokens instead of
# 256 (a shorter run); SMOKE=1 runs it on CPU with tiny shapes.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
out=${OUT:?set OUT to the output folder}
mkdir -p "$out"
if [ -n "${RESUME:-}" ]; then
  for f in spec.csv steps.csv hf.jsonl pytest.txt; do [ -f "$RESUME/$f" ] && cp -n "$RESUME/$f" "$out/"; done
fi
opts=()
[ -n "${SMOKE:-}" ] && opts+=(--smoke)
[ -n "${NEW_TOKENS:-}" ] && opts+=(--new-tokens "$NEW_TOKENS")
export PYTHONUNBUFFERED=1
python3 benchmarks/gpu_guard.py "${opts[@]}" --out "$out" 2>&1 | grep -v "━"
if [ -z "${SMOKE:-}" ] && [ ! -s "$out/pytest.txt" ]; then
  # the engine's CUDA-graph tests, after the timings so that a cut run keeps those; skipped on a CPU smoke run
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_engine_gpu.py > "$out/pytest.txt" 2>&1
  python3 benchmarks/gpu_guard.py "${opts[@]}" --report-only --out "$out" > /dev/null
fi
if [ -f "$out/pytest.txt" ]; then tail -n 1 "$out/pytest.txt"; fi
