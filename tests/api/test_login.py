"""The password backend as an attacker and as a user meet it: a login owns its own namespace,
reads ``default`` and nothing of anyone else's, shared namespaces are no login names, and guessing
is held back per user name and per client address (429 with Retry-After)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.deployments import Deployment
from tests.api.conftest import PASSWORD, USERNAME, fresh, running_stack
from tests.api_client import ApiClient, environment_yaml

WINDOW_SECONDS = 3
FAILURES_PER_USER = 5
FAILURES_PER_ADDRESS = 8


async def log_in(base_url: str, username: str) -> ApiClient:
    client = ApiClient(base_url)
    status, body = await client.request("POST", "/login/", json={"username": username, "password": PASSWORD})
    assert status == 200, body
    return client


async def test_a_login_owns_its_namespace_reads_default_and_touches_no_one_else(workbench: EmbeddedStack) -> None:
    alice, bob = fresh("alice"), fresh("bob")
    async with ApiClient(workbench.api_url, token=workbench.admin_token) as admin:
        shared = await admin.wait_for_build(await admin.submit(environment_yaml(fresh("shared"), ["tinyjson"]), "default"))
        bobs = await admin.wait_for_build(await admin.submit(environment_yaml("private", ["tinyjson"]), bob))
    assert shared["status"] == bobs["status"] == "COMPLETED"

    async with await log_in(workbench.api_url, alice) as client:
        status, body = await client.get("/api/v1/permission/")
        assert body["data"]["primary_namespace"] == alice
        assert body["data"]["entity_roles"] == {
            f"{alice}/*": ["admin"],
            "default/*": ["viewer"],
            "filesystem/*": ["viewer"],
        }
        # Builds in their own namespace, which the first submission creates.
        build = await client.wait_for_build(await client.submit(environment_yaml("mine", ["tinyjson"]), alice))
        assert build["status"] == "COMPLETED", build["status_info"]
        assert (await client.request("PUT", f"/api/v1/environment/{alice}/mine/", json={"description": "ok"}))[0] == 200
        # Reads default, changes nothing there.
        assert (await client.get(f"/api/v1/build/{shared['id']}/"))[0] == 200
        assert (await client.request("PUT", f"/api/v1/build/{shared['id']}/"))[0] == 403
        # Another user's namespace: neither readable nor writable, nor listed.
        refused: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", f"/api/v1/build/{bobs['id']}/", {}),
            ("GET", f"/api/v1/environment/{bob}/private/", {}),
            ("GET", f"/api/v1/build/{bobs['id']}/lockfile/", {}),
            ("PUT", f"/api/v1/environment/{bob}/private/", {"json": {"description": "mine now"}}),
            ("DELETE", f"/api/v1/environment/{bob}/private/", {}),
            ("POST", "/api/v1/specification/", {"json": {"namespace": bob, "specification": environment_yaml("x", ["tinyjson"])}}),
            ("GET", "/api/v1/setting/", {}),
            ("PUT", "/api/v1/setting/", {"json": {"conda_allowed_channels": []}}),
            ("POST", f"/api/v1/namespace/{fresh('elsewhere')}/", {}),
        ]
        for method, path, options in refused:
            status, body = await client.request(method, path, allow_redirects=False, **options)
            assert status == 403, (method, path, body)
        status, body = await client.get("/api/v1/environment/", params={"size": "100"})
        assert bob not in {row["namespace"]["name"] for row in body["data"]}
        # A v1 role mapping on their own namespace applies to their own tokens: it may not grant
        # more than they hold (that would make them admin everywhere).
        for grant in ({"*/*": ["admin"]}, {f"{bob}/*": ["viewer"]}):
            status, body = await client.request("PUT", f"/api/v1/namespace/{alice}/", json={"role_mappings": grant})
            assert status == 403, (grant, body)
        assert (await client.get(f"/api/v1/environment/{bob}/private/"))[0] == 403


async def test_users_named_as_administrators_are_admin_everywhere(workbench: EmbeddedStack) -> None:
    async with await log_in(workbench.api_url, USERNAME) as client:
        status, body = await client.get("/api/v1/permission/")
        assert body["data"]["entity_roles"]["*/*"] == ["admin"]
        assert (await client.get("/api/v1/setting/"))[0] == 200


@pytest.mark.parametrize("shared_namespace", ["default", "filesystem", "conda-store-dynamic"])
async def test_a_shared_namespace_is_no_login_name(workbench: EmbeddedStack, shared_namespace: str) -> None:
    """Its owner would administer what every user reads."""
    async with ApiClient(workbench.api_url) as client:
        status, body = await client.request("POST", "/login/", json={"username": shared_namespace, "password": PASSWORD})
        assert status == 403
        assert "reserved" in body["message"] and "own name" in body["message"]
        assert (await client.get("/api/v1/permission/"))[1]["data"]["authenticated"] is False


# --- guessing ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def guarded(tmp_path_factory: pytest.TempPathFactory, channel_url: str, deployment: Deployment) -> AsyncIterator[EmbeddedStack]:
    async with running_stack(
        tmp_path_factory.mktemp("guarded"),
        channel_url,
        deployment,
        ENVSTORE_AUTH_LOGIN_WINDOW_SECONDS=str(WINDOW_SECONDS),
        ENVSTORE_AUTH_LOGIN_FAILURES_PER_USER=str(FAILURES_PER_USER),
        ENVSTORE_AUTH_LOGIN_FAILURES_PER_ADDRESS=str(FAILURES_PER_ADDRESS),
    ) as stack:
        yield stack


async def attempt(stack: EmbeddedStack, source: str, username: str, password: str, form: bool = False) -> aiohttp.ClientResponse:
    """One login from the loopback address ``source`` (each test guesses from its own address)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(stack.api_url, connector=connector) as http:
        fields = {"username": username, "password": password}
        options: dict[str, Any] = {"data": fields} if form else {"json": fields}
        async with http.post("/login/", allow_redirects=False, **options) as response:
            await response.read()
            return response


