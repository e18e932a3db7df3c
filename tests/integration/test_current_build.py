"""The current build changes last: only when a build is COMPLETED with every artifact it asked
for. A packaging failure or a cancel leaves the environment's current build — and its
``<store>/<namespace>/envs/<name>`` link — where they were; a rollback moves both."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml

NAMESPACE = "current"
ENVIRONMENT = "switched"


@pytest.fixture(scope="module")
async def switching_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML",
        # An image cannot be made here: a build that asks for one fails at packaging.
        "ENVSTORE_IMAGE_BASE": f"oci:{session_directory / 'no-such-base-image'}",
    }
    async with EmbeddedStack(session_directory / "switching-stack", settings=settings) as running:
        yield running


def linked_build_key(stack: EmbeddedStack) -> str:
    link = stack.data_directory / "envs" / NAMESPACE / "envs" / ENVIRONMENT
    return Path(os.readlink(link)).name


async def current_build_id(admin: ApiClient) -> int:
    status, body = await admin.get(f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/")
    assert status == 200, body
    return body["data"]["current_build_id"]


def links_to_build(stack: EmbeddedStack, build_id: int) -> bool:
    # Build keys (v2) are <spec sha256[:8]>-<time>-<build id>-<environment>.
    return linked_build_key(stack).split("-")[2] == str(build_id)


async def wait_for_link_to(stack: EmbeddedStack, build_id: int, timeout_seconds: float = 10) -> None:
    """The builder switches the link when it handles the event: wait for that (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while not links_to_build(stack, build_id):
        assert asyncio.get_running_loop().time() < deadline, f"envs/{ENVIRONMENT} does not point at build {build_id}"
        await asyncio.sleep(0.05)


async def test_only_a_completed_build_moves_the_current_build_and_its_link(switching_stack: EmbeddedStack) -> None:
    stack = switching_stack
    async with ApiClient(stack.api_url, token=stack.admin_token) as admin:
        first = await admin.wait_for_build(await admin.submit(environment_yaml(ENVIRONMENT, ["tinyjson"]), NAMESPACE))
        assert first["status"] == "COMPLETED", first["status_info"]
        second = await admin.wait_for_build(await admin.submit(environment_yaml(ENVIRONMENT, ["configlib"]), NAMESPACE))
        assert second["status"] == "COMPLETED", second["status_info"]
        assert await current_build_id(admin) == second["id"]
        await wait_for_link_to(stack, second["id"])
        second_key = linked_build_key(stack)

        # A packaging failure: the build ends FAILED with the artifact's reason; nothing moves.
        status, body = await admin.request(
            "PUT", f"/api/v1/setting/{NAMESPACE}/{ENVIRONMENT}/", json={"build_artifacts": ["LOCKFILE", "YAML", "DOCKER_MANIFEST"]}
        )
        assert status == 200, body
        failed = await admin.wait_for_build(await admin.submit(environment_yaml(ENVIRONMENT, ["units"]), NAMESPACE))
        assert failed["status"] == "FAILED"
        assert "DOCKER_MANIFEST" in failed["status_info"], failed["status_info"]
        assert await current_build_id(admin) == second["id"]
        assert linked_build_key(stack) == second_key
        status, log = await admin.get(f"/api/v1/build/{failed['id']}/logs/")
        assert status == 200 and "DOCKER_MANIFEST" in log, log

        # A cancel (the solver is down, so the build cannot finish first): nothing moves.
        status, body = await admin.request(
            "PUT", f"/api/v1/setting/{NAMESPACE}/{ENVIRONMENT}/", json={"build_artifacts": ["LOCKFILE", "YAML"]}
        )
        assert status == 200, body
        await stack.stop_service("solver")
        try:
            queued = await admin.submit(environment_yaml(ENVIRONMENT, ["textutils"]), NAMESPACE)
            status, body = await admin.request("PUT", f"/api/v1/build/{queued}/cancel/")
            assert status == 200, body
            canceled = await admin.wait_for_build(queued)
            assert canceled["status"] == "CANCELED"
        finally:
            await stack.start_service("solver")
        # The restarted solver sees the submission and leaves the canceled build alone.
        after = await admin.wait_for_build(await admin.submit(environment_yaml(ENVIRONMENT, ["hello"]), NAMESPACE))
        assert after["status"] == "COMPLETED", after["status_info"]
        assert (await admin.build(queued))["status"] == "CANCELED"

        # A rollback moves both, to a completed build.
        status, body = await admin.request(
            "PUT", f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/", json={"build_id": first["id"]}
        )
        assert status == 200, body
        assert await current_build_id(admin) == first["id"]
        status, body = await admin.request(
            "PUT", f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/", json={"build_id": failed["id"]}
        )
        assert status == 400, "a failed build cannot become current"
        await admin.wait_until(
            f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/", lambda body: body["data"]["current_build_id"] == first["id"]
        )
        await wait_for_link_to(stack, first["id"])
