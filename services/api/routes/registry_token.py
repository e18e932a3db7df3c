"""``{prefix}/registry/token``: the realm the registry's Bearer challenge sends docker clients to
(``libs/common/registry_tokens.py`` describes the flow). The answer is the Docker token
specification's: ``{"token", "access_token", "expires_in", "issued_at"}``."""

from __future__ import annotations

import datetime
import json

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.routes.paths import Routes
from envstore.common.registry_tokens import (
    ANONYMOUS_REGISTRY_TOKEN,
    REGISTRY_TOKEN_PATH,
    TOKEN_LIFETIME_SECONDS,
    presented_token,
)

INVALID_CREDENTIALS = "authentication failed: the password (or bearer token) must be a valid envstore token"


async def registry_token(request: web.Request) -> web.Response:
    # The Authorization header alone, as docker sends it (a UI session's cookie is not a pull).
    sent, token = presented_token(request)
    principal = await context_of(request).principal_for(token)
    now = datetime.datetime.now(datetime.UTC)
    if sent and (token is None or not principal.authenticated):
        # Docker's own answer to bad credentials, so `docker login` says "unauthorized".
        body = {"errors": [{"code": "UNAUTHORIZED", "message": INVALID_CREDENTIALS, "detail": None}]}
        return web.json_response(
            body, status=401, headers={"WWW-Authenticate": 'Basic realm="envstore registry"'}, dumps=json.dumps
        )
    if not sent:
        token, lifetime = ANONYMOUS_REGISTRY_TOKEN, TOKEN_LIFETIME_SECONDS
    elif principal.expiration is not None:
        lifetime = max(0, int((principal.expiration - now).total_seconds()))
    else:
        lifetime = TOKEN_LIFETIME_SECONDS
    return web.json_response(
        {"token": token, "access_token": token, "expires_in": lifetime, "issued_at": now.isoformat()},
        headers={"Cache-Control": "no-store"},
    )


def register(routes: Routes) -> None:
    routes.add(
        "GET",
        REGISTRY_TOKEN_PATH,
        registry_token,
        "The docker registry's token realm: the caller's token (Basic: any user, the token as password) "
        "for pulls, or an anonymous one",
        query=("service", "scope", "account"),
        responses=(200, 401),
    )
