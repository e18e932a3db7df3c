"""Storage totals and garbage collection:

    GET  /api/v1/storage/       bytes per namespace the caller may read (artifacts, prefixes, builds)
    POST /api/v1/storage/gc/    collect blobs and package-cache entries no live build references
                                ({"dry_run": true} lists them and the bytes that would be freed)
"""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of, principal_of, require
from envstore.api.envelopes import ApiError, ok
from envstore.api.garbage_collection import collect_garbage
from envstore.api.routes.paths import Routes
from envstore.api.routes.specifications import read_json_object
from envstore.api.storage_totals import storage_by_namespace

# Deployment-wide maintenance: what the projection's admin routes need (admins of */*).
ADMIN_PERMISSIONS = ("namespace::delete", "setting::update")


async def storage_totals(request: web.Request) -> web.Response:
    principal = principal_of(request)
    totals = await storage_by_namespace(context_of(request).read_model.pool)
    return ok([entry.document() for entry in totals if principal.is_allowed(entry.namespace, "namespace::read")])


async def garbage_collection(request: web.Request) -> web.Response:
    require(request, "", *ADMIN_PERMISSIONS, message="Unauthorized to collect garbage: it needs the admin role on */*")
    body = await read_json_object(request) if request.can_read_body else {}
    dry_run = body.get("dry_run", False)
    grace = body.get("grace_seconds")
    if not isinstance(dry_run, bool) or (grace is not None and (not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0)):
        raise ApiError(400, 'send {"dry_run": true|false, "grace_seconds": <seconds, optional; default the gc_grace_seconds setting>}')
    context = context_of(request)
    report = await collect_garbage(
        context.read_model.pool,
        context.storage,
        context.settings.package_cache,
        context.settings.gc_grace_seconds if grace is None else float(grace),
        dry_run,
    )
    return ok(report.document())


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/storage/", storage_totals,
               "Storage per namespace the caller may read: artifact bytes, installed prefix bytes, builds, archived builds")
    routes.add("POST", "/api/v1/storage/gc/", garbage_collection,
               "Collect the blobs and package-cache entries no live build references, written or reused before the "
               "grace period (admins); dry_run lists them and their bytes",
               body={"type": "object", "properties": {"dry_run": {"type": "boolean"}, "grace_seconds": {"type": "number"}}},
               responses=(200, 400, 403))
