"""The event catalogue: every state change in envstore is one of these events.

Events are small immutable msgspec structs, JSON on the wire, each with a ``type`` tag and a schema
``version``. Consumers ignore fields they do not know. Large documents (a lock, a log) live in
storage; events carry a ``BlobRef`` to them.

Subjects are derived from an event's aggregate and its tag, here and nowhere else
(``event.subject``; ``EventType.subject_pattern()`` for consumers and permissions):

    envstore.ns.<namespace>.<tag>                    a namespace's own events
    envstore.ns.<namespace>.env.<environment>.<tag>  an environment's events (its builds' commands)
    envstore.ns.<namespace>.settings.changed         settings stored for a namespace
    envstore.global.settings.changed                 settings stored globally
    envstore.build.<build id>.<tag>                  a build's pipeline events
    envstore.build.<build id>.<slot>.<tag>           a build's once-only outcomes (slot: an
                                                     artifact kind, or ``outcome`` for its end)
    envstore.webhook.<webhook id>.<tag>              a webhook's lifecycle and delivery attempts
    envstore.watch.<namespace>.<tag>                 what the directory watcher found in its files
    envstore.projection.<sequence>.<tag>             operators' decisions about the read model

Each environment and namespace is an aggregate: a command checked against its state is published
with the expected last sequence of its subject tree (``environment_tree`` / ``namespace_tree``),
so two concurrent commands cannot both pass a check against the same state. A once-only event
(``once_filter``) is published with "no event yet on this filter", so it exists at most once
per build and slot, however late a redelivery comes.

The release 0.1.0 layout (``envstore.<tag>``, build ids equal to stream sequences) is still read:
``EventCodec.decode`` upcasts those events (see ``legacy_upcast``).
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar, Union

import msgspec

from envstore.common.specification import DYNAMIC_NAMESPACE

# The filesystem namespace's default name: the deployment may rename it (the setting
# ``filesystem_namespace``), and permissions are made for the name in use (see
# ``subject_patterns_published_by``).
FILESYSTEM_NAMESPACE = "filesystem"

SUBJECT_ROOT = "envstore"
STREAM_SUBJECTS = f"{SUBJECT_ROOT}.>"
# Characters of namespace and environment names kept as they are in a subject token; anything
# else ('.' above all, the token separator) is percent-encoded.
_TOKEN_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+_@$&?^~=")


_NEEDS_ENCODING = re.compile(r"[^A-Za-z0-9\-+_@$&?^~=]")


def name_token(name: str) -> str:
    """A namespace or environment name as one subject token."""
    if _NEEDS_ENCODING.search(name) is None:
        return name  # the usual case, found by one regular expression instead of a loop
    return "".join(
        character if character in _TOKEN_SAFE else "".join(f"%{byte:02X}" for byte in character.encode())
        for character in name
    )


def namespace_tree(namespace: str) -> str:
    """Every subject of a namespace: its own events and all its environments'."""
    return f"{SUBJECT_ROOT}.ns.{name_token(namespace)}.>"


def environment_tree(namespace: str, environment: str) -> str:
    return f"{SUBJECT_ROOT}.ns.{name_token(namespace)}.env.{name_token(environment)}.>"


def submission_subject(build_id: int) -> str:
    """Where the submission of build ``build_id`` is (in whichever environment)."""
    return f"{SUBJECT_ROOT}.ns.*.env.*.build.{build_id}.build.submitted"


def namespace_own(namespace: str) -> str:
    """A namespace's own events (not its environments' nor its settings)."""
    return f"{SUBJECT_ROOT}.ns.{name_token(namespace)}.namespace.>"


def build_tree(build_id: int) -> str:
    return f"{SUBJECT_ROOT}.build.{build_id}.>"


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
    # The stream sequence of the build's ``build.submitted`` (0 in release 0.1.0's events, where
    # it was the build id itself; the codec fills it in).
    submission_sequence: int = 0


class DoomedBuild(msgspec.Struct, frozen=True):
    """A build whose prefix and artifacts a worker must remove."""

    build_id: int
    namespace: str
    build_key: str


