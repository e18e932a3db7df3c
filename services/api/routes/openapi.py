"""``/openapi.json``: every route, described from the route table itself."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import SETTINGS
from envstore.api.routes.paths import Routes, path_parameters
from envstore.api.routes.status import VERSION
from envstore.common.public_urls import public_api_url

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
}
DESCRIPTIONS = {200: "OK", 303: "See other", 307: "Redirect to the artifact", 400: "Bad request", 403: "Forbidden",
                404: "Not found", 409: "Conflict", 503: "Unavailable"}


def openapi_document(routes: Routes, server_url: str) -> dict:
    """Paths are relative to ``server_url``, the API's base as the client reaches it (prefix included)."""
    paths: dict[str, dict] = {}
    for route in routes.described:
        operation: dict = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{route.path.strip('/').replace('/', '_').replace('{', '').replace('}', '') or 'root'}",
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in path_parameters(route.path)
            ]
            + [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in route.query],
            "responses": {
                str(status): {
                    "description": DESCRIPTIONS.get(status, "Response"),
                    **({"content": {"application/json": {"schema": ERROR_SCHEMA}}} if status >= 400 else {}),
                }
                for status in route.responses
            },
        }
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "envstore (conda-store compatible API)", "version": VERSION},
        "servers": [{"url": server_url}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


def register(routes: Routes) -> None:
    settings = routes.app[SETTINGS]

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(openapi_document(routes, public_api_url(request, settings, on_api_listener=True)))

    routes.add("GET", "/openapi.json", openapi, "This document")
