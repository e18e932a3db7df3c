"""Fuzzing the API from its own OpenAPI document (``/openapi.json``) with schemathesis: requests
valid by the document and requests that break it, as the admin so that every route's deep code
runs. Whatever a client sends, the answer is never a 5xx.

The number of examples is bounded so the module runs in well under two minutes; schemathesis
generates fresh examples on every run, so over many runs the search goes wider."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import APIOperation, GenerationMode

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml

EXAMPLES_PER_OPERATION = 20
REQUEST_TIMEOUT_SECONDS = 60  # a guard against a hung server, not a measurement
READ_MODEL_TIMEOUT_SECONDS = 60  # the same kind of guard
NAMESPACE = "fuzzed"
ENVIRONMENT = "target"


@pytest.fixture(scope="module")
async def fuzz_stack(tmp_path_factory: pytest.TempPathFactory, channel_url: str):  # type: ignore[no-untyped-def]
    # A stack of its own: the fuzzer, as admin, changes global settings and deletes namespaces.
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",  # so that a webhook can exist (it is never answered)
    }
    async with EmbeddedStack(tmp_path_factory.mktemp("fuzz-stack"), settings=settings) as running:
        yield running


@pytest.fixture(scope="module")
async def existing_objects(fuzz_stack: EmbeddedStack) -> dict[str, str]:
    """Path parameters naming objects that exist, so that generated queries and bodies get past
    the routes' existence checks."""
    async with ApiClient(fuzz_stack.api_url, token=fuzz_stack.admin_token) as admin:
        build_id = await admin.submit(environment_yaml(ENVIRONMENT, ["hello 2.1.*"]), namespace=NAMESPACE)
        build = await admin.wait_for_build(build_id)
        assert build["status"] == "COMPLETED", build["status_info"]
        status, webhook = await admin.request("POST", "/api/v1/webhook/", json={"url": "http://127.0.0.1:9/"})
        assert status == 200, webhook
    return {
        "build_id": str(build_id),
        "namespace": NAMESPACE,
        "name": ENVIRONMENT,
        "environment": ENVIRONMENT,
        "webhook_id": str(webhook["data"]["id"]),
    }


@dataclass
class Fuzzer:
    base_url: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)
    requests_sent: int = 0
    server_errors: list[str] = field(default_factory=list)

    def operations(self) -> Iterator[APIOperation]:
        schema = schemathesis.openapi.from_url(f"{self.base_url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        # Deletions last, so that the other operations still meet the objects they delete.
        yield from sorted(operations, key=lambda operation: operation.method.upper() == "DELETE")

    def fuzz(self, operation: APIOperation, path_parameters: dict[str, str] | None = None) -> None:
        for mode in generation_modes(operation):
            self.send_examples(operation, mode, path_parameters)

    def send_examples(
        self, operation: APIOperation, mode: GenerationMode, path_parameters: dict[str, str] | None
    ) -> None:
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        def send(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=self.base_url,
                session=self.session,
                headers={"Authorization": f"Bearer {self.token}"},
                allow_redirects=False,
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
            self.requests_sent += 1
            if response.status_code >= 500:
                self.server_errors.append(
                    f"{operation.label} ({mode.value}) -> {response.status_code} {response.text[:200]!r}\n"
                    f"    {case.as_curl_command()}"
                )

        send()


def generation_modes(operation: APIOperation) -> tuple[GenerationMode, ...]:
    """Requests that break the document need a query or a body to break: string path parameters
    alone cannot be made invalid."""
    locations = {parameter.location.value for parameter in operation.iter_parameters()}
    if "query" in locations or operation.get_request_payload_content_types():
        return (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    return (GenerationMode.POSITIVE,)


def fuzz_every_operation(base_url: str, token: str, pinned: dict[str, str] | None) -> Fuzzer:
    fuzzer = Fuzzer(base_url, token)
    for operation in fuzzer.operations():
        if pinned is None:
            fuzzer.fuzz(operation)
            continue
        names = [parameter.name for parameter in operation.iter_parameters() if parameter.location.value == "path"]
        known = {name: pinned[name] for name in names if name in pinned}
        if known:
            fuzzer.fuzz(operation, known)
    return fuzzer


async def read_model_follows(stack: EmbeddedStack, name: str) -> bool:
    """No request left an event the projector cannot apply: a new namespace still shows up."""
    async with ApiClient(stack.api_url, token=stack.admin_token) as admin:
        status, body = await admin.request("POST", f"/api/v1/namespace/{name}/")
        assert status == 200, body
        deadline = time.monotonic() + READ_MODEL_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            status, _ = await admin.get(f"/api/v1/namespace/{name}/")
            if status == 200:
                return True
            await asyncio.sleep(0.1)
    return False


async def test_generated_requests_never_get_a_server_error(
    fuzz_stack: EmbeddedStack, existing_objects: dict[str, str]
) -> None:
    fuzzer = await asyncio.to_thread(fuzz_every_operation, fuzz_stack.api_url, fuzz_stack.admin_token, None)

    assert fuzzer.requests_sent > 0
    assert not fuzzer.server_errors, "\n".join(fuzzer.server_errors)
    assert await read_model_follows(fuzz_stack, "after-generated-paths"), "the projector stopped"


async def test_generated_requests_on_existing_objects_never_get_a_server_error(
    fuzz_stack: EmbeddedStack, existing_objects: dict[str, str]
) -> None:
    fuzzer = await asyncio.to_thread(
        fuzz_every_operation, fuzz_stack.api_url, fuzz_stack.admin_token, existing_objects
    )

    assert fuzzer.requests_sent > 0
    assert not fuzzer.server_errors, "\n".join(fuzzer.server_errors)
    assert await read_model_follows(fuzz_stack, "after-existing-objects"), "the projector stopped"
