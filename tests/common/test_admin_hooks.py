"""conda-store's admin hooks, named by dotted path: ``validate_specification`` (refuses with its own
message as the 400, or rewrites the specification built) wherever a specification is submitted
(the API, watched files), and ``post_update_environment_build_hook`` (told each time an
environment's current build changes). The hooks are tests/site_hooks/envstore_test_hooks.py."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml


async def test_a_refusal_of_the_check_is_the_submitters_400(configured_admin: ApiClient) -> None:
    status, body = await configured_admin.request(
        "POST",
        "/api/v1/specification/",
        json={"namespace": "hooked", "specification": environment_yaml("forbidden-tools", ["tinyjson"])},
    )
    assert status == 400
    assert body == {
        "status": "error",
        "message": "environment names starting with 'forbidden-' are reserved (hooked); choose another name",
    }
    assert (await configured_admin.get("/api/v1/environment/hooked/forbidden-tools/"))[0] == 404


async def test_a_specification_rewritten_by_the_check_is_what_is_built(configured_admin: ApiClient) -> None:
    build_id = await configured_admin.submit(environment_yaml("stamped-tools", ["textutils"]), namespace="hooked")
    build = await configured_admin.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    assert build["specification"]["spec"]["dependencies"] == ["textutils", "tinyjson"]
    packages = (await configured_admin.get(f"/api/v1/build/{build_id}/packages/"))[1]["data"]
    assert sorted(package["name"] for package in packages) == ["textutils", "tinyjson"]
    _, environment = await configured_admin.get("/api/v1/environment/hooked/stamped-tools/")
    assert environment["data"]["description"] == "checked by the site hook"


async def test_a_check_that_breaks_is_a_500_with_no_internals(
    configured_stack: EmbeddedStack, configured_admin: ApiClient
) -> None:
    status, body = await configured_admin.request(
        "POST",
        "/api/v1/specification/",
        json={"namespace": "hook-bug", "specification": environment_yaml("anything", ["tinyjson"])},
    )
    assert status == 500
    assert body["message"] == (
        "the server's specification check failed; nothing was submitted. Tell the administrator (details in its log)"
    )
    assert "KeyError" not in body["message"]
    log = (configured_stack.data_directory / "logs" / "api.log").read_text()
    assert "ENVSTORE_VALIDATE_SPECIFICATION=envstore_test_hooks.check_specification failed: KeyError" in log
    assert (await configured_admin.get("/api/v1/environment/hook-bug/anything/"))[0] == 404


async def test_watched_files_pass_the_same_check(configured_admin: ApiClient, configured_directory: Path) -> None:
    path = configured_directory / "watched" / "reserved.yaml"
    path.write_text(environment_yaml("forbidden-watched", ["tinyjson"]))
    deadline = time.monotonic() + 30
    while True:
        status, page = await configured_admin.get("/api/v1/events/", params={"type": "watched_file.rejected"})
        assert status == 200, page
        reasons = [event["event"]["reason"] for event in page["data"] if event["event"]["path"] == str(path)]
        if reasons:
            break
        assert time.monotonic() < deadline, "the refused file was not reported"
        await asyncio.sleep(0.05)
    assert reasons == ["environment names starting with 'forbidden-' are reserved (filesystem); choose another name"]


async def test_the_post_update_hook_hears_every_change_of_the_current_build(
    configured_stack: EmbeddedStack, configured_admin: ApiClient, configured_directory: Path
) -> None:
    record = configured_directory / "current-builds.jsonl"
    first = await configured_admin.wait_for_build(
        await configured_admin.submit(environment_yaml("followed", ["tinyjson"]), namespace="hooked")
    )
    second = await configured_admin.wait_for_build(
        await configured_admin.submit(environment_yaml("followed", ["textutils"]), namespace="hooked")
    )
    assert (first["status"], second["status"]) == ("COMPLETED", "COMPLETED")
    status, body = await configured_admin.request(
        "PUT", "/api/v1/environment/hooked/followed/", json={"build_id": first["id"]}
    )
    assert status == 200, body

    async def changes() -> list[dict]:
        deadline = time.monotonic() + 30
        while True:
            lines = record.read_text().splitlines() if record.exists() else []
            found = [json.loads(line) for line in lines if json.loads(line)["environment"] == "followed"]
            if len(found) >= 3:
                return found
            assert time.monotonic() < deadline, f"the hook was told {found}"
            await asyncio.sleep(0.05)

    told = await changes()
    assert [int(change["build_id"]) for change in told] == [first["id"], second["id"], first["id"]]
    link = configured_stack.data_directory / "envs" / "hooked" / "envs" / "followed"
    for change in told:
        assert change["namespace"] == "hooked"
        assert change["environment_path"] == str(link)
        assert Path(change["prefix"]).parent == link.parent.parent
    # Told after the link moved: it points at the last build the hook heard of.
    assert os.readlink(link) == told[-1]["prefix"]
