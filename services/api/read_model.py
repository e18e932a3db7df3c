"""Queries on the read model, shaped as conda-store serializes its objects."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from envstore.api.visibility import SqlFilter, restrict_environments, restrict_namespaces
from envstore.common.permissions import Principal
from envstore.common.read_model_rules import role_mapping_bindings, setting_overrides

BUILD_SORT_COLUMNS = {"id": "b.id", "started_on": "b.started_on", "scheduled_on": "b.scheduled_on", "ended_on": "b.ended_on"}


@dataclass(frozen=True)
class Page:
    page: int
    size: int
    descending: bool = False

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


@dataclass(frozen=True)
class EnvironmentFilters:
    search: str | None = None
    namespace: str | None = None
    name: str | None = None
    status: str | None = None
    artifact: str | None = None
    packages: tuple[str, ...] = ()
    token_bindings: dict[str, list[str]] | None = None  # the ?jwt= restriction


@dataclass(frozen=True)
class BuildFilters:
    status: str | None = None
    artifact: str | None = None
    environment_id: int | None = None
    name: str | None = None
    namespace: str | None = None
    packages: tuple[str, ...] = ()


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def environment_document(
    row: asyncpg.Record, role_mappings: list[dict] | msgspec.Raw, with_current_build: bool = True
) -> dict[str, Any]:
    document = {
        "id": row["id"],
        "namespace": {
            "id": row["ns_id"],
            "name": row["ns_name"],
            "metadata_": _json(row["ns_metadata"]),
            "role_mappings": role_mappings,
        },
        "name": row["name"],
        "current_build_id": row["current_build_id"],
        "current_build": None,
        "description": row["description"],
    }
    if not with_current_build:
        del document["current_build"]
    return document


@dataclass(frozen=True)
class BuildAnswer:
    namespace: str
    environment: str
    status: str
    document: dict[str, Any]


def queue_status(builds_ahead: int) -> str:
    """A queued build's ``status_info``: where it waits (conda-store's clients show the text)."""
    if builds_ahead == 0:
        return "queued: next to be solved"
    return f"queued: {builds_ahead} build{'s' if builds_ahead != 1 else ''} ahead of it"


def build_document(
    row: asyncpg.Record,
    specification: dict | None,
    artifacts: list[dict] | msgspec.Raw | None,
    builds_ahead: int | None = None,
) -> dict[str, Any]:
    return {
        "id": row["id"],
        "environment_id": row["environment_id"],
        "specification": specification,
        "packages": None,
        "status": row["status"],
        "status_info": queue_status(builds_ahead) if builds_ahead is not None else row["status_info"],
        "size": row["size"],
        "scheduled_on": row["scheduled_on"],
        "started_on": row["started_on"],
        "ended_on": row["ended_on"],
        "build_artifacts": artifacts,
    }


ENVIRONMENT_SELECT = """SELECT e.id, e.name, e.description, e.current_build_id, e.deleted_on,
       n.id AS ns_id, n.name AS ns_name, n.metadata AS ns_metadata
FROM environment e JOIN namespace n ON n.id = e.namespace_id"""

ENVIRONMENT_SELECT_WITH_ROLE_MAPPINGS = """SELECT e.id, e.name, e.description, e.current_build_id, e.deleted_on,
       n.id AS ns_id, n.name AS ns_name, n.metadata AS ns_metadata,
       (SELECT COALESCE(json_agg(json_build_object('id', m.id, 'entity', m.entity, 'role', m.role) ORDER BY m.id), '[]')::text
        FROM namespace_role_mapping m WHERE m.namespace_id = n.id) AS role_mappings
