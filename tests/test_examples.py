"""Every script in examples/ runs to the end offline, as a user would run it (a subprocess, its own output dir);
a vLLM config an example writes validates against vLLM's documented schema (tests/engine_schemas.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine_schemas import parse_vllm

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples():
    assert EXAMPLES, "examples/ has no scripts"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for config in tmp_path.glob("vllm*.yaml"):
        parse_vllm(config.read_text())
