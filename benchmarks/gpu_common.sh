# Sourced by the benchmarks/gpu_*.sh scripts (run from the repository root): fail in seconds, not after minutes of
# device time, where sdlaws cannot import (a lent GPU image lacked pydantic once), and make the checkout importable
# by modules run as scripts (their sys.path[0] is benchmarks/).
python3 -c "import sdlaws.hardware, sdlaws.measure.engine" || {
  echo "sdlaws does not import here: pip install -e . (or carry its missing wheels)" >&2; exit 2; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The git sha that rows record: .gpu-sha, written (and carried) by each device call, so that a background job
# that outlives a call stamps the tree the call brought; else SDLAWS_GIT_SHA as set.
gpu_sha() { cat .gpu-sha 2>/dev/null || echo "${SDLAWS_GIT_SHA:-}"; }
