"""A random secret kept in a file of the data directory: created once (mode 0600) by whichever
process needs it first, then read by every local service, so it survives restarts."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def random_token() -> str:
    return secrets.token_urlsafe(48)


def read_or_create_secret(path: Path, generate: Callable[[], str] = random_token) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = generate()
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it first: use theirs
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as secret_file:
        secret_file.write(candidate)
    return candidate
