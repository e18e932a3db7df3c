"""Record an event log with the release checked out now, for the upgrade test of the next one.

Run from a checkout of the release to record (``python -m tests.upgrade.record_release_log DIR``):
it starts the embedded stack on the offline demo channel, drives the REST API through every
kind of command (namespaces, role mappings v1 and v2, settings at three levels, builds that
complete, fail and are canceled, a lockfile build, a rebuild, a rollback, a description, deletes of
a build, an environment and a namespace, a webhook), then writes

- ``stream.jsonl``: every message of the stream, in order (sequence, subject, headers, payload);
- ``answers.json``: the API's answers to every read route for that state.

``tests/upgrade/test_replay_previous_release.py`` loads ``stream.jsonl`` into an empty stream,
lets the current release project it, and compares its answers with ``answers.json``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from envstore.common.demo_channel import make_channel
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml

READ_ROUTES_WITHOUT_IDS = (
    "/api/v1/namespace/?size=100",
    "/api/v1/environment/?size=100",
    "/api/v2/environment/?limit=100",
    "/api/v1/build/?size=100",
    "/api/v1/setting/",
    "/api/v1/webhook/",
)


async def drive(api: ApiClient, channel: str) -> dict[str, Any]:
    """Commands of every kind; returns the ids the answers are recorded for."""
    async def ok(method: str, path: str, **options: Any) -> Any:
        status, body = await api.request(method, path, **options)
        assert status == 200, (method, path, status, body)
        return body

    await ok("POST", "/api/v1/namespace/team/")
    await ok("POST", "/api/v1/namespace/lab/")
    await ok("POST", "/api/v1/namespace/gone/")
    await ok("PUT", "/api/v1/namespace/team/", json={"metadata_": {"owner": "ops"}, "role_mappings": {"lab/*": ["viewer"]}})
    await ok("POST", "/api/v1/namespace/team/role", json={"other_namespace": "lab", "role": "editor"})
    await ok("PUT", "/api/v1/setting/", json={"conda_included_packages": []})
    await ok("PUT", "/api/v1/setting/team/", json={"conda_default_packages": ["configlib"]})
    await ok("PUT", "/api/v1/setting/team/tools/", json={"conda_included_packages": ["configlib"]})

    builds: dict[str, int] = {}
    builds["tools-1"] = await api.submit(environment_yaml("tools", ["datakit"]), namespace="team")
    await api.wait_for_build(builds["tools-1"])
    builds["tools-2"] = await api.submit(environment_yaml("tools", ["datakit", "units"]), namespace="team")
    await api.wait_for_build(builds["tools-2"])
    await ok("PUT", "/api/v1/environment/team/tools/", json={"build_id": builds["tools-1"], "description": "rolled back"})
    builds["broken"] = await api.submit(environment_yaml("broken", ["no-such-package"]), namespace="team")
    await api.wait_for_build(builds["broken"])
    builds["lab-1"] = await api.submit(environment_yaml("notebooks", ["plotkit"]), namespace="lab")
    await api.wait_for_build(builds["lab-1"])
    body = await ok("PUT", f"/api/v1/build/{builds['lab-1']}/")
    builds["lab-rebuild"] = body["data"]["build_id"]
    await api.wait_for_build(builds["lab-rebuild"])
    builds["lab-old"] = await api.submit(environment_yaml("notebooks", ["plotkit", "units"]), namespace="lab")
    await api.wait_for_build(builds["lab-old"])
    await ok("DELETE", f"/api/v1/build/{builds['lab-1']}/")
    status, lockfile = await api.get(f"/api/v1/build/{builds['tools-2']}/lockfile/")
    assert status == 200, lockfile
    builds["locked"] = await api.submit(
        lockfile if isinstance(lockfile, str) else json.dumps(lockfile),
        namespace="lab", is_lockfile=True, environment_name="locked",
    )
    await api.wait_for_build(builds["locked"])
    builds["doomed"] = await api.submit(environment_yaml("doomed", ["configlib"]), namespace="team")
    await api.wait_for_build(builds["doomed"])
    await ok("DELETE", "/api/v1/environment/team/doomed/")
    builds["gone"] = await api.submit(environment_yaml("old", ["configlib"]), namespace="gone")
    await api.wait_for_build(builds["gone"])
    await ok("DELETE", "/api/v1/namespace/gone/")
    # A cancel request for a build that completed: recorded, changes nothing.
    builds["canceled"] = await api.submit(environment_yaml("quick", ["configlib"]), namespace="lab")
    await ok("PUT", f"/api/v1/build/{builds['canceled']}/cancel/")
    await api.wait_for_build(builds["canceled"])
    await ok("POST", "/api/v1/webhook/", json={"url": "http://127.0.0.1:9/hook", "namespace": "team", "description": "ci"})
    return builds


async def answers(api: ApiClient, builds: dict[str, int]) -> dict[str, Any]:
    paths = list(READ_ROUTES_WITHOUT_IDS)
    for build_id in sorted(set(builds.values())):
        paths += [f"/api/v1/build/{build_id}/", f"/api/v1/build/{build_id}/packages/?size=100"]
    for namespace, environment in (("team", "tools"), ("team", "broken"), ("lab", "notebooks"), ("lab", "locked"), ("lab", "quick")):
        paths += [f"/api/v1/environment/{namespace}/{environment}/", f"/api/v1/setting/{namespace}/{environment}/"]
    for namespace in ("team", "lab"):
        paths += [f"/api/v1/namespace/{namespace}/", f"/api/v1/namespace/{namespace}/roles", f"/api/v1/setting/{namespace}/"]
    recorded = {}
    for path in paths:
        status, body = await api.get(path)
        recorded[path] = {"status": status, "body": body}
    return {"builds": builds, "answers": recorded}


async def stream_messages(nats_url: str) -> list[dict[str, Any]]:
    connection = await nats.connect(nats_url)
    try:
        jetstream = connection.jetstream()
        last = (await jetstream.stream_info("ENVSTORE")).state.last_seq
        subscription = await jetstream.subscribe(
            "envstore.>", stream="ENVSTORE", ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        messages = []
        async for message in subscription.messages:
            headers = {key: value for key, value in (message.headers or {}).items() if key != "traceparent"}
            messages.append({
                "sequence": message.metadata.sequence.stream,
                "subject": message.subject,
                "headers": headers,
                "data": base64.b64encode(message.data).decode(),
            })
            if message.metadata.sequence.stream >= last:
                break
        await subscription.unsubscribe()
        return messages
    finally:
        await connection.close()


async def record(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    work = directory / "work"
    channel = await make_channel(work / "channel")
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,CONDA_PACK",
        "ENVSTORE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    }
    async with EmbeddedStack(work / "stack", settings=settings) as stack:
        async with ApiClient(stack.api_url, token=stack.admin_token) as api:
            builds = await drive(api, channel)
            # Let the last events (deletions' outcomes, webhook attempts) reach the read model.
            await asyncio.sleep(3)
            recorded = await answers(api, builds)
        messages = await stream_messages(stack.nats.url)
    with open(directory / "stream.jsonl", "w") as out:
        for message in messages:
            out.write(json.dumps(message, sort_keys=True) + "\n")
    (directory / "answers.json").write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(messages)} events and {len(recorded['answers'])} answers into {directory}")


if __name__ == "__main__":
    asyncio.run(record(Path(sys.argv[1])))
