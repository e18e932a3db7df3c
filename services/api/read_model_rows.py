"""The rows a batch of events changes, held in memory while the batch is applied: read from
PostgreSQL in one query per table for the whole batch (``load``), changed by the appliers in
``projection.py`` in stream order, and written back with one statement per table (``write``).

This is what makes a replay fast: a few round trips per few hundred events instead of several per
event. New rows get their ids here, in stream order, from counters (``IdCounters``) that start
above the highest id of each table and are read again whenever something else may have written
the table (another projector, an event applied by SQL, a failed transaction)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
from dataclasses import dataclass, field, fields

import asyncpg
import msgspec

from envstore.api.audit.projection import AUDIT_COLUMNS
from envstore.api.read_model_change import ReadModelChange

log = logging.getLogger(__name__)

# The tables batches read and write: their statistics are refreshed as a replay fills them.
BATCHED_TABLES = (
    "namespace",
    "environment",
    "specification",
    "build",
    "build_artifact",
    "build_progress",
    "conda_channel",
    "conda_package",
    "conda_package_build",
    "build_package",
    "build_platform_artifact",
    "audit_event",
)
# Tables whose ids the projection assigns (builds and webhooks carry theirs in their events).
COUNTED_TABLES = (
    "namespace",
    "environment",
    "specification",
    "build_artifact",
    "conda_channel",
    "conda_package",
    "conda_package_build",
)


class IdCounters:
    """The next id of each counted table: the highest id there plus one, read once (not per row)."""

    def __init__(self) -> None:
        self._highest: dict[str, int] | None = None

    @property
    def known(self) -> bool:
        return self._highest is not None

    def forget(self) -> None:
        """Read them again before the next id (the tables may have been written by other means)."""
        self._highest = None

    async def load(self, connection: asyncpg.Connection) -> None:
        row = await connection.fetchrow(
            "SELECT " + ", ".join(f"(SELECT COALESCE(max(id), 0) FROM {table}) AS {table}" for table in COUNTED_TABLES)
        )
        self._highest = dict(row)

    def next(self, table: str) -> int:
        assert self._highest is not None, "IdCounters.load first"
        self._highest[table] += 1
        return self._highest[table]


# --- rows ------------------------------------------------------------------------------------------
# ``new``: inserted by this batch; ``changed``: an existing row this batch updated.


@dataclass(slots=True)
class NamespaceRow:
    id: int
    name: str
    metadata: str | None  # JSON text
    created_on: datetime.datetime
    deleted_on: datetime.datetime | None
    new: bool = False
    changed: bool = False
    role_mappings_cleared: bool = False


@dataclass(slots=True)
class EnvironmentRow:
    id: int
    namespace_id: int
    name: str
    description: str | None
    current_build_id: int | None
    deleted_on: datetime.datetime | None
    new: bool = False
    changed: bool = False


@dataclass(slots=True)
class BuildRow:
    id: int
    submission_sequence: int
    environment_id: int
    specification_id: int
    status: str
    status_info: str | None
    size: int
    package_count: int | None
    build_key: str
    build_key_version: int
    platforms: str  # JSON text
    artifacts_wanted: str  # JSON text
    scheduled_on: datetime.datetime
    started_on: datetime.datetime | None
    ended_on: datetime.datetime | None
    deleted_on: datetime.datetime | None
    kept_artifacts: str | None  # JSON text
    lock_digest: str | None
    specification_blob_digest: str | None
    new: bool = False
    changed: bool = False


@dataclass(slots=True)
class ArtifactRow:
    id: int
    build_id: int
    artifact_type: str
    key: str
    digest: str
    size: int
    content_type: str
    platform: str
    new: bool = False
    changed: bool = False


@dataclass(slots=True)
class PlatformArtifactRow:
    """A further platform's artifact of a multi-platform build (written as an upsert)."""

    build_id: int
    artifact_type: str
    platform: str
    key: str
    digest: str
    size: int
    content_type: str


@dataclass(slots=True)
class ChannelRow:
    id: int
    name: str
    last_update: datetime.datetime | None
    new: bool = False
    changed: bool = False


@dataclass(slots=True)
class SpecificationRow:
    id: int
    name: str
    spec: str  # JSON text
    sha256: str
    created_on: datetime.datetime


@dataclass(slots=True)
class PackageRow:
    id: int
    channel_id: int
    name: str
    version: str
    license: str | None


