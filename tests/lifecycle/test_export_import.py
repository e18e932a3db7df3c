"""Export and import with history, between two stacks: a namespace with several environments,
completed, failed, rolled-back, archived and deleted builds, settings and usage is exported by
``envstore export``, imported by ``envstore import`` into another stack, and every API answer for
it there equals the first stack's once ids are mapped — artifacts byte for byte, the image with
the same manifest digest. The imported history is live: a rebuild of an imported build completes.
A damaged file and a second import of the same namespace are refused with what to do."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import fresh, wait_until
from tests.api_client import LOGIN_PASSWORD, ApiClient, environment_yaml
from tests.lifecycle.conftest import USAGE_FLUSH_SECONDS, completed_build

ARTIFACT_ROUTES = ("lockfile/", "yaml/", "logs/", "archive/")
VOLATILE = ("id", "environment_id", "build_id", "current_build_id", "namespace_id")


@pytest.fixture(scope="module")
async def target_stack(session_directory: Path, channel_url: str) -> AsyncIterator[EmbeddedStack]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,CONDA_PACK,DOCKER_MANIFEST",
        "ENVSTORE_AUTH_PASSWORD": LOGIN_PASSWORD,
    }
    async with EmbeddedStack(session_directory / "import-target-stack", settings=settings) as stack:
        yield stack
        assert stack.permission_violations() == []


@pytest.fixture(scope="module")
async def backup_stack(session_directory: Path, channel_url: str) -> AsyncIterator[EmbeddedStack]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_AUTH_PASSWORD": LOGIN_PASSWORD,
    }
    async with EmbeddedStack(session_directory / "backup-target-stack", settings=settings) as stack:
        yield stack
        assert stack.permission_violations() == []


async def envstore(*arguments: str) -> tuple[int, str, str]:
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "envstore.launcher.cli", *arguments,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(command.communicate(), 300)
    return command.returncode or 0, stdout.decode(), stderr.decode()


async def caught_up(client: ApiClient) -> bool:
    """The read model holds every event of the stack's log."""
    status, body = await client.get("/api/v1/projection/")
    return status == 200 and body["data"]["checkpoint"] == body["data"]["stream_last_sequence"]


async def download(client: ApiClient, path: str) -> tuple[int, bytes]:
    async with client.raw("GET", path) as response:
        return response.status, await response.read()


async def image_digest(stack: EmbeddedStack, name: str) -> str | None:
    headers = {"Authorization": f"Bearer {stack.admin_token}", "Accept": "application/vnd.oci.image.manifest.v1+json"}
    async with aiohttp.ClientSession(stack.registry_url, headers=headers) as registry:
        async with registry.get(f"/v2/{name}/manifests/latest") as response:
            assert response.status == 200, await response.text()
            return response.headers["Docker-Content-Digest"]


def without_ids(document: object, builds: dict[int, int]) -> object:
    """A document with build ids mapped and the stack's own row ids left out."""
    if isinstance(document, dict):
        return {
            key: (builds.get(value, value) if key in ("build_id", "current_build_id") else without_ids(value, builds))
            for key, value in document.items()
            if key not in VOLATILE or key in ("build_id", "current_build_id")
        }
    if isinstance(document, list):
        return [without_ids(item, builds) for item in document]
    return document


async def answers(client: ApiClient, namespace: str, builds: list[int], builds_map: dict[int, int]) -> dict:
    """What the API says about the namespace, ids mapped to the source's."""
    seen: dict[str, object] = {}
    status, body = await client.get("/api/v1/environment/", params={"namespace": namespace, "size": "100"})
    assert status == 200, body
    seen["environments"] = without_ids(sorted(body["data"], key=lambda e: e["name"]), builds_map)
    seen["settings"] = (await client.get(f"/api/v1/setting/{namespace}/"))[1]["data"]
    for build_id in builds:
        status, body = await client.get(f"/api/v1/build/{build_id}/")
        assert status == 200, body
        build = body["data"]
        build["build_artifacts"] = sorted(artifact["artifact_type"] for artifact in build["build_artifacts"] or [])
        build["specification"] = build["specification"] and build["specification"]["spec"]
        seen[f"build {build_id}"] = without_ids(build, builds_map)
        status, body = await client.get(f"/api/v1/build/{build_id}/packages/", params={"size": "100"})
        seen[f"packages {build_id}"] = sorted((p["name"], p["version"]) for p in body["data"])
        seen[f"usage {build_id}"] = without_ids((await client.get(f"/api/v1/build/{build_id}/usage/"))[1]["data"], builds_map)
        seen[f"archive {build_id}"] = without_ids((await client.get(f"/api/v1/build/{build_id}/rehydration/"))[1]["data"], builds_map)
        for route in ARTIFACT_ROUTES:
            status, data = await download(client, f"/api/v1/build/{build_id}/{route}")
            seen[f"{route} {build_id}"] = (status, data if status == 200 else None)
    return seen


