"""A stack configured as an administrator would configure conda-store: the deployment's hooks
(tests/site_hooks), owner and permissions for built environments, serialized builds, and a
watched directory — shared by the tests of the settings and hooks being applied."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient

HOOKS_DIRECTORY = Path(__file__).resolve().parent.parent / "site_hooks"
NOBODY = 65534


@pytest.fixture(scope="package")
def configured_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("configured")
    (directory / "watched").mkdir()
    return directory


@pytest.fixture(scope="package")
async def configured_stack(
    session_directory: Path, channel_url: str, configured_directory: Path
) -> AsyncIterator[EmbeddedStack]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HOOKS_DIRECTORY), os.environ.get("PYTHONPATH")])),
        "ENVSTORE_VALIDATE_SPECIFICATION": "envstore_test_hooks.check_specification",
        "ENVSTORE_POST_UPDATE_ENVIRONMENT_BUILD_HOOK": "envstore_test_hooks:record_current_build",
        "ENVSTORE_TEST_HOOK_RECORD": str(configured_directory / "current-builds.jsonl"),
        "ENVSTORE_DEFAULT_UID": str(NOBODY),
        "ENVSTORE_DEFAULT_GID": str(NOBODY),
        "ENVSTORE_DEFAULT_PERMISSIONS": "750",
        "ENVSTORE_SERIALIZE_BUILDS": "true",
        "ENVSTORE_WATCH_PATHS": str(configured_directory / "watched"),
    }
    # The packager installs its own copy (as on another host): the artifacts must carry the
    # owner and permissions all the same.
    packager = {"ENVSTORE_PACKAGER_REUSE_BUILDER_PREFIX": "false"}
    async with EmbeddedStack(
        session_directory / "configured", settings=settings, service_settings={"packager": packager}
    ) as stack:
        yield stack


@pytest.fixture
async def configured_admin(configured_stack: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with ApiClient(configured_stack.api_url, token=configured_stack.admin_token) as client:
        yield client


@pytest.fixture
async def global_settings_restored(configured_admin: ApiClient) -> AsyncIterator[None]:
    """Puts back the global values a test stores through the settings API."""
    before = (await configured_admin.get("/api/v1/setting/"))[1]["data"]
    yield
    after = (await configured_admin.get("/api/v1/setting/"))[1]["data"]
    changed = {key: value for key, value in before.items() if after[key] != value}
    if changed:
        status, body = await configured_admin.request("PUT", "/api/v1/setting/", json=changed)
        assert status == 200, body
