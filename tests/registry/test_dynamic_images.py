"""Dynamic images: pulling ``conda-store-dynamic/<spec>/<spec>/...`` builds that environment from
the test channel, once however many pull it at the same time; an unsatisfiable name answers the
solver's reason; names that are not specifications never reach the solver."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from envstore.common.events import BuildSubmitted
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient
from tests.registry.conftest import DYNAMIC_VIEWER_TOKEN, auth
from tests.registry.oci_tools import Registry, run_in_rootfs, skopeo_copy, unpack
from tests.stream_reader import stream_events

DYNAMIC = "conda-store-dynamic"


async def submissions_for(stack: EmbeddedStack, environment: str) -> list[BuildSubmitted]:
    return [
        event
        for _, event in await stream_events(stack)
        if isinstance(event, BuildSubmitted) and (event.namespace, event.environment) == (DYNAMIC, environment)
    ]


async def test_dynamic_image_builds_pulls_and_runs(
    registry_stack: EmbeddedStack, registry_api: ApiClient, registry: Registry, admin_credentials: str, tmp_path: Path
) -> None:
    pulled = skopeo_copy(
        registry.reference(f"{DYNAMIC}/tinyjson/hello.ge.2.1"), f"oci:{tmp_path / 'layout'}:dynamic", admin_credentials
    )
    assert pulled.returncode == 0, pulled.stderr
    rootfs = unpack(f"{tmp_path / 'layout'}:dynamic", tmp_path / "bundle")
    assert run_in_rootfs(rootfs, "/opt/conda/bin/hello") == "hello 2.1 prefix=/opt/conda greeting-data=2.0\n"

    # conda-store's mapping: the environment is named in URL order, its dependencies are sorted.
    status, body = await registry_api.get(f"/api/v1/environment/{DYNAMIC}/tinyjson-hello.ge.2.1/")
    assert status == 200, body
    [submitted] = await submissions_for(registry_stack, "tinyjson-hello.ge.2.1")
    assert submitted.specification["dependencies"] == ["hello>=2.1", "tinyjson"]
    assert "DOCKER_MANIFEST" in submitted.artifacts
    # A second pull of the same name uses the environment that exists.
    again = skopeo_copy(
        registry.reference(f"{DYNAMIC}/tinyjson/hello.ge.2.1"), f"oci:{tmp_path / 'layout'}:again", admin_credentials
    )
    assert again.returncode == 0, again.stderr
    assert len(await submissions_for(registry_stack, "tinyjson-hello.ge.2.1")) == 1


async def test_ten_concurrent_pulls_of_a_new_name_start_one_build(
    registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    path = f"/v2/{DYNAMIC}/textutils/hello.lt.2.1/manifests/latest"
    headers = {**auth(registry_stack.admin_token), "Accept": "application/vnd.oci.image.manifest.v1+json"}

    async def pull() -> tuple[int, str | None]:
        async with http.get(path, headers=headers) as response:
            await response.read()
            return response.status, response.headers.get("Docker-Content-Digest")

    answers = await asyncio.gather(*(pull() for _ in range(10)))
    assert {status for status, _ in answers} == {200}
    assert len({digest for _, digest in answers}) == 1
    assert len(await submissions_for(registry_stack, "textutils-hello.lt.2.1")) == 1


async def test_unsatisfiable_name_answers_the_solvers_reason(
    registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        f"/v2/{DYNAMIC}/conflict-low/conflict-high/manifests/latest", headers=auth(registry_stack.admin_token)
    ) as response:
        assert response.status == 404
        [error] = (await response.json())["errors"]
    assert error["code"] == "MANIFEST_UNKNOWN"
    assert "cannot be solved" in error["message"]
    assert "conflict-low" in error["message"] and "greeting-data" in error["message"]
    assert error["detail"]["build_id"] > 0


async def test_invalid_names_never_reach_the_solver(registry_stack: EmbeddedStack, http: aiohttp.ClientSession) -> None:
    token = registry_stack.admin_token
    before = len(await stream_events(registry_stack))
    for name in (
        f"{DYNAMIC}/conda-forge::python",  # a channel: ':' is not a name character
        f"{DYNAMIC}/hello.gt.",  # "hello>" is no match spec
        f"{DYNAMIC}/hello%5Bchannel=x%5D",  # brackets
    ):
        async with http.get(f"/v2/{name}/manifests/latest", headers=auth(token)) as response:
            assert response.status == 400, name
            assert (await response.json())["errors"][0]["code"] == "NAME_INVALID"
    submitted = [
        event for sequence, event in await stream_events(registry_stack)
        if sequence > before and isinstance(event, BuildSubmitted) and event.namespace == DYNAMIC
    ]
    assert submitted == []


async def test_building_a_new_dynamic_image_needs_create_permission(
    registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        f"/v2/{DYNAMIC}/libmath/manifests/latest", headers=auth(DYNAMIC_VIEWER_TOKEN)
    ) as response:
        assert response.status == 403
        assert (await response.json())["errors"][0]["code"] == "DENIED"
    assert await submissions_for(registry_stack, "libmath") == []
