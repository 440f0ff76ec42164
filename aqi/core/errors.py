"""Errors that end an `aqi` command with one readable line instead of a traceback, and the
exit codes of `aqi` (documented in the README's "Exit codes")."""

from __future__ import annotations

__all__ = [
    "EXIT_DOWN",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "AqiError",
    "ServiceError",
    "first_line",
]

#: a failure the user can act on (an :class:`AqiError`): one line names the cause
EXIT_ERROR = 1
#: a bad option, argument or configuration variable
EXIT_USAGE = 2
#: ``status`` commands: a service is down
EXIT_DOWN = 3
#: a failure the project did not foresee (a bug): one line, the trace with AQ_DEBUG=1
EXIT_UNEXPECTED = 70
#: Ctrl-C
EXIT_INTERRUPTED = 130


class AqiError(Exception):
    """A failure the user can act on; the CLI prints ``str(err)`` and exits non-zero."""


class ServiceError(AqiError):
    """An embedded or external service could not be started, reached or stopped."""


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error's text (database drivers add hints on more
    lines); the error's type name when it has no text."""
    text = str(error)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line or (type(error).__name__ if isinstance(error, BaseException) else "")
