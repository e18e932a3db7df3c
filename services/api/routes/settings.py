"""Settings at global, namespace and environment level (conda-store's keys and messages)."""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import ValidationError

from envstore.api.context import actor_of, context_of, require
from envstore.api.envelopes import ApiError, ok
from envstore.api.routes.paths import Routes
from envstore.api.routes.specifications import read_json_object
from envstore.common.events import SettingsChanged
from envstore.common.settings import (
    CONDA_STORE_SETTINGS,
    DEPLOYMENT_ONLY_SETTINGS,
    GLOBAL_ONLY_SETTINGS,
    EnvstoreSettings,
)


def _scope(request: web.Request) -> tuple[str | None, str | None, str]:
    namespace = request.match_info.get("namespace")
    environment = request.match_info.get("environment")
    arn = "/".join(part for part in (namespace, environment) if part)
    return namespace, environment, arn


def settings_validation_message(error: ValidationError) -> str:
    """pydantic's errors as one line per key ("1 validation error: conda_command: …"), keeping
    the words conda-store's clients look for."""
    problems = [
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg'].removeprefix('Value error, ')}"
        for problem in error.errors()
    ]
    count = len(problems)
    return f"{count} validation error{'s' if count > 1 else ''}: " + "; ".join(problems)


def settings_document(settings: EnvstoreSettings) -> dict:
    values = settings.model_dump(mode="json")
    return {key: values[key] for key in CONDA_STORE_SETTINGS}


async def get_settings(request: web.Request) -> web.Response:
    namespace, environment, arn = _scope(request)
    require(request, arn, "setting::read", message="Unauthorized to read settings")
    settings = await context_of(request).effective_settings(namespace, environment)
    return ok(settings_document(settings))


async def put_settings(request: web.Request) -> web.Response:
    namespace, environment, arn = _scope(request)
    require(request, arn, "setting::update", message="Unauthorized to update settings")
    values = await read_json_object(request)
    unknown = set(values) - set(CONDA_STORE_SETTINGS)
    if unknown:
        raise ApiError(400, f"Invalid setting keys {unknown}")
    for key in sorted(values):
        if key in DEPLOYMENT_ONLY_SETTINGS:
            raise ApiError(
                400,
                f"Setting {key} names a namespace every envstore service reads at start; it is set with "
                f"ENVSTORE_{key.upper()} in their environment, not through this API",
            )
    if namespace is not None:
        for key in values:
            if key in GLOBAL_ONLY_SETTINGS:
                raise ApiError(
                    400, f"Setting {key} is a global setting and cannot be set within a namespace or environment"
                )
    context = context_of(request)
    current = await context.effective_settings(namespace, environment)
    try:
        validated = current.model_validate({**current.model_dump(), **values})
    except ValidationError as error:
        raise ApiError(400, settings_validation_message(error)) from None
    normalized = {key: validated.model_dump(mode="json")[key] for key in values}
    await context.publish_and_wait(
        SettingsChanged(namespace=namespace, environment=environment, values=normalized),
        f"settings:{uuid.uuid4()}",
        actor_of(request),
    )
    return ok(None, message=f"global setting keys {sorted(values)} updated")


def register(routes: Routes) -> None:
    for path in ("/api/v1/setting/", "/api/v1/setting/{namespace}/", "/api/v1/setting/{namespace}/{environment}/"):
        routes.add("GET", path, get_settings, "Effective settings at this level", responses=(200, 403))
        routes.add("PUT", path, put_settings, "Store settings at this level", body={"type": "object"}, responses=(200, 400, 403))
