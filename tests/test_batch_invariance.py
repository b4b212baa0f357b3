"""benchmarks/batch_invariance.py: the AR step's and a verification's kernel calls compared, for the first token's
row (CPU: the kernels in Triton's interpreter, float32)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
triton = pytest.importorskip("triton", reason="Triton (a dependency of CUDA builds of torch; the test extra)")
import batch_invariance  # noqa: E402

from sdlaws.measure import fastpath, kernels  # noqa: E402
from sdlaws.measure.models import load_model  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and not triton.knobs.runtime.interpret,
                                reason="no GPU and Triton's interpreter is off")


@pytest.fixture(scope="module")
def tiny():
    model, _, _ = load_model("random:tiny", dtype="float32", device="cuda" if torch.cuda.is_available() else "cpu")
    fastpath.wrap(model).triton = True
    return model


def test_fp32_verification_gives_the_first_token_the_ar_steps_bits(tiny):
    # 5 tokens: the first token's folded rows (0 and 5) stay where numpy's matmul, the interpreter's dot, sums a row
    # as it does row 0 (it takes another micro-kernel for rows 6 and up of a tile; batch_invariance's docstring)
    with torch.no_grad():
        result = batch_invariance.compare(tiny, prompt=20, n=5, seed=0)
    # per layer: qkv, rope, attention, o, add + RMSNorm (x and h: 2 records), gate/up, down, add + RMSNorm (the next
    # layer's or the final one: 2); then the LM head
    assert result["logits_equal"] and result["diffs"] == [] and result["calls"] == 2 * 10 + 1
    assert "bit-equal" in batch_invariance.report(result)


def test_a_kernel_that_reads_other_rows_is_named(tiny, monkeypatch):
    """Attention made to depend on the number of tokens: the first differing call is layer 0's attention."""
    real = kernels.attention

    def skewed(q, keys, values, mask, n, **kw):
        out = real(q, keys, values, mask, n, **kw)
        return out * (1 + 1e-3 * (n > 1))
    monkeypatch.setattr(kernels, "attention", skewed)
    with torch.no_grad():
        result = batch_invariance.compare(tiny, prompt=20, n=5, seed=0)
    assert not result["logits_equal"]
    assert result["diffs"][0][:2] == (0, "attention")
    assert "layer 0, attention" in batch_invariance.report(result)


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        batch_invariance.parse_args(["--tokens", "1"])
    assert exc.value.code == 2
    assert "at least 2" in capsys.readouterr().err
