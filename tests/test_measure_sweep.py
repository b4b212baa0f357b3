"""Sweeps: grid expansion, resume without duplicates, failed configurations recorded, schema-valid rows."""

import math

import pytest

import csv

from measure_helpers import fake_factory, tiny_model_dir
from sdlaws import io, rates, schema
from sdlaws.errors import ConfigError, ModelError
from sdlaws.measure.config import MeasureConfig
from sdlaws.measure.models import load_model
from sdlaws.measure.sweep import expand_grid, full_batches, run_id, run_sweep

TARGET = "random:tiny?num_hidden_layers=1"


def _config(**kw):
    base = dict(targets=(TARGET,), drafts=(TARGET,), num_spec_tokens=(1, 2), topks=(1,), batch_sizes=(1, 2),
                temperatures=(0.0,), prompts="random", num_prompts=3, max_new_tokens=4, max_prompt_len=6,
                dtype="fp32", device="cpu")
    return MeasureConfig(**{**base, **kw})


def test_grid_expansion():
    config = _config(drafts=("d1", "d2"), num_spec_tokens=(2, 4), topks=(1, 3), batch_sizes=(1, 8),
                     temperatures=(0.0, 1.0))
    runs = expand_grid(config)
    assert len(runs) == 4 + 2 * 2 * 2 * 2 * 2  # ar per (batch, T) + drafts x num_spec_tokens x topk x batch x T
    assert [r.method for r in runs[:4]] == ["ar"] * 4 and all(r.draft is None for r in runs[:4])
    chains = [r for r in runs if r.method == "chain"]
    trees = [r for r in runs if r.method == "tree"]
    assert len(chains) == len(trees) == 16
    assert all(r.tree_topk == 1 and r.tree_budget == r.num_spec_tokens for r in chains)
    assert all(r.tree_topk == 3 and r.tree_budget == 3 * r.num_spec_tokens for r in trees)
    assert len(set(runs)) == len(runs)


@pytest.mark.parametrize("kw, message", [
    (dict(targets=()), "no target"), (dict(num_spec_tokens=(0,)), "--num-spec-tokens"),
    (dict(batch_sizes=(2, -1)), "--batch -1 is out of range"),
    (dict(temperatures=(-1.0,)), "temperature"), (dict(prompts="nope.jsonl"), "neither a built-in set"),
    (dict(dtype="int4"), "unknown dtype")])
def test_bad_config(kw, message):
    with pytest.raises(Exception, match=message) as err:
        _config(**kw)
    assert isinstance(err.value, ConfigError) or type(err.value).__name__ == "ModelError"


def test_full_batches_repeat_prompts_to_fill_the_last_batch():
    assert full_batches([[1], [2], [3]], 2) == [[[1], [2]], [[3], [1]]]
    assert full_batches([[1], [2]], 4) == [[[1], [2], [1], [2]]]


def test_resume_skips_ok_rows_and_adds_no_duplicates(tmp_path):
    out = tmp_path / "x.csv"
    factory, calls = fake_factory()
    first = run_sweep(_config(), out, decoder_factory=factory, progress=False)
    assert (first.num_runs, first.num_ok, first.num_skipped) == (6, 6, 0)
    df = io.read_measurements(out, table="spec")
    assert len(df) == 6 and df["run_id"].is_unique and set(df["status"]) == {"ok"}
    # each configuration decodes ceil(3 / b) full batches of b sequences
    assert sorted(df["num_prompts"]) == [3, 3, 3, 4, 4, 4]
    assert (df["num_new_tokens"] == df["num_prompts"] * 4).all()
    n_calls = len(calls)
    second = run_sweep(_config(), out, decoder_factory=factory, progress=False)
    assert (second.num_ok, second.num_skipped) == (0, 6) and len(calls) == n_calls
    assert len(io.read_measurements(out, table="spec")) == 6
    bigger = run_sweep(_config(num_spec_tokens=(1, 2, 3)), out, decoder_factory=factory, progress=False)
    assert (bigger.num_ok, bigger.num_skipped) == (2, 6)
    assert io.read_measurements(out, table="spec")["run_id"].is_unique


