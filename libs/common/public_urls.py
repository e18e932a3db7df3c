"""Absolute URLs of envstore as a client reaches them: the base of the UI's API calls, the registry's
token realm. Behind a reverse proxy the request's own scheme and host are the proxy's inside view,
so these come from, in order: ``ENVSTORE_API_EXTERNAL_URL``; the scheme and host a trusted proxy
reported (``proxy_headers``); the host the client addressed."""

from __future__ import annotations

from aiohttp import web

from envstore.common.proxy_headers import came_through_proxy
from envstore.common.settings import EnvstoreSettings


def public_api_url(request: web.Request, settings: EnvstoreSettings, *, on_api_listener: bool) -> str:
    """The API's base URL, prefix included and no trailing slash (``https://host/conda-store``).

    ``on_api_listener``: whether ``request`` reached the API's own port. A request to the registry's
    port that no proxy forwarded names the registry's port; the API is on the same host at its own.
    A proxy is taken to serve both on one origin (set ``ENVSTORE_API_EXTERNAL_URL`` otherwise).
    """
    if settings.api_external_url:
        return settings.api_external_url.rstrip("/")
    origin = request.url.origin()
    if not on_api_listener and not came_through_proxy(request):
        origin = origin.with_port(settings.api_port)
    return f"{origin}{settings.path_prefix}"
