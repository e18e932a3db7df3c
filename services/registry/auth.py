"""Who pulls, and whether they may.

Credentials, as docker clients send them: a token from the realm the registry's challenge names
(``libs/common/registry_tokens.py``: the API hands out the caller's own envstore token there, after
``docker login -u <anything> -p <envstore token>``), or the same credentials sent directly:
``Authorization: Basic base64(<any user>:<token>)`` or ``Authorization: Bearer <token>``. A token is
read by ``principal_for_token`` (the same function as the API), and the caller's namespace role
mappings are added as the API adds them.

Answers follow the distribution spec, so clients know when to log in:
- credentials that are not a valid token: 401 ``UNAUTHORIZED`` with the ``WWW-Authenticate``
  Bearer challenge naming the token realm (docker then asks for, or sends, its stored credentials);
- no credentials: anonymous, with the API's unauthenticated role bindings (by default
  ``default/*`` may be read); lacking permission, 401 and the challenge, as logging in may help;
- a valid token lacking the permission: 403 ``DENIED``.
``GET /v2/`` without valid credentials answers 401 with the challenge, which is how docker and
podman find out how to authenticate (``docker login`` checks credentials there).

The realm is the API's public URL (``public_urls``): behind a reverse proxy, the scheme and host
the client used, as a trusted proxy reports them, with the URL prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

import asyncpg

from envstore.common.permissions import Principal
from envstore.common.public_urls import public_api_url
from envstore.common.read_model_rules import with_role_mappings
from envstore.common.registry_tokens import REGISTRY_TOKEN_PATH, bearer_challenge, presented_token
from envstore.common.settings import EnvstoreSettings
from envstore.common.tokens import TokenAuthority
from envstore.registry.errors import denied, unauthorized

READ = "environment::read"


@dataclass(frozen=True)
class Caller:
    principal: Principal
    sent_credentials: bool
    realm: str  # where this caller gets a token: the API's token route, as the caller reaches it

    def challenge(self, name: str | None = None) -> str:
        return bearer_challenge(self.realm, f"repository:{name}:pull" if name else None)


class Authenticator:
    def __init__(self, settings: EnvstoreSettings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.tokens = TokenAuthority.from_settings(settings)
        self.pool = pool  # the read model: role mappings, as the API applies them

    def realm(self, request: web.Request) -> str:
        return public_api_url(request, self.settings, on_api_listener=False) + REGISTRY_TOKEN_PATH

    async def caller(self, request: web.Request) -> Caller:
        sent, token = presented_token(request)
        principal = self.tokens.principal_for(token)
        realm = self.realm(request)
        if sent and not principal.authenticated:
            raise unauthorized(
                bearer_challenge(realm),
                "authentication failed: the password (or bearer token) must be a valid envstore token",
            )
        principal = await with_role_mappings(self.pool, principal, self.settings.role_mappings_version)
        return Caller(principal, sent, realm)

    def require_login(self, caller: Caller) -> None:
        if not caller.principal.authenticated:
            raise unauthorized(caller.challenge(), "authentication required")

    def require(self, caller: Caller, arn: str, permission: str, name: str) -> None:
        if caller.principal.is_allowed(arn, permission):
            return
        if not caller.principal.authenticated:
            raise unauthorized(
                caller.challenge(name), "authentication required", {"name": name, "needs": f"{permission} on {arn}"}
            )
        raise denied(name)
