"""Tokens → principals, shared by every service that authenticates callers (API, registry).

Accepted, in order: the admin service token (``ENVSTORE_ADMIN_TOKEN``), conda-store's predefined
tokens (raw strings from settings), and conda-store's HS256 JWTs (claims ``exp``,
``primary_namespace``, ``role_bindings``). Anything else, or an expired token, is anonymous.
"""

from __future__ import annotations

import datetime
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from envstore.common.local_secrets import read_or_create_secret
from envstore.common.permissions import Principal
from envstore.common.settings import EnvstoreSettings

JWT_ALGORITHM = "HS256"
SECRET_FILE = "auth-secret"
# What the audit trail calls a caller holding the deployment's admin token.
ADMIN_TOKEN_SUBJECT = "service-account:admin-token"


def signing_secret(settings: EnvstoreSettings) -> str:
    """The configured secret, else one generated once and kept in the data directory, so tokens
    survive restarts and every local service shares it."""
    if settings.auth_secret:
        return settings.auth_secret
    return read_or_create_secret(Path(settings.data_dir).resolve() / SECRET_FILE)


@dataclass(frozen=True)
class TokenAuthority:
    """Issues and reads tokens with one secret."""

    settings: EnvstoreSettings
    secret: str

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> TokenAuthority:
        return cls(settings, signing_secret(settings))

    def issue(
        self, primary_namespace: str, role_bindings: dict[str, list[str]], expiration: datetime.datetime
    ) -> str:
        claims = {
            "exp": int(expiration.timestamp()),
            "primary_namespace": primary_namespace,
            "role_bindings": role_bindings,
        }
        return jwt.encode(claims, self.secret, algorithm=JWT_ALGORITHM)

    def principal_for(self, token: str | None) -> Principal:
        settings = self.settings
        if token is not None and not token.isascii():
            # Tokens are ASCII (JWTs, URL-safe strings). Anything else, which anyone can send, is no
            # credential; compare_digest and the JWT decoder would raise on it.
            token = None
        if token and settings.admin_token and hmac.compare_digest(token, settings.admin_token):
            return self._authenticated(
                settings.default_namespace, {"*/*": ["admin"]}, None, service=True, subject=ADMIN_TOKEN_SUBJECT
            )
        if token and token in settings.predefined_tokens:
            claims = settings.predefined_tokens[token]
            return self._authenticated(
                claims.get("primary_namespace", settings.default_namespace),
                claims.get("role_bindings", {}),
                _expiration(claims.get("exp")) or self.default_expiration(),
                service=True,
            )
        if token:
            claims = self._decode(token)
            if claims is not None:
                return self._authenticated(
                    str(claims.get("primary_namespace", settings.default_namespace)),
                    claims.get("role_bindings") or {},
                    _expiration(claims.get("exp")),
                )
        return Principal(
            authenticated=False,
            primary_namespace=settings.default_namespace,
            default_bindings=dict(settings.unauthenticated_role_bindings),
        )

    def default_expiration(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=self.settings.auth_token_lifetime_seconds
        )

    def _authenticated(
        self,
        primary_namespace: str,
        role_bindings: dict[str, list[str]],
        expiration: datetime.datetime | None,
        service: bool = False,
        subject: str | None = None,
    ) -> Principal:
        return Principal(
            authenticated=True,
            primary_namespace=primary_namespace,
            role_bindings={str(arn): list(roles) for arn, roles in role_bindings.items()},
            default_bindings=dict(self.settings.authenticated_role_bindings),
            expiration=expiration,
            is_service_account=service,
            subject=subject,
        )

    def _decode(self, token: str) -> dict[str, Any] | None:
        try:
            claims = jwt.decode(token, self.secret, algorithms=[JWT_ALGORITHM])
        except jwt.PyJWTError:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("role_bindings", {}), dict):
            return None
        return claims


def _expiration(value: Any) -> datetime.datetime | None:
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
    return None


def principal_for_token(token: str | None, settings: EnvstoreSettings) -> Principal:
    """Convenience for callers without a long-lived authority (reads the secret each call)."""
    return TokenAuthority.from_settings(settings).principal_for(token)
