#!/usr/bin/env bash
# Everything envstore needs on a fresh Linux machine: PostgreSQL's server binaries (Debian),
# and a virtual environment with envstore and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
# OCI tools: skopeo reads docker:// base images (and tests pull as users do); umoci and a static
# busybox are what the image tests unpack and run with.
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
# The web UI: npm fetches conda-store's built UI; the browser tests drive Debian's Chromium.
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The reverse-proxy tests put Debian's nginx in front of a stack.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
bash scripts/fetch-ui.sh
