"""Environments: v1 and v2 listings, read, update (rollback, description), delete, and the
current build's lockfile."""

from __future__ import annotations

import uuid

from aiohttp import web

from envstore.api.context import actor_of, context_of, principal_of, require
from envstore.api.answer_cache import CachedAnswer
from envstore.api.cached_reads import answer_of, cached_listing
from envstore.api.envelopes import ApiError, ack, json_bytes
from envstore.api.pagination import END_CURSOR, decode_cursor, encode_cursor, page_document, page_of, whole_number
from envstore.api.read_model import EnvironmentFilters, Page
from envstore.api.routes.builds import redirect_to_artifact
from envstore.common.usage import Use
from envstore.api.routes.paths import Routes
from envstore.api.routes.specifications import read_json_object
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.events import (
    EnvironmentCurrentBuildSet,
    EnvironmentDeleted,
    EnvironmentUpdated,
    environment_tree,
)
from envstore.common.read_model_rules import environment_deletion

ENVIRONMENT_MISSING = "environment does not exist"
BUILD_STATES = ("QUEUED", "BUILDING", "COMPLETED", "FAILED", "CANCELED")
V1_DEPRECATION = {"Deprecation": "True", "Sunset": "Mon, 17 Mar 2025 00:00:00 UTC"}
LIST_QUERY = ("search", "namespace", "name", "status", "artifact", "packages", "jwt")
ALL_ROWS_LIMIT = 10_000


def environment_filters(request: web.Request) -> EnvironmentFilters:
    status = request.query.get("status")
    if status is not None and status not in BUILD_STATES:
        raise ApiError(400, f"status must be one of {list(BUILD_STATES)}")
    artifact = request.query.get("artifact")
    if artifact is not None and artifact not in ArtifactKind.__members__:
        raise ApiError(400, f"artifact must be one of {[kind.value for kind in ArtifactKind]}")
    token_bindings = None
    if "jwt" in request.query:
        token_principal = context_of(request).tokens.principal_for(request.query["jwt"])
        token_bindings = token_principal.effective_bindings()
    return EnvironmentFilters(
        search=request.query.get("search") or None,
        namespace=request.query.get("namespace"),
        name=request.query.get("name"),
        status=status,
        artifact=artifact,
        packages=tuple(request.query.getall("packages", [])),
        token_bindings=token_bindings,
    )


async def list_environments_v1(request: web.Request) -> web.Response:
    filters = environment_filters(request)
    page = page_of(request)
    if "page" not in request.query and "size" not in request.query:
        # conda-store's CLI re-requests this same URL until it has `count` rows: answer all.
        page = Page(page=1, size=ALL_ROWS_LIMIT, descending=page.descending)

    async def listing() -> dict:
        rows, count = await context_of(request).read_model.environments_page(
            principal_of(request), filters, page, request.query.getall("sort_by", [])
        )
        return page_document(rows, page, count)

    return await cached_listing(request, listing, V1_DEPRECATION)


def _v2_sort_keys(request: web.Request) -> list[str]:
    keys = [key for value in request.query.getall("sort_by", []) for key in value.split(",") if key]
    unknown = [key for key in keys if key not in ("namespace", "name")]
    if unknown:
        raise ApiError(400, f"Cannot sort results by {unknown}. Valid sort_by values are ['namespace', 'name']")
    return keys


async def list_environments_v2(request: web.Request) -> web.Response:
    filters = environment_filters(request)
    order = request.query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"order must be 'asc' or 'desc', got {order!r}")
    sort_by = _v2_sort_keys(request)
    limit = whole_number(request, "limit", 100) or 100
    last_id, last_value = decode_cursor(request.query.get("cursor"))
    after = None
    if last_id is not None:
        after = ([(last_value or {}).get(key) for key in sort_by], last_id)

    async def listing() -> dict:
        rows, count, last = await context_of(request).read_model.environments_after(
            principal_of(request), filters, sort_by, order == "desc", limit, after
        )
        cursor = encode_cursor(last[1], last[0]) if last is not None else END_CURSOR
        return {"data": rows, "status": "ok", "message": None, "cursor": cursor, "count": count}

    return await cached_listing(request, listing)


async def readable_environment(request: web.Request, *permissions: str) -> dict:
    namespace = request.match_info["namespace"]
    name = request.match_info["name"]
    require(request, f"{namespace}/{name}", *(permissions or ("environment::read",)), message="Unauthorized to access environment")
    environment = await context_of(request).read_model.environment(namespace, name)
    if environment is None:
        raise ApiError(404, ENVIRONMENT_MISSING)
    return environment


