"""``GET /api/v1/build/{id}/sbom/``: a real build's SBOM, validated against the CycloneDX 1.6
schema by cyclonedx-python-lib, holding every installed package with its licence, hashes and purl;
the same bytes every time; refusals for unsolved builds and unlocked platforms. The image's OCI
referrer: tests/registry/test_sbom_referrers.py; permissions: tests/api/test_permission_matrix.py."""

from __future__ import annotations

import json

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from envstore.common.settings import host_platform
from tests.api.conftest import fresh
from tests.api_client import ApiClient, environment_yaml


async def sbom_of(client: ApiClient, build_id: int, **params: str) -> tuple[int, bytes, str]:
    async with client.raw("GET", f"/api/v1/build/{build_id}/sbom/", params=params) as response:
        return response.status, await response.read(), response.headers.get("Content-Type", "")


def valid_cyclonedx(document: bytes) -> dict:
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(document.decode())
    assert errors is None, errors
    return json.loads(document)


async def test_sbom_lists_every_package_with_licence_hashes_and_purl(bench_admin: ApiClient) -> None:
    namespace = fresh("sbom")
    build = await bench_admin.wait_for_build(
        await bench_admin.submit(environment_yaml("tools", ["hello 2.1.*", "tinyjson"]), namespace)
    )
    assert build["status"] == "COMPLETED", build["status_info"]
    status, document, content_type = await sbom_of(bench_admin, build["id"])
    assert status == 200 and content_type.startswith("application/vnd.cyclonedx+json"), document
    sbom = valid_cyclonedx(document)
    assert sbom["specVersion"] == "1.6"
    assert sbom["metadata"]["component"]["name"] == f"{namespace}/tools"

    status, body = await bench_admin.get(f"/api/v1/build/{build['id']}/packages/", params={"size": "100"})
    installed = {(package["name"], package["version"]) for package in body["data"]}
    components = {component["name"]: component for component in sbom["components"]}
    assert {(name, component["version"]) for name, component in components.items()} == installed
    hello = components["hello"]
    assert hello["purl"].startswith(f"pkg:conda/hello@{hello['version']}?build=")
    assert f"subdir={host_platform()}" in hello["purl"]
    assert {entry["alg"] for entry in hello["hashes"]} == {"SHA-256", "MD5"}
    assert hello["licenses"] == [{"license": {"id": "BSD-3-Clause"}}]
    depends = {entry["ref"]: entry.get("dependsOn", []) for entry in sbom["dependencies"]}
    assert any("libhello" in reference for reference in depends[hello["bom-ref"]])

    again = await sbom_of(bench_admin, build["id"])
    assert again[1] == document, "the same build gives the same SBOM bytes"


async def test_sbom_refuses_unsolved_builds_and_unlocked_platforms(bench_admin: ApiClient) -> None:
    namespace = fresh("sbom-refused")
    failed = await bench_admin.wait_for_build(
        await bench_admin.submit(environment_yaml("broken", ["conflict-low", "conflict-high"]), namespace)
    )
    assert failed["status"] == "FAILED"
    status, body = await bench_admin.get(f"/api/v1/build/{failed['id']}/sbom/")
    assert status == 409 and "has no lock" in body["message"], body

    solved = await bench_admin.wait_for_build(await bench_admin.submit(environment_yaml("tools", ["tinyjson"]), namespace))
    status, body = await bench_admin.get(f"/api/v1/build/{solved['id']}/sbom/", params={"platform": "win-32"})
    assert status == 400 and "locked platforms" in body["message"], body
