#!/usr/bin/env bash
# Start the demo (set-up has already run): demo channel audio, the private MQTT broker, then the service.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
"$PY" -m bridge.demo --out var/demo-audio
# the broker's accounts (the service's, the console's) and its ACL from the registry: made on the first run, kept after
.venv/bin/jingbao broker setup --config config/demo.yaml
bash scripts/broker.sh start
bash scripts/model-offer.sh config/demo.yaml   # no speech model at all: says so and offers `jingbao model fetch`
.venv/bin/jingbao user demo --config config/demo.yaml   # creates the demo logins once, prints them every time
"$PY" -m dispatch.demo_history --config config/demo.yaml   # a few days of made-up incidents for the statistics page (demo only)
"$PY" -m dispatch.demo_tasks --config config/demo.yaml   # a task and a dispute for the 任务 panel and the phone page (demo only)
"$PY" -m dispatch.demo_tracks --config config/demo.yaml   # the demo guard's patrol walks of the last hours: tracks to replay (demo only)
# The service in the background so this script can stop the broker after it, however it ends (Ctrl-C, a kill of
# this script, the service exiting): the broker is the demo's, and its sessions and queued alerts are on disk.
# A background job of a script ignores Ctrl-C (SIGINT), so the trap hands it on as SIGTERM.
.venv/bin/jingbao run --config config/demo.yaml &
service=$!
stop() {
    trap - INT TERM
    kill -TERM "$service" 2>/dev/null || true
}
trap stop INT TERM
trap 'bash scripts/broker.sh stop >/dev/null || true' EXIT
status=0
wait "$service" || status=$?
if kill -0 "$service" 2>/dev/null; then wait "$service" || status=$?; fi   # a trapped signal ends the first wait early
exit "$status"