FROM environment e JOIN namespace n ON n.id = e.namespace_id"""

LEFT_TO_REMOVE = "(b.deleted_on IS NULL OR COALESCE(jsonb_array_length(b.kept_artifacts), 0) > 0)"

BUILD_SELECT = """SELECT b.*, e.name AS environment_name, n.name AS namespace_name
FROM build b JOIN environment e ON e.id = b.environment_id JOIN namespace n ON n.id = e.namespace_id"""


def restrict_to_build_contents(
    sql: SqlFilter, build_column: str, artifact: str | None, packages: tuple[str, ...]
) -> None:
    """Only rows whose build (``build_column``) has the artifact and every one of the packages."""
    if artifact is not None:
        sql.add(
            f"EXISTS (SELECT 1 FROM build_artifact a WHERE a.build_id = {build_column} "
            f"AND a.artifact_type = {sql.parameter(artifact)})"
        )
    for package in packages:
        sql.add(
            "EXISTS (SELECT 1 FROM build_package bp JOIN conda_package_build pb ON pb.id = bp.package_build_id "
            "JOIN conda_package p ON p.id = pb.package_id "
            f"WHERE bp.build_id = {build_column} AND p.name = {sql.parameter(package)})"
        )


class ReadModel:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- namespaces ---------------------------------------------------------------------------

    async def namespace(self, name: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow("SELECT * FROM namespace WHERE name = $1 AND deleted_on IS NULL", name)

    async def namespace_document(self, row: asyncpg.Record) -> dict[str, Any]:
        return {
            "id": row["id"],
            "name": row["name"],
            "metadata_": _json(row["metadata"]),
            "role_mappings": await self.role_mappings(row["id"]),
        }

    async def role_mappings(self, namespace_id: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT id, entity, role FROM namespace_role_mapping WHERE namespace_id = $1 ORDER BY id", namespace_id
        )
        return [dict(row) for row in rows]

    async def role_mappings_by_namespace(self, rows: list[asyncpg.Record]) -> dict[int, list[dict[str, Any]]]:
        """The role mappings of every namespace of a page of environments, in one query (a query
        per row made the CLI's 10,000-environment listing take seconds)."""
        mappings: dict[int, list[dict[str, Any]]] = {row["ns_id"]: [] for row in rows}
        for mapping in await self.pool.fetch(
            """SELECT namespace_id, id, entity, role FROM namespace_role_mapping
               WHERE namespace_id = ANY($1::integer[]) ORDER BY id""",
            list(mappings),
        ):
            mappings[mapping["namespace_id"]].append(
                {"id": mapping["id"], "entity": mapping["entity"], "role": mapping["role"]}
            )
        return mappings

    async def namespaces(self, principal: Principal, page: Page) -> tuple[list[asyncpg.Record], int]:
        sql = SqlFilter()
        sql.add("n.deleted_on IS NULL")
        restrict_namespaces(sql, principal, "n.name")
        order = "DESC" if page.descending else "ASC"
        count = await self.pool.fetchval(f"SELECT count(*) FROM namespace n WHERE {sql.where()}", *sql.parameters)
        rows = await self.pool.fetch(
            f"SELECT n.* FROM namespace n WHERE {sql.where()} ORDER BY n.name {order}, n.id {order} "
            f"LIMIT {page.size} OFFSET {page.offset}",
            *sql.parameters,
        )
        return rows, count

    async def v2_role_mappings(self, namespace_id: int, other_namespace_id: int | None = None) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT m.id, n.name AS namespace, o.name AS other_namespace, m.role
               FROM namespace_role_mapping_v2 m JOIN namespace n ON n.id = m.namespace_id
               JOIN namespace o ON o.id = m.other_namespace_id
               WHERE m.namespace_id = $1 AND ($2::integer IS NULL OR m.other_namespace_id = $2)
               ORDER BY m.id""",
            namespace_id,
            other_namespace_id,
        )
        return [dict(row) for row in rows]

    async def database_bindings(self, primary_namespace: str, version: int) -> dict[str, list[str]]:
        return await role_mapping_bindings(self.pool, primary_namespace, version)

    async def aggregate_position(self, subjects: str) -> int:
        """The stream sequence of the last event the read model applied on an aggregate's subjects."""
        return await self.pool.fetchval(
            "SELECT last_sequence FROM aggregate_position WHERE subjects = $1", subjects
        ) or 0

    # --- environments -------------------------------------------------------------------------

    async def environment_row(self, namespace: str, name: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"""{ENVIRONMENT_SELECT} WHERE n.name = $1 AND e.name = $2
                AND n.deleted_on IS NULL AND e.deleted_on IS NULL""",
            namespace,
            name,
        )

    async def environment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The environment as conda-store answers it, in one query (role mappings included, as
        JSON made by PostgreSQL and passed through)."""
        row = await self.pool.fetchrow(
            f"""{ENVIRONMENT_SELECT_WITH_ROLE_MAPPINGS} WHERE n.name = $1 AND e.name = $2
                AND n.deleted_on IS NULL AND e.deleted_on IS NULL""",
            namespace,
            name,
        )
        if row is None:
            return None
        return environment_document(row, msgspec.Raw(row["role_mappings"].encode()))

    def _environment_filter(self, principal: Principal, filters: EnvironmentFilters) -> SqlFilter:
        sql = SqlFilter()
        sql.add("e.deleted_on IS NULL AND n.deleted_on IS NULL")
        restrict_environments(sql, principal.effective_bindings(), "n.name", "e.name")
        if filters.token_bindings is not None:
            restrict_environments(sql, filters.token_bindings, "n.name", "e.name")
        if filters.search:
            pattern = "%" + filters.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            parameter = sql.parameter(pattern)
            sql.add(f"(n.name LIKE {parameter} OR e.name LIKE {parameter})")
        if filters.namespace is not None:
            sql.add(f"n.name = {sql.parameter(filters.namespace)}")
        if filters.name is not None:
            sql.add(f"e.name = {sql.parameter(filters.name)}")
        if filters.status is not None:
            sql.add(f"(SELECT status FROM build WHERE id = e.current_build_id) = {sql.parameter(filters.status)}")
        restrict_to_build_contents(sql, "e.current_build_id", filters.artifact, filters.packages)
        return sql

    async def environments_page(
        self, principal: Principal, filters: EnvironmentFilters, page: Page, sort_by: list[str]
    ) -> tuple[list[dict[str, Any]], int]:
        sql = self._environment_filter(principal, filters)
        order = "DESC" if page.descending else "ASC"
        columns = {"namespace": "n.name", "name": "e.name"}
        keys = [columns[key] for key in sort_by if key in columns] or ["n.name", "e.name"]
        count = await self.pool.fetchval(
            f"SELECT count(*) FROM environment e JOIN namespace n ON n.id = e.namespace_id WHERE {sql.where()}",
            *sql.parameters,
        )
        rows = await self.pool.fetch(
            f"{ENVIRONMENT_SELECT} WHERE {sql.where()} ORDER BY "
            + ", ".join(f"{key} {order}" for key in [*keys, "e.id"])
            + f" LIMIT {page.size} OFFSET {page.offset}",
            *sql.parameters,
        )
        mappings = await self.role_mappings_by_namespace(rows)
        return [environment_document(row, mappings[row["ns_id"]]) for row in rows], count

    async def environments_after(
        self,
        principal: Principal,
        filters: EnvironmentFilters,
        sort_by: list[str],
        descending: bool,
        limit: int,
        after: tuple[list[Any], int] | None,
    ) -> tuple[list[dict[str, Any]], int, tuple[dict[str, Any], int] | None]:
        """The v2 cursor walk: rows strictly after (sort values…, id)."""
        sql = self._environment_filter(principal, filters)
        count = await self.pool.fetchval(
            f"SELECT count(*) FROM environment e JOIN namespace n ON n.id = e.namespace_id WHERE {sql.where()}",
            *sql.parameters,
        )
        columns = {"namespace": "n.name", "name": "e.name"}
        keys = [columns[key] for key in sort_by]
        order = "DESC" if descending else "ASC"
        if after is not None:
            values, last_id = after
            left = "(" + ", ".join([*keys, "e.id"]) + ")"
            right = "(" + ", ".join([*(sql.parameter(v) for v in values), sql.parameter(last_id)]) + ")"
            sql.add(f"{left} {'<' if descending else '>'} {right}")
        rows = await self.pool.fetch(
            f"{ENVIRONMENT_SELECT} WHERE {sql.where()} ORDER BY "
            + ", ".join(f"{key} {order}" for key in [*keys, "e.id"])
            + f" LIMIT {limit}",
            *sql.parameters,
        )
        mappings = await self.role_mappings_by_namespace(rows)
        documents = [environment_document(row, mappings[row["ns_id"]], False) for row in rows]
        last = None
        if rows:
            row = rows[-1]
            sort_values = {key: (row["ns_name"] if key == "namespace" else row["name"]) for key in sort_by}
            last = (sort_values, row["id"])
        return documents, count, last

    # --- builds -------------------------------------------------------------------------------

    async def build_row(self, build_id: int) -> asyncpg.Record | None:
        return await self.pool.fetchrow(f"{BUILD_SELECT} WHERE b.id = $1", build_id)

    async def build(self, build_id: int) -> BuildAnswer | None:
        """The build as conda-store answers it, in one query (its specification and artifacts
        as JSON made by PostgreSQL and passed through, not decoded and encoded again)."""
        row = await self.pool.fetchrow(
            """SELECT b.id, b.environment_id, b.status, b.status_info, b.size, b.scheduled_on, b.started_on,
                      b.ended_on, e.name AS environment_name, n.name AS namespace_name,
                      CASE WHEN b.status = 'QUEUED' THEN
                          (SELECT count(*) FROM build q
                           WHERE q.status = 'QUEUED' AND q.submission_sequence < b.submission_sequence)
                      END AS builds_ahead,
                      s.id AS specification_id, s.name AS specification_name, s.spec::text AS spec,
                      s.sha256, s.created_on AS specification_created_on,
                      (SELECT COALESCE(json_agg(json_build_object('id', a.id, 'artifact_type', a.artifact_type,
                                                                  'key', a.key) ORDER BY a.id), '[]')::text
                       FROM build_artifact a WHERE a.build_id = b.id) AS artifacts
               FROM build b JOIN environment e ON e.id = b.environment_id JOIN namespace n ON n.id = e.namespace_id
               JOIN specification s ON s.id = b.specification_id
               WHERE b.id = $1""",
            build_id,
        )
        if row is None:
            return None
        document = build_document(
            row,
            {
                "id": row["specification_id"],
                "name": row["specification_name"],
                "spec": msgspec.Raw(row["spec"].encode()),
                "sha256": row["sha256"],
                "created_on": row["specification_created_on"],
            },
            msgspec.Raw(row["artifacts"].encode()),
            row["builds_ahead"],
        )
        return BuildAnswer(row["namespace_name"], row["environment_name"], row["status"], document)

    async def builds_page(
        self, principal: Principal, filters: BuildFilters, page: Page, sort_by: list[str]
    ) -> tuple[list[dict[str, Any]], int]:
        sql = SqlFilter()
        restrict_environments(sql, principal.effective_bindings(), "n.name", "e.name")
        if filters.status is not None:
            sql.add(f"b.status = {sql.parameter(filters.status)}")
        if filters.environment_id is not None:
            sql.add(f"b.environment_id = {sql.parameter(filters.environment_id)}")
        if filters.name is not None:
            sql.add(f"e.name = {sql.parameter(filters.name)}")
        if filters.namespace is not None:
            sql.add(f"n.name = {sql.parameter(filters.namespace)}")
        restrict_to_build_contents(sql, "b.id", filters.artifact, filters.packages)
        order = "DESC" if page.descending else "ASC"
        keys = [BUILD_SORT_COLUMNS[key] for key in sort_by if key in BUILD_SORT_COLUMNS] or ["b.id"]
        base = "FROM build b JOIN environment e ON e.id = b.environment_id JOIN namespace n ON n.id = e.namespace_id"
        count = await self.pool.fetchval(f"SELECT count(*) {base} WHERE {sql.where()}", *sql.parameters)
        rows = await self.pool.fetch(
            f"{BUILD_SELECT} WHERE {sql.where()} ORDER BY "
            + ", ".join(f"{key} {order}" for key in [*keys, "b.id"])
            + f" LIMIT {page.size} OFFSET {page.offset}",
            *sql.parameters,
        )
        waiting = await self.builds_ahead([row["submission_sequence"] for row in rows if row["status"] == "QUEUED"])
        return [build_document(row, None, None, waiting.get(row["submission_sequence"])) for row in rows], count

    async def builds_ahead(self, submission_sequences: list[int]) -> dict[int, int]:
        """For queued builds (by their submission's stream sequence): how many queued builds were
        submitted before each, which the solver takes first. Counted on an index of the queued
        builds alone, so it costs what the queue is long, never what the history is."""
        if not submission_sequences:
            return {}
        rows = await self.pool.fetch(
            """SELECT wanted.sequence, (SELECT count(*) FROM build q
                                        WHERE q.status = 'QUEUED' AND q.submission_sequence < wanted.sequence) AS ahead
               FROM unnest($1::bigint[]) AS wanted(sequence)""",
            submission_sequences,
        )
        return {row["sequence"]: row["ahead"] for row in rows}

    async def build_packages(
        self, build_id: int, search: str | None, exact: bool, build: str | None, page: Page, sort_by: list[str]
    ) -> tuple[list[dict[str, Any]], int]:
        sql = SqlFilter()
        sql.add(f"bp.build_id = {sql.parameter(build_id)}")
        self._package_filters(sql, search, exact, build)
        base = (
            "FROM build_package bp JOIN conda_package_build pb ON pb.id = bp.package_build_id "
            "JOIN conda_package p ON p.id = pb.package_id JOIN conda_channel c ON c.id = p.channel_id"
        )
        return await self._packages(sql, base, page, sort_by or ["channel", "name"], distinct_on=[])

    async def packages(
        self, search: str | None, exact: bool, build: str | None, page: Page, sort_by: list[str], distinct_on: list[str]
    ) -> tuple[list[dict[str, Any]], int]:
        sql = SqlFilter()
        self._package_filters(sql, search, exact, build)
        base = "FROM conda_package p JOIN conda_channel c ON c.id = p.channel_id"
        if build is not None:
            base += " JOIN conda_package_build pb ON pb.package_id = p.id"
        return await self._packages(sql, base, page, sort_by or ["channel", "name", "version"], distinct_on)

    @staticmethod
    def _package_filters(sql: SqlFilter, search: str | None, exact: bool, build: str | None) -> None:
        if search:
            if exact:
                sql.add(f"p.name = {sql.parameter(search)}")
            else:
                sql.add(f"p.name LIKE {sql.parameter('%' + search.replace('%', chr(92) + '%') + '%')}")
        if build:
            sql.add(f"pb.build LIKE {sql.parameter('%' + build.replace('%', chr(92) + '%') + '%')}")

    async def _packages(
        self, sql: SqlFilter, base: str, page: Page, sort_by: list[str], distinct_on: list[str]
    ) -> tuple[list[dict[str, Any]], int]:
        inner_columns = {"channel": "c.name", "name": "p.name", "version": "p.version"}
        outer_columns = {"channel": "channel_name", "name": "name", "version": "version"}
        order = "DESC" if page.descending else "ASC"
        distinct = [key for key in distinct_on if key in inner_columns]
        if distinct:
            # PostgreSQL's DISTINCT ON keeps the first row of each group in this order.
            head = "DISTINCT ON (" + ", ".join(inner_columns[key] for key in distinct) + ") "
            inner_order = " ORDER BY " + ", ".join([*(inner_columns[key] for key in distinct), "p.id"])
        else:
            head, inner_order = "DISTINCT ", ""
        select = (
            f"SELECT {head}p.id, p.name, p.version, p.license, p.summary, c.id AS channel_id, "
            f"c.name AS channel_name {base} WHERE {sql.where()}{inner_order}"
        )
        keys = [*distinct, *(key for key in sort_by if key in outer_columns and key not in distinct)]
        ordering = ", ".join([*(f"{outer_columns[key]} {order}" for key in keys), f"id {order}"])
        count = await self.pool.fetchval(f"SELECT count(*) FROM ({select}) counted", *sql.parameters)
        rows = await self.pool.fetch(
            f"SELECT * FROM ({select}) listed ORDER BY {ordering} LIMIT {page.size} OFFSET {page.offset}",
            *sql.parameters,
        )
        return [
            {
                "id": row["id"],
                "channel": {"id": row["channel_id"], "name": row["channel_name"], "last_update": None},
                "license": row["license"],
                "name": row["name"],
                "version": row["version"],
                "summary": row["summary"],
            }
            for row in rows
        ], count

    async def channels(self, page: Page, indexed_channels: list[str]) -> tuple[list[dict[str, Any]], int]:
        """Channels builds used, plus the configured indexed channels (listed even before any
        build used them; those get ids after the stored ones, in the configured order)."""
        rows = await self.pool.fetch("SELECT id, name, last_update FROM conda_channel ORDER BY id")
        channels = [{"id": row["id"], "name": row["name"], "last_update": row["last_update"]} for row in rows]
        known = {channel["name"] for channel in channels}
        next_id = max((channel["id"] for channel in channels), default=0) + 1
        for url in indexed_channels:
            if url not in known:
                known.add(url)
                channels.append({"id": next_id, "name": url, "last_update": None})
                next_id += 1
        channels.sort(key=lambda channel: (channel["name"], channel["id"]), reverse=page.descending)
        return channels[page.offset : page.offset + page.size], len(channels)

    async def channel_ids(self) -> dict[str, int]:
        return {row["name"]: row["id"] for row in await self.pool.fetch("SELECT id, name FROM conda_channel")}

    # --- artifacts, logs ----------------------------------------------------------------------

    async def artifact(self, build_id: int, kind: str, platform: str | None = None) -> asyncpg.Record | None:
        """The build's artifact of ``kind``: its main one, or the one for ``platform`` (the main one
        when it is for that platform, else a further platform's)."""
        main = await self.pool.fetchrow(
            "SELECT * FROM build_artifact WHERE build_id = $1 AND artifact_type = $2", build_id, kind
        )
        if platform is None or (main is not None and main["platform"] == platform):
            return main
        return await self.pool.fetchrow(
            "SELECT * FROM build_platform_artifact WHERE build_id = $1 AND artifact_type = $2 AND platform = $3",
            build_id,
            kind,
            platform,
        )

    async def artifacts_by_platform(self, build_id: int) -> list[asyncpg.Record]:
        """Every artifact of the build: the main ones, then each further platform's."""
        return await self.pool.fetch(
            """SELECT artifact_type, platform, key, size, content_type, true AS main FROM build_artifact WHERE build_id = $1
               UNION ALL
               SELECT artifact_type, platform, key, size, content_type, false FROM build_platform_artifact WHERE build_id = $1
               ORDER BY main DESC, platform, artifact_type""",
            build_id,
        )

    async def artifact_by_key(self, key: str) -> asyncpg.Record | None:
        found = await self.pool.fetchrow("SELECT * FROM build_artifact WHERE key = $1 LIMIT 1", key)
        if found is None:
            found = await self.pool.fetchrow("SELECT * FROM build_platform_artifact WHERE key = $1 LIMIT 1", key)
        return found

    async def progress_lines(self, build_id: int, after_sequence: int = 0) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM build_progress WHERE build_id = $1 AND sequence > $2 ORDER BY sequence",
            build_id,
            after_sequence,
        )

    async def builds_of_namespace(self, namespace_id: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(f"{BUILD_SELECT} WHERE n.id = $1 AND {LEFT_TO_REMOVE} ORDER BY b.id", namespace_id)

    # --- settings, usage, metrics -------------------------------------------------------------

    async def setting_overrides(self, scopes: list[str]) -> list[dict[str, Any]]:
        return await setting_overrides(self.pool, scopes)

    async def usage(self, principal: Principal) -> dict[str, dict[str, Any]]:
        sql = SqlFilter()
        sql.add("n.deleted_on IS NULL")
        restrict_namespaces(sql, principal, "n.name")
        rows = await self.pool.fetch(
            f"""SELECT n.name,
                   (SELECT count(*) FROM environment e WHERE e.namespace_id = n.id AND e.deleted_on IS NULL) AS envs,
                   (SELECT count(*) FROM build b JOIN environment e ON e.id = b.environment_id
                     WHERE e.namespace_id = n.id) AS builds,
                   (SELECT COALESCE(sum(b.size), 0) FROM build b JOIN environment e ON e.id = b.environment_id
                     WHERE e.namespace_id = n.id AND b.deleted_on IS NULL) AS storage
                FROM namespace n WHERE {sql.where()} ORDER BY n.name""",
            *sql.parameters,
        )
        return {
            row["name"]: {"num_environments": row["envs"], "num_builds": row["builds"], "storage": row["storage"]}
            for row in rows
        }

    async def build_status_counts(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT status, count(*) AS n FROM build GROUP BY status")
        return {row["status"]: row["n"] for row in rows}

    async def dead_letters(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT sequence, subject, error, reason, decided_by, decided_on FROM projection_dead_letter ORDER BY sequence"
        )
        return [dict(row) for row in rows]

    async def environment_count(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM environment WHERE deleted_on IS NULL")
