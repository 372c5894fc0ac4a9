"""`jingbao extract`, `incidents`, `broker` and `announce`: the dispatcher's subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.commands.service import DEFAULT_CONFIG  # the service's default config: every subcommand reads the same one
from dispatch.incidents import Incident, IncidentStore, iso

if TYPE_CHECKING:
    from asr.config import AsrConfig
    from bridge.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (each sets `func`)."""
    _register_extract(sub)
    _register_incidents(sub)
    _register_broker(sub)
    _register_announce(sub)


# --- jingbao extract ---------------------------------------------------------------------------------------

DEFAULT_JURISDICTION = Path(__file__).resolve().parents[2] / "config" / "jurisdiction.yaml"  # the repository's


def _register_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="place, incident type and responders from a call's text or pinyin")
    p.add_argument("text", nargs="?", help="the call as Chinese text or pinyin (tone-numbered or plain); '-' reads one per "
                   "line from stdin")
    p.add_argument("--audio", nargs="+", type=Path, metavar="FILE", help="audio files instead of text: each is segmented and "
                   "transcribed (sherpa-onnx model from the usual places), one result per utterance with file, start, end "
                   "and the transcript")
    p.add_argument("--config", type=Path, help="service config whose jurisdiction, dispatch rules (lexicon additions, who "
                   f"is sent) and speech models are used, as `jingbao run` uses them (default: the service's, {DEFAULT_CONFIG}, "
                   "when there is one)")
    p.add_argument("--jurisdiction", type=Path, help="jurisdiction file (places, responders); default: the config's, else "
                   "the demo jurisdiction")
    p.add_argument("--json", action="store_true", help="one JSON object per line (default: a readable summary)")
    p.set_defaults(func=_extract_command)


def _extract_command(args: argparse.Namespace) -> int:
    from asr.config import AsrConfig
    from bridge.config import ConfigError, load_config
    from dispatch.config import DispatchConfig
    from dispatch.extract import Extractor
    from dispatch.gazetteer import GazetteerError, load_jurisdiction

    if (args.text is None) == (args.audio is None):
        print("jingbao extract: give either TEXT (or -) or --audio FILE...", file=sys.stderr)
        return 2
    rules, asr, jurisdiction_file = DispatchConfig(), AsrConfig(), args.jurisdiction or DEFAULT_JURISDICTION
    try:
        # The service's own config by default, so that a call extracted here is decided as the running service decides it.
        if args.config is not None or DEFAULT_CONFIG.is_file():
            config = load_config(args.config or DEFAULT_CONFIG)
            rules, asr = config.dispatch, config.asr
            jurisdiction_file = args.jurisdiction or config.jurisdiction
        extractor = Extractor(load_jurisdiction(jurisdiction_file), config=rules)
    except (ConfigError, GazetteerError) as e:
        print(e, file=sys.stderr)
        return 2
    if args.audio:
        return _extract_audio(args.audio, jurisdiction_file, asr, extractor, args.json)
    lines = (line.rstrip("\r\n") for line in sys.stdin) if args.text == "-" else iter([args.text])
    for line in lines:
        result = extractor(line) if line.strip() else {"place": None, "location": "unknown",
                                                         "incident": {"type": "none", "priority": "none"}, "responders": []}
        print(json.dumps(result, ensure_ascii=False) if args.json or args.text == "-" else _summary(line, result), flush=True)
    return 0


