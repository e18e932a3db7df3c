"""Build keys, conda-store's three versions: they name a build's prefix, artifacts and image tags."""

from __future__ import annotations

import datetime
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from envstore.common.events import BuildSubmitted

MAX_BUILD_PATH = 255


def build_key(
    version: int,
    spec_sha256: str,
    scheduled_on: float,
    build_id: int,
    environment_name: str,
    namespace: str,
) -> str:
    if version == 1:
        stamp = datetime.datetime.fromtimestamp(scheduled_on, datetime.UTC).strftime(
            "%Y%m%d-%H%M%S-%f"
        )
        return f"{spec_sha256}-{stamp}-{build_id}-{environment_name}"
    if version == 2:
        return f"{spec_sha256[:8]}-{int(scheduled_on)}-{build_id}-{environment_name}"
    if version == 3:
        text = f"{namespace}{spec_sha256}{int(scheduled_on)}{build_id}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    raise ValueError(f"unknown build key version {version}; use 1, 2 or 3")


def build_key_of_submission(submitted: BuildSubmitted) -> str:
    """The key of the build a ``build.submitted`` event started."""
    return build_key(
        submitted.build_key_version,
        submitted.spec_sha256,
        submitted.scheduled_on,
        submitted.build_id,
        submitted.environment,
        submitted.namespace,
    )


def build_id_from_key(key: str) -> int | None:
    """The build id inside a v1 or v2 key; None for a v3 key (only a stored lookup finds those)."""
    if len(key) > 8 and key[8] == "-":
        parts = key.split("-")
        return _as_int(parts[2]) if len(parts) > 3 else None
    if "-" not in key:
        return None
    parts = key.split("-")
    return _as_int(parts[4]) if len(parts) > 5 else None


def _as_int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None
