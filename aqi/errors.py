"""Errors that end an `aqi` command with one readable line instead of a traceback."""

from __future__ import annotations

__all__ = ["AqiError", "ServiceError"]


class AqiError(Exception):
    """A failure the user can act on; the CLI prints ``str(err)`` and exits non-zero."""


class ServiceError(AqiError):
    """An embedded or external service could not be started, reached or stopped."""
