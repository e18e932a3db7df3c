"""The Docker Registry HTTP API v2, pull side (the OCI distribution spec's "pull" and
"content discovery"): thin handlers over the index, the image store and authentication.

    GET       /v2/                                  version check (401 + challenge without a valid token)
    GET       /v2/_catalog?n=&last=                 repositories the caller may read
    GET, HEAD /v2/<name>/manifests/<tag|digest>     Docker-Content-Digest, negotiated media type
    GET, HEAD /v2/<name>/blobs/<digest>             Range requests; a redirect for S3 storage
    GET       /v2/<name>/tags/list?n=&last=         lexical order, Link header for the next page
    GET       /v2/<name>/referrers/<digest>         OCI 1.1 referrers of an image: its SBOM (``?artifactType=``)
    anything else                                   405 UNSUPPORTED (push), 404 for unknown paths
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from envstore.common.events import BlobRef
from envstore.common.oci_media_types import OCI_IMAGE_INDEX, OCI_IMAGE_MANIFEST
from envstore.common.storage import Storage, digest_hex
from envstore.registry.auth import READ, Authenticator
from envstore.registry.catalog import LATEST, BuildImage, Catalog
from envstore.registry.dynamic_images import DynamicImages
from envstore.registry.errors import (
    API_VERSION_HEADERS,
    RegistryError,
    blob_unknown,
    digest_invalid,
    manifest_unknown,
    name_unknown,
    pagination_invalid,
    tag_invalid,
    unsupported,
)
from envstore.registry.image_waits import ImageWaits
from envstore.registry.images import ImageStore, ManifestDocument
from envstore.registry.sbom_referrers import SbomReferrers
from envstore.common.usage import UsageRecorder, Use
from envstore.registry.repository_names import RepositoryName, parse_repository_name

DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
SHA256_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_TAG_LENGTH = 255
BLOB_CONTENT_TYPE = "application/octet-stream"
IMMUTABLE = "max-age=31536000, immutable"


@dataclass(frozen=True)
class Registry:
    """Everything the handlers use, opened and closed by ``app.serve``."""

    storage: Storage
    catalog: Catalog
    images: ImageStore
    authenticator: Authenticator
    waits: ImageWaits
    dynamic: DynamicImages
    referrers: SbomReferrers
    usage: UsageRecorder  # image pulls, published as build.used events in batches


REGISTRY = web.AppKey("registry", Registry)


def _registry(request: web.Request) -> Registry:
    return request.app[REGISTRY]


async def _readable_repository(request: web.Request) -> RepositoryName:
    """The URL's repository, after checking that the caller may read it."""
    registry = _registry(request)
    name = parse_repository_name(request.match_info["name"])
    caller = await registry.authenticator.caller(request)
    registry.authenticator.require(caller, name.arn, READ, name.text)
    request["caller"] = caller
    return name


async def _images(registry: Registry, name: RepositoryName) -> list[BuildImage]:
    repository = await registry.catalog.repository(name.namespace, name.environment)
    if repository is None:
        raise name_unknown(name.text)
    return await registry.catalog.images(repository)


def _checked_digest(digest: str) -> str:
    if not DIGEST.match(digest):
        raise digest_invalid(digest)
    if not SHA256_DIGEST.match(digest):
        raise RegistryError(400, "DIGEST_INVALID", "only sha256 digests are served", {"digest": digest})
    return digest


# --- handlers -----------------------------------------------------------------------------------


async def version_check(request: web.Request) -> web.Response:
    registry = _registry(request)
    registry.authenticator.require_login(await registry.authenticator.caller(request))
    return web.json_response({})


async def catalog(request: web.Request) -> web.Response:
    registry = _registry(request)
    caller = await registry.authenticator.caller(request)
    names = [
        name for name in await registry.catalog.repositories_with_images() if caller.principal.is_allowed(name, READ)
    ]
    page, link = _page(names, request, "/v2/_catalog")
    return web.json_response({"repositories": page}, headers=link)