def test_failed_configuration_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "x.csv"
    factory, _ = fake_factory(fail_num_spec_tokens={2})
    result = run_sweep(_config(), out, decoder_factory=factory, progress=False)
    df = io.read_measurements(out, table="spec")
    failed = df[df["status"] == "failed"]
    assert len(df) == 6 and len(failed) == 2 and len(result.failures) == 2
    assert (failed["num_spec_tokens"] == 2).all()
    assert failed["error"].str.contains("RuntimeError: simulated failure at num_spec_tokens=2").all()
    assert failed["num_new_tokens"].isna().all()
    # a re-run retries only the failed configurations; the failed rows stay (nothing is lost)
    retry = run_sweep(_config(), out, decoder_factory=fake_factory()[0], progress=False)
    assert (retry.num_ok, retry.num_skipped) == (2, 4)
    assert len(io.read_measurements(out, table="spec", ok_only=True)) == 6


def test_missing_model_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "x.csv"
    config = _config(drafts=(str(tmp_path / "missing_model"),), num_spec_tokens=(2,), batch_sizes=(1,))
    with pytest.raises(ModelError, match="--draft .*missing_model: no such model directory"):
        run_sweep(config, out, decoder_factory=fake_factory()[0], progress=False)
    assert not out.exists()


def test_weights_that_do_not_load_fail_their_rows_only(tmp_path):
    """A model whose config reads but whose weights do not load (corrupt file, out of memory) fails its rows."""
    out = tmp_path / "x.csv"
    draft = "random:tiny?num_hidden_layers=2"

    def loader(spec, **kwargs):
        if spec == draft:
            raise OSError("weights file is truncated")
        return load_model(spec, **kwargs)

    config = _config(drafts=(draft,), num_spec_tokens=(2,), batch_sizes=(1,))
    result = run_sweep(config, out, decoder_factory=fake_factory()[0], loader=loader, progress=False)
    df = io.read_measurements(out, table="spec")
    assert list(df["method"]) == ["ar", "chain"] and list(df["status"]) == ["ok", "failed"]
    assert "weights file is truncated" in df["error"].iloc[1] and len(result.failures) == 1


def test_rows_carry_model_metadata_and_perplexities(tmp_path):
    draft = tiny_model_dir(tmp_path / "draft", train_meta={"params": 777, "layers": 1, "pretrain_tokens": 2e6})
    ppl_csv = tmp_path / "ppl.csv"
    for name, nll in [(TARGET, 20.0), (str(draft), 40.0)]:
        io.append_row(ppl_csv, {"run_id": name, "status": "ok", "timestamp_utc": "t", "git_sha": "x",
                                "sdlaws_version": "0", "gpu_name": "cpu", "model_name": name, "eval_set": "held",
                                "num_eval_tokens": 10, "nll_sum_nats": nll}, "ppl")
    config = _config(drafts=(str(draft),), num_spec_tokens=(2,), batch_sizes=(1,), ppl_file=str(ppl_csv))
    run_sweep(config, tmp_path / "x.csv", decoder_factory=fake_factory()[0], progress=False)
    row = io.read_measurements(tmp_path / "x.csv", table="spec").iloc[1]
    assert (row["draft_params"], row["draft_pretrain_tokens"]) == (777, 2e6)
    assert row["target_ppl"] == pytest.approx(math.exp(20.0 / 10))  # exp(nll_sum_nats / num_eval_tokens)
    assert row["draft_ppl"] == pytest.approx(math.exp(40.0 / 10))


