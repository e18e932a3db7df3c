"""The registry's permission matrix: anonymous, a token of another namespace, a reader of the
namespace and the admin × every pull route (manifest by tag and by digest, GET and HEAD; blobs by
digest, GET and HEAD; tag list; catalog) × a public (``default``) and a private repository, and a
dynamic image. A blob shared by a public and a private image is served through the public name to
anyone, and through the private name only to its readers: what decides is whether the caller may
read the repository named in the URL, and whether that repository's images reference the blob."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import fresh
from tests.api_client import ApiClient
from tests.registry.conftest import auth, built_image

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DYNAMIC_IMAGE = "conda-store-dynamic/tinyjson/textutils"
CALLERS = ("anonymous", "stranger", "reader", "admin")


@dataclass(frozen=True)
class Images:
    public: str  # repository names
    private: str
    dynamic: str
    manifests: dict[str, dict]  # repository -> its latest manifest
    digests: dict[str, str]  # repository -> its latest manifest's digest
    tokens: dict[str, str | None]

    def blobs(self, repository: str) -> set[str]:
        manifest = self.manifests[repository]
        return {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}


async def mint(api: ApiClient, bindings: dict[str, list[str]], primary_namespace: str) -> str:
    status, body = await api.request(
        "POST", "/api/v1/token/", json={"primary_namespace": primary_namespace, "role_bindings": bindings}
    )
    assert status == 200, body
    return body["data"]["token"]


@pytest.fixture(scope="module")
async def images(registry_stack: EmbeddedStack) -> AsyncIterator[Images]:
    vault = fresh("vault")
    public, private = f"default/{fresh('common')}", f"{vault}/secret"
    async with ApiClient(registry_stack.api_url, token=registry_stack.admin_token) as api:
        # Both hold tinyjson (a shared layer, and the base image's); only the private one textutils.
        await built_image(api, "default", public.split("/")[1], ["tinyjson"])
        await built_image(api, vault, "secret", ["tinyjson", "textutils"])
        tokens = {
            "anonymous": None,
            "stranger": await mint(api, {f"{fresh('stranger')}/*": ["admin"]}, fresh("stranger")),
            "reader": await mint(api, {f"{vault}/*": ["viewer"], "conda-store-dynamic/*": ["viewer"]}, vault),
            "admin": registry_stack.admin_token,
        }
    manifests, digests = {}, {}
    async with aiohttp.ClientSession(registry_stack.registry_url) as http:
        for repository in (public, private, DYNAMIC_IMAGE):  # the admin's first pull builds the dynamic image
            headers = {**auth(registry_stack.admin_token), "Accept": OCI_MANIFEST}
            async with http.get(f"/v2/{repository}/manifests/latest", headers=headers) as response:
                assert response.status == 200, await response.text()
                manifests[repository] = json.loads(await response.read())
                digests[repository] = response.headers["Docker-Content-Digest"]
    yield Images(public, private, DYNAMIC_IMAGE, manifests, digests, tokens)


async def status_of(registry_stack: EmbeddedStack, method: str, path: str, token: str | None) -> int:
    headers = {"Accept": OCI_MANIFEST, **(auth(token) if token else {})}
    async with aiohttp.ClientSession(registry_stack.registry_url) as http:
        async with http.request(method, path, headers=headers, allow_redirects=False) as response:
            await response.read()
            return response.status


def routes(repository: str, images: Images, blob: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v2/{repository}/manifests/latest"),
        ("HEAD", f"/v2/{repository}/manifests/latest"),
        ("GET", f"/v2/{repository}/manifests/{images.digests[repository]}"),
        ("HEAD", f"/v2/{repository}/manifests/{images.digests[repository]}"),
        ("GET", f"/v2/{repository}/blobs/{blob}"),
        ("HEAD", f"/v2/{repository}/blobs/{blob}"),
        ("GET", f"/v2/{repository}/tags/list"),
    ]


def refusal(caller: str) -> int:
    """conda-store's registry answers: log in (401, with the challenge) or denied (403)."""
    return 401 if caller == "anonymous" else 403


@pytest.mark.parametrize("caller", CALLERS)
async def test_the_public_repository_answers_everyone(registry_stack: EmbeddedStack, images: Images, caller: str) -> None:
    shared = next(iter(images.blobs(images.public) & images.blobs(images.private)))
    for method, path in routes(images.public, images, shared):
        assert await status_of(registry_stack, method, path, images.tokens[caller]) == 200, (caller, method, path)


@pytest.mark.parametrize("caller", CALLERS)
async def test_the_private_repository_answers_only_its_readers(
    registry_stack: EmbeddedStack, images: Images, caller: str
) -> None:
    shared = images.blobs(images.public) & images.blobs(images.private)
    own = images.blobs(images.private) - images.blobs(images.public)
    assert shared and own, "the images should share some blobs and not others"
    expected = 200 if caller in ("reader", "admin") else refusal(caller)
    for blob in (next(iter(own)), next(iter(shared))):
        for method, path in routes(images.private, images, blob):
            assert await status_of(registry_stack, method, path, images.tokens[caller]) == expected, (caller, method, path)


@pytest.mark.parametrize("caller", CALLERS)
async def test_a_private_blob_is_not_reached_through_a_public_name(
    registry_stack: EmbeddedStack, images: Images, caller: str
) -> None:
    """Knowing a digest is no way in: a repository serves only the blobs its own images use."""
    own = images.blobs(images.private) - images.blobs(images.public)
    for blob in own:
        for method in ("GET", "HEAD"):
            status = await status_of(registry_stack, method, f"/v2/{images.public}/blobs/{blob}", images.tokens[caller])
            assert status == 404, (caller, method, blob)
    status = await status_of(
        registry_stack, "GET", f"/v2/{images.public}/manifests/{images.digests[images.private]}", images.tokens[caller]
    )
    assert status == 404, caller


@pytest.mark.parametrize("caller", CALLERS)
async def test_dynamic_images_answer_only_their_readers(registry_stack: EmbeddedStack, images: Images, caller: str) -> None:
    blob = images.manifests[images.dynamic]["layers"][0]["digest"]
    expected = 200 if caller in ("reader", "admin") else refusal(caller)
    for method, path in routes(images.dynamic, images, blob):
        assert await status_of(registry_stack, method, path, images.tokens[caller]) == expected, (caller, method, path)
    # A new dynamic image is a new environment: only who may create one there starts a build.
    if caller != "admin":
        path = f"/v2/conda-store-dynamic/{fresh('x').replace('-', '')}/tinyjson/manifests/latest"
        assert await status_of(registry_stack, "GET", path, images.tokens[caller]) == refusal(caller)


@pytest.mark.parametrize("caller", CALLERS)
async def test_the_catalog_lists_what_the_caller_may_read(registry_stack: EmbeddedStack, images: Images, caller: str) -> None:
    token = images.tokens[caller]
    async with aiohttp.ClientSession(registry_stack.registry_url) as http:
        async with http.get("/v2/_catalog", headers=auth(token) if token else {}) as response:
            assert response.status == 200
            listed = set((await response.json())["repositories"])
    assert images.public in listed
    assert (images.private in listed) == (caller in ("reader", "admin"))
    # Listed under its environment's name (conda-store's mapping of dynamic names).
    assert ("conda-store-dynamic/tinyjson-textutils" in listed) == (caller in ("reader", "admin"))