def now() -> float:
    return time.time()


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event. ``principal`` is who caused it: the token subject of an API caller, or
    ``service:<name>`` for a worker (set by the publisher that authenticated the cause)."""

    version: int = 1
    occurred_at: float = msgspec.field(default_factory=now)
    principal: str = ""

    # A slot makes an event once-only per aggregate and slot (see the module docstring).
    ONCE: ClassVar[bool] = False
    # The services that publish this type (the bus grants each service exactly these).
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ()
    # Publishers granted this type in one namespace only (service -> namespace), where the
    # aggregate allows narrowing (``envstore.common.bus_permissions``).
    PUBLISHED_IN_NAMESPACE: ClassVar[dict[str, str]] = {}

    @classmethod
    def tag(cls) -> str:
        return cls.__struct_config__.tag  # type: ignore[return-value]

    def aggregate_tokens(self) -> tuple[str, ...]:
        raise NotImplementedError

    @classmethod
    def aggregate_pattern(cls) -> tuple[str, ...]:
        raise NotImplementedError

    def slot(self) -> str | None:
        return None

    @classmethod
    def slot_pattern(cls) -> str | None:
        return None

    @property
    def subject(self) -> str:
        slot = self.slot()
        return ".".join((SUBJECT_ROOT, *self.aggregate_tokens(), *((slot,) if slot else ()), self.tag()))

    @classmethod
    def subject_pattern(cls) -> str:
        """The subjects of every event of this type (for consumers' filters and permissions)."""
        slot = cls.slot_pattern()
        return ".".join((SUBJECT_ROOT, *cls.aggregate_pattern(), *((slot,) if slot else ()), cls.tag()))

    @classmethod
    def legacy_subject(cls) -> str:
        """Where release 0.1.0 published this type."""
        return f"{SUBJECT_ROOT}.{cls.tag()}"

    def once_filter(self) -> str | None:
        """For a once-only event, the subjects on which no event may precede it."""
        if not self.ONCE:
            return None
        slot = self.slot()
        if slot is None:
            return self.subject
        return ".".join((SUBJECT_ROOT, *self.aggregate_tokens(), slot, ">"))


class NamespaceEvent(Event, frozen=True, kw_only=True):
    namespace: str

    def aggregate_tokens(self) -> tuple[str, ...]:
        return ("ns", name_token(self.namespace))

    @classmethod
    def aggregate_pattern(cls) -> tuple[str, ...]:
        return ("ns", "*")


class EnvironmentEvent(Event, frozen=True, kw_only=True):
    namespace: str
    environment: str

    def aggregate_tokens(self) -> tuple[str, ...]:
        return ("ns", name_token(self.namespace), "env", name_token(self.environment))

    @classmethod
    def aggregate_pattern(cls) -> tuple[str, ...]:
        return ("ns", "*", "env", "*")


class BuildEvent(Event, frozen=True, kw_only=True):
    """An event of one build's pipeline (``build_id`` names it; see ``BuildRefEvent``)."""

    def aggregate_tokens(self) -> tuple[str, ...]:
        return ("build", str(self.build_id))  # type: ignore[attr-defined]

    @classmethod
    def aggregate_pattern(cls) -> tuple[str, ...]:
        return ("build", "*")

    @classmethod
    def subject_for(cls, build_id: int, slot: str | None = None) -> str:
        """The subject of this type for one build (and slot), without making an event."""
        return ".".join((SUBJECT_ROOT, "build", str(build_id), *((slot,) if slot else ()), cls.tag()))


def outcome_filter(build_id: int) -> str:
    """Where a build's one outcome (completed, failed or canceled) is, once it has one."""
    return f"{SUBJECT_ROOT}.build.{build_id}.outcome.>"


def artifact_slot(kind: str, platform: str | None = None) -> str:
    """The slot of a build's artifact: its kind, or ``<kind>@<platform>`` for a further platform's."""
    return kind if not platform else f"{kind}@{platform}"


def artifact_filter(build_id: int, kind: str, platform: str | None = None) -> str:
    """Where one artifact's outcome (ready or failed) is, once it has one."""
    return f"{SUBJECT_ROOT}.build.{build_id}.{artifact_slot(kind, platform)}.>"


class BuildOutcome(BuildEvent, frozen=True, kw_only=True):
    """How a build ended: one of these per build, ever."""

    ONCE: ClassVar[bool] = True
    build_id: int

    def slot(self) -> str | None:
        return "outcome"

    @classmethod
    def slot_pattern(cls) -> str | None:
        return "outcome"


class WebhookEvent(Event, frozen=True, kw_only=True):
    webhook_id: int = 0

    def aggregate_tokens(self) -> tuple[str, ...]:
        return ("webhook", str(self.webhook_id))

    @classmethod
    def aggregate_pattern(cls) -> tuple[str, ...]:
        return ("webhook", "*")


# --- namespaces -------------------------------------------------------------------------------


class NamespaceCreated(NamespaceEvent, frozen=True, kw_only=True, tag="namespace.created"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)


class NamespaceUpdated(NamespaceEvent, frozen=True, kw_only=True, tag="namespace.updated"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)
    metadata: dict[str, Any] | None = None
    role_mappings: dict[str, list[str]] | None = None


class NamespaceRoleMappingChanged(NamespaceEvent, frozen=True, kw_only=True, tag="namespace.role_mapping_changed"):
    """A v2 role mapping: ``namespace`` grants ``role`` to ``other_namespace`` (role None removes
    it; other_namespace None with role None removes all of the namespace's grants)."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)

    other_namespace: str | None = None
    role: str | None = None


class NamespaceDeleted(NamespaceEvent, frozen=True, kw_only=True, tag="namespace.deleted"):
    """Soft delete at once; workers then remove ``builds``' prefixes and artifacts."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)

    builds: list[DoomedBuild] = []


# --- builds: commands on an environment -------------------------------------------------------


class BuildSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The settings a build is made with, decided where it is submitted from the values in force
    for its environment (deployment, global, namespace, environment), so that every worker applies
    the same ones whatever its own environment says. None: the worker's own setting (events
    published before these were recorded)."""

    channel_alias: str | None = None
    max_solve_seconds: int | None = None
    storage_threshold: int | None = None  # bytes that must stay free where prefixes are installed
    prefix_permissions: str | None = None  # three octal digits, as chmod takes them
    prefix_uid: int | None = None
    prefix_gid: int | None = None


class BuildSubmitted(EnvironmentEvent, frozen=True, kw_only=True, tag="build.submitted"):
    """A new build. Its id is allocated before publishing (release 0.1.0: the stream sequence),
    and is part of its subject, so a build's submission is found by its id (``submission_subject``)."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api", "registry", "watcher")
    # The registry submits dynamic images' builds only, the watcher the filesystem namespace's.
    PUBLISHED_IN_NAMESPACE: ClassVar[dict[str, str]] = {"registry": DYNAMIC_NAMESPACE, "watcher": FILESYSTEM_NAMESPACE}

    version: int = 2
    build_id: int = 0
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
    settings: BuildSettings | None = None

    def aggregate_tokens(self) -> tuple[str, ...]:
        return (*super().aggregate_tokens(), "build", str(self.build_id))

    @classmethod
    def aggregate_pattern(cls) -> tuple[str, ...]:
        return (*super().aggregate_pattern(), "build", "*")


