"""Generated secrets under ``AQ_HOME/secrets``.

The embedded services get passwords generated on first use (never a default like
admin/admin); each is one 0600 file in a 0700 folder so that only the owner can read it,
and the same value is reused on every later start.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["get_or_create_secret", "secret_path", "show_once", "write_private"]


def secret_path(secrets_dir: Path, name: str) -> Path:
    """Where the secret ``name`` lives (whether or not it exists yet)."""
    return secrets_dir / name


def get_or_create_secret(
    secrets_dir: Path, name: str, *, nbytes: int = 24, factory: Callable[[], str] | None = None
) -> str:
    """Return the secret ``name``, generating and storing it (0600) the first time.

    ``factory`` makes values of a required shape (a Fernet key, say); the default is
    ``nbytes`` random bytes, URL-safe base64 (so the value fits in a URL unquoted).
    """
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    path = secret_path(secrets_dir, name)
    if path.is_file():
        value = path.read_text().strip()
        if value:
            return value
    value = factory() if factory is not None else secrets.token_urlsafe(nbytes)
    write_private(path.with_suffix(".tmp"), value + "\n")
    os.replace(path.with_suffix(".tmp"), path)
    return value


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that is 0600 from its creation (never readable by others,
    not even for the moment between a write and a chmod)."""
    path.unlink(missing_ok=True)  # an existing file would keep its mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def show_once(secret: str, marker: Path, show: Callable[[str], None]) -> bool:
    """Call ``show(secret)`` unless ``marker`` says this very secret was already shown.

    The marker keeps a fingerprint (a truncated SHA-256), never the secret, so a password
    that is generated anew (its file was deleted) is shown again once. Returns whether it
    was shown.
    """
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:16]
    if marker.is_file() and marker.read_text().strip() == fingerprint:
        return False
    show(secret)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint + "\n")
    return True
