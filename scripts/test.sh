#!/usr/bin/env bash
# Run the test suite: lint, then pytest on the real model, broker, database and browser.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/ruff" check .
# Two workers (pytest-xdist): most tests wait on real time (audio replayed at its pace, patrol rounds, deadlines),
# so two nearly halve the wall time even on two cores. A file's tests stay on one worker (--dist loadfile), with its
# module fixtures; each worker has its own PostgreSQL cluster, brokers and ports. TEST_WORKERS=0: all in this process.
exec "$VENV/bin/pytest" -q --durations=15 -n "${TEST_WORKERS:-2}" --dist loadfile "$@"  # the slowest tests named: the suite must stay under 15 minutes