async def test_a_namespace_moves_with_its_history_to_another_stack(
    lifecycle_stack: EmbeddedStack, admin: ApiClient, target_stack: EmbeddedStack, tmp_path: Path
) -> None:
    namespace = fresh("moved")
    first = await completed_build(admin, namespace, "tools", ["hello 1.0.*"])
    second = await completed_build(admin, namespace, "tools", ["hello 2.1.*", "tinyjson"])
    failed = await admin.wait_for_build(await admin.submit(environment_yaml("tools", ["conflict-low", "conflict-high"]), namespace))
    assert failed["status"] == "FAILED"
    assert (await admin.request("PUT", f"/api/v1/environment/{namespace}/tools/", json={"build_id": first["id"]}))[0] == 200
    other = await completed_build(admin, namespace, "other", ["textutils"])
    archived = await completed_build(admin, namespace, "other", ["tinyjson"])
    newest = await completed_build(admin, namespace, "other", ["greeting-data"])
    assert (await admin.request("POST", f"/api/v1/build/{archived['id']}/archive/"))[0] == 200
    assert (await admin.request("DELETE", f"/api/v1/build/{other['id']}/"))[0] == 200
    assert (await admin.request("PUT", f"/api/v1/setting/{namespace}/", json={"retention_keep_builds": 3}))[0] == 200
    assert (await download(admin, f"/api/v1/build/{second['id']}/lockfile/"))[0] == 200

    async def settled() -> bool:
        usage = (await admin.get(f"/api/v1/build/{second['id']}/usage/"))[1]["data"]
        state = (await admin.get(f"/api/v1/build/{archived['id']}/rehydration/"))[1]["data"]["state"]
        deleted = {a["artifact_type"] for a in (await admin.build(other["id"]))["build_artifacts"]}
        return usage["downloads"] == 1 and state == "ARCHIVED" and "CONDA_PACK" not in deleted

    await wait_until(settled, "usage flushed, archive and deletion done", timeout_seconds=30 + 4 * USAGE_FLUSH_SECONDS)
    source_builds = [first["id"], second["id"], failed["id"], other["id"], archived["id"], newest["id"]]

    export_file = tmp_path / "moved.envstore"
    code, stdout, stderr = await envstore(
        "export", "--namespace", namespace, str(export_file), "--data-dir", str(lifecycle_stack.data_directory)
    )
    assert code == 0, stderr
    assert re.match(r"exported \d+ events and \d+ blobs \(namespace ", stdout), stdout
    code, stdout, stderr = await envstore("import", str(export_file), "--data-dir", str(target_stack.data_directory))
    assert code == 0, stderr
    mapped = {int(source): int(target) for source, target in re.findall(r"^build (\d+) -> (\d+)$", stdout, re.M)}
    assert sorted(mapped) == sorted(source_builds)

    async with ApiClient(target_stack.api_url, token=target_stack.admin_token) as target:
        # The import's events reach the read model in order; the last build is there once all are.
        await wait_until(lambda: target.get(f"/api/v1/build/{mapped[newest['id']]}/rehydration/"), "imported history applied")
        to_source = {target_id: source_id for source_id, target_id in mapped.items()}
        source_answers = await answers(admin, namespace, source_builds, {})
        target_answers = await answers(target, namespace, [mapped[b] for b in source_builds], to_source)
        for (source_key, source_value), (target_key, target_value) in zip(source_answers.items(), target_answers.items()):
            assert target_value == source_value, (source_key, target_key)
        assert await image_digest(target_stack, f"{namespace}/tools") == await image_digest(lifecycle_stack, f"{namespace}/tools")
        status, text = await target.get(
            f"/api/v1/build/{mapped[first['id']]}/diff/{mapped[second['id']]}/", params={"format": "text"}
        )
        source_text = (await admin.get(f"/api/v1/build/{first['id']}/diff/{second['id']}/", params={"format": "text"}))[1]
        assert text == source_text.replace(f"build {first['id']}", f"build {mapped[first['id']]}").replace(
            f"build {second['id']}", f"build {mapped[second['id']]}"
        )

        # The history is live: a rebuild of an imported build solves and completes here.
        status, body = await target.request("PUT", f"/api/v1/build/{mapped[second['id']]}/")
        assert status == 200, body
        rebuilt = await target.wait_for_build(body["data"]["build_id"], timeout_seconds=120)
        assert rebuilt["status"] == "COMPLETED", rebuilt["status_info"]

    code, stdout, stderr = await envstore("import", str(export_file), "--data-dir", str(target_stack.data_directory))
    assert code == 1 and "already has a history in this stack" in stderr, (stdout, stderr)
    damaged = tmp_path / "damaged.envstore"
    data = bytearray(export_file.read_bytes())
    position = data.index(b'"type"')
    data[position + 1] = ord("T")
    damaged.write_bytes(bytes(data))
    code, stdout, stderr = await envstore("import", str(damaged), "--data-dir", str(target_stack.data_directory))
    assert code == 1 and "damaged" in stderr, (stdout, stderr)


