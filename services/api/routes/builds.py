"""Builds: list, read, rebuild, cancel, delete, installed packages, and the artifact routes, which
answer with a 307 redirect to the artifact in storage (as conda-store does)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import asyncpg
from aiohttp import web

from envstore.api.context import actor_of, context_of, principal_of, require
from envstore.api.answer_cache import CachedAnswer
from envstore.api.cached_reads import answer_of, cached_listing
from envstore.api.envelopes import ApiError, ack, error_response, json_bytes, ok
from envstore.api.pagination import is_whole_number, page_document, page_of, page_response, whole_number
from envstore.api.read_model import BuildFilters
from envstore.api.archives import is_archived
from envstore.api.routes.paths import Routes
from envstore.api.routes.rehydration_answers import rehydrated_row
from envstore.api.routes.storage import signed_storage_url
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.build_policy import publish_canceled
from envstore.common.usage import Use
from envstore.common.submission import build_settings_of
from envstore.common.events import BlobRef, BuildDeleteRequested, BuildSubmitted, environment_tree

BUILD_MISSING = "build id does not exist"
PLATFORM_NAME = re.compile(r"[a-z0-9]+-[a-z0-9_]+")
TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELED")
LIVE_LOG_WAKE_SECONDS = 15.0
BUILD_STATES = ("QUEUED", "BUILDING", "COMPLETED", "FAILED", "CANCELED")
DOCKER_DEPRECATION = {"Deprecation": "True", "Sunset": "Mon, 17 Mar 2025 00:00:00 UTC"}


async def redirect_to_artifact(
    request: web.Request, build_id: int, kind: ArtifactKind, use: Use = Use.DOWNLOAD, platform: str | None = None
) -> web.StreamResponse:
    """To the build's artifact of ``kind``: its main one, or the one for ``platform``."""
    context = context_of(request)
    row = await context.read_model.build_row(build_id)
    if row is not None and is_archived(row, kind):
        answer = await rehydrated_row(request, row, kind)
        if isinstance(answer, web.Response):
            return answer
    artifact = await context.read_model.artifact(build_id, kind, platform)
    if artifact is None:
        if platform is not None:
            offered = sorted(
                row["platform"] for row in await context.read_model.artifacts_by_platform(build_id) if row["artifact_type"] == kind
            )
            raise ApiError(404, f"build {build_id} has no {kind} artifact for {platform}; it has one for {offered}")
        raise ApiError(404, f"build {build_id} has no {kind} artifact")
    context.usage.record(build_id, use)
    # S3 gives a presigned URL to the blob; local storage is streamed by /storage/, through a
    # signed link that expires (the caller's permission was checked here).
    direct_url = await context.storage.download_url(
        artifact["key"],
        BlobRef(digest=artifact["digest"], size=artifact["size"]),
        filename=artifact["key"].rsplit("/", 1)[-1],
        content_type=artifact["content_type"],
    )
    raise web.HTTPTemporaryRedirect(direct_url or signed_storage_url(request, artifact["key"]))


def build_id_from(request: web.Request) -> int:
    text = request.match_info["build_id"]
    if not is_whole_number(text, most_digits=18):
        raise ApiError(404, BUILD_MISSING)
    return int(text)


async def build_row_for(request: web.Request, *permissions: str, message: str = "Unauthorized to access environment"):  # type: ignore[no-untyped-def]
    """The build row, in conda-store's order for build routes: 404 first, then permission."""
    row = await context_of(request).read_model.build_row(build_id_from(request))
    if row is None:
        raise ApiError(404, BUILD_MISSING)
    require(request, f"{row['namespace_name']}/{row['environment_name']}", *permissions, message=message)
    return row


