"""conda-store-api.md §6.1 cases 20–34, 40, 49 (builds, their packages, logs, YAML, channels and
packages) and §6.2's artifact behaviours (all six lockfile routes, page sizes, concurrent reads),
with §1.6–§1.8's filters, against the §6.1 world.

conda-store's world is made of database rows: builds 1–3 QUEUED, fake logs, made-up packages.
envstore's world is real: every build ran, so they are all COMPLETED, the logs are the workers'
own and the packages come from the channel. Where an assertion differs for that reason, it says so.
"""

from __future__ import annotations

import asyncio
import re

import pytest
import yaml

from tests.api.conftest import WORLD_ENVIRONMENTS, World
from tests.api_client import ApiClient

# The same tests at the root, under /conda-store, and behind a TLS-terminating proxy.
pytestmark = pytest.mark.every_deployment

PACKAGE_OF = {name: package for _, name, package in WORLD_ENVIRONMENTS}
BUILD_KEYS = ("id", "environment_id", "specification", "packages", "status", "status_info", "size",
              "scheduled_on", "started_on", "ended_on", "build_artifacts")


async def test_api_list_builds_unauth(anonymous: ApiClient, world: World) -> None:
    """Case 20."""
    status, body = await anonymous.get("/api/v1/build")
    assert status == 200
    assert [build["id"] for build in body["data"]] == [world.builds["name1"], world.builds["name2"]]
    assert body["count"] == 2


async def test_api_list_builds_auth(user: ApiClient, world: World) -> None:
    """Case 21, and the list's build objects (specification, packages, artifacts null)."""
    status, body = await user.get("/api/v1/build/")
    assert status == 200
    assert set(body) == {"status", "data", "message", "page", "size", "count"}
    assert [build["id"] for build in body["data"]] == list(world.builds.values())
    for build in body["data"]:
        assert tuple(build) == BUILD_KEYS
        assert build["specification"] is None and build["packages"] is None and build["build_artifacts"] is None


async def test_list_builds_filters_and_order(user: ApiClient, world: World) -> None:
    """§1.6's filters and sort keys. ``packages`` works (§7: conda-store answers 500)."""
    ids = world.builds
    cases = [
        ({"status": "COMPLETED"}, list(ids.values())),
        ({"status": "QUEUED"}, []),
        ({"artifact": "YAML"}, list(ids.values())),
        ({"artifact": "CONDA_PACK"}, list(ids.values())),
        ({"artifact": "DOCKER_MANIFEST"}, []),
        ({"environment_id": str(world.environment_ids["name2"])}, [ids["name2"]]),
        ({"name": "name3"}, [ids["name3"]]),
        ({"namespace": "default"}, [ids["name1"], ids["name2"]]),
        ({"packages": "textutils"}, [ids["name2"]]),
        ([("packages", "textutils"), ("packages", "tinyjson")], []),
        ({"order": "desc"}, list(reversed(ids.values()))),
        ({"sort_by": "scheduled_on", "order": "desc"}, list(reversed(ids.values()))),
        ({"sort_by": "no-such-key"}, list(ids.values())),
        ({"size": "2", "page": "2"}, [ids["name3"], ids["name4"]]),
    ]
    for params, expected in cases:
        status, body = await user.get("/api/v1/build/", params=params)
        assert status == 200, params
        assert [build["id"] for build in body["data"]] == expected, params


async def test_api_get_build_one_unauth(anonymous: ApiClient, world: World) -> None:
    """Case 22: namespace1/name3's build is not anonymous."""
    status, body = await anonymous.get(f"/api/v1/build/{world.builds['name3']}")
    assert status == 403
    assert body["status"] == "error"


