"""`sdlaws measure` commands."""

import typer


def register(app: typer.Typer) -> None:
    """Add the measure command(s) to the root app."""
