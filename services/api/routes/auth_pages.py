"""``/login/`` (conda-store's password backend), ``/logout/`` and ``POST /api/v1/token/``."""

from __future__ import annotations

import datetime
import html

from aiohttp import web
from yarl import URL

from envstore.api.authentication import AUTH_COOKIE
from envstore.api.context import context_of, principal_of
from envstore.api.envelopes import ApiError, error_response, ok
from envstore.api.login_policy import login_role_bindings, password_matches, reserved_name_refusal
from envstore.api.routes.paths import Routes
from envstore.api.routes.specifications import read_json_object
from envstore.api.security_headers import CONTENT_SECURITY_POLICY, external_origins, login_form_policy, new_nonce
from envstore.common.permissions import ARN_PATTERN, KNOWN_ROLES, Principal
from envstore.common.specification import is_valid_name

LOGIN_FORM = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>envstore: log in</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">
<style nonce="{nonce}">body{{font-family:sans-serif;display:flex;justify-content:center;margin-top:12vh}}
form{{display:flex;flex-direction:column;gap:.6em;width:18em}}input,button{{font-size:1em;padding:.4em}}
.error{{color:#b00020}}</style></head><body>
<form method="post" action="{action}"><h1>envstore</h1>{error}
<input name="username" placeholder="username" autocomplete="username" aria-label="username" autofocus>
<input name="password" type="password" placeholder="password" autocomplete="current-password" aria-label="password">
<button>Sign in</button></form>
</body></html>"""
INVALID_CREDENTIALS = "Invalid authentication credentials"


def _base_url(request: web.Request) -> str:
    prefix = context_of(request).settings.url_prefix.rstrip("/")
    return prefix + "/"


def _next_url(request: web.Request) -> str:
    """Where to go after logging in or out: ``next`` if it stays on this server (no open redirect)."""
    wanted = request.query.get("next") or ""
    try:
        target = URL(wanted)
    except ValueError:
        return _base_url(request)
    # Browsers read a backslash as "/": "/\host" would leave the server as "//host" does.
    if wanted.startswith("/") and not wanted.startswith("//") and "\\" not in wanted and not target.is_absolute():
        return wanted
    external = context_of(request).settings.api_external_url
    own_origins = {request.url.origin()} | ({URL(external).origin()} if external else set())
    if target.scheme in ("http", "https") and target.host and target.origin() in own_origins:
        return wanted
    return _base_url(request)


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    action = html.escape(str(request.rel_url), quote=True)
    error_html = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    nonce = new_nonce()
    page = LOGIN_FORM.format(action=action, error=error_html, nonce=nonce)
    policy = login_form_policy(nonce, external_origins(context_of(request).settings))
    return web.Response(
        text=page, content_type="text/html", status=status, headers={CONTENT_SECURITY_POLICY: policy}
    )


async def login_form(request: web.Request) -> web.Response:
    return _login_page(request)


async def login(request: web.Request) -> web.Response:
    """JSON clients get conda-store's envelope; the HTML form (a browser) is sent on to ``next``."""
    context = context_of(request)
    settings = context.settings
    from_form = request.content_type != "application/json"
    if from_form:
        body = dict(await request.post())
    else:
        body = await read_json_object(request)
    username = str(body.get("username") or "")
    password = str(body.get("password") or "")
    address = request.remote or "unknown"
    # Checked before the password, so an attacker held back learns nothing from the answer.
    wait = context.login_throttle.retry_after(username, address)
    if wait is not None:
        message = f"too many failed logins for this user or from this address; try again in {wait} seconds"
        return _refused(request, from_form, 429, message, {"Retry-After": str(wait)})
    if not (is_valid_name(username) and password_matches(password, context.login_password)):
        context.login_throttle.record_failure(username, address)
        return _refused(request, from_form, 403, INVALID_CREDENTIALS)
    refusal = reserved_name_refusal(settings, username)
    if refusal:
        return _refused(request, from_form, 403, refusal)
    context.login_throttle.record_success(username)
    expiration = context.tokens.default_expiration()
    token = context.tokens.issue(username, login_role_bindings(settings, username), expiration)
    next_url = _next_url(request)
    response = web.Response(status=303, headers={"Location": next_url}) if from_form else ok({"redirect_url": next_url})
    response.set_cookie(
        AUTH_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        max_age=int((expiration - datetime.datetime.now(datetime.UTC)).total_seconds()),
        domain=settings.auth_cookie_domain,
        path="/",
        # Over HTTPS (a TLS-terminating proxy included) the cookie never travels in clear text.
        secure=request.secure,
    )
    return response


def _refused(
    request: web.Request, from_form: bool, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    response = _login_page(request, message, status=status) if from_form else error_response(status, message)
    response.headers.update(headers or {})
    return response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther(_next_url(request))
    response.del_cookie(AUTH_COOKIE, path="/", domain=context_of(request).settings.auth_cookie_domain)
    raise response


def _requested_expiration(body: dict) -> datetime.datetime | None:
    # conda-store's CLI sends "exp"; the server's field is "expiration": accept both.
    value = body.get("expiration", body.get("exp"))
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.datetime.fromtimestamp(value, datetime.UTC)
        except (OverflowError, OSError, ValueError):  # NaN, or past the years datetime can hold
            raise ApiError(400, f"expiration {value!r} is not a unix time in years 1 to 9999") from None
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
    if not is_valid_name(primary_namespace):
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
        responses=(200, 403, 429),
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
