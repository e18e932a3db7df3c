"""``GET /api/v1/namespace/``: the namespaces the caller may see, conda-store's v1 page."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.envelopes import dumps
from envstore.api.pagination import page_parameters
from envstore.common.permissions import Principal
from envstore.api.routes.paths import Routes


async def list_namespaces(request: web.Request) -> web.Response:
    principal: Principal = request["principal"]
    page, size = page_parameters(request, context_of(request).settings)
    rows = [
        row for row in await context_of(request).read_model.namespaces()
        if principal.sees_namespace(row["name"])
    ]
    if request.query.get("order") == "desc":
        rows.reverse()
    selected = rows[(page - 1) * size : page * size]
    return web.json_response(
        {
            "status": "ok",
            "data": [{"id": row["id"], "name": row["name"]} for row in selected],
            "page": page,
            "size": size,
            "count": len(rows),
        },
        dumps=dumps,
    )


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/namespace/", list_namespaces)
