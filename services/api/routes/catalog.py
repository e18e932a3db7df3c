"""Channels and packages known to envstore (from indexed channels and what builds used)."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.pagination import page_of, page_response
from envstore.api.routes.paths import Routes
from envstore.common.channels import channel_url


async def list_channels(request: web.Request) -> web.Response:
    page = page_of(request)
    context = context_of(request)
    # Global-only keys: the deployment's values, or those stored globally through the settings API.
    settings = await context.effective_settings()
    indexed = [channel_url(channel, settings.conda_channel_alias) for channel in settings.conda_indexed_channels]
    rows, count = await context.read_model.channels(page, indexed)
    return page_response(rows, page, count)


async def list_packages(request: web.Request) -> web.Response:
    page = page_of(request)
    rows, count = await context_of(request).read_model.packages(
        request.query.get("search"),
        bool(request.query.get("exact")),
        request.query.get("build"),
        page,
        request.query.getall("sort_by", []),
        request.query.getall("distinct_on", []),
    )
    return page_response(rows, page, count)


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/channel/", list_channels, "Conda channels", query=("page", "size", "order", "sort_by"))
    routes.add(
        "GET", "/api/v1/package/", list_packages, "Conda packages",
        query=("page", "size", "order", "sort_by", "search", "exact", "build", "distinct_on"),
    )