async def test_a_whole_stack_backup_restores_every_namespace_and_webhook(
    lifecycle_stack: EmbeddedStack, admin: ApiClient, backup_stack: EmbeddedStack, tmp_path: Path
) -> None:
    """Without --namespace, the export is the whole stack: every namespace, environment and build,
    and webhooks too (their ids mapped like builds')."""
    namespace = fresh("backed-up")
    build = await completed_build(admin, namespace, "tools", ["tinyjson"])
    status, body = await admin.request(
        "POST", "/api/v1/webhook/", json={"url": "http://127.0.0.1:9/hook", "namespace": namespace, "build_id": build["id"]}
    )
    assert status == 200, body
    webhook_id = body["data"]["id"]
    backup = tmp_path / "stack.envstore"
    code, stdout, stderr = await envstore("export", str(backup), "--data-dir", str(lifecycle_stack.data_directory))
    assert code == 0 and "(the whole stack)" in stdout, (stdout, stderr)
    code, stdout, stderr = await envstore("import", str(backup), "--data-dir", str(backup_stack.data_directory))
    assert code == 0, stderr
    builds = {int(source): int(target) for source, target in re.findall(r"^build (\d+) -> (\d+)$", stdout, re.M)}
    webhooks = {int(source): int(target) for source, target in re.findall(r"^webhook (\d+) -> (\d+)$", stdout, re.M)}

    async with ApiClient(backup_stack.api_url, token=backup_stack.admin_token) as restored:
        # The import's events reach the read model over several transactions: wait for the last.
        await wait_until(lambda: caught_up(restored), "every imported event applied")
        await wait_until(lambda: restored.get(f"/api/v1/webhook/{webhooks[webhook_id]}/"), "the webhook restored")
        names = lambda body: sorted(entry["name"] for entry in body["data"])  # noqa: E731
        source_namespaces = (await admin.get("/api/v1/namespace/", params={"size": "1000"}))[1]
        restored_namespaces = (await restored.get("/api/v1/namespace/", params={"size": "1000"}))[1]
        assert namespace in names(restored_namespaces) and names(restored_namespaces) == names(source_namespaces)
        source_builds = (await admin.get("/api/v1/build/", params={"size": "1000"}))[1]["data"]
        assert sorted(builds) == sorted(b["id"] for b in source_builds)
        for source in source_builds:
            target = await restored.build(builds[source["id"]])
            assert (target["status"], target["ended_on"]) == (source["status"], source["ended_on"]), source["id"]
        assert (await download(restored, f"/api/v1/build/{builds[build['id']]}/lockfile/")) == (
            await download(admin, f"/api/v1/build/{build['id']}/lockfile/")
        )
        status, body = await restored.get(f"/api/v1/webhook/{webhooks[webhook_id]}/")
        assert status == 200, body
        assert (body["data"]["url"], body["data"]["namespace"], body["data"]["build_id"]) == (
            "http://127.0.0.1:9/hook", namespace, builds[build["id"]]
        )
