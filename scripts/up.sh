#!/usr/bin/env bash
# Set up (if needed) and run envstore: NATS, PostgreSQL, local storage and every service on
# loopback. Arguments go to `envstore up` (e.g. --data-dir DIR --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/envstore up "$@"
