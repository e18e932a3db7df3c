"""``/login/`` (conda-store's password backend), ``/logout/`` and ``POST /api/v1/token/``."""

from __future__ import annotations

import datetime
import hmac
import html

from aiohttp import web

from envstore.api.authentication import AUTH_COOKIE
from envstore.api.context import context_of, principal_of
from envstore.api.envelopes import ApiError, ok
from envstore.api.routes.paths import Routes
from envstore.api.routes.specifications import read_json_object
from envstore.common.permissions import ARN_PATTERN, KNOWN_ROLES, Principal
from envstore.common.specification import NAME_PATTERN

LOGIN_FORM = """<!doctype html><html><head><title>envstore login</title></head><body>
<form method="post" action="{action}"><input name="username" placeholder="username">
<input name="password" type="password" placeholder="password"><button>Sign in</button></form>
</body></html>"""


def _base_url(request: web.Request) -> str:
    prefix = context_of(request).settings.url_prefix.rstrip("/")
    return prefix + "/"


async def login_form(request: web.Request) -> web.Response:
    action = html.escape(str(request.rel_url), quote=True)
    return web.Response(text=LOGIN_FORM.format(action=action), content_type="text/html")


async def login(request: web.Request) -> web.Response:
    context = context_of(request)
    if request.content_type == "application/json":
        body = await read_json_object(request)
    else:
        body = dict(await request.post())
    username = str(body.get("username") or "")
    password = str(body.get("password") or "")
    expected = context.settings.auth_password
    if not username or not NAME_PATTERN.match(username):
        raise ApiError(403, "Invalid authentication credentials")
    if expected and not hmac.compare_digest(password.encode(), expected.encode()):
        raise ApiError(403, "Invalid authentication credentials")
    expiration = context.tokens.default_expiration()
    token = context.tokens.issue(username, {"*/*": ["admin"]}, expiration)
    response = ok({"redirect_url": request.query.get("next") or _base_url(request)})
    response.set_cookie(
        AUTH_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        max_age=int((expiration - datetime.datetime.now(datetime.UTC)).total_seconds()),
        domain=context.settings.auth_cookie_domain,
        path="/",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther(request.query.get("next") or _base_url(request))
    response.del_cookie(AUTH_COOKIE, path="/", domain=context_of(request).settings.auth_cookie_domain)
    raise response


def _requested_expiration(body: dict) -> datetime.datetime | None:
    # conda-store's CLI sends "exp"; the server's field is "expiration": accept both.
    value = body.get("expiration", body.get("exp"))
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(400, f"expiration {value!r} is not an ISO 8601 date-time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
    raise ApiError(400, "expiration must be an ISO 8601 date-time or unix seconds")


def _requested_bindings(body: dict) -> dict[str, list[str]] | None:
    bindings = body.get("role_bindings")
    if bindings in (None, {}):
        return None
    if not isinstance(bindings, dict):
        raise ApiError(400, "role_bindings must map ARNs ('namespace/environment') to lists of roles")
    for arn, roles in bindings.items():
        if not ARN_PATTERN.match(str(arn)):
            raise ApiError(400, f"role binding {arn!r} is not an ARN like 'namespace/environment' (* allowed)")
        if not isinstance(roles, list) or not all(role in KNOWN_ROLES for role in roles):
            raise ApiError(400, f"roles of {arn!r} must be a list of {list(KNOWN_ROLES)}")
    return bindings


async def create_token(request: web.Request) -> web.Response:
    context = context_of(request)
    caller = principal_of(request)
    if not caller.authenticated:
        # conda-store treats an anonymous caller as a token holding the authenticated defaults.
        caller = Principal(
            authenticated=True,
            primary_namespace=context.settings.default_namespace,
            default_bindings=dict(context.settings.authenticated_role_bindings),
        )
    body = await read_json_object(request) if request.can_read_body else {}
    caller_expiration = caller.expiration or context.tokens.default_expiration()
    expiration = _requested_expiration(body) or caller_expiration
    primary_namespace = str(body.get("primary_namespace") or caller.primary_namespace)
    if not NAME_PATTERN.match(primary_namespace):
        raise ApiError(400, f"primary_namespace {primary_namespace!r} is not a valid namespace name")
    requested = _requested_bindings(body)
    bindings = requested if requested is not None else caller.role_bindings or caller.effective_bindings()
    # What the new token would really hold: its bindings plus defaults and role mappings.
    database = await context.read_model.database_bindings(primary_namespace, context.settings.role_mappings_version)
    would_hold = {**context.settings.authenticated_role_bindings, **bindings, **database}
    if not caller.covers(would_hold):
        raise ApiError(400, "Requested role_bindings are not a subset of current permissions")
    if expiration > caller_expiration + datetime.timedelta(seconds=1):
        raise ApiError(400, "Requested expiration of token is greater than current permissions")
    return ok({"token": context.tokens.issue(primary_namespace, bindings, expiration)})


def register(routes: Routes) -> None:
    routes.add("GET", "/login/", login_form, "Login form")
    routes.add(
        "POST",
        "/login/",
        login,
        "Log in with the password backend; sets the conda-store-auth cookie",
        body={"type": "object", "properties": {"username": {"type": "string"}, "password": {"type": "string"}}},
        responses=(200, 403),
    )
    routes.add("POST", "/logout/", logout, "Log out (clears the cookie)", responses=(303,))
    routes.add(
        "POST",
        "/api/v1/token/",
        create_token,
        "Mint a token with at most the caller's permissions",
        body={
            "type": "object",
            "properties": {
                "primary_namespace": {"type": "string"},
                "expiration": {"type": "string", "format": "date-time"},
                "role_bindings": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            },
        },
        responses=(200, 400),
    )
