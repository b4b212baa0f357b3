"""Bad input to `sdlaws fit` gives one line `error: ...` naming the file or column and the fix, exit code 2."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sdlaws.cli import app
from test_fit_cli import DATA, spec_row

runner = CliRunner()
NSTAR = str(DATA / "sdsl_nstar_table.csv")


def _spec_csv(path: Path, rows: int = 3, drop: str | None = None, **values) -> str:
    """A measurement CSV of ``rows`` valid spec rows; ``values`` overwrite the first row, ``drop`` removes a column."""
    frame = pd.DataFrame([spec_row(run_id=f"r{i}", draft_layers=i + 1) for i in range(rows)])
    for col, value in values.items():
        frame.loc[0, col] = value
    frame.drop(columns=[drop] if drop else []).to_csv(path, index=False)
    return str(path)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


CASES = {
    "malformed": (lambda d: [_write(d / "bad.csv", "x,y\n1,2\n3,4,5\n"), "--law", "linear", "--x", "x", "--y", "y"],
                  ["bad.csv", "not a valid CSV"]),
    "empty file": (lambda d: [_write(d / "empty.csv", ""), "--law", "linear", "--x", "x", "--y", "y"],
                   ["empty.csv", "empty"]),
    "header only": (lambda d: [_write(d / "head.csv", "x,y\n"), "--law", "linear", "--x", "x", "--y", "y"],
                    ["head.csv", "no data rows"]),
    "measurement without rows": (lambda d: [_write(d / "m.csv", "run_id,status\n"), "--law", "loglinear"],
                                 ["m.csv", "no data rows"]),
    "missing schema column": (lambda d: [_spec_csv(d / "spec.csv", drop="num_drafts"), "--law", "loglinear"],
                              ["spec.csv", "num_drafts"]),
    "missing default column": (lambda d: [NSTAR, "--law", "loglinear"], ["sdsl_nstar_table.csv", "draft_pretrain_tokens"]),
    "NaN count": (lambda d: [_spec_csv(d / "nan.csv", num_draft_tokens=None), "--law", "loglinear", "--x",
                             "draft_layers", "--y", "acceptance_rate"], ["nan.csv", "num_draft_tokens", "empty"]),
    "negative count": (lambda d: [_spec_csv(d / "neg.csv", num_accepted_tokens=-5), "--law", "loglinear", "--x",
                                  "draft_layers", "--y", "acceptance_rate"], ["neg.csv", "num_accepted_tokens", "negative"]),
    "negative weight": (lambda d: [_write(d / "w.csv", "x,y,n\n1,2,5\n2,3,-1\n3,5,4\n"), "--law", "linear", "--x", "x",
                                   "--y", "y", "--weight", "n"], ["w.csv line 3", "column n", "positive"]),
    "too few rows": (lambda d: [_write(d / "two.csv", "x,y\n1,2\n2,3\n"), "--law", "linear", "--x", "x", "--y", "y"],
                     ["two.csv", "2 parameters", "at least 3"]),
    "too few rows in a group": (lambda d: [NSTAR, "--law", "saturating", "--x", "target_params", "--y", "nstar_params",
                                           "--group", "source"], ["source = SDSL digest 2", "at least 4"]),
    "unknown law": (lambda d: [NSTAR, "--law", "cubic"], ["unknown law 'cubic'", "--list"]),
    "unknown x": (lambda d: [NSTAR, "--law", "linear", "--x", "params", "--y", "nstar_params"],
                  ["sdsl_nstar_table.csv", "'params'", "available"]),
    "unknown y": (lambda d: [NSTAR, "--law", "linear", "--x", "target_params", "--y", "nstar"], ["'nstar'"]),
    "non-numeric x": (lambda d: [NSTAR, "--law", "linear", "--x", "target", "--y", "nstar_params"],
                      ["sdsl_nstar_table.csv line 2", "target", "not a number"]),
    "x outside the domain": (lambda d: [_write(d / "z.csv", "x,y\n0,1\n1,2\n2,3\n3,3\n"), "--law", "loglinear",
                                        "--x", "x", "--y", "y"], ["z.csv line 2", "> 0"]),
    "wrong number of x columns": (lambda d: [NSTAR, "--law", "ppl_plane", "--x", "target_params", "--y",
                                             "nstar_params"], ["ppl_plane takes 2 x column"]),
    "missing file": (lambda d: [str(d / "nope.csv"), "--law", "linear"], ["nope.csv", "no such file"]),
    "no csv": (lambda d: ["--law", "linear"], ["pass CSV file"]),
    "ppl without spec": (lambda d: [NSTAR, "--law", "ppl_plane", "--ppl", NSTAR], ["--ppl"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_error_with_exit_code_2(case, tmp_path):
    make_args, fragments = CASES[case]
    result = runner.invoke(app, ["fit", *make_args(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not (tmp_path / "out").exists()  # nothing written on failure