async def manifest(request: web.Request) -> web.Response:
    registry = _registry(request)
    name = await _readable_repository(request)
    reference = request.match_info["reference"]
    if ":" in reference:
        digest = _checked_digest(reference)
        images = await _images(registry, name)
        document = await registry.images.manifest_by_digest(name.text, images, digest)
        if document is None:
            document = await _referrer_manifest(registry, images, digest)
        if document is None:
            raise manifest_unknown(name.text, reference)
        pulled = next((build for build in images if build.manifest is not None and build.manifest.digest == digest), None)
        if pulled is not None and request.method == "GET":
            registry.usage.record(pulled.build_id, Use.PULL)
    else:
        if len(reference) > MAX_TAG_LENGTH:
            raise tag_invalid(name.text, reference)
        if name.dynamic is not None and reference == LATEST and not await registry.dynamic.exists(name.dynamic):
            # Pulling a new dynamic image submits a build: the API's permissions for a submission.
            registry.authenticator.require(request["caller"], name.arn, "environment:create", name.text)
            if not await registry.catalog.namespace_exists(name.namespace):
                registry.authenticator.require(request["caller"], name.namespace, "namespace::create", name.text)
            await registry.dynamic.ensure_submitted(name.dynamic)
        build = await registry.waits.build_with_image(name, reference)
        document = await registry.images.manifest(build, request.headers.getall("Accept", []), name.text, reference)
        if request.method == "GET":
            registry.usage.record(build.build_id, Use.PULL)
    return _manifest_response(request, document)


def _manifest_response(request: web.Request, document: ManifestDocument) -> web.Response:
    headers = {
        "Docker-Content-Digest": document.digest,
        "ETag": f'"{document.digest}"',
        "Content-Type": document.media_type,
        "Content-Length": str(len(document.data)),
    }
    if request.method == "HEAD":
        return web.Response(headers=headers)
    return web.Response(body=document.data, headers=headers)


async def blob(request: web.Request) -> web.StreamResponse:
    registry = _registry(request)
    name = await _readable_repository(request)
    digest = _checked_digest(request.match_info["digest"])
    images = await _images(registry, name)
    size = await registry.images.blob_size(name.text, images, digest)
    if size is None:
        return await _referrer_blob(request, registry, images, name, digest)
    headers = {
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Content-Type": BLOB_CONTENT_TYPE,
        "Accept-Ranges": "bytes",
        "Cache-Control": IMMUTABLE,
    }
    if request.method == "HEAD":
        return web.Response(headers={**headers, "Content-Length": str(size)})
    path = registry.storage.local_path(digest)
    if path is not None:
        # sendfile(2), with Range and If-Range handled by aiohttp (which sets its own ETag).
        return web.FileResponse(path, headers={k: v for k, v in headers.items() if k != "ETag"})
    url = await registry.storage.download_url(
        f"docker/blobs/{digest_hex(digest)}", BlobRef(digest=digest, size=size), content_type=BLOB_CONTENT_TYPE
    )
    if url is not None:
        raise web.HTTPTemporaryRedirect(url, headers=headers)
    return await _stream_blob(request, registry.storage, digest, size, headers)


async def _referrer_manifest(registry: Registry, images: list[BuildImage], digest: str) -> ManifestDocument | None:
    for referrer in await registry.referrers.of_repository(images):
        if referrer.digest == digest:
            return ManifestDocument(referrer.manifest, OCI_IMAGE_MANIFEST, referrer.digest)
    return None


async def _referrer_blob(
    request: web.Request, registry: Registry, images: list[BuildImage], name: RepositoryName, digest: str
) -> web.Response:
    """A blob of an image's SBOM referrer (the SBOM, the empty configuration), made in memory."""
    for referrer in await registry.referrers.of_repository(images):
        data = referrer.blobs.get(digest)
        if data is not None:
            headers = {"Docker-Content-Digest": digest, "Content-Type": BLOB_CONTENT_TYPE, "Cache-Control": IMMUTABLE}
            if request.method == "HEAD":
                return web.Response(headers={**headers, "Content-Length": str(len(data))})
            return web.Response(body=data, headers=headers)
    raise blob_unknown(name.text, digest)


