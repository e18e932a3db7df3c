"""The bus admits only envstore's identities, and each may publish only its own events: tried
against a real nats-server configured as ``envstore up`` configures it. Every identity is tried on
every event type's subjects (in an ordinary namespace and in ``conda-store-dynamic``); what the
catalogue says it publishes lands in the stream, everything else is a permission violation and
lands nowhere. The expectations are read from the catalogue (``PUBLISHED_BY``,
``PUBLISHED_IN_NAMESPACE``), not from the permission table under test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from envstore.common.bus_permissions import IDENTITIES, PROJECTION_REBUILD, SERVICE_IDENTITIES, SUPERUSER
from envstore.common.events import EVENT_TYPES, BuildProgress, BuildSolved, Event, subject_patterns
from envstore.common.specification import DYNAMIC_NAMESPACE
from envstore.common.transport import BusAccessRefused, EventBus, inbox_prefix
from envstore.common.worker_runtime import ConsumerSettings
from envstore.launcher.nats_auth import NatsCredentials
from envstore.launcher.nats_process import NatsServer

STREAM = "ENVSTORE"
VIOLATION_WAIT_SECONDS = 5.0
# Stand-ins for the wildcards of each subject pattern: an ordinary namespace, and the dynamic
# images' one (where the registry may submit builds).
NAMESPACES = ("team", DYNAMIC_NAMESPACE)


@dataclass
class Bus:
    server: NatsServer
    credentials: NatsCredentials


@pytest.fixture(scope="module")
async def bus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    directory = tmp_path_factory.mktemp("bus-permissions")
    credentials = NatsCredentials(directory / "credentials")
    server = NatsServer(directory / "nats", authorization=credentials.authorization(STREAM))
    await server.start()
    try:
        api = await EventBus.connect(server.url, STREAM, name="api", seed=credentials.seed("api"))
        await api.ensure_stream()
        await api.close()
        yield Bus(server, credentials)
    finally:
        await server.stop()


class Connection:
    """A plain NATS client as one identity, collecting the server's permission violations."""

    def __init__(self, client: Client, violations: asyncio.Queue[str]) -> None:
        self.client = client
        self.violations = violations

    @classmethod
    async def open(cls, bus: Bus, identity: str) -> Connection:
        violations: asyncio.Queue[str] = asyncio.Queue()

        async def on_error(error: Exception) -> None:
            if "permissions violation" in str(error).lower():
                await violations.put(str(error).lower())

        client = await nats.connect(
            bus.server.url,
            nkeys_seed_str=bus.credentials.seed(identity),
            inbox_prefix=inbox_prefix(identity),
            error_cb=on_error,
            allow_reconnect=False,
        )
        return cls(client, violations)

    async def refused_publish(self, subject: str) -> bool:
        """Publish; True when the server answers with a violation naming the subject."""
        await self.client.publish(subject, b'{"type": "forged"}')
        await self.client.flush()
        try:
            violation = await asyncio.wait_for(self.violations.get(), VIOLATION_WAIT_SECONDS)
        except TimeoutError:
            return False
        assert f'"{subject.lower()}"' in violation, violation
        return True

    async def close(self) -> None:
        await self.client.close()


def concrete_subjects(event_type: type[Event]) -> list[tuple[str, str | None]]:
    """Each subject pattern of a type made concrete, with the namespace it is in (if any)."""
    made = []
    for pattern in subject_patterns(event_type):
        if ".ns.*." in pattern:
            for namespace in NAMESPACES:
                subject = pattern.replace(".ns.*.", f".ns.{namespace}.", 1).replace("*", "7")
                made.append((subject, namespace))
        else:
            made.append((pattern.replace("*", "7"), None))
    return made


def may_publish(identity: str, event_type: type[Event], namespace: str | None) -> bool:
    """What the catalogue says."""
    if identity not in event_type.PUBLISHED_BY:
        return False
    only_in = event_type.PUBLISHED_IN_NAMESPACE.get(identity)
    return only_in is None or only_in == namespace


async def last_sequence(bus: Bus) -> int:
    reader = await EventBus.connect(bus.server.url, STREAM, name=PROJECTION_REBUILD, seed=bus.credentials.seed(PROJECTION_REBUILD))
    try:
        return await reader.last_sequence()
    finally:
        await reader.close()


async def test_a_client_without_credentials_cannot_connect(bus: Bus) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(bus.server.url, allow_reconnect=False)
    with pytest.raises(BusAccessRefused, match="refused 'api' \\(no credentials\\)"):
        await EventBus.connect(bus.server.url, STREAM, name="api")


async def test_a_key_the_server_does_not_know_cannot_connect(bus: Bus, tmp_path: Path) -> None:
    stranger = NatsCredentials(tmp_path).seed("api")
    with pytest.raises(BusAccessRefused, match="refused 'api' \\(its nkey seed\\)"):
        await EventBus.connect(bus.server.url, STREAM, name="api", seed=stranger)