class BuildDeleteRequested(EnvironmentEvent, frozen=True, kw_only=True, tag="build.delete_requested"):
    """Remove one build's prefix and artifacts, keeping the kinds in ``keep``."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)

    environment: str = ""  # release 0.1.0's requests did not name it
    build_id: int
    build_key: str = ""
    keep: list[str] = []


class EnvironmentCurrentBuildSet(EnvironmentEvent, frozen=True, kw_only=True, tag="environment.current_build_set"):
    """A rollback: ``build_id`` (completed, of this environment) becomes the current build."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)

    build_id: int
    build_key: str = ""


class EnvironmentUpdated(EnvironmentEvent, frozen=True, kw_only=True, tag="environment.updated"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)
    description: str | None = None


class EnvironmentDeleted(EnvironmentEvent, frozen=True, kw_only=True, tag="environment.deleted"):
    """Soft delete at once; workers then remove ``builds``' prefixes and artifacts. (The directory
    watcher deletes an environment whose file was removed when told to.)"""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api", "watcher")
    PUBLISHED_IN_NAMESPACE: ClassVar[dict[str, str]] = {"watcher": FILESYSTEM_NAMESPACE}

    builds: list[DoomedBuild] = []


# --- builds: the pipeline ---------------------------------------------------------------------


class BuildProgress(BuildEvent, frozen=True, kw_only=True, tag="build.progress"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("solver", "builder", "packager")
    build_id: int
    phase: str  # solve, fetch, link, pack, lockfile, yaml, …
    state: str  # "started" | "ended" | "note"
    message: str = ""
    duration_seconds: float | None = None
    service: str = ""


class BuildCancelRequested(BuildEvent, frozen=True, kw_only=True, tag="build.cancel_requested"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)
    build_id: int


class BuildRefEvent(BuildEvent, frozen=True, kw_only=True):
    build: BuildRef

    @property
    def build_id(self) -> int:
        return self.build.build_id


class BuildSolved(BuildRefEvent, frozen=True, kw_only=True, tag="build.solved"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("solver",)
    ONCE: ClassVar[bool] = True
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


class BuildBuilt(BuildRefEvent, frozen=True, kw_only=True, tag="build.built"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("builder",)
    ONCE: ClassVar[bool] = True
    lock: BlobRef
    prefix: str
    size_bytes: int
    package_count: int
    install_seconds: float
    log: list[BlobRef] = []
    packages: list[InstalledPackage] = []


class ArtifactEvent(BuildEvent, frozen=True, kw_only=True):
    """One artifact's outcome: ready or failed, once per build and kind — and per platform for the
    artifacts of a multi-platform lock's further platforms (``additional``)."""

    ONCE: ClassVar[bool] = True
    build_id: int
    kind: str  # an ArtifactKind
    # The conda platform the artifact is for ("" when it is for none, as a lockfile, or when the
    # event predates platforms). The build's main artifact of a kind is at conda-store's name and
    # route; an ``additional`` one is another platform's (the slot, and so the subject, names it).
    platform: str = ""
    additional: bool = False

    def slot(self) -> str | None:
        return artifact_slot(self.kind, self.platform if self.additional else None)

    @classmethod
    def slot_pattern(cls) -> str | None:
        return "*"


class ArtifactReady(ArtifactEvent, frozen=True, kw_only=True, tag="artifact.ready"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("packager",)
    key: str  # conda-store style storage name, e.g. lockfile/<build key>.yml
    blob: BlobRef
    content_type: str = "application/octet-stream"


class ArtifactFailed(ArtifactEvent, frozen=True, kw_only=True, tag="artifact.failed"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("packager",)
    reason: str


class BuildCompleted(BuildOutcome, frozen=True, kw_only=True, tag="build.completed"):
    """Every requested artifact is ready; the build becomes its environment's current build."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("packager",)

    namespace: str
    environment: str
    size_bytes: int = 0
    artifacts: list[str] = []
    build_key: str = ""


class BuildFailed(BuildOutcome, frozen=True, kw_only=True, tag="build.failed"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("solver", "builder", "packager")
    phase: str
    reason: str  # safe to show to users: the solver's explanation, a missing package …
    detail: str = ""
    log: BlobRef | None = None


class BuildCanceled(BuildOutcome, frozen=True, kw_only=True, tag="build.canceled"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)
    reason: str = ""


class BuildDeleted(BuildEvent, frozen=True, kw_only=True, tag="build.deleted"):
    """A build's prefix and artifacts are gone, but for the kinds in ``kept``."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("builder",)

    build_id: int
    kept: list[str] = []


class BuildArchiveRequested(EnvironmentEvent, frozen=True, kw_only=True, tag="build.archive_requested"):
    """Archive a completed build (by hand or by the retention policy): its spec, lock, YAML and
    logs stay; the prefix and the artifacts of ``kinds`` (tarball, installer, image) go, to be
    made again from the lock when asked for (rehydration). A command on the environment."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)

    build_id: int
    build_key: str
    generation: int  # how many times this build was archived, this one included
    kinds: list[str]
    reason: str = ""


class BuildArchived(BuildEvent, frozen=True, kw_only=True, tag="build.archived"):
    """The builder freed an archived build's prefix and artifact names (blobs are collected by GC)."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("builder",)

    build_id: int
    generation: int  # how many times this build was archived, this one included
    kinds: list[str] = []


class RehydrationEvent(BuildEvent, frozen=True, kw_only=True):
    """Once per build and archive generation: one rehydration however many clients ask at once."""

    ONCE: ClassVar[bool] = True
    # The request and the outcome each have a slot of their own (a once-only filter is its slot).
    SLOT_PREFIX: ClassVar[str] = ""
    build_id: int
    generation: int
    # A failed rehydration is asked again as the next attempt (a slot of its own).
    attempt: int = 0

    def slot(self) -> str | None:
        return f"{self.SLOT_PREFIX}-{self.generation}" + (f"-{self.attempt}" if self.attempt else "")

    @classmethod
    def slot_pattern(cls) -> str | None:
        return "*"


class BuildRehydrationRequested(RehydrationEvent, frozen=True, kw_only=True, tag="build.rehydration_requested"):
    """Make an archived build's ``kinds`` again from its lock (no solve): asked by a download of
    one of them, an image pull, or by hand."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api", "registry")
    SLOT_PREFIX: ClassVar[str] = "rehydration"

    kinds: list[str]


class RehydratedArtifact(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    key: str
    blob: BlobRef
    content_type: str


class BuildRehydrated(RehydrationEvent, frozen=True, kw_only=True, tag="build.rehydrated"):
    """The archived artifacts are made again (``failed`` says why not, when they could not be)."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("packager",)
    SLOT_PREFIX: ClassVar[str] = "rehydrated"

    artifacts: list[RehydratedArtifact] = []
    failed: str = ""
    seconds: float = 0.0


class BuildUsed(BuildEvent, frozen=True, kw_only=True, tag="build.used"):
    """How often a build was used between ``first_used_at`` and ``last_used_at``: image pulls
    (registry), artifact downloads and activations (API: its environment's lockfile fetched).
    Batched: each process publishes at most one per build per ``usage_flush_seconds``, so use does
    not flood the log."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api", "registry")

    build_id: int
    pulls: int = 0
    downloads: int = 0
    activations: int = 0
    first_used_at: float
    last_used_at: float


# --- settings ---------------------------------------------------------------------------------


class SettingsChanged(Event, frozen=True, kw_only=True, tag="settings.changed"):
    """Settings stored at one level: global (namespace None), a namespace, or an environment.
    They belong to that level's aggregate (a namespace's or environment's subject tree)."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)

    namespace: str | None = None
    environment: str | None = None
    values: dict[str, Any]

    def aggregate_tokens(self) -> tuple[str, ...]:
        if self.namespace is None:
            return ("global",)
        if self.environment is None:
            return ("ns", name_token(self.namespace))
        return ("ns", name_token(self.namespace), "env", name_token(self.environment))

    @classmethod
    def subject_pattern(cls) -> str:
        # Three levels: no single pattern; every settings subject ends with the tag.
        return f"{SUBJECT_ROOT}.>"

    @classmethod
    def subject_patterns(cls) -> tuple[str, ...]:
        return (
            f"{SUBJECT_ROOT}.global.{cls.tag()}",
            f"{SUBJECT_ROOT}.ns.*.{cls.tag()}",
            f"{SUBJECT_ROOT}.ns.*.env.*.{cls.tag()}",
        )


# --- webhooks ---------------------------------------------------------------------------------


class WebhookRegistered(WebhookEvent, frozen=True, kw_only=True, tag="webhook.registered"):
    """A new webhook (release 0.1.0: its id was this event's stream sequence). It receives the
    events after this one.

    The filters are all optional; each one given must match. ``encrypted_secret`` is the signing
    secret encrypted with the deployment's webhook key (never the secret itself)."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)

    version: int = 2
    url: str
    namespace: str | None = None
    environment: str | None = None
    build_id: int | None = None
    event_types: list[str] = []  # event ``type`` tags; empty: every type
    description: str = ""
    encrypted_secret: str
    registered_by: str = ""


class WebhookUpdated(WebhookEvent, frozen=True, kw_only=True, tag="webhook.updated"):
    """A webhook's new target and filters (all of them); ``encrypted_secret`` None keeps the secret."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)

    url: str
    namespace: str | None = None
    environment: str | None = None
    build_id: int | None = None
    event_types: list[str] = []
    description: str = ""
    encrypted_secret: str | None = None


class WebhookDeleted(WebhookEvent, frozen=True, kw_only=True, tag="webhook.deleted"):
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)


class WebhookDeliveryAttempted(WebhookEvent, frozen=True, kw_only=True, tag="webhook.delivery_attempted"):
    """One POST of the event at stream sequence ``event_id`` to a webhook, and how it went.

    ``final`` is true when no further attempt follows (it succeeded, or attempts ran out)."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("webhooks",)

    event_id: int
    event_type: str
    attempt: int
    succeeded: bool
    status_code: int | None = None
    error: str = ""
    duration_seconds: float
    final: bool
    retry_in_seconds: float | None = None


# --- watched directories ----------------------------------------------------------------------


class WatchedFileRejected(Event, frozen=True, kw_only=True, tag="watched_file.rejected"):
    """A file in a watched directory that cannot be built as it is (unparsable, invalid, refused
    by the settings or the deployment's specification check): nothing was submitted for it.
    ``environment`` is the name the file gives, when it gives one."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("watcher",)

    namespace: str
    environment: str = ""
    path: str
    reason: str

    def aggregate_tokens(self) -> tuple[str, ...]:
        return ("watch", name_token(self.namespace))

    @classmethod
    def aggregate_pattern(cls) -> tuple[str, ...]:
        return ("watch", "*")


# --- the read model ---------------------------------------------------------------------------


class ProjectionEventSkipped(Event, frozen=True, kw_only=True, tag="projection.event_skipped"):
    """An operator's decision: the event at ``sequence``, which the read model cannot apply, is
    skipped by every projection of this log (a replay makes the same decision)."""
    PUBLISHED_BY: ClassVar[tuple[str, ...]] = ("api",)

    sequence: int
    reason: str

    def aggregate_tokens(self) -> tuple[str, ...]:
        return ("projection", str(self.sequence))

    @classmethod
    def aggregate_pattern(cls) -> tuple[str, ...]:
        return ("projection", "*")


def skip_decision_subject(sequence: int) -> str:
    return ".".join((SUBJECT_ROOT, "projection", str(sequence), ProjectionEventSkipped.tag()))


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
    BuildArchiveRequested,
    BuildArchived,
    BuildRehydrationRequested,
    BuildRehydrated,
    BuildUsed,
    EnvironmentCurrentBuildSet,
    EnvironmentUpdated,
    EnvironmentDeleted,
    SettingsChanged,
    *WEBHOOK_EVENTS,
    WatchedFileRejected,
    ProjectionEventSkipped,
)
EVENT_TYPES_BY_TAG: dict[str, type[Event]] = {event_type.tag(): event_type for event_type in EVENT_TYPES}


def subject_patterns(event_type: type[Event]) -> tuple[str, ...]:
    """Every subject pattern an event type is published on (one, but for settings' three levels)."""
    if event_type is SettingsChanged:
        return SettingsChanged.subject_patterns()
    return (event_type.subject_pattern(),)


def subject_patterns_published_by(
    event_type: type[Event], service: str, filesystem_namespace: str = FILESYSTEM_NAMESPACE
) -> tuple[str, ...]:
    """The subjects ``service`` may publish ``event_type`` on: all of the type's, or only those in
    the namespace ``PUBLISHED_IN_NAMESPACE`` names for it (the filesystem namespace by the name
    the deployment gives it)."""
    if service not in event_type.PUBLISHED_BY:
        return ()
    patterns = subject_patterns(event_type)
    namespace = event_type.PUBLISHED_IN_NAMESPACE.get(service)
    if namespace is None:
        return patterns
    if namespace == FILESYSTEM_NAMESPACE:
        namespace = filesystem_namespace
    any_namespace = f"{SUBJECT_ROOT}.ns.*."
    return tuple(
        f"{SUBJECT_ROOT}.ns.{name_token(namespace)}.{pattern[len(any_namespace):]}"
        for pattern in patterns
        if pattern.startswith(any_namespace)
    )


def aggregate_filters(event: Event) -> tuple[str, ...]:
    """The aggregates' subject filters an event's subject falls under: the positions a projection
    keeps so that commands can expect them (see ``Expectation``)."""
    if isinstance(event, SettingsChanged):
        if event.namespace is None:
            return ()
        if event.environment is None:
            return (namespace_tree(event.namespace),)
        return (environment_tree(event.namespace, event.environment), namespace_tree(event.namespace))
    if isinstance(event, EnvironmentEvent):
        return (environment_tree(event.namespace, event.environment), namespace_tree(event.namespace))
    if isinstance(event, NamespaceEvent):
        return (namespace_own(event.namespace), namespace_tree(event.namespace))
    return ()


# What each worker service consumes (its durable consumer's filter). The api's projector and the
# webhook deliverer read every event; the registry reads the read model, not the stream.
WORKER_SUBSCRIPTIONS: dict[str, tuple[type[Event], ...]] = {
    "solver": (BuildSubmitted,),
    "builder": (
        BuildSolved,
        BuildCompleted,
        EnvironmentCurrentBuildSet,
        BuildDeleteRequested,
        EnvironmentDeleted,
        NamespaceDeleted,
        BuildArchiveRequested,
    ),
    "packager": (BuildBuilt, BuildRehydrationRequested),
}


# The events that move a build forward; a canceled build's pipeline events are not handled.
PIPELINE_EVENTS: tuple[type[Event], ...] = (BuildSubmitted, BuildSolved, BuildBuilt)


class UndecodableEvent(Exception):
    """A message on the stream that is not an event of this catalogue where it stands: unreadable,
    of an unknown type (a newer producer), or on a subject its type is not published on."""

    def __init__(self, subject: str, sequence: int, reason: str) -> None:
        super().__init__(f"event {sequence} on {subject}: {reason}")
        self.subject = subject
        self.sequence = sequence
        self.reason = reason


# Kept for readers written against release 0.1.0's codec.
UnknownEvent = UndecodableEvent

_AnyEvent = Union[tuple(EVENT_TYPES)]  # type: ignore[valid-type]


def legacy_upcast(event: Event, sequence: int) -> Event:
    """Release 0.1.0's events in today's shape: build and webhook ids were stream sequences."""
    if isinstance(event, BuildSubmitted) and event.version < 2:
        return msgspec.structs.replace(event, build_id=sequence, version=2)
    if isinstance(event, WebhookRegistered) and event.version < 2:
        return msgspec.structs.replace(event, webhook_id=sequence, version=2)
    if isinstance(event, BuildRefEvent) and event.build.submission_sequence == 0:
        return msgspec.structs.replace(
            event, build=msgspec.structs.replace(event.build, submission_sequence=event.build.build_id)
        )
    return event


class EventCodec:
    """Encodes events to JSON, and decodes a stream message into the event it holds."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(_AnyEvent)

    def encode(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def decode(self, subject: str, payload: bytes, sequence: int = 0) -> Event:
        """The event a message holds; raises ``UndecodableEvent`` when it holds none we know,
        or when its type does not belong on its subject (permissions are granted by subject,
        so a type is only believed on its own subjects)."""
        try:
            event: Event = self._decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            raise UndecodableEvent(subject, sequence, str(error)) from None
        if subject == event.subject:
            return event
        if subject == type(event).legacy_subject():
            return legacy_upcast(event, sequence)
        raise UndecodableEvent(
            subject, sequence, f"a {event.tag()} event belongs on {event.subject}, not on {subject}"
        )


def build_id_of(event: Event) -> int | None:
    """The build an event is about."""
    build_id = getattr(event, "build_id", None)
    return build_id if isinstance(build_id, int) and not isinstance(event, WebhookEvent) else None
