"""Telemetry for aiohttp servers (the API and the registry): a server span and request metrics per
request, labelled by route template (``/api/v1/build/{build_id}/``), never by raw path."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.trace import Status, StatusCode

from envstore.common.telemetry import Telemetry

TELEMETRY = web.AppKey("telemetry", Telemetry)
UNMATCHED_ROUTE = "(unmatched)"  # 404s: the raw path would give unbounded label values
CLIENT_GONE = 499  # the client disconnected before the answer (nginx's convention)


def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def http_server_telemetry(telemetry: Telemetry) -> Middleware:
    """The outermost middleware, so it sees the status that the client finally gets."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_template(request)
        started = time.perf_counter()
        status = 500
        with telemetry.server_span(request.method, route, request.headers) as span:
            span.set_attribute("url.path", request.path)
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as answer:
                status = answer.status
                raise
            except asyncio.CancelledError:
                status = CLIENT_GONE
                raise
            except Exception as error:
                span.record_exception(error)
                raise
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                telemetry.metrics.observe_http_request(
                    request.method, route, status, time.perf_counter() - started
                )

    return observe


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log lines with the path but never the query string, where clients put tokens
    (``?token=``, ``?jwt=``) and artifact links their signatures; headers are not logged either."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.3fs', request.remote, request.method, request.path, response.status, response.body_length, time
        )


def install(app: web.Application, telemetry: Telemetry) -> None:
    """Put the telemetry middleware first and make ``telemetry`` reachable from handlers."""
    app[TELEMETRY] = telemetry
    app.middlewares.insert(0, http_server_telemetry(telemetry))