async def test_the_sixth_wrong_password_in_the_window_is_held_back(guarded: EmbeddedStack) -> None:
    victim, bystander = fresh("victim"), fresh("bystander")
    for _ in range(FAILURES_PER_USER):
        assert (await attempt(guarded, "127.0.0.2", victim, "guess")).status == 403
    held = await attempt(guarded, "127.0.0.2", victim, "guess")
    assert held.status == 429
    retry_after = int(held.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_SECONDS
    # The right password changes nothing while held back (guessing learns nothing), from any
    # address, through the form too; other users from the same address are not held back.
    assert (await attempt(guarded, "127.0.0.2", victim, PASSWORD)).status == 429
    assert (await attempt(guarded, "127.0.0.3", victim, PASSWORD)).status == 429
    form = await attempt(guarded, "127.0.0.3", victim, PASSWORD, form=True)
    assert form.status == 429 and form.content_type == "text/html" and "Retry-After" in form.headers
    assert (await attempt(guarded, "127.0.0.2", bystander, PASSWORD)).status == 200

    await asyncio.sleep(retry_after)  # what Retry-After tells a client: then it may try again

    assert (await attempt(guarded, "127.0.0.2", victim, PASSWORD)).status == 200


async def test_one_address_guessing_many_names_is_held_back(guarded: EmbeddedStack) -> None:
    for _ in range(FAILURES_PER_ADDRESS):
        assert (await attempt(guarded, "127.0.0.4", fresh("name"), "guess")).status == 403
    someone = fresh("someone")
    held = await attempt(guarded, "127.0.0.4", someone, PASSWORD)
    assert held.status == 429 and int(held.headers["Retry-After"]) <= WINDOW_SECONDS
    assert (await attempt(guarded, "127.0.0.5", someone, PASSWORD)).status == 200
