#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite against real NATS, PostgreSQL and workers.
# Arguments go to pytest (e.g. tests/integration -k pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
