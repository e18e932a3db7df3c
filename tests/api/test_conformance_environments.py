"""conda-store-api.md §6.1 cases 14–19 (environment lists and reads, the ``?jwt=`` matrix),
35–39 (creating environments by specification), 45–48 (switching builds, deleting) and the list
filters of §1.4. Reads and refusals run on the §6.1 world; creations on the workbench.

Case 37 (``create_specification_auth_extended_prefix``) is about Windows' 260-character path
limit and conda-store's ``\\\\?\\`` extended-length prefixes; envstore builds on POSIX hosts only,
so the test here is what that case checks on a non-Windows host: a padded namespace name with a
real package still builds.
"""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import USERNAME, World, fresh, mint
from tests.api_client import ApiClient, environment_yaml

# The same tests at the root, under /conda-store, and behind a TLS-terminating proxy.
pytestmark = pytest.mark.every_deployment

ENVIRONMENT_KEYS = {"id", "namespace", "name", "current_build_id", "current_build", "description"}


def names(body: dict) -> list[str]:
    return sorted(environment["name"] for environment in body["data"])


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_api_list_environments_unauth(anonymous: ApiClient, version: str) -> None:
    """Case 14."""
    status, body = await anonymous.get(f"/api/{version}/environment")
    assert status == 200
    assert body["status"] == "ok"
    assert names(body) == ["name1", "name2"]
    assert body["count"] == 2


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_api_list_environments_auth(user: ApiClient, world: World, version: str) -> None:
    """Case 15, with the exact shapes: v1 is a page of Environment objects (``current_build``
    null) with deprecation headers; v2 a cursor page without ``current_build``."""
    async with user.raw("GET", f"/api/{version}/environment/") as response:
        assert response.status == 200
        body = await response.json()
        if version == "v1":
            assert response.headers["Deprecation"] == "True"
    assert names(body) == ["name1", "name2", "name3", "name4"]
    name3 = next(environment for environment in body["data"] if environment["name"] == "name3")
    if version == "v1":
        assert set(body) == {"status", "data", "message", "page", "size", "count"}
        assert set(name3) == ENVIRONMENT_KEYS
        assert name3["current_build"] is None
    else:
        assert set(body) == {"status", "data", "message", "cursor", "count"}
        assert set(name3) == ENVIRONMENT_KEYS - {"current_build"}
    assert name3["id"] == world.environment_ids["name3"]
    assert name3["current_build_id"] == world.builds["name3"]
    assert name3["namespace"] == {
        "id": world.namespace_ids["namespace1"],
        "name": "namespace1",
        "metadata_": None,
        "role_mappings": [],
    }


REQUESTERS = [
    ({"*/*": ["viewer"]}, ["name1", "name2", "name3", "name4"]),
    ({"*/*": ["admin"]}, ["name1", "name2", "name3", "name4"]),
    ({"default/*": ["viewer"]}, ["name1", "name2"]),
    ({"namespace1/name3": ["editor"]}, ["name3"]),
    ({"namespace*/*": ["admin"]}, ["name3", "name4"]),
    ({"foo/bar": ["viewer"]}, []),
]
TARGETS = [
    ({"*/name1": ["viewer"]}, ["name1"]),
    ({"default/*": ["viewer"], "e*/e*": ["admin"]}, ["name1", "name2"]),
    ({"namespace1/name3": ["viewer"]}, ["name3"]),
    ({"namespace*/name*": ["viewer"]}, ["name3", "name4"]),
    ({"*/*": ["viewer"]}, ["name1", "name2", "name3", "name4"]),
]


