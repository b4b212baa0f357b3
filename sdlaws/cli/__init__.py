"""The ``sdlaws`` command line: a thin shell over the library (parse, build config, call, print).

Each job registers its commands from its own module (``cli/fit.py``, ``cli/measure.py``, ``cli/plan.py``,
``cli/validate.py``, ``cli/train.py``, ``cli/experiment.py``, ``cli/ingest.py``). Any
:class:`~sdlaws.errors.SdlawsError` raised below, and any option the parser rejects, is printed as one
``error: ...`` line on stderr with its exit code (2 for bad input), never as a traceback; an operating-system error
(disk full, permission denied) is one line with exit code 1. Data warnings (:class:`~sdlaws.errors.DataWarning`)
are one ``warning: ...`` line each.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import partial

import typer
from typer.core import TyperGroup

from sdlaws.errors import DataWarning, SdlawsError

# The parser's usage error (click's, or the copy of click that typer >= 0.26 vendors): BadParameter's base.
_USAGE_ERROR = typer.BadParameter.__bases__[0]


class _Group(TyperGroup):
    """Root group that turns library errors, parser errors and data warnings into one-line messages."""

    def parse_args(self, ctx, args):
        with _one_line_errors(ctx):  # the root's own options (sub-commands parse theirs inside invoke)
            return super().parse_args(ctx, args)

    def invoke(self, ctx):
        with warnings.catch_warnings():
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = partial(_show_warning, fallback=warnings.showwarning)
            with _one_line_errors(ctx):
                return super().invoke(ctx)


@contextmanager
def _one_line_errors(ctx):
    """Print ``error: ...`` on one line of stderr and exit with the error's code for a parser error, a
    :class:`SdlawsError` (2 for bad input) or an operating-system error (1)."""
    try:
        yield
    except _USAGE_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: show its help, as asked
            raise
        _fail(ctx, exc.format_message(), exc.exit_code)
    except SdlawsError as exc:
        _fail(ctx, str(exc), exc.exit_code)
    except OSError as exc:
        _fail(ctx, f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc), 1)


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


# rich_markup_mode=None: help texts are plain text, so "[@revision]" or "[default: ...]" in them print as written
# (rich markup would swallow them) and help stays whole in a pipe (no 80-column panels cutting option names).
app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Measure speculative decoding, fit its scaling laws, and plan drafts and serving settings.")


@app.callback()
def _root() -> None:
    """Keep ``sdlaws`` a command group (and its error handling) even while only one command is registered."""


def _register() -> None:
    from sdlaws.cli import experiment, fit, ingest, measure, plan, train, validate

    for module in (measure, fit, plan, validate, train, experiment, ingest):
        module.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
