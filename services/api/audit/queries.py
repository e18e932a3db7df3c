"""Reading the audit trail: filters, in stream order, a page at a time after a cursor."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from envstore.api.visibility import SqlFilter


@dataclass(frozen=True)
class AuditFilters:
    namespace: str | None = None
    environment: str | None = None
    principal: str | None = None
    event_types: tuple[str, ...] = ()
    since: datetime.datetime | None = None  # inclusive, naive UTC
    until: datetime.datetime | None = None  # exclusive, naive UTC


@dataclass(frozen=True)
class AuditPage:
    entries: list[dict[str, Any]]
    count: int  # entries matching the filters, on every page
    last_sequence: int | None


def _where(filters: AuditFilters) -> SqlFilter:
    sql = SqlFilter()
    for column, value in (
        ("namespace", filters.namespace),
        ("environment", filters.environment),
        ("principal", filters.principal),
    ):
        if value is not None:
            sql.add(f"{column} = {sql.parameter(value)}")
    if filters.event_types:
        sql.add(f"event_type = ANY({sql.parameter(list(filters.event_types))}::text[])")
    if filters.since is not None:
        sql.add(f"occurred_at >= {sql.parameter(filters.since)}")
    if filters.until is not None:
        sql.add(f"occurred_at < {sql.parameter(filters.until)}")
    return sql


def entry_document(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["sequence"],
        "type": row["event_type"],
        "occurred_at": row["occurred_at"],
        "principal": row["principal"],
        "namespace": row["namespace"],
        "environment": row["environment"],
        "build_id": row["build_id"],
        "details": json.loads(row["details"]),
    }


async def audit_page(
    pool: asyncpg.Pool, filters: AuditFilters, after: int | None, limit: int, descending: bool
) -> AuditPage:
    """Entries matching ``filters`` in stream order (reversed if ``descending``), strictly after
    the sequence ``after`` in that order."""
    sql = _where(filters)
    count = await pool.fetchval(f"SELECT count(*) FROM audit_event WHERE {sql.where()}", *sql.parameters)
    if after is not None:
        sql.add(f"sequence {'<' if descending else '>'} {sql.parameter(after)}")
    rows = await pool.fetch(
        f"SELECT * FROM audit_event WHERE {sql.where()} ORDER BY sequence {'DESC' if descending else 'ASC'} LIMIT {limit}",
        *sql.parameters,
    )
    return AuditPage([entry_document(row) for row in rows], count, rows[-1]["sequence"] if rows else None)
