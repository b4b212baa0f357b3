#!/usr/bin/env bash
# Continuous against static batching on the same prompts (one H200, about 2 minutes): a random Llama-3.1-8B
# target with a random Llama-3.2-1B draft under synthetic acceptance (every forward real, accept/reject drawn from
# the committed 2048-token sweep's profile, measurements/h200/heldout-profile.json), 256 random 512-token prompts,
# 128 new tokens, chain gamma 3 with its AR baseline, batch 16 and 64, 2 repeats, once per batching mode.
#
#   WORK=/root/ho bash benchmarks/gpu_batching.sh        -> $WORK/batching.csv (appends; done rows are skipped)
#
# Under synthetic acceptance the rows of a batch advance at different rates, so a static batch idles finished
# rows until its slowest one is done; a continuous one refills them. AR rows all finish together (no EOS), so
# there the two modes differ only by the refill's prefills.
set -uo pipefail
. "$(dirname "$0")/gpu_common.sh"
work=${WORK:?set WORK to a scratch folder}
mkdir -p "$work"
for mode in static continuous; do
  SDLAWS_GIT_SHA=$(gpu_sha) python3 -m sdlaws measure --target random:llama-3.1-8b --draft random:llama-3.2-1b \
    --prompts random --num-prompts 256 --max-prompt-len 512 --max-new-tokens 128 --temperature 0 --repeats 2 \
    --acceptance-profile measurements/h200/heldout-profile.json --experiment batching --batch 16,64 --gamma 3 \
    --batching "$mode" --out "$work/batching.csv" 2>&1 | grep -v "━" | tail -n 2
done
