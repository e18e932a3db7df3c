"""What a careless or hostile client sends: malformed and huge bodies, path traversal, odd
characters in names, odd credentials and query values. Each gets a 4xx whose message says what was
wrong, and the service goes on working (the API answers, the projector still applies events)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import yarl

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml

# Bigger than the event log's largest message (NATS' 1 MiB) so that both limits can be shown.
MAX_REQUEST_BYTES = 2 * 1024 * 1024
NAMESPACE = "hostile"
ENVIRONMENT = "target"
NAME_RULE = "may only contain letters, digits and the characters"
RAW_HTTP_TIMEOUT_SECONDS = 30  # a guard against a server that never answers, not a measurement

# Every route that reads a JSON body.
JSON_ROUTES = (
    ("POST", "/api/v1/specification/"),
    ("POST", "/api/v1/token/"),
    ("POST", "/login/"),
    ("PUT", "/api/v1/setting/"),
    ("PUT", f"/api/v1/setting/{NAMESPACE}/"),
    ("PUT", f"/api/v1/namespace/{NAMESPACE}/"),
    ("PUT", f"/api/v1/namespace/{NAMESPACE}/metadata"),
    ("POST", f"/api/v1/namespace/{NAMESPACE}/role"),
    ("PUT", f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/"),
)


@pytest.fixture(scope="module")
async def hostile_stack(tmp_path_factory: pytest.TempPathFactory, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        # The huge lockfile's packages point at loopback (never fetched: nothing listens there).
        "ENVSTORE_CHANNEL_ALLOWED_HOSTS": "127.0.0.1",
    }
    async with EmbeddedStack(tmp_path_factory.mktemp("hostile-stack"), settings=settings) as running:
        async with ApiClient(running.api_url, token=running.admin_token) as admin:
            build_id = await admin.submit(environment_yaml(ENVIRONMENT, ["hello 2.1.*"]), namespace=NAMESPACE)
            build = await admin.wait_for_build(build_id)
            assert build["status"] == "COMPLETED", build["status_info"]
        yield running


@dataclass
class RawClient:
    """Sends exactly the path and bytes given: no normalization of ``..``, no re-encoding."""

    base_url: str
    session: aiohttp.ClientSession

    async def send(
        self, method: str, raw_path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        url = yarl.URL(self.base_url + raw_path, encoded=True)
        async with self.session.request(method, url, data=body, headers=headers, allow_redirects=False) as response:
            text = await response.text(errors="replace")
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


@pytest.fixture
async def admin(hostile_stack: EmbeddedStack) -> AsyncIterator[RawClient]:
    headers = {"Authorization": f"Bearer {hostile_stack.admin_token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield RawClient(hostile_stack.api_url, session)


@pytest.fixture
async def anonymous(hostile_stack: EmbeddedStack) -> AsyncIterator[RawClient]:
    async with aiohttp.ClientSession() as session:
        yield RawClient(hostile_stack.api_url, session)


def refused(answer: tuple[int, Any], status: int, *message_parts: str) -> None:
    """A 4xx in conda-store's error envelope whose message names the problem."""
    code, body = answer
    assert code == status, answer
    assert isinstance(body, dict) and body.get("status") == "error", answer
    for part in message_parts:
        assert part in body["message"], answer


# --- malformed bodies ----------------------------------------------------------------------------

MALFORMED_BODIES = {
    "truncated JSON": (b'{"specification": ', "the request body must be a JSON object"),
    "a JSON array": (b"[1, 2, 3]", "the request body must be a JSON object"),
    "a JSON string": (b'"name: x"', "the request body must be a JSON object"),
    "not UTF-8": (b'{"a": "\xff\xfe"}', "the request body must be a JSON object"),
    "YAML, not JSON": (b"name: x\ndependencies: [hello]\n", "the request body must be a JSON object"),
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "a NUL character": (b'{"metadata": {"k": "a\\u0000b"}, "description": "\\u0000"}', "NUL character"),
}


