"""conda-store's own CLI (``pip install conda-store``), unchanged, against a real envstore stack:
every command a user runs, with each of its three auth modes (none, token, basic)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conda_lock.lockfile import parse_conda_lock_file
from yarl import URL

from envstore.common.demo_channel import UNSATISFIABLE_SPEC
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import LOGIN_PASSWORD, ApiClient, environment_yaml
from tests.deployments import Deployment

# The same tests at the root, under /conda-store, and behind a TLS-terminating proxy.
pytestmark = pytest.mark.every_deployment

AUTH_MODES = ("none", "token", "basic")
BASIC_USER = "cli-user"
# What the demo channel's ``hello`` prints, once its prefix is known.
HELLO_LINE = "hello 2.1 prefix={prefix} greeting-data=2.0"
CLI_TIMEOUT_SECONDS = 180  # a guard against a hung client, not a measurement
JWT = re.compile(r"^[\w-]+\.[\w-]+\.[\w-]+$")


@dataclass
class World:
    """The environments the CLI is pointed at (built before any test runs)."""

    greeter: int  # default/greeter: hello; readable anonymously (default/* is public)
    tools: int  # team/tools: hello and tinyjson
    text: int  # team/text: textutils, no hello
    broken: int  # team/broken: unsatisfiable, FAILED
    names: dict[int, str] = field(default_factory=dict)  # build id -> "namespace/environment"


@pytest.fixture(scope="module")
async def cli_stack(tmp_path_factory: pytest.TempPathFactory, channel_url: str, deployment: Deployment):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,LOGS,CONDA_PACK",
        "ENVSTORE_AUTH_PASSWORD": LOGIN_PASSWORD,
        # The basic-auth user is an administrator, as every login is with conda-store's default backend.
        "ENVSTORE_AUTH_ADMIN_USERS": BASIC_USER,
    }
    async with deployment.stack(tmp_path_factory.mktemp("cli-stack"), settings) as running:
        yield running


@pytest.fixture(scope="module")
async def admin(cli_stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    async with ApiClient(cli_stack.api_url, token=cli_stack.admin_token) as client:
        yield client


@pytest.fixture(scope="module")
async def world(admin: ApiClient) -> World:
    submitted = {
        "default/greeter": ["hello 2.1.*"],
        "team/tools": ["hello 2.1.*", "tinyjson"],
        "team/text": ["textutils"],
        "team/broken": list(UNSATISFIABLE_SPEC),
    }
    ids = {}
    for name, dependencies in submitted.items():
        namespace, environment = name.split("/")
        ids[name] = await admin.submit(environment_yaml(environment, dependencies), namespace=namespace)
    for name, build_id in ids.items():
        build = await admin.wait_for_build(build_id)
        if name == "team/broken":
            assert build["status"] == "FAILED", build
        else:
            assert build["status"] == "COMPLETED", build["status_info"]
            await admin.wait_for_artifacts(build_id, {"LOCKFILE", "YAML", "CONDA_PACK"})
    return World(
        greeter=ids["default/greeter"],
        tools=ids["team/tools"],
        text=ids["team/text"],
        broken=ids["team/broken"],
        names={build_id: name for name, build_id in ids.items()},
    )


def conda_store_executable() -> str:
    beside_python = Path(sys.executable).parent / "conda-store"
    found = str(beside_python) if beside_python.exists() else shutil.which("conda-store")
    assert found, "conda-store's CLI is missing: pip install conda-store"
    return found


@dataclass
class CondaStoreCli:
    """The ``conda-store`` command, configured through its environment variables as users do."""

    url: str
    auth: str
    token: str | None
    temporary_directory: Path
    client_environment: dict[str, str] = field(default_factory=dict)  # e.g. trust in a proxy's certificate

    def environment(self, **overrides: str) -> dict[str, str]:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("CONDA_STORE_")}
        environment.update(self.client_environment)
        environment.update(
            {
                "CONDA_STORE_URL": self.url,
                "CONDA_STORE_AUTH": self.auth,
                # `run` caches archives under $TMPDIR/conda-store/<build id>; keep them per test.
                "TMPDIR": str(self.temporary_directory),
                # `run` executes the archive's bin/conda-unpack, whose shebang is `/usr/bin/env python`.
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}",
            }
        )
        if self.auth == "token":
            environment["CONDA_STORE_TOKEN"] = self.token or ""
        if self.auth == "basic":
            environment["CONDA_STORE_USERNAME"] = BASIC_USER
            environment["CONDA_STORE_PASSWORD"] = LOGIN_PASSWORD
        environment.update(overrides)
        return environment

    async def run(self, *arguments: str, cwd: Path | None = None, **overrides: str) -> subprocess.CompletedProcess[str]:
        command = [conda_store_executable(), *arguments]
        return await asyncio.to_thread(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
            cwd=cwd or self.temporary_directory,
            env=self.environment(**overrides),
            timeout=CLI_TIMEOUT_SECONDS,
        )

    async def ok(self, *arguments: str, cwd: Path | None = None, **overrides: str) -> str:
        """Run a command that must succeed; its standard output."""
        result = await self.run(*arguments, cwd=cwd, **overrides)
        assert result.returncode == 0, (
            f"conda-store {' '.join(arguments)} (auth {self.auth}) exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result.stdout

    async def json(self, *arguments: str) -> list[dict]:
        return json.loads(await self.ok(*arguments, "--output", "json"))


@pytest.fixture(params=AUTH_MODES)
def cli(request: pytest.FixtureRequest, cli_stack: EmbeddedStack, deployment: Deployment, tmp_path: Path) -> CondaStoreCli:
    # Basic auth keeps the login cookie in aiohttp's cookie jar, which refuses cookies from
    # IP-address hosts: use the name, as users do. The URL includes the prefix, as conda-store's
    # CLI requires.
    url = str(URL(cli_stack.api_url).with_host("localhost"))
    return CondaStoreCli(url, request.param, cli_stack.admin_token, tmp_path, deployment.client_environment(cli_stack))


def authenticated(cli: CondaStoreCli) -> bool:
    return cli.auth != "none"


# --- identity ------------------------------------------------------------------------------------


async def test_info_shows_namespace_authentication_and_permissions(cli: CondaStoreCli) -> None:
    output = await cli.ok("info")

    primary = {"none": "default", "token": "default", "basic": BASIC_USER}[cli.auth]
    assert f"Default namespace is {primary}" in output
    assert f"Authenticated {authenticated(cli)}" in output
    assert "Permissions" in output and "environment::read" in output
    if authenticated(cli):
        # The admin token and the admin-listed user's login both hold */*: admin.
        assert "namespace::delete" in output and "setting::update" in output
    else:
        assert "namespace::create" not in output


async def test_token_prints_a_token_that_the_cli_can_use(cli: CondaStoreCli) -> None:
    token = await cli.ok("token")

    assert JWT.match(token), f"not a JWT (or not alone on stdout): {token!r}"
    # As conda-store's own smoke test does: export CONDA_STORE_TOKEN=$(conda-store token).
    output = await cli.ok("info", CONDA_STORE_AUTH="token", CONDA_STORE_TOKEN=token)
    primary = BASIC_USER if cli.auth == "basic" else "default"
    assert f"Default namespace is {primary}" in output
    assert "Authenticated True" in output


async def test_token_with_namespace_expiration_and_permission(cli: CondaStoreCli, world: World) -> None:
    token = await cli.ok(
        "token", "--namespace", "default", "--expiration", "600", "--permission", "default/*:viewer"
    )

    assert JWT.match(token), token
    output = await cli.ok("list", "namespace", "--output", "json", CONDA_STORE_AUTH="token", CONDA_STORE_TOKEN=token)
    assert [namespace["name"] for namespace in json.loads(output)] == ["default"]


# --- listings ------------------------------------------------------------------------------------


async def test_list_namespace(cli: CondaStoreCli, world: World) -> None:
    table = await cli.ok("list", "namespace")
    rows = await cli.json("list", "namespace")

    assert "Namespaces" in table and "default" in table
    names = sorted(row["name"] for row in rows)
    assert names == (["default", "team"] if authenticated(cli) else ["default"])
    assert all(isinstance(row["id"], int) for row in rows)


async def test_list_environment_with_package_status_and_artifact_filters(cli: CondaStoreCli, world: World) -> None:
    table = await cli.ok("list", "environment", "--package", "hello", "--status", "COMPLETED")
    rows = await cli.json(
        "list", "environment", "--package", "hello", "--status", "COMPLETED", "--artifact", "CONDA_PACK"
    )

    assert "Environments" in table and "greeter" in table
    listed = {f"{row['namespace']['name']}/{row['name']}" for row in rows}
    assert "default/greeter" in listed
    assert ("team/tools" in listed) == authenticated(cli)
    assert not listed & {"team/text", "team/broken"}, "filtered environments listed"
    if not authenticated(cli):
        assert all(name.startswith("default/") for name in listed), listed
    failed = await cli.json("list", "environment", "--status", "FAILED")
    assert {f"{row['namespace']['name']}/{row['name']}" for row in failed} == (
        {"team/broken"} if authenticated(cli) else set()
    )


async def test_list_build_with_filters(cli: CondaStoreCli, world: World) -> None:
    table = await cli.ok("list", "build")
    rows = await cli.json("list", "build", "--status", "COMPLETED", "--artifact", "CONDA_PACK", "--package", "hello")

    assert "Builds" in table
    listed = {row["id"] for row in rows}
    assert world.greeter in listed
    assert (world.tools in listed) == authenticated(cli)
    assert not listed & {world.text, world.broken}, "filtered builds listed"
    assert {row["status"] for row in rows} == {"COMPLETED"}
    assert all(row["size"].endswith("B") for row in rows)  # the CLI formats sizes: "6.6KiB"
    failed = {row["id"] for row in await cli.json("list", "build", "--status", "FAILED")}
    assert failed == ({world.broken} if authenticated(cli) else set())


# --- waiting for builds and artifacts ------------------------------------------------------------


async def test_wait_for_build_lockfile_yaml_and_archive(cli: CondaStoreCli, admin: ApiClient) -> None:
    environment = f"waiting-{cli.auth}"
    build_id = await admin.submit(environment_yaml(environment, ["hello 2.1.*"]), namespace="default")
    polling = ("--interval", "1", "--timeout", "120")

    # Started right after submitting: the CLI polls until the archive is there.
    await cli.ok("wait", str(build_id), "--artifact", "archive", *polling)
    assert "CONDA_PACK" in artifact_types(await admin.build(build_id))
    await cli.ok("wait", f"default/{environment}", *polling)
    assert (await admin.build(build_id))["status"] == "COMPLETED"
    await cli.ok("wait", f"default/{environment}:{build_id}", "--artifact", "lockfile", *polling)
    await cli.ok("wait", str(build_id), "--artifact", "yaml", *polling)
    assert {"LOCKFILE", "YAML"} <= artifact_types(await admin.build(build_id))


async def test_wait_reports_a_failed_build(cli: CondaStoreCli, world: World) -> None:
    if not authenticated(cli):
        # Anonymous callers cannot read team/broken: the CLI says so.
        result = await cli.run("wait", str(world.broken), "--interval", "1")
        assert result.returncode == 1
        assert f"Error getting build {world.broken}" in result.stderr
        return
    result = await cli.run("wait", "team/broken", "--interval", "1")
    assert result.returncode == 1
    assert f"Build {world.broken} failed" in result.stderr


def artifact_types(build: dict) -> set[str]:
    return {artifact["artifact_type"] for artifact in build["build_artifacts"] or []}


# --- downloading artifacts -----------------------------------------------------------------------


async def test_download_lockfile_yaml_and_archive(cli: CondaStoreCli, world: World, tmp_path: Path) -> None:
    build_id = world.greeter

    lockfile_path = await cli.ok("download", str(build_id), "--artifact", "lockfile", cwd=tmp_path)
    yaml_path = await cli.ok("download", "default/greeter", "--artifact", "yaml", cwd=tmp_path)
    archive_path = await cli.ok("download", f"default/greeter:{build_id}", "--artifact", "archive", cwd=tmp_path)

    # The CLI prints the absolute path of what it wrote, with no newline.
    assert lockfile_path == str(tmp_path / f"build-{build_id}.lock")
    assert yaml_path == str(tmp_path / f"build-{build_id}.yaml")
    assert archive_path == str(tmp_path / f"build-{build_id}.tar.gz")

    lockfile = parse_conda_lock_file(Path(lockfile_path))
    assert {"hello", "libhello", "greeting-data"} <= {package.name for package in lockfile.package}
    exported = yaml.safe_load(Path(yaml_path).read_text())
    assert exported["name"] == "greeter"
    assert any(str(dependency).startswith("hello=2.1") for dependency in exported["dependencies"])
    with tarfile.open(archive_path, "r:gz") as archive:
        members = set(archive.getnames())
    assert {"bin/hello", "bin/activate", "bin/conda-unpack"} <= members


async def test_download_to_a_chosen_file_name(cli: CondaStoreCli, world: World, tmp_path: Path) -> None:
    target = tmp_path / "greeter-lock.yml"

    printed = await cli.ok("download", "default/greeter", "--output-filename", str(target), cwd=tmp_path)

    assert printed == str(target)
    assert parse_conda_lock_file(target).package


# --- running a program in an environment ---------------------------------------------------------


async def test_run_a_program_from_the_environment(cli: CondaStoreCli, world: World) -> None:
    cache = cli.temporary_directory / "conda-store" / str(world.greeter)

    first = await cli.ok("run", "default/greeter", "--", "hello")
    # Again, from the unpacked archive the first run cached.
    second = await cli.ok("run", f"default/greeter:{world.greeter}", "--", "hello")

    assert first == second == HELLO_LINE.format(prefix=cache) + "\n"
    assert (cache / "bin" / "activate").is_file()


async def test_run_without_cache(cli: CondaStoreCli, world: World) -> None:
    output = await cli.ok("run", "--no-cache", str(world.greeter), "--", "hello")

    match = re.fullmatch(HELLO_LINE.format(prefix="(?P<prefix>.+)") + "\n", output)
    assert match, output
    assert Path(match["prefix"]).parent == cli.temporary_directory
    assert not (cli.temporary_directory / "conda-store").exists()


# --- remote solve --------------------------------------------------------------------------------


async def test_solve_lists_the_packages_of_an_environment_file(
    cli: CondaStoreCli, world: World, channel_url: str, tmp_path: Path
) -> None:
    specification = tmp_path / "environment.yaml"
    specification.write_text(environment_yaml("solve-me", ["hello 2.1.*"], channels=[channel_url]))

    table = await cli.ok("solve", str(specification))
    rows = await cli.json("solve", str(specification))

    assert "Packages" in table and "Total Size" in table
    for name in ("greeting-data", "hello", "libhello"):
        assert name in table
    assert sorted((row["name"], row["version"]) for row in rows) == [
        ("greeting-data", "2.0"),
        ("hello", "2.1"),
        ("libhello", "2.1"),
    ]
    assert all(isinstance(row["channel_id"], int) and row["size"].endswith("B") for row in rows)
