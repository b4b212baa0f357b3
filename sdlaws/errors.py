"""User-facing errors and warnings.

Every ``SdlawsError`` message is shown to the user as-is, on one line, by the CLI (exit code 2 for bad input,
1 for a run that produced nothing, no traceback). A message says what is wrong (naming the file, column or
option) and how to fix it. A :class:`DataWarning` is shown as one ``warning: ...`` line.
"""


import sys
from contextlib import contextmanager

#: Longest ``error`` cell written for a failed measurement row.
MAX_ERROR_CHARS = 500


def error_cell(exc: BaseException) -> str:
    """``Type: message`` on one line, capped at :data:`MAX_ERROR_CHARS`: the ``error`` cell of a failed row.

    A CUDA out-of-memory error is labelled ``out of memory`` (torch is looked up, never imported, here).
    """
    torch = sys.modules.get("torch")
    oom = torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)
    kind = "out of memory" if oom else type(exc).__name__
    return f"{kind}: {' '.join(str(exc).split())}"[:MAX_ERROR_CHARS]


class SdlawsError(Exception):
    """Base class: an error whose message is written for the user."""

    exit_code = 2


@contextmanager
def naming(option: str):
    """Re-raise an :class:`SdlawsError` from the block with ``option`` in front of its message, so that the
    one-line error says which option gave the bad value (``--draft random:nope: unknown random shape ...``)."""
    try:
        yield
    except SdlawsError as exc:
        raise type(exc)(f"{option} {exc}") from None


class InputError(SdlawsError):
    """A measurement CSV, fit JSON or hardware profile is malformed, empty or inconsistent."""


class ConfigError(SdlawsError):
    """An option or parameter is impossible (unknown law, negative batch size, gamma < 1, ...)."""


class ModelError(SdlawsError):
    """A model path, hub id or ``random:`` spec cannot be loaded."""


class RunFailed(SdlawsError):
    """The input was valid but the work produced no result (every configuration of a sweep failed)."""

    exit_code = 1


class DataWarning(UserWarning):
    """Data were repaired or rows left out on reading (a torn last line, a repeated configuration)."""
