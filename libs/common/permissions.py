"""conda-store's authorization model: roles → permission strings, ARN patterns, role bindings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

VIEWER = frozenset({"environment::read", "namespace::read", "namespace-role-mapping::read"})
EDITOR = VIEWER | {
    "build::cancel",
    "environment:create",
    "environment::update",
    "environment::solve",
    "setting::read",
}
ADMIN = EDITOR | {
    "build::delete",
    "environment::delete",
    "namespace::create",
    "namespace::update",
    "namespace::delete",
    "namespace-role-mapping::create",
    "namespace-role-mapping::update",
    "namespace-role-mapping::delete",
    "setting::update",
}
ROLE_PERMISSIONS = {"viewer": VIEWER, "editor": EDITOR, "developer": EDITOR, "admin": ADMIN}

UNAUTHENTICATED_BINDINGS = {"default/*": ["viewer"]}
AUTHENTICATED_BINDINGS = {"default/*": ["viewer"], "filesystem/*": ["viewer"]}

ARN_PART = r"[A-Za-z0-9\-+_@$&?^~.=*]+"
ARN_PATTERN = re.compile(rf"^{ARN_PART}/{ARN_PART}$")


def arn_regex(arn: str) -> re.Pattern[str]:
    """``ns/env`` pattern → regex matching ``ns/env`` and bare ``ns`` (namespace-level checks)."""
    namespace, _, environment = arn.partition("/")

    def part(pattern: str) -> str:
        return "".join(r"[A-Za-z0-9\-+_@$&?^~.=]*" if c == "*" else re.escape(c) for c in pattern)

    return re.compile(rf"^{part(namespace)}(?:/{part(environment)})?$")


def permissions_of(roles: list[str]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)


@dataclass(frozen=True)
class Principal:
    authenticated: bool
    primary_namespace: str
    role_bindings: dict[str, list[str]] = field(default_factory=dict)
    expiration: float | None = None

    def effective_bindings(self) -> dict[str, list[str]]:
        base = AUTHENTICATED_BINDINGS if self.authenticated else UNAUTHENTICATED_BINDINGS
        return {**base, **self.role_bindings}

    def permissions_on(self, arn: str) -> frozenset[str]:
        granted: set[str] = set()
        for pattern, roles in self.effective_bindings().items():
            if arn_regex(pattern).match(arn) or (arn == "" and pattern.startswith("*/")):
                granted |= permissions_of(roles)
        return frozenset(granted)

    def is_allowed(self, arn: str, *required: str) -> bool:
        return set(required) <= self.permissions_on(arn)

    def sees_namespace(self, namespace: str) -> bool:
        return any(
            arn_regex(pattern.partition("/")[0]).match(namespace)
            for pattern in self.effective_bindings()
        )

    def sees_environment(self, namespace: str, environment: str) -> bool:
        return any(arn_regex(pattern).match(f"{namespace}/{environment}") for pattern in self.effective_bindings())


def anonymous(default_namespace: str) -> Principal:
    return Principal(authenticated=False, primary_namespace=default_namespace)


def administrator(primary_namespace: str) -> Principal:
    return Principal(authenticated=True, primary_namespace=primary_namespace, role_bindings={"*/*": ["admin"]})
