"""The permission matrix: anonymous, viewer, editor (and its alias developer), admin × every route.

Each route carries the permissions conda-store-api.md §1 requires for it on the target
namespace/environment; a caller whose role grants them gets the route's success status, any other
caller 403. The expected answers are computed from §4.3's role table (``permission_strings``), not
from envstore's code. Roles are bound on ``*/*``; the target namespace is not ``default``, so
anonymous callers hold nothing on it. Routes that need no permission answer everyone, and the lists
show the target only to callers with a binding that matches it.

``test_the_matrix_covers_every_route`` keeps the matrix complete: every operation in
``/openapi.json`` must have a row here. A route that changes or removes something gets a fresh
object of its own whenever the caller is expected to succeed, so rows do not depend on each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import PASSWORD, fresh, mint
from tests.api.permission_strings import ADMIN, EDITOR, VIEWER
from tests.api_client import ApiClient, environment_yaml

ROLES = ("anonymous", "viewer", "editor", "developer", "admin")
HELD = {"anonymous": set(), "viewer": set(VIEWER), "editor": set(EDITOR), "developer": set(EDITOR), "admin": set(ADMIN)}



@dataclass
class Targets:
    stack: EmbeddedStack
    channel_url: str
    namespace: str  # holds "target", whose completed build has a conda-pack archive
    build_id: int
    logs_key: str
    roles_namespace: str  # grants a v2 role to grantee
    grantee: str
    webhook_id: int = 0  # a webhook on the grantee namespace
    tokens: dict[str, str | None] = field(default_factory=dict)

    async def completed_build(self, name: str | None = None) -> int:
        async with ApiClient(self.stack.api_url, token=self.stack.admin_token) as admin:
            build = await admin.wait_for_build(
                await admin.submit(environment_yaml(name or fresh("doomed"), ["tinyjson"]), self.namespace)
            )
        assert build["status"] == "COMPLETED", build["status_info"]
        return build["id"]

    async def as_admin(self, method: str, path: str, **options: Any) -> tuple[int, Any]:
        async with ApiClient(self.stack.api_url, token=self.stack.admin_token) as admin:
            return await admin.request(method, path, **options)

    async def grant(self, present: bool) -> None:
        """Make the v2 mapping roles_namespace → grantee exist (or not)."""
        role = f"/api/v1/namespace/{self.roles_namespace}/role"
        await self.as_admin("DELETE", role, json={"other_namespace": self.grantee})
        if present:
            status, body = await self.as_admin("POST", role, json={"other_namespace": self.grantee, "role": "viewer"})
            assert status == 200, body


Request = tuple[str, dict[str, Any]]  # concrete path, request options
Prepare = Callable[[Targets, bool], Awaitable[Request]]


@dataclass(frozen=True)
class Row:
    method: str
    route: str  # as in /openapi.json
    needs: frozenset[str]  # on the target, per conda-store-api.md §1
    success: int
    request: Prepare
    # For lists: does the answer show the target? (It must, exactly to callers bound to it.)
    shows_target: Callable[[Any, Targets], bool] | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}"


def fixed(path: str, **options: Any) -> Prepare:
    """The same request for every caller; ``{t.…}`` in the path and in option values are filled
    from the targets."""

    def filled(value: Any, targets: Targets) -> Any:
        if isinstance(value, str):
            return value.format(t=targets)
        if isinstance(value, dict):
            return {key: filled(item, targets) for key, item in value.items()}
        return value

    async def request(targets: Targets, allowed: bool) -> Request:
        return path.format(t=targets), filled(options, targets)

    return request


def perms(*names: str) -> frozenset[str]:
    return frozenset(names)


READ = perms("environment::read")


async def new_specification(targets: Targets, allowed: bool) -> Request:
    return "/api/v1/specification/", {
        "json": {"namespace": targets.namespace, "specification": environment_yaml(fresh("made"), ["tinyjson"])}
    }


async def build_to_delete(targets: Targets, allowed: bool) -> Request:
    build_id = await targets.completed_build() if allowed else targets.build_id
    return f"/api/v1/build/{build_id}/", {}


async def build_to_archive(targets: Targets, allowed: bool) -> Request:
    """A completed build that is not current (the current build is never archived)."""
    build_id = targets.build_id
    if allowed:
        name = fresh("archived")
        build_id = await targets.completed_build(name)
        await targets.completed_build(name)
    return f"/api/v1/build/{build_id}/archive/", {}


async def environment_to_delete(targets: Targets, allowed: bool) -> Request:
    name = fresh("doomed")
    if allowed:
        await targets.completed_build(name)
    else:
        name = "target"
    return f"/api/v1/environment/{targets.namespace}/{name}/", {}


async def namespace_to_create(targets: Targets, allowed: bool) -> Request:
    return f"/api/v1/namespace/{fresh('created')}/", {}


async def namespace_to_delete(targets: Targets, allowed: bool) -> Request:
    name = targets.namespace
    if allowed:
        name = fresh("deleted")
        status, body = await targets.as_admin("POST", f"/api/v1/namespace/{name}/")
        assert status == 200, body
    return f"/api/v1/namespace/{name}/", {}


def role_route(method: str, mapping_present: bool, body: dict[str, Any] | None = None) -> Prepare:
    async def request(targets: Targets, allowed: bool) -> Request:
        await targets.grant(mapping_present)
        path = f"/api/v1/namespace/{targets.roles_namespace}/role"
        if method == "GET":
            return path, {"params": {"other_namespace": targets.grantee}}
        return path, {"json": {"other_namespace": targets.grantee, **(body or {})}}

    return request


def roles_route(mapping_present: bool) -> Prepare:
    async def request(targets: Targets, allowed: bool) -> Request:
        await targets.grant(mapping_present)
        return f"/api/v1/namespace/{targets.roles_namespace}/roles", {}

    return request


async def solve_request(targets: Targets, allowed: bool) -> Request:
    return "/api/v1/specification/", {"params": {"conda": "tinyjson", "channel": targets.channel_url}}


async def login_request(targets: Targets, allowed: bool) -> Request:
    return "/login/", {"json": {"username": "someone", "password": PASSWORD}}


async def stored_artifact(targets: Targets, allowed: bool) -> Request:
    return f"/storage/{targets.logs_key}", {}


# Loopback (allowed for these stacks by ENVSTORE_WEBHOOK_ALLOWED_HOSTS) on a port nothing listens
# on: deliveries fail at once on this machine. Tests never aim traffic at a real host.
WEBHOOK_URL = "http://127.0.0.1:9/envstore-hook"


async def register_webhook(targets: Targets) -> int:
    status, body = await targets.as_admin("POST", "/api/v1/webhook/", json={"url": WEBHOOK_URL, "namespace": targets.grantee})
    assert status == 200, body
    return body["data"]["id"]


async def webhook_to_delete(targets: Targets, allowed: bool) -> Request:
    webhook_id = await register_webhook(targets) if allowed else targets.webhook_id
    return f"/api/v1/webhook/{webhook_id}/", {}


def names_in(body: Any) -> set[str]:
    return {row["name"] for row in body["data"]}


def lists_namespace(body: Any, targets: Targets) -> bool:
    return targets.namespace in names_in(body)


def lists_environment(body: Any, targets: Targets) -> bool:
    return any(row["namespace"]["name"] == targets.namespace and row["name"] == "target" for row in body["data"])


def lists_build(body: Any, targets: Targets) -> bool:
    return targets.build_id in {row["id"] for row in body["data"]}


def lists_storage(body: Any, targets: Targets) -> bool:
    return targets.namespace in {entry["namespace"] for entry in body["data"]}


def counts_namespace(body: Any, targets: Targets) -> bool:
    return targets.namespace in body["data"]


NS = "{t.namespace}"
ENV = "{t.namespace}/target"
BUILD = "{t.build_id}"
ROLE_PERMS = perms("namespace::read", "namespace-role-mapping::read")

ROWS = [
    # status, identity, tokens, login (no permission needed)
    Row("GET", "/api/v1/", perms(), 200, fixed("/api/v1/")),
    Row("GET", "/api/v1/permission/", perms(), 200, fixed("/api/v1/permission/")),
    Row("GET", "/api/v1/usage/", perms(), 200, fixed("/api/v1/usage/"), counts_namespace),
    Row("GET", "/login/", perms(), 200, fixed("/login/")),
    Row("POST", "/login/", perms(), 200, login_request),
    Row("POST", "/logout/", perms(), 303, fixed("/logout/")),
    Row("POST", "/api/v1/token/", perms(), 200, fixed("/api/v1/token/", json={})),
    Row("GET", "/openapi.json", perms(), 200, fixed("/openapi.json")),
    Row("GET", "/metrics", perms(), 200, fixed("/metrics")),
    Row("GET", "/healthz", perms(), 200, fixed("/healthz")),
    Row("GET", "/readyz", perms(), 200, fixed("/readyz")),
    Row("GET", "/registry/token", perms(), 200, fixed("/registry/token", params={"service": "envstore-registry"})),
    Row("GET", "/api/v1/projection/", perms("namespace::delete", "setting::update"), 200, fixed("/api/v1/projection/")),
    # Not stalled: an admin's decision is refused for that (409), anyone else's for permissions.
    Row("POST", "/api/v1/projection/skip/", perms("namespace::delete", "setting::update"), 409,
        fixed("/api/v1/projection/skip/", json={"sequence": 1, "reason": "matrix"})),
    Row("GET", "/api/v1/audit/", perms("namespace::delete", "setting::update"), 200, fixed("/api/v1/audit/")),
    # Unsigned: only for callers who may read the artifact's environment (signed links: test_artifact_links).
    Row("GET", "/storage/{key}", READ, 200, stored_artifact),
    # specifications
    Row("POST", "/api/v1/specification/", perms("environment:create"), 200, new_specification),
    Row("GET", "/api/v1/specification/", perms(), 200, solve_request),
    # builds (404-before-auth: the build exists, so the answer is 403 or success)
    Row("GET", "/api/v1/build/", perms(), 200, fixed("/api/v1/build/", params={"size": "100", "order": "desc"}), lists_build),
    Row("GET", "/api/v1/build/{build_id}/", READ, 200, fixed(f"/api/v1/build/{BUILD}/")),
    Row("PUT", "/api/v1/build/{build_id}/", perms("environment::update"), 200, fixed(f"/api/v1/build/{BUILD}/")),
    Row("DELETE", "/api/v1/build/{build_id}/", perms("build::delete"), 200, build_to_delete),
    Row("PUT", "/api/v1/build/{build_id}/cancel/", perms("build::cancel"), 200, fixed(f"/api/v1/build/{BUILD}/cancel/")),
    Row("GET", "/api/v1/build/{build_id}/packages/", READ, 200, fixed(f"/api/v1/build/{BUILD}/packages/")),
    Row("GET", "/api/v1/build/{build_id}/lockfile/", READ, 307, fixed(f"/api/v1/build/{BUILD}/lockfile/")),
    Row("GET", "/api/v1/build/{build_id}/conda-lock.yml", READ, 307, fixed(f"/api/v1/build/{BUILD}/conda-lock.yml")),
    Row("GET", "/api/v1/build/{build_id}/conda-lock.yaml", READ, 307, fixed(f"/api/v1/build/{BUILD}/conda-lock.yaml")),
    Row("GET", "/api/v1/build/{build_id}/yaml/", READ, 307, fixed(f"/api/v1/build/{BUILD}/yaml/")),
    Row("GET", "/api/v1/build/{build_id}/logs/", READ, 307, fixed(f"/api/v1/build/{BUILD}/logs/")),
    Row("GET", "/api/v1/build/{build_id}/archive/", READ, 307, fixed(f"/api/v1/build/{BUILD}/archive/")),
    # No installer or image was asked for: readers get conda-store's 400s.
    Row("GET", "/api/v1/build/{build_id}/installer/", READ, 400, fixed(f"/api/v1/build/{BUILD}/installer/")),
    Row("GET", "/api/v1/build/{build_id}/docker/", READ, 400, fixed(f"/api/v1/build/{BUILD}/docker/")),
    Row("GET", "/api/v1/build/{build_id}/artifacts/", READ, 200, fixed(f"/api/v1/build/{BUILD}/artifacts/")),
    # envstore's lifecycle routes (reads need environment::read on every build they read)
    Row("GET", "/api/v1/build/{build_id}/diff/{other_build_id}/", READ, 200, fixed(f"/api/v1/build/{BUILD}/diff/{BUILD}/")),
    Row("GET", "/api/v1/build/{build_id}/sbom/", READ, 200, fixed(f"/api/v1/build/{BUILD}/sbom/")),
    Row("GET", "/api/v1/build/{build_id}/usage/", READ, 200, fixed(f"/api/v1/build/{BUILD}/usage/")),
    Row("GET", "/api/v1/environment/{namespace}/{name}/usage/", READ, 200, fixed(f"/api/v1/environment/{ENV}/usage/")),
    Row("GET", "/lifecycle/{namespace}/{name}/", READ, 200, fixed(f"/lifecycle/{ENV}/")),
    # Archiving frees artifacts as a deletion does (build::delete).
    Row("POST", "/api/v1/build/{build_id}/archive/", perms("build::delete"), 200, build_to_archive),
    # Not archived: the answer is its state (reading an artifact may rehydrate it, so reading is enough).
    Row("POST", "/api/v1/build/{build_id}/rehydrate/", READ, 200, fixed(f"/api/v1/build/{BUILD}/rehydrate/")),
    Row("GET", "/api/v1/build/{build_id}/rehydration/", READ, 200, fixed(f"/api/v1/build/{BUILD}/rehydration/")),
    # Storage totals list the namespaces the caller may read; collecting garbage is for */* admins
    # (a dry run here: the matrix's stack is shared).
    Row("GET", "/api/v1/storage/", perms(), 200, fixed("/api/v1/storage/"), lists_storage),
    Row("POST", "/api/v1/storage/gc/", perms("namespace::delete", "setting::update"), 200,
        fixed("/api/v1/storage/gc/", json={"dry_run": True})),
    # Anyone may ask; it archives only in the environments where the caller holds build::delete.
    Row("POST", "/api/v1/retention/", perms(), 200, fixed("/api/v1/retention/", json={"namespace": NS, "dry_run": True})),
    # environments
    Row("GET", "/api/v1/environment/", perms(), 200, fixed("/api/v1/environment/"), lists_environment),
    Row("GET", "/api/v2/environment/", perms(), 200, fixed("/api/v2/environment/", params={"limit": "10000"}), lists_environment),
    Row("GET", "/api/v1/environment/{namespace}/{name}/", READ, 200, fixed(f"/api/v1/environment/{ENV}/")),
    Row("PUT", "/api/v1/environment/{namespace}/{name}/", perms("environment::update"), 200,
        fixed(f"/api/v1/environment/{ENV}/", json={"description": "described"})),
    Row("DELETE", "/api/v1/environment/{namespace}/{name}/", perms("environment::delete"), 200, environment_to_delete),
    Row("GET", "/api/v1/environment/{namespace}/{name}/lockfile/", READ, 307, fixed(f"/api/v1/environment/{ENV}/lockfile/")),
    Row("GET", "/api/v1/environment/{namespace}/{name}/conda-lock.yml", READ, 307,
        fixed(f"/api/v1/environment/{ENV}/conda-lock.yml")),
    Row("GET", "/api/v1/environment/{namespace}/{name}/conda-lock.yaml", READ, 307,
        fixed(f"/api/v1/environment/{ENV}/conda-lock.yaml")),
    # namespaces
    Row("GET", "/api/v1/namespace/", perms(), 200, fixed("/api/v1/namespace/", params={"size": "100"}), lists_namespace),
    Row("GET", "/api/v1/namespace/{namespace}/", perms("namespace::read"), 200, fixed(f"/api/v1/namespace/{NS}/")),
    Row("POST", "/api/v1/namespace/{namespace}/", perms("namespace::create"), 200, namespace_to_create),
    Row("PUT", "/api/v1/namespace/{namespace}/",
        perms("namespace::update", "namespace-role-mapping::create", "namespace-role-mapping::delete"), 200,
        fixed(f"/api/v1/namespace/{NS}/", json={"metadata": {"checked": True}})),
    Row("PUT", "/api/v1/namespace/{namespace}/metadata", perms("namespace::update"), 200,
        fixed(f"/api/v1/namespace/{NS}/metadata", json={"checked": True})),
    Row("DELETE", "/api/v1/namespace/{namespace}/", perms("namespace::delete"), 200, namespace_to_delete),
    Row("GET", "/api/v1/namespace/{namespace}/roles", ROLE_PERMS, 200, roles_route(True)),
    Row("DELETE", "/api/v1/namespace/{namespace}/roles", perms("namespace::read", "namespace-role-mapping::delete"), 200,
        roles_route(True)),
    Row("GET", "/api/v1/namespace/{namespace}/role", ROLE_PERMS, 200, role_route("GET", True)),
    Row("POST", "/api/v1/namespace/{namespace}/role", perms("namespace::read", "namespace-role-mapping::create"), 200,
        role_route("POST", False, {"role": "editor"})),
    Row("PUT", "/api/v1/namespace/{namespace}/role", perms("namespace::read", "namespace-role-mapping::update"), 200,
        role_route("PUT", True, {"role": "admin"})),
    Row("DELETE", "/api/v1/namespace/{namespace}/role", perms("namespace::read", "namespace-role-mapping::delete"), 200,
        role_route("DELETE", True)),
    # settings (the global ARN "" is matched by the "*/*" bindings)
    Row("GET", "/api/v1/setting/", perms("setting::read"), 200, fixed("/api/v1/setting/")),
    Row("PUT", "/api/v1/setting/", perms("setting::update"), 200, fixed("/api/v1/setting/", json={"conda_max_solve_time": 300})),
    Row("GET", "/api/v1/setting/{namespace}/", perms("setting::read"), 200, fixed(f"/api/v1/setting/{NS}/")),
    Row("PUT", "/api/v1/setting/{namespace}/", perms("setting::update"), 200,
        fixed(f"/api/v1/setting/{NS}/", json={"conda_default_packages": []})),
    Row("GET", "/api/v1/setting/{namespace}/{environment}/", perms("setting::read"), 200, fixed(f"/api/v1/setting/{ENV}/")),
    Row("PUT", "/api/v1/setting/{namespace}/{environment}/", perms("setting::update"), 200,
        fixed(f"/api/v1/setting/{ENV}/", json={"conda_default_packages": []})),
    # catalogue
    Row("GET", "/api/v1/channel/", perms(), 200, fixed("/api/v1/channel/")),
    Row("GET", "/api/v1/package/", perms(), 200, fixed("/api/v1/package/")),
    # envstore's own: events are read with environment::read, webhooks are managed by whoever may
    # read and update the namespace (the admin role there). The webhook lives on the grantee.
    Row("GET", "/api/v1/events/", READ, 200, fixed("/api/v1/events/", params={"namespace": NS})),
    Row("POST", "/api/v1/webhook/", perms("environment::read", "namespace::update"), 200,
        fixed("/api/v1/webhook/", json={"url": WEBHOOK_URL, "namespace": "{t.grantee}"})),
    Row("GET", "/api/v1/webhook/", perms(), 200, fixed("/api/v1/webhook/")),
    Row("GET", "/api/v1/webhook/{webhook_id}/", perms("environment::read", "namespace::update"), 200,
        fixed("/api/v1/webhook/{t.webhook_id}/")),
    Row("PUT", "/api/v1/webhook/{webhook_id}/", perms("environment::read", "namespace::update"), 200,
        fixed("/api/v1/webhook/{t.webhook_id}/", json={"description": "checked"})),
    Row("DELETE", "/api/v1/webhook/{webhook_id}/", perms("environment::read", "namespace::update"), 200, webhook_to_delete),
    Row("GET", "/api/v1/webhook/{webhook_id}/delivery/", perms("environment::read", "namespace::update"), 200,
        fixed("/api/v1/webhook/{t.webhook_id}/delivery/")),
]


@pytest.fixture(scope="module")
async def targets(workbench: EmbeddedStack, channel_url: str) -> AsyncIterator[Targets]:
    namespace, roles_namespace, grantee = fresh("matrix"), fresh("roles"), fresh("grantee")
    async with ApiClient(workbench.api_url, token=workbench.admin_token) as admin:
        status, body = await admin.request(
            "PUT", f"/api/v1/setting/{namespace}/", json={"build_artifacts": ["LOCKFILE", "YAML", "LOGS", "CONDA_PACK"]}
        )
        assert status == 200, body
        build = await admin.wait_for_build(await admin.submit(environment_yaml("target", ["tinyjson"]), namespace))
        assert build["status"] == "COMPLETED", build["status_info"]
        build = await admin.wait_for_artifacts(build["id"], {"LOGS", "LOCKFILE", "YAML", "CONDA_PACK"})
        for name in (roles_namespace, grantee):
            assert (await admin.request("POST", f"/api/v1/namespace/{name}/"))[0] == 200
    logs_key = next(a["key"] for a in build["build_artifacts"] if a["artifact_type"] == "LOGS")
    found = Targets(workbench, channel_url, namespace, build["id"], logs_key, roles_namespace, grantee)
    found.webhook_id = await register_webhook(found)
    found.tokens = {"anonymous": None}
    for role in ROLES[1:]:
        found.tokens[role] = await mint(workbench, {"*/*": [role]})
    yield found


async def call(base_url: str, token: str | None, method: str, path: str, **options: Any) -> tuple[int, Any]:
    """One request from a session of its own that keeps no cookies (a login answer must not turn
    the caller into someone else), following no redirects (the 307s are what is checked)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(base_url, headers=headers, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.request(method, path, allow_redirects=False, **options) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
async def test_permission_matrix(targets: Targets, row: Row, role: str) -> None:
    allowed = row.needs <= HELD[role]
    path, options = await row.request(targets, allowed)
    status, body = await call(targets.stack.api_url, targets.tokens[role], row.method, path, **options)
    expected = row.success if allowed else 403
    assert status == expected, (role, row.name, path, body)
    if status >= 400:
        assert isinstance(body, dict) and body["status"] == "error" and body["message"], body
    if row.shows_target is not None:
        assert row.shows_target(body, targets) == (role != "anonymous"), (role, row.name)


async def test_the_matrix_covers_every_route(targets: Targets) -> None:
    status, document = await call(targets.stack.api_url, None, "GET", "/openapi.json")
    assert status == 200
    described = {f"{method.upper()} {path}" for path, operations in document["paths"].items() for method in operations}
    in_matrix = {row.name for row in ROWS}
    assert described - in_matrix == set(), "routes without a row in the permission matrix"
    assert in_matrix - described == {"GET /storage/{key}"}, "rows for routes that do not exist"


# --- bindings narrower than */* -----------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
async def test_namespace_bound_roles_stay_in_their_namespace(targets: Targets, role: str) -> None:
    """A role bound on ``<namespace>/*`` acts there as on ``*/*``, and nowhere else: another
    namespace's objects are refused and unlisted, new namespaces cannot be made and the global
    settings (ARN ``""``, matched only by ``*/…`` bindings) are out of reach."""
    token = await mint(targets.stack, {f"{targets.namespace}/*": [role]})
    url = targets.stack.api_url
    inside = READ | ({"environment::update"} if role != "viewer" else set())
    assert (await call(url, token, "GET", f"/api/v1/environment/{targets.namespace}/target/"))[0] == 200
    status, _ = await call(url, token, "PUT", f"/api/v1/environment/{targets.namespace}/target/", json={"description": "x"})
    assert status == (200 if "environment::update" in inside else 403)
    status, _ = await call(url, token, "GET", f"/api/v1/setting/{targets.namespace}/")
    assert status == (200 if role != "viewer" else 403)

    for method, path, options in (
        ("GET", f"/api/v1/namespace/{targets.grantee}/", {}),
        ("GET", f"/api/v1/namespace/{targets.roles_namespace}/roles", {}),
        ("PUT", f"/api/v1/namespace/{targets.grantee}/metadata", {"json": {}}),
        ("POST", f"/api/v1/namespace/{fresh('elsewhere')}/", {}),
        ("GET", "/api/v1/setting/", {}),
        ("PUT", "/api/v1/setting/", {"json": {"conda_max_solve_time": 300}}),
        ("POST", "/api/v1/specification/", {"json": {"namespace": targets.grantee, "specification": environment_yaml("x", ["tinyjson"])}}),
    ):
        status, body = await call(url, token, method, path, **options)
        assert status == 403, (role, method, path, body)
    status, body = await call(url, token, "GET", "/api/v1/namespace/")
    assert targets.namespace in [n["name"] for n in body["data"]]
    assert targets.grantee not in [n["name"] for n in body["data"]]


async def test_environment_bound_role_reaches_one_environment(targets: Targets) -> None:
    """``ns/env`` bindings also match the bare namespace ARN (``^ns(?:/env)?$``, §4.4), so a
    viewer of one environment can read its namespace, but not another environment in it."""
    other = await targets.completed_build("sibling")
    token = await mint(targets.stack, {f"{targets.namespace}/target": ["viewer"]})
    url = targets.stack.api_url
    assert (await call(url, token, "GET", f"/api/v1/environment/{targets.namespace}/target/"))[0] == 200
    assert (await call(url, token, "GET", f"/api/v1/namespace/{targets.namespace}/"))[0] == 200
    assert (await call(url, token, "GET", f"/api/v1/environment/{targets.namespace}/sibling/"))[0] == 403
    assert (await call(url, token, "GET", f"/api/v1/build/{other}/"))[0] == 403
    status, body = await call(url, token, "GET", "/api/v1/environment/", params={"namespace": targets.namespace})
    assert [environment["name"] for environment in body["data"]] == ["target"]