def _extract_audio(files: list[Path], jurisdiction: Path, asr: AsrConfig, extractor: object, as_json: bool) -> int:
    """Segment, transcribe and extract each file; a file that cannot be read is reported and the others go on."""
    from asr.worker import build_engines
    from dispatch.from_audio import extract_file
    from dispatch.vocabulary import decoder_words, spotter_keywords

    engines = build_engines(asr, spotter_keywords(jurisdiction), decoder_words())
    if not engines:
        print("no speech recognition model found (see `jingbao model list`)", file=sys.stderr)
        return 2
    failed = 0
    for path in files:
        try:
            for heard in extract_file(path, engines, extractor):  # type: ignore[arg-type]
                record = heard.to_dict()
                said = f"{path.name} {heard.start:.2f}-{heard.end:.2f}: {heard.transcript.shown}"
                print(json.dumps(record, ensure_ascii=False) if as_json else _summary(said, heard.result), flush=True)
        except Exception as e:  # a bad file is reported and skipped, the others are still read
            failed += 1
            print(f"{path}: {e}", file=sys.stderr)
    return 1 if failed else 0


def _summary(text: str, result: dict) -> str:
    place, incident = result["place"], result["incident"]
    where = "location unknown"
    if place:
        where = f"{place['name']} {place['detail'] or ''} ({place['confidence']:.2f})"
    who = ", ".join(f"{r['id']} {r['role']} {r['distance_m']} m" for r in result["responders"]) or "nobody"
    return f"{text}\n  place:    {where}\n  incident: {incident['type']} / {incident['priority']}\n  alert:    {who}"


# --- jingbao incidents -------------------------------------------------------------------------------------

def _register_incidents(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("incidents", help="incidents recorded by the dispatcher (from the service's database)")
    isub = p.add_subparsers(dest="incidents_command", required=True)
    for name, help_ in (("list", "newest incidents first"), ("show", "one incident with its timeline")):
        q = isub.add_parser(name, help=help_)
        if name == "show":
            q.add_argument("id", help="incident id (INC-...)")
        else:
            q.add_argument("--limit", type=int, default=50, help="how many (default 50)")
        q.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help=f"service config, as for `jingbao run` (default {DEFAULT_CONFIG}); storage.data_dir has jingbao.db")
        q.add_argument("--json", action="store_true", help="JSON lines instead of a table")
        q.set_defaults(func=_incidents_command)


def _incidents_command(args: argparse.Namespace) -> int:
    import sqlite3

    from bridge.commands.service import load_setup
    from bridge.config import ConfigError
    from bridge.db import connect, connect_state
    try:
        storage = load_setup(args.config)[0].storage  # the config exactly as `jingbao run` reads it
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    # a box's incidents are in its SQLite file; central's in its PostgreSQL (bridge/db.py's connect_state)
    database = storage.database if storage.database_url is None else "central's PostgreSQL (storage.database_url)"
    if storage.database_url is None and not storage.database.exists():
        print(f"no database at {database}: the service has not run yet", file=sys.stderr)
        return 1 if args.incidents_command == "show" else 0
    try:
        conn = connect(storage.database, readonly=True) if storage.database_url is None else connect_state(storage)
        store = IncidentStore(conn, readonly=True)
        if args.incidents_command == "list":
            for incident in store.list(limit=args.limit):
                print(json.dumps(incident.to_dict(), ensure_ascii=False) if args.json else _incident_line(incident))
            return 0
        incident = store.get(args.id)
        if incident is None:
            print(f"no incident {args.id!r}", file=sys.stderr)
            return 1
        timeline = store.timeline(incident.id)
    except sqlite3.Error as e:  # the dispatcher has never created its tables there; PostgreSQL away
        print(f"{database}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**incident.to_dict(), "timeline": [e.to_dict() for e in timeline]}, ensure_ascii=False))
        return 0
    print(_incident_line(incident))
    print(f"  text: {incident.text or incident.pinyin}")
    print(f"  assigned: {', '.join(incident.assigned) or '-'}   reports: {incident.reports}")
    for entry in timeline:
        detail = json.dumps(entry.detail, ensure_ascii=False) if entry.detail else ""
        print(f"  {iso(entry.ts)}  {entry.actor:<14} {entry.kind:<11} {detail}")
    return 0


def _incident_line(incident: Incident) -> str:
    where = incident.place_name or "location unknown"
    mark = "  (provisional: final transcript not in yet)" if incident.provisional else ""
    return f"{incident.id}  {iso(incident.created_at)}  {incident.status:<18} {incident.type}/{incident.priority}  {where}{mark}"


# --- jingbao broker ----------------------------------------------------------------------------------------

def _register_broker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="MQTT broker accounts and ACL, from the responder registry (docs/security.md)")
    bsub = p.add_subparsers(dest="broker_command", required=True)
    setup = bsub.add_parser("setup", help="accounts for the service and the console, the ACL from the registry; run again "
                            "when the registry changes (phones keep their passwords)")
    setup.add_argument("--rotate", action="store_true", help="new passwords for the service and the console")
    add = bsub.add_parser("add-device", help="a login for a responder's phone, printed once (again: a new password; the "
                          "old one stops working)")
    add.add_argument("responder", help="responder id from the registry (config/jurisdiction.yaml)")
    add.add_argument("--json", action="store_true", help="the login as one JSON object")
    remove = bsub.add_parser("remove-device", help="the responder's phone can no longer log in")
    remove.add_argument("responder", help="responder id")
    node = bsub.add_parser("add-node", help="a login for a node (docs/deployment.md), printed once: a station's edge box "
                           "(user node-<station>, writes only its station's topics), the central tier (central) or the "
                           "recognition workers (recognition-<name>, one per worker: write only transcripts)")  # fmt: skip
    node.add_argument("name", help="the station's id (its node.station), central, or recognition-<name>")
    for q in (setup, add, remove, node):
        q.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help=f"service config, as for `jingbao run` (default {DEFAULT_CONFIG}): its jurisdiction, broker "
                       "section and OwnTracks device map")  # fmt: skip
        q.add_argument("--dir", type=Path, help="where the password file and the ACL go (default: "
                       "<storage.data_dir>/mosquitto, where scripts/broker.sh runs the demo's broker)")
        q.set_defaults(func=_broker_command)


