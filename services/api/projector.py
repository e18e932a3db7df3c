"""The projector: applies every event, in stream order, to PostgreSQL, in the same transaction
that advances the checkpoint (a tracking record), so each event is applied exactly once.

Several API replicas may each run one: the checkpoint update is a compare-and-set, so an event
is applied by whichever replica gets there first and skipped by the others. Waiters (read your
own writes) are woken when the checkpoint passes their sequence, whoever applied it.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from envstore.common.bus import EventBus
from envstore.common.events import BuildSubmitted
from envstore.common.specification_documents import with_full_specification
from envstore.common.storage import Storage
from envstore.common.events import UnknownEvent
from envstore.api.projection import apply_event

log = logging.getLogger(__name__)
CHECKPOINT = "read_model"
BATCH_LIMIT = 500  # events applied in one transaction at most
IDLE_WAIT_SECONDS = 5.0


# Errors that come from an event's content (the same every time), as opposed to an outage.
CONTENT_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    TypeError,
    ValueError,
    KeyError,
)
REJECTIONS_BEFORE_SKIP = 3


class EventRejected(Exception):
    def __init__(self, sequence: int, subject: str, error: BaseException) -> None:
        super().__init__(f"event {sequence} ({subject}): {error}")
        self.sequence = sequence
        self.subject = subject
        self.error = error


class CheckpointMoved(Exception):
    """The read model was reset (or is behind this replica): project again from its checkpoint."""


class Projector:
    def __init__(self, pool: asyncpg.Pool, bus: EventBus, storage: Storage) -> None:
        self.pool = pool
        self.bus = bus
        self.storage = storage  # large specifications live there
        self.applied_sequence = 0
        self._rejections: dict[int, int] = {}  # sequence → times the read model refused it
        self._advanced = asyncio.Condition()

    async def checkpoint(self) -> int:
        async with self.pool.acquire() as connection:
            value = await connection.fetchval(
                "SELECT last_sequence FROM projection_checkpoint WHERE name = $1", CHECKPOINT
            )
        return value or 0

    async def initialize(self) -> None:
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO projection_checkpoint (name, last_sequence) VALUES ($1, 0) "
                "ON CONFLICT DO NOTHING",
                CHECKPOINT,
            )

    async def run(self) -> None:
        """Project forever; recover from database or bus outages by resuming at the checkpoint."""
        while True:
            try:
                await self.initialize()
                await self._project_from_checkpoint()
            except asyncio.CancelledError:
                raise
            except EventRejected as rejection:
                await self._note_rejection(rejection)
            except Exception:
                log.warning("projection interrupted; resuming from the checkpoint", exc_info=True)
                await asyncio.sleep(0.5)

    async def _note_rejection(self, rejection: EventRejected) -> None:
        """An event the read model refuses for what it contains (not an outage) is retried alone,
        then, after ``REJECTIONS_BEFORE_SKIP`` refusals, recorded and skipped, so one bad event
        cannot stop every later one from being shown. It stays in the stream: a rebuild after a
        fix applies it."""
        count = self._rejections.get(rejection.sequence, 0) + 1
        self._rejections[rejection.sequence] = count
        log.error("event %s refused by the read model (%s of %s): %s", rejection.sequence, count,
                  REJECTIONS_BEFORE_SKIP, rejection.error)
        if count < REJECTIONS_BEFORE_SKIP:
            return
        async with self.pool.acquire() as connection:
            async with connection.transaction():
                skipped = await connection.fetchval(
                    """UPDATE projection_checkpoint SET last_sequence = $2
                       WHERE name = $1 AND last_sequence = $2 - 1 RETURNING last_sequence""",
                    CHECKPOINT,
                    rejection.sequence,
                )
                if skipped is not None:
                    await connection.execute(
                        """INSERT INTO projection_skipped_event (sequence, subject, error)
                           VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
                        rejection.sequence,
                        rejection.subject,
                        str(rejection.error)[:2000],
                    )
        self._rejections.pop(rejection.sequence, None)

    async def _project_from_checkpoint(self) -> None:
        start = await self.checkpoint()
        async with self._advanced:
            # May move back: after ``projection rebuild`` the read model starts again from zero.
            self.applied_sequence = start
            self._advanced.notify_all()
        subscription = await self.bus.replay(start + 1)
        try:
            while True:
                try:
                    first = await subscription.next_msg(timeout=IDLE_WAIT_SECONDS)
                except NatsTimeoutError:
                    continue
                # Whatever else has already arrived goes into the same transaction: one commit
                # per batch instead of per event is what makes a replay fast.
                batch = [first]
                # After a refusal the event is retried on its own, to tell it from its neighbours.
                limit = 1 if first.metadata.sequence.stream in self._rejections else BATCH_LIMIT
                while len(batch) < limit and subscription.pending_msgs > 0:
                    batch.append(await subscription.next_msg(timeout=1))
                await self._apply_batch([message for message in batch if self._is_new(message)])
        finally:
            try:
                await subscription.unsubscribe()
            except Exception:
                pass

    def _is_new(self, message: Msg) -> bool:
        return message.metadata.sequence.stream > self.applied_sequence

    async def _apply_batch(self, messages: list[Msg]) -> None:
        if not messages:
            return
        sequences = [message.metadata.sequence.stream for message in messages]
        first, last = sequences[0], sequences[-1]
        if sequences != list(range(first, last + 1)):
            raise CheckpointMoved(f"events {first}..{last} did not arrive in one run")
        async with self.pool.acquire() as connection:
            async with connection.transaction():
                # Strictly the next sequences (the stream has no gaps: events are never deleted).
                claimed = await connection.fetchval(
                    """UPDATE projection_checkpoint SET last_sequence = $3
                       WHERE name = $1 AND last_sequence = $2 - 1 RETURNING last_sequence""",
                    CHECKPOINT,
                    first,
                    last,
                )
                if claimed is not None:
                    for message, sequence in zip(messages, sequences):
                        await self._apply_one(connection, message, sequence)
        if claimed is None:
            current = await self.checkpoint()
            if current < last:
                raise CheckpointMoved(f"checkpoint is {current}, expected {first - 1}")
        await self._advance_to(last)

    async def _apply_one(self, connection: asyncpg.Connection, message: Msg, sequence: int) -> None:
        try:
            event = self.bus.codec.decode(message.subject, message.data)
        except UnknownEvent:
            return
        except msgspec.ValidationError as error:
            raise EventRejected(sequence, message.subject, error) from error
        if isinstance(event, BuildSubmitted):
            event = await with_full_specification(event, self.storage)
        with self.bus.telemetry.projection_span(message.subject, sequence, message.headers):
            try:
                await apply_event(connection, event, sequence)
            except CONTENT_ERRORS as error:
                raise EventRejected(sequence, message.subject, error) from error

    async def _advance_to(self, sequence: int) -> None:
        async with self._advanced:
            if sequence > self.applied_sequence:
                self.applied_sequence = sequence
                self._advanced.notify_all()

    async def wait_for(self, sequence: int, timeout_seconds: float) -> bool:
        """Wait (bounded) until the read model includes ``sequence``; True if it does."""
        async def reached() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self.applied_sequence >= sequence)

        try:
            await asyncio.wait_for(reached(), timeout_seconds)
            return True
        except TimeoutError:
            # Another replica may have applied it: trust the database's checkpoint.
            return await self.checkpoint() >= sequence