@pytest.mark.parametrize("method, path", JSON_ROUTES, ids=[f"{m} {p}" for m, p in JSON_ROUTES])
@pytest.mark.parametrize("body, message", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
async def test_malformed_json_bodies_are_refused(admin: RawClient, method: str, path: str, body: bytes, message: str) -> None:
    refused(await admin.send(method, path, body), 400, message)


async def test_specification_fields_of_the_wrong_kind(admin: RawClient) -> None:
    async def submit(fields: dict[str, Any]) -> tuple[int, Any]:
        return await admin.send("POST", "/api/v1/specification/", json.dumps({"namespace": NAMESPACE, **fields}))

    refused(await submit({"specification": 5}), 400, "'specification' must be a string")
    refused(await submit({"specification": "name: x", "is_lockfile": "yes"}), 400, "'is_lockfile' must be true or false")
    refused(await submit({"specification": "name: [unclosed"}), 400, "Unable to parse. Invalid YAML")
    refused(await submit({"specification": "- a\n- list\n"}), 400, "must be a mapping")
    refused(await submit({"specification": "name: x\ndependencies: hello\n"}), 400, "dependencies")


async def test_a_yaml_alias_bomb_is_refused_quickly(admin: RawClient) -> None:
    # ~1 KB of YAML that stands for 9**8 (43 million) strings once its aliases are written out.
    lines = ["version: 1", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    lines += ["metadata: {platforms: [linux-64], channels: [], sources: [], x: *a8}", "package: []"]
    for is_lockfile in (True, False):
        body = {
            "namespace": NAMESPACE,
            "is_lockfile": is_lockfile,
            "environment_name": "bomb",
            "specification": "\n".join(["name: bomb", *lines] if not is_lockfile else lines),
        }
        refused(await admin.send("POST", "/api/v1/specification/", json.dumps(body)), 400, "YAML aliases")


async def test_out_of_range_numbers_in_bodies(admin: RawClient) -> None:
    environment = f"/api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/"
    refused(await admin.send("PUT", environment, json.dumps({"build_id": 10**30})), 400, f"build id={10**30} does not exist")
    refused(await admin.send("PUT", environment, json.dumps({"build_id": -1})), 400, "build id=-1 does not exist")
    refused(await admin.send("PUT", environment, json.dumps({"build_id": "1"})), 400, "build_id must be a whole number")
    for expiration in ("1e300", "-1e300", "NaN"):
        body = f'{{"expiration": {expiration}}}'.encode()
        refused(await admin.send("POST", "/api/v1/token/", body), 400, "expiration")
    refused(await admin.send("POST", "/api/v1/token/", b'{"expiration": "next tuesday"}'), 400, "ISO 8601")


# --- huge bodies ---------------------------------------------------------------------------------

LIMIT_MESSAGE = (f"larger than {MAX_REQUEST_BYTES} bytes", "max_request_bytes")


def huge_json(size: int) -> bytes:
    """A JSON object of about ``size`` bytes."""
    return json.dumps({"specification": "#" * size}).encode()


@pytest.mark.parametrize("method, path", JSON_ROUTES, ids=[f"{m} {p}" for m, p in JSON_ROUTES])
async def test_a_body_over_max_request_bytes_is_refused(admin: RawClient, method: str, path: str) -> None:
    refused(await admin.send(method, path, huge_json(MAX_REQUEST_BYTES + 1)), 413, *LIMIT_MESSAGE)


async def test_a_chunked_body_over_max_request_bytes_is_refused(admin: RawClient) -> None:
    """No Content-Length to check up front: the limit holds while the body streams in."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"specification": "'
        for _ in range(3 * MAX_REQUEST_BYTES // 65536):
            yield b"#" * 65536
        yield b'"}'

    refused(await admin.send("POST", "/api/v1/specification/", chunks()), 413, *LIMIT_MESSAGE)


async def test_a_form_body_over_max_request_bytes_is_refused(anonymous: RawClient) -> None:
    form = aiohttp.FormData({"username": "someone", "password": "#" * (MAX_REQUEST_BYTES + 1)})
    refused(await anonymous.send("POST", "/login/", form), 413, *LIMIT_MESSAGE)


async def test_a_body_under_the_limit_is_read(admin: RawClient) -> None:
    body = json.dumps({"no_such_setting": "#" * (MAX_REQUEST_BYTES - 1024)}).encode()
    assert len(body) < MAX_REQUEST_BYTES

    refused(await admin.send("PUT", "/api/v1/setting/", body), 400, "Invalid setting keys", "no_such_setting")


async def test_a_specification_too_large_for_one_event_is_stored_and_accepted(admin: RawClient) -> None:
    """Under max_request_bytes, but over what one event can carry: the specification goes to
    storage and the event carries its digest, so the submission is accepted as any other."""
    packages = [
        {
            "name": f"package-{index}",
            "version": "1.0",
            "manager": "conda",
            "platform": "linux-64",
            "dependencies": {},
            # Loopback, on a port nothing listens on: the build fails fast, nothing leaves the machine.
            "url": f"http://127.0.0.1:9/linux-64/package-{index}-1.0-0.conda",
            "hash": {"md5": "0" * 32, "sha256": "0" * 64},
            "category": "main",
            "optional": False,
        }
        for index in range(5000)
    ]
    lockfile = {
        "version": 1,
        "metadata": {"platforms": ["linux-64"], "channels": [], "sources": [], "content_hash": {}},
        "package": packages,
    }
    body = json.dumps(
        {"namespace": NAMESPACE, "is_lockfile": True, "environment_name": "huge", "specification": json.dumps(lockfile)}
    ).encode()
    assert 1024 * 1024 < len(body) < MAX_REQUEST_BYTES

    status, answer = await admin.send("POST", "/api/v1/specification/", body)
    assert status == 200, answer
    status, build = await admin.send("GET", f"/api/v1/build/{answer['data']['build_id']}/")
    assert status == 200, build
    assert len(build["data"]["specification"]["spec"]["lockfile"]["package"]) == 5000


# --- path traversal ------------------------------------------------------------------------------

STORAGE_TRAVERSALS = (
    "/storage/../../../../etc/passwd",
    "/storage/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/storage/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/storage/logs/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/storage/%2Fetc%2Fpasswd",
)


@pytest.mark.parametrize("path", STORAGE_TRAVERSALS)
async def test_storage_does_not_serve_files_outside_it(admin: RawClient, path: str) -> None:
    # The admin may read every artifact, so the key itself is what is refused.
    status, body = await admin.send("GET", path)

    refused((status, body), 404, "no artifact named")
    assert "root:" not in json.dumps(body)


@pytest.mark.parametrize(
    "path",
    (
        "/api/v1/build/..%2F1/",
        "/api/v1/build/1%2F..%2F..%2F/logs/",
        "/api/v1/environment/%2e%2e/%2e%2e/",
        f"/api/v1/environment/{NAMESPACE}/%2e%2e/lockfile/",
        "/api/v1/namespace/%2e%2e/",
    ),
)
async def test_dot_dot_in_api_paths_names_nothing(admin: RawClient, path: str) -> None:
    status, body = await admin.send("GET", path)

    assert status in (400, 404), (status, body)
    assert isinstance(body, dict) and body["status"] == "error" and body["message"], body


@pytest.mark.parametrize("name", (".", ".."))
async def test_dot_names_are_refused(admin: RawClient, name: str) -> None:
    encoded = name.replace(".", "%2e")
    message = f"'{name}' is not allowed"

    refused(await admin.send("POST", f"/api/v1/namespace/{encoded}/"), 400, message)
    spec = environment_yaml("fine", ["hello 2.1.*"])
    body = {"namespace": name, "specification": spec}
    refused(await admin.send("POST", "/api/v1/specification/", json.dumps(body)), 400, message)
    body = {"namespace": NAMESPACE, "specification": environment_yaml(name, ["hello 2.1.*"])}
    refused(await admin.send("POST", "/api/v1/specification/", json.dumps(body)), 400, message)
    lockfile = json.dumps({"version": 1, "metadata": {"platforms": ["linux-64"]}, "package": []})
    body = {"namespace": NAMESPACE, "is_lockfile": True, "environment_name": name, "specification": lockfile}
    refused(await admin.send("POST", "/api/v1/specification/", json.dumps(body)), 400, message)


# --- odd characters in names ---------------------------------------------------------------------

ODD_NAMES = {
    "non-ASCII letter": "na%C3%AFve",
    "emoji": "%F0%9F%98%80",
    "space": "a%20b",
    "encoded slash": "a%2Fb",
    "star": "team*",
    "semicolon": "a%3Bb",
    "quote": "a%27b",
    "backslash": "a%5Cb",
    "percent": "100%25",
    "angle brackets": "%3Cscript%3E",
    "newline": "a%0A",
    "tab": "a%09b",
    "right-to-left override": "a%E2%80%AEb",
}


@pytest.mark.parametrize("encoded", ODD_NAMES.values(), ids=ODD_NAMES.keys())
async def test_odd_characters_in_names_are_refused(admin: RawClient, encoded: str) -> None:
    name = yarl.URL.build(path="/" + encoded, encoded=True).path[1:]

    refused(await admin.send("POST", f"/api/v1/namespace/{encoded}/"), 400, NAME_RULE)
    body = {"namespace": name, "specification": environment_yaml("fine", ["hello 2.1.*"])}
    refused(await admin.send("POST", "/api/v1/specification/", json.dumps(body)), 400, NAME_RULE)
    yaml_name = json.dumps(name, ensure_ascii=False)  # a double-quoted YAML scalar
    body = {"namespace": NAMESPACE, "specification": f"name: {yaml_name}\ndependencies: [hello]\n"}
    refused(await admin.send("POST", "/api/v1/specification/", json.dumps(body)), 400, NAME_RULE)
    # Reading a name that cannot exist: 404, or 403 as conda-store answers (no ARN, not even the
    # admin's "*/*", matches a name outside the character set).
    for path in (f"/api/v1/namespace/{encoded}/", f"/api/v1/environment/{encoded}/{encoded}/"):
        status, answer = await admin.send("GET", path)
        assert status in (403, 404) and answer["status"] == "error", (path, status, answer)


async def test_a_nul_character_anywhere_in_the_url_is_refused(admin: RawClient) -> None:
    for path in ("/api/v1/namespace/a%00b/", "/api/v1/environment/?namespace=a%00b", "/api/v1/package/?search=%00"):
        refused(await admin.send("GET", path), 400, "NUL character")
    refused(await admin.send("POST", "/api/v1/namespace/a%00b/"), 400, "NUL character")


async def test_every_allowed_odd_character_works_end_to_end(admin: RawClient, hostile_stack: EmbeddedStack) -> None:
    name = "a+b@c$d&e?f^g~h.i=j-k_l"
    encoded = name.replace("?", "%3F")

    assert (await admin.send("POST", f"/api/v1/namespace/{encoded}/"))[0] == 200
    status, body = await admin.send("GET", f"/api/v1/namespace/{encoded}/")
    assert status == 200 and body["data"]["name"] == name, body
    async with ApiClient(hostile_stack.api_url, token=hostile_stack.admin_token) as client:
        build_id = await client.submit(environment_yaml(name, ["hello 2.1.*"]), namespace=name)
        build = await client.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    status, body = await admin.send("GET", f"/api/v1/environment/{encoded}/{encoded}/")
    assert status == 200 and body["data"]["current_build_id"] == build_id, body


# --- credentials and query values ----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    (
        b"Authorization: Bearer \xff\xfe",
        b"Authorization: Basic \xff",
        b"Authorization: Basic " + base64.b64encode(b"user:\xff\xfe"),
        b"Authorization: Basic not-base64!",
        b"Authorization: Bearer " + b"x" * 4000,
        b"Authorization: Bearer a.b.c",
        b"Cookie: conda-store-auth=\xff",
    ),
    ids=("non-ASCII bearer", "non-ASCII basic", "non-UTF-8 password", "not base64", "long", "fake JWT", "cookie"),
)
async def test_odd_credentials_mean_anonymous(hostile_stack: EmbeddedStack, header: bytes) -> None:
    status, body = await raw_http(hostile_stack, b"GET /api/v1/permission/ HTTP/1.1\r\n" + header + b"\r\n")

    assert status == 200, body
    assert json.loads(body)["data"]["authenticated"] is False


@pytest.mark.parametrize(
    "query, message",
    (
        ("/api/v1/namespace/?page=%C2%B2", "'page' must be a whole number"),  # "²" is a digit to str.isdigit
        ("/api/v1/namespace/?page=99999999999999999999", "'page' must be a whole number"),
        ("/api/v1/build/?size=-1", "'size' must be a whole number"),
        ("/api/v1/build/?environment_id=99999999999", "'environment_id' must be a whole number"),
        ("/api/v2/environment/?limit=0", "'limit' must be a whole number"),
        ("/api/v2/environment/?order=sideways", "order must be 'asc' or 'desc'"),
        ("/api/v2/environment/?sort_by=id;drop", "Cannot sort results by"),
        ("/api/v1/build/?status=DONE", "status must be one of"),
        ("/api/v1/environment/?artifact=../../x", "artifact must be one of"),
    ),
)
async def test_bad_query_values(admin: RawClient, query: str, message: str) -> None:
    refused(await admin.send("GET", query), 400, message)


@pytest.mark.parametrize(
    "document",
    (
        b'{"last_id": 100000000000000000000000, "last_value": null}',
        b'{"last_id": 1, "last_value": {"name": 5}}',
        b'{"last_id": 1, "last_value": {"name": "a\\u0000"}}',
        b'{"last_id": true, "last_value": null}',
        b"[" * 2_500 + b"]" * 2_500,  # deeper than the JSON parser goes, shorter than a URL may be
        b"not json",
    ),
    ids=("huge id", "number for a name", "NUL in a name", "true for an id", "nested 2,500 deep", "not JSON"),
)
async def test_forged_cursors_are_refused(admin: RawClient, document: bytes) -> None:
    cursor = base64.b64encode(document).decode().replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")

    refused(await admin.send("GET", f"/api/v2/environment/?sort_by=name&cursor={cursor}"), 400, "cursor")


async def test_the_jwt_filter_with_garbage_lists_what_anonymous_sees(admin: RawClient) -> None:
    for token in ("%C3%BF%C3%BE", "a.b.c", "x" * 2000):
        status, body = await admin.send("GET", f"/api/v1/environment/?jwt={token}")
        assert status == 200, body
        assert all(row["namespace"]["name"] == "default" for row in body["data"]), body


# --- the HTTP layer ------------------------------------------------------------------------------


async def raw_http(stack: EmbeddedStack, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request written byte for byte (``head``: request line and headers, each ending in
    CRLF); the answer's status and body."""
    request = head + b"Host: envstore\r\nConnection: close\r\n\r\n" + body
    reader, writer = await asyncio.open_connection(stack.host, stack.api_port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), RAW_HTTP_TIMEOUT_SECONDS)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1."), answer[:300]
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "head, body",
    (
        (b"NOT HTTP AT ALL\r\n", b""),
        (b"GET /api/v1/ HTTP/1.1\r\nX-Long: " + b"a" * 100_000 + b"\r\n", b""),
        (b"GET /api/v1/?" + b"a" * 100_000 + b" HTTP/1.1\r\n", b""),
        (b"POST /api/v1/specification/ HTTP/1.1\r\nContent-Length: -5\r\n", b""),
        (b"POST /api/v1/specification/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", b"zz\r\n"),
    ),
    ids=("garbage", "long header", "long URL", "negative length", "bad chunk"),
)
async def test_malformed_http_gets_a_client_error(hostile_stack: EmbeddedStack, head: bytes, body: bytes) -> None:
    status, _ = await raw_http(hostile_stack, head, body)

    assert 400 <= status < 500


# --- and afterwards ------------------------------------------------------------------------------


async def test_the_service_still_works_afterwards(hostile_stack: EmbeddedStack) -> None:
    """Nothing above left the API down or an event behind that the projector cannot apply."""
    async with ApiClient(hostile_stack.api_url, token=hostile_stack.admin_token) as client:
        build_id = await client.submit(environment_yaml("afterwards", ["hello 2.1.*"]), namespace=NAMESPACE)
        build = await client.wait_for_build(build_id)
        status, body = await client.get(f"/api/v1/environment/{NAMESPACE}/afterwards/")
    assert build["status"] == "COMPLETED", build["status_info"]
    assert status == 200 and body["data"]["current_build_id"] == build_id, body
