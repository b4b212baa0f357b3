"""The README stays true: its test command is the one CI runs, and its schema table names every column."""

from pathlib import Path

from sdlaws import schema

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _block_after(marker: str) -> str:
    rest = README.split(marker, 1)[1]
    return rest.split("```bash\n", 1)[1].split("```", 1)[0].strip()


def test_ci_runs_the_readme_test_command():
    test_cmd = _block_after("<!-- quickstart:test -->")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), f"the README test command is not a line of .ci/run: {test_cmd}"


def test_schema_table_lists_every_column():
    missing = [c.name for table in schema.TABLES.values() for c in table if f"`{c.name}`" not in README]
    assert not missing, f"README 'CSV schema' misses {missing}"



def test_quickstart_main_job_runs_on_shipped_data(tmp_path, monkeypatch):
    """Every `sdlaws ...` step of the quick start's main job succeeds on the data in this repository."""
    import shlex

    from typer.testing import CliRunner

    from sdlaws.cli import app

    main_cmd = _block_after("<!-- quickstart:main -->")
    steps = [s for s in main_cmd.split(" && ") if s.startswith("sdlaws ")]
    assert steps, "the quick start's main job runs no sdlaws command"
    monkeypatch.chdir(ROOT)  # the commands use repository-relative paths
    for step in steps:
        args = [str(tmp_path) if a == "out/quickstart" else a for a in shlex.split(step)[1:]]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"{step}\n{result.output}"
    assert list(tmp_path.glob("*.json")) and list(tmp_path.glob("*.png"))
