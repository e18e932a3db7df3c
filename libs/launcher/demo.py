"""``envstore demo``: the stack with the offline demo channel, one sample environment built and
run, its artifacts' URLs printed."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aiohttp

from envstore.common.demo_channel import FIVE_PACKAGE_SPEC, make_channel
from envstore.launcher.run_stack import stack_settings_from_environment, wait_for_stop_signal
from envstore.launcher.stack import EmbeddedStack, StackError

DEMO_NAMESPACE = "demo"
DEMO_ENVIRONMENT = "hello-demo"
WAIT_SECONDS = 120
ARTIFACT_ROUTES = {
    "LOCKFILE": "lockfile",
    "YAML": "yaml",
    "LOGS": "logs",
    "CONDA_PACK": "archive",
    "CONSTRUCTOR_INSTALLER": "installer",
}


def sample_specification() -> str:
    lines = [f"name: {DEMO_ENVIRONMENT}", "dependencies:"]
    lines += [f"  - {spec}" for spec in FIVE_PACKAGE_SPEC]
    return "\n".join(lines) + "\n"


async def run_demo(data_directory: Path, host: str, port: int, registry_port: int, keep_running: bool) -> int:
    data_directory = data_directory.resolve()
    channel = await make_channel(data_directory / "demo-channel")
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel,
        **stack_settings_from_environment(),
    }
    stack = EmbeddedStack(data_directory, host, port, registry_port, settings=settings)
    try:
        await stack.start()
    except StackError as error:
        print(f"envstore failed to start: {error}", flush=True)
        await stack.stop()
        return 1
    try:
        print(f"envstore ready: API {stack.api_url}/api/v1/  channel {channel}", flush=True)
        code = await _build_sample(stack)
        if keep_running and code == 0:
            print("staying up; Ctrl-C to stop", flush=True)
            await wait_for_stop_signal()
        return code
    finally:
        await stack.stop()


async def _build_sample(stack: EmbeddedStack) -> int:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    api = f"{stack.url_prefix}/api/v1"
    async with aiohttp.ClientSession(stack.api_origin, headers=headers) as http:
        started = time.perf_counter()
        async with http.post(
            f"{api}/specification/",
            json={"namespace": DEMO_NAMESPACE, "specification": sample_specification()},
        ) as response:
            body = await response.json()
            if response.status != 200:
                print(f"submission refused ({response.status}): {body.get('message')}")
                return 1
        build_id = body["data"]["build_id"]
        build = await _wait_for_end(http, api, build_id)
        elapsed = time.perf_counter() - started
        print(f"build {build_id}: {build['status']} in {elapsed:.2f} s")
        if build["status"] != "COMPLETED":
            print(f"reason: {build['status_info']}")
            return 1
        for artifact in build["build_artifacts"]:
            route = ARTIFACT_ROUTES.get(artifact["artifact_type"])
            if route:
                print(f"  {artifact['artifact_type']:<22} {stack.api_url}/api/v1/build/{build_id}/{route}/")
        async with http.get(f"{api}/build/{build_id}/docker/") as response:
            if response.status == 200:
                print(f"  {'image (skopeo, docker)':<22} {await response.text()}")
    program = stack.data_directory / "envs" / DEMO_NAMESPACE / "envs" / DEMO_ENVIRONMENT / "bin" / "hello"
    result = await asyncio.to_thread(subprocess.run, [str(program)], capture_output=True, text=True)
    print(f"$ {program}\n{result.stdout.strip()}")
    return result.returncode


async def _wait_for_end(http: aiohttp.ClientSession, api: str, build_id: int) -> dict:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        async with http.get(f"{api}/build/{build_id}/") as response:
            build = (await response.json())["data"]
        if build["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            return build
        await asyncio.sleep(0.05)
    raise TimeoutError(f"build {build_id} did not finish in {WAIT_SECONDS} s")
