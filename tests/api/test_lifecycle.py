"""conda-store-api.md §2 and §6.2, the lifecycle: rollback (§2.4), rebuild (case 41), cancel of a
running build (it really stops the worker and ends CANCELED with the reason in the log), delete of
a build (case 50: artifacts removed except LOGS, LOCKFILE and YAML), of an environment (case 48)
and of a namespace (§2.5), the lockfile round trip (``is_lockfile: true`` skips the solver) and
parallel builds — all on the workbench with real builds from the test channel.

A running build is held in its solve phase by a channel whose server answers nothing until the
test releases it, so "BUILDING" lasts exactly as long as the test needs.

§6.2's lockfile round trip also carries a pip package (``flask``); the suite runs offline with no
package index, so the round trip here is conda packages only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from envstore.common.settings import EnvstoreSettings
from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import StalledChannel, allow_stalled_channels, fresh, stalled_build, wait_until
from tests.api_client import ApiClient, environment_yaml

CANCEL_REASON = "build {build_id} marked as CANCELED due to being canceled from the REST API"



def build_key_of(build: dict) -> str:
    logs = next(artifact["key"] for artifact in build["build_artifacts"] if artifact["artifact_type"] == "LOGS")
    return logs.removeprefix("logs/").removesuffix(".log")


def prefix_of(stack: EmbeddedStack, namespace: str, build: dict) -> Path:
    return stack.data_directory / "envs" / namespace / build_key_of(build)


def environment_link(stack: EmbeddedStack, namespace: str, name: str) -> Path:
    return stack.data_directory / "envs" / namespace / "envs" / name


async def build_of(client: ApiClient, build_id: int) -> dict:
    status, body = await client.get(f"/api/v1/build/{build_id}/")
    assert status == 200, body
    return body["data"]


async def completed(admin: ApiClient, specification: str, namespace: str, kinds: set[str] | None = None) -> dict:
    build = await admin.wait_for_build(await admin.submit(specification, namespace))
    assert build["status"] == "COMPLETED", build["status_info"]
    return await admin.wait_for_artifacts(build["id"], kinds or {"LOGS", "LOCKFILE", "YAML"})


async def test_rollback_switches_the_current_build_and_the_environment_link(
    workbench: EmbeddedStack, bench_admin: ApiClient, bench_user: ApiClient
) -> None:
    """§2.3/§2.4 and §6.2's ``PUT environment/… {"build_id"}``: the latest completed build is
    current; switching back moves ``current_build_id`` and the ``envs/<name>`` link."""
    namespace = fresh("rollback")
    first = await completed(bench_admin, environment_yaml("flask-env", ["hello 1.0.*"]), namespace)
    second = await completed(bench_admin, environment_yaml("flask-env", ["hello 2.1.*"]), namespace)
    link = environment_link(workbench, namespace, "flask-env")
    assert (await bench_user.get(f"/api/v1/environment/{namespace}/flask-env/"))[1]["data"]["current_build_id"] == second["id"]
    assert link.resolve() == prefix_of(workbench, namespace, second).resolve()

    status, body = await bench_user.request("PUT", f"/api/v1/environment/{namespace}/flask-env/", json={"build_id": first["id"]})
    assert (status, body) == (200, {"status": "ok", "message": None})
    assert (await bench_user.get(f"/api/v1/environment/{namespace}/flask-env/"))[1]["data"]["current_build_id"] == first["id"]

    async def link_moved() -> bool:
        return link.resolve() == prefix_of(workbench, namespace, first).resolve()

    await wait_until(link_moved, "envs/flask-env pointing at the first build")
    output = subprocess.run([str(link / "bin" / "hello")], capture_output=True, text=True, check=True).stdout
    assert output.startswith("hello 1.0 ")


async def test_put_build_trigger_build_auth(bench_admin: ApiClient, bench_user: ApiClient) -> None:
    """Case 41 (skipped upstream): a rebuild is a new build of the same specification, solved afresh,
    and becomes current when it completes."""
    namespace = fresh("rebuild")
    original = await completed(bench_admin, environment_yaml("again", ["tinyjson"]), namespace)
    status, body = await bench_user.request("PUT", f"/api/v1/build/{original['id']}")
    assert status == 200
    assert body["status"] == "ok" and body["message"] == "rebuild triggered"
    rebuilt_id = body["data"]["build_id"]
    assert rebuilt_id != original["id"]
    rebuilt = await bench_admin.wait_for_build(rebuilt_id)
    assert rebuilt["status"] == "COMPLETED"
    assert rebuilt["environment_id"] == original["environment_id"]
    assert rebuilt["specification"] == original["specification"]
    logs = (await bench_user.get(f"/api/v1/build/{rebuilt_id}/logs/"))[1]
    assert "packages solved in" in logs and "cached solve" not in logs
    assert (await bench_user.get(f"/api/v1/environment/{namespace}/again/"))[1]["data"]["current_build_id"] == rebuilt_id


async def test_cancel_running_build(
    bench_admin: ApiClient, bench_user: ApiClient, bench_anonymous: ApiClient, stalled_channel: StalledChannel, channel_url: str
) -> None:
    """§6.2's cancel: anonymous 403; then ``build {id} canceled``, the worker's solve is really
    interrupted (its request to the channel is dropped), the build ends CANCELED with the reason
    in its log, and it does not become current."""
    namespace = fresh("cancel")
    done = await completed(bench_admin, environment_yaml("slow", ["tinyjson"]), namespace)
    build_id = await stalled_build(bench_admin, stalled_channel, channel_url, namespace, "slow")

    status, body = await bench_anonymous.request("PUT", f"/api/v1/build/{build_id}/cancel/")
    assert status == 403 and body["status"] == "error"
    status, body = await bench_user.request("PUT", f"/api/v1/build/{build_id}/cancel")
    assert (status, body) == (200, {"status": "ok", "message": f"build {build_id} canceled"})

    async def canceled() -> dict | None:
        build = await build_of(bench_user, build_id)
        return build if build["status"] == "CANCELED" else None

    build = await wait_until(canceled, f"build {build_id} CANCELED")
    assert build["ended_on"] is not None

    async def request_dropped() -> bool:
        return stalled_channel.abandoned > 0

    await wait_until(request_dropped, "the solver dropping its request to the channel")
    status, logs = await bench_user.get(f"/api/v1/build/{build_id}/logs/")
    assert status == 200
    assert CANCEL_REASON.format(build_id=build_id) in logs
    assert (await bench_user.get(f"/api/v1/environment/{namespace}/slow/"))[1]["data"]["current_build_id"] == done["id"]

    # Released now, the channel cannot bring the build back to life.
    stalled_channel.release()
    follow_up = await completed(bench_admin, environment_yaml("after", ["tinyjson"]), namespace)
    assert follow_up["status"] == "COMPLETED"
    assert (await build_of(bench_user, build_id))["status"] == "CANCELED"

    # Canceling a finished build changes nothing.
    status, body = await bench_user.request("PUT", f"/api/v1/build/{done['id']}/cancel/")
    assert (status, body["message"]) == (200, f"build {done['id']} canceled")
    assert (await build_of(bench_user, done["id"]))["status"] == "COMPLETED"


async def test_delete_build_auth(
    workbench: EmbeddedStack, bench_admin: ApiClient, bench_user: ApiClient, stalled_channel: StalledChannel, channel_url: str
) -> None:
    """Case 50 (skipped upstream): a build that has not finished cannot be deleted (400)."""
    namespace = fresh("unfinished")
    build_id = await stalled_build(bench_admin, stalled_channel, channel_url, namespace, "busy")
    status, body = await bench_user.request("DELETE", f"/api/v1/build/{build_id}")
    assert (status, body) == (400, {"status": "error", "message": "cannot delete build since not finished building"})
    assert (await build_of(bench_user, build_id))["status"] == "BUILDING"

    # A canceled build has nothing running and may be deleted (conda-store allows only FAILED and
    # COMPLETED; envstore also lets a CANCELED build's leftovers go).
    await bench_user.request("PUT", f"/api/v1/build/{build_id}/cancel/")

    async def canceled() -> bool:
        return (await build_of(bench_user, build_id))["status"] == "CANCELED"

    await wait_until(canceled, f"build {build_id} CANCELED")
    status, body = await bench_user.request("DELETE", f"/api/v1/build/{build_id}/")
    assert (status, body) == (200, {"status": "ok", "message": None})


async def test_delete_completed_build_keeps_logs_lockfile_and_yaml(
    workbench: EmbeddedStack, bench_admin: ApiClient, bench_user: ApiClient
) -> None:
    """§2.5: the prefix and the artifacts go, except ``build_artifacts_kept_on_deletion`` (LOGS,
    LOCKFILE, YAML); the build stays listed with size 0 and stays its environment's current build."""
    namespace = fresh("deletebuild")
    await bench_user.request(
        "PUT", f"/api/v1/setting/{namespace}/", json={"build_artifacts": ["LOCKFILE", "YAML", "LOGS", "CONDA_PACK"]}
    )
    build = await completed(
        bench_admin, environment_yaml("packed", ["tinyjson"]), namespace, {"LOGS", "LOCKFILE", "YAML", "CONDA_PACK"}
    )
    build_id = build["id"]
    prefix = prefix_of(workbench, namespace, build)
    assert prefix.is_dir()
    keys = {artifact["artifact_type"]: artifact["key"] for artifact in build["build_artifacts"]}
    async with bench_user.session.get(f"/api/v1/build/{build_id}/archive/", allow_redirects=False) as response:
        assert response.status == 307
        assert response.headers["Location"].partition("?")[0].endswith(f"/storage/{keys['CONDA_PACK']}")
    async with bench_user.session.get(f"/api/v1/build/{build_id}/archive/") as response:
        assert response.status == 200
        assert (await response.read())[:2] == b"\x1f\x8b"  # gzip

    status, body = await bench_user.request("DELETE", f"/api/v1/build/{build_id}/")
    assert (status, body) == (200, {"status": "ok", "message": None})

    async def purged() -> dict | None:
        current = await build_of(bench_user, build_id)
        kinds = {artifact["artifact_type"] for artifact in current["build_artifacts"]}
        return current if current["size"] == 0 and "CONDA_PACK" not in kinds else None

    after = await wait_until(purged, f"build {build_id}'s artifacts removed")
    assert {artifact["artifact_type"] for artifact in after["build_artifacts"]} == {"LOGS", "LOCKFILE", "YAML"}
    assert after["status"] == "COMPLETED"
    assert not prefix.exists()
    for route in ("logs/", "lockfile/", "yaml/"):
        status, _ = await bench_user.get(f"/api/v1/build/{build_id}/{route}")
        assert status == 200, route
    status, body = await bench_user.get(f"/api/v1/build/{build_id}/archive/")
    assert status == 404 and body["status"] == "error"
    status, _ = await bench_user.get(f"/storage/{keys['CONDA_PACK']}")
    assert status == 404
    listed = (await bench_user.get("/api/v1/build/", params={"namespace": namespace}))[1]["data"]
    assert [listed_build["id"] for listed_build in listed] == [build_id]
    environment = (await bench_user.get(f"/api/v1/environment/{namespace}/packed/"))[1]["data"]
    assert environment["current_build_id"] == build_id


