"""§6.2's auth end-to-end (conda-store's ``tests/server/test_auth.py``): role mappings stored on a
namespace grant rights to tokens by their primary namespace — v1 mappings
(``PUT namespace/A {"role_mappings": {"B/ex*-name": [role]}}``) only when ``role_mappings_version``
is 1, v2 mappings (``POST namespace/B/role {"other_namespace": A, "role": role}``) only when it
is 2. The workbench runs version 1 (the default); a stack of this module's own runs version 2.
Each stack gets both kinds of mapping, so each test also shows the other kind has no effect."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import mint, running_stack
from tests.deployments import Deployment
from tests.api_client import ApiClient, environment_yaml

# The same tests at the root, under /conda-store, and behind a TLS-terminating proxy.
pytestmark = pytest.mark.every_deployment


@pytest.fixture(scope="module")
async def version_two(
    tmp_path_factory: pytest.TempPathFactory, channel_url: str, deployment: Deployment
) -> AsyncIterator[EmbeddedStack]:
    async with running_stack(
        tmp_path_factory.mktemp("role-mappings-v2"), channel_url, deployment, ENVSTORE_ROLE_MAPPINGS_VERSION="2"
    ) as stack:
        yield stack


async def mapped_world(stack: EmbeddedStack, role: str) -> tuple[str, str]:
    """Namespace A (the token's primary namespace) and B (holding example-name and other-name),
    with a v1 mapping on A for ``B/ex*-name`` and a v2 mapping of B to A, both with ``role``."""
    suffix = uuid.uuid4().hex[:6]
    granted_to, granting = f"a-{suffix}", f"b-{suffix}"
    async with ApiClient(stack.api_url, token=stack.admin_token) as admin:
        assert (await admin.request("POST", f"/api/v1/namespace/{granted_to}/"))[0] == 200
        for name in ("example-name", "other-name"):
            await admin.submit(environment_yaml(name, ["tinyjson"]), granting)
        status, body = await admin.request(
            "PUT", f"/api/v1/namespace/{granted_to}/", json={"role_mappings": {f"{granting}/ex*-name": [role]}}
        )
        assert status == 200, body
        status, body = await admin.request(
            "POST", f"/api/v1/namespace/{granting}/role", json={"other_namespace": granted_to, "role": role}
        )
        assert status == 200, body
    return granted_to, granting


async def rights(stack: EmbeddedStack, token: str, namespace: str, environment: str) -> dict[str, int]:
    """What the token gets on one environment: read, update, delete-build (a 400 or 200 there
    means it got past the permission check)."""
    async with ApiClient(stack.api_url, token=token) as client:
        read, _ = await client.get(f"/api/v1/environment/{namespace}/{environment}/")
        update, _ = await client.request(
            "PUT", f"/api/v1/environment/{namespace}/{environment}/", json={"description": "touched"}
        )
        settings, _ = await client.get(f"/api/v1/setting/{namespace}/{environment}/")
    return {"read": read, "update": update, "settings": settings}


EXPECTED = {
    "viewer": {"read": 200, "update": 403, "settings": 403},
    "editor": {"read": 200, "update": 200, "settings": 200},
    "developer": {"read": 200, "update": 200, "settings": 200},
    "admin": {"read": 200, "update": 200, "settings": 200},
}
NOTHING = {"read": 403, "update": 403, "settings": 403}


@pytest.mark.parametrize("role", ["viewer", "editor", "developer", "admin"])
async def test_v1_role_mappings_grant_by_primary_namespace(workbench: EmbeddedStack, role: str) -> None:
    granted_to, granting = await mapped_world(workbench, role)
    # A token whose own bindings reach nothing in B.
    token = await mint(workbench, {f"{granted_to}/*": ["viewer"]}, primary_namespace=granted_to)
    assert await rights(workbench, token, granting, "example-name") == EXPECTED[role]
    # The mapping names B/ex*-name: other-name is out of it (and v2 mappings count for nothing).
    assert await rights(workbench, token, granting, "other-name") == NOTHING
    # Another primary namespace gets nothing from A's mappings.
    stranger = await mint(workbench, {f"{granted_to}/*": ["viewer"]}, primary_namespace="default")
    assert await rights(workbench, stranger, granting, "example-name") == NOTHING
    async with ApiClient(workbench.api_url, token=token) as client:
        roles = (await client.get("/api/v1/permission/"))[1]["data"]["entity_roles"]
    assert roles[f"{granting}/ex*-name"] == ["developer" if role == "editor" else role]


@pytest.mark.parametrize("role", ["viewer", "editor", "developer", "admin"])
async def test_v2_role_mappings_grant_to_other_namespaces(version_two: EmbeddedStack, role: str) -> None:
    granted_to, granting = await mapped_world(version_two, role)
    token = await mint(version_two, {f"{granted_to}/*": ["viewer"]}, primary_namespace=granted_to)
    # v2: the role holds on every environment of B (the v1 pattern counts for nothing here).
    assert await rights(version_two, token, granting, "example-name") == EXPECTED[role]
    assert await rights(version_two, token, granting, "other-name") == EXPECTED[role]
    stranger = await mint(version_two, {f"{granted_to}/*": ["viewer"]}, primary_namespace="default")
    assert await rights(version_two, stranger, granting, "example-name") == NOTHING


async def test_v2_mapping_removed_takes_the_rights_away(version_two: EmbeddedStack) -> None:
    granted_to, granting = await mapped_world(version_two, "editor")
    token = await mint(version_two, {f"{granted_to}/*": ["viewer"]}, primary_namespace=granted_to)
    assert (await rights(version_two, token, granting, "example-name"))["update"] == 200
    async with ApiClient(version_two.api_url, token=version_two.admin_token) as admin:
        status, _ = await admin.request("DELETE", f"/api/v1/namespace/{granting}/role", json={"other_namespace": granted_to})
        assert status == 200
    assert await rights(version_two, token, granting, "example-name") == NOTHING


async def test_tokens_minted_through_a_mapping_stay_within_it(workbench: EmbeddedStack) -> None:
    """A token holding rights through a v1 mapping may pass them on, and no more."""
    granted_to, granting = await mapped_world(workbench, "editor")
    token = await mint(workbench, {f"{granted_to}/*": ["viewer"]}, primary_namespace=granted_to)
    async with ApiClient(workbench.api_url, token=token) as client:
        status, body = await client.request(
            "POST", "/api/v1/token/", json={"role_bindings": {f"{granting}/example-name": ["editor"]}, "primary_namespace": "default"}
        )
        assert status == 200, body
        status, body = await client.request(
            "POST", "/api/v1/token/", json={"role_bindings": {f"{granting}/other-name": ["viewer"]}, "primary_namespace": "default"}
        )
        assert status == 400
