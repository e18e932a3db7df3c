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

    up = commands.add_parser("up", help="run NATS, PostgreSQL and every service on loopback, supervised")
    stack_options(up)
    up.add_argument(
        "--replicas", type=positive_count, default=1,
        help="processes of each of api, solver, builder, packager and registry (default 1)",
    )
    up.add_argument(
        "--nats-nodes", type=nats_node_count, default=1,
        help="NATS servers: 1, or a JetStream cluster of 3 (or 5) on loopback with the stream on every node",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="TLS to NATS and PostgreSQL: a local CA and their certificates are generated into the data directory",
    )
    ps = commands.add_parser("ps", help="list the processes and endpoints of the stack running in --data-dir")
    ps.add_argument("--data-dir", type=Path, default=Path("envstore-data"), help="the running stack's data directory")
    ps.add_argument("--json", action="store_true", help="one JSON document instead of a table")
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
    credentials = commands.add_parser(
        "nats-credentials",
        help="write an nkey seed per NATS identity (kept if present) and nats-server's authorization into a directory",
    )
    credentials.add_argument("directory", type=Path)
    credentials.add_argument("--stream", default="ENVSTORE", help="the event stream's name (ENVSTORE_NATS_STREAM)")
    credentials.add_argument(
        "--filesystem-namespace", default="filesystem", help="the filesystem namespace's name (ENVSTORE_FILESYSTEM_NAMESPACE)"
    )
    projection = commands.add_parser("projection", help="read model maintenance")
    projection.add_argument("action", choices=["rebuild"])
    projection.add_argument(
        "--data-dir", type=Path,
        help="act on the stack `envstore up` runs there (else: the ENVSTORE_* environment variables)",
    )
    export = commands.add_parser(
        "export", help="write a namespace (or, without --namespace, the whole stack) with its history and blobs into FILE"
    )
    export.add_argument("file", type=Path)
    export.add_argument("--namespace", default=None)
    export.add_argument("--data-dir", type=Path, help="act on the stack `envstore up` runs there (else: ENVSTORE_*)")
    importing = commands.add_parser("import", help="recreate what an export FILE holds in this stack (new ids)")
    importing.add_argument("file", type=Path)
    importing.add_argument("--data-dir", type=Path, help="act on the stack `envstore up` runs there (else: ENVSTORE_*)")
    importing.add_argument(
        "--nats-credentials", type=Path,
        help="the bus superuser's nkey seed file (an import publishes every kind of event); default with "
        "--data-dir: its nats-credentials/superuser.nk; compose and Kubernetes: nats-superuser.nk",
    )
    gc = commands.add_parser(
        "gc", help="collect storage blobs and package-cache entries no live build references (settings from ENVSTORE_*)"
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be collected and the bytes freed")
    gc.add_argument("--grace-seconds", type=float, default=None, help="default: the gc_grace_seconds setting")
    gc.add_argument(
        "--data-dir", type=Path,
        help="act on the stack `envstore up` runs there (else: the ENVSTORE_* environment variables)",
    )
    return parser


def positive_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {count}")
    return count


def nats_node_count(text: str) -> int:
    count = positive_count(text)
    if count % 2 == 0:
        # JetStream needs a majority of nodes: 2 stop when either does, 4 tolerate no more than 3.
        raise argparse.ArgumentTypeError(f"use an odd number of NATS nodes (1, 3, 5), not {count}: JetStream needs a majority up")
    return count


def use_running_stack_settings(data_directory: Path) -> None:
    """Point this process's settings at the stack running in ``data_directory`` (its state file)."""
    from envstore.launcher.stack_state import StackStateError, read_running_state

    try:
        state = read_running_state(data_directory)
    except StackStateError as error:
        print(f"envstore: {error}", file=sys.stderr, flush=True)
        os._exit(1)
    os.environ.update(state.operator_settings)


def superuser_credentials_file(data_directory: Path) -> Path:
    from envstore.common.bus_permissions import SUPERUSER
    from envstore.launcher.nats_auth import NatsCredentials
    from envstore.launcher.stack import NATS_CREDENTIALS_DIRECTORY

    return NatsCredentials(data_directory.resolve() / NATS_CREDENTIALS_DIRECTORY).seed_file(SUPERUSER)


def main(argv: list[str] | None = None) -> None:
    arguments = _parser().parse_args(argv)
    code = 0
    if arguments.command == "up":
        from envstore.launcher.run_stack import run_stack

        code = asyncio.run(
            run_stack(
                arguments.data_dir, arguments.host, arguments.port, arguments.registry_port,
                replicas=arguments.replicas, nats_nodes=arguments.nats_nodes, tls=arguments.tls,
            )
        )
    elif arguments.command == "ps":
        from envstore.launcher.process_status import print_status
        from envstore.launcher.stack_state import StackStateError

        try:
            code = asyncio.run(print_status(arguments.data_dir, arguments.json))
        except StackStateError as error:
            print(f"envstore: {error}", file=sys.stderr)
            code = 1
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
    elif arguments.command == "nats-credentials":
        from envstore.launcher.nats_auth import write_deployment_credentials

        for written in write_deployment_credentials(arguments.directory, arguments.stream, arguments.filesystem_namespace):
            print(f"wrote {written}")
    elif arguments.command == "projection":
        from envstore.api.rebuild import rebuild_projection
        from envstore.common.collector_tuning import tune_collector_for_a_long_run
        from envstore.common.settings import EnvstoreSettings

        if arguments.data_dir is not None:
            use_running_stack_settings(arguments.data_dir)
        tune_collector_for_a_long_run()
        sequence = asyncio.run(rebuild_projection(EnvstoreSettings()))
        print(f"read model rebuilt from the event stream up to sequence {sequence}")
    elif arguments.command in ("export", "import"):
        from envstore.common.settings import EnvstoreSettings
        from envstore.launcher.export_format import ExportFileError
        from envstore.launcher.transfer import export_stack, import_export

        if arguments.data_dir is not None:
            use_running_stack_settings(arguments.data_dir)
            if arguments.command == "import" and arguments.nats_credentials is None:
                # Republishing history takes the superuser's key, kept beside the other identities'.
                os.environ["ENVSTORE_NATS_CREDENTIALS_FILE"] = str(superuser_credentials_file(arguments.data_dir))
        if arguments.command == "import" and arguments.nats_credentials is not None:
            os.environ["ENVSTORE_NATS_CREDENTIALS_FILE"] = str(arguments.nats_credentials)
        try:
            if arguments.command == "export":
                manifest = asyncio.run(export_stack(EnvstoreSettings(), arguments.namespace, arguments.file))
                print(
                    f"exported {manifest.events_count} events and {len(manifest.blobs)} blobs "
                    f"({'namespace ' + arguments.namespace if arguments.namespace else 'the whole stack'}) to {arguments.file}"
                    + (f"; {len(manifest.missing_blobs)} referenced blobs were no longer stored" if manifest.missing_blobs else "")
                )
            else:
                report = asyncio.run(import_export(EnvstoreSettings(), arguments.file))
                print(f"imported {report.events} events and {report.blobs} blobs: namespaces {', '.join(report.namespaces)}")
                for source, target in report.builds.items():
                    print(f"build {source} -> {target}")
                for source, target in report.webhooks.items():
                    print(f"webhook {source} -> {target}")
        except ExportFileError as error:
            print(f"envstore {arguments.command}: {error}", file=sys.stderr, flush=True)
            code = 1
    elif arguments.command == "gc":
        from envstore.api.garbage_collection import run_garbage_collection
        from envstore.common.settings import EnvstoreSettings

        if arguments.data_dir is not None:
            use_running_stack_settings(arguments.data_dir)
        report = asyncio.run(run_garbage_collection(EnvstoreSettings(), arguments.grace_seconds, arguments.dry_run))
        print(report.summary())
    # py-rattler 0.28 may crash during interpreter teardown (TOOLING.md): leave directly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