async def test_delete_environment_removes_its_builds(
    workbench: EmbeddedStack,
    bench_admin: ApiClient,
    bench_user: ApiClient,
    stalled_channel: StalledChannel,
    channel_url: str,
) -> None:
    """§2.5: hidden at once; every build's prefix and artifacts removed, the ``envs/<name>`` link
    too; the name can then be used again, starting afresh."""
    namespace = fresh("deleteenv")
    first = await completed(bench_admin, environment_yaml("gone", ["tinyjson"]), namespace)
    second = await completed(bench_admin, environment_yaml("gone", ["textutils"]), namespace)
    keeper = await completed(bench_admin, environment_yaml("kept", ["tinyjson"]), namespace)
    prefixes = [prefix_of(workbench, namespace, build) for build in (first, second)]
    link = environment_link(workbench, namespace, "gone")
    assert all(prefix.is_dir() for prefix in prefixes) and link.is_symlink()

    status, body = await bench_user.request("DELETE", f"/api/v1/environment/{namespace}/gone/")
    assert (status, body) == (200, {"status": "ok", "message": None})
    listed = (await bench_user.get("/api/v1/environment/", params={"namespace": namespace}))[1]["data"]
    assert [environment["name"] for environment in listed] == ["kept"]
    assert (await bench_user.get(f"/api/v1/environment/{namespace}/gone/"))[0] == 404

    async def removed() -> bool:
        builds = [await build_of(bench_user, build["id"]) for build in (first, second)]
        return all(build["build_artifacts"] == [] for build in builds) and not any(p.exists() for p in prefixes)

    await wait_until(removed, "the deleted environment's builds removed")
    assert not link.is_symlink()
    assert prefix_of(workbench, namespace, keeper).is_dir()

    # Made again, the environment starts afresh: its first build is current at once (§2.3), even
    # while it is still running (held here by the stalled channel), not a build of the deleted one.
    again = await stalled_build(bench_admin, stalled_channel, channel_url, namespace, "gone")
    environment = (await bench_user.get(f"/api/v1/environment/{namespace}/gone/"))[1]["data"]
    assert environment["current_build_id"] == again


