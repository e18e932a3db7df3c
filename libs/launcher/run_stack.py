"""``envstore up``: the embedded stack in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from envstore.launcher.stack import EmbeddedStack, StackError


def stack_settings_from_environment() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key.startswith("ENVSTORE_")}


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    await stop.wait()


async def run_stack(data_directory: Path, host: str, port: int, registry_port: int) -> int:
    stack = EmbeddedStack(
        data_directory, host, port, registry_port, settings=stack_settings_from_environment()
    )
    try:
        await stack.start()
    except StackError as error:
        print(f"envstore failed to start: {error}", flush=True)
        await stack.stop()
        return 1
    print(
        f"envstore ready: API {stack.api_url}/api/v1/  registry {stack.registry_url}/v2/  "
        f"data {stack.data_directory}  admin token in ENVSTORE_ADMIN_TOKEN={stack.admin_token}",
        flush=True,
    )
    try:
        await wait_for_stop_signal()
    finally:
        await stack.stop()
    print("envstore stopped", flush=True)
    return 0
