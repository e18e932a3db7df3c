"""``GET /api/v1/build/{a}/diff/{b}/``: two real builds of the test channel, their locks compared
as a reviewer would read them (JSON and text), and the refusals (unknown build, unsolved build,
bad format). Permissions: tests/api/test_permission_matrix.py."""

from __future__ import annotations

from tests.api.conftest import fresh
from tests.api_client import ApiClient, environment_yaml
from envstore.common.settings import host_platform


async def _completed(admin: ApiClient, specification: str, namespace: str) -> int:
    build = await admin.wait_for_build(await admin.submit(specification, namespace))
    assert build["status"] == "COMPLETED", build["status_info"]
    return build["id"]


async def test_diff_of_two_builds_names_added_removed_and_changed_packages(bench_admin: ApiClient) -> None:
    namespace = fresh("diff")
    before = await _completed(bench_admin, environment_yaml("tools", ["hello 1.0.*", "tinyjson"]), namespace)
    after = await _completed(bench_admin, environment_yaml("tools", ["hello 2.1.*", "textutils"]), namespace)

    status, body = await bench_admin.get(f"/api/v1/build/{before}/diff/{after}/")
    assert status == 200, body
    diff = body["data"]
    assert (diff["from_build"], diff["to_build"], diff["identical"]) == (before, after, False)
    platform = diff["conda"][host_platform()]
    assert [package["name"] for package in platform["added"]] == ["textutils"]
    assert [package["name"] for package in platform["removed"]] == ["tinyjson"]
    changed = {change["name"]: change for change in platform["changed"]}
    assert set(changed) == {"greeting-data", "hello", "libhello"}
    assert changed["hello"]["before"]["version"].startswith("1.0")
    assert changed["hello"]["after"]["version"].startswith("2.1")
    assert diff["pip"] == {}, "no pip section in either build"

    status, text = await bench_admin.get(f"/api/v1/build/{before}/diff/{after}/", params={"format": "text"})
    assert status == 200, text
    lines = text.splitlines()
    assert lines[:2] == [f"--- build {before}", f"+++ build {after}"]
    assert f"conda {host_platform()}: 1 added, 1 removed, 3 changed, 0 unchanged" in lines
    assert any(line.startswith("  + textutils ") for line in lines)
    assert any(line.startswith("  - tinyjson ") for line in lines)
    hello = next(line for line in lines if line.startswith("  ~ hello "))
    assert " 1.0" in hello and " -> 2.1" in hello

    status, body = await bench_admin.get(f"/api/v1/build/{after}/diff/{after}/")
    assert status == 200 and body["data"]["identical"] is True


async def test_diff_refuses_unknown_unsolved_builds_and_unknown_formats(bench_admin: ApiClient) -> None:
    namespace = fresh("diff-refused")
    solved = await _completed(bench_admin, environment_yaml("tools", ["tinyjson"]), namespace)
    unsolvable = await bench_admin.wait_for_build(
        await bench_admin.submit(environment_yaml("broken", ["conflict-low", "conflict-high"]), namespace)
    )
    assert unsolvable["status"] == "FAILED"

    status, body = await bench_admin.get(f"/api/v1/build/{solved}/diff/99999999/")
    assert status == 404 and "99999999" in body["message"], body
    status, body = await bench_admin.get(f"/api/v1/build/{solved}/diff/{unsolvable['id']}/")
    assert status == 409 and f"build {unsolvable['id']} has no lock" in body["message"], body
    status, body = await bench_admin.get(f"/api/v1/build/{solved}/diff/{solved}/", params={"format": "yaml"})
    assert status == 400 and "format must be one of" in body["message"], body
