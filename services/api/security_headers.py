"""Headers every API answer carries so a browser cannot be turned against its user: no MIME
sniffing, no framing (clickjacking), no referrer (artifact links carry their signature in the
URL), and a Content-Security-Policy. Pages that run code (the UI, the login form) set their own
policy with a per-response nonce; everything else gets one that allows nothing, so an artifact or
an error that a browser renders as HTML cannot run scripts."""

from __future__ import annotations

import secrets

from aiohttp import web
from yarl import URL

from envstore.common.settings import EnvstoreSettings

CONTENT_SECURITY_POLICY = "Content-Security-Policy"
NOTHING_ALLOWED = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# conda-store-ui's stylesheet loads the Inter font from Google's font host.
UI_FONT_HOSTS = "https://fonts.gstatic.com"


def external_origins(settings: EnvstoreSettings) -> list[str]:
    """The API's public origin when it is configured (it may differ from the page's own)."""
    if not settings.api_external_url:
        return []
    return [str(URL(settings.api_external_url).origin())]


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def ui_policy(nonce: str, api_origins: list[str]) -> str:
    """conda-store-ui: its bundle and one inline script (the config) by nonce; MUI writes inline
    styles at run time, hence 'unsafe-inline' for styles only. The API may live at another origin
    (ENVSTORE_API_EXTERNAL_URL), which the UI calls and the login form is posted to."""
    origins = " ".join(["'self'", *api_origins])
    return (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data:; font-src 'self' data: {UI_FONT_HOSTS}; connect-src {origins}; "
        f"form-action {origins}; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )


def login_form_policy(nonce: str, api_origins: list[str]) -> str:
    """The login form: its one inline style by nonce; it posts to itself and is then sent to
    ``next`` (this server)."""
    origins = " ".join(["'self'", *api_origins])
    return (
        f"default-src 'none'; style-src 'nonce-{nonce}'; img-src data:; form-action {origins}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in ALWAYS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault(CONTENT_SECURITY_POLICY, NOTHING_ALLOWED)


def install(app: web.Application) -> None:
    app.on_response_prepare.append(add_security_headers)
