"""conda-store's web UI at ``{prefix}/ui/``: one page for every client route (so deep links such as
``/ui/<namespace>/<environment>`` work; the UI's ``not-found`` route answers 404), the UI's built
files under ``/static/conda-store-ui/``, and ``/`` sending browsers to the UI."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from envstore.api.context import SETTINGS
from envstore.api.routes.paths import Routes
from envstore.api.security_headers import CONTENT_SECURITY_POLICY, external_origins, new_nonce, ui_policy
from envstore.common.public_urls import public_api_url
from envstore.common.settings import EnvstoreSettings
from envstore.api.ui_shell import UI_FILES, missing_ui_files, shell_config, shell_page, ui_directory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserInterface:
    settings: EnvstoreSettings
    prefix: str  # "" or "/conda-store"

    def base_url(self, request: web.Request) -> str:
        return public_api_url(request, self.settings, on_api_listener=True)

    async def page(self, request: web.Request) -> web.Response:
        missing = missing_ui_files(self.settings)
        if missing:
            return web.Response(
                status=503,
                content_type="text/plain",
                text=f"conda-store's UI is not installed: {', '.join(missing)} missing in "
                f"{ui_directory(self.settings)}. Install envstore from a wheel or sdist (both carry the UI), "
                "run scripts/fetch-ui.sh in a source checkout, or point ENVSTORE_UI_DIRECTORY at a folder "
                "holding the built files of @conda-store/conda-store-ui.\n",
            )
        config = shell_config(self.settings, self.base_url(request), self.prefix)
        # The UI sends unknown client routes to ".../not-found"; say so to crawlers and scripts too.
        status = 404 if request.path.rstrip("/").endswith("/not-found") else 200
        nonce = new_nonce()
        return web.Response(
            status=status,
            text=shell_page(config, f"{self.prefix}/static/conda-store-ui", nonce),
            content_type="text/html",
            headers={
                # The page may carry a token (token mode), and its settings change with the deployment.
                "Cache-Control": "no-store",
                CONTENT_SECURITY_POLICY: ui_policy(nonce, external_origins(self.settings)),
            },
        )

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = ui_directory(self.settings) / name
        if name not in UI_FILES or not path.is_file():
            raise web.HTTPNotFound(text=f"no UI file named {name!r}\n")
        # Revalidated every time (cheap 304s), so a new pinned release shows at once.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def to_ui(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{self.prefix}/ui/")


def register(routes: Routes) -> None:
    ui = UserInterface(routes.app[SETTINGS], routes.prefix)
    if missing_ui_files(ui.settings):
        log.warning(
            "conda-store's UI files are not in %s: /ui/ answers 503 (install envstore from a wheel or sdist, "
            "or run scripts/fetch-ui.sh in a checkout)",
            ui_directory(ui.settings),
        )
    router = routes.app.router
    router.add_get(f"{ui.prefix}/ui", ui.to_ui)
    router.add_get(f"{ui.prefix}/ui/{{client_route:.*}}", ui.page)
    router.add_get(f"{ui.prefix}/static/conda-store-ui/{{name}}", ui.static_file)
    router.add_get(f"{ui.prefix}/", ui.to_ui)
    if ui.prefix:
        router.add_get(ui.prefix, ui.to_ui)
        router.add_get("/", ui.to_ui)
