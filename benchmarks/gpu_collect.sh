#!/usr/bin/env bash
# Pack what benchmarks/gpu_session.sh has written so far into $OUT as two files (a device call returns at most 8):
# session.tgz (every CSV, JSON and markdown result, no checkpoints) and session.log.
set -uo pipefail
work=${WORK:?set WORK to the scratch folder of gpu_session.sh}
out=${OUT:?set OUT to the output folder}
tail -c 4000 "$work/session.log" 2>/dev/null
(cd "$work" && find . -path ./runs -prune -o -path ./runs-heads -prune -o \
  \( -name '*.csv' -o -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.txt' \) -type f -print0 \
  | tar czf "$out/session.tgz" --null -T -)
cp "$work/session.log" "$out/" 2>/dev/null
ls -la "$out"
