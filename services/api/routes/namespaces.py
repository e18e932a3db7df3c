"""Namespaces: list, read, create, update (metadata, v1 role mappings), delete, and the v2 role
mappings a namespace grants to other namespaces."""

from __future__ import annotations

import uuid

from aiohttp import web

from envstore.api.context import actor_of, context_of, principal_of, require
from envstore.api.cached_reads import cached_listing
from envstore.api.envelopes import ApiError, ack, ok
from envstore.api.pagination import page_of
from envstore.api.routes.paths import Routes
from envstore.api.routes.specifications import read_json_object
from envstore.common.events import (
    DoomedBuild,
    NamespaceCreated,
    NamespaceDeleted,
    NamespaceRoleMappingChanged,
    NamespaceUpdated,
    namespace_own,
    namespace_tree,
)
from envstore.common.permissions import ARN_PATTERN, KNOWN_ROLES, stored_role
from envstore.common.specification import check_name

NAMESPACE_MISSING = "namespace does not exist"


def _message_id(kind: str) -> str:
    return f"{kind}:{uuid.uuid4()}"


async def list_namespaces(request: web.Request) -> web.Response:
    page = page_of(request)

    async def listing() -> dict:
        rows, count = await context_of(request).read_model.namespaces(principal_of(request), page)
        # conda-store drops default values from this one page, so unlike the others it has no "message".
        data = [{"id": row["id"], "name": row["name"]} for row in rows]
        return {"status": "ok", "data": data, "page": page.page, "size": page.size, "count": count}

    return await cached_listing(request, listing)


async def _existing_namespace(request: web.Request, *permissions: str):  # type: ignore[no-untyped-def]
    name = request.match_info["namespace"]
    require(request, name, *permissions, message="Unauthorized to access namespace")
    row = await context_of(request).read_model.namespace(name)
    if row is None:
        raise ApiError(404, NAMESPACE_MISSING)
    return row


async def get_namespace(request: web.Request) -> web.Response:
    row = await _existing_namespace(request, "namespace::read")
    return ok(await context_of(request).read_model.namespace_document(row))


async def create_namespace(request: web.Request) -> web.Response:
    name = request.match_info["namespace"]
    try:
        check_name(name, "namespace name")
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    require(request, name, "namespace::create", message="Unauthorized to create namespace")
    context = context_of(request)

    async def decide() -> NamespaceCreated:
        if await context.read_model.namespace(name) is not None:
            raise ApiError(409, "namespace already exists")
        return NamespaceCreated(namespace=name)

    await context.command(namespace_own(name), decide, _message_id("namespace-created"), actor_of(request))
    return ack()


def _role_mappings(value: object) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise ApiError(400, "role_mappings must map ARNs ('namespace/environment') to lists of roles")
    mappings: dict[str, list[str]] = {}
    for arn, roles in value.items():
        if not isinstance(arn, str) or not ARN_PATTERN.match(arn):
            raise ApiError(400, f"role mapping {arn!r} is not an ARN like 'namespace/environment' (* allowed)")
        if not isinstance(roles, list) or not all(isinstance(role, str) and role in KNOWN_ROLES for role in roles):
            raise ApiError(400, f"roles of {arn!r} must be a list of {list(KNOWN_ROLES)}")
        mappings[arn] = [stored_role(role) for role in roles]
    return mappings


async def update_namespace(request: web.Request) -> web.Response:
    row = await _existing_namespace(
        request, "namespace::update", "namespace-role-mapping::create", "namespace-role-mapping::delete"
    )
    body = await read_json_object(request)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError(400, "metadata must be a JSON object")
    role_mappings = _role_mappings(body["role_mappings"]) if body.get("role_mappings") is not None else None
    # A v1 mapping on a namespace is held by every token whose primary namespace it is, the
    # caller's own included: granting more than the caller holds would make them admin anywhere.
    if role_mappings and not principal_of(request).covers(role_mappings):
        raise ApiError(403, "role_mappings may grant only roles you hold yourself on those namespaces and environments")
    await _namespace_command(
        request, row["name"], NamespaceUpdated(namespace=row["name"], metadata=metadata, role_mappings=role_mappings), "namespace-updated"
    )
    return ack()


async def _namespace_command(request: web.Request, name: str, event: object, kind: str) -> None:
    """Publish ``event`` if the namespace still exists when it lands (its own events' position)."""
    context = context_of(request)

    async def decide():  # type: ignore[no-untyped-def]
        if await context.read_model.namespace(name) is None:
            raise ApiError(404, NAMESPACE_MISSING)
        return event

    await context.command(namespace_own(name), decide, _message_id(kind), actor_of(request))


async def update_metadata(request: web.Request) -> web.Response:
    row = await _existing_namespace(request, "namespace::update")
    metadata = await read_json_object(request)
    await _namespace_command(request, row["name"], NamespaceUpdated(namespace=row["name"], metadata=metadata), "namespace-updated")
    return ok(None)


async def delete_namespace(request: web.Request) -> web.Response:
    row = await _existing_namespace(request, "namespace::delete")
    name = row["name"]
    context = context_of(request)

    async def decide() -> NamespaceDeleted:
        current = await context.read_model.namespace(name)
        if current is None:
            raise ApiError(404, NAMESPACE_MISSING)
        # Every build of every environment as of the namespace tree's position.
        builds = [
            DoomedBuild(build_id=build["id"], namespace=name, build_key=build["build_key"])
            for build in await context.read_model.builds_of_namespace(current["id"])
        ]
        return NamespaceDeleted(namespace=name, builds=builds)

    await context.command(namespace_tree(name), decide, _message_id("namespace-deleted"), actor_of(request))
    return ack()


