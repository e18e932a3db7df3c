"""Hashes as conda-store computes them, so identical specs get identical sha256 and keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _sort_key(value: Any) -> str:
    if isinstance(value, (list, dict, tuple)):
        return str(type(value))
    return f"{type(value)}-{value}"


def recursive_sort(value: Any) -> Any:
    """Sort dict keys and list items recursively, ordering by the type and text of each item."""
    if isinstance(value, dict):
        return {key: recursive_sort(value[key]) for key in sorted(value.keys(), key=_sort_key)}
    if isinstance(value, (list, tuple)):
        return [recursive_sort(item) for item in sorted(value, key=_sort_key)]
    return value


def specification_sha256(specification: dict[str, Any]) -> str:
    document = json.dumps(recursive_sort(specification), default=_json_default)
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot hash a {type(value).__name__}")
