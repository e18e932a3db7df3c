"""conda-store-api.md §6.1 cases 60–62 (the v2 cursor walk over 150 environments, its order and
its refusals) and §0.4's v1 paging, on a stack of its own holding 150 environments.

The environments are made the way users make them, by ``POST /api/v1/specification/``, submitted
concurrently. Listing is about environments, not builds, so the solver is stopped first: the 150
builds stay QUEUED instead of spending the machine's two cores while the rest of the suite runs.

Names repeat across namespaces and are not in id order, so every sort key is exercised: the i-th
environment is ``env-<(37·i) mod 50>`` in namespace ``default``, ``page-b`` or ``page-a`` (i mod 3).

Since no build of this stack ever ran, it also shows §6.2's channel list of a live server: the
indexed channels (conda-store's defaults here), whether or not a build used them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import logged_in, running_stack
from tests.deployments import Deployment
from tests.api_client import ApiClient, environment_yaml

# The same tests at the root, under /conda-store, and behind a TLS-terminating proxy.
pytestmark = pytest.mark.every_deployment

COUNT = 150
NAMESPACES = ("default", "page-b", "page-a")
END_CURSOR = "eyJsYXN0X2lkIjpudWxsLCJsYXN0X3ZhbHVlIjpudWxsfQ=="
INDEXED_CHANNELS = ("main", "conda-forge", "https://repo.anaconda.com/pkgs/main")  # conda-store's default


def placement(index: int) -> tuple[str, str]:
    return NAMESPACES[index % 3], f"env-{(37 * index) % 50:02d}"


@pytest.fixture(scope="module")
async def crowded(
    tmp_path_factory: pytest.TempPathFactory, channel_url: str, deployment: Deployment
) -> AsyncIterator[EmbeddedStack]:
    async with running_stack(
        tmp_path_factory.mktemp("crowded"),
        channel_url,
        deployment,
        ENVSTORE_CONDA_INDEXED_CHANNELS=",".join(INDEXED_CHANNELS),
    ) as stack:
        await stack.stop_service("solver")
        async with ApiClient(stack.api_url, token=stack.admin_token) as admin:
            slots = asyncio.Semaphore(16)

            async def submit(index: int) -> None:
                namespace, name = placement(index)
                async with slots:
                    await admin.submit(environment_yaml(name, ["tinyjson"]), namespace=namespace)

            await asyncio.gather(*(submit(index) for index in range(COUNT)))
        yield stack


@pytest.fixture
async def crowded_user(crowded: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with logged_in(crowded.api_url) as client:
        yield client


async def walk(client: ApiClient, query: str, limit: int = 10) -> tuple[list[dict], int, int]:
    """conda-store's client loop: follow cursors until the end cursor. → rows, count, requests."""
    rows: list[dict] = []
    cursor_param, requests, count = "", 0, -1
    while True:
        status, body = await client.get(f"/api/v2/environment/?limit={limit}{query}{cursor_param}")
        assert status == 200, body
        assert body["status"] == "ok"
        rows.extend(body["data"])
        count = body["count"]
        requests += 1
        assert requests <= COUNT + 2, "the cursor walk does not end"
        if body["cursor"] == END_CURSOR:
            assert body["data"] == []
            return rows, count, requests
        cursor_param = f"&cursor={body['cursor']}"


SORTS = [
    ("name", lambda env: (env["name"], env["id"])),
    ("namespace", lambda env: (env["namespace"]["name"], env["id"])),
    ("name,namespace", lambda env: (env["name"], env["namespace"]["name"], env["id"])),
    ("namespace,name", lambda env: (env["namespace"]["name"], env["name"], env["id"])),
]


@pytest.mark.parametrize("order", ["asc", "desc", None])
@pytest.mark.parametrize(("sort_by_param", "attr_func"), SORTS)
async def test_api_list_environments_paginate_order_by(
    crowded_user: ApiClient, order: str | None, sort_by_param: str, attr_func
) -> None:  # type: ignore[no-untyped-def]
    """Case 60."""
    limit = 10
    order_param = "" if order is None else f"&order={order}"
    environments, count, fetches = await walk(crowded_user, f"&sort_by={sort_by_param}{order_param}", limit)
    assert count == len(environments) == COUNT
    # Every page full except the last (here: 15 full pages, then the empty end page).
    assert len(environments) - (len(environments) % limit) == limit * (fetches - 1)
    attributes = [attr_func(environment) for environment in environments]
    assert sorted(attributes, reverse=(order == "desc")) == attributes
    assert len({environment["id"] for environment in environments}) == COUNT


async def test_api_list_environments_paginate(crowded_user: ApiClient) -> None:
    """Case 61: without sort_by, by id."""
    environments, count, fetches = await walk(crowded_user, "")
    ids = [environment["id"] for environment in environments]
    assert count == len(ids) == COUNT
    assert len(ids) - (len(ids) % 10) == 10 * (fetches - 1)
    assert sorted(ids) == ids


async def test_api_list_environments_invalid_query_params(crowded_user: ApiClient) -> None:
    """Case 62: 4xx for both. conda-store answers an invalid ``order`` with FastAPI's 422; envstore
    with a 400 in conda-store's error envelope. The ``sort_by`` message is conda-store's."""
    status, body = await crowded_user.get("/api/v2/environment/?order=foo")
    assert 400 <= status < 500
    assert body["status"] == "error"
    status, body = await crowded_user.get("/api/v2/environment/?sort_by=foo")
    assert status == 400
    assert body == {
        "status": "error",
        "message": "Cannot sort results by ['foo']. Valid sort_by values are ['namespace', 'name']",
    }


