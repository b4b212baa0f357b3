"""benchmarks/attention_paths.py on CPU: the smoke cases end to end (every implementation checked against the
float32 reference, the CSV's columns), a mask ignored caught, and bad input refused before anything is written."""

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import attention_paths  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_smoke_run_checks_every_implementation(tmp_path, capsys):
    out = tmp_path / "attention.csv"
    assert attention_paths.main(["--device", "cpu", "--out", str(out)]) == 0
    rows = _rows(out)
    assert list(rows[0]) == attention_paths.COLUMNS
    cases = {(int(r["batch"]), int(r["n"]), int(r["slots"])) for r in rows}
    assert cases == set(attention_paths.SMOKE)
    assert len(rows) == len(cases) * len(attention_paths.IMPLS)
    by = {(r["batch"], r["impl"]): r for r in rows}
    for r in rows:
        # CPU has no efficient or cuDNN kernel: those are skipped with PyTorch's reason; the others pass
        assert r["status"] == ("skipped" if r["impl"] in ("sdpa-efficient", "sdpa-cudnn") else "ok"), r
        if r["status"] == "ok":
            assert float(r["us"]) > 0 and float(r["max_abs_err"]) <= float(r["tolerance"]) == 1e-3
            assert float(r["floor_pct_live"]) > 0
        assert int(r["live_kv_bytes"]) <= int(r["all_kv_bytes"])
    one = by[("1", "sdpa-default")]  # batch 1: S - n - 16 live slots, keys and values of 8 KV heads of 128, fp32
    assert int(one["live_min"]) == int(one["live_max"]) == 128 - 1 - 16 == int(one["slice_len"])
    assert int(one["live_kv_bytes"]) == 111 * 8 * 128 * 2 * 4 and int(one["all_kv_bytes"]) == 128 * 8 * 128 * 2 * 4
    ragged = by[("4", "sdpa-default")]  # rows spread over [S/2, S - n]
    assert (int(ragged["live_min"]), int(ragged["live_max"])) == (64, 123)
    md = capsys.readouterr().out
    assert md.count("\n| ") == len(rows) + 1 and "git `" in md


def test_an_implementation_ignoring_the_mask_fails_loudly(tmp_path, monkeypatch):
    def nomask(x, device):
        return (lambda: attention_paths.F.scaled_dot_product_attention(x.q_fold, x.keys, x.values)), "", "masked"
    monkeypatch.setitem(attention_paths.IMPLS, "nomask", nomask)
    out = tmp_path / "attention.csv"
    argv = ["--device", "cpu", "--cases", "1x1x64,3x5x64", "--impls", "sdpa-default,nomask", "--out", str(out)]
    assert attention_paths.main(argv) == 1
    status = {(r["batch"], r["impl"]): (r["status"], float(r["max_abs_err"])) for r in _rows(out)}
    assert status[("1", "sdpa-default")][0] == status[("3", "sdpa-default")][0] == "ok"
    assert status[("1", "nomask")][0] == status[("3", "nomask")][0] == "WRONG"
    assert status[("3", "nomask")][1] > 0.5  # pads hold values of 8


@pytest.mark.parametrize("argv", [["--cases", "1x2"], ["--cases", "0x1x384"], ["--cases", "1x16x40"],
                                  ["--impls", "sdpa-default,nope"], ["--dtype", "int3"], ["--repeats", "0"]])
def test_bad_input_is_one_line_and_nothing_written(tmp_path, capsys, argv):
    out = tmp_path / "attention.csv"
    with pytest.raises(SystemExit) as exc:
        attention_paths.main(["--device", "cpu", *argv, "--out", str(out)])
    assert exc.value.code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
