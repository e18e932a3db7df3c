"""Who is calling: cookie ``conda-store-auth``, else ``Authorization: Bearer`` or the password of
``Basic``; no valid credential means anonymous (conda-store answers 403, not 401)."""

from __future__ import annotations

import base64

from aiohttp import web

from envstore.api.context import CONTEXT

AUTH_COOKIE = "conda-store-auth"


def presented_token(request: web.Request) -> str | None:
    cookie = request.cookies.get(AUTH_COOKIE)
    if cookie:
        return cookie
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer" and credential:
        return credential.strip()
    if scheme.lower() == "basic" and credential:
        try:
            decoded = base64.b64decode(credential.strip(), validate=True).decode()
        except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
            return None
        return decoded.partition(":")[2] or None
    return None


@web.middleware
async def authenticate(request: web.Request, handler):  # type: ignore[no-untyped-def]
    request["principal"] = await request.app[CONTEXT].principal_for(presented_token(request))
    return await handler(request)
