"""Fixtures shared by the whole suite: the offline test channel and a real envstore stack
(nats-server with JetStream, PostgreSQL, every service as its own process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from envstore.common.demo_channel import make_channel
from envstore.common.settings import host_platform
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import LOGIN_PASSWORD, ApiClient
from tests.deployments import DEPLOYMENTS, Deployment


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``every_deployment`` run once per deployment (tests/deployments.py); every
    other test that needs a deployment gets the plain one, so all share its stacks."""
    if "deployment" not in metafunc.fixturenames:
        return
    every = metafunc.definition.get_closest_marker("every_deployment") is not None
    metafunc.parametrize("deployment", DEPLOYMENTS if every else DEPLOYMENTS[:1], indirect=True, scope="session")


@pytest.fixture(scope="session")
def deployment(request: pytest.FixtureRequest) -> Deployment:
    return Deployment(request.param)


@pytest.fixture(scope="session")
def session_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envstore")


@pytest.fixture(scope="session")
async def channel_url(session_directory: Path) -> str:
    return await make_channel(session_directory / "channel")


@pytest.fixture(scope="session")
async def stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        # Every build is locked for a second platform too (the lockfile shows both).
        "ENVSTORE_CONDA_SOLVE_PLATFORMS": f"{host_platform()},osx-arm64",
        # Short enough that a killed worker's message comes back quickly in crash tests.
        "ENVSTORE_WORKER_ACK_WAIT_SECONDS": "3",
        "ENVSTORE_AUTH_PASSWORD": LOGIN_PASSWORD,
    }
    async with EmbeddedStack(session_directory / "stack", settings=settings) as running:
        yield running
        # Whatever the suite made the services do, the bus refused them nothing: every subject
        # they use is in their permissions (bus_permissions).
        assert running.permission_violations() == []


@pytest.fixture
async def api(stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    async with ApiClient(stack.api_url, token=stack.admin_token) as client:
        yield client


@pytest.fixture
async def anonymous_api(stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    async with ApiClient(stack.api_url) as client:
        yield client
