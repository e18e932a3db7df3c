"""Repository names in URLs → envstore environments: ``<namespace>/<environment>``, or a dynamic
image ``conda-store-dynamic/<spec>/<spec>/...``."""

from __future__ import annotations

from dataclasses import dataclass

from envstore.common.specification import NAME_PATTERN, NAME_RULE
from envstore.registry.dynamic_images import (
    DYNAMIC_NAMESPACE,
    DynamicImageName,
    parse_dynamic_name,
)
from envstore.registry.errors import name_invalid, name_unknown


@dataclass(frozen=True)
class RepositoryName:
    text: str  # as in the URL
    namespace: str
    environment: str
    dynamic: DynamicImageName | None = None

    @property
    def arn(self) -> str:
        return f"{self.namespace}/{self.environment}"


def parse_repository_name(text: str) -> RepositoryName:
    segments = text.split("/")
    if segments[0] == DYNAMIC_NAMESPACE and len(segments) >= 2:
        dynamic = parse_dynamic_name(text, segments[1:])
        return RepositoryName(text, DYNAMIC_NAMESPACE, dynamic.environment, dynamic)
    for segment in segments:
        if not NAME_PATTERN.match(segment):
            raise name_invalid(text, f"{segment!r} may only contain {NAME_RULE}")
    if len(segments) != 2:
        raise name_unknown(
            text,
            "repository names are <namespace>/<environment>, or "
            f"{DYNAMIC_NAMESPACE}/<package>/<package>/... for a dynamic image",
        )
    return RepositoryName(text, segments[0], segments[1])
