"""Bad input to `sdlaws fit` gives one line `error: ...` naming the file or column and the fix, exit code 2."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sdlaws.cli import app

runner = CliRunner()
NSTAR = str(Path(__file__).resolve().parents[1] / "data" / "sdsl_nstar_table.csv")


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
    "missing default column": (lambda d: [NSTAR, "--law", "loglinear"], ["sdsl_nstar_table.csv", "draft_pretrain_tokens"]),
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


#: Spec CSVs of three valid rows but for one change: (column dropped, or first-row values), extra args, fragments.
SPEC_CASES = {
    "missing schema column": (dict(drop="num_drafts"), [], ["num_drafts"]),
    "NaN count": (dict(num_draft_tokens=None), ["--x", "draft_layers", "--y", "acceptance_rate"],
                  ["num_draft_tokens", "empty"]),
    "negative count": (dict(num_accepted_tokens=-5), ["--x", "draft_layers", "--y", "acceptance_rate"],
                       ["num_accepted_tokens", "negative"]),
}


def _spec_csv(path: Path, spec_row, drop: str | None = None, **values) -> str:
    """A measurement CSV of three valid spec rows; ``values`` overwrite the first row, ``drop`` removes a column."""
    frame = pd.DataFrame([spec_row(run_id=f"r{i}", draft_layers=i + 1) for i in range(3)])
    for col, value in values.items():
        frame.loc[0, col] = value
    frame.drop(columns=[drop] if drop else []).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_error_with_exit_code_2(case, tmp_path):
    make_args, fragments = CASES[case]
    _assert_one_line_error(make_args(tmp_path), fragments, tmp_path)


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_spec_rows_are_one_line_errors_with_exit_code_2(case, spec_row, tmp_path):
    change, extra, fragments = SPEC_CASES[case]
    csv = _spec_csv(tmp_path / "spec.csv", spec_row, **change)
    _assert_one_line_error([csv, "--law", "loglinear", *extra], ["spec.csv", *fragments], tmp_path)


def _assert_one_line_error(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    """``sdlaws fit ARGS`` exits 2 with one ``error:`` line holding every fragment, and writes nothing."""
    result = runner.invoke(app, ["fit", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not (tmp_path / "out").exists()  # nothing written on failure
