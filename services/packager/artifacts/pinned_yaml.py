"""The YAML artifact: the environment pinned exactly (``name=version=build``), pip pins included."""

from __future__ import annotations

from typing import Any

import yaml

from envstore.common.lock import Lock
from envstore.common.pip_requirements import parse_pip_section
from envstore.packager.artifacts.inputs import BuildInputs, Produced


def pinned_environment_yaml(
    lock: Lock, platform: str, environment_name: str, specification: dict[str, Any]
) -> bytes:
    dependencies: list[Any] = [package.pin for package in lock.packages_for(platform)]
    pip_packages = lock.pip_packages_for(platform)
    if pip_packages:
        # Where they came from (the section's index options), then each resolved package pinned.
        options = parse_pip_section(lock.pip).option_lines()
        dependencies.append({"pip": options + [package.pin for package in pip_packages]})
    elif lock.pip:
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


async def produce(inputs: BuildInputs) -> Produced:
    document = pinned_environment_yaml(
        inputs.lock, inputs.platform, inputs.build.environment, inputs.submitted.specification
    )
    blob = await inputs.storage.put_bytes(document)
    return Produced(f"yaml/{inputs.build.build_key}.yml", blob, "text/yaml; charset=utf-8")
