"""`sdlaws plan` commands."""

import typer


def register(app: typer.Typer) -> None:
    """Add the plan command(s) to the root app."""
