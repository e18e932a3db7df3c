"""Where the projector's events come from: the log, in stream order, from a sequence on.

Reading the log costs the projector's one Python thread more than anything else but applying it:
nats-py parses every message and its headers in Python. So by default a child process reads it
(``envstore.api.log_reader``) and hands each batch on over a pipe as one msgpack frame of
(sequence, subject, payload, headers), which this process decodes in one call; the child uses the
other core, and the applying thread only applies. ``projection_reader = "in-process"`` reads with
nats-py in this process instead (one process fewer per API replica).

The child is told what to read on its stdin (the bus's address and credentials: never on its
command line or in its environment) and keeps reading it: when this process dies, stdin ends and
the child exits. When the child dies, ``take`` raises ``LogReaderEnded`` and the projector resumes
from its checkpoint with a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Protocol

import msgspec

from envstore.api.log_frames import FRAME_HEADER, FramedMessage, ReadingOrder
from envstore.common.arrivals import Arrivals
from envstore.common.events import STREAM_SUBJECTS
from envstore.common.settings import EnvstoreSettings
from envstore.common.transport import EventBus

READER_MODULE = "envstore.api.log_reader"
STOP_SECONDS = 1.0  # the child's time to unsubscribe and go once told to, before it is killed


class LoggedMessage(Protocol):
    """What the projector reads of a message of the log (a nats-py ``Msg`` is one)."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...


class LogReaderEnded(ConnectionError):
    """The reader process is gone (killed, or it lost the bus for good)."""


class LogIntake(Protocol):
    async def take(self, timeout_seconds: float) -> list[tuple[int, LoggedMessage]]:
        """The next messages, in order (a batch of at most the intake's limit); waits (bounded)
        for the first; TimeoutError if none came."""
        ...

    async def close(self) -> None: ...


class InProcessIntake:
    """nats-py's ordered consumer in this process."""

    def __init__(self, arrivals: Arrivals, subscription: object, batch_limit: int) -> None:
        self._arrivals = arrivals
        self._subscription = subscription
        self._batch_limit = batch_limit

    @classmethod
    async def open(cls, bus: EventBus, start: int, batch_limit: int) -> InProcessIntake:
        arrivals = Arrivals(batch_limit * 2)
        return cls(arrivals, await bus.replay(start, arrivals=arrivals), batch_limit)

    async def take(self, timeout_seconds: float) -> list[tuple[int, LoggedMessage]]:
        return list(await self._arrivals.take(self._batch_limit, timeout_seconds))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()  # type: ignore[attr-defined]


class ChildProcessIntake:
    """A reader process's frames."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._frames = process.stdout
        self._decoder = msgspec.msgpack.Decoder(list[FramedMessage])

    @classmethod
    async def open(cls, order: ReadingOrder) -> ChildProcessIntake:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", READER_MODULE,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**24,
        )
        intake = cls(process)
        try:
            assert process.stdin is not None
            process.stdin.write(order.encoded())
            await process.stdin.drain()
        except BaseException:
            await intake.close()
            raise
        return intake

    async def take(self, timeout_seconds: float) -> list[tuple[int, LoggedMessage]]:
        try:
            # Waiting for a frame's header consumes nothing until all of it is there, so a
            # timeout here never cuts a frame.
            async with asyncio.timeout(timeout_seconds):
                header = await self._frames.readexactly(FRAME_HEADER.size)
            (size,) = FRAME_HEADER.unpack(header)
            frame = await self._frames.readexactly(size)
        except asyncio.IncompleteReadError:
            code = await self._process.wait()
            raise LogReaderEnded(f"the log's reader process ended (exit code {code})") from None
        return [(message.sequence, message) for message in self._decoder.decode(frame)]

    async def close(self) -> None:
        """Tell the child to go (its stdin ends), and kill it if it has not within a second."""
        process = self._process
        try:
            if process.stdin is not None:
                process.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_SECONDS):
                    await process.wait()
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


class IntakeOpener(Protocol):
    async def __call__(self, start: int, batch_limit: int, with_headers: bool) -> LogIntake: ...


def in_process_opener(bus: EventBus) -> IntakeOpener:
    async def opened(start: int, batch_limit: int, with_headers: bool) -> LogIntake:
        return await InProcessIntake.open(bus, start, batch_limit)

    return opened


def configured_opener(settings: EnvstoreSettings, bus: EventBus, identity: str) -> IntakeOpener:
    """The intake the settings choose (``projection_reader``), reading as ``identity``."""
    if settings.projection_reader == "in-process":
        return in_process_opener(bus)
    seed = settings.nats_credentials.get_secret_value() if settings.nats_credentials else None

    async def opened(start: int, batch_limit: int, with_headers: bool) -> LogIntake:
        return await ChildProcessIntake.open(ReadingOrder(
            settings.nats_url, settings.nats_stream, STREAM_SUBJECTS, identity, seed, settings.nats_tls_ca,
            start, batch_limit, with_headers,
        ))

    return opened
