"""``envstore up``: the embedded stack in the foreground, supervised, until SIGINT/SIGTERM, which
stop it in order (services, then NATS, PostgreSQL and S3) — also while it is still starting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from envstore.api.login_policy import login_password, password_file
from envstore.common.logs import configure_logging
from envstore.common.settings import EnvstoreSettings
from envstore.launcher.child_process import ServerProcessError
from envstore.launcher.stack import EmbeddedStack, StackError


def stack_settings_from_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith("ENVSTORE_")}


def stop_signals() -> asyncio.Event:
    """Set on SIGINT or SIGTERM (from now on, instead of the default of dying at once, which would
    leave the children running)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    return stop


async def wait_for_stop_signal() -> None:
    await stop_signals().wait()


def login_password_source(stack: EmbeddedStack) -> str:
    """Where the password backend's password is: the setting that gives it, or the file generated
    now (once) in the data directory, so it can be named before any service starts."""
    for variable in ("ENVSTORE_AUTH_PASSWORD", "ENVSTORE_AUTH_PASSWORD_FILE"):
        if stack.extra_settings.get(variable):
            return variable
    settings = EnvstoreSettings(data_dir=stack.data_directory)
    login_password(settings)
    return str(password_file(settings))


async def run_stack(
    data_directory: Path,
    host: str,
    port: int,
    registry_port: int,
    *,
    replicas: int = 1,
    nats_nodes: int = 1,
    tls: bool = False,
) -> int:
    # The supervisor's restarts, with their exit statuses, go to stderr.
    configure_logging("launcher")
    stack = EmbeddedStack(
        data_directory, host, port, registry_port, settings=stack_settings_from_environment(),
        replicas=replicas, nats_nodes=nats_nodes, tls=tls,
    )
    password = login_password_source(stack)
    stop = stop_signals()
    starting = asyncio.create_task(stack.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await stack.stop()
        print("envstore stopped before it was ready", flush=True)
        return 0
    try:
        starting.result()
    except (StackError, ServerProcessError) as error:
        stopping.cancel()
        print(f"envstore failed to start: {error}", flush=True)
        await stack.stop()
        return 1
    admin_token = "ENVSTORE_ADMIN_TOKEN" if "ENVSTORE_ADMIN_TOKEN" in stack.extra_settings else stack.admin_token_file
    print(
        f"envstore ready: API {stack.api_url}/api/v1/  UI {stack.api_url}/ui/  registry {stack.registry_url}/v2/  "
        f"data {stack.data_directory}  admin token in {admin_token}  login password in {password}"
        + (f"  TLS to NATS and PostgreSQL, CA in {stack.tls_authority_file}" if stack.tls_authority_file else ""),
        flush=True,
    )
    print(
        f"{stack.replica_count} replica(s) of each service, {len(stack.nats.nodes)} NATS node(s); "
        f"processes: envstore ps --data-dir {stack.data_directory}; launcher metrics {stack.launcher_metrics_url}",
        flush=True,
    )
    try:
        await stopping
    finally:
        await stack.stop()
    print("envstore stopped", flush=True)
    return 0
