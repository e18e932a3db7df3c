"""Settings stored through the API (global, per namespace, per environment), kept from the stream,
so that a dynamic image is submitted under the same settings as a build submitted to the API
(allowed and default channels, required packages …)."""

from __future__ import annotations

from typing import Any

from envstore.common.events import Event, SettingsChanged
from envstore.common.settings import GLOBAL_ONLY_SETTINGS, EnvstoreSettings


class SettingsOverrides:
    def __init__(self, settings: EnvstoreSettings) -> None:
        self.settings = settings
        self._by_scope: dict[str, dict[str, Any]] = {}

    def apply(self, event: Event | None, sequence: int) -> None:
        if isinstance(event, SettingsChanged):
            scope = "/".join(part for part in (event.namespace, event.environment) if part)
            self._by_scope[scope] = {**self._by_scope.get(scope, {}), **event.values}

    def effective(self, namespace: str, environment: str) -> EnvstoreSettings:
        """The process's settings with the global, namespace and environment overrides on top
        (namespace and environment levels cannot change global-only keys)."""
        overrides: dict[str, Any] = {}
        for scope in ("", namespace, f"{namespace}/{environment}"):
            for key, value in self._by_scope.get(scope, {}).items():
                if scope and key in GLOBAL_ONLY_SETTINGS:
                    continue
                overrides[key] = value
        if not overrides:
            return self.settings
        return self.settings.model_validate({**self.settings.model_dump(), **overrides})