@dataclass(slots=True)
class PackageBuildRow:
    id: int
    package_id: int
    channel_id: int
    build: str
    build_number: int
    depends: str  # JSON text
    constrains: str  # JSON text
    md5: str | None
    sha256: str | None
    size: int | None
    subdir: str
    timestamp: int | None


@dataclass(slots=True)
class ProgressRow:
    sequence: int
    build_id: int
    phase: str
    state: str
    message: str
    duration_seconds: float | None
    service: str
    occurred_on: datetime.datetime


# --- what a batch needs --------------------------------------------------------------------------


@dataclass
class WantedRows:
    """The keys of the rows a batch's appliers will look at (gathered before applying it)."""

    namespaces: set[str] = field(default_factory=set)
    environments: set[tuple[str, str]] = field(default_factory=set)  # (namespace name, environment name)
    specifications: set[str] = field(default_factory=set)  # sha256
    builds: set[int] = field(default_factory=set)  # their artifacts too
    build_scopes: set[int] = field(default_factory=set)  # builds whose namespace and environment names are needed
    channels: set[str] = field(default_factory=set)
    packages: set[tuple[str, str, str]] = field(default_factory=set)  # (channel, name, version)


class BatchRows:
    """Every row a batch reads or writes, by the keys the appliers look them up with. (Rows are
    made from records by position: each query selects its row type's fields in order.)"""

    def __init__(self, counters: IdCounters) -> None:
        self.counters = counters
        self.namespaces: dict[str, NamespaceRow] = {}
        self.environments_by_id: dict[int, EnvironmentRow] = {}
        self._environments_by_name: dict[tuple[int, str], EnvironmentRow] = {}  # (namespace id, name)
        self.specifications: dict[str, int] = {}  # sha256 → id
        self.new_specifications: list[SpecificationRow] = []
        self.builds: dict[int, BuildRow] = {}
        self.artifacts: dict[tuple[int, str], ArtifactRow] = {}
        self.channels: dict[str, ChannelRow] = {}
        self.packages: dict[tuple[int, str, str], int] = {}  # (channel id, name, version) → id
        self.new_packages: list[PackageRow] = []
        self.package_builds: dict[tuple[int, str, str], int] = {}  # (package id, subdir, build) → id
        self.new_package_builds: list[PackageBuildRow] = []
        self.build_packages: dict[tuple[int, int], None] = {}  # (build id, package build id), in order
        self.progress: list[ProgressRow] = []
        self.platform_artifacts: dict[tuple[int, str, str], PlatformArtifactRow] = {}
        self.build_scopes: dict[int, tuple[str, str]] = {}  # build id → (namespace, environment)
        self.audit: list[tuple] = []  # rows of the audit trail (audit.projection.AUDIT_COLUMNS)

    def next_id(self, table: str) -> int:
        return self.counters.next(table)

    def carried_forward(self) -> BatchRows:
        """The rows the next batch starts from, once this batch's ``statements()`` are made: the rows
        those statements write, as they will be once committed (and what must travel with them: a
        build's artifacts, a package's builds). Any other row the next batch needs is read from
        PostgreSQL, where earlier batches have committed it — so it can be applied while this
        batch's statements still run."""
        following = BatchRows(self.counters)
        for name, namespace in self.namespaces.items():
            if namespace.new or namespace.changed or namespace.role_mappings_cleared:
                namespace.new = namespace.changed = namespace.role_mappings_cleared = False
                following.namespaces[name] = namespace
        for environment in self.environments_by_id.values():
            if environment.new or environment.changed:
                environment.new = environment.changed = False
                following.add_environment(environment)
        for build in self.builds.values():
            if build.new or build.changed:
                build.new = build.changed = False
                following.builds[build.id] = build
        for artifact in self.artifacts.values():
            if artifact.new or artifact.changed:
                artifact.new = artifact.changed = False
                following.builds.setdefault(artifact.build_id, self.builds[artifact.build_id])
        # A build travels with every artifact of it (the next batch reads neither).
        following.artifacts = {key: artifact for key, artifact in self.artifacts.items() if key[0] in following.builds}
        following.build_scopes = {
            build_id: scope for build_id, scope in self.build_scopes.items() if build_id in following.builds
        }
        for name, channel in self.channels.items():
            if channel.new or channel.changed:
                channel.new = channel.changed = False
                following.channels[name] = channel
        following.specifications = {row.sha256: row.id for row in self.new_specifications}
        packages_written = {row.id for row in self.new_packages} | {row.package_id for row in self.new_package_builds}
        following.packages = {key: id_ for key, id_ in self.packages.items() if id_ in packages_written}
        following.package_builds = {key: id_ for key, id_ in self.package_builds.items() if key[0] in packages_written}
        return following

    def _holds_environment(self, namespace: str, name: str) -> bool:
        namespace_row = self.namespaces.get(namespace)
        return namespace_row is not None and (namespace_row.id, name) in self._environments_by_name

    def environment(self, namespace_id: int, name: str) -> EnvironmentRow | None:
        return self._environments_by_name.get((namespace_id, name))

    def add_environment(self, environment: EnvironmentRow) -> EnvironmentRow:
        self.environments_by_id[environment.id] = environment
        self._environments_by_name[(environment.namespace_id, environment.name)] = environment
        return environment

    # --- reading ----------------------------------------------------------------------------

    async def load(self, connection: asyncpg.Connection, wanted: WantedRows) -> None:
        """Read the rows ``wanted`` names that are not held already (carried from the batch before)."""
        names = sorted((wanted.namespaces | {namespace for namespace, _ in wanted.environments}) - self.namespaces.keys())
        if names:
            for row in await connection.fetch(
                "SELECT id, name, metadata::text AS metadata, created_on, deleted_on FROM namespace WHERE name = ANY($1::text[])",
                names,
            ):
                self.namespaces[row["name"]] = NamespaceRow(*row)
        pairs = sorted(pair for pair in wanted.environments if not self._holds_environment(*pair))
        if pairs:
            for row in await connection.fetch(
                """SELECT e.id, e.namespace_id, e.name, e.description, e.current_build_id, e.deleted_on
                   FROM environment e JOIN namespace n ON n.id = e.namespace_id
                   JOIN unnest($1::text[], $2::text[]) AS wanted(namespace, name)
                     ON wanted.namespace = n.name AND wanted.name = e.name""",
                [namespace for namespace, _ in pairs],
                [name for _, name in pairs],
            ):
                self.add_environment(EnvironmentRow(*row))
        specifications = sorted(wanted.specifications - self.specifications.keys())
        if specifications:
            for row in await connection.fetch(
                "SELECT sha256, id FROM specification WHERE sha256 = ANY($1::text[])", specifications
            ):
                self.specifications[row["sha256"]] = row["id"]
        build_ids = sorted(wanted.builds - self.builds.keys())
        if build_ids:
            build_columns = ", ".join(
                f"{column.name}::text AS {column.name}" if column.name in ("platforms", "artifacts_wanted", "kept_artifacts")
                else column.name
                for column in fields(BuildRow)
                if column.name not in ("new", "changed")
            )
            for row in await connection.fetch(
                f"SELECT {build_columns} FROM build WHERE id = ANY($1::bigint[])", build_ids
            ):
                self.builds[row["id"]] = BuildRow(*row)
            for row in await connection.fetch(
                """SELECT id, build_id, artifact_type, key, digest, size, content_type, platform FROM build_artifact
                   WHERE build_id = ANY($1::bigint[])""",
                build_ids,
            ):
                self.artifacts[(row["build_id"], row["artifact_type"])] = ArtifactRow(*row)
        # The builds' environments (a completed build becomes its environment's current one),
        # whether the build was read now or carried.
        missing = sorted(
            {self.builds[build_id].environment_id for build_id in wanted.builds if build_id in self.builds}
            - self.environments_by_id.keys()
        )
        if missing:
            for row in await connection.fetch(
                """SELECT id, namespace_id, name, description, current_build_id, deleted_on FROM environment
                   WHERE id = ANY($1::integer[])""",
                missing,
            ):
                self.add_environment(EnvironmentRow(*row))
        scopes = sorted(wanted.build_scopes - self.build_scopes.keys())
        if scopes:
            for row in await connection.fetch(
                """SELECT b.id, n.name, e.name FROM build b JOIN environment e ON e.id = b.environment_id
                   JOIN namespace n ON n.id = e.namespace_id WHERE b.id = ANY($1::bigint[])""",
                scopes,
            ):
                self.build_scopes[row[0]] = (row[1], row[2])
        channels = sorted((wanted.channels | {channel for channel, _, _ in wanted.packages}) - self.channels.keys())
        if channels:
            for row in await connection.fetch(
                "SELECT id, name, last_update FROM conda_channel WHERE name = ANY($1::text[])", channels
            ):
                self.channels[row["name"]] = ChannelRow(*row)
        known_channels = [
            key for key in ((self.channels[channel].id, name, version) for channel, name, version in wanted.packages
                            if channel in self.channels)
            if key not in self.packages
        ]
        if known_channels:
            triples = sorted(known_channels)
            packages = await connection.fetch(
                """SELECT p.id, p.channel_id, p.name, p.version
                   FROM unnest($1::integer[], $2::text[], $3::text[]) AS wanted(channel_id, name, version)
                   JOIN conda_package p
                     ON p.channel_id = wanted.channel_id AND p.name = wanted.name AND p.version = wanted.version""",
                [channel_id for channel_id, _, _ in triples],
                [name for _, name, _ in triples],
                [version for _, _, version in triples],
            )
            for row in packages:
                self.packages[(row["channel_id"], row["name"], row["version"])] = row["id"]
            if packages:
                for row in await connection.fetch(
                    "SELECT id, package_id, subdir, build FROM conda_package_build WHERE package_id = ANY($1::integer[])",
                    [row["id"] for row in packages],
                ):
                    self.package_builds[(row["package_id"], row["subdir"], row["build"])] = row["id"]

    def change(self) -> ReadModelChange:
        """What writing these rows changes for the caches of answers (progress lines and the audit
        trail are in no cached answer)."""
        builds = {row.id for row in self.builds.values() if row.new or row.changed}
        builds |= {row.build_id for row in self.artifacts.values() if row.new or row.changed}
        builds |= {build_id for build_id, _, _ in self.platform_artifacts}
        builds |= {build_id for build_id, _ in self.build_packages}
        namespaces = [row for row in self.namespaces.values() if row.new or row.changed or row.role_mappings_cleared]
        listings = (
            bool(builds)
            or bool(namespaces)
            or any(row.new or row.changed for row in self.environments_by_id.values())
        )
        return ReadModelChange(frozenset(builds), listings, access=bool(namespaces))

    # --- writing ----------------------------------------------------------------------------

    async def write(self, connection: asyncpg.Connection) -> None:
        """Every new and changed row, one statement per table and kind of change, in the order the
        foreign keys need."""
        await execute_together(connection, self.statements(), Statement("SELECT 1", ()))

    def statements(self) -> list[Statement]:
        """The statements that write every new and changed row, their rows encoded now (so the rows
        may change afterwards: the next batch goes on with them while these are executed)."""
        statements: list[Statement] = []
        namespaces = list(self.namespaces.values())
        _insert(statements, "namespace", ("id", "name", "created_on"), ("integer", "text", "timestamp"),
                      [(row.id, row.name, row.created_on) for row in namespaces if row.new])
        _update(statements, "namespace", ("metadata", "created_on", "deleted_on"), ("jsonb", "timestamp", "timestamp"),
                      [(row.id, row.metadata, row.created_on, row.deleted_on) for row in namespaces if row.changed and not row.new])
        cleared = [row.id for row in namespaces if row.role_mappings_cleared]
        if cleared:
            statements.append(Statement("DELETE FROM namespace_role_mapping WHERE namespace_id = ANY($1::integer[])", (cleared,)))
        _insert(statements, "specification", ("id", "name", "spec", "sha256", "created_on"),
                      ("integer", "text", "jsonb", "text", "timestamp"),
                      [(row.id, row.name, row.spec, row.sha256, row.created_on) for row in self.new_specifications])
        environments = list(self.environments_by_id.values())
        environment_columns = ("namespace_id", "name", "description", "current_build_id", "deleted_on")
        environment_types = ("integer", "text", "text", "bigint", "timestamp")
        _insert(statements, "environment", ("id", *environment_columns), ("integer", *environment_types),
                      [(row.id, row.namespace_id, row.name, row.description, row.current_build_id, row.deleted_on)
                       for row in environments if row.new])
        # current_build_id is written after the builds: it refers to one (no foreign key today,
        # but the order is the one a reader would expect).
        builds = list(self.builds.values())
        build_columns = tuple(column.name for column in fields(BuildRow) if column.name not in ("new", "changed"))
        build_types = ("bigint", "bigint", "integer", "integer", "text", "text", "bigint", "integer", "text", "integer",
                       "jsonb", "jsonb", "timestamp", "timestamp", "timestamp", "timestamp", "jsonb", "text", "text")
        _insert(statements, "build", build_columns, build_types,
                      [tuple(getattr(row, column) for column in build_columns) for row in builds if row.new])
        changed_columns = ("status", "status_info", "size", "package_count", "started_on", "ended_on", "deleted_on",
                           "kept_artifacts", "lock_digest")
        _update(statements, "build", changed_columns,
                      ("text", "text", "bigint", "integer", "timestamp", "timestamp", "timestamp", "jsonb", "text"),
                      [(row.id, *(getattr(row, column) for column in changed_columns))
                       for row in builds if row.changed and not row.new], key_type="bigint")
        _update(statements, "environment", ("description", "current_build_id", "deleted_on"),
                      ("text", "bigint", "timestamp"),
                      [(row.id, row.description, row.current_build_id, row.deleted_on)
                       for row in environments if row.changed and not row.new])
        channels = list(self.channels.values())
        _insert(statements, "conda_channel", ("id", "name", "last_update"), ("integer", "text", "timestamp"),
                      [(row.id, row.name, row.last_update) for row in channels if row.new])
        _update(statements, "conda_channel", ("last_update",), ("timestamp",),
                      [(row.id, row.last_update) for row in channels if row.changed and not row.new])
        _insert(statements, "conda_package", ("id", "channel_id", "name", "version", "license"),
                      ("integer", "integer", "text", "text", "text"),
                      [(row.id, row.channel_id, row.name, row.version, row.license) for row in self.new_packages])
        package_build_columns = tuple(column.name for column in fields(PackageBuildRow))
        _insert(statements, "conda_package_build", package_build_columns,
                      ("integer", "integer", "integer", "text", "integer", "jsonb", "jsonb", "text", "text", "bigint",
                       "text", "bigint"),
                      [tuple(getattr(row, column) for column in package_build_columns) for row in self.new_package_builds])
        _insert(statements, "build_package", ("build_id", "package_build_id"), ("bigint", "integer"),
                      list(self.build_packages), conflict="ON CONFLICT DO NOTHING")
        artifacts = list(self.artifacts.values())
        artifact_columns = ("build_id", "artifact_type", "key", "digest", "size", "content_type", "platform")
        _insert(statements, "build_artifact", ("id", *artifact_columns),
                      ("integer", "bigint", "text", "text", "text", "bigint", "text", "text"),
                      [(row.id, *(getattr(row, column) for column in artifact_columns)) for row in artifacts if row.new])
        _update(statements, "build_artifact", ("key", "digest", "size", "content_type", "platform"),
                      ("text", "text", "bigint", "text", "text"),
                      [(row.id, row.key, row.digest, row.size, row.content_type, row.platform)
                       for row in artifacts if row.changed and not row.new])
        platform_columns = tuple(column.name for column in fields(PlatformArtifactRow))
        _insert(statements, "build_platform_artifact", platform_columns,
                      ("bigint", "text", "text", "text", "text", "bigint", "text"),
                      [tuple(getattr(row, column) for column in platform_columns) for row in self.platform_artifacts.values()],
                      conflict="""ON CONFLICT (build_id, artifact_type, platform) DO UPDATE SET key = EXCLUDED.key,
                                  digest = EXCLUDED.digest, size = EXCLUDED.size, content_type = EXCLUDED.content_type""")
        progress_columns = tuple(column.name for column in fields(ProgressRow))
        _insert(statements, "build_progress", progress_columns,
                      ("bigint", "bigint", "text", "text", "text", "double precision", "text", "timestamp"),
                      [tuple(getattr(row, column) for column in progress_columns) for row in self.progress],
                      conflict="ON CONFLICT DO NOTHING")
        _insert(statements, "audit_event", AUDIT_COLUMNS,
                      ("bigint", "timestamp", "text", "text", "text", "text", "bigint", "jsonb"),
                      self.audit, conflict="ON CONFLICT (sequence) DO NOTHING")
        return statements


