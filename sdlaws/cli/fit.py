"""`sdlaws fit`: fit a scaling law to CSV rows, print the summary, write the fit JSON and a PNG plot.

Input CSVs are either sdlaws measurement tables (they have ``run_id`` and ``status``; only ``ok`` rows are
used), read with :func:`sdlaws.io.read_measurements` and extended with the derived rates of
:func:`sdlaws.rates.derive` (spec tables) or a ``ppl`` column (ppl tables), or plain numeric tables such as the
paper-derived ``data/*.csv``, read as they are. For spec tables whose ``draft_ppl`` / ``target_ppl`` are
empty (the plane laws' regressors), ``--ppl PPL_CSV`` fills them by model name from a ``sdlaws measure ppl`` table.
Heavy imports (pandas, statsmodels, matplotlib) happen inside the command so ``sdlaws --help`` stays fast.
Options are checked before any CSV is read; every fit and comparison is computed before anything is written,
and the JSON, PNG and comparison CSV are installed together (:func:`sdlaws.io.output_group`), so a failing fit
leaves earlier outputs as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from sdlaws.errors import ConfigError, InputError


def register(app: typer.Typer) -> None:
    """Add the ``fit`` command to the root app."""
    app.command("fit")(fit)


def fit(
    csv: Annotated[Optional[list[Path]], typer.Argument(
        help="CSV files or globs: sdlaws measurement tables or plain numeric tables (data/*.csv).",
        show_default=False)] = None,
    law: Annotated[Optional[str], typer.Option(help="Law to fit (see --list).")] = None,
    x: Annotated[Optional[str], typer.Option("--x", help="x column(s), comma-separated (default: the law's).")] = None,
    y: Annotated[Optional[str], typer.Option("--y", help="y column (default: the law's).")] = None,
    group: Annotated[Optional[str], typer.Option(help="Fit once per value of this column.")] = None,
    weight: Annotated[str, typer.Option(help="Weight column, 'auto' (the count behind a derived rate) or 'none'.")]
    = "auto",
    unit: Annotated[Optional[str], typer.Option(help="Column resampled as whole units by the bootstrap (default: "
                                                     "rows); comma-separated columns are crossed factors, each "
                                                     "resampled independently (e.g. draft_name,target_name).")]
    = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples; 0 gives analytic intervals.")] = 0,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    ppl: Annotated[Optional[Path], typer.Option(help="ppl CSV filling empty draft_ppl/target_ppl by model name.")]
    = None,
    compare: Annotated[Optional[str], typer.Option(help="Other law(s), comma-separated, fitted to the same rows and "
                                                        "compared by AIC/BIC (and LR when nested).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for <law>[_<group>].json and .png.")] = Path("out/fit"),
    json_: Annotated[bool, typer.Option("--json", help="Print the fit JSON instead of tables.")] = False,
    table_format: Annotated[str, typer.Option("--format", help="Tables as table (rich; full width when piped), csv "
                                                               "or markdown.")] = "table",
    list_: Annotated[bool, typer.Option("--list", help="List the laws and exit.")] = False,
) -> None:
    """Fit a scaling law to CSV rows; print the summary, write <out>/<law>[_<group>].json and a PNG plot."""
    from sdlaws.cli.output import Output

    out_ = Output(table_format)
    if list_:
        _print_laws(out_)
        return
    if not csv or law is None:
        raise ConfigError("pass CSV file(s) and --law NAME, e.g. `sdlaws fit data/sdsl_nstar_table.csv --law linear "
                          "--x target_params --y nstar_params`; `sdlaws fit --list` shows the laws")
    from sdlaws import checks, io
    from sdlaws.fit import get_law

    rivals = compare.split(",") if compare else []
    for name in (law, *rivals):
        get_law(name)
    checks.output_dir("--out", out)
    df = _read_inputs(csv, ppl)
    fits = _fit(df, law, group, x=None if x is None else x.split(","), y=y, weight=weight, unit=unit, n_boot=bootstrap,
                seed=seed, progress=True)
    tables = _compare(df, fits, rivals, group) if rivals else {}
    stem = out / (law if group is None else f"{law}_{group}")
    with io.output_group():
        written = _write(fits, df, group, stem, tables)
    if json_:
        typer.echo(written[0].read_text(), nl=False)
    else:
        _print_fits(out_, fits, tables, written)


def _read_inputs(paths: list[Path], ppl: Path | None):
    """Read every CSV; measurement tables are validated and get derived rates, plain tables are kept as-is."""
    import pandas as pd

    from sdlaws import io, rates, schema
    from sdlaws.fit import fill_perplexities

    measured: dict[str, list] = {"spec": [], "ppl": [], "step": []}
    frames: dict[str, list] = {kind: [] for kind in [*measured, "plain"]}
    for path in io.expand_paths(paths):
        header = io.csv_header(path)
        if {"run_id", "status"} <= set(header):
            measured[schema.detect_table(pd.DataFrame(columns=header))].append(path)
            continue
        raw = io.read_csv(path)
        if raw.empty:
            raise InputError(f"{path}: no data rows; add rows under the header or pass another CSV")
        frames["plain"].append(raw.assign(source_file=str(path), source_row=range(1, len(raw) + 1)))
    for kind, files in measured.items():  # read together: a configuration repeated in a file counts once
        frames[kind] += [io.read_measurements(files, table=kind, ok_only=True)] if files else []
    if ppl is not None and not frames["spec"]:
        raise ConfigError("--ppl fills draft_ppl/target_ppl of spec measurement tables; pass a spec CSV too")
    parts = frames["step"] + frames["plain"]
    if frames["spec"]:
        spec = rates.derive(pd.concat(frames["spec"], ignore_index=True))
        parts.append(spec if ppl is None else fill_perplexities(spec, io.read_measurements(ppl, table="ppl")))
    if frames["ppl"]:
        table = pd.concat(frames["ppl"], ignore_index=True)
        parts.append(table.assign(ppl=rates.perplexity(table)))
    return pd.concat(parts, ignore_index=True)


def _write(fits: dict[Any, Any], df, group: str | None, stem: Path, tables: dict[Any, Any]) -> list[Path]:
    """Write the fit JSON (one file for all groups), the PNG and, with comparisons, <stem>_compare.csv; returns
    their paths."""
    import pandas as pd

    from sdlaws import io
    from sdlaws.fit import save_fits, used_rows
    from sdlaws.plotting import plot_fits

    json_path = stem.with_suffix(".json")
    if group is None:
        fits[None].save(json_path)
    else:
        save_fits(fits, group, json_path)
    png_path = plot_fits(fits, {g: used_rows(df, f) for g, f in fits.items()}, stem.with_suffix(".png"))
    if not tables:
        return [json_path, png_path]
    compare_path = stem.parent / f"{stem.name}_compare.csv"
    with io.atomic_write(compare_path, newline="") as fh:
        pd.concat({str(g): t for g, t in tables.items()}, names=[group or "group", "name"]).to_csv(fh)
    return [json_path, png_path, compare_path]


def _fit(df, law: str, group: str | None, **options) -> dict[Any, Any]:
    """Fits of ``law`` by group value (the key None when there is no group)."""
    from sdlaws.fit import fit_law, fit_law_by

    return fit_law_by(df, law, group, **options) if group else {None: fit_law(df, law, **options)}


def _compare(df, fits: dict[Any, Any], others: list[str], group: str | None) -> dict[Any, Any]:
    """Fit ``others`` to the same rows as each fit; the comparison table of each group."""
    from sdlaws.fit import compare

    first = next(iter(fits.values()))
    rivals = {name: _fit(df, name, group, x=first.x, y=first.y, weight=first.meta["weight"] or "none",
                         unit=first.meta["unit"]) for name in others}
    return {g: compare({f.law: f, **{name: r[g] for name, r in rivals.items()}}) for g, f in fits.items()}


def _print_fits(out, fits: dict[Any, Any], tables: dict[Any, Any], written: list[Path]) -> None:
    """Per fit a heading, the parameter table, data and fit notes; comparisons; files written."""
    for g, result in fits.items():
        group = "" if result.group is None else f" ({result.meta['group_column']} = {result.group})"
        out.text(f"{result.law}{group}: {result.spec.describe()}", style="bold")
        _frame_table(out, "", result.summary_frame())
        out.text(f"y = {result.y}, x = {', '.join(result.x)}, method = {result.method}, weight = "
                 f"{result.meta['weight']}, nobs = {result.nobs}")
        out.text(result.gof_line())
        for note in result.notes():
            out.text(f"note: {note}", style="yellow")
        if g in tables:
            shown = tables[g].drop(columns="law").dropna(axis=1, how="all")  # LR columns only for nested laws
            _frame_table(out, "", shown)
    out.text(f"wrote {', '.join(map(str, written))}")


def _frame_table(out, title: str, frame) -> None:
    """A DataFrame as a table: index first, floats in 6 significant digits, numeric columns right-aligned."""
    numeric = tuple(i + 1 for i, col in enumerate(frame.columns)
                    if frame[col].map(lambda v: isinstance(v, (int, float))).all())
    rows = [[str(name), *(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row)]
            for name, row in frame.iterrows()]
    out.table(title, ["", *map(str, frame.columns)], rows, right=numeric)


def _print_laws(out) -> None:
    """The law registry as a table: name, equation, default columns, how it is fitted, source."""
    import pandas as pd

    from sdlaws.fit.laws import LAWS

    frame = pd.DataFrame({name: {"equation": s.equation, "x": ",".join(s.x) or "(--x)", "y": s.y or "(--y)",
                                 "fit": f"{s.fitter}: {s.linear_in}", "source": s.citation}
                          for name, s in LAWS.items()}).T
    _frame_table(out, "Laws", frame)
