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
import collections
import contextlib
import os
import sys
from collections.abc import Sequence
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
    async def take(self, timeout_seconds: float) -> Sequence[tuple[int, LoggedMessage]]:
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

    async def take(self, timeout_seconds: float) -> Sequence[tuple[int, LoggedMessage]]:
        return await self._arrivals.take(self._batch_limit, timeout_seconds)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()  # type: ignore[attr-defined]


class ReceivedFrames(asyncio.Protocol):
    """The reader's stdout, cut into frames as it arrives; their messages wait here until taken
    (everything waiting, up to the limit, at once, as ``Arrivals`` does for nats-py). Past twice
    the limit, reading pauses: the pipe fills, the reader's writes wait, and JetStream's flow
    control holds the server back."""

    def __init__(self, batch_limit: int) -> None:
        self.batch_limit = batch_limit
        self._decoder = msgspec.msgpack.Decoder(list[FramedMessage])
        self._unread = bytearray()
        self._waiting: collections.deque[FramedMessage] = collections.deque()
        self._arrived = asyncio.Event()
        self._ended = False
        self._transport: asyncio.ReadTransport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._unread += data
        start = 0
        while len(self._unread) - start >= FRAME_HEADER.size:
            (size,) = FRAME_HEADER.unpack_from(self._unread, start)
            end = start + FRAME_HEADER.size + size
            if len(self._unread) < end:
                break
            with memoryview(self._unread) as unread:  # released before the bytes read are dropped
                self._waiting.extend(self._decoder.decode(unread[start + FRAME_HEADER.size:end]))
            start = end
        if start:
            del self._unread[:start]
            self._arrived.set()
        if len(self._waiting) >= 2 * self.batch_limit and not self._paused and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool:
        self._ended = True
        self._arrived.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._arrived.set()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def take(self, timeout_seconds: float) -> list[FramedMessage]:
        """Up to the limit of the messages waiting; waits (bounded) for the first; TimeoutError if
        none came, an empty list once the reader's output ended."""
        if not self._waiting and not self._ended:
            self._arrived.clear()
            async with asyncio.timeout(timeout_seconds):
                await self._arrived.wait()
        taken = [self._waiting.popleft() for _ in range(min(self.batch_limit, len(self._waiting)))]
        if self._paused and len(self._waiting) < self.batch_limit and self._transport is not None:
            self._transport.resume_reading()
            self._paused = False
        return taken


class ChildProcessIntake:
    """A reader process's frames."""

    def __init__(self, process: asyncio.subprocess.Process, frames: ReceivedFrames) -> None:
        self._process = process
        self._frames = frames

    @classmethod
    async def open(cls, order: ReadingOrder) -> ChildProcessIntake:
        loop = asyncio.get_running_loop()
        frames = ReceivedFrames(order.batch_limit)
        readable, writable = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", READER_MODULE, stdin=asyncio.subprocess.PIPE, stdout=writable,
            )
        except BaseException:
            os.close(readable)
            raise
        finally:
            os.close(writable)  # the child's now: its end closes when the child ends
        intake = cls(process, frames)
        try:
            await loop.connect_read_pipe(lambda: frames, os.fdopen(readable, "rb", buffering=0))
            assert process.stdin is not None
            process.stdin.write(order.encoded())
            await process.stdin.drain()
        except BaseException:
            await intake.close()
            raise
        return intake

    async def take(self, timeout_seconds: float) -> Sequence[tuple[int, LoggedMessage]]:
        taken = await self._frames.take(timeout_seconds)
        if not taken:
            code = await self._process.wait()
            raise LogReaderEnded(f"the log's reader process ended (exit code {code})")
        return [(message.sequence, message) for message in taken]

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
            self._frames.close()


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
