"""conda-store's paging parameters: v1 ``page``/``size``/``order``/``sort_by``, v2 cursors."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from envstore.api.envelopes import ApiError, json_answer
from envstore.api.read_model import Page

MAX_PAGE_SIZE = 100
END_CURSOR = base64.b64encode(b'{"last_id":null,"last_value":null}').decode()


# The largest number a query parameter may carry: PostgreSQL's integer (ids, LIMIT, OFFSET pages).
LARGEST_WHOLE_NUMBER = 2**31 - 1


def is_whole_number(text: str, most_digits: int = len(str(LARGEST_WHOLE_NUMBER))) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses), and few enough
    of them for ``int`` and the database."""
    return text.isascii() and text.isdigit() and len(text) <= most_digits


def whole_number(request: web.Request, name: str, default: int | None, minimum: int = 1) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not is_whole_number(text) or not minimum <= int(text) <= LARGEST_WHOLE_NUMBER:
        raise ApiError(
            400, f"query parameter {name!r} must be a whole number from {minimum} to {LARGEST_WHOLE_NUMBER}, got {text!r}"
        )
    return int(text)


def page_of(request: web.Request) -> Page:
    page = whole_number(request, "page", 1) or 1
    size = min(whole_number(request, "size", MAX_PAGE_SIZE) or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    # conda-store: anything but "desc" is ascending.
    return Page(page=page, size=size, descending=request.query.get("order") == "desc")


def sort_keys(request: web.Request) -> list[str]:
    return request.query.getall("sort_by", [])


def page_document(data: list[Any], page: Page, count: int) -> dict[str, Any]:
    return {"status": "ok", "data": data, "message": None, "page": page.page, "size": page.size, "count": count}


def page_response(data: list[Any], page: Page, count: int) -> web.Response:
    return json_answer(page_document(data, page, count))


def encode_cursor(last_id: int | None, last_value: dict[str, Any] | None) -> str:
    return base64.b64encode(
        json.dumps({"last_id": last_id, "last_value": last_value}, separators=(",", ":")).encode()
    ).decode()


def decode_cursor(text: str | None) -> tuple[int | None, dict[str, Any] | None]:
    if not text:
        return None, None
    not_ours = ApiError(400, "cursor is not one this server issued; start again without it")
    try:
        document = json.loads(base64.b64decode(text, validate=True))
        last_id = document["last_id"]
        last_value = document["last_value"]
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        raise not_ours from None
    # What encode_cursor writes: a row id, and the row's sort values (names: text without NUL).
    if last_id is not None and (
        not isinstance(last_id, int) or isinstance(last_id, bool) or not 0 <= last_id <= LARGEST_WHOLE_NUMBER
    ):
        raise not_ours
    if last_value is not None and (
        not isinstance(last_value, dict)
        or not all(isinstance(value, str) and "\x00" not in value for value in last_value.values())
    ):
        raise not_ours
    return last_id, last_value
