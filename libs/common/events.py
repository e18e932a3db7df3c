"""The event catalogue: every state change in envstore is one of these, on one subject.

Events are small immutable msgspec structs, JSON on the wire, each with a ``type`` tag and a
schema ``version``. Consumers ignore fields they do not know. Large documents (a lock, a log) live
in storage; events carry a ``BlobRef`` to them. Subjects are defined here and nowhere else.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import msgspec

STREAM_SUBJECTS = "envstore.>"


class BlobRef(msgspec.Struct, frozen=True):
    """A content-addressed document in storage."""

    digest: str  # "sha256:<hex>"
    size: int


class BuildRef(msgspec.Struct, frozen=True):
    """What every worker needs to know about the build it handles, carried along the pipeline."""

    build_id: int
    namespace: str
    environment: str
    build_key: str
    spec_sha256: str
    artifacts: list[str] = []
    platforms: list[str] = []


class DoomedBuild(msgspec.Struct, frozen=True):
    """A build whose prefix and artifacts a worker must remove."""

    build_id: int
    namespace: str
    build_key: str


def now() -> float:
    return time.time()


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    SUBJECT: ClassVar[str]
    version: int = 1
    occurred_at: float = msgspec.field(default_factory=now)


# --- namespaces -------------------------------------------------------------------------------


class NamespaceCreated(Event, kw_only=True, tag="namespace.created"):
    SUBJECT: ClassVar[str] = "envstore.namespace.created"
    namespace: str


class NamespaceUpdated(Event, kw_only=True, tag="namespace.updated"):
    SUBJECT: ClassVar[str] = "envstore.namespace.updated"
    namespace: str
    metadata: dict[str, Any] | None = None
    role_mappings: dict[str, list[str]] | None = None


class NamespaceRoleMappingChanged(Event, kw_only=True, tag="namespace.role_mapping_changed"):
    """A v2 role mapping: ``namespace`` grants ``role`` to ``other_namespace`` (role None removes
    it; other_namespace None with role None removes all of the namespace's grants)."""

    SUBJECT: ClassVar[str] = "envstore.namespace.role_mapping_changed"
    namespace: str
    other_namespace: str | None = None
    role: str | None = None


class NamespaceDeleted(Event, kw_only=True, tag="namespace.deleted"):
    """Soft delete at once; workers then remove ``builds``' prefixes and artifacts."""

    SUBJECT: ClassVar[str] = "envstore.namespace.deleted"
    namespace: str
    builds: list[DoomedBuild] = []


# --- builds -----------------------------------------------------------------------------------


class BuildSubmitted(Event, kw_only=True, tag="build.submitted"):
    """A new build; its build id is this event's stream sequence."""

    SUBJECT: ClassVar[str] = "envstore.build.submitted"
    namespace: str
    environment: str
    description: str | None = None
    specification: dict[str, Any]  # normalized environment spec, or {name, description, lockfile}
    # A specification too large for an event (a big lockfile) is stored as this blob, and
    # ``specification`` then keeps only its name and description (see specification_documents).
    specification_blob: BlobRef | None = None
    spec_sha256: str
    is_lockfile: bool = False
    platforms: list[str]
    artifacts: list[str]
    scheduled_on: float
    build_key_version: int = 2
    rebuild_of: int | None = None


class BuildProgress(Event, kw_only=True, tag="build.progress"):
    SUBJECT: ClassVar[str] = "envstore.build.progress"
    build_id: int
    phase: str  # solve, fetch, link, pack, lockfile, yaml, …
    state: str  # "started" | "ended" | "note"
    message: str = ""
    duration_seconds: float | None = None
    service: str = ""


class BuildSolved(Event, kw_only=True, tag="build.solved"):
    SUBJECT: ClassVar[str] = "envstore.build.solved"
    build: BuildRef
    lock: BlobRef
    package_count: int
    solve_seconds: float
    cache_hit: bool = False
    log: list[BlobRef] = []


class InstalledPackage(msgspec.Struct, frozen=True, kw_only=True):
    """One package of a built prefix, small enough to carry in ``build.built``."""

    name: str
    version: str
    build: str
    build_number: int = 0
    channel: str
    subdir: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    license: str | None = None
    depends: list[str] = []
    constrains: list[str] = []
    timestamp: int | None = None


class BuildBuilt(Event, kw_only=True, tag="build.built"):
    SUBJECT: ClassVar[str] = "envstore.build.built"
    build: BuildRef
    lock: BlobRef
    prefix: str
    size_bytes: int
    package_count: int
    install_seconds: float
    log: list[BlobRef] = []
    packages: list[InstalledPackage] = []


class ArtifactReady(Event, kw_only=True, tag="artifact.ready"):
    SUBJECT: ClassVar[str] = "envstore.artifact.ready"
    build_id: int
    kind: str  # an ArtifactKind
    key: str  # conda-store style storage name, e.g. lockfile/<build key>.yml
    blob: BlobRef
    content_type: str = "application/octet-stream"


class ArtifactFailed(Event, kw_only=True, tag="artifact.failed"):
    SUBJECT: ClassVar[str] = "envstore.artifact.failed"
    build_id: int
    kind: str
    reason: str


class BuildCompleted(Event, kw_only=True, tag="build.completed"):
    SUBJECT: ClassVar[str] = "envstore.build.completed"
    build_id: int
    namespace: str
    environment: str
    size_bytes: int = 0
    artifacts: list[str] = []


class BuildFailed(Event, kw_only=True, tag="build.failed"):
    SUBJECT: ClassVar[str] = "envstore.build.failed"
    build_id: int
    phase: str
    reason: str  # safe to show to users: the solver's explanation, a missing package …
    detail: str = ""
    log: BlobRef | None = None


class BuildCancelRequested(Event, kw_only=True, tag="build.cancel_requested"):
    SUBJECT: ClassVar[str] = "envstore.build.cancel_requested"
    build_id: int


class BuildCanceled(Event, kw_only=True, tag="build.canceled"):
    SUBJECT: ClassVar[str] = "envstore.build.canceled"
    build_id: int
    reason: str = ""


class BuildDeleteRequested(Event, kw_only=True, tag="build.delete_requested"):
    """Remove one build's prefix and artifacts, keeping the kinds in ``keep``."""

    SUBJECT: ClassVar[str] = "envstore.build.delete_requested"
    build_id: int
    namespace: str = ""
    build_key: str = ""
    keep: list[str] = []


class BuildDeleted(Event, kw_only=True, tag="build.deleted"):
    """A build's prefix and artifacts are gone, but for the kinds in ``kept``."""

    SUBJECT: ClassVar[str] = "envstore.build.deleted"
    build_id: int
    kept: list[str] = []


class SettingsChanged(Event, kw_only=True, tag="settings.changed"):
    """Settings stored at one level: global (namespace None), a namespace, or an environment."""

    SUBJECT: ClassVar[str] = "envstore.settings.changed"
    namespace: str | None = None
    environment: str | None = None
    values: dict[str, Any]


# --- environments -----------------------------------------------------------------------------


class EnvironmentCurrentBuildSet(Event, kw_only=True, tag="environment.current_build_set"):
    SUBJECT: ClassVar[str] = "envstore.environment.current_build_set"
    namespace: str
    environment: str
    build_id: int


class EnvironmentUpdated(Event, kw_only=True, tag="environment.updated"):
    SUBJECT: ClassVar[str] = "envstore.environment.updated"
    namespace: str
    environment: str
    description: str | None = None


class EnvironmentDeleted(Event, kw_only=True, tag="environment.deleted"):
    """Soft delete at once; workers then remove ``builds``' prefixes and artifacts."""

    SUBJECT: ClassVar[str] = "envstore.environment.deleted"
    namespace: str
    environment: str
    builds: list[DoomedBuild] = []


# --- webhooks ---------------------------------------------------------------------------------


class WebhookRegistered(Event, kw_only=True, tag="webhook.registered"):
    """A new webhook; its id is this event's stream sequence. It receives the events after it.

    The filters are all optional; each one given must match. ``encrypted_secret`` is the signing
    secret encrypted with the deployment's webhook key (never the secret itself)."""

    SUBJECT: ClassVar[str] = "envstore.webhook.registered"
    url: str
    namespace: str | None = None
    environment: str | None = None
    build_id: int | None = None
    event_types: list[str] = []  # event ``type`` tags; empty: every type
    description: str = ""
    encrypted_secret: str
    registered_by: str = ""


class WebhookUpdated(Event, kw_only=True, tag="webhook.updated"):
    """A webhook's new target and filters (all of them); ``encrypted_secret`` None keeps the secret."""

    SUBJECT: ClassVar[str] = "envstore.webhook.updated"
    webhook_id: int
    url: str
    namespace: str | None = None
    environment: str | None = None
    build_id: int | None = None
    event_types: list[str] = []
    description: str = ""
    encrypted_secret: str | None = None


class WebhookDeleted(Event, kw_only=True, tag="webhook.deleted"):
    SUBJECT: ClassVar[str] = "envstore.webhook.deleted"
    webhook_id: int


class WebhookDeliveryAttempted(Event, kw_only=True, tag="webhook.delivery_attempted"):
    """One POST of the event at stream sequence ``event_id`` to a webhook, and how it went.

    ``final`` is true when no further attempt follows (it succeeded, or attempts ran out)."""

    SUBJECT: ClassVar[str] = "envstore.webhook.delivery_attempted"
    webhook_id: int
    event_id: int
    event_type: str
    attempt: int
    succeeded: bool
    status_code: int | None = None
    error: str = ""
    duration_seconds: float
    final: bool
    retry_in_seconds: float | None = None


# Webhook lifecycle events (what the delivering process must know), and every webhook event:
# never delivered to webhooks (an attempt would trigger attempts) nor sent on the live stream.
WEBHOOK_LIFECYCLE_EVENTS: tuple[type[Event], ...] = (WebhookRegistered, WebhookUpdated, WebhookDeleted)
WEBHOOK_EVENTS: tuple[type[Event], ...] = (*WEBHOOK_LIFECYCLE_EVENTS, WebhookDeliveryAttempted)


EVENT_TYPES: tuple[type[Event], ...] = (
    NamespaceCreated,
    NamespaceUpdated,
    NamespaceRoleMappingChanged,
    NamespaceDeleted,
    BuildSubmitted,
    BuildProgress,
    BuildSolved,
    BuildBuilt,
    ArtifactReady,
    ArtifactFailed,
    BuildCompleted,
    BuildFailed,
    BuildCancelRequested,
    BuildCanceled,
    BuildDeleteRequested,
    BuildDeleted,
    EnvironmentCurrentBuildSet,
    EnvironmentUpdated,
    EnvironmentDeleted,
    SettingsChanged,
    *WEBHOOK_EVENTS,
)


# The events that move a build forward; a canceled build's pipeline events are not handled.
PIPELINE_EVENTS: tuple[type[Event], ...] = (BuildSubmitted, BuildSolved, BuildBuilt)


class UnknownEvent(Exception):
    """A subject this version of envstore does not know (a newer producer); skip it."""


class EventCodec:
    """Encodes events to JSON and decodes them by subject."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoders = {
            event_type.SUBJECT: msgspec.json.Decoder(event_type) for event_type in EVENT_TYPES
        }

    def encode(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def decode(self, subject: str, payload: bytes) -> Event:
        decoder = self._decoders.get(subject)
        if decoder is None:
            raise UnknownEvent(subject)
        return decoder.decode(payload)


def build_id_of(event: Event, stream_sequence: int) -> int | None:
    """The build an event is about: a submission's own sequence, or the id it carries."""
    if isinstance(event, BuildSubmitted):
        return stream_sequence
    build = getattr(event, "build", None)
    if isinstance(build, BuildRef):
        return build.build_id
    return getattr(event, "build_id", None)
