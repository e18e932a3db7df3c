"""The retention policy: which completed builds the settings let go (keep the last N of each
environment, or those used in the last D days; the current build is always kept)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from envstore.api.context import ApiContext


@dataclass(frozen=True)
class RetentionCandidate:
    build_id: int
    namespace: str
    environment: str
    reason: str


async def retention_candidates(
    context: ApiContext, namespace: str | None, now: datetime.datetime
) -> list[RetentionCandidate]:
    rows = await context.read_model.pool.fetch(
        """SELECT b.id, b.ended_on, e.current_build_id, e.name AS environment, n.name AS namespace,
                  u.last_used_at
           FROM build b JOIN environment e ON e.id = b.environment_id JOIN namespace n ON n.id = e.namespace_id
           LEFT JOIN build_usage u ON u.build_id = b.id
           WHERE b.status = 'COMPLETED' AND b.deleted_on IS NULL AND b.archived_on IS NULL
             AND e.deleted_on IS NULL AND n.deleted_on IS NULL AND ($1::text IS NULL OR n.name = $1)
           ORDER BY n.name, e.name, b.id DESC""",
        namespace,
    )
    found = []
    rank: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["namespace"], row["environment"])
        rank[key] = rank.get(key, 0) + 1
        if row["id"] == row["current_build_id"]:
            continue
        settings = await context.effective_settings(*key)
        keep_builds, unused_days = settings.retention_keep_builds, settings.retention_unused_days
        if keep_builds is None and unused_days is None:
            continue
        last_used = row["last_used_at"] or row["ended_on"]
        recently_used = unused_days is not None and last_used is not None and now - last_used < datetime.timedelta(days=unused_days)
        among_last = keep_builds is not None and rank[key] <= keep_builds
        if recently_used or among_last:
            continue
        reasons = []
        if keep_builds is not None:
            reasons.append(f"not among the last {keep_builds} builds")
        if unused_days is not None:
            reasons.append(f"unused for {unused_days:g} days")
        found.append(RetentionCandidate(row["id"], row["namespace"], row["environment"], " and ".join(reasons)))
    return found
