#!/usr/bin/env bash
# conda-store's web UI, pinned and checked (scripts/fetch_ui.py, the same fetch as every sdist and
# wheel build): into services/api/static/conda-store-ui, or the directory given. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/fetch_ui.py "$@"
