"""Appending a row that carries a newer optional column to a file written before it: the file is migrated to the
full header (earlier rows keep their values, the new column its default) and nothing is dropped."""

import csv

import pandas as pd

from sdlaws import io, schema


def test_old_file_is_migrated_when_a_row_has_a_value_in_a_newer_column(tmp_path):
    path = tmp_path / "spec.csv"
    names = [c.name for c in schema.columns("spec") if c.name != "num_steps_per_seq"]
    base = {"run_id": "a", "status": "ok", "method": "ar", "batch_size": 1}
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([names, [base.get(n, "") for n in names]])
    before = path.read_text()
    io.append_row(path, {**base, "run_id": "b"})  # nothing in the missing column: the file keeps its header
    assert path.read_text().startswith(before) and "num_steps_per_seq" not in path.read_text().splitlines()[0]
    io.append_row(path, {**base, "run_id": "c", "num_steps_per_seq": [3, 5]})
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(rows.columns) == [c.name for c in schema.columns("spec")]
    assert rows["run_id"].tolist() == ["a", "b", "c"]
    assert rows["num_steps_per_seq"].tolist() == ["", "", "[3, 5]"]
    assert not list(tmp_path.glob(".*migrate"))
