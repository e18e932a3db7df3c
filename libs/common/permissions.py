"""conda-store's authorization model: roles → permission strings, ARN patterns, role bindings,
and the subset rule for minting tokens."""

from __future__ import annotations

import datetime
import functools
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
KNOWN_ROLES = tuple(ROLE_PERMISSIONS)

NAME_CHARACTERS = r"A-Za-z0-9\-+_@$&?^~.="
ARN_PATTERN = re.compile(rf"^[{NAME_CHARACTERS}*]+/[{NAME_CHARACTERS}*]+$")


def stored_role(role: str) -> str:
    """``editor`` and ``developer`` are one role; conda-store reports it as ``developer``."""
    return "developer" if role == "editor" else role


def _pattern(text: str, wildcard: str) -> str:
    return "".join(wildcard if character == "*" else re.escape(character) for character in text)


@functools.lru_cache(maxsize=4096)
def arn_regex(arn: str) -> re.Pattern[str]:
    """``ns/env`` pattern → regex matching ``ns/env`` and the bare namespace ARN ``ns`` (kept: every
    request checks its caller's patterns)."""
    namespace, _, environment = arn.partition("/")
    wildcard = f"[{NAME_CHARACTERS}]*"
    return re.compile(rf"^{_pattern(namespace, wildcard)}(?:/{_pattern(environment, wildcard)})?$")


def arn_matches(pattern: str, arn: str) -> bool:
    if arn == "":
        # The global ARN: only bindings for every namespace cover it.
        return pattern.partition("/")[0] == "*"
    return arn_regex(pattern).match(arn) is not None


def is_arn_subset(smaller: str, larger: str) -> bool:
    """True if every ARN that ``smaller`` matches is also matched by ``larger``."""
    wildcard = f"[{NAME_CHARACTERS}*]*"
    return re.fullmatch(_pattern(larger, wildcard), smaller) is not None


def permissions_of(roles: list[str]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)


@dataclass(frozen=True)
class Principal:
    authenticated: bool
    primary_namespace: str
    role_bindings: dict[str, list[str]] = field(default_factory=dict)  # the token's own
    default_bindings: dict[str, list[str]] = field(default_factory=dict)  # from settings
    database_bindings: dict[str, list[str]] = field(default_factory=dict)  # role mappings
    expiration: datetime.datetime | None = None
    is_service_account: bool = False
    # Who the token names, when its namespace does not say it (the deployment's admin token).
    subject: str | None = None

    def effective_bindings(self) -> dict[str, list[str]]:
        """Defaults ← token ← role mappings; a later source replaces an identical ARN key."""
        return {**self.default_bindings, **self.role_bindings, **self.database_bindings}

    def permissions_on(self, arn: str) -> frozenset[str]:
        granted: set[str] = set()
        for pattern, roles in self.effective_bindings().items():
            if arn_matches(pattern, arn):
                granted |= permissions_of(roles)
        return frozenset(granted)

    def permissions_throughout(self, arn_pattern: str) -> frozenset[str]:
        """What is held on every ARN that ``arn_pattern`` matches (``ns/*``: on every
        environment of ``ns``), from the bindings at least as wide as it."""
        granted: set[str] = set()
        for pattern, roles in self.effective_bindings().items():
            if is_arn_subset(arn_pattern, pattern):
                granted |= permissions_of(roles)
        return frozenset(granted)

    def is_allowed(self, arn: str, *required: str) -> bool:
        return set(required) <= self.permissions_on(arn)

    def sees_namespace(self, namespace: str) -> bool:
        return any(
            arn_regex(pattern.partition("/")[0]).match(namespace) for pattern in self.effective_bindings()
        )

    def sees_environment(self, namespace: str, environment: str) -> bool:
        return any(
            arn_regex(pattern).match(f"{namespace}/{environment}") for pattern in self.effective_bindings()
        )

    def covers(self, requested: dict[str, list[str]]) -> bool:
        """The token subset rule: each requested binding's permissions must be held on an ARN
        pattern at least as wide."""
        own = self.effective_bindings()
        for arn, roles in requested.items():
            held: set[str] = set()
            for pattern, own_roles in own.items():
                if is_arn_subset(arn, pattern):
                    held |= permissions_of(own_roles)
            if not permissions_of(roles) <= held:
                return False
        return True

    def with_database_bindings(self, bindings: dict[str, list[str]]) -> Principal:
        return Principal(
            authenticated=self.authenticated,
            primary_namespace=self.primary_namespace,
            role_bindings=self.role_bindings,
            default_bindings=self.default_bindings,
            database_bindings=bindings,
            expiration=self.expiration,
            is_service_account=self.is_service_account,
            subject=self.subject,
        )