def _broker_command(args: argparse.Namespace) -> int:
    from bridge.commands.service import load_setup
    from bridge.config import ConfigError
    from dispatch.broker_access import CENTRAL, NODE_PREFIX, BrokerAccess, reload_broker

    try:
        config, jurisdiction = load_setup(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    directory = args.dir or config.storage.data_dir / "mosquitto"
    b = config.broker
    access = BrokerAccess(directory, jurisdiction, prefix=b.topic_prefix, service=b.username or "jingbao",
                          service_secret=b.password_file, owntracks=config.dispatch.alerts.devices)  # fmt: skip
    if args.broker_command == "setup":
        try:
            report = access.setup(rotate=args.rotate)
        except ValueError as e:
            print(f"jingbao broker setup: {e}", file=sys.stderr)
            return 2
        for account in report.created:
            print(f"account {account}: new password in {access.secret_file(account)}", file=sys.stderr)
        for account in report.kept:
            print(f"account {account}: kept", file=sys.stderr)
        for account in report.dropped:
            print(f"phone account {account} removed: no such responder in the registry any more", file=sys.stderr)
        print(f"{access.passwd_file}: {report.devices} phone(s); {access.acl_file}: {len(jurisdiction.responders)} "
              "responders", file=sys.stderr)  # fmt: skip
        if b.username != access.service or b.password_file != access.secret_file(access.service):
            print(f"the service logs in with broker.username: {access.service} and broker.password_file: "
                  f"{access.secret_file(access.service)} in {args.config}", file=sys.stderr)  # fmt: skip
    elif args.broker_command == "add-device":
        try:
            password = access.add_device(args.responder)
        except KeyError as e:
            print(f"jingbao broker add-device: {e.args[0]}", file=sys.stderr)
            return 1
        login = _phone_login(config, args.responder, password)
        print(json.dumps(login, ensure_ascii=False) if args.json else _phone_login_text(login))
    elif args.broker_command == "add-node":
        try:
            password = access.add_node(args.name)
        except ValueError as e:
            print(f"jingbao broker add-node: {e}", file=sys.stderr)
            return 2
        user = args.name if args.name == CENTRAL else NODE_PREFIX + args.name
        print(f"node.broker.username: {user}\npassword (for node.broker.password_file, shown once): {password}")
    elif not access.remove_device(args.responder):
        print(f"jingbao broker remove-device: {args.responder} has no phone account", file=sys.stderr)
        return 1
    pid = reload_broker(directory)
    print(f"broker (pid {pid}) reloaded" if pid else f"no broker running from {directory}: this applies when it "
          "starts; a site's own broker needs a reload (systemctl reload mosquitto)", file=sys.stderr)  # fmt: skip
    return 0


def _phone_login(config: Config, responder_id: str, password: str) -> dict[str, object]:
    from dispatch.topics import Topics

    b = config.broker
    topics = Topics(b.topic_prefix)
    return {"responder": responder_id, "host": b.host, "port": b.port, "tls": b.tls is not None,
            "username": responder_id, "password": password, "client_id": responder_id,
            "subscribe": topics.alert(responder_id), "acks": topics.ack(responder_id),
            "status": topics.status(responder_id), "owntracks": f"owntracks/{responder_id}/<device>"}  # fmt: skip


def _phone_login_text(login: dict[str, object]) -> str:
    return "\n".join([
        f"MQTT login for {login['responder']}'s phone (shown once: only its hash is kept)",
        f"  broker:    {login['host']}:{login['port']}{' (TLS)' if login['tls'] else ''}",
        f"  username:  {login['username']}",
        f"  password:  {login['password']}",
        f"  client id: {login['client_id']} (the broker uses the user name whatever the phone sends)",
        f"  alerts:    subscribe {login['subscribe']} at QoS 1 with a persistent session (clean session off)",
        f"  answers:   publish {login['acks']} and {login['status']}, not retained",
        f"  OwnTracks: MQTT mode, this username and password; it publishes to {login['owntracks']}",
    ])  # fmt: skip


# --- jingbao announce --------------------------------------------------------------------------------------


def _register_announce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("announce", help="render a spoken announcement to a WAV file, exactly as it would go on the air")
    p.add_argument("text", help="what to say, e.g. 怡园警务点请注意，美食街有人打架斗殴，请迅速赶往美食街")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.wav", help="16 kHz mono WAV to write")
    p.add_argument("--voice", help="Kokoro voice (zf_* female, zm_* male; default: the config's dispatch.alerts.announce_voice)")
    p.add_argument("--model", type=Path, help="Kokoro model folder (default: the config's, else where the service finds it)")
    p.add_argument("--config", type=Path, help=f"service config whose announcement voice is used (default: {DEFAULT_CONFIG}, "
                   "when there is one)")  # fmt: skip
    p.set_defaults(func=_announce_command)


def _announce_command(args: argparse.Namespace) -> int:
    import time
    import wave

    from asr.models import TTS, locate
    from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
    from dispatch.config import AlertRules
    from dispatch.speech import Speaker, SpeechError, load_voice

    alerts = AlertRules()
    if args.config is not None or DEFAULT_CONFIG.is_file():
        from bridge.config import ConfigError, load_config

        try:
            alerts = load_config(args.config or DEFAULT_CONFIG).dispatch.alerts
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 2
    model = locate(TTS, args.model or alerts.announce_model)
    if not model.found:
        print(f"{model.message()}\nSpeaking with espeak-ng instead.", file=sys.stderr)
    speaker = Speaker(load_voice(model.path, args.voice or alerts.announce_voice))
    t0 = time.perf_counter()
    try:
        pcm = speaker.render(args.text)
    except SpeechError as e:
        print(f"cannot render the announcement: {e}", file=sys.stderr)
        return 1
    finally:
        speaker.close()
    seconds = len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(args.out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    took = time.perf_counter() - t0
    print(f"{args.out}: {seconds:.1f} s spoken by {speaker.name} (rendered in {took:.1f} s)", file=sys.stderr)
    return 0