async def test_api_get_build_one_auth(user: ApiClient, world: World) -> None:
    """Case 23 (conda-store's seeded build is QUEUED; this one really ran)."""
    build_id = world.builds["name3"]
    status, body = await user.get(f"/api/v1/build/{build_id}")
    assert status == 200
    build = body["data"]
    assert tuple(build) == BUILD_KEYS
    assert build["id"] == build_id
    assert build["environment_id"] == world.environment_ids["name3"]
    assert build["specification"]["name"] == "name3"
    assert re.fullmatch(r"[0-9a-f]{64}", build["specification"]["sha256"])
    assert build["specification"]["spec"]["dependencies"] == ["greeting-data"]
    assert build["status"] == "COMPLETED"
    assert build["packages"] is None
    assert build["size"] > 0
    assert build["scheduled_on"] <= build["started_on"] <= build["ended_on"]
    kinds = {artifact["artifact_type"] for artifact in build["build_artifacts"]}
    assert kinds == {"LOGS", "LOCKFILE", "YAML", "CONDA_PACK", "CONSTRUCTOR_INSTALLER"}


async def test_build_key_and_storage_keys(user: ApiClient, world: World) -> None:
    """§2.2: build key v2 ``<8 hex of the spec hash>-<unix seconds>-<id>-<name>`` names the
    artifacts (``logs/K.log``, ``lockfile/K.yml``, ``yaml/K.yml``)."""
    build_id = world.builds["name3"]
    build = (await user.get(f"/api/v1/build/{build_id}/"))[1]["data"]
    keys = {artifact["artifact_type"]: artifact["key"] for artifact in build["build_artifacts"]}
    match = re.fullmatch(r"logs/([0-9a-f]{8})-(\d+)-(\d+)-name3\.log", keys["LOGS"])
    assert match, keys
    assert match.group(1) == build["specification"]["sha256"][:8]
    assert int(match.group(3)) == build_id
    build_key = keys["LOGS"][len("logs/"):-len(".log")]
    assert keys["LOCKFILE"] == f"lockfile/{build_key}.yml"
    assert keys["YAML"] == f"yaml/{build_key}.yml"


async def test_api_get_build_one_unauth_packages(anonymous: ApiClient, world: World) -> None:
    """Case 24."""
    status, body = await anonymous.get(f"/api/v1/build/{world.builds['name3']}/packages")
    assert status == 403
    assert body["status"] == "error"


async def test_api_get_build_one_auth_packages(user: ApiClient, world: World) -> None:
    """Case 25: one package, shaped as CondaPackage."""
    status, body = await user.get(f"/api/v1/build/{world.builds['name3']}/packages")
    assert status == 200
    assert body["count"] == 1
    (package,) = body["data"]
    assert set(package) == {"id", "channel", "license", "name", "version", "summary"}
    assert package["name"] == "greeting-data"
    assert package["version"] == "2.0"
    assert package["channel"]["name"] == world.channel_url
    assert package["channel"]["last_update"] is None


async def test_build_packages_search(user: ApiClient, world: World) -> None:
    """§1.6: ``search`` (substring, or exact with ``exact``) and ``build`` (build-string substring)."""
    path = f"/api/v1/build/{world.builds['name1']}/packages/"
    for params, expected in (
        ({"search": "json"}, ["tinyjson"]),
        ({"search": "json", "exact": "1"}, []),
        ({"search": "tinyjson", "exact": "1"}, ["tinyjson"]),
        ({"build": "_0"}, ["tinyjson"]),
        ({"build": "no-such-build-string"}, []),
    ):
        status, body = await user.get(path, params=params)
        assert status == 200, params
        assert [package["name"] for package in body["data"]] == expected, params


async def test_api_get_build_auth_packages_no_exist(user: ApiClient) -> None:
    """Case 26."""
    status, body = await user.get("/api/v1/build/101010101/packages")
    assert status == 404
    assert body == {"status": "error", "message": "build id does not exist"}


async def test_api_get_build_one_unauth_logs(anonymous: ApiClient, world: World) -> None:
    """Case 27."""
    status, body = await anonymous.get(f"/api/v1/build/{world.builds['name3']}/logs")
    assert status == 403
    assert body["status"] == "error"


