#!/usr/bin/env bash
# Start the demo service (set-up has already run).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/jingbao run --config config/demo.yaml
