"""A deployment's hooks, as an administrator would write them (ENVSTORE_VALIDATE_SPECIFICATION,
ENVSTORE_POST_UPDATE_ENVIRONMENT_BUILD_HOOK). Not a test module: the services import it from
PYTHONPATH, which the test stacks point at this directory."""

from __future__ import annotations

import json
import os


def check_specification(*, namespace: str, specification: dict) -> dict | None:
    """Refuses names starting with 'forbidden-'; gives environments named 'stamped-*' the package
    'tinyjson' and a description; breaks (a bug of the hook) in namespace 'hook-bug'."""
    if specification["name"].startswith("forbidden-"):
        raise ValueError(f"environment names starting with 'forbidden-' are reserved ({namespace}); choose another name")
    if namespace == "hook-bug":
        raise KeyError("a bug in the deployment's hook")
    if specification["name"].startswith("stamped-"):
        dependencies = [*specification["dependencies"], "tinyjson"]
        return {**specification, "dependencies": dependencies, "description": "checked by the site hook"}
    return None


def record_current_build(**change: object) -> None:
    """Appends each change of a current build to the file ENVSTORE_TEST_HOOK_RECORD names."""
    with open(os.environ["ENVSTORE_TEST_HOOK_RECORD"], "a") as record:
        record.write(json.dumps({key: str(value) for key, value in change.items()}) + "\n")
