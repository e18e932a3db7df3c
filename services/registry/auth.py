"""Who pulls, and whether they may.

Credentials, as docker clients send them after ``docker login -u <anything> -p <envstore token>``:
``Authorization: Basic base64(<any user>:<token>)``, or ``Authorization: Bearer <token>`` from
clients configured with a token. A token is read by ``principal_for_token`` (the same function as
the API), and the caller's namespace role mappings are added as the API adds them.

Answers follow the distribution spec, so clients know when to log in:
- credentials that are not a valid token: 401 ``UNAUTHORIZED`` with a ``WWW-Authenticate`` Basic
  challenge (docker then asks for, or sends, its stored credentials);
- no credentials: anonymous, with the API's unauthenticated role bindings (by default
  ``default/*`` may be read); lacking permission, 401 and the challenge, as logging in may help;
- a valid token lacking the permission: 403 ``DENIED``.
``GET /v2/`` without valid credentials answers 401 with the challenge, which is how docker and
podman find out how to authenticate (``docker login`` checks credentials there).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from aiohttp import web

from envstore.common.permissions import Principal
from envstore.common.settings import EnvstoreSettings
from envstore.common.tokens import principal_for_token
from envstore.registry.errors import denied, unauthorized
from envstore.registry.role_mappings import RoleMappings

CHALLENGE = 'Basic realm="envstore registry"'
READ = "environment::read"


@dataclass(frozen=True)
class Caller:
    principal: Principal
    sent_credentials: bool


def presented_token(request: web.Request) -> tuple[bool, str | None]:
    """(whether credentials were sent, the token in them). Empty credentials (``Basic Og==``,
    which anonymous clients such as skopeo send after a Basic challenge) are no credentials."""
    header = request.headers.get("Authorization", "").strip()
    if not header:
        return False, None
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer":
        return bool(credential), credential or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return True, None
        user, _, password = decoded.partition(":")
        return bool(user or password), password or None
    return True, None


class Authenticator:
    def __init__(self, settings: EnvstoreSettings, role_mappings: RoleMappings) -> None:
        self.settings = settings
        self.role_mappings = role_mappings

    def caller(self, request: web.Request) -> Caller:
        sent, token = presented_token(request)
        principal = principal_for_token(token, self.settings)
        if sent and not principal.authenticated:
            raise unauthorized(
                CHALLENGE,
                "authentication failed: the password (or bearer token) must be a valid envstore token",
            )
        if principal.authenticated:
            bindings = self.role_mappings.bindings_for(
                principal.primary_namespace, self.settings.role_mappings_version
            )
            if bindings:
                principal = principal.with_database_bindings(bindings)
        return Caller(principal, sent)

    def require_login(self, caller: Caller) -> None:
        if not caller.principal.authenticated:
            raise unauthorized(CHALLENGE, "authentication required")

    def require(self, caller: Caller, arn: str, permission: str, name: str) -> None:
        if caller.principal.is_allowed(arn, permission):
            return
        if not caller.principal.authenticated:
            raise unauthorized(CHALLENGE, "authentication required", {"name": name, "needs": f"{permission} on {arn}"})
        raise denied(name)
