"""What must hold after any fault, checked from outside as a user and an auditor would: every
accepted build ended; every effect happened exactly once; the read model equals a fresh replay;
the registry serves every image it announced."""

from __future__ import annotations

import collections
import hashlib
import json
from typing import Any

import aiohttp

from envstore.common.events import (
    ArtifactEvent,
    BuildBuilt,
    BuildOutcome,
    BuildSolved,
    BuildSubmitted,
    Event,
)
from tests.api_client import TERMINAL, ApiClient


async def unfinished_builds(api: ApiClient, build_ids: list[int]) -> dict[int, str]:
    """Builds not COMPLETED, FAILED or CANCELED: none may be left."""
    stuck = {}
    for build_id in build_ids:
        build = await api.build(build_id)
        if build["status"] not in TERMINAL:
            stuck[build_id] = build["status"]
    return stuck


def duplicated_effects(events: list[tuple[int, Event]], build_ids: list[int]) -> dict[int, dict[str, int]]:
    """Per build, every effect that is in the log more than once (or an outcome missing): one
    submission, at most one solve, one install, one outcome per artifact kind, exactly one end."""
    wanted = set(build_ids)
    counts: dict[int, collections.Counter[str]] = {build_id: collections.Counter() for build_id in wanted}
    for _, event in events:
        build_id = getattr(event, "build_id", None)
        if build_id not in wanted:
            continue
        if isinstance(event, (BuildSubmitted, BuildSolved, BuildBuilt)):
            counts[build_id][event.tag()] += 1
        elif isinstance(event, ArtifactEvent):
            counts[build_id][f"artifact {event.kind} {event.platform}"] += 1
        elif isinstance(event, BuildOutcome):
            counts[build_id]["outcome"] += 1
    wrong = {}
    for build_id, counted in counts.items():
        bad = {kind: number for kind, number in counted.items() if number != 1}
        if counted["outcome"] != 1:
            bad["outcome"] = counted["outcome"]
        if bad:
            wrong[build_id] = bad
    return wrong


async def answers_checksum(api: ApiClient, namespaces: list[str], build_ids: list[int]) -> tuple[str, dict[str, Any]]:
    """A checksum of every API answer about these namespaces and builds (and the answers)."""
    answers: dict[str, Any] = {}
    for namespace in namespaces:
        path = f"/api/v1/environment/?namespace={namespace}&size=1000"
        answers[path] = await api.get(path)
    for build_id in build_ids:
        for path in (f"/api/v1/build/{build_id}/", f"/api/v1/build/{build_id}/packages/?size=100"):
            answers[path] = await api.get(path)
    document = json.dumps(answers, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest(), answers


async def images_not_served(registry_url: str, token: str, images: list[tuple[str, str]]) -> list[str]:
    """``(repository, tag)`` pairs whose manifest the registry does not serve."""
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    missing = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}", "Accept": accept}) as http:
        for repository, tag in images:
            async with http.get(f"{registry_url}/v2/{repository}/manifests/{tag}") as response:
                if response.status != 200:
                    missing.append(f"{repository}:{tag} → {response.status}")
    return missing
