"""NUL characters: PostgreSQL's text and jsonb refuse them. A request carrying one is answered 400
at the edge, before it reaches a query (a 500) or an event that the projector could never apply
(which would stop the read model)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from envstore.api.envelopes import error_response

NUL = "\x00"


def contains_nul(document: Any) -> bool:
    """Whether any string of a parsed JSON document, key or value, holds a NUL character."""
    pending = [document]
    while pending:  # not recursive: the document may be nested as deep as the JSON parser allows
        value = pending.pop()
        if isinstance(value, str):
            if NUL in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


@web.middleware
async def refuse_nul_in_url(request: web.Request, handler: Any) -> web.StreamResponse:
    if NUL in request.path or any(NUL in key or NUL in value for key, value in request.query.items()):
        return error_response(400, "the URL holds a NUL character (%00), which envstore cannot store; remove it")
    return await handler(request)
