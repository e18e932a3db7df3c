"""conda-store-api.md §6.1 cases 7–13 and 42–44 (namespaces), and §6.2's namespace behaviours:
PUT with metadata and/or role mappings (``editor`` stored as ``developer``), PUT of the raw
metadata, create → get → delete → get 404, and the v2 role-mapping CRUD. Reads and refusals run on
the §6.1 world; anything that changes state runs on the workbench, in namespaces of its own."""

from __future__ import annotations

import pytest

from tests.api.conftest import World, fresh
from tests.api_client import ApiClient, environment_yaml

# The same tests at the root, under /conda-store, and behind a TLS-terminating proxy.
pytestmark = pytest.mark.every_deployment



async def test_api_list_namespace_unauth(anonymous: ApiClient) -> None:
    """Case 7: anonymous callers see only ``default``."""
    status, body = await anonymous.get("/api/v1/namespace")
    assert status == 200
    assert [namespace["name"] for namespace in body["data"]] == ["default"]


async def test_api_list_namespace_auth(user: ApiClient, world: World) -> None:
    """Case 8, and the list's exact shape (§1.3: no ``metadata_``, ``role_mappings`` or ``message``)."""
    status, body = await user.get("/api/v1/namespace/")
    assert status == 200
    assert set(body) == {"status", "data", "page", "size", "count"}
    assert body["status"] == "ok"
    assert (body["page"], body["size"], body["count"]) == (1, 100, 3)
    assert body["data"] == [
        {"id": world.namespace_ids[name], "name": name} for name in ("default", "namespace1", "namespace2")
    ]


async def test_api_list_namespace_including_missing_metadata_(user: ApiClient) -> None:
    """Case 9: namespaces made by submitting a specification have no metadata and are listed."""
    status, body = await user.get("/api/v1/namespace/namespace2/")
    assert status == 200
    assert body["data"]["metadata_"] is None
    status, body = await user.get("/api/v1/namespace/")
    assert "namespace2" in [namespace["name"] for namespace in body["data"]]


async def test_api_get_namespace_unauth(anonymous: ApiClient, world: World) -> None:
    """Case 10."""
    status, body = await anonymous.get("/api/v1/namespace/default")
    assert status == 200
    assert body == {
        "status": "ok",
        "data": {"id": world.namespace_ids["default"], "name": "default", "metadata_": None, "role_mappings": []},
        "message": None,
    }


async def test_api_get_namespace_unauth_no_exist(anonymous: ApiClient) -> None:
    """Case 11: auth before existence — anonymous gets 403 for a namespace it cannot see, whether
    or not it exists."""
    for name in ("namespace1", "no-such-namespace"):
        status, body = await anonymous.get(f"/api/v1/namespace/{name}")
        assert status == 403
        assert body["status"] == "error" and body["message"]


async def test_api_get_namespace_auth(user: ApiClient) -> None:
    """Case 12."""
    status, body = await user.get("/api/v1/namespace/namespace1")
    assert status == 200
    assert body["data"]["name"] == "namespace1"


async def test_api_get_namespace_auth_no_exist(user: ApiClient) -> None:
    """Case 13."""
    status, body = await user.get("/api/v1/namespace/wrong")
    assert status == 404
    assert body == {"status": "error", "message": "namespace does not exist"}


async def test_create_namespace_noauth(anonymous: ApiClient) -> None:
    """Case 42."""
    status, body = await anonymous.request("POST", "/api/v1/namespace/pytest")
    assert status == 403
    assert body["status"] == "error"
    status, _ = await anonymous.get("/api/v1/namespace/pytest")
    assert status == 403


async def test_create_namespace_auth(bench_user: ApiClient) -> None:
    """Case 43, then a second create of the same name is 409."""
    name = fresh("pytest")
    status, body = await bench_user.request("POST", f"/api/v1/namespace/{name}")
    assert status == 200
    assert body == {"status": "ok", "message": None}
    status, body = await bench_user.get(f"/api/v1/namespace/{name}")
    assert status == 200
    assert body["data"]["name"] == name
    status, body = await bench_user.request("POST", f"/api/v1/namespace/{name}/")
    assert status == 409
    assert body == {"status": "error", "message": "namespace already exists"}


async def test_create_get_delete_namespace_auth(bench_user: ApiClient) -> None:
    """Case 44 (skipped upstream, runs here)."""
    name = fresh("pytest-delete-namespace")
    assert (await bench_user.request("POST", f"/api/v1/namespace/{name}"))[0] == 200
    assert (await bench_user.get(f"/api/v1/namespace/{name}"))[0] == 200
    status, body = await bench_user.request("DELETE", f"/api/v1/namespace/{name}")
    assert status == 200
    assert body == {"status": "ok", "message": None}
    status, body = await bench_user.get(f"/api/v1/namespace/{name}")
    assert status == 404
    assert body == {"status": "error", "message": "namespace does not exist"}
    status, body = await bench_user.request("DELETE", f"/api/v1/namespace/{name}")
    assert status == 404


