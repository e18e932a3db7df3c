"""pip packages in a build's SBOM (``pkg:pypi`` purls, sha256, their dependencies) and in lock
diffs (a wheel's version changed, another added), from real uv resolutions of the test index."""

from __future__ import annotations

import json

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from envstore.common.settings import host_platform
from tests.api_client import ApiClient
from tests.pip.conftest import WheelIndexes
from tests.pip.test_pip_dependencies import pip_environment


async def test_sbom_and_diff_show_resolved_pip_packages(pip_api: ApiClient, wheel_indexes: WheelIndexes) -> None:
    index = f"--index-url {wheel_indexes.full}"
    builds = []
    for lines in ([index, "envstore-demo-words==1.0"], [index, "envstore-demo-greeter"]):
        build = await pip_api.wait_for_build(
            await pip_api.submit(pip_environment("sbom-pip", lines), namespace="pip-sbom"), timeout_seconds=120
        )
        assert build["status"] == "COMPLETED", build["status_info"]
        builds.append(build["id"])

    async with pip_api.raw("GET", f"/api/v1/build/{builds[1]}/sbom/") as response:
        assert response.status == 200
        document = await response.read()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document.decode()) is None
    sbom = json.loads(document)
    wheels = {c["name"]: c for c in sbom["components"] if c["purl"].startswith("pkg:pypi/")}
    assert {name: c["purl"] for name, c in wheels.items()} == {
        "envstore-demo-greeter": "pkg:pypi/envstore-demo-greeter@1.5",
        "envstore-demo-words": "pkg:pypi/envstore-demo-words@2.0",
    }
    assert [entry["alg"] for entry in wheels["envstore-demo-greeter"]["hashes"]] == ["SHA-256"]
    depends = {entry["ref"]: entry.get("dependsOn", []) for entry in sbom["dependencies"]}
    assert depends[wheels["envstore-demo-greeter"]["bom-ref"]] == [wheels["envstore-demo-words"]["bom-ref"]]

    status, body = await pip_api.get(f"/api/v1/build/{builds[0]}/diff/{builds[1]}/")
    assert status == 200, body
    pip = body["data"]["pip"][host_platform()]
    assert [package["name"] for package in pip["added"]] == ["envstore-demo-greeter"]
    assert [(c["name"], c["before"]["version"], c["after"]["version"]) for c in pip["changed"]] == [
        ("envstore-demo-words", "1.0", "2.0")
    ]
    status, text = await pip_api.get(f"/api/v1/build/{builds[0]}/diff/{builds[1]}/", params={"format": "text"})
    assert f"pip {host_platform()}: 1 added, 0 removed, 1 changed, 0 unchanged" in text
    assert "  ~ envstore-demo-words 1.0 -> 2.0" in text
