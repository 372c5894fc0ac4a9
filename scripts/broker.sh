#!/usr/bin/env bash
# A private mosquitto for the demo (`make run`): 127.0.0.1 only, state under var/mosquitto/, locked down: no
# anonymous clients, the accounts and the ACL that `jingbao broker setup` wrote there, client ids taken from user
# names (docs/security.md).
#   scripts/broker.sh start|stop|reload|status
#   JINGBAO_MQTT_PORT overrides the port (default 1883), JINGBAO_MQTT_DIR the directory (default var/mosquitto,
#   where `jingbao broker setup --config config/demo.yaml` writes: the demo's storage.data_dir is var/)
# Persistence is on, so responders' persistent sessions and queued alerts survive a broker restart.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${JINGBAO_MQTT_PORT:-1883}
DIR=${JINGBAO_MQTT_DIR:-$(pwd)/var/mosquitto}
PIDFILE=$DIR/mosquitto.pid
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

write_conf() {
    if [[ ! -f $DIR/passwd || ! -f $DIR/acl ]]; then
        echo "no broker accounts in $DIR: run \`jingbao broker setup --config config/demo.yaml\` first" >&2
        exit 1
    fi
    cat >"$DIR/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
use_username_as_clientid true
allow_anonymous false
password_file $DIR/passwd
acl_file $DIR/acl
persistence true
persistence_location $DIR/
autosave_interval 60
log_dest file $DIR/mosquitto.log
pid_file $PIDFILE
user $(id -un)
CONF
}

case "${1:-}" in
start)
    write_conf
    if running; then
        # restarted, not reloaded: one left running by an older, open version of this script would keep its
        # listener's settings over a reload (the persisted sessions and queued alerts survive the restart)
        pid=$(cat "$PIDFILE")
        echo "broker already running (pid $pid): restarting it with $DIR/mosquitto.conf"
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    "$MOSQUITTO" -c "$DIR/mosquitto.conf" -d
    for _ in $(seq 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "broker listening on 127.0.0.1:$PORT"; exit 0; fi
        sleep 0.1
    done
    echo "broker did not start; see $DIR/mosquitto.log" >&2
    exit 1
    ;;
reload)
    if running; then write_conf; kill -HUP "$(cat "$PIDFILE")"; echo "broker reloaded"; else echo "broker not running"; exit 3; fi
    ;;
stop)
    if running; then kill "$(cat "$PIDFILE")"; echo "broker stopped"; else echo "broker not running"; fi
    rm -f "$PIDFILE"
    ;;
status)
    if running; then echo "broker running (pid $(cat "$PIDFILE"))"; else echo "broker not running"; exit 3; fi
    ;;
*)
    echo "usage: $0 start|stop|reload|status" >&2
    exit 2
    ;;
esac
