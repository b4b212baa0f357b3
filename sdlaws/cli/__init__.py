"""The ``sdlaws`` command line: a thin shell over the library (parse, build config, call, print).

Each job registers its commands from its own module (``cli/fit.py``, ``cli/measure.py``, ``cli/plan.py``,
``cli/train.py``). Any :class:`~sdlaws.errors.SdlawsError` raised below, and any option the parser rejects, is
printed as one ``error: ...`` line on stderr with its exit code (2 for bad input), never as a traceback; an
operating-system error (disk full, permission denied) is one line with exit code 1. Data warnings
(:class:`~sdlaws.errors.DataWarning`) are one ``warning: ...`` line each.
"""

from __future__ import annotations

import warnings
from functools import partial

import click
import typer
from typer.core import TyperGroup

from sdlaws.errors import DataWarning, SdlawsError


class _Group(TyperGroup):
    """Root group that turns library errors into a one-line message and exit code 2."""

    def invoke(self, ctx):
        with warnings.catch_warnings():
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = partial(_show_warning, fallback=warnings.showwarning)
            try:
                return super().invoke(ctx)
            except click.exceptions.NoArgsIsHelpError:
                raise
            except click.UsageError as exc:  # a sub-command's option the parser rejected
                _fail(ctx, exc.format_message(), exc.exit_code)
            except SdlawsError as exc:
                _fail(ctx, str(exc), exc.exit_code)
            except OSError as exc:
                where = f"{exc.filename}: " if exc.filename else ""
                _fail(ctx, f"{where}{exc.strerror or exc}", 1)


def _fail(ctx, message: str, code: int) -> None:
    """Print ``error: message`` on one line of stderr and exit with ``code``."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    ctx.exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None, *, fallback) -> None:
    """A :class:`DataWarning` as one ``warning: ...`` line on stderr; other warnings as ``fallback`` shows them."""
    if issubclass(category, DataWarning):
        typer.echo(f"warning: {' '.join(str(message).split())}", err=True)
    else:
        fallback(message, category, filename, lineno, file, line)


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Measure speculative decoding, fit its scaling laws, and plan drafts and serving settings.")


@app.callback()
def _root() -> None:
    """Keep ``sdlaws`` a command group (and its error handling) even while only one command is registered."""


def _register() -> None:
    from sdlaws.cli import fit, measure, plan, train

    for module in (measure, fit, plan, train):
        module.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
