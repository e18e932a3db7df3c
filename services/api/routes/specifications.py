"""``POST /api/v1/specification/`` (a new build) and ``GET /api/v1/specification/`` (a solve
without a build, answered by the solver service over a NATS request)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import msgspec
from aiohttp import web

from envstore.api.context import actor_of, context_of, principal_of
from envstore.api.envelopes import ApiError, json_answer, ok
from envstore.api.nul_characters import contains_nul
from envstore.api.routes.paths import Routes
from envstore.common.admin_hooks import HookError
from envstore.common.channels import allowed_channels, channel_refusal, channel_url
from envstore.common.events import BuildSubmitted
from envstore.common.solve_requests import SOLVE_SUBJECT, RemoteSolveAnswer, RemoteSolveRequest
from envstore.common.specification_documents import offload_large_specification
from envstore.common.specification import SpecificationError, load_environment_specification, parse_specification_text
from envstore.common.submission import SubmissionRequest, build_submission, check_name_or_error, submission_refusal

REMOTE_SOLVE_TIMEOUT_SECONDS = 120
log = logging.getLogger(__name__)


async def read_json_object(request: web.Request) -> dict:
    try:
        body = await request.json()
    except RecursionError:
        raise ApiError(400, "the request body's JSON is nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if contains_nul(body):
        raise ApiError(400, "the request body holds a NUL character (\\u0000), which envstore cannot store; remove it")
    return body


def _text_field(body: dict, name: str, default: str = "") -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string")
    return value


def _target(submission: SubmissionRequest) -> tuple[str, str]:
    """The namespace and environment a submission is for, read before the settings in force
    there are known (so nothing is validated against the deployment's settings alone)."""
    check_name_or_error(submission.namespace, "namespace")
    document = parse_specification_text(submission.specification)
    if submission.is_lockfile:
        return submission.namespace, check_name_or_error(submission.environment_name, "environment_name")
    return submission.namespace, load_environment_specification(document).name


async def create_specification(request: web.Request) -> web.Response:
    context = context_of(request)
    principal = principal_of(request)
    body = await read_json_object(request)
    text = _text_field(body, "specification")
    namespace = _text_field(body, "namespace") or principal.primary_namespace or context.settings.default_namespace
    is_lockfile = body.get("is_lockfile", False)
    if not isinstance(is_lockfile, bool):
        raise ApiError(400, "'is_lockfile' must be true or false")
    submission = SubmissionRequest(
        specification=text,
        namespace=namespace,
        is_lockfile=is_lockfile,
        environment_name=_text_field(body, "environment_name"),
        environment_description=_text_field(body, "environment_description"),
    )
    # As conda-store: parse errors before permissions, then validation against the settings in
    # force for this namespace and environment (which may allow what the deployment does not).
    try:
        namespace, environment = _target(submission)
    except SpecificationError as error:
        raise ApiError(400, str(error)) from None
    if not principal.is_allowed(f"{namespace}/{environment}", "environment:create"):
        raise ApiError(403, "Unauthorized to create environment in this namespace")
    if await context.read_model.namespace(namespace) is None and not principal.is_allowed(
        namespace, "namespace::create"
    ):
        raise ApiError(403, "Unauthorized to create namespace")
    settings = await context.effective_settings(namespace, environment)
    try:
        # In a thread: the deployment's validate_specification hook is its own (blocking) code.
        event = await asyncio.to_thread(build_submission, submission, settings, None, context.specification_check)
    except SpecificationError as error:
        raise ApiError(400, str(error)) from None
    except HookError as error:
        log.error("submission to %s/%s: %s", namespace, environment, error, exc_info=error.__cause__ is not None)
        raise ApiError(
            500, "the server's specification check failed; nothing was submitted. Tell the administrator (details in its log)"
        ) from None
    refusal = await submission_refusal(context.channel_guard, event, settings.conda_channel_alias)
    if refusal:
        raise ApiError(400, refusal)
    idempotency_key = request.headers.get("Idempotency-Key")
    message_id = f"submit:{idempotency_key}" if idempotency_key else f"submit:{uuid.uuid4()}"
    event = await offload_large_specification(event, context.storage)
    event = msgspec.structs.replace(event, build_id=await context.build_ids.next())
    # A submission adds a build whatever the environment's state: no expected position. (Commands
    # that remove or switch builds expect the environment's, so they see every submission.)
    acknowledgement = await context.publish_and_wait(event, message_id, actor_of(request))
    if acknowledgement.duplicate:
        # The same Idempotency-Key again: the build its first request made.
        first = await context.bus.event_at(acknowledgement.seq)
        assert isinstance(first, BuildSubmitted)
        return ok({"build_id": first.build_id})
    return ok({"build_id": event.build_id})


async def remote_solve(request: web.Request) -> web.Response:
    context = context_of(request)
    channels = request.query.getall("channel", []) + request.query.getall("channels", [])
    conda = request.query.getall("conda", [])
    pip = request.query.getall("pip", [])
    settings = await context.effective_settings()  # with the values stored globally (conda-store's get_settings())
    # Same rule as a build: the solver fetches only channels the settings allow (conda-store
    # would fetch any URL a caller names).
    refusal = channel_refusal(channels, allowed_channels(settings), settings.conda_channel_alias)
    if refusal:
        raise ApiError(400, refusal)
    urls = [channel_url(channel, settings.conda_channel_alias) for channel in channels or settings.conda_default_channels]
    refusal = await context.channel_guard.refusal(urls)
    if refusal:
        raise ApiError(400, refusal)
    question = RemoteSolveRequest(specs=conda, channel_urls=urls, pip=pip)
    try:
        reply = await context.bus.client.request(
            SOLVE_SUBJECT, msgspec.json.encode(question), timeout=REMOTE_SOLVE_TIMEOUT_SECONDS
        )
    except Exception:
        raise ApiError(503, "no solver answered; is the solver service running?") from None
    answer = msgspec.json.decode(reply.data, type=RemoteSolveAnswer)
    if answer.error:
        raise ApiError(400, answer.error)
    channel_ids = await context.read_model.channel_ids()
    solved = [
        {**msgspec.structs.asdict(package), "channel_id": channel_ids.get(package.channel.rstrip("/")), "id": None, "package_id": None}
        for package in answer.packages
    ]
    return json_answer({"solve": solved})


def register(routes: Routes) -> None:
    routes.add(
        "POST",
        "/api/v1/specification/",
        create_specification,
        "Submit an environment specification (or a conda-lock lockfile): a new build",
        body={
            "type": "object",
            "properties": {
                "specification": {"type": "string"},
                "namespace": {"type": "string"},
                "is_lockfile": {"type": "boolean"},
                "environment_name": {"type": "string"},
                "environment_description": {"type": "string"},
            },
        },
        responses=(200, 400, 403),
    )
    routes.add(
        "GET",
        "/api/v1/specification/",
        remote_solve,
        "Solve package specs without building",
        query=("channel", "channels", "conda", "pip", "format"),
        responses=(200, 400, 503),
    )