async def test_delete_namespace_removes_everything_in_it(
    workbench: EmbeddedStack, bench_admin: ApiClient, bench_user: ApiClient
) -> None:
    """§2.5: the namespace answers 404 at once; its builds' prefixes and artifacts are removed.
    conda-store answers 409 when the name is created again before its worker purged the rows;
    envstore removes the files and keeps the rows soft-deleted, so the name can be reused at once
    (and starts empty)."""
    namespace = fresh("deletens")
    builds = [
        await completed(bench_admin, environment_yaml(name, ["tinyjson"]), namespace) for name in ("one", "two")
    ]
    prefixes = [prefix_of(workbench, namespace, build) for build in builds]
    status, body = await bench_user.request("DELETE", f"/api/v1/namespace/{namespace}/")
    assert (status, body) == (200, {"status": "ok", "message": None})
    assert (await bench_user.get(f"/api/v1/namespace/{namespace}/"))[0] == 404

    async def removed() -> bool:
        current = [await build_of(bench_user, build["id"]) for build in builds]
        return all(build["build_artifacts"] == [] for build in current) and not any(p.exists() for p in prefixes)

    await wait_until(removed, "the deleted namespace's builds removed")
    assert not (workbench.data_directory / "envs" / namespace / "envs").exists()

    status, _ = await bench_user.request("POST", f"/api/v1/namespace/{namespace}/")
    assert status == 200
    assert (await bench_user.get("/api/v1/environment/", params={"namespace": namespace}))[1]["count"] == 0


