"""One envstore stack for the lifecycle tests (usage, archive and rehydration, garbage collection):
every build makes an image, usage is flushed every fraction of a second so tests see it soon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import LOGIN_PASSWORD, ApiClient

USAGE_FLUSH_SECONDS = 0.5


@pytest.fixture(scope="package")
async def lifecycle_stack(session_directory: Path, channel_url: str) -> AsyncIterator[EmbeddedStack]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,CONDA_PACK,DOCKER_MANIFEST",
        "ENVSTORE_USAGE_FLUSH_SECONDS": str(USAGE_FLUSH_SECONDS),
        "ENVSTORE_AUTH_PASSWORD": LOGIN_PASSWORD,
        # Webhooks of these tests point at loopback (never at a real host).
        "ENVSTORE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    }
    async with EmbeddedStack(session_directory / "lifecycle-stack", settings=settings) as stack:
        yield stack
        # Every new event type's publisher holds the grant for it (bus_permissions).
        assert stack.permission_violations() == []


@pytest.fixture
async def admin(lifecycle_stack: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with ApiClient(lifecycle_stack.api_url, token=lifecycle_stack.admin_token) as client:
        yield client


async def completed_build(admin: ApiClient, namespace: str, name: str, dependencies: list[str]) -> dict:
    from tests.api_client import environment_yaml

    build = await admin.wait_for_build(await admin.submit(environment_yaml(name, dependencies), namespace), timeout_seconds=120)
    assert build["status"] == "COMPLETED", build["status_info"]
    return build
