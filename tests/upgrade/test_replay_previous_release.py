"""The log is users' data: a log recorded by release 0.1.0 (old subjects ``envstore.<type>``,
build and webhook ids equal to stream sequences) replays into today's read model with the same
answers, and today's commands work on the environments it holds.

``release-0.1.0/`` was written by ``record_release_log.py`` run from release 0.1.0's checkout."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from envstore.common.bus_permissions import SUPERUSER
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml

RECORDING = Path(__file__).parent / "release-0.1.0"
# Settings answers hold the deployment's own settings too (its channel): compare what the log stored.
STORED_SETTING_KEYS = ("conda_included_packages", "conda_default_packages")


def recorded_messages() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (RECORDING / "stream.jsonl").read_text().splitlines()]


def recorded_answers() -> dict[str, Any]:
    return json.loads((RECORDING / "answers.json").read_text())


@pytest.fixture(scope="module")
async def upgraded_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,CONDA_PACK",
        "ENVSTORE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    }
    async with EmbeddedStack(session_directory / "upgraded-stack", settings=settings) as running:
        await load_recording(running)
        yield running


async def load_recording(stack: EmbeddedStack) -> None:
    """Publish the recorded messages into the empty stream: they land at their recorded sequences.
    Importing a log is an operator's maintenance, with the superuser's credentials: no service may
    publish on release 0.1.0's subjects."""
    connection = await stack.connect_nats(SUPERUSER)
    try:
        jetstream = connection.jetstream()
        assert (await jetstream.stream_info("ENVSTORE")).state.last_seq == 0
        for message in recorded_messages():
            acknowledgement = await jetstream.publish(
                message["subject"], base64.b64decode(message["data"]), stream="ENVSTORE", headers=message["headers"]
            )
            assert acknowledgement.seq == message["sequence"]
    finally:
        await connection.close()


def comparable(path: str, answer: dict[str, Any]) -> Any:
    if "/setting/" in path and answer["status"] == 200:
        data = answer["body"]["data"]
        return {key: data[key] for key in STORED_SETTING_KEYS}
    return answer


async def test_a_release_0_1_0_log_replays_to_the_same_answers(upgraded_stack: EmbeddedStack) -> None:
    recorded = recorded_answers()
    last = recorded_messages()[-1]["sequence"]
    async with ApiClient(upgraded_stack.api_url, token=upgraded_stack.admin_token) as admin:
        await admin.wait_until("/api/v1/projection/", lambda body: body["data"]["checkpoint"] >= last)
        differences = {}
        for path, answer in recorded["answers"].items():
            status, body = await admin.get(path)
            now = comparable(path, {"status": status, "body": body})
            if now != comparable(path, answer):
                differences[path] = {"release 0.1.0": comparable(path, answer), "now": now}
        assert not differences, json.dumps(differences, indent=1, default=str)[:6000]


async def test_commands_work_on_an_upgraded_log_and_new_ids_never_reuse_old_ones(
    upgraded_stack: EmbeddedStack,
) -> None:
    recorded = recorded_answers()
    builds = recorded["builds"]
    last = recorded_messages()[-1]["sequence"]
    async with ApiClient(upgraded_stack.api_url, token=upgraded_stack.admin_token) as admin:
        await admin.wait_until("/api/v1/projection/", lambda body: body["data"]["checkpoint"] >= last)
        # Rollback to the other completed build of a migrated environment.
        status, body = await admin.request("PUT", "/api/v1/environment/team/tools/", json={"build_id": builds["tools-2"]})
        assert status == 200, body
        status, body = await admin.get("/api/v1/environment/team/tools/")
        assert body["data"]["current_build_id"] == builds["tools-2"]
        # A new build of a migrated environment: a fresh id, above every id the old release gave.
        build_id = await admin.submit(environment_yaml("tools", ["tinyjson"]), namespace="team")
        assert build_id > max(builds.values())
        build = await admin.wait_for_build(build_id)
        assert build["status"] == "COMPLETED", build["status_info"]
        status, body = await admin.get("/api/v1/environment/team/tools/")
        assert body["data"]["current_build_id"] == build_id
        # A webhook registered now gets a new id too.
        status, body = await admin.request(
            "POST", "/api/v1/webhook/", json={"url": "http://127.0.0.1:9/other", "namespace": "lab"}
        )
        assert status == 200, body
        assert body["data"]["id"] > recorded["answers"]["/api/v1/webhook/"]["body"]["data"][0]["id"]
