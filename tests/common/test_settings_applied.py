"""Every conda-store setting envstore parses is applied (README, "conda-store's settings, applied"):
on a real stack, each test shows the effect a user sees. Values stored through the settings API
reach the workers because a submission records them (``build.submitted``'s ``settings``).

Settings tested elsewhere: conda_default/required/included_packages, build_artifacts and the
levels (tests/api/test_conformance_settings.py), build_artifacts_kept_on_deletion's default
(tests/api/test_lifecycle.py), conda_allowed_channels and the channel guard
(tests/api/test_channel_refusals.py), watch_paths (tests/watcher/)."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from envstore.common.settings import EnvstoreSettings
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.common.conftest import NOBODY


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout_seconds: float = 60) -> Any:
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout_seconds} s")
        await asyncio.sleep(0.05)


async def submitted_event(admin: ApiClient, build_id: int) -> dict:
    status, page = await admin.get("/api/v1/events/", params={"type": "build.submitted", "build_id": build_id})
    assert status == 200, page
    (event,) = page["data"]
    return event["event"]


def prefix_of(stack: EmbeddedStack, namespace: str) -> Path:
    """The one build prefix of a namespace used by a single build."""
    (prefix,) = [path for path in (stack.data_directory / "envs" / namespace).iterdir() if path.name != "envs" and not path.name.startswith(".")]
    return prefix


async def test_default_permissions_and_owner_are_those_of_the_prefix_and_its_tarball(
    configured_stack: EmbeddedStack, configured_admin: ApiClient
) -> None:
    """ENVSTORE_DEFAULT_UID/GID=65534, ENVSTORE_DEFAULT_PERMISSIONS=750: directories and
    executables 750, other files 640, all owned by 65534:65534 — on disk, and in the CONDA_PACK
    tarball the packager made from its own install (PACKAGER_REUSE_BUILDER_PREFIX=false)."""
    build_id = await configured_admin.submit(environment_yaml("owned", ["hello"]), namespace="owned")
    build = await configured_admin.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    prefix = prefix_of(configured_stack, "owned")
    expected = {prefix: 0o750, prefix / "bin": 0o750, prefix / "bin" / "hello": 0o750}
    expected |= {record: 0o640 for record in (prefix / "conda-meta").glob("hello-*.json")}
    assert len(expected) == 4
    for path, mode in expected.items():
        status = path.lstat()
        assert (oct(status.st_mode & 0o7777), status.st_uid, status.st_gid) == (oct(mode), NOBODY, NOBODY), path

    async with configured_admin.session.get(configured_admin.path(f"/api/v1/build/{build_id}/archive/")) as response:
        assert response.status == 200
        archive = await response.read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert (oct(members["bin/hello"].mode), members["bin/hello"].uid, members["bin/hello"].gid) == (oct(0o750), NOBODY, NOBODY)
    record = next(name for name in members if name.startswith("conda-meta/hello-"))
    assert (oct(members[record].mode), members[record].uid) == (oct(0o640), NOBODY)


async def test_storage_threshold_stored_globally_stops_installs(
    configured_admin: ApiClient, global_settings_restored: None
) -> None:
    status, body = await configured_admin.request("PUT", "/api/v1/setting/", json={"storage_threshold": 2**62})
    assert status == 200, body
    build = await configured_admin.wait_for_build(
        await configured_admin.submit(environment_yaml("no-room", ["tinyjson"]), namespace="thresholds")
    )
    assert build["status"] == "FAILED"
    assert f"less than storage_threshold ({2**62} bytes)" in build["status_info"]
    assert "free some space (delete old builds) or lower storage_threshold" in build["status_info"]


async def test_conda_max_solve_time_stored_globally_is_the_solvers_limit(
    configured_admin: ApiClient, global_settings_restored: None
) -> None:
    await configured_admin.request("PUT", "/api/v1/setting/", json={"conda_max_solve_time": 1234})
    build_id = await configured_admin.submit(environment_yaml("limited", ["tinyjson"]), namespace="thresholds")
    assert (await submitted_event(configured_admin, build_id))["settings"]["max_solve_seconds"] == 1234
    assert (await configured_admin.wait_for_build(build_id))["status"] == "COMPLETED"


async def test_kept_artifacts_stored_globally_decide_what_a_deletion_keeps(
    configured_admin: ApiClient, global_settings_restored: None
) -> None:
    await configured_admin.request("PUT", "/api/v1/setting/", json={"build_artifacts_kept_on_deletion": ["LOGS"]})
    build_id = await configured_admin.submit(environment_yaml("pruned", ["tinyjson"]), namespace="deletions")
    assert (await configured_admin.wait_for_build(build_id))["status"] == "COMPLETED"
    status, body = await configured_admin.request("DELETE", f"/api/v1/build/{build_id}/")
    assert status == 200, body

    async def only_logs_left() -> bool:
        build = await configured_admin.build(build_id)
        return {artifact["artifact_type"] for artifact in build["build_artifacts"]} == {"LOGS"}

    await eventually(only_logs_left, "the deletion keeping LOGS only")
    assert (await configured_admin.get(f"/api/v1/build/{build_id}/lockfile/"))[0] == 404


async def test_indexed_channels_stored_globally_are_listed(
    configured_admin: ApiClient, global_settings_restored: None
) -> None:
    await configured_admin.request("PUT", "/api/v1/setting/", json={"conda_indexed_channels": ["bioconda"]})
    _, body = await configured_admin.get("/api/v1/channel/", params={"size": 100})
    assert "https://conda.anaconda.org/bioconda" in [channel["name"] for channel in body["data"]]


async def test_a_namespaces_channel_alias_is_the_one_its_builds_are_solved_with(
    configured_admin: ApiClient, channel_url: str
) -> None:
    """The namespace names channels under its own alias ("channel" → <alias>/channel); the
    solver resolves them with that alias, not with its own (https://conda.anaconda.org)."""
    alias, _, name = channel_url.rstrip("/").rpartition("/")
    status, body = await configured_admin.request("PUT", "/api/v1/setting/aliased/", json={"conda_channel_alias": alias})
    assert status == 200, body
    build_id = await configured_admin.submit(environment_yaml("short-names", ["tinyjson"], channels=[name]), namespace="aliased")
    build = await configured_admin.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    lockfile = await configured_admin.get(f"/api/v1/build/{build_id}/lockfile/")
    assert lockfile[0] == 200 and channel_url.rstrip("/") in str(lockfile[1])


async def test_pypi_package_settings_shape_the_pip_dependencies(configured_admin: ApiClient) -> None:
    """conda-store's validate_environment_pypi_packages: default packages when there are none,
    included ones added unless named, required ones checked."""
    namespace = "piped"
    settings = {"pypi_default_packages": ["six"], "pypi_included_packages": ["idna>=3", "six"]}
    assert (await configured_admin.request("PUT", f"/api/v1/setting/{namespace}/", json=settings))[0] == 200
    build_id = await configured_admin.submit(environment_yaml("with-defaults", ["tinyjson"]), namespace=namespace)
    # The specification is what the settings made of it; the build itself is not the point here.
    await configured_admin.request("PUT", f"/api/v1/build/{build_id}/cancel/")
    specification = (await configured_admin.build(build_id))["specification"]["spec"]
    assert specification["dependencies"] == ["tinyjson", {"pip": ["six", "idna>=3"]}]

    await configured_admin.request("PUT", f"/api/v1/setting/{namespace}/", json={"pypi_required_packages": ["Requests"]})
    status, body = await configured_admin.request(
        "POST",
        "/api/v1/specification/",
        json={
            "namespace": namespace,
            "specification": "name: without-required\ndependencies:\n  - tinyjson\n  - pip:\n    - six\n",
        },
    )
    assert status == 400
    assert body["message"] == (
        "PyPI packages Requests are required by the server's settings but not specified; "
        "add them to the specification's pip dependencies"
    )


async def test_serialize_builds_installs_one_build_at_a_time(
    configured_stack: EmbeddedStack, configured_admin: ApiClient
) -> None:
    """ENVSTORE_SERIALIZE_BUILDS=true: the builders' consumer hands out one message at a time,
    across replicas; builds submitted together are installed one after the other."""
    client = await configured_stack.connect_nats("builder")  # its own consumer, with its credentials
    try:
        info = await client.jetstream().consumer_info("ENVSTORE", "builder")
    finally:
        await client.close()
    assert info.config.max_ack_pending == 1

    build_ids = await asyncio.gather(
        *(configured_admin.submit(environment_yaml(f"queued-{index}", ["textutils"]), namespace="serial") for index in range(3))
    )
    for build_id in build_ids:
        assert (await configured_admin.wait_for_build(build_id))["status"] == "COMPLETED"
    intervals = []
    for build_id in build_ids:
        _, page = await configured_admin.get("/api/v1/events/", params={"type": "build.progress", "build_id": build_id, "size": 100})
        times = {
            event["event"]["state"]: event["occurred_at"]
            for event in page["data"]
            if (event["event"]["service"], event["event"]["phase"]) == ("builder", "install")
            and event["event"]["state"] in ("started", "ended")
        }
        intervals.append((times["started"], times["ended"]))
    intervals.sort()
    for (_, ended), (started, _) in zip(intervals, intervals[1:]):
        assert ended <= started, intervals


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"conda_command": "mamba"}, "conda_command 'mamba' is not available: envstore solves and installs with rattler"),
        ({"conda_platforms": ["linux-64"]}, "conda_platforms cannot be changed in envstore"),
        ({"default_permissions": "99"}, "default_permissions '99' must be three octal digits"),
        ({"default_namespace": "elsewhere"}, "Setting default_namespace names a namespace every envstore service reads at start"),
        ({"filesystem_namespace": "files"}, "is set with ENVSTORE_FILESYSTEM_NAMESPACE in their environment"),
    ],
)
async def test_settings_envstore_cannot_apply_are_refused(configured_admin: ApiClient, values: dict, message: str) -> None:
    before = (await configured_admin.get("/api/v1/setting/"))[1]["data"]
    status, body = await configured_admin.request("PUT", "/api/v1/setting/", json=values)
    assert status == 400
    assert message in body["message"]
    assert (await configured_admin.get("/api/v1/setting/"))[1]["data"] == before


def test_the_same_settings_from_the_environment_stop_a_service_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVSTORE_CONDA_COMMAND", "mamba")
    with pytest.raises(ValidationError, match="envstore solves and installs with rattler"):
        EnvstoreSettings()


async def test_a_submission_naming_no_namespace_goes_to_the_default_namespace(configured_admin: ApiClient) -> None:
    """default_namespace ("default"): where the admin service account's submissions go when they
    name no namespace (a user's go to their own namespace)."""
    status, body = await configured_admin.request(
        "POST", "/api/v1/specification/", json={"specification": environment_yaml("unplaced", ["tinyjson"])}
    )
    assert status == 200, body
    assert (await configured_admin.get("/api/v1/environment/default/unplaced/"))[0] == 200