async def test_invalid_namespace_name_is_400_not_500(bench_user: ApiClient) -> None:
    """§7 fix, don't mimic: conda-store crashes (500) on a name outside the charset that gets past
    authorization; envstore says what is wrong. A trailing newline counts as outside the charset."""
    for name in ("bad%20name", "bad%0A", "bad*star", "%C3%A9t%C3%A9"):
        status, body = await bench_user.request("POST", f"/api/v1/namespace/{name}/")
        assert status == 400, name
        assert body["status"] == "error"
        assert "may only contain" in body["message"]


async def test_put_namespace_metadata_and_role_mappings(
    bench_user: ApiClient, bench_anonymous: ApiClient
) -> None:
    """§6.2: metadata and/or role mappings; ``editor`` is stored and answered as ``developer``;
    role mappings replace the previous set and ``{}`` clears them; anonymous callers get 403."""
    name = fresh("mapped")
    await bench_user.request("POST", f"/api/v1/namespace/{name}")
    update = {"metadata": {"team": "blue"}, "role_mappings": {"team/*": ["editor"], "other/env": ["viewer", "admin"]}}
    status, body = await bench_anonymous.request("PUT", f"/api/v1/namespace/{name}", json=update)
    assert status == 403
    status, body = await bench_user.request("PUT", f"/api/v1/namespace/{name}", json=update)
    assert status == 200
    assert body == {"status": "ok", "message": None}
    status, body = await bench_user.get(f"/api/v1/namespace/{name}")
    namespace = body["data"]
    assert namespace["metadata_"] == {"team": "blue"}
    assert sorted((mapping["entity"], mapping["role"]) for mapping in namespace["role_mappings"]) == [
        ("other/env", "admin"),
        ("other/env", "viewer"),
        ("team/*", "developer"),
    ]
    assert all(isinstance(mapping["id"], int) for mapping in namespace["role_mappings"])

    # Role mappings alone: metadata kept, mappings replaced.
    status, _ = await bench_user.request(
        "PUT", f"/api/v1/namespace/{name}", json={"role_mappings": {"team/*": ["developer"]}}
    )
    assert status == 200
    namespace = (await bench_user.get(f"/api/v1/namespace/{name}"))[1]["data"]
    assert namespace["metadata_"] == {"team": "blue"}
    assert [(m["entity"], m["role"]) for m in namespace["role_mappings"]] == [("team/*", "developer")]

    status, _ = await bench_user.request("PUT", f"/api/v1/namespace/{name}", json={"role_mappings": {}})
    assert status == 200
    assert (await bench_user.get(f"/api/v1/namespace/{name}"))[1]["data"]["role_mappings"] == []

    for bad in ({"role_mappings": {"team/*": ["owner"]}}, {"role_mappings": {"not-an-arn": ["viewer"]}}):
        status, body = await bench_user.request("PUT", f"/api/v1/namespace/{name}", json=bad)
        assert status == 400, bad
        assert body["status"] == "error"

    status, body = await bench_user.request("PUT", f"/api/v1/namespace/{fresh('missing')}", json=update)
    assert status == 404
    assert body == {"status": "error", "message": "namespace does not exist"}


async def test_put_namespace_raw_metadata(bench_user: ApiClient, bench_anonymous: ApiClient) -> None:
    """§6.2: ``PUT namespace/{ns}/metadata`` takes the metadata object itself."""
    name = fresh("meta")
    await bench_user.request("POST", f"/api/v1/namespace/{name}")
    status, _ = await bench_anonymous.request("PUT", f"/api/v1/namespace/{name}/metadata", json={"k": "v"})
    assert status == 403
    status, body = await bench_user.request("PUT", f"/api/v1/namespace/{name}/metadata", json={"k": "v"})
    assert status == 200
    assert body["status"] == "ok" and body["data"] is None
    assert (await bench_user.get(f"/api/v1/namespace/{name}"))[1]["data"]["metadata_"] == {"k": "v"}
    status, _ = await bench_user.request("PUT", f"/api/v1/namespace/{fresh('missing')}/metadata", json={})
    assert status == 404


