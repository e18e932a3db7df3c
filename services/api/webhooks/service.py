"""The delivering process: ``python -m envstore.api.webhooks``."""

from __future__ import annotations

from envstore.api.webhooks.delivery_worker import DeliveryPolicy
from envstore.api.webhooks.registry import WebhookRegistry
from envstore.api.webhooks.secret_box import SecretBox
from envstore.api.webhooks.sender import WebhookSender
from envstore.api.webhooks.supervisor import DeliverySupervisor
from envstore.api.webhooks.target_urls import TargetGuard
from envstore.common.service_runtime import connected_bus, run_service
from envstore.common.settings import EnvstoreSettings
from envstore.common.telemetry import Telemetry

SERVICE = "webhooks"


async def serve(settings: EnvstoreSettings, telemetry: Telemetry) -> None:
    registry = WebhookRegistry(SecretBox.from_settings(settings))
    guard = TargetGuard.from_settings(settings)
    policy = DeliveryPolicy.from_settings(settings)
    async with (
        connected_bus(settings, SERVICE, telemetry) as bus,
        WebhookSender(guard, policy.timeout_seconds) as sender,
    ):
        await DeliverySupervisor(bus, registry, sender, policy).run()


def main() -> None:
    run_service(SERVICE, serve)