_ROWS_JSON = msgspec.json.Encoder()


def _unpacked(types: tuple[str, ...]) -> str:
    """The columns of ``jsonb_array_elements($1) AS r``: each row an array, cast field by field."""
    return ", ".join(f"(r->>{index})::{type_}" for index, type_ in enumerate(types))


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a batch's writes and its arguments (``$1``, ``$2`` … in its text)."""

    sql: str
    arguments: tuple[object, ...]
    name: str = ""  # how the query of ``execute_together`` refers to it


_PARAMETER = re.compile(r"\$(\d+)")


async def execute_together(connection: asyncpg.Connection, statements: list[Statement], final: Statement) -> None:
    """``statements`` and then ``final`` as one statement, in one round trip: each of
    ``statements`` a data-modifying ``WITH`` clause (PostgreSQL runs each exactly once, checks the
    foreign keys at the end, and no two of a batch's statements touch the same row), ``final`` the
    query. One round trip instead of one per table matters: the projector's event loop is busy with
    the next batch meanwhile, so every round trip's answer may wait for it."""
    clauses: list[str] = []
    arguments: list[object] = []

    def renumbered(statement: Statement) -> str:
        offset = len(arguments)
        arguments.extend(statement.arguments)
        return _PARAMETER.sub(lambda number: f"${int(number.group(1)) + offset}", statement.sql)

    for index, statement in enumerate(statements):
        clauses.append(f"{statement.name or f'written_{index}'} AS ({renumbered(statement)})")
    query = renumbered(final)
    await connection.execute(f"WITH {', '.join(clauses)} {query}" if clauses else query, *arguments)


