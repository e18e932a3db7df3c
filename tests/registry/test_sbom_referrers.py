"""The image's SBOM as an OCI 1.1 referrer: ``GET /v2/<name>/referrers/<digest>`` lists it (filtered
by ``artifactType``), its manifest names the image as its subject, and its layer is byte for byte
the API's ``/sbom/`` document, a valid CycloneDX 1.6 SBOM. Subjects without referrers answer an
empty index, as the distribution spec requires."""

from __future__ import annotations

import json

import aiohttp
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient
from tests.registry.conftest import READER_TOKEN, auth, built_image, manifest_digest

SBOM_TYPE = "application/vnd.cyclonedx+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


async def _json(http: aiohttp.ClientSession, path: str, token: str, **options) -> tuple[int, dict, dict]:  # type: ignore[no-untyped-def]
    async with http.get(path, headers=auth(token), **options) as response:
        return response.status, json.loads(await response.read()), dict(response.headers)


async def test_image_sbom_is_an_oci_referrer_equal_to_the_api_sbom(
    registry_stack: EmbeddedStack, registry_api: ApiClient, http: aiohttp.ClientSession
) -> None:
    build = await built_image(registry_api, "team", "sbom-image", ["hello 2.1.*"])
    image = await manifest_digest(http, "team/sbom-image", str(build["id"]), READER_TOKEN)
    assert image is not None

    status, index, headers = await _json(http, f"/v2/team/sbom-image/referrers/{image}", READER_TOKEN)
    assert status == 200 and headers["Content-Type"] == OCI_INDEX, index
    assert index["mediaType"] == OCI_INDEX and len(index["manifests"]) == 1, index
    descriptor = index["manifests"][0]
    assert descriptor["artifactType"] == SBOM_TYPE

    status, referrer, headers = await _json(
        http, f"/v2/team/sbom-image/manifests/{descriptor['digest']}", READER_TOKEN,
    )
    assert status == 200 and headers["Docker-Content-Digest"] == descriptor["digest"], referrer
    assert referrer["subject"]["digest"] == image
    assert referrer["artifactType"] == SBOM_TYPE and referrer["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"

    layer = referrer["layers"][0]
    async with http.get(f"/v2/team/sbom-image/blobs/{layer['digest']}", headers=auth(READER_TOKEN)) as response:
        assert response.status == 200
        from_registry = await response.read()
    async with http.get(f"/v2/team/sbom-image/blobs/{referrer['config']['digest']}", headers=auth(READER_TOKEN)) as response:
        assert (response.status, await response.read()) == (200, b"{}")
    async with registry_api.raw("GET", f"/api/v1/build/{build['id']}/sbom/") as response:
        assert response.status == 200
        from_api = await response.read()
    assert from_registry == from_api and len(from_registry) == layer["size"]
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(from_registry.decode()) is None
    assert "hello" in {component["name"] for component in json.loads(from_registry)["components"]}

    status, filtered, headers = await _json(
        http, f"/v2/team/sbom-image/referrers/{image}", READER_TOKEN, params={"artifactType": "application/spdx+json"}
    )
    assert (status, filtered["manifests"], headers.get("OCI-Filters-Applied")) == (200, [], "artifactType")
    unknown = "sha256:" + "0" * 64
    status, empty, _ = await _json(http, f"/v2/team/sbom-image/referrers/{unknown}", READER_TOKEN)
    assert (status, empty["manifests"]) == (200, [])
    async with http.get(f"/v2/team/sbom-image/referrers/{image}") as response:
        assert response.status == 401, "the referrers of an image are read with the image's permissions"
