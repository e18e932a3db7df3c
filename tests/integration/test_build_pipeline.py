"""A build flows from specification to artifacts over JetStream, and the API shows it."""

from __future__ import annotations

import asyncio

import json
import subprocess
from pathlib import Path

import yaml
from conda_lock.lockfile import parse_conda_lock_file

from envstore.common.demo_channel import FIVE_PACKAGE_SOLUTION, FIVE_PACKAGE_SPEC, UNSATISFIABLE_SPEC
from envstore.common.settings import host_platform
from envstore.common.events import BuildSubmitted
from tests.api_client import ApiClient, environment_yaml
from tests.stream_reader import submission_of, stream_events


def channel_packages(channel_url: str) -> dict[str, dict]:
    """Every package file of the channel, by file name, from its repodata."""
    directory = Path(channel_url.removeprefix("file://"))
    packages = {}
    for subdir in ("linux-64", "noarch"):
        repodata = json.loads((directory / subdir / "repodata.json").read_text())
        for group in ("packages", "packages.conda"):
            packages.update(repodata.get(group, {}))
    return packages


async def test_five_package_environment_completes_with_artifacts_and_runs(
    api: ApiClient, stack, channel_url: str, tmp_path: Path
) -> None:
    build_id = await api.submit(environment_yaml("five", list(FIVE_PACKAGE_SPEC)), namespace="pipeline")
    build = await api.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    assert build["size"] > 0
    assert {"LOGS", "LOCKFILE", "YAML"} <= {a["artifact_type"] for a in build["build_artifacts"]}

    # The environment's program runs from the builder's prefix, through the envs/<name> link.
    link = stack.data_directory / "envs" / "pipeline" / "envs" / "five"
    output = subprocess.run([str(link / "bin" / "hello")], capture_output=True, text=True, check=True).stdout
    assert output == f"hello 2.1 prefix={link.resolve()} greeting-data=2.0\n"

    # The lockfile (fetched through the API's redirect) is read back by conda-lock's own parser
    # with the packages and hashes of the channel.
    status, lockfile_text = await api.get(f"/api/v1/build/{build_id}/lockfile/")
    assert status == 200
    path = tmp_path / "conda-lock.yml"
    path.write_text(lockfile_text if isinstance(lockfile_text, str) else json.dumps(lockfile_text))
    lockfile = parse_conda_lock_file(path)
    assert sorted(lockfile.metadata.platforms) == sorted([host_platform(), "osx-arm64"])
    locked = sorted((package.name, package.version) for package in lockfile.package if package.platform == host_platform())
    assert locked == sorted(FIVE_PACKAGE_SOLUTION)
    assert {package.name for package in lockfile.package if package.platform == "osx-arm64"} == {
        name for name, _ in FIVE_PACKAGE_SOLUTION
    }
    files = channel_packages(channel_url)
    for package in lockfile.package:
        if package.platform != host_platform():
            continue
        file_name = package.url.rsplit("/", 1)[1]
        assert package.hash.sha256 == files[file_name]["sha256"]
        assert package.hash.md5 == files[file_name]["md5"]

    status, pinned = await api.get(f"/api/v1/build/{build_id}/yaml/")
    assert status == 200
    document = yaml.safe_load(pinned)
    assert document["name"] == "five"
    assert sorted(pin.split("=")[0] for pin in document["dependencies"]) == sorted(
        name for name, _ in FIVE_PACKAGE_SOLUTION
    )

    status, logs = await api.get(f"/api/v1/build/{build_id}/logs/")
    assert status == 200
    assert "[solver] solve" in logs and "[builder] install" in logs

    status, environment = await api.get("/api/v1/environment/pipeline/five/")
    assert status == 200
    assert environment["data"]["current_build_id"] == build_id


async def test_unsatisfiable_specification_fails_with_the_conflict_explained(api: ApiClient) -> None:
    build_id = await api.submit(environment_yaml("conflicted", list(UNSATISFIABLE_SPEC)), namespace="pipeline")
    build = await api.wait_for_build(build_id, timeout_seconds=30)
    assert build["status"] == "FAILED"
    reason = build["status_info"]
    assert "cannot be solved" in reason
    assert "conflict-low" in reason and "conflict-high" in reason and "greeting-data" in reason
    status, logs = await api.get(f"/api/v1/build/{build_id}/logs/")
    assert status == 200
    assert logs.startswith("BUILD FAILED during solve:")


async def test_unknown_package_fails_with_the_solver_reason(api: ApiClient) -> None:
    build_id = await api.submit(environment_yaml("unknown", ["no-such-package"]), namespace="pipeline")
    build = await api.wait_for_build(build_id, timeout_seconds=30)
    assert build["status"] == "FAILED"
    assert "no-such-package" in build["status_info"]


async def test_identical_resubmission_is_a_new_build_with_a_cached_solve(api: ApiClient) -> None:
    specification = environment_yaml("again", ["tinyjson", "textutils"])
    first = await api.wait_for_build(await api.submit(specification, namespace="pipeline"))
    second_id = await api.submit(specification, namespace="pipeline")
    second = await api.wait_for_build(second_id)
    assert second["id"] != first["id"]
    assert second["status"] == first["status"] == "COMPLETED"
    assert second["specification"]["sha256"] == first["specification"]["sha256"]
    status, logs = await api.get(f"/api/v1/build/{second_id}/logs/")
    assert "cached solve" in logs