async def get_environment(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    name = request.match_info["name"]
    require(request, f"{namespace}/{name}", "environment::read", message="Unauthorized to access environment")
    answers = context_of(request).answers
    key = ("environment", namespace, name)
    cached = answers.answer(key)
    if cached is None:
        generation = answers.generation
        environment = await context_of(request).read_model.environment(namespace, name)
        if environment is None:
            raise ApiError(404, ENVIRONMENT_MISSING)
        cached = CachedAnswer(json_bytes({"status": "ok", "data": environment, "message": None}))
        answers.keep(key, cached, generation)
    return answer_of(cached.body)


async def update_environment(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    name = request.match_info["name"]
    require(request, f"{namespace}/{name}", "environment::update", message="Unauthorized to update environment")
    body = await read_json_object(request)
    context = context_of(request)
    build_id = body.get("build_id")
    description = body.get("description")
    if build_id is not None and (not isinstance(build_id, int) or isinstance(build_id, bool)):
        raise ApiError(400, "build_id must be a whole number")
    if description is not None and not isinstance(description, str):
        raise ApiError(400, "description must be a string")
    aggregate = environment_tree(namespace, name)
    message_id = f"environment-update:{uuid.uuid4()}"

    async def existing_environment():  # type: ignore[no-untyped-def]
        environment = await context.read_model.environment(namespace, name)
        if environment is None:
            raise ApiError(400, f"environment namespace={namespace} name={name} does not exist")
        return environment

    async def rollback() -> EnvironmentCurrentBuildSet:
        environment = await existing_environment()
        # Past PostgreSQL's bigint no build can exist (and the query would fail).
        build = await context.read_model.build_row(build_id) if 0 < build_id < 2**63 else None
        if build is None:
            raise ApiError(400, f"build id={build_id} does not exist")
        if build["status"] != "COMPLETED" or build["deleted_on"] is not None:
            raise ApiError(400, "cannot update environment to build id since not completed")
        # conda-store checks only the name; the build must also belong to this namespace.
        if build["environment_id"] != environment["id"]:
            raise ApiError(400, "cannot update environment to build id since specification does not match environment name")
        if build["archive_generation"] > 0:
            # Its prefix was freed (rehydration remakes artifacts, not the prefix).
            raise ApiError(
                409, f"build {build_id} was archived and its installed prefix is gone; rebuild it (PUT /api/v1/build/{build_id}/) and make the new build current"
            )
        return EnvironmentCurrentBuildSet(
            namespace=namespace, environment=name, build_id=build_id, build_key=build["build_key"]
        )

    async def describe() -> EnvironmentUpdated:
        await existing_environment()
        return EnvironmentUpdated(namespace=namespace, environment=name, description=description)

    if build_id is None and description is None:
        await existing_environment()
    if build_id is not None:
        await context.command(aggregate, rollback, f"{message_id}:current-build", actor_of(request))
    if description is not None:
        await context.command(aggregate, describe, f"{message_id}:description", actor_of(request))
    return ack()


async def delete_environment(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    name = request.match_info["name"]
    require(request, f"{namespace}/{name}", "environment::delete", message="Unauthorized to delete environment")
    context = context_of(request)

    async def decide() -> EnvironmentDeleted:
        # Every build of the environment as of this position: a build submitted since would
        # move the environment's position and make this decision again.
        deletion = await environment_deletion(context.read_model.pool, namespace, name)
        if deletion is None:
            raise ApiError(400, f"environment namespace={namespace} name={name} does not exist")
        return deletion

    await context.command(
        environment_tree(namespace, name), decide, f"environment-deleted:{uuid.uuid4()}", actor_of(request)
    )
    return ack()


async def environment_lockfile(request: web.Request) -> web.StreamResponse:
    environment = await readable_environment(request)
    if environment["current_build_id"] is None:
        raise ApiError(404, "environment has no build")
    # What activating an environment by name fetches (conda-store's `run`): counted as an activation.
    return await redirect_to_artifact(request, environment["current_build_id"], ArtifactKind.LOCKFILE, Use.ACTIVATION)


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/environment/", list_environments_v1, "Environments (deprecated v1 listing)", query=("page", "size", "order", "sort_by", *LIST_QUERY))
    routes.add("GET", "/api/v2/environment/", list_environments_v2, "Environments, cursor-paginated", query=("limit", "order", "sort_by", "cursor", *LIST_QUERY), responses=(200, 400))
    routes.add("GET", "/api/v1/environment/{namespace}/{name}/", get_environment, "One environment", responses=(200, 403, 404))
    routes.add(
        "PUT", "/api/v1/environment/{namespace}/{name}/", update_environment,
        "Switch the current build (rollback) and/or set the description",
        body={"type": "object", "properties": {"build_id": {"type": "integer"}, "description": {"type": "string"}}},
        responses=(200, 400, 403),
    )
    routes.add("DELETE", "/api/v1/environment/{namespace}/{name}/", delete_environment, "Delete an environment and its builds", responses=(200, 400, 403))
    for suffix in ("lockfile/", "conda-lock.yml", "conda-lock.yaml"):
        routes.add("GET", f"/api/v1/environment/{{namespace}}/{{name}}/{suffix}", environment_lockfile, "The current build's conda-lock lockfile", responses=(307, 403, 404))
