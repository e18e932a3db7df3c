"""``POST /api/v1/token/`` (conda-store-api.md §1.1, §4.4): a token cannot mint a token with more
rights than its own — not through wider ARNs, stronger roles, a primary namespace whose role
mappings grant more, or a later expiration — and a minted token can do nothing its minter could
not (checked by using both on real routes, not by reading claims)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import PASSWORD, USERNAME, fresh, mint
from tests.api_client import ApiClient, environment_yaml

NOT_A_SUBSET = "Requested role_bindings are not a subset of current permissions"
TOO_LATE = "Requested expiration of token is greater than current permissions"



async def mint_as(stack: EmbeddedStack, token: str | None, body: dict[str, Any]) -> tuple[int, Any]:
    async with ApiClient(stack.api_url, token=token) as client:
        return await client.request("POST", "/api/v1/token/", json=body)


async def permission_of(stack: EmbeddedStack, token: str | None) -> dict[str, Any]:
    async with ApiClient(stack.api_url, token=token) as client:
        status, body = await client.get("/api/v1/permission/")
    assert status == 200
    return body["data"]


@pytest.fixture(scope="module")
async def places(workbench: EmbeddedStack) -> dict[str, str]:
    """Two namespaces with two environments each."""
    names = {"team": fresh("team"), "other": fresh("other")}
    async with ApiClient(workbench.api_url, token=workbench.admin_token) as admin:
        builds = [
            await admin.submit(environment_yaml(environment, ["tinyjson"]), names[namespace])
            for namespace in names
            for environment in ("app", "lib")
        ]
        for build_id in builds:
            assert (await admin.wait_for_build(build_id))["status"] == "COMPLETED"
    return names


@pytest.mark.parametrize(
    ("held", "requested", "allowed"),
    [
        ({"*/*": ["viewer"]}, {"*/*": ["viewer"]}, True),
        ({"*/*": ["viewer"]}, {"*/*": ["editor"]}, False),
        ({"*/*": ["viewer"]}, {"*/*": ["admin"]}, False),
        ({"*/*": ["editor"]}, {"{team}/app": ["developer"]}, True),
        ({"*/*": ["editor"]}, {"{team}/app": ["admin"]}, False),
        ({"{team}/*": ["admin"]}, {"{team}/app": ["admin"]}, True),
        ({"{team}/*": ["admin"]}, {"{team}/*": ["viewer"], "{team}/lib": ["editor"]}, True),
        ({"{team}/*": ["admin"]}, {"*/*": ["viewer"]}, False),
        ({"{team}/*": ["admin"]}, {"{other}/*": ["viewer"]}, False),
        ({"{team}/app": ["editor"]}, {"{team}/*": ["viewer"]}, False),
        ({"{team}/app": ["editor"]}, {"{team}/a*": ["viewer"]}, False),
        # §4.4's examples: default/* ⊆ d*/*, efault/* ⊄ d*/*.
        ({"d*/*": ["admin"]}, {"default/*": ["admin"]}, True),
        ({"d*/*": ["admin"]}, {"efault/*": ["viewer"]}, False),
        ({"*/*": ["admin"]}, {"a/b": ["admin"], "c*/d*": ["editor"]}, True),
    ],
)
async def test_role_bindings_must_be_a_subset(
    workbench: EmbeddedStack, places: dict[str, str], held: dict, requested: dict, allowed: bool
) -> None:
    held = {arn.format(**places): roles for arn, roles in held.items()}
    requested = {arn.format(**places): roles for arn, roles in requested.items()}
    caller = await mint(workbench, held)
    status, body = await mint_as(workbench, caller, {"role_bindings": requested})
    if allowed:
        assert status == 200, body
        assert (await permission_of(workbench, body["data"]["token"]))["entity_roles"] == {
            "default/*": ["viewer"],
            "filesystem/*": ["viewer"],
            **requested,
        }
    else:
        assert (status, body) == (400, {"status": "error", "message": NOT_A_SUBSET})


async def test_without_role_bindings_the_new_token_holds_the_callers(workbench: EmbeddedStack, places: dict[str, str]) -> None:
    caller = await mint(workbench, {f"{places['team']}/*": ["editor"]}, primary_namespace=places["team"])
    status, body = await mint_as(workbench, caller, {})
    assert status == 200
    before, after = await permission_of(workbench, caller), await permission_of(workbench, body["data"]["token"])
    assert after["entity_roles"] == before["entity_roles"]
    assert after["primary_namespace"] == places["team"]
    assert after["expiration"] == before["expiration"]


async def test_a_chain_of_tokens_never_widens(workbench: EmbeddedStack, places: dict[str, str]) -> None:
    team = places["team"]
    first = await mint(workbench, {f"{team}/*": ["editor"]})
    status, body = await mint_as(workbench, first, {"role_bindings": {f"{team}/app": ["viewer"]}})
    assert status == 200
    second = body["data"]["token"]
    for requested in ({f"{team}/app": ["editor"]}, {f"{team}/*": ["viewer"]}, {f"{team}/lib": ["viewer"]}):
        status, body = await mint_as(workbench, second, {"role_bindings": requested})
        assert (status, body["message"]) == (400, NOT_A_SUBSET), requested


async def test_primary_namespace_cannot_bring_in_wider_role_mappings(workbench: EmbeddedStack, places: dict[str, str]) -> None:
    """v1 role mappings grant their entities to every token whose primary namespace is the
    mapping's namespace; asking for that primary namespace counts what it would bring."""
    rich = fresh("rich")
    async with ApiClient(workbench.api_url, token=workbench.admin_token) as admin:
        assert (await admin.request("POST", f"/api/v1/namespace/{rich}/"))[0] == 200
        status, _ = await admin.request("PUT", f"/api/v1/namespace/{rich}/", json={"role_mappings": {"*/*": ["admin"]}})
        assert status == 200
    viewer = await mint(workbench, {"*/*": ["viewer"]})
    status, body = await mint_as(workbench, viewer, {"primary_namespace": rich, "role_bindings": {"*/*": ["viewer"]}})
    assert (status, body) == (400, {"status": "error", "message": NOT_A_SUBSET})
    # The admin may: and the new token really holds the mapping's rights.
    status, body = await mint_as(workbench, workbench.admin_token, {"primary_namespace": rich, "role_bindings": {f"{rich}/*": ["viewer"]}})
    assert status == 200
    async with ApiClient(workbench.api_url, token=body["data"]["token"]) as holder:
        assert (await holder.get(f"/api/v1/setting/{places['other']}/app/"))[0] == 200


