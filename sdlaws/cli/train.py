"""`sdlaws train` commands."""

import typer


def register(app: typer.Typer) -> None:
    """Add the train command(s) to the root app."""
