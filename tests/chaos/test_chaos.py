"""Chaos: a stack with 3 NATS nodes and 2 replicas of every service, S3 storage, 50 concurrent
builds of distinct environments; while they run, a loop SIGKILLs a random service replica every
few seconds, kills one NATS node (and brings it back), and restarts PostgreSQL and the S3 server
once each. Afterwards every accepted build has ended (COMPLETED, FAILED with a reason, or
CANCELED), every effect is in the log exactly once, every artifact exists once, the read model
equals a fresh replay, and the registry serves every image it announced."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import TERMINAL, ApiClient, environment_yaml
from tests.chaos.faults import chaos, every_fault_caused
from tests.chaos.invariants import answers_checksum, duplicated_effects, images_not_served, unfinished_builds
from tests.replay import rebuild_read_model
from tests.stream_reader import stream_events

pytestmark = pytest.mark.faults

BUILDS = 50
NAMESPACES = ("chaos-a", "chaos-b")
PACKAGES = (["tinyjson"], ["configlib"], ["textutils"], ["hello"], ["units"], ["tinyjson", "configlib"])
ARTIFACTS = ("LOCKFILE", "YAML", "DOCKER_MANIFEST")


@pytest.fixture(scope="module")
async def chaos_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": ",".join(ARTIFACTS),
        "ENVSTORE_STORAGE_BACKEND": "s3",
        # A killed worker's message comes back soon; long enough to outlast a NATS election.
        "ENVSTORE_WORKER_ACK_WAIT_SECONDS": "10",
        "ENVSTORE_WORKER_MAX_ATTEMPTS": "5",
    }
    async with EmbeddedStack(session_directory / "chaos", settings=settings, replicas=2, nats_nodes=3) as stack:
        yield stack


async def submit_until_accepted(api_url: str, token: str, namespace: str, specification: str) -> int:
    """What a careful client does while replicas die: retry with one Idempotency-Key until answered."""
    key = str(uuid.uuid4())
    deadline = time.monotonic() + 120
    while True:
        try:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key}) as http:
                async with http.post(
                    f"{api_url}/api/v1/specification/", json={"namespace": namespace, "specification": specification}
                ) as response:
                    if response.status == 200:
                        return (await response.json())["data"]["build_id"]
                    assert response.status >= 500, await response.text()  # a 4xx would be our mistake
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        assert time.monotonic() < deadline, "the submission was never accepted"
        await asyncio.sleep(0.2)


async def test_fifty_builds_under_chaos_end_once_and_the_read_model_equals_a_replay(chaos_stack: EmbeddedStack) -> None:
    stack = chaos_stack
    token = stack.admin_token
    stop, faults = asyncio.Event(), []
    chaos_task = asyncio.create_task(chaos(stack, stop, faults))
    try:
        build_ids = await asyncio.gather(*(
            submit_until_accepted(
                stack.api_url, token, NAMESPACES[index % 2], environment_yaml(f"env-{index}", PACKAGES[index % len(PACKAGES)])
            )
            for index in range(BUILDS)
        ))
        # Chaos goes on while they build, then stops; every build must end, bounded.
        async with ApiClient(stack.api_url, token=token) as api:
            deadline = time.monotonic() + 240
            while True:
                try:
                    # Until every build ended and every kind of fault happened.
                    if not await unfinished_builds(api, build_ids) and every_fault_caused(stack, faults):
                        break
                except (aiohttp.ClientError, AssertionError):
                    pass  # an API replica died under us
                if time.monotonic() > deadline - 120:
                    stop.set()  # enough chaos: the rest must finish
                assert time.monotonic() < deadline, f"builds left unfinished: {await unfinished_builds(api, build_ids)}"
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        await chaos_task
    print("\n".join(faults))
    assert len(set(build_ids)) == BUILDS, "a submission made two builds"
    assert any("nats" in fault for fault in faults) and any("PostgreSQL" in fault for fault in faults)
    assert any("S3" in fault for fault in faults)
    await stack.wait_until_ready(while_restarting=True)

    async with ApiClient(stack.api_url, token=token) as api:
        builds = [await api.build(build_id) for build_id in build_ids]
        statuses = collections.Counter(build["status"] for build in builds)
        print("outcomes:", dict(statuses))
        assert set(statuses) <= set(TERMINAL)
        for build in builds:
            if build["status"] == "FAILED":
                assert build["status_info"], build
        assert statuses["COMPLETED"] >= BUILDS // 2, statuses

        # Every effect once in the log; every artifact once per completed build.
        assert duplicated_effects(await stream_events(stack), build_ids) == {}
        for build in builds:
            if build["status"] == "COMPLETED":
                kinds = collections.Counter(artifact["artifact_type"] for artifact in build["build_artifacts"])
                assert set(kinds) == {*ARTIFACTS, "LOGS"} and set(kinds.values()) == {1}, build

        # The registry serves every image.
        images = []
        for build in builds:
            if build["status"] == "COMPLETED":
                row = await api.get(f"/api/v1/build/{build['id']}/docker/")
                assert row[0] == 200, row
                repository, _, tag = row[1].split("/", 1)[1].rpartition(":")
                images.append((repository, tag))
        assert await images_not_served(stack.registry_url, token, images) == []

        # The read model equals a fresh replay.
        before, _ = await answers_checksum(api, list(NAMESPACES), build_ids)
    await rebuild_read_model(stack)
    async with ApiClient(stack.api_url, token=token) as api:
        after, _ = await answers_checksum(api, list(NAMESPACES), build_ids)
    assert after == before
