"""The ``sdlaws`` command line: a thin shell over the library (parse, build config, call, print).

Each job registers its commands from its own module (``cli/fit.py``, ``cli/measure.py``, ``cli/plan.py``,
``cli/validate.py``, ``cli/train.py``, ``cli/experiment.py``, ``cli/ingest.py``). Any
:class:`~sdlaws.errors.SdlawsError` raised below is printed as one line on stderr with exit code 2, never as a
traceback.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from sdlaws.errors import SdlawsError


class _Group(TyperGroup):
    """Root group that turns library errors into a one-line message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SdlawsError as exc:
            typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
            ctx.exit(exc.exit_code)


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