async def list_builds(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in BUILD_STATES:
        raise ApiError(400, f"status must be one of {list(BUILD_STATES)}")
    artifact = request.query.get("artifact")
    if artifact is not None and artifact not in ArtifactKind.__members__:
        raise ApiError(400, f"artifact must be one of {[kind.value for kind in ArtifactKind]}")
    filters = BuildFilters(
        status=status,
        artifact=artifact,
        environment_id=whole_number(request, "environment_id", None, minimum=0),
        name=request.query.get("name"),
        namespace=request.query.get("namespace"),
        packages=tuple(request.query.getall("packages", [])),
    )
    page = page_of(request)

    async def listing() -> dict:
        rows, count = await context_of(request).read_model.builds_page(
            principal_of(request), filters, page, request.query.getall("sort_by", [])
        )
        return page_document(rows, page, count)

    return await cached_listing(request, listing)


async def get_build(request: web.Request) -> web.Response:
    """A finished build never changes until an event names it again (a deletion): its answer is
    kept until then. conda-store's order: 404 first, then permission."""
    build_id = build_id_from(request)
    answers = context_of(request).answers
    cached = answers.build(build_id) or answers.answer(("build", build_id))
    if cached is None:
        generation = answers.generation
        build = await context_of(request).read_model.build(build_id)
        if build is None:
            raise ApiError(404, BUILD_MISSING)
        cached = CachedAnswer(
            json_bytes({"status": "ok", "data": build.document, "message": None}),
            arn=f"{build.namespace}/{build.environment}",
        )
        if build.status in TERMINAL_STATES:
            answers.keep_build(build_id, cached, generation)
        else:
            answers.keep(("build", build_id), cached, generation)
    require(request, cached.arn, "environment::read", message="Unauthorized to access environment")
    return answer_of(cached.body)


async def rebuild(request: web.Request) -> web.Response:
    row = await build_row_for(request, "environment::update", message="Unauthorized to update environment")
    context = context_of(request)
    original = await context.bus.event_at(row["submission_sequence"])
    if not isinstance(original, BuildSubmitted):
        raise ApiError(404, BUILD_MISSING)
    settings = await context.effective_settings(original.namespace, original.environment)
    event = BuildSubmitted(
        namespace=original.namespace,
        environment=original.environment,
        build_id=await context.build_ids.next(),
        specification=original.specification,
        specification_blob=original.specification_blob,
        spec_sha256=original.spec_sha256,
        is_lockfile=original.is_lockfile,
        platforms=list(settings.conda_solve_platforms) if not original.is_lockfile else original.platforms,
        artifacts=list(settings.build_artifacts),
        scheduled_on=time.time(),
        build_key_version=settings.build_key_version,
        rebuild_of=row["id"],
        settings=build_settings_of(settings),
    )
    await context.publish_and_wait(event, f"rebuild:{uuid.uuid4()}", actor_of(request))
    return ok({"build_id": event.build_id}, message="rebuild triggered")


async def cancel(request: web.Request) -> web.Response:
    row = await build_row_for(request, "build::cancel", message="Unauthorized to cancel build")
    if row["status"] in ("QUEUED", "BUILDING"):
        # The outcome at once (once-only: a build that ended meanwhile keeps its own); workers
        # interrupt its running phase and start no other.
        context = context_of(request)
        await publish_canceled(context.bus, row["id"], actor_of(request))
        await context.projector.wait_for(await context.bus.last_sequence(), context.settings.projection_wait_seconds)
    return ack(f"build {row['id']} canceled")


async def delete_build(request: web.Request) -> web.Response:
    build_id = build_id_from(request)
    context = context_of(request)
    first = await build_row_for(request, "build::delete", message="Unauthorized to delete build")

    # A global-only key: the deployment's value, or the one stored globally through the settings API.
    kept = (await context.effective_settings()).build_artifacts_kept_on_deletion

    async def decide() -> BuildDeleteRequested:
        row = await context.read_model.build_row(build_id)
        if row is None:
            raise ApiError(404, BUILD_MISSING)
        if row["status"] not in ("FAILED", "COMPLETED", "CANCELED"):
            raise ApiError(400, "cannot delete build since not finished building")
        return BuildDeleteRequested(
            build_id=row["id"],
            namespace=row["namespace_name"],
            environment=row["environment_name"],
            build_key=row["build_key"],
            keep=list(kept),
        )

    await context.command(
        environment_tree(first["namespace_name"], first["environment_name"]),
        decide,
        f"delete:{build_id}:{uuid.uuid4()}",
        actor_of(request),
    )
    return ack()


async def build_packages(request: web.Request) -> web.Response:
    row = await build_row_for(request, "environment::read")
    page = page_of(request)
    rows, count = await context_of(request).read_model.build_packages(
        row["id"],
        request.query.get("search"),
        bool(request.query.get("exact")),
        request.query.get("build"),
        page,
        request.query.getall("sort_by", []),
    )
    return page_response(rows, page, count)


async def build_lockfile(request: web.Request) -> web.StreamResponse:
    row = await build_row_for(request, "environment::read")
    return await redirect_to_artifact(request, row["id"], ArtifactKind.LOCKFILE)


async def build_yaml(request: web.Request) -> web.StreamResponse:
    row = await build_row_for(request, "environment::read")
    return await redirect_to_artifact(request, row["id"], ArtifactKind.YAML)


def platform_from(request: web.Request) -> str | None:
    """``?platform=linux-aarch64``: one platform's artifact of a multi-platform build."""
    platform = request.query.get("platform")
    if platform is not None and not PLATFORM_NAME.fullmatch(platform):
        raise ApiError(400, f"platform must be a conda platform like linux-64 or osx-arm64, not {platform!r}")
    return platform


async def build_archive(request: web.Request) -> web.StreamResponse:
    row = await build_row_for(request, "environment::read")
    platform = platform_from(request)
    if is_archived(row, ArtifactKind.CONDA_PACK):
        return await redirect_to_artifact(request, row["id"], ArtifactKind.CONDA_PACK, platform=platform)
    if await context_of(request).read_model.artifact(row["id"], ArtifactKind.CONDA_PACK) is None:
        raise ApiError(404, f"Build {row['id']} doesn't have an archive")
    return await redirect_to_artifact(request, row["id"], ArtifactKind.CONDA_PACK, platform=platform)


async def build_installer(request: web.Request) -> web.StreamResponse:
    row = await build_row_for(request, "environment::read")
    platform = platform_from(request)
    if is_archived(row, ArtifactKind.CONSTRUCTOR_INSTALLER):
        return await redirect_to_artifact(request, row["id"], ArtifactKind.CONSTRUCTOR_INSTALLER, platform=platform)
    if await context_of(request).read_model.artifact(row["id"], ArtifactKind.CONSTRUCTOR_INSTALLER) is None:
        raise ApiError(400, f"Build {row['id']} doesn't have an installer")
    return await redirect_to_artifact(request, row["id"], ArtifactKind.CONSTRUCTOR_INSTALLER, platform=platform)


ARTIFACT_ROUTES = {
    ArtifactKind.CONDA_PACK: "archive/",
    ArtifactKind.CONSTRUCTOR_INSTALLER: "installer/",
    ArtifactKind.LOCKFILE: "lockfile/",
    ArtifactKind.YAML: "yaml/",
    ArtifactKind.LOGS: "logs/",
    ArtifactKind.DOCKER_MANIFEST: "docker/",
}


async def build_artifacts_by_platform(request: web.Request) -> web.Response:
    """Every artifact of the build with the platform it is for, and the route that serves it."""
    row = await build_row_for(request, "environment::read")
    documents = []
    for artifact in await context_of(request).read_model.artifacts_by_platform(row["id"]):
        route = ARTIFACT_ROUTES.get(ArtifactKind(artifact["artifact_type"]))
        url = None
        if route is not None:
            prefix = context_of(request).settings.url_prefix.rstrip("/")
            url = f"{prefix}/api/v1/build/{row['id']}/{route}"
            if not artifact["main"]:
                url += f"?platform={artifact['platform']}"
        documents.append(
            {
                "artifact_type": artifact["artifact_type"],
                "platform": artifact["platform"] or None,
                "main": artifact["main"],
                "key": artifact["key"],
                "size": artifact["size"],
                "content_type": artifact["content_type"],
                "url": url,
            }
        )
    return ok(documents)


async def build_docker(request: web.Request) -> web.Response:
    row = await build_row_for(request, "environment::read")
    context = context_of(request)
    if await context.read_model.artifact(row["id"], ArtifactKind.DOCKER_MANIFEST) is None:
        # Returned, not raised: conda-store's deprecation headers come with this answer too.
        response = error_response(400, f"Build {row['id']} doesn't have a docker manifest")
        response.headers.update(DOCKER_DEPRECATION)
        return response
    registry = context.settings.registry_external_url or f"{context.settings.registry_host}:{context.settings.registry_port}"
    reference = f"{registry}/{row['namespace_name']}/{row['environment_name']}:{row['build_key']}"
    return web.Response(text=reference, content_type="text/plain", headers=DOCKER_DEPRECATION)


async def build_logs(request: web.Request) -> web.StreamResponse:
    row = await build_row_for(request, "environment::read")
    context = context_of(request)
    if await context.read_model.artifact(row["id"], ArtifactKind.LOGS) is not None:
        return await redirect_to_artifact(request, row["id"], ArtifactKind.LOGS)
    if row["status"] in TERMINAL_STATES:
        # Ended without a LOGS artifact (canceled): the log is what the workers reported.
        lines = await context.read_model.progress_lines(row["id"])
        return web.Response(text="".join(map(progress_line, lines)), content_type="text/plain")
    return await stream_live_log(request, row["id"])


def progress_line(line: asyncpg.Record) -> str:
    text = (
        f"{line['occurred_on'].isoformat(sep=' ', timespec='milliseconds')} [{line['service']}] "
        f"{line['phase']}: {line['state']} {line['message']}"
    )
    return text.rstrip() + "\n"


async def stream_live_log(request: web.Request, build_id: int) -> web.StreamResponse:
    """The log of a running build, written as the workers report, until the build ends. Woken by
    the projector applying events, not by polling on a timer."""
    context = context_of(request)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + context.settings.worker_phase_timeout_seconds * 3
    seen = 0
    while True:
        lines = await context.read_model.progress_lines(build_id, after_sequence=seen)
        if lines:
            seen = lines[-1]["sequence"]
            await response.write("".join(map(progress_line, lines)).encode())
        row = await context.read_model.build_row(build_id)
        if row is not None and row["status"] in TERMINAL_STATES:
            ending = f"build {build_id} ended: {row['status']} {row['status_info'] or ''}".rstrip()
            await response.write(ending.encode() + b"\n")
            break
        transport = request.transport
        if transport is None or transport.is_closing() or loop.time() > deadline:
            break
        # Wake when the read model moves (bounded, so a gone client is noticed).
        await context.projector.wait_for(context.projector.applied_sequence + 1, LIVE_LOG_WAKE_SECONDS)
    await response.write_eof()
    return response


def register(routes: Routes) -> None:
    list_query = ("page", "size", "order", "sort_by", "status", "artifact", "environment_id", "name", "namespace", "packages")
    routes.add("GET", "/api/v1/build/", list_builds, "Builds the caller may see", query=list_query, responses=(200, 400))
    routes.add("GET", "/api/v1/build/{build_id}/", get_build, "One build", responses=(200, 403, 404))
    routes.add("PUT", "/api/v1/build/{build_id}/", rebuild, "Rebuild: a new build of the same specification, solved afresh", responses=(200, 400, 403, 404))
    routes.add("DELETE", "/api/v1/build/{build_id}/", delete_build, "Delete a finished build's artifacts (logs, lockfile, YAML kept)", responses=(200, 400, 403, 404))
    routes.add("PUT", "/api/v1/build/{build_id}/cancel/", cancel, "Cancel a queued or running build", responses=(200, 403, 404))
    routes.add("GET", "/api/v1/build/{build_id}/packages/", build_packages, "Packages installed in a build", query=("page", "size", "order", "sort_by", "search", "exact", "build"), responses=(200, 403, 404))
    for suffix in ("lockfile/", "conda-lock.yml", "conda-lock.yaml"):
        routes.add("GET", f"/api/v1/build/{{build_id}}/{suffix}", build_lockfile, "The build's conda-lock lockfile", responses=(307, 403, 404))
    routes.add("GET", "/api/v1/build/{build_id}/yaml/", build_yaml, "The build's pinned environment.yaml", responses=(307, 403, 404))
    routes.add("GET", "/api/v1/build/{build_id}/logs/", build_logs, "The build's log (live while it runs)", responses=(200, 307, 403, 404))
    routes.add("GET", "/api/v1/build/{build_id}/archive/", build_archive, "The build's conda-pack archive: for the build's main platform (the server's, when locked), or for ?platform= (each platform of a multi-platform lock has its own)", query=("platform",), responses=(307, 400, 403, 404))
    routes.add("GET", "/api/v1/build/{build_id}/installer/", build_installer, "The build's installer: envstore's own self-extracting shell script (artifact type CONSTRUCTOR_INSTALLER, kept for conda-store clients; not made by conda constructor), for the build's main platform or for ?platform=", query=("platform",), responses=(307, 400, 403, 404))
    routes.add("GET", "/api/v1/build/{build_id}/artifacts/", build_artifacts_by_platform, "Every artifact of the build with the conda platform it is for (main: at conda-store's route; others: the route with ?platform=)", responses=(200, 403, 404))
    routes.add("GET", "/api/v1/build/{build_id}/docker/", build_docker, "The build's image reference (deprecated)", responses=(200, 400, 403, 404))
