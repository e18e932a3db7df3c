"""The ``envstore`` command: run the whole stack, one service, the demo, or maintenance tasks."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from envstore.launcher.stack import OPTIONAL_SERVICES, SERVICES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="envstore", description="Serve conda environments.")
    commands = parser.add_subparsers(dest="command", required=True)

    def stack_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--data-dir", type=Path, default=Path("envstore-data"))
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=8080, help="API port")
        command.add_argument("--registry-port", type=int, default=5000)

    up = commands.add_parser("up", help="run NATS, PostgreSQL and every service on loopback")
    stack_options(up)
    demo = commands.add_parser("demo", help="run the stack with a local channel and build a sample")
    stack_options(demo)
    demo.add_argument("--keep-running", action="store_true")
    channel = commands.add_parser("make-channel", help="write the offline demo conda channel")
    channel.add_argument("directory", type=Path)
    channel.add_argument(
        "--big", action="store_true", help="instead, the benchmark's real-size channel (~120 packages, ~700 MB installed)"
    )
    channel.add_argument(
        "--host-python", action="store_true", help="add a python package made from the running interpreter (needs patchelf)"
    )
    service = commands.add_parser("service", help="run one service in the foreground")
    service.add_argument("name", choices=(*SERVICES, *OPTIONAL_SERVICES))
    projection = commands.add_parser("projection", help="read model maintenance")
    projection.add_argument("action", choices=["rebuild"])
    return parser


def main(argv: list[str] | None = None) -> None:
    arguments = _parser().parse_args(argv)
    code = 0
    if arguments.command == "up":
        from envstore.launcher.run_stack import run_stack

        code = asyncio.run(run_stack(arguments.data_dir, arguments.host, arguments.port, arguments.registry_port))
    elif arguments.command == "demo":
        from envstore.launcher.demo import run_demo

        code = asyncio.run(
            run_demo(arguments.data_dir, arguments.host, arguments.port, arguments.registry_port, arguments.keep_running)
        )
    elif arguments.command == "make-channel" and arguments.big:
        from envstore.common.demo_channel.big_channel import make_big_channel

        big = asyncio.run(make_big_channel(arguments.directory))
        print(big.url)
        print(f"{big.package_count} packages, {big.package_bytes} bytes of packages, {big.installed_bytes} installed")
        print("specification: " + " ".join(big.specs))
    elif arguments.command == "make-channel":
        from envstore.common.demo_channel import make_channel

        print(asyncio.run(make_channel(arguments.directory, host_python=arguments.host_python)))
    elif arguments.command == "service":
        import runpy

        runpy.run_module(f"envstore.{arguments.name}", run_name="__main__")
    elif arguments.command == "projection":
        from envstore.api.rebuild import rebuild_projection
        from envstore.common.settings import EnvstoreSettings

        sequence = asyncio.run(rebuild_projection(EnvstoreSettings()))
        print(f"read model rebuilt from the event stream up to sequence {sequence}")
    # py-rattler 0.28 may crash during interpreter teardown (TOOLING.md): leave directly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
