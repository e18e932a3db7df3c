"""``/lifecycle/{namespace}/{name}/``: envstore's own small page for what conda-store's UI has no
room for — each build of an environment with its archive state, its use (pulls, downloads,
activations, last used) and links to its SBOM, its lock diff against the build before it and its
rehydration status. Read-only (actions are API calls), server-rendered, no script."""

from __future__ import annotations

import datetime
import html

from aiohttp import web

from envstore.api.archives import archive_state
from envstore.api.context import context_of
from envstore.api.read_model import BUILD_SELECT
from envstore.api.routes.environments import readable_environment
from envstore.api.routes.paths import Routes
from envstore.api.security_headers import CONTENT_SECURITY_POLICY, new_nonce
from envstore.api.usage_reads import environment_usage

STYLE = """body{font-family:sans-serif;margin:2rem;color:#222}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ddd;padding:.3rem .8rem;text-align:left}th{background:#f3f3f3}
.current{font-weight:bold}.ARCHIVED,.ARCHIVING{color:#8a6d00}.FAILED{color:#b00020}"""


def _cell(value: object) -> str:
    if isinstance(value, datetime.datetime):
        value = value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


async def lifecycle_page(request: web.Request) -> web.Response:
    environment = await readable_environment(request)
    context = context_of(request)
    prefix = request.path.split("/lifecycle/")[0]
    api = f"{prefix}/api/v1"
    usage = await environment_usage(context.read_model.pool, environment["id"])
    used = {entry["build_id"]: entry for entry in usage["builds"]}
    rows = []
    previous: int | None = None
    for row in await context.read_model.pool.fetch(f"{BUILD_SELECT} WHERE b.environment_id = $1 ORDER BY b.id", environment["id"]):
        build_id = row["id"]
        counts = used.get(build_id, {})
        links = [_link(f"{api}/build/{build_id}/sbom/", "SBOM"), _link(f"{api}/build/{build_id}/rehydration/", "archive state")]
        if previous is not None and row["lock_digest"] is not None:
            links.append(_link(f"{api}/build/{previous}/diff/{build_id}/?format=text", f"diff from {previous}"))
        state = "deleted" if row["deleted_on"] is not None else archive_state(row)
        marker = ' class="current"' if build_id == environment["current_build_id"] else ""
        rows.append(
            f"<tr{marker}>{_cell(build_id)}{_cell(row['status'])}<td class=\"{html.escape(state)}\">{html.escape(state)}</td>"
            f"{_cell(row['scheduled_on'])}{_cell(row['package_count'])}{_cell(counts.get('pulls', 0))}"
            f"{_cell(counts.get('downloads', 0))}{_cell(counts.get('activations', 0))}{_cell(counts.get('last_used_at'))}"
            f"<td>{' · '.join(links)}</td></tr>"
        )
        if row["lock_digest"] is not None:
            previous = build_id
    name = f"{environment['namespace']['name']}/{environment['name']}"
    nonce = new_nonce()
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}: lifecycle</title>
<style nonce="{nonce}">{STYLE}</style></head><body>
<h1>{html.escape(name)}</h1>
<p>Used: {usage['pulls']} image pulls, {usage['downloads']} downloads, {usage['activations']} activations;
last used {html.escape(usage['last_used_at'].strftime('%Y-%m-%d %H:%M:%S UTC') if usage['last_used_at'] else 'never')}. The current build is in bold.</p>
<table><thead><tr><th>build</th><th>status</th><th>storage</th><th>scheduled</th><th>packages</th><th>pulls</th>
<th>downloads</th><th>activations</th><th>last used</th><th></th></tr></thead><tbody>
{''.join(rows)}
</tbody></table></body></html>"""
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            CONTENT_SECURITY_POLICY: f"default-src 'none'; style-src 'nonce-{nonce}'; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'none'",
        },
    )


def register(routes: Routes) -> None:
    routes.add(
        "GET", "/lifecycle/{namespace}/{name}/", lifecycle_page,
        "An environment's builds as a page: archive state, use, and links to each build's SBOM and lock diff",
        responses=(200, 403, 404),
    )
