"""User-facing errors.

Every ``SdlawsError`` message is shown to the user as-is, on one line, by the CLI (exit code 2, no traceback).
A message says what is wrong (naming the file, column or option) and how to fix it.
"""


class SdlawsError(Exception):
    """Base class: an error whose message is written for the user."""

    exit_code = 2


class InputError(SdlawsError):
    """A measurement CSV, fit JSON or hardware profile is malformed, empty or inconsistent."""


class ConfigError(SdlawsError):
    """An option or parameter is impossible (unknown law, negative batch size, gamma < 1, ...)."""


class ModelError(SdlawsError):
    """A model path, hub id or ``random:`` spec cannot be loaded."""