@pytest.mark.parametrize(("requester_role_bindings", "envs_accessible_to_requester"), REQUESTERS)
@pytest.mark.parametrize(("target_role_bindings", "envs_accessible_to_target"), TARGETS)
async def test_api_list_environments_jwt(
    world: World,
    requester_role_bindings: dict,
    envs_accessible_to_requester: list[str],
    target_role_bindings: dict,
    envs_accessible_to_target: list[str],
) -> None:
    """Case 16: ``?jwt=`` lists what both the caller and the token can see. Both are
    authenticated, so both also hold the default ``default/*`` and ``filesystem/*`` viewer
    bindings. conda-store mocks the requester; here it is a real token minted by the admin."""
    requester = await mint(world.stack, requester_role_bindings)
    target = await mint(world.stack, target_role_bindings)
    expected = set(envs_accessible_to_requester + ["name1", "name2"]) & set(envs_accessible_to_target + ["name1", "name2"])
    async with ApiClient(world.url, token=requester) as client:
        status, body = await client.get("/api/v1/environment/", params={"jwt": target})
    assert status == 200
    assert set(names(body)) == expected
    assert body["count"] == len(expected)


async def test_api_get_environment_unauth(anonymous: ApiClient) -> None:
    """Case 17: auth before existence."""
    for path in ("/api/v1/environment/namespace1/name3", "/api/v1/environment/namespace1/wrong/"):
        status, body = await anonymous.get(path)
        assert status == 403
        assert body["status"] == "error"


async def test_api_get_environment_auth_existing(user: ApiClient, world: World) -> None:
    """Case 18."""
    status, body = await user.get("/api/v1/environment/namespace1/name3")
    assert status == 200
    assert body["status"] == "ok"
    environment = body["data"]
    assert set(environment) == ENVIRONMENT_KEYS
    assert environment["namespace"]["name"] == "namespace1"
    assert environment["name"] == "name3"
    assert environment["current_build_id"] == world.builds["name3"]
    assert environment["current_build"] is None


async def test_api_get_environment_auth_not_existing(user: ApiClient) -> None:
    """Case 19."""
    status, body = await user.get("/api/v1/environment/namespace1/wrong")
    assert status == 404
    assert body == {"status": "error", "message": "environment does not exist"}


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_list_environments_filters(user: ApiClient, version: str) -> None:
    """§1.4's filters, in both versions (each world environment holds one package)."""
    path = f"/api/{version}/environment/"
    cases = [
        ({"namespace": "default"}, ["name1", "name2"]),
        ({"name": "name3"}, ["name3"]),
        ({"search": "space2"}, ["name4"]),
        ({"search": "name"}, ["name1", "name2", "name3", "name4"]),
        ({"status": "COMPLETED"}, ["name1", "name2", "name3", "name4"]),
        ({"status": "FAILED"}, []),
        ({"artifact": "LOCKFILE"}, ["name1", "name2", "name3", "name4"]),
        ({"artifact": "DOCKER_MANIFEST"}, []),
        ({"packages": "tinyjson"}, ["name1"]),
        ([("packages", "tinyjson"), ("packages", "textutils")], []),
        ({"namespace": "default", "packages": "textutils"}, ["name2"]),
    ]
    for params, expected in cases:
        status, body = await user.get(path, params=params)
        assert status == 200, params
        assert names(body) == expected, params
        assert body["count"] == len(expected), params


async def test_list_environments_rejects_unknown_filter_values(user: ApiClient) -> None:
    """conda-store answers an unknown enum value with FastAPI's 422 ``{"detail": …}``; envstore
    answers 400 in conda-store's own error envelope, naming the allowed values (a deliberate
    difference: one error shape for every client error)."""
    for params in ({"status": "DONE"}, {"artifact": "TARBALL"}):
        status, body = await user.get("/api/v1/environment/", params=params)
        assert status == 400, params
        assert body["status"] == "error"
        assert "must be one of" in body["message"]


async def test_create_specification_unauth(anonymous: ApiClient) -> None:
    """Case 35."""
    status, body = await anonymous.request(
        "POST",
        "/api/v1/specification",
        json={"namespace": "default", "specification": json.dumps({"name": "pytest"})},
    )
    assert status == 403
    assert body["status"] == "error"
    status, _ = await anonymous.get("/api/v1/environment/default/pytest/")
    assert status == 404