async def test_v2_cursor_details(crowded_user: ApiClient) -> None:
    """§0.4: the cursor is base64 of ``{"last_id", "last_value"}``; ``sort_by`` may be repeated
    instead of comma-separated; ``limit`` is not capped; ``count`` ignores the cursor; a cursor
    the server did not issue is a 400, not a 500."""
    status, body = await crowded_user.get("/api/v2/environment/?limit=3&sort_by=namespace,name")
    last = body["data"][-1]
    assert json.loads(base64.b64decode(body["cursor"])) == {
        "last_id": last["id"],
        "last_value": {"namespace": last["namespace"]["name"], "name": last["name"]},
    }
    comma, _, _ = await walk(crowded_user, "&sort_by=namespace,name&order=desc", limit=40)
    repeated, _, _ = await walk(crowded_user, "&sort_by=namespace&sort_by=name&order=desc", limit=40)
    assert [environment["id"] for environment in comma] == [environment["id"] for environment in repeated]

    status, body = await crowded_user.get("/api/v2/environment/?limit=1000")
    assert (status, len(body["data"]), body["count"]) == (200, COUNT, COUNT)

    status, body = await crowded_user.get(f"/api/v2/environment/?limit=10&cursor={body['cursor']}")
    assert (body["data"], body["count"], body["cursor"]) == ([], COUNT, END_CURSOR)

    for cursor in ("not-base64!", base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b'{"last_id": "x", "last_value": null}').decode()):
        status, body = await crowded_user.get("/api/v2/environment/", params={"cursor": cursor})
        assert status == 400, cursor
        assert body["status"] == "error"


async def test_v2_walk_is_limited_to_what_the_caller_sees(crowded: EmbeddedStack) -> None:
    async with ApiClient(crowded.api_url) as anonymous:
        environments, count, _ = await walk(anonymous, "&sort_by=name")
    assert count == len(environments) == COUNT // 3
    assert {environment["namespace"]["name"] for environment in environments} == {"default"}


async def test_v2_filters_apply_to_walk_and_count(crowded_user: ApiClient) -> None:
    environments, count, _ = await walk(crowded_user, "&namespace=page-a&sort_by=name", limit=7)
    assert count == len(environments) == COUNT // 3
    assert [environment["name"] for environment in environments] == sorted(f"env-{n:02d}" for n in range(50))
    status, body = await crowded_user.get("/api/v2/environment/?status=QUEUED&limit=1")
    assert body["count"] == COUNT


async def test_v1_page_and_size(crowded_user: ApiClient) -> None:
    """§0.4 v1: ``size`` defaults to and is capped at 100; ``page = offset // size + 1``;
    ``count`` is the total; unknown ``sort_by`` keys and ``order`` values are ignored (asc)."""
    status, body = await crowded_user.get("/api/v1/environment/?page=1&size=1000")
    assert (body["page"], body["size"], body["count"], len(body["data"])) == (1, 100, COUNT, 100)
    status, body = await crowded_user.get("/api/v1/environment/?page=2&size=100")
    assert (body["page"], body["size"], len(body["data"])) == (2, 100, 50)
    status, body = await crowded_user.get("/api/v1/environment/?page=3&size=20&sort_by=name&sort_by=namespace")
    names = [(environment["name"], environment["namespace"]["name"]) for environment in body["data"]]
    assert body["page"] == 3 and len(names) == 20
    assert names == sorted(names)
    status, whole = await crowded_user.get("/api/v1/environment/?size=100&order=sideways&sort_by=colour")
    keys = [(environment["namespace"]["name"], environment["name"]) for environment in whole["data"]]
    assert keys == sorted(keys)  # the default sort, ascending
    status, body = await crowded_user.get("/api/v1/environment/?size=100&order=desc")
    keys = [(environment["namespace"]["name"], environment["name"]) for environment in body["data"]]
    assert keys == sorted(keys, reverse=True)
    assert keys[0] == ("page-b", "env-49")


async def test_v1_environment_list_answers_everything_for_the_cli(crowded_user: ApiClient) -> None:
    """§7.6: conda-store's CLI re-requests the same URL until it holds ``count`` rows, so without
    ``page``/``size`` every matching row comes in one answer (conda-store would send 100 and the
    CLI would loop forever)."""
    status, body = await crowded_user.get("/api/v1/environment/")
    assert status == 200
    assert body["count"] == len(body["data"]) == COUNT


async def test_v1_build_and_namespace_pages(crowded_user: ApiClient) -> None:
    status, body = await crowded_user.get("/api/v1/build/?size=40&page=4")
    assert (body["page"], body["size"], body["count"], len(body["data"])) == (4, 40, COUNT, 30)
    status, body = await crowded_user.get("/api/v1/namespace/?size=2&page=2&order=desc")
    assert [namespace["name"] for namespace in body["data"]] == ["default"]
    assert (body["count"], body["size"]) == (3, 2)


async def test_channels_are_the_indexed_channels(crowded: EmbeddedStack) -> None:
    """§6.2 (and §1.8): ``GET /channel/`` lists ``conda_indexed_channels``, as full URLs, before
    any build has used them."""
    async with ApiClient(crowded.api_url) as anonymous:
        status, body = await anonymous.get("/api/v1/channel/")
    assert status == 200
    assert sorted(channel["name"] for channel in body["data"]) == [
        "https://conda.anaconda.org/conda-forge",
        "https://conda.anaconda.org/main",
        "https://repo.anaconda.com/pkgs/main",
    ]
    assert all(isinstance(channel["id"], int) for channel in body["data"])
