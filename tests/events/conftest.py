"""A stack of its own for the event subscription tests: webhooks may target 127.0.0.1 (where the
tests' receivers listen), retries are quick, and a killed delivering process's POST comes back
after 2 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient

SUBSCRIPTION_SETTINGS = {
    "ENVSTORE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "ENVSTORE_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
    "ENVSTORE_WEBHOOK_RETRY_MAX_SECONDS": "0.5",
    "ENVSTORE_WEBHOOK_ACK_WAIT_SECONDS": "2",
    "ENVSTORE_WEBHOOK_TIMEOUT_SECONDS": "5",
    "ENVSTORE_EVENTS_KEEPALIVE_SECONDS": "1",
}


@pytest.fixture(scope="package")
async def subscription_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_WORKER_ACK_WAIT_SECONDS": "3",
        **SUBSCRIPTION_SETTINGS,
    }
    async with EmbeddedStack(session_directory / "subscriptions", settings=settings) as running:
        yield running


@pytest.fixture
async def admin(subscription_stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    async with ApiClient(subscription_stack.api_url, token=subscription_stack.admin_token) as client:
        yield client
