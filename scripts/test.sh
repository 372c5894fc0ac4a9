#!/usr/bin/env bash
# Run the test suite: lint, then pytest on the real model, broker, database and browser.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/ruff" check .
exec "$VENV/bin/pytest" -q --durations=15 "$@"  # the slowest tests named: the suite must stay under 15 minutes