@pytest.mark.parametrize("size", [255, 256])
async def test_create_specification_auth_env_name_too_long(bench_user: ApiClient, bench_admin: ApiClient, size: int) -> None:
    """Case 36: accepted, then the build fails with conda-store's message. (On PostgreSQL
    conda-store answers 500 for 256 characters, §6.2; envstore has no such limit — no 500.)"""
    name = "A" * size
    status, body = await bench_user.request(
        "POST", "/api/v1/specification", json={"namespace": "default", "specification": json.dumps({"name": name})}
    )
    assert status == 200, body
    build = await bench_admin.wait_for_build(body["data"]["build_id"])
    assert build["specification"]["name"] == name
    assert build["status"] == "FAILED"
    assert build["status_info"] == "build_path too long: must be <= 255 characters"


async def test_create_specification_auth_extended_prefix(bench_user: ApiClient, bench_admin: ApiClient) -> None:
    """Case 37, as it reads on a POSIX host: a padded namespace and a real package build fine
    (conda-store uses ``debugpy==1.8.0`` for its long internal paths; the channel's ``hello``
    stands in)."""
    namespace = "default" + "A" * 10
    status, body = await bench_user.request(
        "POST",
        "/api/v1/specification",
        json={
            "namespace": namespace,
            "specification": json.dumps(
                {"name": "pytest", "dependencies": ["hello 2.1.*"], "variables": None, "prefix": None, "description": "test"}
            ),
        },
    )
    assert status == 200, body
    build = await bench_admin.wait_for_build(body["data"]["build_id"])
    assert build["specification"]["name"] == "pytest"
    assert build["status"] == "COMPLETED", build["status_info"]


async def test_create_specification_auth(bench_user: ApiClient, bench_admin: ApiClient) -> None:
    """Case 38 (an empty environment, as conda-store's ``{"name": "pytest"}``)."""
    status, body = await bench_user.request(
        "POST", "/api/v1/specification", json={"namespace": "default", "specification": json.dumps({"name": "pytest"})}
    )
    assert status == 200
    assert body["status"] == "ok" and body["message"] is None
    build_id = body["data"]["build_id"]
    status, body = await bench_user.get(f"/api/v1/build/{build_id}")
    assert status == 200
    assert body["data"]["specification"]["name"] == "pytest"
    status, body = await bench_user.get("/api/v1/environment/default/pytest")
    assert status == 200
    assert body["data"]["namespace"]["name"] == "default"
    assert (await bench_admin.wait_for_build(build_id))["status"] == "COMPLETED"


async def test_create_specification_auth_no_namespace_specified(bench_user: ApiClient) -> None:
    """Case 39: the environment lands in the caller's primary namespace (the login name)."""
    status, body = await bench_user.request(
        "POST", "/api/v1/specification", json={"specification": json.dumps({"name": "pytest"})}
    )
    assert status == 200
    status, body = await bench_user.get(f"/api/v1/build/{body['data']['build_id']}")
    assert body["data"]["specification"]["name"] == "pytest"
    status, body = await bench_user.get(f"/api/v1/environment/{USERNAME}/pytest")
    assert status == 200
    assert body["data"]["namespace"]["name"] == USERNAME


async def test_create_specification_parse_errors_before_auth(anonymous: ApiClient) -> None:
    """§1.5: parsing happens before authorization, so even anonymous callers get the 400."""
    status, body = await anonymous.request(
        "POST", "/api/v1/specification/", json={"namespace": "default", "specification": "name: [unclosed"}
    )
    assert status == 400
    assert body == {"status": "error", "message": "Unable to parse. Invalid YAML"}


async def test_update_environment_build_unauth(anonymous: ApiClient, world: World) -> None:
    """Case 45."""
    status, body = await anonymous.request(
        "PUT", "/api/v1/environment/default/name1", json={"build_id": world.builds["name1"]}
    )
    assert status == 403
    assert body["status"] == "error"