async def test_a_retried_submission_with_an_idempotency_key_is_the_same_build(api: ApiClient) -> None:
    body = {"specification": environment_yaml("retried", ["tinyjson"]), "namespace": "pipeline"}
    headers = {"Idempotency-Key": "client-request-7f3a"}
    first_status, first = await api.request("POST", "/api/v1/specification/", json=body, headers=headers)
    second_status, second = await api.request("POST", "/api/v1/specification/", json=body, headers=headers)
    third_id = await api.submit(body["specification"], namespace="pipeline")
    assert first_status == second_status == 200
    assert first["data"]["build_id"] == second["data"]["build_id"]
    assert third_id != first["data"]["build_id"]


async def test_bad_yaml_is_refused_and_publishes_nothing(api: ApiClient, stack) -> None:
    status, body = await api.request(
        "POST", "/api/v1/specification/", json={"specification": "name: [unclosed", "namespace": "refused-yaml"}
    )
    assert status == 400
    assert body == {"status": "error", "message": "Unable to parse. Invalid YAML"}
    assert await submissions_to(stack, "refused-yaml") == []


async def test_disallowed_channel_is_refused_and_publishes_nothing(api: ApiClient, stack) -> None:
    status, body = await api.request(
        "POST",
        "/api/v1/specification/",
        json={
            "specification": environment_yaml("elsewhere", ["tinyjson"], channels=["conda-forge"]),
            "namespace": "refused-channel",
        },
    )
    assert status == 400
    assert body["status"] == "error"
    assert "https://conda.anaconda.org/conda-forge" in body["message"] and "not allowed" in body["message"]
    assert await submissions_to(stack, "refused-channel") == []


async def test_invalid_dependency_gets_a_message_naming_it(api: ApiClient) -> None:
    status, body = await api.request(
        "POST",
        "/api/v1/specification/",
        json={"specification": "name: bad\ndependencies:\n  - 'tinyjson >>= 1'\n", "namespace": "pipeline"},
    )
    assert status == 400
    assert "tinyjson >>= 1" in body["message"]


async def test_anonymous_submission_is_forbidden(anonymous_api: ApiClient) -> None:
    status, body = await anonymous_api.request(
        "POST", "/api/v1/specification/", json={"specification": environment_yaml("x", ["tinyjson"])}
    )
    assert status == 403
    assert body["status"] == "error"


async def test_missing_build_is_404_and_namespaces_are_listed(api: ApiClient) -> None:
    status, body = await api.get("/api/v1/build/999999/")
    assert status == 404
    assert body == {"status": "error", "message": "build id does not exist"}
    await api.wait_for_build(await api.submit(environment_yaml("listed", ["tinyjson"]), namespace="listing"))
    status, body = await api.get("/api/v1/namespace")
    assert status == 200
    assert "listing" in {namespace["name"] for namespace in body["data"]}
    assert body["count"] == len(body["data"])


async def submissions_to(stack, namespace: str) -> list[BuildSubmitted]:  # type: ignore[no-untyped-def]
    """Every build ever submitted to ``namespace``, read from the event stream itself."""
    return [
        event for _, event in await stream_events(stack)
        if isinstance(event, BuildSubmitted) and event.namespace == namespace
    ]


async def test_the_log_of_a_running_build_streams_until_it_ends(api: ApiClient, stack) -> None:
    """The logs route of a running build answers at once and keeps writing the workers' phases as
    they happen, ending with the build's outcome. The builder is stopped while the log is opened,
    so the build is certainly still running then."""
    await stack.stop_service("builder")
    try:
        build_id = await api.submit(environment_yaml("streamed-log", ["plotkit"]), namespace="pipeline")

        for _ in range(600):  # bounded: 30 s
            if (await api.build(build_id))["status"] == "BUILDING":
                break
            await asyncio.sleep(0.05)
        assert (await api.build(build_id))["status"] == "BUILDING"
        async with api.session.get(f"/api/v1/build/{build_id}/logs/", allow_redirects=False) as response:
            assert response.status == 200
            first = await response.content.readline()
            assert b"[solver] solve: started" in first
            await stack.start_service("builder")
            rest = (await response.read()).decode()
    finally:
        await stack.start_service("builder")  # if it is not running
    assert "[builder] install: started" in rest
    assert rest.rstrip().endswith(f"build {build_id} ended: COMPLETED")


async def test_remote_solve_answers_packages_and_refuses_channels_not_allowed(api: ApiClient) -> None:
    status, body = await api.get("/api/v1/specification/", params={"conda": "hello 2.1.*"})
    assert status == 200
    assert {"hello", "libhello", "greeting-data"} <= {package["name"] for package in body["solve"]}
    status, body = await api.get("/api/v1/specification/", params={"conda": "hello", "channel": "conda-forge"})
    assert status == 400
    assert "https://conda.anaconda.org/conda-forge not allowed" in body["message"]


async def test_a_specification_too_large_for_an_event_is_stored_and_still_built(api: ApiClient, stack) -> None:
    """Events stay small: a large specification goes to storage and the event carries its digest;
    the build, its answer and its artifacts are as for any other."""
    description = "a long description " * 12_000  # ~230 KB
    specification = f"name: large-spec\ndescription: {description}\ndependencies:\n  - tinyjson\n"
    build_id = await api.submit(specification, namespace="pipeline")
    build = await api.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    assert build["specification"]["spec"]["description"] == description.strip()
    submitted = await submission_of(stack, build_id)
    assert isinstance(submitted, BuildSubmitted)
    assert submitted.specification_blob is not None and submitted.specification_blob.size > 200_000
    assert "dependencies" not in submitted.specification
