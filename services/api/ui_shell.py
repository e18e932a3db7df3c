"""conda-store's web UI: where its built files are, how it authenticates, and the HTML page that
loads it. The UI reads its settings only from ``window.condaStoreConfig`` in that page (the
``REACT_APP_*`` environment variables were baked in when it was built), so the page is made here."""

from __future__ import annotations

import html
import json
from pathlib import Path

from envstore.common.settings import EnvstoreSettings

# Every wheel and sdist carries the pinned release here (setup.py); in a checkout, scripts/fetch-ui.sh
# puts it here. It is not part of the repository.
DEFAULT_UI_DIRECTORY = Path(__file__).resolve().parent / "static" / "conda-store-ui"
UI_FILES = ("main.js", "main.css", "LICENSE", "main.js.LICENSE.txt", "VERSION")


def ui_directory(settings: EnvstoreSettings) -> Path:
    return settings.ui_directory or DEFAULT_UI_DIRECTORY


def missing_ui_files(settings: EnvstoreSettings) -> list[str]:
    return [name for name in ("main.js", "main.css") if not (ui_directory(settings) / name).is_file()]


def shell_config(ui: EnvstoreSettings, base_url: str, url_prefix: str) -> dict[str, str]:
    """``window.condaStoreConfig``: ``base_url`` is the absolute URL of the API root (the UI
    joins its API paths onto it; login/logout must be absolute or the UI prefixes them again)."""
    token = ui.ui_auth_token.get_secret_value() if ui.ui_auth_token else ""
    return {
        "REACT_APP_API_URL": f"{base_url}/",
        "REACT_APP_AUTH_METHOD": ui.ui_auth_method,
        "REACT_APP_AUTH_TOKEN": token if ui.ui_auth_method == "token" else "",
        "REACT_APP_LOGIN_PAGE_URL": f"{base_url}/login/?next=",
        "REACT_APP_LOGOUT_PAGE_URL": f"{base_url}/logout/?next={url_prefix}/ui/",
        "REACT_APP_URL_BASENAME": f"{url_prefix}/ui",
        "REACT_APP_ROUTER_TYPE": "browser",
        "REACT_APP_STYLE_TYPE": ui.ui_style,
        # The login button is pointless with a token, and the UI hides it then anyway.
        "REACT_APP_SHOW_AUTH_BUTTON": "true" if ui.ui_auth_method == "cookie" else "false",
    }


def shell_page(config: dict[str, str], static_url: str, nonce: str) -> str:
    # "<" escaped so no value can close the script element.
    config_json = json.dumps(config, indent=1).replace("<", "\\u003c")
    static = html.escape(static_url, quote=True)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>envstore</title>
<link rel="icon" href="data:,">
<script nonce="{nonce}">window.condaStoreConfig = {config_json};</script>
<script defer src="{static}/main.js"></script>
<link href="{static}/main.css" rel="stylesheet">
</head>
<body></body>
</html>
"""