def test_real_engine_self_draft_accepts_everything(tmp_path):
    """End to end with sdlaws's SpecDecoder: a draft identical to the target is always accepted at T=0."""
    out = tmp_path / "x.csv"
    config = _config(num_spec_tokens=(2,), topks=(1, 2), batch_sizes=(2,), num_prompts=2, max_new_tokens=6)
    result = run_sweep(config, out, progress=False)
    assert result.num_ok == 3, result.summary()
    df = rates.derive(io.read_measurements(out, table="spec"))
    spec = df[df["method"] != "ar"]
    assert (spec["num_accepted_tokens"] > 0).all()
    chain = spec[spec["method"] == "chain"].iloc[0]
    assert chain["acceptance_rate"] == 1.0 and chain["mean_acceptance_length"] == 3.0
    assert (df["num_new_tokens"] == 2 * 6).all() and (df["total_time_s"] > 0).all()


def test_continuous_rows_get_their_own_ids_and_baselines(tmp_path):
    """Static and continuous rows of one grid share a CSV without colliding; each compares with its own AR rows;
    static rows keep the ids they had before the option existed."""
    out = tmp_path / "x.csv"
    factory, _ = fake_factory()
    static, continuous = _config(), _config(batching="continuous")
    run = expand_grid(static)[0]
    assert run_id(run, static, "cpu") != run_id(run, continuous, "cpu")
    assert run_id(run, static, "cpu") == "9115b55f2dcac5ab"  # the id it had before --batching existed
    run_sweep(static, out, decoder_factory=factory, progress=False)
    result = run_sweep(continuous, out, decoder_factory=factory, progress=False)
    assert (result.num_ok, result.num_skipped) == (6, 0)
    df = rates.derive(io.read_measurements(out, table="spec"))
    assert df["run_id"].is_unique and list(df["batching"]) == ["static"] * 6 + ["continuous"] * 6
    cont = df[df["batching"].eq("continuous")]
    assert (cont["num_prompts"] == 3).all() and sorted(cont["num_batches"]) == [2, 2, 2, 3, 3, 3]  # no repeats
    # the fake's continuous timings equal its static ones per batch, so only a same-mode baseline gives 1.0 for ar
    assert (df.loc[df["method"].eq("ar"), "speedup"] == 1.0).all()
    again = run_sweep(continuous, out, decoder_factory=factory, progress=False)
    assert (again.num_ok, again.num_skipped) == (0, 6)


def test_real_engine_continuous_sweep(tmp_path):
    """End to end with SpecDecoder.serve: 5 prompts over 2 rows, each prompt decoded once (no repeats)."""
    out = tmp_path / "x.csv"
    config = _config(num_spec_tokens=(2,), topks=(1, 2), batch_sizes=(2,), num_prompts=5, max_new_tokens=6,
                     batching="continuous")
    result = run_sweep(config, out, progress=False)
    assert result.num_ok == 3, result.summary()
    df = rates.derive(io.read_measurements(out, table="spec"))
    assert (df["num_prompts"] == 5).all() and (df["num_new_tokens"] == 5 * 6).all() and (df["num_batches"] == 3).all()
    assert df["num_steps_per_seq"].map(lambda cell: len(rates.count_list(cell))).eq(5).all()
    chain = df[df["method"] == "chain"].iloc[0]
    assert chain["acceptance_rate"] == 1.0 and chain["speedup"] > 0  # self draft; AR baseline of the same mode


def test_old_csv_without_batching_takes_static_rows_as_is_and_migrates_for_continuous(tmp_path, spec_row):
    old = tmp_path / "old.csv"
    names = [c.name for c in schema.SPEC_RUN if c.name != "batching"]
    with open(old, "w", newline="") as fh:
        csv.writer(fh).writerow(names)
    row = {k: v for k, v in spec_row().items() if k in names}
    io.append_row(old, {**row, "batching": "static"})
    assert "batching" not in io.csv_header(old)  # nothing to record: absent = static
    assert schema.batching_modes(io.read_measurements(old, table="spec")).tolist() == ["static"]
    io.append_row(old, {**row, "run_id": "c", "batching": "continuous"})
    df = io.read_measurements(old, table="spec")
    assert df["batching"].tolist() == ["static", "continuous"]
