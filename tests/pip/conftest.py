"""One stack for environments with pip dependencies: a channel that holds a ``python`` package made
from the interpreter running the tests, two local wheel indexes served over HTTP on loopback (the
full one, and one with only ``envstore-demo-words``), and loopback allowed for them explicitly
(``ENVSTORE_CHANNEL_ALLOWED_HOSTS``), as an administrator allows an internal index."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from envstore.common.demo_channel import make_channel
from envstore.common.demo_channel.wheel_index import DEMO_PROJECTS, build_wheels, serve_wheel_index
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient


@dataclass(frozen=True)
class WheelIndexes:
    full: str  # http://127.0.0.1:<port>/simple: every demo wheel
    words_only: str  # only envstore-demo-words' wheels

    @property
    def find_links(self) -> str:
        """The full index's flat page of wheels."""
        return self.full.removesuffix("/simple") + "/files/"


@pytest.fixture(scope="package")
async def wheel_indexes(session_directory: Path) -> AsyncIterator[WheelIndexes]:
    full = session_directory / "wheels"
    await build_wheels(DEMO_PROJECTS, full)
    words = session_directory / "wheels-words-only"
    words.mkdir()
    for wheel in full.glob("envstore_demo_words-*.whl"):
        shutil.copy(wheel, words)
    async with serve_wheel_index(full) as full_url, serve_wheel_index(words) as words_url:
        yield WheelIndexes(full_url, words_url)


@pytest.fixture(scope="package")
async def python_channel_url(session_directory: Path) -> str:
    return await make_channel(session_directory / "python-channel", host_python=True)


@pytest.fixture(scope="package")
async def pip_stack(session_directory: Path, python_channel_url: str, wheel_indexes: WheelIndexes) -> AsyncIterator[EmbeddedStack]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": python_channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": python_channel_url,
        "ENVSTORE_CHANNEL_ALLOWED_HOSTS": "127.0.0.1",
    }
    async with EmbeddedStack(session_directory / "pip-stack", settings=settings) as stack:
        yield stack


@pytest.fixture
async def pip_api(pip_stack: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with ApiClient(pip_stack.api_url, token=pip_stack.admin_token) as client:
        yield client
