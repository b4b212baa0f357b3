"""Perplexity: strided windows score every token once, and the NLL equals a per-token computation by hand."""

import math

import numpy as np
import pytest
import torch

from measure_helpers import tiny_model_dir, tiny_tokenizer
from sdlaws import io, rates
from sdlaws.errors import ConfigError, InputError
from sdlaws.measure.models import load_model
from sdlaws.measure.ppl import evaluate, eval_token_ids, measure_ppl, nll_sum, window_batches, windows


@pytest.fixture(scope="module")
def model():
    m, _, info = load_model("random:tiny?num_hidden_layers=1", dtype="fp32", device="cpu", seed=0)
    return m, info


def _nll_by_hand(model, ids, context_len):
    """-log p(ids[t] | up to context_len - 1 previous tokens), one forward per token: stride-1 sliding windows."""
    total = 0.0
    for t in range(1, len(ids)):
        start = max(0, t - context_len + 1)
        logits = model(torch.tensor([ids[start:t]])).logits[0, -1]
        total -= float(torch.log_softmax(logits.double(), -1)[ids[t]])
    return total


@pytest.mark.parametrize("n, context, stride", [(50, 16, 8), (50, 16, 15), (17, 16, 1), (5, 16, 8), (40, 9, 4)])
def test_windows_score_each_token_once(n, context, stride):
    scored = [t for _, end, first in windows(n, context, stride) for t in range(first, end)]
    assert scored == list(range(1, n))
    assert all(end - begin <= context and begin < first for begin, end, first in windows(n, context, stride))


def test_ppl_equals_exp_mean_nll_by_hand(model, tmp_path):
    m, info = model
    ids = np.random.default_rng(0).integers(0, info.vocab_size, size=30)
    ids_list = ids.tolist()
    with torch.inference_mode():
        full = evaluate(m, None, info, _bin(tmp_path, ids), context_len=64)  # one window holds everything
        stride1 = evaluate(m, None, info, _bin(tmp_path, ids), context_len=8, stride=1)
        hand_full, hand_8 = _nll_by_hand(m, ids_list, 64), _nll_by_hand(m, ids_list, 8)
    assert full.num_eval_tokens == stride1.num_eval_tokens == 29
    assert full.nll_sum_nats == pytest.approx(hand_full, rel=1e-5)
    assert stride1.nll_sum_nats == pytest.approx(hand_8, rel=1e-5)
    ppl = float(rates.perplexity(full.to_row()))
    assert ppl == pytest.approx(math.exp(hand_full / 29), rel=1e-5)
    assert "perplexity" in full.summary()


@pytest.mark.parametrize("context, stride", [(8, 8), (8, 3)])
def test_batched_windows_score_as_one_window_at_a_time(model, monkeypatch, context, stride):
    m, info = model
    ids = np.random.default_rng(1).integers(0, info.vocab_size, size=83)
    groups = window_batches(windows(83, context, stride), 4)
    assert [w for g in groups for w in g] == windows(83, context, stride) and max(map(len, groups)) == 4
    assert all(len({(e - b, f - b) for b, e, f in g}) == 1 for g in groups)   # one shape per group
    batched = nll_sum(m, ids, context_len=context, stride=stride)
    monkeypatch.setattr("sdlaws.measure.ppl.BATCH_WINDOWS", 1)
    single = nll_sum(m, ids, context_len=context, stride=stride)
    assert batched[1] == single[1] == (82 if stride < context else 83 - len(windows(83, context, stride)))
    assert batched[0] == pytest.approx(single[0], rel=1e-5)


def _bin(folder, ids):
    """Write ids as ``folder/test.bin``, little-endian uint16 (the ``sdlaws train`` corpus format)."""
    path = folder / "test.bin"
    np.asarray(ids, dtype="<u2").tofile(path)
    return path


def test_bin_errors(tmp_path, model):
    _, info = model
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x01\x00\x02")
    with pytest.raises(InputError, match="multiple of 2 bytes"):
        eval_token_ids(odd)
    with pytest.raises(InputError, match="vocab size"):
        eval_token_ids(_bin(tmp_path, [1, 2, 600]), vocab_size=info.vocab_size)
    with pytest.raises(InputError, match="no such file"):
        eval_token_ids(tmp_path / "missing.bin")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        eval_token_ids(_text(tmp_path))
    with pytest.raises(ConfigError, match="stride"):
        windows(10, 4, 5)


def _text(tmp_path):
    folder = tmp_path / "held_out"
    folder.mkdir()
    (folder / "a.py").write_text("def f(x):\n    return x + 1\n")
    (folder / "b.txt").write_text("The quick brown fox.")
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    return folder


def test_text_folder_is_joined_in_path_order(tmp_path):
    tok = tiny_tokenizer()
    ids = eval_token_ids(_text(tmp_path), tok)
    expected = tok("def f(x):\n    return x + 1\n\n\nThe quick brown fox.", add_special_tokens=False)["input_ids"]
    assert ids.tolist() == expected


def test_measure_ppl_writes_a_valid_row_once(tmp_path):
    path = tiny_model_dir(tmp_path / "m")
    out = tmp_path / "ppl.csv"
    first = measure_ppl(str(path), _text(tmp_path), out, eval_set="heldout", dtype="fp32", device="cpu",
                        context_len=8, progress=False)
    again = measure_ppl(str(path), tmp_path / "held_out", out, eval_set="heldout", dtype="fp32", device="cpu",
                        context_len=8, progress=False)
    df = io.read_measurements(out, table="ppl")
    assert again is None and len(df) == 1
    row = df.iloc[0]
    assert (row["model_name"], row["eval_set"], row["status"]) == (str(path), "heldout", "ok")
    assert row["num_eval_tokens"] == first.num_eval_tokens and row["nll_sum_nats"] == pytest.approx(first.nll_sum_nats)