@pytest.mark.parametrize("identity", [identity for identity in IDENTITIES if identity != SUPERUSER])
async def test_each_identity_publishes_its_own_events_and_nothing_else_lands(bus: Bus, identity: str) -> None:
    connection = await Connection.open(bus, identity)
    try:
        before = await last_sequence(bus)
        refused, accepted = [], []
        for event_type in EVENT_TYPES:
            for subject, namespace in concrete_subjects(event_type):
                if may_publish(identity, event_type, namespace):
                    accepted.append(subject)
                else:
                    assert await connection.refused_publish(subject), f"{identity} may publish on {subject}"
                    refused.append(subject)
        assert await last_sequence(bus) == before, f"a refused publish of {identity} landed in the stream"
        jetstream = connection.client.jetstream()
        for subject in accepted:
            acknowledgement = await jetstream.publish(subject, b"{}", stream=STREAM, timeout=5)
            assert acknowledgement.stream == STREAM
        assert await last_sequence(bus) == before + len(accepted)
        assert refused, "every identity is refused some event"
        assert bool(accepted) == (identity in SERVICE_IDENTITIES), "every service publishes, the rebuild nothing"
    finally:
        await connection.close()


async def test_the_registry_submits_builds_in_the_dynamic_namespace_only(bus: Bus) -> None:
    connection = await Connection.open(bus, "registry")
    try:
        assert await connection.refused_publish("envstore.ns.team.env.tools.build.8.build.submitted")
        jetstream = connection.client.jetstream()
        acknowledgement = await jetstream.publish(
            f"envstore.ns.{DYNAMIC_NAMESPACE}.env.hello.build.8.build.submitted", b"{}", stream=STREAM, timeout=5
        )
        assert acknowledgement.seq > 0
    finally:
        await connection.close()


@pytest.mark.parametrize("identity", [identity for identity in IDENTITIES if identity not in ("api", SUPERUSER)])
async def test_only_the_api_manages_the_stream(bus: Bus, identity: str) -> None:
    connection = await Connection.open(bus, identity)
    try:
        for operation in ("STREAM.DELETE", "STREAM.PURGE", "STREAM.UPDATE", "STREAM.CREATE"):
            assert await connection.refused_publish(f"$JS.API.{operation}.{STREAM}"), (identity, operation)
        assert await connection.refused_publish(f"$JS.API.STREAM.MSG.DELETE.{STREAM}")
    finally:
        await connection.close()
    reader = await Connection.open(bus, PROJECTION_REBUILD)
    try:
        info = await reader.client.jetstream().stream_info(STREAM)
        assert info.config.subjects == ["envstore.>"]
    finally:
        await reader.close()


async def test_a_worker_cannot_rewrite_another_workers_consumer(bus: Bus) -> None:
    """An unnamed consumer request carrying another's name would rewrite it: workers may not send it."""
    builder = await EventBus.connect(bus.server.url, STREAM, name="builder", seed=bus.credentials.seed("builder"))
    try:
        settings = ConsumerSettings(durable="builder", subjects=[BuildSolved.subject_pattern()])
        await builder.jetstream.add_consumer(STREAM, settings.consumer_config())
        solver = await Connection.open(bus, "solver")
        try:
            assert await solver.refused_publish(f"$JS.API.CONSUMER.CREATE.{STREAM}")
            assert await solver.refused_publish(f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.builder")
            assert await solver.refused_publish(f"$JS.API.CONSUMER.DELETE.{STREAM}.builder")
            assert await solver.refused_publish(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.builder")
            request = {"stream_name": STREAM, "config": {"name": "builder", "filter_subject": "envstore.>"}}
            with pytest.raises(nats.errors.TimeoutError):
                await solver.client.request(f"$JS.API.CONSUMER.CREATE.{STREAM}", json.dumps(request).encode(), timeout=1)
        finally:
            await solver.close()
        info = await builder.jetstream.consumer_info(STREAM, "builder")
        assert info.config.filter_subjects == [BuildSolved.subject_pattern()]
    finally:
        await builder.close()


@pytest.mark.parametrize("identity", [identity for identity in IDENTITIES if identity != SUPERUSER])
async def test_no_identity_listens_to_the_events_or_to_anothers_answers(bus: Bus, identity: str) -> None:
    connection = await Connection.open(bus, identity)
    try:
        for subject in ("envstore.>", "envstore.ns.team.namespace.created", f"{inbox_prefix('other')}.>", "_INBOX.>"):
            await connection.client.subscribe(subject)
            await connection.client.flush()
            violation = await asyncio.wait_for(connection.violations.get(), VIOLATION_WAIT_SECONDS)
            assert "subscription" in violation and subject.lower() in violation, violation
    finally:
        await connection.close()


async def test_a_publisher_cannot_choose_the_principal_it_publishes_as(bus: Bus) -> None:
    solver = await EventBus.connect(bus.server.url, STREAM, name="solver", seed=bus.credentials.seed("solver"))
    try:
        acknowledgement = await solver.publish(
            BuildProgress(build_id=9, phase="solve", state="note", principal="user:admin"), "principal-test"
        )
        assert (await solver.event_at(acknowledgement.seq)).principal == "service:solver"
    finally:
        await solver.close()