def _insert(
    statements: list[Statement],
    table: str,
    columns: tuple[str, ...],
    types: tuple[str, ...],
    rows: list[tuple],
    conflict: str = "",
) -> None:
    """Many rows in one statement, sent as one JSON array of rows (encoded in C by msgspec; asyncpg's
    arrays cost several times more per value on the projector's side, which is the bottleneck)."""
    if not rows:
        return
    statements.append(Statement(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {_unpacked(types)} "
        f"FROM jsonb_array_elements($1::text::jsonb) AS r {conflict}",
        (_ROWS_JSON.encode(rows).decode(),),
    ))


def _update(
    statements: list[Statement],
    table: str,
    columns: tuple[str, ...],
    types: tuple[str, ...],
    rows: list[tuple],
    key_type: str = "integer",
) -> None:
    """Many rows' new values in one statement, by id (each row's tuple: id, then ``columns``)."""
    if not rows:
        return
    assignments = ", ".join(f"{column} = changed.{column}" for column in columns)
    statements.append(Statement(
        f"UPDATE {table} SET {assignments} FROM (SELECT {_unpacked((key_type, *types))} "
        f"FROM jsonb_array_elements($1::text::jsonb) AS r) AS changed(id, {', '.join(columns)}) "
        f"WHERE {table}.id = changed.id",
        (_ROWS_JSON.encode(rows).decode(),),
    ))