async def test_v2_role_mapping_crud(bench_user: ApiClient, bench_anonymous: ApiClient) -> None:
    """§6.2's v2 role CRUD (conda-store runs it on ``filesystem``; a fresh name here)."""
    granting, grantee = fresh("filesystem"), fresh("grantee")
    for name in (granting, grantee):
        await bench_user.request("POST", f"/api/v1/namespace/{name}")
    roles = f"/api/v1/namespace/{granting}/roles"
    role = f"/api/v1/namespace/{granting}/role"

    # Everything is refused anonymously.
    for method, path, options in (
        ("GET", roles, {}),
        ("DELETE", roles, {}),
        ("GET", role, {"params": {"other_namespace": grantee}}),
        ("POST", role, {"json": {"other_namespace": grantee, "role": "viewer"}}),
        ("PUT", role, {"json": {"other_namespace": grantee, "role": "viewer"}}),
        ("DELETE", role, {"json": {"other_namespace": grantee}}),
    ):
        status, body = await bench_anonymous.request(method, path, **options)
        assert status == 403, (method, path)
        assert body["status"] == "error"

    status, body = await bench_user.request("DELETE", roles)
    assert (status, body) == (200, {"status": "ok", "message": None})
    status, body = await bench_user.request("POST", role, json={"other_namespace": grantee, "role": "editor"})
    assert (status, body) == (200, {"status": "ok", "message": None})
    status, body = await bench_user.get(role, params={"other_namespace": grantee})
    assert status == 200
    mapping = body["data"]
    assert {key: mapping[key] for key in ("namespace", "other_namespace", "role")} == {
        "namespace": granting,
        "other_namespace": grantee,
        "role": "developer",
    }
    assert isinstance(mapping["id"], int)

    # §7 fix, don't mimic: a duplicate pair is a 409 (conda-store: 500 from a unique constraint).
    status, body = await bench_user.request("POST", role, json={"other_namespace": grantee, "role": "developer"})
    assert status == 409
    assert body["status"] == "error"

    status, _ = await bench_user.request("PUT", role, json={"other_namespace": grantee, "role": "admin"})
    assert status == 200
    status, body = await bench_user.get(roles)
    assert status == 200
    assert [(m["namespace"], m["other_namespace"], m["role"]) for m in body["data"]] == [(granting, grantee, "admin")]

    status, _ = await bench_user.request("DELETE", role, json={"other_namespace": grantee})
    assert status == 200
    assert (await bench_user.get(roles))[1]["data"] == []
    status, body = await bench_user.get(role, params={"other_namespace": grantee})
    assert status == 404
    assert body == {"status": "error", "message": "failed to find role"}

    # §7 fix, don't mimic: PUT on a pair that does not exist is a 404 (conda-store: 500).
    status, body = await bench_user.request("PUT", role, json={"other_namespace": grantee, "role": "viewer"})
    assert status == 404
    assert body == {"status": "error", "message": "failed to find role"}


async def test_v2_role_mapping_errors(bench_user: ApiClient) -> None:
    granting, grantee = fresh("granting"), fresh("grantee")
    for name in (granting, grantee):
        await bench_user.request("POST", f"/api/v1/namespace/{name}")
    role = f"/api/v1/namespace/{granting}/role"
    status, body = await bench_user.get(role, params={"other_namespace": "nowhere"})
    assert status == 400
    assert body == {"status": "error", "message": "Namespace='nowhere' not found"}
    status, body = await bench_user.request("POST", role, json={"other_namespace": "nowhere", "role": "viewer"})
    assert (status, body["message"]) == (400, "Namespace='nowhere' not found")
    status, body = await bench_user.request("POST", role, json={"other_namespace": grantee, "role": "owner"})
    assert status == 400
    assert body["status"] == "error"
    missing = fresh("missing")
    for method, path, options in (
        ("GET", f"/api/v1/namespace/{missing}/roles", {}),
        ("DELETE", f"/api/v1/namespace/{missing}/roles", {}),
        ("GET", f"/api/v1/namespace/{missing}/role", {"params": {"other_namespace": grantee}}),
        ("POST", f"/api/v1/namespace/{missing}/role", {"json": {"other_namespace": grantee, "role": "viewer"}}),
    ):
        status, body = await bench_user.request(method, path, **options)
        assert status == 404, (method, path)
        assert body == {"status": "error", "message": "namespace does not exist"}


async def test_deleted_namespace_hides_its_environments(bench_user: ApiClient, workbench) -> None:  # type: ignore[no-untyped-def]
    """§2.5: a namespace delete soft-deletes its environments and builds at once."""
    name = fresh("doomed")
    async with ApiClient(workbench.api_url, token=workbench.admin_token) as admin:
        build_id = await admin.submit(environment_yaml("inside", ["tinyjson"]), namespace=name)
        await admin.wait_for_build(build_id)
    status, _ = await bench_user.request("DELETE", f"/api/v1/namespace/{name}/")
    assert status == 200
    status, body = await bench_user.get("/api/v1/environment/", params={"namespace": name})
    assert body["data"] == [] and body["count"] == 0
    status, _ = await bench_user.get(f"/api/v1/environment/{name}/inside/")
    assert status == 404
    assert name not in [n["name"] for n in (await bench_user.get("/api/v1/namespace/"))[1]["data"]]
