"""conda-store's v1 paging parameters (``page``, ``size`` capped at ``max_page_size``)."""

from __future__ import annotations

from aiohttp import web

from envstore.api.envelopes import ApiError
from envstore.common.settings import EnvstoreSettings

MAX_PAGE_SIZE = 100


def _positive(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or int(text) < 1:
        raise ApiError(400, f"query parameter {name!r} must be a positive whole number, got {text!r}")
    return int(text)


def page_parameters(request: web.Request, settings: EnvstoreSettings) -> tuple[int, int]:
    page = _positive(request, "page", 1)
    size = min(_positive(request, "size", MAX_PAGE_SIZE), MAX_PAGE_SIZE)
    return page, size
