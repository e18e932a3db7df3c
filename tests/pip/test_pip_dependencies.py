"""A specification's ``pip:`` section, as a user sees it: resolved by uv from the index the section
names, recorded in the lockfile as conda-lock records pip packages, installed from the lock without
dependencies, and present in every artifact — the builder's environment, the conda-pack tarball, the
installer and the image. A resolution uv cannot make fails the build with uv's explanation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import aiohttp
import yaml

from envstore.common.settings import host_platform
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient
from tests.pip.conftest import WheelIndexes
from tests.registry.oci_tools import Registry, run, skopeo_copy, unpack

# The channel's python is the interpreter running the tests.
SHORT_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
PYTHON = f"python {SHORT_VERSION}.*"


def pip_environment(name: str, pip_lines: list[str], conda: tuple[str, ...] = (PYTHON, "hello")) -> str:
    document = {"name": name, "dependencies": [*conda, {"pip": pip_lines}]}
    return yaml.safe_dump(document, sort_keys=False)


async def download(stack: EmbeddedStack, path: str, target: Path) -> Path:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.admin_token}"}) as http:
        async with http.get(f"{stack.api_url}{path}") as response:
            assert response.status == 200, await response.text()
            target.write_bytes(await response.read())
    return target


def greet(prefix: Path, activated: bool = False) -> str:
    """The wheel's console script, run as a user would: in an unpacked tarball or an installed
    installer the environment is activated first (conda-pack writes pip's scripts with
    ``#!/usr/bin/env python3.X``: the environment's python is the one on PATH)."""
    environment = {**os.environ, "PATH": f"{prefix / 'bin'}:{os.environ['PATH']}"} if activated else None
    return subprocess.run(
        [str(prefix / "bin" / "demo-greet")], capture_output=True, text=True, check=True, timeout=30, env=environment
    ).stdout


async def test_pip_packages_are_locked_installed_and_in_every_artifact(
    pip_api: ApiClient, pip_stack: EmbeddedStack, wheel_indexes: WheelIndexes, tmp_path: Path
) -> None:
    specification = pip_environment("greeter", [f"--index-url {wheel_indexes.full}", "envstore-demo-greeter"])
    build = await pip_api.wait_for_build(await pip_api.submit(specification, namespace="pip"), timeout_seconds=120)
    assert build["status"] == "COMPLETED", build["status_info"]
    platform = host_platform()

    # The lockfile: each wheel as conda-lock records pip packages (manager pip, URL, sha256).
    status, lockfile = await pip_api.get(f"/api/v1/build/{build['id']}/lockfile/")
    lockfile = json.loads(lockfile) if isinstance(lockfile, str) else lockfile
    pip_entries = {entry["name"]: entry for entry in lockfile["package"] if entry["manager"] == "pip"}
    assert sorted(pip_entries) == ["envstore-demo-greeter", "envstore-demo-words"]
    greeter = pip_entries["envstore-demo-greeter"]
    assert greeter["version"] == "1.5" and greeter["platform"] == platform
    assert greeter["url"].startswith(wheel_indexes.full.removesuffix("/simple")) and greeter["url"].endswith(".whl")
    assert len(greeter["hash"]["sha256"]) == 64
    assert greeter["dependencies"] == {"envstore-demo-words": "==2.0"}
    assert pip_entries["envstore-demo-words"]["version"] == "2.0"
    assert "python" in {entry["name"] for entry in lockfile["package"] if entry["manager"] == "conda"}

    # The pinned YAML names the index and pins each package.
    status, pinned = await pip_api.get(f"/api/v1/build/{build['id']}/yaml/")
    pip_section = next(item["pip"] for item in yaml.safe_load(pinned)["dependencies"] if isinstance(item, dict))
    assert pip_section == [
        f"--index-url {wheel_indexes.full}", "envstore-demo-greeter==1.5", "envstore-demo-words==2.0"
    ]

    # The builder's environment: the wheel's script runs with the environment's python.
    environment = pip_stack.data_directory / "envs" / "pip" / "envs" / "greeter"
    assert greet(environment) == "envstore-demo-greeter 1.5\n"

    # The tarball, unpacked in a path with a space and relocated by conda-unpack.
    archive = await download(pip_stack, f"/api/v1/build/{build['id']}/archive/", tmp_path / "greeter.tar.gz")
    unpacked = tmp_path / "unpacked here"
    with tarfile.open(archive) as opened:
        opened.extractall(unpacked, filter="tar")
    subprocess.run([str(unpacked / "bin" / "python"), str(unpacked / "bin" / "conda-unpack")], check=True, timeout=60)
    assert greet(unpacked, activated=True) == "envstore-demo-greeter 1.5\n"
    words = subprocess.run(
        [str(unpacked / "bin" / "python"), "-c", "import envstore_demo_words as w; print(w.VERSION)"],
        capture_output=True, text=True, check=True,
    )
    assert words.stdout == "2.0\n"

    # The installer.
    installer = await download(pip_stack, f"/api/v1/build/{build['id']}/installer/", tmp_path / "greeter.sh")
    installed = tmp_path / "installed env"
    subprocess.run(["sh", str(installer), "-b", "-p", str(installed)], check=True, capture_output=True, timeout=120)
    assert greet(installed, activated=True) == "envstore-demo-greeter 1.5\n"

    # The image: the wheels' files under /opt/conda, their script run by the image's python.
    registry = Registry(f"{pip_stack.host}:{pip_stack.registry_port}")
    copied = skopeo_copy(registry.reference("pip/greeter"), f"oci:{tmp_path / 'layout'}:greeter", f"any:{pip_stack.admin_token}")
    assert copied.returncode == 0, copied.stderr
    rootfs = unpack(f"{tmp_path / 'layout'}:greeter", tmp_path / "bundle")
    site_packages = rootfs / "opt" / "conda" / "lib" / f"python{SHORT_VERSION}" / "site-packages"
    assert (site_packages / "envstore_demo_greeter" / "__init__.py").exists()
    assert (site_packages / "envstore_demo_words-2.0.dist-info" / "METADATA").exists()
    script = (rootfs / "opt" / "conda" / "bin" / "demo-greet").read_text()
    assert script.startswith(f"#!/opt/conda/bin/python{SHORT_VERSION}\n")
    # Its own python runs it (the rootfs has no C library: the host's is borrowed, the paths are the image's).
    image_python = run([str(rootfs / "opt" / "conda" / "bin" / "python"), str(rootfs / "opt" / "conda" / "bin" / "demo-greet")])
    assert image_python == "envstore-demo-greeter 1.5\n"


async def test_find_links_and_an_extra_index_are_used(pip_api: ApiClient, wheel_indexes: WheelIndexes) -> None:
    # --no-index with --find-links: only the flat page of wheels is read.
    flat = pip_environment("flat", ["--no-index", f"--find-links {wheel_indexes.find_links}", "envstore-demo-words<2"])
    # uv looks in extra indexes first: the words come from the extra one, the greeter (which it lacks)
    # from the main one.
    extra = pip_environment(
        "extra", [f"--index-url {wheel_indexes.full}", f"--extra-index-url {wheel_indexes.words_only}", "envstore-demo-greeter"]
    )
    flat_build = await pip_api.wait_for_build(await pip_api.submit(flat, namespace="pip"), timeout_seconds=120)
    extra_build = await pip_api.wait_for_build(await pip_api.submit(extra, namespace="pip"), timeout_seconds=120)
    assert flat_build["status"] == extra_build["status"] == "COMPLETED", (flat_build["status_info"], extra_build["status_info"])

    async def locked_urls(build_id: int) -> dict[str, str]:
        _, lockfile = await pip_api.get(f"/api/v1/build/{build_id}/lockfile/")
        lockfile = json.loads(lockfile) if isinstance(lockfile, str) else lockfile
        return {entry["name"]: entry["url"] for entry in lockfile["package"] if entry["manager"] == "pip"}

    assert list(await locked_urls(flat_build["id"])) == ["envstore-demo-words"]
    assert (await locked_urls(flat_build["id"]))["envstore-demo-words"].endswith("envstore_demo_words-1.0-py3-none-any.whl")
    urls = await locked_urls(extra_build["id"])
    assert urls["envstore-demo-words"].startswith(wheel_indexes.words_only.removesuffix("/simple"))
    assert urls["envstore-demo-greeter"].startswith(wheel_indexes.full.removesuffix("/simple"))


async def test_an_unresolvable_pip_section_fails_with_uvs_explanation(pip_api: ApiClient, wheel_indexes: WheelIndexes) -> None:
    specification = pip_environment(
        "conflicted-pip", [f"--index-url {wheel_indexes.full}", "envstore-demo-greeter", "envstore-demo-old-words"]
    )
    build = await pip_api.wait_for_build(await pip_api.submit(specification, namespace="pip"), timeout_seconds=60)
    assert build["status"] == "FAILED"
    reason = build["status_info"]
    assert "the pip dependencies cannot be resolved" in reason
    assert "envstore-demo-old-words" in reason and "envstore-demo-words<2" in reason and "unsatisfiable" in reason
    status, logs = await pip_api.get(f"/api/v1/build/{build['id']}/logs/")
    assert logs.startswith("BUILD FAILED during solve:")


async def test_pip_dependencies_without_python_fail_saying_what_to_add(pip_api: ApiClient, wheel_indexes: WheelIndexes) -> None:
    specification = pip_environment("no-python", [f"--index-url {wheel_indexes.full}", "envstore-demo-words"], conda=("hello",))
    build = await pip_api.wait_for_build(await pip_api.submit(specification, namespace="pip"), timeout_seconds=60)
    assert build["status"] == "FAILED"
    assert "add python to the specification's conda dependencies" in build["status_info"]


async def test_a_loopback_index_is_refused_unless_allowed(api: ApiClient, wheel_indexes: WheelIndexes) -> None:
    # The suite's main stack does not allow loopback: the index is refused at submission, with what to do.
    specification = pip_environment("internal-index", [f"--index-url {wheel_indexes.full}", "envstore-demo-words"])
    status, body = await api.request("POST", "/api/v1/specification/", json={"specification": specification, "namespace": "pip"})
    assert status == 400
    assert body["message"] == (
        f"pip index URL {wheel_indexes.full} is not allowed: its host does not resolve to a public address "
        "(an administrator can allow other hosts with ENVSTORE_CHANNEL_ALLOWED_HOSTS)"
    )


async def test_unsupported_pip_options_are_refused_with_the_supported_ones(api: ApiClient) -> None:
    specification = pip_environment("bad-option", ["--editable ./here", "envstore-demo-words"])
    status, body = await api.request("POST", "/api/v1/specification/", json={"specification": specification, "namespace": "pip"})
    assert status == 400
    assert "pip option '--editable' is not supported" in body["message"]
    assert "--extra-index-url, --find-links, --index-url, --no-index, --trusted-host" in body["message"]
