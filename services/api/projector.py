"""The projector: applies every event, in stream order, to PostgreSQL, in the same transaction
that advances the checkpoint (a tracking record), so each event is applied exactly once.

It fails loud: an event the read model cannot apply (unreadable, of an unknown type, on the wrong
subject, or refused by the read model for its content) stops the projection at that event. The
stall is recorded with the checkpoint (sequence, subject, error), shown by ``/readyz``, the
``envstore_projection_stalled`` metric and ``GET /api/v1/projection/``, and retried every few
seconds (a fixed release applies it). An operator may instead decide to skip it: the decision is
an event of the log (``projection.event_skipped``), so a replay makes the same one, and the event
goes to the dead-letter table. Nothing is skipped silently.

Several API replicas each run one, but one at a time projects: the leader holds a PostgreSQL
advisory lock on a connection of its own; the others stand by, follow the leader's commits
(``NOTIFY``, which also wakes their waiters: read your own writes on any replica) and try the lock
every second, so a killed leader is replaced within about a second (its connection closes, its
lock goes with it). The checkpoint update stays a compare-and-set in the same transaction as the
events, so even two projectors at once (a lock lost mid-batch) apply no event twice. Other
processes reading the read model (the registry) hear of every commit too.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from envstore.api.log_intake import IntakeOpener, LogIntake, LoggedMessage, in_process_opener
from envstore.api.naive_utc import utc
from envstore.api.projection import SQL_APPLIERS, apply_to_rows, apply_with_sql, change_of, rows_wanted
from envstore.api.read_model_change import EVERYTHING, NOTHING, ReadModelChange
from envstore.api.read_model_rows import BatchRows, IdCounters, Statement, StatisticsUpkeep, WantedRows, execute_together
from envstore.common.events import (
    BuildSubmitted,
    Event,
    ProjectionEventSkipped,
    UndecodableEvent,
    aggregate_filters,
    skip_decision_subject,
)
from envstore.common.specification_documents import with_full_specification
from envstore.common.storage import Storage
from envstore.common.task_cancellation import cancel_and_wait
from envstore.common.transport import EventBus

log = logging.getLogger(__name__)
CHECKPOINT = "read_model"
NOTIFY_CHANNEL = "envstore_projection"
LEADER_LOCK = 4242002  # pg_advisory_lock key of the projecting replica (4242001: schema changes)
STANDBY_RETRY_SECONDS = 1.0
BATCH_LIMIT = 2000  # events applied in one transaction at most
# The projector shares the API's event loop: it hands the loop back to requests after this much
# work in a row, so a big batch never holds a request up for longer.
WORK_SLICE_SECONDS = 0.002
IDLE_WAIT_SECONDS = 2.0
IDLE_WAITS_BEFORE_RESUBSCRIBING = 2
DECODED_AHEAD = 3  # batches decoded while earlier ones are still being committed
STALL_RETRY_SECONDS = 5.0
CHECKPOINT_MOVED_SQLSTATE = "EN001"  # raised by envstore_checkpoint_claimed (schema.sql)


# Errors that come from an event's content (the same every time), as opposed to an outage.
CONTENT_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
)


@dataclass(frozen=True)
class Stall:
    """The event the projection stopped at."""

    sequence: int
    subject: str
    error: str
    since: datetime.datetime


class EventRejected(Exception):
    def __init__(self, sequence: int, subject: str, error: BaseException | str) -> None:
        super().__init__(f"event {sequence} ({subject}): {error}")
        self.sequence = sequence
        self.subject = subject
        self.error = str(error)


class RowsRefused(Exception):
    """PostgreSQL refused the rows of a batch of events (which event's, it does not say)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class DecodedBatch:
    """Events decoded for one transaction, in stream order, up to ``last`` (or up to a rejected one)."""

    last: int
    events: list[tuple[LoggedMessage, int, Event]] = field(default_factory=list)
    rejection: EventRejected | None = None


@dataclass(frozen=True)
class PreparedBatch:
    """A batch applied in memory: the statements that write it, ready for its transaction."""

    first: int
    last: int
    statements: list[Statement]
    positions: dict[str, int]  # aggregate subjects → the batch's last event on them
    change: ReadModelChange
    events: int


class CheckpointMoved(Exception):
    """The read model was reset (or is behind this replica): project again from its checkpoint."""


class WorkSlices:
    """Cooperative time slices: ``spent()`` yields to the event loop once a slice is used up."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._started = time.perf_counter()

    async def spent(self) -> None:
        if time.perf_counter() - self._started >= self.seconds:
            await asyncio.sleep(0)
            self._started = time.perf_counter()


def _positions(events: list[tuple[LoggedMessage, int, Event]]) -> dict[str, int]:
    """Each aggregate's subject filter the events fall under → the last of them there. Release
    0.1.0's subjects belong to no aggregate's subject tree (the codec took the event on its own
    subject or on that old one)."""
    positions: dict[str, int] = {}
    for message, sequence, event in events:
        if message.subject != type(event).legacy_subject():
            for subjects in aggregate_filters(event):
                positions[subjects] = sequence
    return positions


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class Projector:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: EventBus,
        storage: Storage,
        batch_limit: int = BATCH_LIMIT,
        intake: IntakeOpener | None = None,
    ) -> None:
        self.pool = pool
        self.batch_limit = batch_limit
        self.bus = bus
        # Where the events come from (``log_intake``): by default nats-py in this process.
        self.open_intake = intake or in_process_opener(bus)
        self.storage = storage  # large specifications live there
        self.applied_sequence = 0
        self.stall: Stall | None = None
        self.leading = False
        # Told what each move of the read model may have changed, before anyone waiting for it
        # is woken (the API's caches of answers).
        self.watchers: list[Callable[[ReadModelChange], None]] = []
        self._advanced = asyncio.Condition()
        self._retry_now = asyncio.Event()
        self._counters = IdCounters()
        # While one batch's transaction runs, the next is applied in memory, from the rows the
        # first one writes (carried) and rows read from PostgreSQL (committed by earlier ones).
        self._writing: asyncio.Task[None] | None = None
        self._written_batch: DecodedBatch | None = None
        self._carried: BatchRows | None = None
        # A decoded batch taken from the queue that did not fit into the batch before it.
        self._held_back: DecodedBatch | BaseException | None = None
        self._statistics = StatisticsUpkeep()
        self._budget = WorkSlices(WORK_SLICE_SECONDS)

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

    async def recorded_stall(self) -> Stall | None:
        """The stall as recorded in the read model (by this replica or another)."""
        row = await self.pool.fetchrow(
            """SELECT stalled_sequence, stalled_subject, stalled_error, stalled_since
               FROM projection_checkpoint WHERE name = $1 AND stalled_sequence IS NOT NULL""",
            CHECKPOINT,
        )
        if row is None:
            return None
        return Stall(row["stalled_sequence"], row["stalled_subject"], row["stalled_error"], row["stalled_since"])

    async def stall_check(self) -> str | None:
        """For /readyz: the event the projection is stalled at, if it is."""
        stall = await self.recorded_stall()
        if stall is None:
            return None
        return f"stalled at event {stall.sequence} ({stall.subject}) since {stall.since:%Y-%m-%d %H:%M:%S}: {stall.error}"

    def retry_now(self) -> None:
        """Retry a stalled event at once (an operator just decided about it)."""
        self._retry_now.set()

    async def run(self) -> None:
        """Lead the projection when this replica holds the lock, else stand by; for ever."""
        while True:
            try:
                async with self.pool.acquire() as lock_connection:
                    if await lock_connection.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                        try:
                            await self._lead(lock_connection)
                        finally:
                            await lock_connection.execute("SELECT pg_advisory_unlock($1)", LEADER_LOCK)
                    else:
                        await self._stand_by(lock_connection)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("the projector lost its database connection; trying again", exc_info=True)
                await asyncio.sleep(0.5)

    async def _lead(self, lock_connection: asyncpg.Connection) -> None:
        """Project until the lock's connection is lost (then another replica may lead)."""
        log.info("this replica leads the projection")
        self.leading = True
        lost = asyncio.Event()
        lock_connection.add_termination_listener(lambda _connection: lost.set())
        projecting = asyncio.create_task(self._project())
        losing = asyncio.create_task(lost.wait())
        try:
            await asyncio.wait({projecting, losing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.leading = False
            await cancel_and_wait(projecting, losing)
            await self._statistics.stop()

    async def _stand_by(self, lock_connection: asyncpg.Connection) -> None:
        """Follow the leader's commits until the lock is free, then return (to try it)."""

        def on_commit(_connection: object, _pid: int, _channel: str, payload: str) -> None:
            asyncio.get_running_loop().create_task(self._followed(int(payload)))

        await lock_connection.add_listener(NOTIFY_CHANNEL, on_commit)
        try:
            await self._followed(await self.checkpoint())
            while not await lock_connection.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                await asyncio.sleep(STANDBY_RETRY_SECONDS)
            # Got it: release it here, to take it again (with its listener) as the leader.
            await lock_connection.execute("SELECT pg_advisory_unlock($1)", LEADER_LOCK)
        finally:
            await lock_connection.remove_listener(NOTIFY_CHANNEL, on_commit)

    async def _followed(self, sequence: int) -> None:
        async with self._advanced:
            # May move back: a rebuild replays from zero. What the leader applied is not known here.
            self._tell_watchers(EVERYTHING)
            self.applied_sequence = sequence
            self._advanced.notify_all()

    def _tell_watchers(self, change: ReadModelChange) -> None:
        for watcher in self.watchers:
            watcher(change)

    async def _project(self) -> None:
        """Project for ever; recover from database or bus outages by resuming at the checkpoint;
        stop at an event that cannot be applied until it is fixed or skipped."""
        while True:
            try:
                await self.initialize()
                await self._project_from_checkpoint()
            except asyncio.CancelledError:
                raise
            except EventRejected as rejection:
                await self._stalled(rejection)
            except Exception:
                log.warning("projection interrupted; resuming from the checkpoint", exc_info=True)
                await asyncio.sleep(0.5)

    async def _stalled(self, rejection: EventRejected) -> None:
        if await self._skip_if_decided(rejection):
            return
        if self.stall is None or self.stall.sequence != rejection.sequence:
            log.error(
                "projection stalled at event %s (%s): %s — fix the release or skip it "
                "(POST /api/v1/projection/skip/)",
                rejection.sequence, rejection.subject, rejection.error,
            )
        stall = Stall(rejection.sequence, rejection.subject, rejection.error[:4000], _utc_now())
        if self.stall is not None and self.stall.sequence == stall.sequence:
            stall = Stall(stall.sequence, stall.subject, stall.error, self.stall.since)
        self.stall = stall
        await self.pool.execute(
            """UPDATE projection_checkpoint
               SET stalled_sequence = $2, stalled_subject = $3, stalled_error = $4,
                   stalled_since = COALESCE(CASE WHEN stalled_sequence = $2 THEN stalled_since END, $5)
               WHERE name = $1""",
            CHECKPOINT, stall.sequence, stall.subject, stall.error, stall.since,
        )
        self._retry_now.clear()
        try:
            async with asyncio.timeout(STALL_RETRY_SECONDS):
                await self._retry_now.wait()
        except TimeoutError:
            pass

    async def _skip_if_decided(self, rejection: EventRejected) -> bool:
        """An operator's decision in the log to skip this event: dead-letter it and go on."""
        decision_message = await self.bus.last_message_on(skip_decision_subject(rejection.sequence))
        if decision_message is None:
            return False
        decision = self.bus.codec.decode(decision_message.subject, decision_message.data, decision_message.sequence)
        assert isinstance(decision, ProjectionEventSkipped)
        async with self.pool.acquire() as connection:
            async with connection.transaction():
                moved = await connection.fetchval(
                    """UPDATE projection_checkpoint
                       SET last_sequence = $2, stalled_sequence = NULL, stalled_subject = NULL,
                           stalled_error = NULL, stalled_since = NULL
                       WHERE name = $1 AND last_sequence = $2 - 1 RETURNING last_sequence""",
                    CHECKPOINT,
                    rejection.sequence,
                )
                if moved is not None:
                    await connection.execute(
                        """INSERT INTO projection_dead_letter (sequence, subject, error, reason, decided_by, decided_on)
                           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
                        rejection.sequence,
                        rejection.subject,
                        rejection.error[:4000],
                        decision.reason,
                        decision.principal,
                        utc(decision.occurred_at),
                    )
                    await connection.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(rejection.sequence))
        log.warning("event %s skipped by %s's decision: %s", rejection.sequence, decision.principal, decision.reason)
        self.stall = None
        await self._advance_to(rejection.sequence, EVERYTHING)
        return True

    async def _project_from_checkpoint(self) -> None:
        """Three stages overlap: batches are read from the bus and decoded ahead; a batch is
        applied in memory; meanwhile the batch before it is written (``_apply_batch``)."""
        self._counters.forget()  # another replica may have led meanwhile
        self._carried = None
        start = await self.checkpoint()
        self._statistics.resume_at(start)
        async with self._advanced:
            # May move back: after ``projection rebuild`` the read model starts again from zero.
            self._tell_watchers(EVERYTHING)
            self.applied_sequence = start
            self._advanced.notify_all()
        decoded: asyncio.Queue[DecodedBatch | BaseException] = asyncio.Queue(maxsize=DECODED_AHEAD)
        intake = await self.open_intake(start + 1, self.batch_limit, self.bus.telemetry.exporting)
        decoding = asyncio.create_task(self._decode_arrivals(intake, start, decoded))
        try:
            while True:
                batch = await self._next_batch(decoded)
                if isinstance(batch, BaseException):
                    raise batch
                await self._apply_batch(batch)
        finally:
            try:
                await cancel_and_wait(decoding, self._writing)
            finally:
                self._writing = self._written_batch = self._carried = self._held_back = None
                await intake.close()

    async def _decode_arrivals(
        self, intake: LogIntake, start: int, decoded: asyncio.Queue[DecodedBatch | BaseException]
    ) -> None:
        """The first stage: whatever has arrived, decoded, as one batch for one transaction (one
        commit per batch instead of per event is what makes a replay fast). Stops after a batch
        with a rejected event, or with the error that stopped it, handed on in the queue."""
        queued = start
        idle_behind = 0  # idle waits in a row while the stream held events not delivered here
        try:
            while True:
                try:
                    arrived = await intake.take(IDLE_WAIT_SECONDS)
                except TimeoutError:
                    # Idle: has the read model been reset meanwhile (``projection rebuild``)?
                    if decoded.empty() and await self.checkpoint() < self.applied_sequence:
                        raise CheckpointMoved("the read model was reset") from None
                    # Or has the subscription stopped delivering what the stream holds?
                    idle_behind = idle_behind + 1 if await self.bus.last_sequence() > queued else 0
                    if idle_behind >= IDLE_WAITS_BEFORE_RESUBSCRIBING:
                        raise CheckpointMoved(
                            f"the stream holds events after {queued} that were not delivered; subscribing again"
                        ) from None
                    continue
                idle_behind = 0
                arrived = [(sequence, message) for sequence, message in arrived if sequence > queued]
                if not arrived:
                    continue
                first, last = arrived[0][0], arrived[-1][0]
                if first != queued + 1 or last - first + 1 != len(arrived):
                    raise CheckpointMoved(f"events {first}..{last} did not arrive in one run after {queued}")
                batch = DecodedBatch(last)
                for sequence, message in arrived:
                    try:
                        event = self._decoded(message, sequence)
                        if isinstance(event, BuildSubmitted) and event.specification_blob is not None:
                            event = await with_full_specification(event, self.storage)
                    except EventRejected as refused:
                        batch.rejection = refused
                        break
                    batch.events.append((message, sequence, event))
                    await self._budget.spent()
                await decoded.put(batch)
                if batch.rejection is not None:
                    return
                queued = last
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            await decoded.put(error)

    async def _next_batch(
        self, decoded: asyncio.Queue[DecodedBatch | BaseException]
    ) -> DecodedBatch | BaseException:
        """The next decoded batch, joined with the batches decoded after it while it waited (up to
        the batch limit): the reader hands on whatever has arrived, a few events at a time when a
        replay starts, and each transaction costs a round trip or two whatever its size. Meanwhile,
        the outcome of the transaction still running (so a failed one is retried at once, not when
        the next event happens to arrive)."""
        batch = self._held_back or await self._decoded_or_written(decoded)
        self._held_back = None
        if not isinstance(batch, DecodedBatch):
            return batch
        while batch.rejection is None and len(batch.events) < self.batch_limit and not decoded.empty():
            following = decoded.get_nowait()
            if not isinstance(following, DecodedBatch) or len(batch.events) + len(following.events) > self.batch_limit:
                self._held_back = following
                break
            batch = DecodedBatch(following.last, batch.events + following.events, following.rejection)
        return batch

    async def _decoded_or_written(
        self, decoded: asyncio.Queue[DecodedBatch | BaseException]
    ) -> DecodedBatch | BaseException:
        while self._writing is not None and decoded.empty():
            getting = asyncio.ensure_future(decoded.get())
            try:
                await asyncio.wait({getting, self._writing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getting.done():  # the transaction ended first, or this task is stopped
                    getting.cancel()  # (a batch it was about to take stays in the queue)
                    await asyncio.gather(getting, return_exceptions=True)
            if not getting.cancelled():
                return getting.result()
            await self._written()
        return await decoded.get()

    async def _apply_batch(self, batch: DecodedBatch) -> None:
        """Apply in memory while the batch before is committed, then commit it in turn; a batch with
        an event applied by SQL, or one that cannot be applied in memory, goes the careful way."""
        events = [item for item in batch.events if item[1] > self.applied_sequence]
        if events and batch.rejection is None and self.stall is None and not any(
            type(event) in SQL_APPLIERS for _, _, event in events
        ):
            prepared = await self._prepared(events)
            if prepared is not None and await self._written():
                self._written_batch = batch
                self._writing = asyncio.create_task(self._write(prepared))
                return
        await self._written()
        self._carried = None
        self._counters.forget()
        await self._apply_carefully(batch)

    async def _written(self) -> bool:
        """Wait for the transaction still running. True if it committed; False if PostgreSQL refused
        its rows (it is then applied the careful way here, which stops at the refused event, and
        what was applied in memory after it is void). Other errors are raised."""
        writing, batch = self._writing, self._written_batch
        self._writing = self._written_batch = None
        if writing is None:
            return True
        try:
            await writing
            return True
        except BaseException as error:
            # What was applied in memory after it, and the ids it took, are void.
            self._carried = None
            self._counters.forget()
            if not isinstance(error, RowsRefused):
                raise
            log.warning("%s (events up to %s); applying them the careful way", error.error, batch and batch.last)
        assert batch is not None
        await self._apply_carefully(batch)
        return False

    async def _prepared(self, events: list[tuple[LoggedMessage, int, Event]]) -> PreparedBatch | None:
        """The batch applied to rows in memory and made into statements; None if an event or a
        row was refused (the careful way then finds which)."""
        rows = self._carried or BatchRows(self._counters)
        self._carried = None
        try:
            async with self.pool.acquire() as connection:
                if not self._counters.known:
                    # Only after the careful way, so no transaction is running.
                    await self._counters.load(connection)
                wanted = WantedRows()
                for _, _, event in events:
                    rows_wanted(event, wanted)
                await rows.load(connection, wanted)
            traced = self.bus.telemetry.exporting  # spans cost a context manager per event
            for message, sequence, event in events:
                if traced:
                    with self.bus.telemetry.projection_span(event.tag(), message.subject, sequence, message.headers):
                        apply_to_rows(rows, event, sequence)
                else:
                    apply_to_rows(rows, event, sequence)
                await self._budget.spent()
            change = rows.change()
            statements = rows.statements()
        except CONTENT_ERRORS as error:
            log.warning("events %s..%s could not be applied in memory (%s: %s); applying them the careful way",
                        events[0][1], events[-1][1], type(error).__name__, error)
            return None
        self._carried = rows.carried_forward()
        return PreparedBatch(events[0][1], events[-1][1], statements, _positions(events), change, len(events))

    async def _write(self, prepared: PreparedBatch) -> None:
        """One prepared batch as one statement, in one round trip (the next batch keeps the event
        loop busy meanwhile, so each round trip's answer may wait): the checkpoint moved on
        (compare-and-set), every row, the aggregates' positions, the commit's notification. It is
        atomic: when the checkpoint is not where the batch follows it, or a row is refused, nothing
        is written."""
        claim = Statement(
            """UPDATE projection_checkpoint SET last_sequence = $3
               WHERE name = $1 AND last_sequence = $2 - 1 RETURNING last_sequence""",
            (CHECKPOINT, prepared.first, prepared.last),
            name="claimed",
        )
        notification = Statement(
            "SELECT envstore_checkpoint_claimed(EXISTS (SELECT FROM claimed)), pg_notify($1, $2)",
            (NOTIFY_CHANNEL, str(prepared.last)),
        )
        try:
            async with self.pool.acquire() as connection:
                await execute_together(
                    connection,
                    [claim, *prepared.statements, *self._positions_statements(prepared.positions)],
                    notification,
                )
        except CONTENT_ERRORS as error:
            raise RowsRefused(f"{type(error).__name__}: {error}") from error
        except asyncpg.PostgresError as error:
            if error.sqlstate == CHECKPOINT_MOVED_SQLSTATE:
                raise CheckpointMoved(f"the checkpoint is not {prepared.first - 1} (another projector?)") from None
            raise
        await self._advance_to(prepared.last, prepared.change)
        self._statistics.applied(self.pool, prepared.events)

    @staticmethod
    def _positions_statements(positions: dict[str, int]) -> list[Statement]:
        """The aggregates' positions a batch moved (commands expect them: ``Expectation``)."""
        if not positions:
            return []
        return [Statement(
            """INSERT INTO aggregate_position (subjects, last_sequence)
               SELECT * FROM unnest($1::text[], $2::bigint[])
               ON CONFLICT (subjects) DO UPDATE SET last_sequence = EXCLUDED.last_sequence""",
            (list(positions), list(positions.values())),
        )]

    async def _apply_carefully(self, batch: DecodedBatch) -> None:
        """One batch on its own: its rows read and written in one transaction, an event applied by
        SQL where it comes, a refused event found and the ones before it committed."""
        events = [item for item in batch.events if item[1] > self.applied_sequence]
        try:
            if events:
                await self._commit_finding_refused(events)
        except EventRejected as refused:
            # One event of the batch is refused: apply those before it on their own, then stop there.
            before = [item for item in events if self.applied_sequence < item[1] < refused.sequence]
            if before:
                await self._commit(before)
            raise refused from None
        if batch.rejection is not None:
            raise batch.rejection
        if self.stall is not None:
            self.stall = None
            await self.pool.execute(
                """UPDATE projection_checkpoint SET stalled_sequence = NULL, stalled_subject = NULL,
                   stalled_error = NULL, stalled_since = NULL WHERE name = $1""",
                CHECKPOINT,
            )
            log.info("projection resumed after event %s", batch.last)

    def _decoded(self, message: LoggedMessage, sequence: int) -> Event:
        """The event a message holds (a large specification is fetched by the caller)."""
        try:
            return self.bus.codec.decode(message.subject, message.data, sequence)
        except UndecodableEvent as error:
            raise EventRejected(sequence, message.subject, error.reason) from None

    async def _commit_finding_refused(self, events: list[tuple[LoggedMessage, int, Event]]) -> None:
        """Commit ``events``; when PostgreSQL refuses a batch's rows without saying whose they are,
        commit each half on its own, down to the one event whose rows it refuses."""
        try:
            await self._commit(events)
        except RowsRefused as refusal:
            if len(events) == 1:
                raise EventRejected(events[0][1], events[0][0].subject, refusal.error) from None
            middle = len(events) // 2
            await self._commit_finding_refused(events[:middle])
            await self._commit_finding_refused(events[middle:])

    async def _commit(self, events: list[tuple[LoggedMessage, int, Event]]) -> None:
        first, last = events[0][1], events[-1][1]
        change = NOTHING
        try:
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
                        change = await self._apply_all(connection, events)
                        for statement in self._positions_statements(_positions(events)):
                            await connection.execute(statement.sql, *statement.arguments)
                        await connection.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(last))
        except BaseException:
            # Ids taken in a transaction that did not commit are free again.
            self._counters.forget()
            raise
        if claimed is None:
            current = await self.checkpoint()
            if current < last:
                raise CheckpointMoved(f"checkpoint is {current}, expected {first - 1}")
            change = EVERYTHING  # another projector applied them
        await self._advance_to(last, change)
        if claimed is not None:
            self._statistics.applied(self.pool, len(events))

    async def _apply_all(
        self, connection: asyncpg.Connection, events: list[tuple[LoggedMessage, int, Event]]
    ) -> ReadModelChange:
        """Runs of events with batched appliers go through rows in memory (loaded once, written
        once per run); an event with its own SQL runs it between runs. Returns what changed."""
        change = NOTHING
        run: list[tuple[LoggedMessage, int, Event]] = []
        for item in events:
            if type(item[2]) in SQL_APPLIERS:
                change |= await self._apply_run(connection, run)
                run = []
                await self._apply_with_sql(connection, *item)
                change |= change_of(item[2])
            else:
                run.append(item)
        return change | await self._apply_run(connection, run)

    async def _apply_run(self, connection: asyncpg.Connection, run: list[tuple[LoggedMessage, int, Event]]) -> ReadModelChange:
        if not run:
            return NOTHING
        if not self._counters.known:
            await self._counters.load(connection)
        wanted = WantedRows()
        for _, _, event in run:
            rows_wanted(event, wanted)
        rows = BatchRows(self._counters)
        try:
            await rows.load(connection, wanted)
        except CONTENT_ERRORS as error:
            raise RowsRefused(f"{type(error).__name__}: {error}") from error
        for message, sequence, event in run:
            with self.bus.telemetry.projection_span(event.tag(), message.subject, sequence, message.headers):
                try:
                    apply_to_rows(rows, event, sequence)
                except CONTENT_ERRORS as error:
                    raise EventRejected(sequence, message.subject, f"{type(error).__name__}: {error}") from error
            await self._budget.spent()
        try:
            await rows.write(connection)
        except CONTENT_ERRORS as error:
            raise RowsRefused(f"{type(error).__name__}: {error}") from error
        return rows.change()

    async def _apply_with_sql(self, connection: asyncpg.Connection, message: LoggedMessage, sequence: int, event: Event) -> None:
        with self.bus.telemetry.projection_span(event.tag(), message.subject, sequence, message.headers):
            try:
                await apply_with_sql(connection, event, sequence)
            except CONTENT_ERRORS as error:
                raise EventRejected(sequence, message.subject, f"{type(error).__name__}: {error}") from error
        # It may have written counted tables (or deleted their highest rows).
        self._counters.forget()

    async def _advance_to(self, sequence: int, change: ReadModelChange) -> None:
        async with self._advanced:
            if sequence > self.applied_sequence:
                self._tell_watchers(change)
                self.applied_sequence = sequence
                self._advanced.notify_all()

    async def wait_for(self, sequence: int, timeout_seconds: float) -> bool:
        """Wait (bounded) until the read model includes ``sequence``; True if it does."""
        async def reached() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self.applied_sequence >= sequence)

        try:
            async with asyncio.timeout(timeout_seconds):
                await reached()
            return True
        except TimeoutError:
            # Another replica may have applied it: trust the database's checkpoint.
            return await self.checkpoint() >= sequence