async def test_api_get_build_one_auth_logs(user: ApiClient, world: World) -> None:
    """Case 28: the log, through the 307 to storage. conda-store's seeded log is ``fake logs``
    and a live one has conda's ``Preparing transaction:``/``Executing transaction:`` (§6.2);
    envstore's log is its workers' phases: the solve and the install."""
    build_id = world.builds["name3"]
    async with user.raw("GET", f"/api/v1/build/{build_id}/logs/", allow_redirects=False) as response:
        assert response.status == 307
        location = response.headers["Location"]
    # A signed link that expires (conda-store's has no query: its storage answers anyone).
    assert re.fullmatch(
        rf"{re.escape(user.prefix)}/storage/logs/[0-9a-f]{{8}}-\d+-{build_id}-name3\.log\?expires=\d+&signature=[0-9a-f]{{64}}",
        location,
    )
    status, logs = await user.get(f"/api/v1/build/{build_id}/logs")
    assert status == 200
    assert "[solver] solve: started greeting-data" in logs
    assert "[builder] install: started 1 packages" in logs


async def test_api_get_build_auth_logs_no_exist(user: ApiClient) -> None:
    """Case 29."""
    status, body = await user.get("/api/v1/build/10101010101/logs")
    assert status == 404
    assert body["status"] == "error"


async def test_api_get_build_one_unauth_yaml(anonymous: ApiClient, world: World) -> None:
    """Case 30."""
    status, _ = await anonymous.get(f"/api/v1/build/{world.builds['name3']}/yaml/")
    assert status == 403


async def test_api_get_build_one_auth_yaml(user: ApiClient, world: World) -> None:
    """Case 31: the pinned environment, as ``conda env export`` writes it."""
    status, text = await user.get(f"/api/v1/build/{world.builds['name3']}/yaml/")
    assert status == 200
    document = yaml.safe_load(text)
    assert {"name", "channels", "dependencies"} <= document.keys()
    assert document["name"] == "name3"
    assert document["channels"] == [world.channel_url]
    assert [pin.split("=")[0] for pin in document["dependencies"]] == ["greeting-data"]


async def test_api_get_build_two_auth(user: ApiClient) -> None:
    """Case 32."""
    status, body = await user.get("/api/v1/build/1010101010101")
    assert status == 404
    assert body == {"status": "error", "message": "build id does not exist"}


async def test_lockfile_routes(anonymous: ApiClient, user: ApiClient, world: World) -> None:
    """§6.2: all six lockfile routes — anonymous 403 (namespace1 is not anonymous), logged-in a
    conda-lock v1 document with ``metadata`` and ``package``."""
    build_id = world.builds["name3"]
    routes = [
        f"/api/v1/build/{build_id}/lockfile/",
        f"/api/v1/build/{build_id}/conda-lock.yml",
        f"/api/v1/build/{build_id}/conda-lock.yaml",
        "/api/v1/environment/namespace1/name3/lockfile/",
        "/api/v1/environment/namespace1/name3/conda-lock.yml",
        "/api/v1/environment/namespace1/name3/conda-lock.yaml",
    ]
    for route in routes:
        status, body = await anonymous.get(route)
        assert status == 403, route
        status, body = await user.get(route)
        assert status == 200, route
        document = yaml.safe_load(body) if isinstance(body, str) else body
        assert document["version"] == 1
        assert {"metadata", "package"} <= document.keys()
        assert [package["name"] for package in document["package"]] == ["greeting-data"]
    status, body = await user.get("/api/v1/environment/namespace1/wrong/lockfile/")
    assert (status, body) == (404, {"status": "error", "message": "environment does not exist"})


async def test_archive_installer_and_docker(user: ApiClient, world: World) -> None:
    """The conda-pack archive and the installer redirect to storage; no image was asked for, so
    ``docker/`` is conda-store's 400. §7 fix, don't mimic: the archive of a missing build is 404
    (conda-store: 500)."""
    build_id = world.builds["name1"]
    for route, head in (("archive/", b"\x1f\x8b"), ("installer/", b"#!")):
        async with user.raw("GET", f"/api/v1/build/{build_id}/{route}", allow_redirects=False) as response:
            assert response.status == 307, route
            location = response.headers["Location"]
        # The Location is a path from the server's root (under the prefix), as browsers resolve it.
        async with user.session.get(location) as response:
            assert response.status == 200, route
            assert (await response.content.read(2)) == head, route
    status, body = await user.get(f"/api/v1/build/{build_id}/docker/")
    assert (status, body) == (400, {"status": "error", "message": f"Build {build_id} doesn't have a docker manifest"})
    status, body = await user.get("/api/v1/build/987654321/archive/")
    assert (status, body) == (404, {"status": "error", "message": "build id does not exist"})


