"""The YAML artifact: the environment pinned exactly (``name=version=build``), pip pins included."""

from __future__ import annotations

from typing import Any

import yaml

from envstore.common.lock import Lock


def pinned_environment_yaml(
    lock: Lock, platform: str, environment_name: str, specification: dict[str, Any]
) -> bytes:
    dependencies: list[Any] = [package.pin for package in lock.packages_for(platform)]
    if lock.pip:
        dependencies.append({"pip": list(lock.pip)})
    document: dict[str, Any] = {
        "name": environment_name,
        "channels": list(lock.channels),
        "dependencies": dependencies,
    }
    if specification.get("variables"):
        document["variables"] = specification["variables"]
    if specification.get("description"):
        document["description"] = specification["description"]
    return yaml.safe_dump(document, sort_keys=False).encode()
