"""conda-store's response envelopes and errors."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

JSON = "application/json"
# msgspec writes datetimes as ISO 8601 (naive ones without a zone, as conda-store answers) and
# sums (numeric) as numbers; it encodes a big page several times faster than json.dumps.
_ENCODER = msgspec.json.Encoder(decimal_format="number")


def json_bytes(document: Any) -> bytes:
    return _ENCODER.encode(document)


def json_answer(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=_ENCODER.encode(document), status=status, content_type=JSON, charset="utf-8")


def ok(data: Any = None, message: str | None = None, **extra: Any) -> web.Response:
    return json_answer({"status": "ok", "data": data, "message": message, **extra})


def ack(message: str | None = None) -> web.Response:
    return json_answer({"status": "ok", "message": message})


class ApiError(Exception):
    """An error a client should see as conda-store's error envelope with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> web.Response:
    return json_answer({"status": "error", "message": message}, status=status)


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