async def test_lockfile_round_trip(workbench: EmbeddedStack, bench_admin: ApiClient, bench_user: ApiClient) -> None:
    """§6.2: a build's lockfile, submitted with ``is_lockfile: true`` and an ``environment_name``,
    is a new build with the identical lockfile, installed without a solve."""
    namespace = fresh("lockfile")
    original = await completed(bench_admin, environment_yaml("from-yaml", ["hello 2.1.*", "tinyjson"]), namespace)
    # §6.2's page size on a build's packages (hello, libhello, greeting-data and tinyjson).
    status, body = await bench_user.get(f"/api/v1/build/{original['id']}/packages/", params={"size": "3"})
    assert (status, len(body["data"]), body["size"], body["count"]) == (200, 3, 3, 4)
    status, lockfile = await bench_user.get(f"/api/v1/build/{original['id']}/lockfile/")
    assert status == 200
    lockfile = yaml.safe_load(lockfile) if isinstance(lockfile, str) else lockfile
    status, body = await bench_user.request(
        "POST",
        "/api/v1/specification/",
        json={
            "namespace": namespace,
            "specification": yaml.safe_dump(lockfile),
            "is_lockfile": True,
            "environment_name": "from-lock",
            "environment_description": "made from a lockfile",
        },
    )
    assert status == 200, body
    build_id = body["data"]["build_id"]
    assert build_id != original["id"]
    build = await bench_admin.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    spec = build["specification"]["spec"]
    assert (spec["name"], spec["description"]) == ("from-lock", "made from a lockfile")
    assert spec["lockfile"]["package"] == lockfile["package"]

    relocked = (await bench_user.get(f"/api/v1/build/{build_id}/lockfile/"))[1]
    relocked = yaml.safe_load(relocked) if isinstance(relocked, str) else relocked

    def pins(document: dict) -> list[tuple]:
        return sorted((p["name"], p["version"], p["url"], p["hash"]["sha256"]) for p in document["package"])

    assert pins(relocked) == pins(lockfile)
    assert {name for name, *_ in pins(lockfile)} >= {"hello", "tinyjson", "libhello", "greeting-data"}
    logs = (await bench_user.get(f"/api/v1/build/{build_id}/logs/"))[1]
    assert "no solve" in logs and "[solver] solve: started" not in logs
    environment = (await bench_user.get(f"/api/v1/environment/{namespace}/from-lock/"))[1]["data"]
    assert environment["description"] == "made from a lockfile"
    link = environment_link(workbench, namespace, "from-lock")
    output = subprocess.run([str(link / "bin" / "hello")], capture_output=True, text=True, check=True).stdout
    assert output.startswith("hello 2.1 ")


