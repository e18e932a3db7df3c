"""Specification → lock, with py-rattler, for every requested platform."""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import rattler
from rattler.exceptions import InvalidMatchSpecError, SolverError

from envstore.common.build_policy import BuildFailure
from envstore.common.lock import Lock, LockedPackage, LockedPipPackage, locked_package_from_record
from envstore.common.pip_requirements import parse_pip_section
from envstore.solver.pip_resolution import resolve_pip
from envstore.solver.repodata_state import repodata_fingerprint
from envstore.solver.solve_cache import SolveCache, solve_cache_key
from envstore.solver.virtual_packages import describe, glibc_of, virtual_packages_for, with_overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SolveRequest:
    specs: list[str]
    channel_urls: list[str]
    platforms: list[str]
    pip: list[str]
    use_cache: bool = True  # a rebuild asks for a fresh solve
    max_solve_seconds: float | None = None  # None: the solver's own limit (conda_max_solve_time)
    virtual_packages: tuple[str, ...] = ()  # the specification's, replacing the platform's own


@dataclass(frozen=True)
class SolveOutcome:
    lock: Lock
    cache_hits: int
    seconds: float
    notes: list[str]


class Solver:
    """Owns the repodata gateway and the solve cache of one solver process."""

    def __init__(
        self,
        cache_directory: Path,
        host_platform: str,
        max_solve_seconds: float,
        cache_entries: int,
        http: aiohttp.ClientSession,
    ) -> None:
        self.gateway = rattler.Gateway(cache_dir=cache_directory / "repodata")
        self.cache = SolveCache(cache_directory / "solves", cache_entries)
        self.pip_cache_directory = cache_directory / "uv"
        self.host_platform = host_platform
        self.max_solve_seconds = max_solve_seconds
        self.http = http
        self._fingerprints_seen: dict[str, str] = {}

    async def solve(self, request: SolveRequest) -> SolveOutcome:
        started = time.perf_counter()
        packages_by_platform: dict[str, list[LockedPackage]] = {}
        pip_by_platform: dict[str, list[LockedPipPackage]] = {}
        virtual_by_platform: dict[str, list[str]] = {}
        pip_requirements = parse_pip_section(request.pip)
        cache_hits = 0
        notes = []
        for platform in request.platforms:
            subdirs = [platform, "noarch"]
            fingerprints = [
                await self._fingerprint(url, subdirs) for url in request.channel_urls
            ]
            virtual_packages = with_overrides(
                virtual_packages_for(platform, self.host_platform), list(request.virtual_packages)
            )
            virtual_by_platform[platform] = describe(virtual_packages)
            if request.virtual_packages:
                notes.append(f"{platform}: solved with the specification's virtual packages {', '.join(request.virtual_packages)}")
            key = solve_cache_key(
                request.specs, request.channel_urls, platform, describe(virtual_packages), fingerprints
            )
            cached = await self.cache.get(key) if request.use_cache else None
            if cached is not None:
                cache_hits += 1
                packages_by_platform[platform] = cached.packages_for(platform)
                notes.append(f"{platform}: {len(cached.packages_for(platform))} packages (cached solve)")
            else:
                platform_started = time.perf_counter()
                records = await self._solve_platform(request, subdirs, virtual_packages)
                packages = sorted(
                    (locked_package_from_record(record) for record in records), key=lambda p: p.name
                )
                packages_by_platform[platform] = packages
                await self.cache.put(
                    key, Lock(channels=request.channel_urls, platforms={platform: packages})
                )
                notes.append(
                    f"{platform}: {len(packages)} packages solved in "
                    f"{time.perf_counter() - platform_started:.3f} s"
                )
            if pip_requirements.requirements:
                pip_started = time.perf_counter()
                resolution = await resolve_pip(
                    pip_requirements,
                    packages_by_platform[platform],
                    platform,
                    glibc_of(virtual_packages),
                    self.pip_cache_directory,
                )
                pip_by_platform[platform] = resolution.packages
                notes.extend(resolution.notes)
                notes.append(
                    f"{platform}: {len(resolution.packages)} pip packages resolved by uv in "
                    f"{time.perf_counter() - pip_started:.3f} s"
                )
        lock = Lock(
            channels=request.channel_urls,
            platforms=packages_by_platform,
            pip=request.pip,
            pip_packages=pip_by_platform,
            virtual_packages=virtual_by_platform,
        )
        return SolveOutcome(lock, cache_hits, time.perf_counter() - started, notes)

    async def _fingerprint(self, channel_url: str, subdirs: list[str]) -> str:
        fingerprint = await repodata_fingerprint(channel_url, subdirs, self.http)
        previous = self._fingerprints_seen.get(channel_url)
        if previous is not None and previous != fingerprint:
            # The channel changed under us: drop the gateway's in-memory copy of its repodata.
            self.gateway.clear_repodata_cache(rattler.Channel(channel_url), subdirs)
        self._fingerprints_seen[channel_url] = fingerprint
        return fingerprint

    async def _solve_platform(self, request: SolveRequest, subdirs: list[str], virtual_packages: list) -> list:
        try:
            specs = [rattler.MatchSpec(spec) for spec in request.specs]
        except InvalidMatchSpecError as error:
            raise BuildFailure("solve", f"invalid package specification: {error}") from None
        try:
            return await rattler.solve(
                sources=[rattler.Channel(url) for url in request.channel_urls],
                specs=specs,
                gateway=self.gateway,
                platforms=subdirs,
                virtual_packages=virtual_packages,
                timeout=datetime.timedelta(seconds=request.max_solve_seconds or self.max_solve_seconds),
            )
        except SolverError as error:
            raise BuildFailure(
                "solve", f"the specification cannot be solved for {subdirs[0]}: {_explain(error)}"
            ) from None
        except Exception as error:
            if type(error).__name__ in {"FetchRepoDataError", "GatewayError", "InvalidChannelError"}:
                # What the fetch ran into (an HTTP status, a file error) stays in this log: told
                # to the submitter, it would answer questions about hosts and files they probe.
                log.warning("reading channels %s failed: %s", request.channel_urls, _explain(error))
                raise BuildFailure(
                    "solve",
                    f"cannot read the package index of {', '.join(request.channel_urls)}: check that each channel "
                    "exists and serves repodata for " + ", ".join(subdirs),
                ) from None
            raise


def _explain(error: Exception) -> str:
    text = str(error).strip()
    return text or type(error).__name__
