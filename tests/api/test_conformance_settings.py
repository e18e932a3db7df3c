"""conda-store-api.md §6.1 cases 51–58 (settings at global, namespace and environment level) and
§1.9's rules: effective values (deployment ← global ← namespace ← environment, lists replaced),
global-only keys, the messages, and settings taking effect on real submissions.

conda-store's case 55 stores ``["numpy", "ipykernel"]``; the test channel has neither, so channel
packages stand in (a global value is put back afterwards: later workbench builds must not get it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import fresh
from tests.api_client import ApiClient, environment_yaml

# The same tests at the root, under /conda-store, and behind a TLS-terminating proxy.
pytestmark = pytest.mark.every_deployment

LEVELS = ["/api/v1/setting/", "/api/v1/setting/namespace1/", "/api/v1/setting/namespace1/name1/"]
SETTINGS_KEYS = {
    "default_namespace",
    "filesystem_namespace",
    "default_uid",
    "default_gid",
    "default_permissions",
    "storage_threshold",
    "conda_command",
    "conda_platforms",
    "conda_max_solve_time",
    "conda_indexed_channels",
    "build_artifacts_kept_on_deletion",
    "conda_solve_platforms",
    "conda_channel_alias",
    "conda_default_channels",
    "conda_allowed_channels",
    "conda_default_packages",
    "conda_required_packages",
    "conda_included_packages",
    "pypi_default_packages",
    "pypi_required_packages",
    "pypi_included_packages",
    "build_artifacts",
}


@pytest.fixture
async def global_settings_restored(workbench: EmbeddedStack) -> AsyncIterator[None]:
    """Puts back the global values a test changes on the shared workbench."""
    async with ApiClient(workbench.api_url, token=workbench.admin_token) as admin:
        before = (await admin.get("/api/v1/setting/"))[1]["data"]
        yield
        after = (await admin.get("/api/v1/setting/"))[1]["data"]
        changed = {key: value for key, value in before.items() if after[key] != value}
        if changed:
            status, body = await admin.request("PUT", "/api/v1/setting/", json=changed)
            assert status == 200, body


@pytest.mark.parametrize("route", LEVELS)
async def test_get_settings_unauth(anonymous: ApiClient, route: str) -> None:
    """Case 51."""
    status, body = await anonymous.get(route)
    assert status == 403
    assert body["status"] == "error"


@pytest.mark.parametrize("route", LEVELS)
async def test_put_settings_unauth(anonymous: ApiClient, route: str) -> None:
    """Case 52."""
    status, body = await anonymous.request("PUT", route, json={"conda_included_packages": ["tinyjson"]})
    assert status == 403
    assert body["status"] == "error"


@pytest.mark.parametrize("route", LEVELS)
async def test_get_settings_auth(user: ApiClient, route: str) -> None:
    """Case 53 (skipped upstream): every settings key, at every level."""
    status, body = await user.get(route)
    assert status == 200
    assert body["status"] == "ok" and body["message"] is None
    assert SETTINGS_KEYS <= body["data"].keys()


async def test_put_global_settings_auth(bench_user: ApiClient, global_settings_restored: None) -> None:
    """Case 54."""
    status, body = await bench_user.request("PUT", "/api/v1/setting/", json={"conda_max_solve_time": 60 * 60})
    assert status == 200
    assert body == {"status": "ok", "data": None, "message": "global setting keys ['conda_max_solve_time'] updated"}
    status, body = await bench_user.get("/api/v1/setting/")
    assert body["data"]["conda_max_solve_time"] == 3600


@pytest.mark.parametrize("route", ["/api/v1/setting/", "/api/v1/setting/namespace1", "/api/v1/setting/namespace1/name1"])
async def test_put_environment_settings_auth(bench_user: ApiClient, global_settings_restored: None, route: str) -> None:
    """Case 55: the same message at every level (conda-store's wording)."""
    status, body = await bench_user.request("PUT", route, json={"conda_included_packages": ["tinyjson", "textutils"]})
    assert status == 200
    assert body["message"] == "global setting keys ['conda_included_packages'] updated"
    status, body = await bench_user.get(route)
    assert body["data"]["conda_included_packages"] == ["tinyjson", "textutils"]


@pytest.mark.parametrize("route", ["/api/v1/setting/", "/api/v1/setting/namespace1", "/api/v1/setting/namespace1/name1"])
async def test_put_environment_settings_auth_invliad_type(bench_user: ApiClient, route: str) -> None:
    """Case 56."""
    status, body = await bench_user.request("PUT", route, json={"conda_included_packages": 1})
    assert status == 400
    assert body["status"] == "error"
    assert "validation error" in body["message"]


@pytest.mark.parametrize("route", ["/api/v1/setting/", "/api/v1/setting/namespace1/", "/api/v1/setting/namespace1/name1/"])
async def test_put_settings_auth_invalid_keys(bench_user: ApiClient, route: str) -> None:
    """Case 57: nothing is stored when one key is unknown."""
    before = (await bench_user.get(route))[1]["data"]["conda_included_packages"]
    status, body = await bench_user.request(
        "PUT", route, json={"invalidkey": 1, "conda_included_packages": ["greeting-data"]}
    )
    assert status == 400
    assert body["status"] == "error"
    assert "Invalid setting keys" in body["message"] and "invalidkey" in body["message"]
    assert (await bench_user.get(route))[1]["data"]["conda_included_packages"] == before


@pytest.mark.parametrize("route", ["/api/v1/setting/namespace1", "/api/v1/setting/namespace1/name1"])
async def test_put_global_settings_auth_in_namespace_environment(bench_user: ApiClient, route: str) -> None:
    """Case 58."""
    status, body = await bench_user.request("PUT", route, json={"conda_max_solve_time": 60 * 60})
    assert status == 400
    assert body == {
        "status": "error",
        "message": "Setting conda_max_solve_time is a global setting and cannot be set within a namespace or environment",
    }


async def test_effective_settings_follow_the_levels(bench_user: ApiClient) -> None:
    """§1.9: namespace overrides global, environment overrides namespace, lists are replaced."""
    namespace = fresh("levels")
    global_packages = (await bench_user.get("/api/v1/setting/"))[1]["data"]["conda_default_packages"]
    await bench_user.request("PUT", f"/api/v1/setting/{namespace}/", json={"conda_default_packages": ["tinyjson"]})
    await bench_user.request("PUT", f"/api/v1/setting/{namespace}/env/", json={"conda_default_packages": ["textutils"]})
    assert (await bench_user.get("/api/v1/setting/"))[1]["data"]["conda_default_packages"] == global_packages
    assert (await bench_user.get(f"/api/v1/setting/{namespace}/"))[1]["data"]["conda_default_packages"] == ["tinyjson"]
    assert (await bench_user.get(f"/api/v1/setting/{namespace}/other/"))[1]["data"]["conda_default_packages"] == ["tinyjson"]
    assert (await bench_user.get(f"/api/v1/setting/{namespace}/env/"))[1]["data"]["conda_default_packages"] == ["textutils"]
    # A later value at one level replaces only the keys it names.
    await bench_user.request("PUT", f"/api/v1/setting/{namespace}/", json={"conda_required_packages": ["tinyjson"]})
    data = (await bench_user.get(f"/api/v1/setting/{namespace}/"))[1]["data"]
    assert (data["conda_default_packages"], data["conda_required_packages"]) == (["tinyjson"], ["tinyjson"])


async def test_namespace_settings_shape_real_submissions(bench_user: ApiClient, bench_admin: ApiClient) -> None:
    """Settings are not just stored: included packages are added to the builds of the namespace,
    required packages are enforced, default packages fill an empty specification."""
    namespace = fresh("shaped")
    status, _ = await bench_user.request(
        "PUT",
        f"/api/v1/setting/{namespace}/",
        json={"conda_included_packages": ["textutils"], "conda_required_packages": ["tinyjson"], "conda_default_packages": ["greeting-data"]},
    )
    assert status == 200
    build = await bench_admin.wait_for_build(await bench_admin.submit(environment_yaml("shaped", ["tinyjson"]), namespace))
    assert build["status"] == "COMPLETED", build["status_info"]
    packages = (await bench_user.get(f"/api/v1/build/{build['id']}/packages/"))[1]["data"]
    assert sorted(package["name"] for package in packages) == ["textutils", "tinyjson"]

    status, body = await bench_user.request(
        "POST",
        "/api/v1/specification/",
        json={"namespace": namespace, "specification": environment_yaml("missing-required", ["textutils"])},
    )
    assert status == 400
    assert body["status"] == "error" and "tinyjson" in body["message"]

    # The required-package check does not apply to the other namespace's submissions.
    elsewhere = fresh("unshaped")
    status, body = await bench_user.request(
        "POST", "/api/v1/specification/", json={"namespace": elsewhere, "specification": json.dumps({"name": "plain"})}
    )
    assert status == 200, body