async def test_expiration_cannot_outlive_the_caller(workbench: EmbeddedStack) -> None:
    """Both ``expiration`` (the server's field) and ``exp`` (what conda-store's CLI sends) are read."""
    now = datetime.datetime.now(datetime.UTC)
    soon = (now + datetime.timedelta(hours=1)).replace(microsecond=0)
    caller = (await mint_as(workbench, workbench.admin_token, {"expiration": soon.isoformat(), "role_bindings": {"*/*": ["viewer"]}}))[1]["data"]["token"]
    for field in ("expiration", "exp"):
        later = (soon + datetime.timedelta(minutes=5)).isoformat()
        status, body = await mint_as(workbench, caller, {field: later})
        assert (status, body) == (400, {"status": "error", "message": TOO_LATE}), field
        earlier = soon - datetime.timedelta(minutes=30)
        status, body = await mint_as(workbench, caller, {field: earlier.isoformat()})
        assert status == 200, field
        expiration = (await permission_of(workbench, body["data"]["token"]))["expiration"]
        assert datetime.datetime.fromisoformat(expiration.replace("Z", "+00:00")) == earlier
    status, body = await mint_as(workbench, caller, {"expiration": "next tuesday"})
    assert status == 400 and body["status"] == "error"


async def test_anonymous_callers_mint_with_the_authenticated_defaults(workbench: EmbeddedStack) -> None:
    """§1.1: an anonymous caller counts as a token holding the authenticated defaults."""
    status, body = await mint_as(workbench, None, {})
    assert status == 200
    minted = await permission_of(workbench, body["data"]["token"])
    assert minted["authenticated"] is True
    assert minted["primary_namespace"] == "default"
    assert minted["entity_roles"] == {"default/*": ["viewer"], "filesystem/*": ["viewer"]}
    status, body = await mint_as(workbench, None, {"role_bindings": {"*/*": ["viewer"]}})
    assert (status, body["message"]) == (400, NOT_A_SUBSET)
    status, body = await mint_as(workbench, None, {"role_bindings": {"default/*": ["editor"]}})
    assert (status, body["message"]) == (400, NOT_A_SUBSET)
    status, body = await mint_as(workbench, None, {"role_bindings": {"filesystem/one": ["viewer"]}})
    assert status == 200


