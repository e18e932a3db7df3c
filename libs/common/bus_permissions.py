"""Who may do what on the bus: each identity's NATS permissions, made here and nowhere else.

Event subjects come from the event catalogue (``PUBLISHED_BY``, ``PUBLISHED_IN_NAMESPACE``,
``WORKER_SUBSCRIPTIONS`` in ``events.py``); the JetStream API subjects from what each process does
with the stream (``BusRole`` below: its durable consumer, ordered consumers, reading single
messages, id counters, remote solves). The launcher writes these into nats-server's
configuration (``envstore.launcher.nats_auth``); docs/ARCHITECTURE.md shows them
(``python -m envstore.common.bus_permissions``, checked by a test).

nats-server drops a publish outside its identity's allow list (a permission violation), so an
event type is believed only from its publishers: whoever holds the solver's key can publish
``build.solved``, never a role mapping; only the api's key can publish commands, so a command's
``principal`` was set by the api. No identity but the superuser may create, change, purge or
delete a stream: ``$JS.API.>`` is never granted whole.

Every identity receives answers on an inbox of its own (``_INBOX.<identity>.``, the client's
``inbox_prefix``), so no identity can read another's answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envstore.common.events import (
    EVENT_TYPES,
    FILESYSTEM_NAMESPACE,
    WORKER_SUBSCRIPTIONS,
    BuildCanceled,
    Event,
    subject_patterns,
    subject_patterns_published_by,
)
from envstore.common.solve_requests import SOLVE_SUBJECT
from envstore.common.transport import IDS_STREAM_SUFFIX, IDS_SUBJECT_ROOT, inbox_prefix

SERVICE_IDENTITIES = ("api", "solver", "builder", "packager", "registry", "webhooks", "watcher")
# ``envstore projection rebuild``: reads the stream, publishes nothing.
PROJECTION_REBUILD = "projection-rebuild"
# Everything, for operators' maintenance of the stream (backup, restore, importing a log); no
# envstore process connects with it.
SUPERUSER = "superuser"
IDENTITIES = (*SERVICE_IDENTITIES, PROJECTION_REBUILD, SUPERUSER)
# Durable consumers named per webhook (``webhook-<id>``): a subject token cannot match a name
# prefix, so the webhook deliverer is granted every durable's subjects (docs/SECURITY.md).
ANY_DURABLE = "*"


@dataclass(frozen=True)
class BusRole:
    """What one identity does with the stream, besides publishing its events."""

    # Its durable pull consumers (``ANY_DURABLE``: any name, created and deleted as it needs).
    durables: tuple[str, ...] = ()
    deletes_durables: bool = False
    # Ordered consumers: the projector, the live stream, the webhooks' supervisor. Creating an
    # unnamed consumer can also rewrite any named one (nats-server applies the request's name), so
    # this grant is as strong as every durable's: the pipeline workers do without it.
    ordered_consumers: bool = False
    # Event types it hears as they are published, without JetStream (plain subscriptions): the
    # workers' watch on canceled builds.
    watches: tuple[type[Event], ...] = ()
    # Creates and updates the streams (the others wait for them to exist).
    manages_streams: bool = False
    # Lists every consumer (for the lag metrics).
    lists_consumers: bool = False
    # Id counters it draws from (``build``, ``webhook``).
    id_kinds: tuple[str, ...] = ()
    # Request subjects it sends to, and those it answers.
    requests: tuple[str, ...] = ()
    serves: tuple[str, ...] = ()


ROLES: dict[str, BusRole] = {
    "api": BusRole(
        ordered_consumers=True,
        manages_streams=True,
        lists_consumers=True,
        id_kinds=("build", "webhook"),
        requests=(SOLVE_SUBJECT,),
    ),
    "solver": BusRole(durables=("solver",), watches=(BuildCanceled,), serves=(SOLVE_SUBJECT,)),
    "builder": BusRole(durables=("builder",), watches=(BuildCanceled,)),
    "packager": BusRole(durables=("packager",), watches=(BuildCanceled,)),
    # The registry reads the read model, not the stream: it publishes dynamic images' builds.
    "registry": BusRole(id_kinds=("build",)),
    "webhooks": BusRole(durables=(ANY_DURABLE,), deletes_durables=True, ordered_consumers=True),
    # The directory watcher decides on the read model, and submits or deletes environments of the
    # filesystem namespace.
    "watcher": BusRole(id_kinds=("build",)),
    PROJECTION_REBUILD: BusRole(ordered_consumers=True),
}
assert set(WORKER_SUBSCRIPTIONS) <= {durable for role in ROLES.values() for durable in role.durables}


@dataclass(frozen=True)
class BusPermissions:
    """One identity's NATS permissions (``None`` lists: everything, the superuser's)."""

    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None
    # May answer the requests it receives (to the requester's inbox) and nothing else there.
    allow_responses: bool = False
    events: tuple[str, ...] = field(default=(), compare=False)  # the event subjects among ``publish``


def event_subjects_published_by(identity: str, filesystem_namespace: str = FILESYSTEM_NAMESPACE) -> tuple[str, ...]:
    return tuple(
        subject
        for event_type in EVENT_TYPES
        for subject in subject_patterns_published_by(event_type, identity, filesystem_namespace)
    )


def _jetstream_subjects(role: BusRole, stream: str) -> list[str]:
    api = "$JS.API"
    ids_stream = f"{stream}{IDS_STREAM_SUFFIX}"
    subjects = [f"{api}.STREAM.INFO.{stream}", f"{api}.STREAM.MSG.GET.{stream}"]
    if role.manages_streams:
        for managed in (stream, ids_stream):
            subjects += [f"{api}.STREAM.CREATE.{managed}", f"{api}.STREAM.UPDATE.{managed}", f"{api}.STREAM.INFO.{managed}"]
    if role.lists_consumers:
        subjects.append(f"{api}.CONSUMER.LIST.{stream}")
    for durable in role.durables:
        subjects += [
            f"{api}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"{api}.CONSUMER.CREATE.{stream}.{durable}",
            f"{api}.CONSUMER.CREATE.{stream}.{durable}.>",
            f"{api}.CONSUMER.INFO.{stream}.{durable}",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
        if role.deletes_durables:
            subjects.append(f"{api}.CONSUMER.DELETE.{stream}.{durable}")
    if role.ordered_consumers:
        # An ordered consumer is ephemeral (no name in the subject) and flow-controlled.
        subjects += [f"{api}.CONSUMER.CREATE.{stream}", f"$JS.FC.{stream}.>"]
    subjects += [f"{IDS_SUBJECT_ROOT}.{stream}.{kind}" for kind in role.id_kinds]
    return subjects


def permissions_of(
    identity: str, stream: str = "ENVSTORE", filesystem_namespace: str = FILESYSTEM_NAMESPACE
) -> BusPermissions:
    """What ``identity`` may publish and subscribe to on a bus whose event stream is ``stream``
    (and whose filesystem namespace is so named)."""
    if identity == SUPERUSER:
        return BusPermissions(publish=None, subscribe=None)
    role = ROLES[identity]
    events = event_subjects_published_by(identity, filesystem_namespace)
    publish = [*events, *_jetstream_subjects(role, stream), *role.requests]
    watched = [subject for event_type in role.watches for subject in subject_patterns(event_type)]
    subscribe = [f"{inbox_prefix(identity)}.>", *watched, *role.serves]
    return BusPermissions(
        publish=tuple(dict.fromkeys(publish)),
        subscribe=tuple(subscribe),
        allow_responses=bool(role.serves),
        events=events,
    )


BEGIN = "<!-- bus permissions: made by `python -m envstore.common.bus_permissions`; tests/common/test_architecture_doc.py checks it -->"
END = "<!-- end of bus permissions -->"


def permissions_markdown(stream: str = "ENVSTORE") -> str:
    """The table of docs/ARCHITECTURE.md: per identity, the events it may publish and the rest."""
    lines = [
        BEGIN,
        "",
        "| identity | publishes events | other subjects it may publish | subscribes to |",
        "|---|---|---|---|",
    ]
    for identity in IDENTITIES:
        permissions = permissions_of(identity, stream)
        if permissions.publish is None:
            lines.append(f"| `{identity}` | everything | everything | everything |")
            continue
        others = [subject for subject in permissions.publish if subject not in permissions.events]
        if permissions.allow_responses:
            others.append("answers to requests it receives")

        def cell(subjects: list[str] | tuple[str, ...]) -> str:
            return "<br>".join(f"`{subject}`" for subject in subjects) or "none"

        lines.append(
            f"| `{identity}` | {cell(permissions.events)} | {cell(others)} | {cell(permissions.subscribe or ())} |"
        )
    lines += ["", END]
    return "\n".join(lines)


if __name__ == "__main__":
    print(permissions_markdown())
