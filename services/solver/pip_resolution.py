"""A specification's pip requirements → the exact wheels to install, for one platform, with uv.

``uv pip compile`` resolves for the environment's own Python (the version of the lock's ``python``
package) on the platform's target (``--python-platform``: its CPU, and its glibc for Linux), with
hashes, from the indexes and link locations of the pip section. It never runs the environment's
interpreter, so every platform of the lock resolves on any server.

Only wheels are locked (``--only-binary :all:``): an sdist would have to be built on the server —
running its build code — and for every platform, which no server can do for all of them. A
resolution uv cannot make fails the build with uv's own explanation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from envstore.common.build_policy import BuildFailure
from envstore.common.lock import LockedPackage, LockedPipPackage
from envstore.common.pip_requirements import PipRequirements

log = logging.getLogger(__name__)

# uv's oldest and newest manylinux targets: a glibc outside them is clamped.
MANYLINUX_MINORS = (17, 40)
DEFAULT_GLIBC = "2.28"
# Environment variables uv may see: proxies and certificates, nothing that changes what it resolves.
PASSED_ENVIRONMENT = ("PATH", "HOME", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")
VIA_ANNOTATION = re.compile(r"^\s*#\s+via\s+(.*)$")
PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


@dataclass(frozen=True)
class PipResolution:
    packages: list[LockedPipPackage]
    notes: list[str]


def uv_executable() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def python_platform(platform: str, glibc: str | None) -> str:
    """A conda platform as uv's ``--python-platform`` target."""
    system, _, architecture = platform.partition("-")
    if system == "linux":
        cpu = {"64": "x86_64", "aarch64": "aarch64", "ppc64le": "powerpc64le", "s390x": "s390x"}.get(architecture)
        if cpu is not None:
            minor = int((glibc or DEFAULT_GLIBC).split(".")[1])
            minor = min(max(minor, MANYLINUX_MINORS[0]), MANYLINUX_MINORS[1])
            return f"{cpu}-manylinux_2_{minor}"
    if system == "osx" and architecture in ("64", "arm64"):
        return "x86_64-apple-darwin" if architecture == "64" else "aarch64-apple-darwin"
    if system == "win" and architecture in ("64", "arm64"):
        return "x86_64-pc-windows-msvc" if architecture == "64" else "aarch64-pc-windows-msvc"
    raise BuildFailure("solve", f"pip dependencies cannot be resolved for the platform {platform}")


def python_of(packages: list[LockedPackage], platform: str) -> str:
    for package in packages:
        if package.name == "python":
            return package.version
    raise BuildFailure(
        "solve",
        f"the pip dependencies need python, and the solution for {platform} has none: "
        "add python to the specification's conda dependencies",
    )


async def resolve_pip(
    requirements: PipRequirements,
    conda_packages: list[LockedPackage],
    platform: str,
    glibc: str | None,
    cache_directory: Path,
) -> PipResolution:
    """The wheels for ``requirements`` on ``platform`` next to ``conda_packages`` (its conda solution).

    Names the conda solution already holds are left to conda (pip would overwrite its files)."""
    python_version = python_of(conda_packages, platform)
    target = python_platform(platform, glibc)
    with tempfile.TemporaryDirectory(prefix="envstore-pip-") as directory:
        requirements_file = Path(directory) / "requirements.in"
        requirements_file.write_text("".join(f"{line}\n" for line in requirements.requirements))
        common = [
            "pip", "compile", str(requirements_file), "--only-binary", ":all:",
            "--python-version", python_version, "--python-platform", target, "--no-header", "--quiet",
            *requirements.uv_arguments(),
        ]
        # The same resolution twice (the second from uv's cache): PEP 751's pylock.toml names each
        # wheel's URL and hash; the requirements format says which package needs which.
        locked, annotated = await asyncio.gather(
            _uv([*common, "--generate-hashes", "--format", "pylock.toml"], cache_directory),
            _uv([*common, "--annotation-style", "line"], cache_directory),
        )
    conda_names = {package.name for package in conda_packages}
    packages, notes = [], []
    needed_by = _needed_by(annotated)
    for entry in tomllib.loads(locked).get("packages", []):
        name = canonicalize_name(entry["name"])
        if name in conda_names:
            notes.append(f"{platform}: pip requirement {name} is provided by the conda package {name}; not installed by pip")
            continue
        wheels = entry.get("wheels") or []
        if len(wheels) != 1:
            raise BuildFailure("solve", f"uv locked {len(wheels)} wheels for {name} on {platform}, expected one")
        wheel = wheels[0]
        url = str(wheel.get("url") or Path(wheel["path"]).absolute().as_uri())
        packages.append(
            LockedPipPackage(
                name=name,
                version=str(entry["version"]),
                url=url,
                sha256=str(wheel["hashes"]["sha256"]),
                file_name=url.rsplit("/", 1)[-1].split("#", 1)[0],
                dependencies={
                    dependency: f"=={version}"
                    for dependency, (version, parents) in needed_by.items()
                    if name in parents
                },
            )
        )
    return PipResolution(sorted(packages, key=lambda package: package.name), notes)


def _needed_by(annotated: str) -> dict[str, tuple[str, set[str]]]:
    """``name==version  # via a, b`` lines → {name: (version, {a, b})} (names normalized)."""
    found: dict[str, tuple[str, set[str]]] = {}
    for line in annotated.splitlines():
        match = PIN_LINE.match(line.strip())
        if match is None:
            continue
        name, version = canonicalize_name(match.group(1)), match.group(2)
        parents: set[str] = set()
        if "# via " in line:
            for parent in line.split("# via ", 1)[1].split(","):
                parent = parent.strip()
                if parent and not parent.startswith("-r "):
                    parents.add(canonicalize_name(parent))
        found[name] = (version, parents)
    return found


async def _uv(arguments: list[str], cache_directory: Path) -> str:
    environment = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
    # No configuration files, no inherited UV_*/PIP_* settings: the specification alone decides.
    environment.update({"UV_CACHE_DIR": str(cache_directory), "UV_NO_CONFIG": "1", "UV_NO_PROGRESS": "1"})
    process = await asyncio.create_subprocess_exec(
        uv_executable(), *arguments,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment,
    )
    try:
        output, errors = await process.communicate()
    except asyncio.CancelledError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        explanation = errors.decode(errors="replace").strip() or f"uv exited with {process.returncode}"
        raise BuildFailure("solve", f"the pip dependencies cannot be resolved: {explanation}")
    return output.decode()
