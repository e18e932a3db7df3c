"""Archive and rehydration routes, and the retention policy:

    POST /api/v1/build/{id}/archive/       archive a completed, non-current build (build::delete)
    POST /api/v1/build/{id}/rehydrate/     make its artifacts again from the lock (202 + Retry-After)
    GET  /api/v1/build/{id}/rehydration/   where that stands: AVAILABLE, ARCHIVING, ARCHIVED, REHYDRATING, FAILED
    POST /api/v1/retention/                apply the retention settings (``dry_run`` lists what would go)

Asking for an archived artifact (its download route, an image pull) asks for the rehydration too.
"""

from __future__ import annotations

import datetime

from aiohttp import web

from envstore.api.archives import archive_build, archive_document, is_archived
from envstore.api.context import actor_of, context_of, principal_of
from envstore.api.envelopes import ApiError, ok
from envstore.api.retention import retention_candidates
from envstore.api.routes.builds import build_row_for
from envstore.api.routes.paths import Routes
from envstore.api.routes.rehydration_answers import rehydrated_row
from envstore.api.routes.specifications import read_json_object

async def archive(request: web.Request) -> web.Response:
    row = await build_row_for(request, "build::delete", message="Unauthorized to archive build")
    freed = await archive_build(context_of(request), row["id"], actor_of(request), "requested")
    return ok({"build_id": row["id"], "archived_artifacts": freed}, message=f"build {row['id']} archived")


async def rehydrate(request: web.Request) -> web.Response:
    row = await build_row_for(request, "environment::read")
    if not is_archived(row):
        return ok(archive_document(row))
    answer = await rehydrated_row(request, row, retry_failed=True)
    return answer if isinstance(answer, web.Response) else ok(archive_document(answer))


async def rehydration_status(request: web.Request) -> web.Response:
    row = await build_row_for(request, "environment::read")
    return ok(archive_document(row))


async def apply_retention(request: web.Request) -> web.Response:
    """Archive what the retention settings let go, in the environments the caller may archive in."""
    body = await read_json_object(request) if request.can_read_body else {}
    namespace = body.get("namespace")
    dry_run = body.get("dry_run", False)
    if namespace is not None and not isinstance(namespace, str) or not isinstance(dry_run, bool):
        raise ApiError(400, 'send {"namespace": "<name>" (optional), "dry_run": true|false}')
    context = context_of(request)
    principal = principal_of(request)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    candidates = [
        candidate
        for candidate in await retention_candidates(context, namespace, now)
        if principal.is_allowed(f"{candidate.namespace}/{candidate.environment}", "build::delete")
    ]
    archived = []
    for candidate in candidates:
        entry = {"build_id": candidate.build_id, "namespace": candidate.namespace, "environment": candidate.environment, "reason": candidate.reason}
        if not dry_run:
            try:
                entry["archived_artifacts"] = await archive_build(context, candidate.build_id, actor_of(request), f"retention: {candidate.reason}")
            except ApiError as error:
                entry["skipped"] = error.message  # changed meanwhile (made current, deleted …)
        archived.append(entry)
    return ok({"dry_run": dry_run, "builds": archived})


def register(routes: Routes) -> None:
    routes.add("POST", "/api/v1/build/{build_id}/archive/", archive,
               "Archive a completed build that is not current: its prefix, tarball, installer and image are freed "
               "(spec, lock, YAML, logs kept) and made again from the lock when asked for",
               responses=(200, 403, 404, 409))
    routes.add("POST", "/api/v1/build/{build_id}/rehydrate/", rehydrate,
               "Make an archived build's artifacts again from its lock: 202 with Retry-After and the status to "
               "follow, or wait for it (?wait=seconds)", query=("wait",), responses=(200, 202, 403, 404, 409))
    routes.add("GET", "/api/v1/build/{build_id}/rehydration/", rehydration_status,
               "Whether a build is AVAILABLE, ARCHIVING, ARCHIVED, REHYDRATING or FAILED to rehydrate",
               responses=(200, 403, 404))
    routes.add("POST", "/api/v1/retention/", apply_retention,
               "Apply the retention settings (retention_keep_builds, retention_unused_days) in the environments "
               "the caller may archive in; dry_run lists what would be archived",
               body={"type": "object", "properties": {"namespace": {"type": "string"}, "dry_run": {"type": "boolean"}}},
               responses=(200, 400))
