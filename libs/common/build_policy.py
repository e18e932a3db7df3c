"""What a delivery of a pipeline event means for its build, shared by the solver, the builder
and the packager:

- a build with an outcome already (completed, failed or canceled) is not worked on again;
- a build canceled while its phase runs is interrupted (a watch on canceled outcomes);
- a phase has a time limit; past it the build fails with a reason;
- ``BuildFailure`` (a reason the user should read) fails the build;
- an unexpected error is retried (redelivered with backoff) until ``max_attempts`` deliveries,
  then fails the build; a delivery past ``max_attempts`` (earlier workers died without an answer)
  fails it at once.

Every outcome is published once-only (``publish_once``): whichever comes first — a cancel from the
API, a failure here — is the build's end, and a redelivery an hour later adds nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nats.aio.msg import Msg

from envstore.common.events import (
    PIPELINE_EVENTS,
    BlobRef,
    BuildCanceled,
    BuildFailed,
    UndecodableEvent,
    outcome_filter,
)
from envstore.common.transport import IMPORTED_HEADER, EventBus
from envstore.common.worker_runtime import Delivery, Handler, Redeliver

log = logging.getLogger(__name__)

CANCEL_REASON = "build {build_id} marked as CANCELED due to being canceled from the REST API"


class BuildFailure(Exception):
    """A build cannot succeed for a reason the user should read (bad spec, unsatisfiable, …)."""

    def __init__(self, phase: str, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason
        self.detail = detail
        self.log: BlobRef | None = None  # the build's log so far, failure at the top


@dataclass(frozen=True)
class PhaseLimits:
    max_attempts: int = 3
    phase_timeout_seconds: float = 3600.0


async def publish_failure(bus: EventBus, build_id: int, failure: BuildFailure) -> None:
    await bus.publish_once(
        BuildFailed(build_id=build_id, phase=failure.phase, reason=failure.reason, detail=failure.detail, log=failure.log),
        message_id=f"failed:{build_id}",
    )


async def publish_canceled(bus: EventBus, build_id: int, principal: str | None = None) -> bool:
    """The build's outcome is CANCELED, unless it has an outcome already; True if this made it so."""
    event = BuildCanceled(build_id=build_id, reason=CANCEL_REASON.format(build_id=build_id))
    return await bus.publish_once(event, message_id=f"canceled:{build_id}", principal=principal) is not None


class BuildPipelinePolicy:
    """Wraps a service's handler of pipeline events with the rules above."""

    def __init__(self, bus: EventBus, limits: PhaseLimits) -> None:
        self.bus = bus
        self.limits = limits
        self._running: dict[int, set[asyncio.Task[None]]] = {}
        self._canceled: set[asyncio.Task[None]] = set()
        self._watch = None

    async def start_watching_cancellations(self) -> None:
        """Interrupt running phases of builds canceled from now on (earlier cancellations are
        seen by the outcome check before a phase starts).

        A plain subscription to the canceled outcomes' subject, not a JetStream consumer: creating
        an unnamed consumer can also rewrite any named one (another worker's), so workers are not
        granted it. A cancellation published while this process is disconnected is not seen here;
        the running phase then finishes and the next one is not started (the outcome check)."""

        async def on_canceled(message: Msg) -> None:
            try:
                event = self.bus.codec.decode(message.subject, message.data)
            except UndecodableEvent:
                return
            if isinstance(event, BuildCanceled):
                self._interrupt(event.build_id)

        self._watch = await self.bus.client.subscribe(BuildCanceled.subject_pattern(), cb=on_canceled)

    async def stop_watching(self) -> None:
        if self._watch is not None:
            try:
                await self._watch.unsubscribe()
            except Exception:  # the connection may be gone already
                pass

    def _interrupt(self, build_id: int) -> None:
        for task in self._running.get(build_id, set()):
            self._canceled.add(task)
            task.cancel()

    def wrap(self, handler: Handler) -> Handler:
        async def handle(delivery: Delivery) -> None:
            if IMPORTED_HEADER in delivery.headers:
                return  # imported history: its work was done where it was recorded
            build_id = delivery.build_id
            if build_id is None or not isinstance(delivery.event, PIPELINE_EVENTS):
                await handler(delivery)
                return
            await self._handle_phase(handler, delivery, build_id)

        return handle

    async def _handle_phase(self, handler: Handler, delivery: Delivery, build_id: int) -> None:
        phase = delivery.event_type
        if await self.bus.has_event_on(outcome_filter(build_id)):
            log.info("build %s has ended already; %s not handled", build_id, phase)
            return
        if delivery.attempt > self.limits.max_attempts:
            await publish_failure(
                self.bus,
                build_id,
                BuildFailure(phase, f"the worker stopped {self.limits.max_attempts} times while handling this build; giving up"),
            )
            return
        task = asyncio.current_task()
        assert task is not None
        self._running.setdefault(build_id, set()).add(task)
        try:
            async with asyncio.timeout(self.limits.phase_timeout_seconds):
                await handler(delivery)
        except TimeoutError:
            await publish_failure(
                self.bus,
                build_id,
                BuildFailure(phase, f"the phase did not finish within its limit of {self.limits.phase_timeout_seconds:.0f} s"),
            )
        except BuildFailure as failure:
            await publish_failure(self.bus, build_id, failure)
        except asyncio.CancelledError:
            if task not in self._canceled:
                raise  # the process is stopping: the message goes back
            # Canceled from the API: the outcome is recorded already.
            self._canceled.discard(task)
            task.uncancel()
            log.info("build %s canceled during %s", build_id, phase)
        except Redeliver:
            raise
        except Exception as error:
            if delivery.attempt >= self.limits.max_attempts:
                log.exception("%s of build %s failed for the last time", phase, build_id)
                await publish_failure(
                    self.bus,
                    build_id,
                    BuildFailure(phase, f"internal error after {delivery.attempt} attempts: {error}"),
                )
                return
            raise
        finally:
            tasks = self._running.get(build_id, set())
            tasks.discard(task)
            if not tasks:
                self._running.pop(build_id, None)
