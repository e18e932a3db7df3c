"""The deployment's own Python hooks, conda-store's ``validate_specification`` and
``post_update_environment_build_hook``: callables named by dotted path in the settings
(``ENVSTORE_VALIDATE_SPECIFICATION=site_hooks.check``), loaded once when a process starts, so a
wrong path stops the process with a message instead of failing every submission.

conda-store calls its hooks with its own objects (a database session, the ``CondaStore``, ORM
rows), which envstore does not have; envstore calls them with keyword arguments of plain values
(README, "Admin hooks")."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envstore.common.settings import EnvstoreSettings
from envstore.common.specification import EnvironmentSpecification, SpecificationError, validation_message


class HookError(RuntimeError):
    """A hook cannot be loaded, or failed in a way that is the deployment's to fix (not the
    submitter's)."""


def load_callable(dotted_path: str, setting: str) -> Callable[..., Any]:
    """``package.module.function`` (or ``package.module:function``) → that callable."""
    module_name, separator, attribute = dotted_path.replace(":", ".").rpartition(".")
    if not separator or not module_name or not attribute:
        raise HookError(f"{setting}={dotted_path!r} is not a dotted path like package.module.function")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise HookError(
            f"{setting}={dotted_path!r}: module {module_name!r} cannot be imported ({type(error).__name__}: {error}); "
            "is it on the services' PYTHONPATH?"
        ) from None
    hook = getattr(module, attribute, None)
    if not callable(hook):
        raise HookError(f"{setting}={dotted_path!r}: {module_name} has no callable named {attribute!r}")
    return hook


class SpecificationCheck:
    """``validate_specification``: may refuse a specification (ValueError: its message is the
    submitter's 400) or return a rewritten one (None: unchanged). Blocking: call it off the event
    loop."""

    SETTING = "ENVSTORE_VALIDATE_SPECIFICATION"

    def __init__(self, hook: Callable[..., Any], dotted_path: str) -> None:
        self.hook = hook
        self.dotted_path = dotted_path

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> SpecificationCheck | None:
        if not settings.validate_specification:
            return None
        return cls(load_callable(settings.validate_specification, cls.SETTING), settings.validate_specification)

    def __call__(self, namespace: str, specification: EnvironmentSpecification) -> EnvironmentSpecification:
        try:
            result = self.hook(namespace=namespace, specification=specification.normalized())
        except ValueError as refusal:
            raise SpecificationError(str(refusal) or f"the specification was refused by {self.dotted_path}") from None
        except Exception as error:
            raise HookError(f"{self.SETTING}={self.dotted_path} failed: {type(error).__name__}: {error}") from error
        if result is None:
            return specification
        if hasattr(result, "model_dump"):  # a pydantic model, as conda-store's hooks return
            result = result.model_dump()
        if not isinstance(result, dict):
            raise HookError(
                f"{self.SETTING}={self.dotted_path} returned {type(result).__name__}; "
                "it must return the specification as a dict, or None to keep it"
            )
        try:
            return EnvironmentSpecification.model_validate(result)
        except Exception as error:
            detail = validation_message(error) if hasattr(error, "errors") else str(error)
            raise HookError(f"{self.SETTING}={self.dotted_path} returned an invalid specification: {detail}") from None


class CurrentBuildHook:
    """``post_update_environment_build_hook``: told each time an environment's current build
    changed and its ``envs/<name>`` link points at it."""

    SETTING = "ENVSTORE_POST_UPDATE_ENVIRONMENT_BUILD_HOOK"

    def __init__(self, hook: Callable[..., Any], dotted_path: str) -> None:
        self.hook = hook
        self.dotted_path = dotted_path

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> CurrentBuildHook | None:
        if not settings.post_update_environment_build_hook:
            return None
        return cls(
            load_callable(settings.post_update_environment_build_hook, cls.SETTING),
            settings.post_update_environment_build_hook,
        )

    async def __call__(
        self, *, namespace: str, environment: str, build_id: int, build_key: str, prefix: Path, environment_path: Path
    ) -> None:
        await asyncio.to_thread(
            self.hook,
            namespace=namespace,
            environment=environment,
            build_id=build_id,
            build_key=build_key,
            prefix=prefix,
            environment_path=environment_path,
        )