async def referrers(request: web.Request) -> web.Response:
    """The OCI 1.1 referrers API: an image index of the manifests whose subject is ``digest``
    (an image's SBOM). An unknown subject has none: an empty index, never a 404 (as the
    distribution spec requires)."""
    registry = _registry(request)
    name = await _readable_repository(request)
    digest = _checked_digest(request.match_info["digest"])
    wanted_type = request.query.get("artifactType")
    images = [build for build in await _images(registry, name) if build.manifest is not None and build.manifest.digest == digest]
    descriptors = [
        referrer.descriptor()
        for referrer in await registry.referrers.of_repository(images)
        if wanted_type is None or referrer.descriptor()["artifactType"] == wanted_type
    ]
    headers = {"Content-Type": OCI_IMAGE_INDEX}
    if wanted_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    index = {"schemaVersion": 2, "mediaType": OCI_IMAGE_INDEX, "manifests": descriptors}
    return web.Response(body=json.dumps(index, separators=(",", ":")).encode(), headers=headers)


async def _stream_blob(
    request: web.Request, storage: Storage, digest: str, size: int, headers: dict[str, str]
) -> web.StreamResponse:
    start, end = 0, size
    status = 200
    if "Range" in request.headers:
        byte_range = parse_byte_range(request.headers["Range"], size)
        if byte_range is None:
            raise RegistryError(
                416, "RANGE_INVALID", "requested range not satisfiable", {"size": size}, {"Content-Range": f"bytes */{size}"}
            )
        start, end = byte_range
        status = 206
        headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = end - start
    await response.prepare(request)
    async for chunk in storage.stream_blob(digest, start, end):
        await response.write(chunk)
    await response.write_eof()
    return response


def parse_byte_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range → [start, end) within ``size``; None if not satisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            length = int(last)
            return (max(size - length, 0), size) if length > 0 and size > 0 else None
        start = int(first)
        end = size if last == "" else min(int(last) + 1, size)
    except ValueError:
        return None
    return (start, end) if start < end else None


async def tags(request: web.Request) -> web.Response:
    registry = _registry(request)
    name = await _readable_repository(request)
    repository = await registry.catalog.repository(name.namespace, name.environment)
    if repository is None:
        raise name_unknown(name.text)
    page, link = _page(await registry.catalog.tags(repository), request, f"/v2/{name.text}/tags/list")
    return web.json_response({"name": name.text, "tags": page}, headers=link)


def _page(items: list[str], request: web.Request, path: str) -> tuple[list[str], dict[str, str]]:
    """Lexically ordered items after ``last``, at most ``n``; a Link header when more follow."""
    last = request.query.get("last")
    if last:
        items = [item for item in items if item > last]
    if "n" not in request.query:
        return items, {}
    try:
        size = int(request.query["n"])
    except ValueError:
        raise pagination_invalid("n must be a whole number") from None
    if size < 0:
        raise pagination_invalid("n must not be negative")
    page = items[:size]
    if len(items) > size and page:
        # Names and build keys may hold '&', '?', '=' or '+': quote them in the next page's URL.
        return page, {"Link": f'<{quote(path)}?n={size}&last={quote(page[-1], safe="")}>; rel="next"'}
    return page, {}


async def refuse(request: web.Request) -> web.Response:
    if request.method in ("GET", "HEAD"):
        raise RegistryError(404, "UNSUPPORTED", "no such registry endpoint", {"path": request.path})
    raise unsupported(request.method)


# --- wiring -------------------------------------------------------------------------------------


@web.middleware
async def registry_errors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except RegistryError as error:
        return error.response(with_body=request.method != "HEAD")


async def _api_version_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(API_VERSION_HEADERS)


def add_routes(app: web.Application) -> None:
    app.middlewares.append(registry_errors)
    app.on_response_prepare.append(_api_version_header)
    router = app.router
    router.add_get("/v2/", version_check)
    router.add_get("/v2", version_check)
    router.add_get("/v2/_catalog", catalog)
    router.add_get(r"/v2/{name:.+}/manifests/{reference}", manifest)
    router.add_get(r"/v2/{name:.+}/blobs/{digest}", blob)
    router.add_get(r"/v2/{name:.+}/tags/list", tags)
    router.add_get(r"/v2/{name:.+}/referrers/{digest}", referrers)
    router.add_route("*", "/v2/{rest:.*}", refuse)
