#!/usr/bin/env bash
# A private mosquitto for the demo (`make run`): 127.0.0.1 only, state under var/mosquitto/.
#   scripts/broker.sh start|stop|status      (JINGBAO_MQTT_PORT overrides the port, default 1883)
# Persistence is on, so responders' persistent sessions and queued alerts survive a broker restart.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${JINGBAO_MQTT_PORT:-1883}
DIR=$(pwd)/var/mosquitto
PIDFILE=$DIR/mosquitto.pid
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
start)
    if running; then echo "broker already running (pid $(cat "$PIDFILE"), port $PORT)"; exit 0; fi
    mkdir -p "$DIR"
    cat >"$DIR/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $DIR/
autosave_interval 60
log_dest file $DIR/mosquitto.log
pid_file $PIDFILE
user $(id -un)
CONF
    "$MOSQUITTO" -c "$DIR/mosquitto.conf" -d
    for _ in $(seq 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "broker listening on 127.0.0.1:$PORT"; exit 0; fi
        sleep 0.1
    done
    echo "broker did not start; see $DIR/mosquitto.log" >&2
    exit 1
    ;;
stop)
    if running; then kill "$(cat "$PIDFILE")"; echo "broker stopped"; else echo "broker not running"; fi
    rm -f "$PIDFILE"
    ;;
status)
    if running; then echo "broker running (pid $(cat "$PIDFILE"))"; else echo "broker not running"; exit 3; fi
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
