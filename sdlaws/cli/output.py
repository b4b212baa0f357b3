"""Text and tables on stdout that survive a pipe (``sdlaws plan ... | cat``, ``> out.txt``).

``--format table`` draws rich tables; on a terminal they fit its width (long cells fold onto more lines, nothing
is cut), elsewhere they print at their natural width, as wide as their content. ``--format csv`` and
``--format markdown`` print the same tables as CSV (text lines become ``#`` comments) or markdown, for scripts and
documents. Values are printed as given: formatting (significant digits) is the caller's, truncation never happens.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Optional

import typer

from sdlaws.errors import ConfigError

FORMATS = ("table", "csv", "markdown")
#: Console width off a terminal: wide enough that no table or line is folded.
PIPE_WIDTH = 100_000


def console():
    """A rich Console: the terminal's width on a terminal, unbounded (no folding, no colour) in a pipe or file."""
    from rich.console import Console

    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=PIPE_WIDTH)


@dataclass
class Output:
    """Where a command prints its text lines and tables, in one of :data:`FORMATS`."""

    fmt: str = "table"
    _console: Any = field(default=None, repr=False)

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ConfigError(f"--format {self.fmt!r}: use one of {', '.join(FORMATS)}")
        if self.fmt == "table":
            self._console = console()

    def text(self, line: str, *, style: Optional[str] = None) -> None:
        """One line of prose (``style``: a rich style for the table format, e.g. ``bold``)."""
        if self.fmt == "table":
            self._console.print(line, style=style, markup=False, highlight=False)
        else:
            typer.echo(f"# {line}" if self.fmt == "csv" else f"{line}\n")

    def table(self, title: str, header: list[str], rows: list[list[str]], *, right: tuple[int, ...] = ()) -> None:
        """A table of strings; ``right``: indices of right-aligned (numeric) columns in the table format."""
        if self.fmt == "table":
            self._console.print(_rich_table(title, header, rows, right))
        elif self.fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
            typer.echo((f"# {title}\n" if title else "") + buffer.getvalue())
        else:
            typer.echo(_markdown(title, header, rows))


def _rich_table(title: str, header: list[str], rows: list[list[str]], right: tuple[int, ...]):
    from rich.table import Table

    table = Table(title=title or None, title_justify="left", header_style="bold")
    for i, name in enumerate(header):
        table.add_column(name, overflow="fold", justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*row)
    return table


def _markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A markdown table under a bold title ('|' in cells escaped)."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    body = [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]
    return "\n".join(([f"**{title}**", ""] if title else []) + body) + "\n"
