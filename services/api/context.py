"""What request handlers share: settings, the bus, the read model, storage, the projector."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from envstore.api.envelopes import ApiError
from envstore.api.projector import Projector
from envstore.api.read_model import ReadModel
from envstore.common.bus import EventBus
from envstore.common.events import Event
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import Storage


@dataclass
class ApiContext:
    settings: EnvstoreSettings
    bus: EventBus
    read_model: ReadModel
    storage: Storage
    projector: Projector

    async def publish_and_wait(self, event: Event, message_id: str) -> int:
        """Publish a command's event and answer only once the read model shows it."""
        acknowledgement = await self.bus.publish(event, message_id)
        if not await self.projector.wait_for(
            acknowledgement.seq, self.settings.projection_wait_seconds
        ):
            raise ApiError(503, "the change was accepted but is not visible yet; retry the read shortly")
        return acknowledgement.seq


CONTEXT = web.AppKey("context", ApiContext)
SETTINGS = web.AppKey("settings", EnvstoreSettings)


def context_of(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
