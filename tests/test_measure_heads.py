"""Draft heads as model specs: ``head:random:NAME?layers=L``, head directories, sweep rows, one-line errors."""

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from sdlaws.cli import app
from sdlaws.errors import ModelError
from sdlaws.measure.models import load_model, parse_spec

TINY = "random:tiny?num_hidden_layers=1"
runner = CliRunner()


def test_random_head_spec_has_the_target_shape_and_counts_its_own_weights():
    head, tokenizer, info = load_model("head:random:tiny?layers=2", dtype="fp32", device="cpu")
    assert tokenizer is None and info.head and info.layers == 2 and info.hidden_size == 64
    assert info.params == sum(p.numel() for p in head.parameters())  # no embedding or LM head inside
    assert head.config.target == "random:tiny" and head.config.num_key_value_heads == 2
    eight = parse_spec("head:random:llama-3.1-8b?layers=1")
    assert (eight.kind, eight.name, eight.overrides) == ("head", "llama-3.1-8b", {"layers": 1})
    _, _, target = load_model(TINY, dtype="fp32", device="cpu")
    assert not target.head


@pytest.mark.parametrize("spec, message", [
    ("head:random:nope", "unknown random shape"),
    ("head:random:tiny?layers=0", "layers >= 1"),
    ("head:random:tiny?colour=red", "unknown head config field"),
    ("head:random:tiny?layers", "not key=value"),
])
def test_bad_head_specs_raise_model_error(spec, message):
    with pytest.raises(ModelError, match=message):
        load_model(spec, dtype="fp32", device="cpu")


def test_head_directory_round_trip(tmp_path):
    head, _, _ = load_model("head:random:tiny", dtype="fp32", device="cpu", seed=1)
    target, _, _ = load_model(TINY, dtype="fp32", device="cpu")
    head.attach(target).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded, _, info = load_model(str(tmp_path), dtype="fp32", device="cpu")
    loaded.attach(target)
    assert info.head and info.params == sum(p.numel() for p in head.parameters())
    ids, feats = torch.tensor([[1, 2, 3]]), torch.randn(1, 3, 64)
    torch.testing.assert_close(loaded(ids, feats, torch.arange(3)[None]), head(ids, feats, torch.arange(3)[None]))


def test_sweep_with_a_head_draft_writes_head_rows(tmp_path):
    out = tmp_path / "x.csv"
    args = ["measure", "--target", TINY, "--draft", "head:random:tiny?layers=1", "--gamma", "2", "--topk", "1,2",
            "--prompts", "random", "--num-prompts", "2", "--batch", "2", "--max-new-tokens", "6",
            "--max-prompt-len", "6", "--dtype", "fp32", "--device", "cpu", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out)
    assert (df["status"] == "ok").all() and df["method"].tolist() == ["ar", "chain", "tree"]
    assert df["draft_kind"].fillna("").tolist() == ["", "head", "head"]
    assert (df.loc[1:, "draft_layers"] == 1).all()


def test_perplexity_of_a_head_is_refused(tmp_path):
    (tmp_path / "eval.txt").write_text("def f(x):\n    return x\n" * 20)
    result = runner.invoke(app, ["measure", "ppl", "--model", "head:random:tiny", "--eval", str(tmp_path / "eval.txt"),
                                 "--dtype", "fp32", "--device", "cpu", "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and "is a draft head" in result.output


def test_head_step_timings_feed_the_step_time_law(tmp_path):
    """`measure hardware --model head:random:...` times a draft step; the law prices the head's extra GEMM."""
    from sdlaws.hardware import get_preset
    from sdlaws.measure.hwbench import StepSweep, measure_steps
    from sdlaws.plan.cost import law_time_s, prior, shape_key, step_shape, workload

    spec = "head:random:tiny?layers=2"
    rows = measure_steps(spec, tmp_path / "steps.csv", StepSweep(batch_sizes=(1, 2), tokens_per_row=(1, 3), kv_len=8,
                                                                 num_repeats=2, num_warmup=1), dtype="fp32",
                         device="cpu", progress=False)
    _, _, info = load_model(spec, dtype="fp32", device="cpu")
    assert [r["status"] for r in rows] == ["ok"] * 4 and {r["model_params"] for r in rows} == {info.params}
    head, plain = step_shape(spec), step_shape("random:tiny?num_hidden_layers=2")
    assert (head.layers, head.fc_in, head.vocab) == (2, 128, 512) and shape_key(head) != shape_key(plain)
    assert head.params - plain.params == 2 * 64 * 64 + 64  # the fc, with its bias
    law = prior(get_preset("H100"))
    assert law_time_s(law, workload(head, 1, 1, 512)) > law_time_s(law, workload(plain, 1, 1, 512))