class StatisticsUpkeep:
    """Fresh planner statistics while a replay fills the tables. PostgreSQL's autovacuum analyzes a
    table only minutes after it grew; until then its planner takes a table of 100,000 rows for an
    empty one and looks rows up by scanning it (seconds per batch). So the tables are analyzed
    after 1,000 events, 2,000, 4,000 and so on: a few times per replay, rarely once it is done.
    Each ANALYZE runs beside the projection on a connection of its own (one at a time), so the
    next batches do not wait for it (it took 100-200 ms, a live projection's worst lag)."""

    def __init__(self, first: int = 1000) -> None:
        self._first = first
        self._applied = 0
        self._next = first
        self._analyzing: asyncio.Task[None] | None = None

    def resume_at(self, sequence: int) -> None:
        """The read model holds the log up to ``sequence`` already (a restart, another replica's
        lead): its statistics are PostgreSQL's own until the log has doubled from there. (Counting
        from zero again, a restarted API re-analyzed tables of 250,000 rows 5 times in its first
        16,000 live events, each time a lag spike for every reader.)"""
        self._applied = sequence
        self._next = max(self._first, sequence * 2)

    def applied(self, pool: asyncpg.Pool, events: int) -> None:
        self._applied += events
        if self._applied >= self._next and (self._analyzing is None or self._analyzing.done()):
            self._next = self._applied * 2
            self._analyzing = asyncio.create_task(self._analyze(pool))

    @staticmethod
    async def _analyze(pool: asyncpg.Pool) -> None:
        try:
            await pool.execute("ANALYZE " + ", ".join(BATCHED_TABLES))
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            log.warning("could not refresh the read model's planner statistics", exc_info=True)

    async def stop(self) -> None:
        if self._analyzing is not None:
            self._analyzing.cancel()
            await asyncio.gather(self._analyzing, return_exceptions=True)
            self._analyzing = None
