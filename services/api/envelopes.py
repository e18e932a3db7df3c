"""conda-store's response envelopes and errors."""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

from aiohttp import web


def _default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(document: Any) -> str:
    return json.dumps(document, default=_default)


def ok(data: Any = None, message: str | None = None, **extra: Any) -> web.Response:
    return web.json_response({"status": "ok", "data": data, "message": message, **extra}, dumps=dumps)


def ack(message: str | None = None) -> web.Response:
    return web.json_response({"status": "ok", "message": message}, dumps=dumps)


class ApiError(Exception):
    """An error a client should see as conda-store's error envelope with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"status": "error", "message": message}, status=status, dumps=dumps)


@web.middleware
async def api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error.status, error.message)
    except web.HTTPRequestEntityTooLarge:
        # aiohttp's own answer is plain text and does not say where the limit comes from.
        return error_response(
            413,
            f"the request body is larger than {request.client_max_size} bytes, the most this server accepts "
            "(setting max_request_bytes, ENVSTORE_MAX_REQUEST_BYTES)",
        )
