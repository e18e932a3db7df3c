"""Dynamic images: pulling ``conda-store-dynamic/<spec>/<spec>/...`` builds that environment.

Names map as in conda-store (``shared/conda-store-api.md`` §3.3): the environment is the tokens
joined with ``-`` in URL order; its dependencies are the tokens sorted, with ``.gt.`` ``.ge.``
``.lt.`` ``.le.`` ``.eq.`` read as ``>`` ``>=`` ``<`` ``<=`` ``==``. So
``conda-store-dynamic/python.lt.3.10/numpy.gt.1.0`` is environment ``python.lt.3.10-numpy.gt.1.0``
with ``numpy>1.0`` and ``python<3.10``, in namespace ``conda-store-dynamic``.

Tokens may only use the environment-name characters (no ``::`` or ``[...]``, so no channel can be
named), and the specification goes through the API's own validation and settings (default and
allowed channels, required packages) before anything is published: nothing else reaches the solver.

A missing environment is submitted once: concurrent pulls in this process share one submission,
and the submission's ``Nats-Msg-Id`` is derived from the name and the environment's position in
the log, so registry replicas racing on the same name publish one build between them (JetStream
drops the duplicates and answers with the first build's sequence).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import msgspec
import yaml

from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.events import BuildSubmitted, environment_tree
from envstore.common.ids import IdAllocator
from envstore.common.admin_hooks import HookError, SpecificationCheck
from envstore.common.read_model_rules import effective_settings
from envstore.common.settings import EnvstoreSettings
from envstore.common.specification import DYNAMIC_NAMESPACE, NAME_PATTERN, NAME_RULE, SpecificationError
from envstore.common.submission import SubmissionRequest, build_submission
from envstore.common.transport import EventBus
from envstore.registry.catalog import Catalog
from envstore.registry.errors import RegistryError, name_invalid
from envstore.registry.projection_watch import ProjectionWatch

log = logging.getLogger(__name__)

TOKEN_OPERATORS = ((".gt.", ">"), (".ge.", ">="), (".lt.", "<"), (".le.", "<="), (".eq.", "=="))
# Build prefixes are <store>/<namespace>/<build key> and must stay under 255 characters.
MAX_ENVIRONMENT_NAME = 128
INDEX_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class DynamicImageName:
    tokens: tuple[str, ...]

    @property
    def environment(self) -> str:
        return "-".join(self.tokens)

    @property
    def dependencies(self) -> list[str]:
        return [_as_match_spec(token) for token in sorted(self.tokens)]

    def specification(self) -> str:
        return yaml.safe_dump({"name": self.environment, "dependencies": self.dependencies}, sort_keys=False)


def _as_match_spec(token: str) -> str:
    for marker, operator in TOKEN_OPERATORS:
        token = token.replace(marker, operator)
    return token


def parse_dynamic_name(url_name: str, tokens: list[str]) -> DynamicImageName:
    for token in tokens:
        if not NAME_PATTERN.match(token):
            raise name_invalid(url_name, f"{token!r} may only contain {NAME_RULE}")
    name = DynamicImageName(tuple(tokens))
    if len(name.environment) > MAX_ENVIRONMENT_NAME:
        raise name_invalid(url_name, f"a dynamic image names at most {MAX_ENVIRONMENT_NAME} characters of packages")
    return name


class DynamicImages:
    def __init__(self, bus: EventBus, catalog: Catalog, watch: ProjectionWatch, settings: EnvstoreSettings) -> None:
        self.bus = bus
        self.catalog = catalog
        self.watch = watch
        self.settings = settings
        self.build_ids = IdAllocator(bus, "build", BuildSubmitted.legacy_subject())
        # The deployment's validate_specification hook applies to dynamic images too (as in conda-store).
        self.check = SpecificationCheck.from_settings(settings)
        self._submissions: dict[str, asyncio.Task[None]] = {}

    async def exists(self, name: DynamicImageName) -> bool:
        return await self.catalog.repository(DYNAMIC_NAMESPACE, name.environment) is not None

    async def ensure_submitted(self, name: DynamicImageName) -> None:
        """Submit the environment's build unless it exists; returns once the read model has it."""
        if await self.exists(name):
            return
        environment = name.environment
        submission = self._submissions.get(environment)
        if submission is None:
            submission = asyncio.create_task(self._submit(name), name=f"dynamic-image-{environment}")
            self._submissions[environment] = submission
            submission.add_done_callback(lambda _: self._submissions.pop(environment, None))
        # Shielded: one puller hanging up must not cancel the submission the others wait for.
        await asyncio.shield(submission)

    async def _submit(self, name: DynamicImageName) -> None:
        environment = name.environment
        settings = await effective_settings(self.catalog.pool, self.settings, DYNAMIC_NAMESPACE, environment)
        request = SubmissionRequest(specification=name.specification(), namespace=DYNAMIC_NAMESPACE)
        try:
            event = await asyncio.to_thread(build_submission, request, settings, None, self.check)
        except SpecificationError as error:
            raise name_invalid(f"{DYNAMIC_NAMESPACE}/{'/'.join(name.tokens)}", str(error)) from None
        except HookError as error:
            log.error("dynamic image %s: %s", name.environment, error)
            raise RegistryError(503, "UNAVAILABLE", "the server's specification check failed; tell the administrator") from None
        if ArtifactKind.DOCKER_MANIFEST not in event.artifacts:
            event = msgspec.structs.replace(event, artifacts=[*event.artifacts, str(ArtifactKind.DOCKER_MANIFEST)])
        event = msgspec.structs.replace(event, build_id=await self.build_ids.next())
        # Deterministic: the same name (and specification, and incarnation of the environment,
        # told by its position in the log) is one build however many replicas submit it.
        position = await self.catalog.pool.fetchval(
            "SELECT last_sequence FROM aggregate_position WHERE subjects = $1",
            environment_tree(DYNAMIC_NAMESPACE, environment),
        ) or 0
        message_id = f"registry-dynamic:{DYNAMIC_NAMESPACE}/{environment}:{event.spec_sha256}:{position}"
        acknowledgement = await self.bus.publish(event, message_id=message_id, principal="service:registry")
        log.info(
            "dynamic image %s/%s: %s the build submitted at %d for %s",
            DYNAMIC_NAMESPACE,
            environment,
            "joined" if acknowledgement.duplicate else "submitted",
            acknowledgement.seq,
            name.dependencies,
        )

        async def in_read_model() -> bool:
            return await self.catalog.checkpoint() >= acknowledgement.seq

        if not await self.watch.wait_until(in_read_model, INDEX_WAIT_SECONDS):
            raise RegistryError(
                503, "UNAVAILABLE", f"the build was submitted (event {acknowledgement.seq}) but the read model lags; retry"
            )
