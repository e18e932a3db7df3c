"""``POST /api/v1/specification/``: a new build of an environment."""

from __future__ import annotations

import json
import uuid

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.envelopes import ApiError, ok
from envstore.common.permissions import Principal
from envstore.api.routes.paths import Routes
from envstore.common.submission import SubmissionRequest, build_submission
from envstore.common.specification import SpecificationError


async def read_json_object(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


async def create_specification(request: web.Request) -> web.Response:
    context = context_of(request)
    principal: Principal = request["principal"]
    body = await read_json_object(request)
    text = body.get("specification", "")
    if not isinstance(text, str):
        raise ApiError(400, "'specification' must be the environment.yaml (or lockfile) text")
    namespace = body.get("namespace") or principal.primary_namespace or context.settings.default_namespace
    try:
        event = build_submission(
            SubmissionRequest(
                specification=text,
                namespace=str(namespace),
                is_lockfile=bool(body.get("is_lockfile", False)),
                environment_name=str(body.get("environment_name") or ""),
                environment_description=str(body.get("environment_description") or ""),
            ),
            context.settings,
        )
    except SpecificationError as error:
        raise ApiError(400, str(error)) from None
    arn = f"{event.namespace}/{event.environment}"
    if not principal.is_allowed(arn, "environment:create"):
        raise ApiError(403, "Unauthorized to create environment in this namespace")
    if await context.read_model.namespace(event.namespace) is None and not principal.is_allowed(
        event.namespace, "namespace::create"
    ):
        raise ApiError(403, "Unauthorized to create namespace")
    message_id = request.headers.get("Idempotency-Key") or f"submit:{uuid.uuid4()}"
    build_id = await context.publish_and_wait(event, message_id)
    return ok({"build_id": build_id})


def register(routes: Routes) -> None:
    routes.add("POST", "/api/v1/specification/", create_specification)
