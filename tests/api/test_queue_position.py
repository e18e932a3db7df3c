"""A build waiting for the solver says where it stands in the queue: its ``status_info`` while it is
QUEUED (a string conda-store's clients already show), on its own page and in build listings; once
it runs, the text goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml

NAMESPACE = "queue"


@pytest.fixture(scope="module")
async def queueing_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML",
    }
    async with EmbeddedStack(session_directory / "queueing-stack", settings=settings) as running:
        yield running


async def test_a_queued_build_shows_how_many_builds_are_ahead_of_it(queueing_stack: EmbeddedStack) -> None:
    stack = queueing_stack
    async with ApiClient(stack.api_url, token=stack.admin_token) as admin:
        # No solver: submissions wait in its queue.
        await stack.stop_service("solver")
        build_ids = [
            await admin.submit(environment_yaml(f"waiting{index}", ["tinyjson"]), NAMESPACE) for index in range(3)
        ]
        expected = ["queued: next to be solved", "queued: 1 build ahead of it", "queued: 2 builds ahead of it"]
        for build_id, text in zip(build_ids, expected, strict=True):
            build = await admin.build(build_id)
            assert (build["status"], build["status_info"]) == ("QUEUED", text)
        status, listing = await admin.get(f"/api/v1/build/?namespace={NAMESPACE}&sort_by=id")
        assert status == 200, listing
        assert [(row["id"], row["status_info"]) for row in listing["data"]] == list(zip(build_ids, expected, strict=True))

        await stack.start_service("solver")
        for build_id in build_ids:
            build = await admin.wait_for_build(build_id)
            assert (build["status"], build["status_info"]) == ("COMPLETED", None)
