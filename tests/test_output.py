"""Output that survives a pipe: plan and fit tables keep every column and every digit off a terminal, --format
csv|markdown prints the same tables for scripts, and help texts keep their [brackets]."""

import csv
import io
from pathlib import Path

from typer.testing import CliRunner

from sdlaws.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()  # its stdout is not a terminal: what `sdlaws ... | cat` sees
SERVING_HEADER = ["batch", "AR tok/s", "chain num_spec_tokens", "Leviathan num_spec_tokens", "chain speedup",
                  "tree num_spec_tokens/topk/verify", "tree top-k", "tree speedup", "verify", "fits"]
PLAN = ["plan", "serving", "--target", "llama-3.1-70b", "--hardware", "h200", "--samples", "20", "--batch",
        "1,8,64,256"]


def test_piped_plan_table_keeps_every_column_and_cell():
    result = runner.invoke(app, PLAN)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "Leviathan num_spec_tokens" in line)
    assert all(name in header for name in SERVING_HEADER)
    assert "…" not in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ 64 ")]
    assert len(rows) == 1 and rows[0].count("│") == len(SERVING_HEADER) + 1  # one line: no cell folded


def test_plan_csv_and_markdown():
    table = runner.invoke(app, [*PLAN, "--format", "csv"]).stdout
    block = table.split("# Serving settings per batch size (roofline, 95% interval)\n", 1)[1].split("\n\n", 1)[0]
    rows = list(csv.reader(io.StringIO(block)))
    assert rows[0] == SERVING_HEADER and [r[0] for r in rows[1:]] == ["1", "8", "64", "256"]
    assert all(len(r) == len(SERVING_HEADER) for r in rows)
    markdown = runner.invoke(app, [*PLAN, "--format", "markdown"]).stdout
    assert "| " + " | ".join(SERVING_HEADER) + " |" in markdown
    bad = runner.invoke(app, [*PLAN, "--format", "html"])
    assert bad.exit_code == 2 and bad.output.startswith("error: --format")


def test_piped_fit_lines_are_whole(tmp_path):
    data = ROOT / "measurements" / "acceptance" / "pretrain-tokens.csv"
    result = runner.invoke(app, ["fit", str(data), "--law", "loglinear", "--x", "draft_pretrain_tokens", "--y",
                                 "alpha_mle", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("y = alpha_mle, x = draft_pretrain_tokens, method = ") and "nobs = " in line
               for line in result.stdout.splitlines())
    as_csv = runner.invoke(app, ["fit", str(data), "--law", "loglinear", "--x", "draft_pretrain_tokens", "--y",
                                 "alpha_mle", "--out", str(tmp_path), "--format", "csv"]).stdout
    params = [r for r in csv.reader(io.StringIO(as_csv)) if r and not r[0].startswith("#")]
    assert params[0][1:3] == ["coef", "std err"] and {r[0] for r in params[1:3]} == {"a", "b"}


def test_help_keeps_brackets():
    measure = runner.invoke(app, ["measure", "--help"]).stdout
    assert "hub id[@revision]" in measure and "[default: top-k x depth]" in measure
    assert "<law>[_<group>].json" in runner.invoke(app, ["fit", "--help"]).stdout