async def test_the_cli_token_command_round_trip(workbench: EmbeddedStack) -> None:
    """What ``conda-store token`` sends after a login: the current ``entity_roles`` and the
    current expiration as ``exp`` — accepted, and the token works as a Bearer token."""
    async with ApiClient(workbench.api_url) as client:
        assert (await client.request("POST", "/login/", json={"username": USERNAME, "password": PASSWORD}))[0] == 200
        current = (await client.get("/api/v1/permission/"))[1]["data"]
        status, body = await client.request(
            "POST",
            "/api/v1/token/",
            json={"primary_namespace": current["primary_namespace"], "role_bindings": current["entity_roles"], "exp": current["expiration"]},
        )
    assert status == 200, body
    minted = await permission_of(workbench, body["data"]["token"])
    assert minted["primary_namespace"] == USERNAME
    assert minted["entity_roles"]["*/*"] == ["admin"]


async def test_malformed_requests_are_400(workbench: EmbeddedStack) -> None:
    for body in (
        {"role_bindings": {"*/*": ["owner"]}},
        {"role_bindings": {"no-slash": ["viewer"]}},
        {"role_bindings": ["*/*"]},
        {"primary_namespace": "bad name"},
    ):
        status, answer = await mint_as(workbench, workbench.admin_token, body)
        assert status == 400, body
        assert answer["status"] == "error" and answer["message"]


PROBES = [
    ("GET", "/api/v1/environment/{ns}/{env}/", {}),
    ("GET", "/api/v1/namespace/{ns}/", {}),
    ("PUT", "/api/v1/environment/{ns}/{env}/", {"json": {"description": "probed"}}),
    ("PUT", "/api/v1/build/{build}/cancel/", {}),
    ("GET", "/api/v1/setting/{ns}/{env}/", {}),
    ("GET", "/api/v1/namespace/{ns}/roles", {}),
    ("PUT", "/api/v1/namespace/{ns}/metadata", {"json": {}}),
]


@pytest.mark.parametrize(
    ("held", "requested"),
    [
        ({"{team}/*": ["editor"]}, {}),
        ({"{team}/*": ["editor"]}, {"{team}/app": ["editor"], "{team}/lib": ["viewer"]}),
        ({"{team}/app": ["admin"], "{other}/*": ["viewer"]}, {"{team}/app": ["developer"], "{other}/lib": ["viewer"]}),
        ({"*/*": ["viewer"], "{team}/*": ["admin"]}, {"{other}/*": ["viewer"], "{team}/lib": ["admin"]}),
    ],
)
async def test_a_minted_token_can_do_nothing_its_minter_cannot(
    workbench: EmbeddedStack, places: dict[str, str], held: dict, requested: dict
) -> None:
    """Every probe the new token passes, its minter passes too (on every environment here)."""
    held = {arn.format(**places): roles for arn, roles in held.items()}
    requested = {arn.format(**places): roles for arn, roles in requested.items()}
    minter = await mint(workbench, held)
    status, body = await mint_as(workbench, minter, {"role_bindings": requested} if requested else {})
    assert status == 200, body
    minted = body["data"]["token"]
    async with ApiClient(workbench.api_url, token=workbench.admin_token) as admin:
        build_of = {}
        for namespace in places.values():
            for environment in ("app", "lib"):
                build_of[(namespace, environment)] = (await admin.get(f"/api/v1/environment/{namespace}/{environment}/"))[1]["data"]["current_build_id"]
    granted = 0
    for (namespace, environment), build_id in build_of.items():
        for method, template, options in PROBES:
            path = template.format(ns=namespace, env=environment, build=build_id)
            async with ApiClient(workbench.api_url, token=minted) as client:
                minted_status, _ = await client.request(method, path, **options)
            if minted_status == 403:
                continue
            granted += 1
            async with ApiClient(workbench.api_url, token=minter) as client:
                minter_status, _ = await client.request(method, path, **options)
            assert minter_status != 403, (method, path)
    assert granted > 0