async def test_lockfile_submission_errors(bench_user: ApiClient) -> None:
    """§1.5: lockfile ``version`` must be absent or 1; ``environment_name`` must be a valid name."""
    namespace = fresh("badlock")
    for specification, environment_name in (
        (yaml.safe_dump({"version": 2, "metadata": {}, "package": []}), "x"),
        (yaml.safe_dump({"version": 1, "metadata": {}, "package": []}), "bad name"),
    ):
        status, body = await bench_user.request(
            "POST",
            "/api/v1/specification/",
            json={"namespace": namespace, "specification": specification, "is_lockfile": True, "environment_name": environment_name},
        )
        assert status == 400, body
        assert body["status"] == "error"


async def test_parallel_builds_complete(bench_admin: ApiClient) -> None:
    """§6.2: ten specifications submitted together all complete."""
    namespace = fresh("parallel")
    packages = ["tinyjson", "textutils", "greeting-data", "compresslite", "libmath",
                "configlib", "numlite", "colorterm", "units", "logkit"]
    build_ids = await asyncio.gather(
        *(bench_admin.submit(environment_yaml(f"env{index}", [package]), namespace) for index, package in enumerate(packages))
    )
    assert len(set(build_ids)) == 10
    builds = await asyncio.gather(*(bench_admin.wait_for_build(build_id, timeout_seconds=120) for build_id in build_ids))
    assert [build["status"] for build in builds] == ["COMPLETED"] * 10


async def test_cancel_before_the_worker_starts(
    bench_admin: ApiClient, bench_user: ApiClient, stalled_channel: StalledChannel, channel_url: str
) -> None:
    """A build queued behind stalled ones and canceled before a worker took it is never started:
    it ends CANCELED and its channel is never asked for anything."""
    namespace = fresh("queued")
    # Fill the solver's two slots (worker concurrency 2), so that the next build waits its turn.
    blockers = [
        await stalled_build(bench_admin, stalled_channel, channel_url, namespace, name) for name in ("first", "second")
    ]
    waiting_url = f"{stalled_channel.url}/third"
    await allow_stalled_channels(
        bench_admin, channel_url, namespace, f"{stalled_channel.url}/first", f"{stalled_channel.url}/second", waiting_url
    )
    queued = await bench_admin.submit(environment_yaml("third", ["tinyjson"], channels=[waiting_url]), namespace)
    assert (await build_of(bench_user, queued))["status"] == "QUEUED"
    status, body = await bench_user.request("PUT", f"/api/v1/build/{queued}/cancel/")
    assert (status, body["message"]) == (200, f"build {queued} canceled")
    for build_id in blockers:
        await bench_user.request("PUT", f"/api/v1/build/{build_id}/cancel/")

    async def all_canceled() -> bool:
        builds = [await build_of(bench_user, build_id) for build_id in [*blockers, queued]]
        return all(build["status"] == "CANCELED" for build in builds)

    await wait_until(all_canceled, "every build CANCELED")
    assert not any(path.startswith("/stalled/third/") for path in stalled_channel.paths)
    logs = (await bench_user.get(f"/api/v1/build/{queued}/logs/"))[1]
    assert CANCEL_REASON.format(build_id=queued) in logs


async def test_default_conda_store_dir(
    workbench: EmbeddedStack, bench_admin: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 59 checks conda-store's default state directory (a platform path, not an API). envstore
    keeps its state in its data directory, by default ``./envstore-data``: prefixes in
    ``<data dir>/envs/<namespace>/<build key>``, with the ``envs/<name>`` links beside them."""
    for variable in [name for name in os.environ if name.startswith("ENVSTORE_")]:
        monkeypatch.delenv(variable)
    defaults = EnvstoreSettings()
    assert defaults.environments_root == (Path("envstore-data") / "envs").resolve()
    assert defaults.storage_root == (Path("envstore-data") / "storage").resolve()

    namespace = fresh("statedir")
    build = await completed(bench_admin, environment_yaml("placed", ["tinyjson"]), namespace)
    prefix = prefix_of(workbench, namespace, build)
    assert prefix.is_dir()
    assert environment_link(workbench, namespace, "placed").resolve() == prefix.resolve()