async def test_api_list_conda_channels_unauth(anonymous: ApiClient, world: World) -> None:
    """Case 33: the only channel used (conda-store's fixture: conda-forge; here the test channel)."""
    status, body = await anonymous.get("/api/v1/channel")
    assert status == 200
    assert {channel["name"] for channel in body["data"]} == {world.channel_url}
    assert set(body["data"][0]) == {"id", "name", "last_update"}


async def test_api_list_conda_packages_unauth(anonymous: ApiClient) -> None:
    """Case 34: four packages, one per build."""
    status, body = await anonymous.get("/api/v1/package")
    assert status == 200
    assert body["count"] == 4
    assert sorted(package["name"] for package in body["data"]) == sorted(PACKAGE_OF.values())


async def test_package_list_filters_and_page_size(anonymous: ApiClient) -> None:
    """§6.2's ``?size=`` (here 2 of the 4), §1.8's filters; ``build`` works (§7: conda-store 500s)."""
    status, body = await anonymous.get("/api/v1/package/", params={"size": "2"})
    assert (status, len(body["data"]), body["size"], body["count"]) == (200, 2, 2, 4)
    for params, expected in (
        ({"search": "json"}, ["tinyjson"]),
        ({"search": "tinyjson", "exact": "1"}, ["tinyjson"]),
        ({"build": "_0"}, sorted(PACKAGE_OF.values())),
        ({"build": "no-such-build-string"}, []),
        ({"sort_by": "name", "order": "desc"}, sorted(PACKAGE_OF.values(), reverse=True)),
    ):
        status, body = await anonymous.get("/api/v1/package/", params=params)
        assert status == 200, params
        assert [package["name"] for package in body["data"]] == expected, params
    # DISTINCT ON the channel: one package for the one channel.
    status, body = await anonymous.get("/api/v1/package/", params={"distinct_on": "channel"})
    assert (status, body["count"], len(body["data"])) == (200, 1, 1)
    assert body["data"][0]["name"] in PACKAGE_OF.values()


async def test_put_build_trigger_build_noauth(anonymous: ApiClient, world: World) -> None:
    """Case 40."""
    status, body = await anonymous.request("PUT", f"/api/v1/build/{world.builds['name3']}")
    assert status == 403
    assert body["status"] == "error"


async def test_delete_build_unauth(anonymous: ApiClient, world: World) -> None:
    """Case 49."""
    status, body = await anonymous.request("DELETE", f"/api/v1/build/{world.builds['name4']}")
    assert status == 403
    assert body["status"] == "error"


async def test_build_routes_check_existence_before_permission(anonymous: ApiClient) -> None:
    """§1.6: build routes are 404-before-auth, so anonymous callers learn a build is missing."""
    for method, path in (
        ("GET", "/api/v1/build/987654321/"),
        ("PUT", "/api/v1/build/987654321/"),
        ("DELETE", "/api/v1/build/987654321/"),
        ("PUT", "/api/v1/build/987654321/cancel/"),
        ("GET", "/api/v1/build/987654321/yaml/"),
    ):
        status, body = await anonymous.request(method, path)
        assert (status, body) == (404, {"status": "error", "message": "build id does not exist"}), (method, path)


async def test_concurrent_reads(user: ApiClient, world: World) -> None:
    """§6.2's pool stress: 50 concurrent GETs over the lists all succeed (no timing asserted)."""
    paths = ["/api/v1/package/", "/api/v1/namespace/", "/api/v1/environment/", "/api/v1/build/", "/api/v1/channel/"]

    async def fetch(path: str) -> int:
        status, _ = await user.get(path)
        return status

    statuses = await asyncio.gather(*(fetch(paths[index % len(paths)]) for index in range(50)))
    assert statuses == [200] * 50
