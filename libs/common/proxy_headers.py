"""Requests that came through a reverse proxy: the scheme, host and client address the proxy saw
(``X-Forwarded-Proto``, ``-Host``, ``-For``), believed only when the peer is one of the configured
trusted proxies (``ENVSTORE_TRUSTED_PROXIES``). From any other peer those headers are ignored, so
no client can make envstore hand out URLs of its choosing.

Handlers then read ``request.url`` / ``request.scheme`` / ``request.host`` as the client sees them,
and ``came_through_proxy(request)`` says whether a proxy's headers were applied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from aiohttp_remotes import XForwardedFiltered

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FORWARDED_BY_TRUSTED_PROXY = "envstore.forwarded_by_trusted_proxy"
FORWARDED_HEADERS = (hdrs.X_FORWARDED_FOR, hdrs.X_FORWARDED_PROTO, hdrs.X_FORWARDED_HOST)


def came_through_proxy(request: web.Request) -> bool:
    return bool(request.get(FORWARDED_BY_TRUSTED_PROXY))


def _last_value(request: web.Request, header: str) -> str | None:
    """The value the nearest proxy added (the last of a comma-separated list)."""
    values = request.headers.getall(header, [])
    if len(values) != 1:
        return None
    return values[0].split(",")[-1].strip() or None


def trusted_proxy_headers(trusted_proxies: list[str]) -> Middleware:
    networks = [ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies]
    # aiohttp-remotes walks X-Forwarded-For from the nearest hop, skipping trusted proxies, and takes
    # the scheme and host that belong to the first untrusted (client) hop.
    forwarded = XForwardedFiltered(set(networks)) if networks else None

    def peer_is_trusted(request: web.Request) -> bool:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:  # a unix socket
            return False
        return any(address in network for network in networks)

    @web.middleware
    async def apply_forwarded_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        if forwarded is None or not any(header in request.headers for header in FORWARDED_HEADERS):
            return await handler(request)
        if not peer_is_trusted(request):
            return await handler(request)

        async def marked(forwarded_request: web.Request) -> web.StreamResponse:
            forwarded_request[FORWARDED_BY_TRUSTED_PROXY] = True
            return await handler(forwarded_request)

        if hdrs.X_FORWARDED_FOR in request.headers:
            return await forwarded.middleware(request, marked)
        # A proxy that sends only the scheme and host (no client address): take them as they are.
        overrides = {
            key: value
            for key, value in (
                ("scheme", _last_value(request, hdrs.X_FORWARDED_PROTO)),
                ("host", _last_value(request, hdrs.X_FORWARDED_HOST)),
            )
            if value
        }
        return await marked(request.clone(**overrides))

    return apply_forwarded_headers
