"""``envstore up``: the embedded stack in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from envstore.api.login_policy import login_password, password_file
from envstore.common.settings import EnvstoreSettings
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


def login_password_source(stack: EmbeddedStack) -> str:
    """Where the password backend's password is: the setting that gives it, or the file generated
    now (once) in the data directory, so it can be named before any service starts."""
    for variable in ("ENVSTORE_AUTH_PASSWORD", "ENVSTORE_AUTH_PASSWORD_FILE"):
        if stack.extra_settings.get(variable):
            return variable
    settings = EnvstoreSettings(data_dir=stack.data_directory)
    login_password(settings)
    return str(password_file(settings))


async def run_stack(data_directory: Path, host: str, port: int, registry_port: int) -> int:
    stack = EmbeddedStack(
        data_directory, host, port, registry_port, settings=stack_settings_from_environment()
    )
    password = login_password_source(stack)
    try:
        await stack.start()
    except StackError as error:
        print(f"envstore failed to start: {error}", flush=True)
        await stack.stop()
        return 1
    admin_token = "ENVSTORE_ADMIN_TOKEN" if "ENVSTORE_ADMIN_TOKEN" in stack.extra_settings else stack.admin_token_file
    print(
        f"envstore ready: API {stack.api_url}/api/v1/  UI {stack.api_url}/ui/  registry {stack.registry_url}/v2/  "
        f"data {stack.data_directory}  admin token in {admin_token}  login password in {password}",
        flush=True,
    )
    try:
        await wait_for_stop_signal()
    finally:
        await stack.stop()
    print("envstore stopped", flush=True)
    return 0