# --- v2 role mappings -----------------------------------------------------------------------


async def _other_namespace(request: web.Request, name: object):  # type: ignore[no-untyped-def]
    if not isinstance(name, str) or not name:
        raise ApiError(400, "other_namespace must name a namespace")
    other = await context_of(request).read_model.namespace(name)
    if other is None:
        raise ApiError(400, f"Namespace='{name}' not found")
    return other


def _role(value: object) -> str:
    if not isinstance(value, str) or value not in KNOWN_ROLES:
        raise ApiError(400, f"role must be one of {list(KNOWN_ROLES)}")
    return stored_role(value)


async def list_roles(request: web.Request) -> web.Response:
    row = await _existing_namespace(request, "namespace::read", "namespace-role-mapping::read")
    return ok(await context_of(request).read_model.v2_role_mappings(row["id"]))


async def delete_roles(request: web.Request) -> web.Response:
    row = await _existing_namespace(request, "namespace::read", "namespace-role-mapping::delete")
    await _namespace_command(request, row["name"], NamespaceRoleMappingChanged(namespace=row["name"]), "roles-cleared")
    return ack()


async def get_role(request: web.Request) -> web.Response:
    row = await _existing_namespace(request, "namespace::read", "namespace-role-mapping::read")
    other = await _other_namespace(request, request.query.get("other_namespace"))
    mappings = await context_of(request).read_model.v2_role_mappings(row["id"], other["id"])
    if not mappings:
        raise ApiError(404, "failed to find role")
    return ok(mappings[0])


async def _change_role(request: web.Request, permission: str, must_exist: bool | None) -> web.Response:
    row = await _existing_namespace(request, "namespace::read", permission)
    body = await read_json_object(request)
    other_name = body.get("other_namespace")
    await _other_namespace(request, other_name)
    role = _role(body.get("role")) if must_exist is not None else None
    context = context_of(request)
    name = row["name"]

    async def decide() -> NamespaceRoleMappingChanged:
        current = await context.read_model.namespace(name)
        if current is None:
            raise ApiError(404, NAMESPACE_MISSING)
        other = await _other_namespace(request, other_name)
        existing = await context.read_model.v2_role_mappings(current["id"], other["id"])
        if must_exist is False and existing:
            raise ApiError(409, f"namespace {name} already grants a role to {other['name']}; use PUT to change it")
        if must_exist is True and not existing:
            raise ApiError(404, "failed to find role")
        return NamespaceRoleMappingChanged(namespace=name, other_namespace=other["name"], role=role)

    await context.command(namespace_own(name), decide, _message_id("role-changed"), actor_of(request))
    return ack()


async def create_role(request: web.Request) -> web.Response:
    return await _change_role(request, "namespace-role-mapping::create", must_exist=False)


async def update_role(request: web.Request) -> web.Response:
    return await _change_role(request, "namespace-role-mapping::update", must_exist=True)


async def delete_role(request: web.Request) -> web.Response:
    return await _change_role(request, "namespace-role-mapping::delete", must_exist=None)


ROLE_BODY = {"type": "object", "properties": {"other_namespace": {"type": "string"}, "role": {"type": "string"}}}


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/namespace/", list_namespaces, "Namespaces the caller may see", query=("page", "size", "order", "sort_by"))
    routes.add("GET", "/api/v1/namespace/{namespace}/", get_namespace, "One namespace", responses=(200, 403, 404))
    routes.add("POST", "/api/v1/namespace/{namespace}/", create_namespace, "Create a namespace", responses=(200, 400, 403, 409))
    routes.add(
        "PUT",
        "/api/v1/namespace/{namespace}/",
        update_namespace,
        "Replace a namespace's metadata and/or v1 role mappings",
        body={"type": "object", "properties": {"metadata": {"type": "object"}, "role_mappings": {"type": "object"}}},
        responses=(200, 400, 403, 404),
    )
    routes.add(
        "PUT", "/api/v1/namespace/{namespace}/metadata", update_metadata, "Replace a namespace's metadata",
        body={"type": "object"}, responses=(200, 400, 403, 404),
    )
    routes.add("DELETE", "/api/v1/namespace/{namespace}/", delete_namespace, "Delete a namespace, its environments and builds", responses=(200, 403, 404))
    routes.add("GET", "/api/v1/namespace/{namespace}/roles", list_roles, "v2 role mappings the namespace grants", responses=(200, 403, 404))
    routes.add("DELETE", "/api/v1/namespace/{namespace}/roles", delete_roles, "Remove all v2 role mappings the namespace grants", responses=(200, 403, 404))
    routes.add("GET", "/api/v1/namespace/{namespace}/role", get_role, "The role granted to other_namespace", query=("other_namespace",), responses=(200, 400, 403, 404))
    routes.add("POST", "/api/v1/namespace/{namespace}/role", create_role, "Grant a role to another namespace", body=ROLE_BODY, responses=(200, 400, 403, 404, 409))
    routes.add("PUT", "/api/v1/namespace/{namespace}/role", update_role, "Change the role granted to another namespace", body=ROLE_BODY, responses=(200, 400, 403, 404))
    routes.add("DELETE", "/api/v1/namespace/{namespace}/role", delete_role, "Revoke the role granted to another namespace", body=ROLE_BODY, responses=(200, 400, 403, 404))