async def test_update_environment_build_auth(bench_user: ApiClient, bench_admin: ApiClient) -> None:
    """Case 46 (skipped upstream): switch an environment back to an earlier completed build."""
    namespace = fresh("namespace2")
    first = await bench_admin.wait_for_build(await bench_admin.submit(environment_yaml("name4", ["tinyjson"]), namespace))
    second = await bench_admin.wait_for_build(await bench_admin.submit(environment_yaml("name4", ["textutils"]), namespace))
    assert first["status"] == second["status"] == "COMPLETED"
    assert (await bench_user.get(f"/api/v1/environment/{namespace}/name4"))[1]["data"]["current_build_id"] == second["id"]
    status, body = await bench_user.request("PUT", f"/api/v1/environment/{namespace}/name4", json={"build_id": first["id"]})
    assert status == 200
    assert body == {"status": "ok", "message": None}
    status, body = await bench_user.get(f"/api/v1/environment/{namespace}/name4")
    assert body["data"]["current_build_id"] == first["id"]


async def test_update_environment_errors(bench_user: ApiClient, bench_admin: ApiClient) -> None:
    """§1.4's messages for a build switch that cannot be done, and the description update."""
    namespace = fresh("updates")
    good = await bench_admin.wait_for_build(await bench_admin.submit(environment_yaml("target", ["tinyjson"]), namespace))
    failed = await bench_admin.wait_for_build(
        await bench_admin.submit(environment_yaml("target", ["conflict-low", "conflict-high"]), namespace)
    )
    other = await bench_admin.wait_for_build(await bench_admin.submit(environment_yaml("other", ["tinyjson"]), namespace))
    assert (good["status"], failed["status"], other["status"]) == ("COMPLETED", "FAILED", "COMPLETED")
    path = f"/api/v1/environment/{namespace}/target/"
    for build_id, message in (
        (987654321, "build id=987654321 does not exist"),
        (failed["id"], "cannot update environment to build id since not completed"),
        (other["id"], "cannot update environment to build id since specification does not match environment name"),
    ):
        status, body = await bench_user.request("PUT", path, json={"build_id": build_id})
        assert (status, body) == (400, {"status": "error", "message": message})
    status, body = await bench_user.request("PUT", f"/api/v1/environment/{namespace}/missing/", json={"build_id": good["id"]})
    assert (status, body) == (
        400,
        {"status": "error", "message": f"environment namespace={namespace} name=missing does not exist"},
    )
    # The failed build never became current.
    assert (await bench_user.get(path))[1]["data"]["current_build_id"] == good["id"]

    status, _ = await bench_user.request("PUT", path, json={"description": "the target"})
    assert status == 200
    assert (await bench_user.get(path))[1]["data"]["description"] == "the target"


async def test_delete_environment_unauth(anonymous: ApiClient) -> None:
    """Case 47."""
    status, body = await anonymous.request("DELETE", "/api/v1/environment/namespace1/name3")
    assert status == 403
    assert body["status"] == "error"
    assert (await anonymous.get("/api/v1/environment/"))[1]["count"] == 2


async def test_delete_environment_auth(bench_user: ApiClient) -> None:
    """Case 48 (skipped upstream): submit, then delete at once (its build may still be running).
    A missing environment is conda-store's 400 with its message."""
    namespace = fresh("namespace1")
    status, body = await bench_user.request(
        "POST", "/api/v1/specification", json={"namespace": namespace, "specification": json.dumps({"name": "name3"})}
    )
    assert status == 200
    status, body = await bench_user.request("DELETE", f"/api/v1/environment/{namespace}/name3")
    assert status == 200
    assert body == {"status": "ok", "message": None}
    status, body = await bench_user.get("/api/v1/environment/", params={"namespace": namespace})
    assert body["count"] == 0
    status, body = await bench_user.request("DELETE", f"/api/v1/environment/{namespace}/name3")
    assert status == 400
    assert body == {"status": "error", "message": f"environment namespace={namespace} name=name3 does not exist"}
