"""`jingbao run` (every role), `config check`, `segment`, `archive`, `db roles`: the service's subcommands, and
what every subcommand shares (the default config, reading it with its jurisdiction, `--since`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from datetime import date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from bridge.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from bridge.archive import Archive
    from dispatch.gazetteer import Jurisdiction

DEFAULT_CONFIG = Path("config/demo.yaml")


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the service: channels -> segmenter -> archive -> ASR -> dispatch, and the web API")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    run.add_argument(
        "--role", choices=("all", "edge", "central", "recognition"), default="all",
        help="all: the single box (default); edge: a station's box, also forwarding to the central tier; central: "
        "stores every station's utterances and transcripts in PostgreSQL; recognition: recognises what central holds "
        "without a transcript, on a machine of its own (docs/deployment.md)",
    )  # fmt: skip
    run.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="validate a config file and print what it would run")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)

    seg = sub.add_parser("segment", help="split an audio file into utterances (default VAD settings)")
    seg.add_argument("file", type=Path, help="any audio file ffmpeg reads")
    seg.add_argument("--json", action="store_true", help='one JSON object per utterance: {"start", "end", "duration"} in seconds')
    seg.set_defaults(func=cmd_segment)

    _register_archive(sub)
    _register_db(sub)


def _register_db(sub: argparse._SubParsersAction) -> None:
    from bridge.pg_roles import READER, RECOGNITION, WRITER

    db = sub.add_parser("db", help="the PostgreSQL store of the central tier")
    dsub = db.add_subparsers(dest="db_command", required=True)
    roles = dsub.add_parser(
        "roles", help="give a database a writer role (the central ingest's) and a read-only one (search, audit); run "
        "once by the server's administrator (docs/security.md)",
    )  # fmt: skip
    roles.add_argument("--admin-url", required=True, help="the server as its administrator, e.g. postgresql://postgres@/postgres")
    roles.add_argument("--database", required=True, help="the deployment's database, e.g. jingbao_fenju")
    roles.add_argument("--writer", default=WRITER, help=f"the central ingest's login, owner of the tables (default {WRITER})")
    roles.add_argument("--reader", default=READER, help=f"the read-only login (default {READER})")
    roles.add_argument("--recognition", default=RECOGNITION, help="the recognition workers' login: reads utterances, "
                       f"writes only its claims (default {RECOGNITION}); run again after central's first start")  # fmt: skip
    roles.set_defaults(func=cmd_db_roles)


def cmd_db_roles(args: argparse.Namespace) -> int:
    import psycopg

    from bridge.pg_roles import TierRoles, setup_roles

    try:
        roles = TierRoles(args.database, args.writer, args.reader, args.recognition)
        workers_granted = setup_roles(args.admin_url, roles)
    except (ValueError, psycopg.Error) as e:
        print(f"roles not set up: {e}", file=sys.stderr)
        return 1
    print(f"{args.database}: {roles.writer} owns and writes it, {roles.reader} reads it, {roles.recognition} claims "
          f"utterances for recognition; set their passwords with psql's \\password (docs/security.md)",
          file=sys.stderr)  # fmt: skip
    if not workers_granted:
        print(f"central has not made its tables yet: run this again once it has started, to give {roles.recognition}"
              f" its rights on them and keep {roles.reader} from reading the logins", file=sys.stderr)  # fmt: skip
    return 0


def load_setup(path: Path) -> tuple[Config, Jurisdiction]:
    """The config and the jurisdiction it points at, both validated; either one's problem is a ConfigError."""
    from dispatch.gazetteer import GazetteerError, load_jurisdiction

    config = load_config(path)
    try:
        return config, load_jurisdiction(config.jurisdiction)
    except GazetteerError as e:
        raise ConfigError(str(e)) from e


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.service import run_service  # imported here: the service pulls in the web stack

    status = 0
    try:
        config, _ = load_setup(args.config)
        if args.role == "central":
            from bridge.central import run_central
            from bridge.region import region_of

            status = run_central(config, region_of(config))
        elif args.role == "recognition":
            from bridge.recognition_node import run_recognition

            run_recognition(config)
        else:
            run_service(config, args.role)
    except ConfigError as e:  # also what the service finds unusable as it starts (the broker password file)
        print(e, file=sys.stderr)
        return 2
    _leave_stopped(status)


def _leave_stopped(status: int = 0) -> NoReturn:
    """The service stopped cleanly and has stored what it had: leave without the interpreter's teardown. Destroying
    the recogniser's onnxruntime sessions there now and then crashes the process (SIGSEGV after a clean SIGTERM stop,
    seen in tests/bridge/test_edge_central.py; not in jingbao's code), which a supervisor would count as a crash.
    Nothing is left to do at exit but what the atexit handlers would: no line keyed (the service unkeyed them all as
    it stopped: this is the last resort), the log flushed."""
    from hardware.lines.base import unkey_all

    unkey_all()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def cmd_config_check(args: argparse.Namespace) -> int:
    from bridge.region import RegionError, region_of
    from bridge.region_jurisdiction import merge_jurisdictions

    try:
        config, jurisdiction = load_setup(args.file)
        region = region_of(config)  # a bad region file is the config's problem too
        merged = merge_jurisdictions(region) if region is not None else None  # central's dispatch over its stations
    except RegionError as e:
        print(f"node.region: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{args.file}: OK")
    print(f"  jurisdiction: {config.jurisdiction} ({jurisdiction.name}: {len(jurisdiction.places)} places, "
          f"{len(jurisdiction.responders)} responders)")
    print(f"  storage: {config.storage.data_dir} ({config.storage.audio_format})")
    if region is not None:
        print(f"  region: {config.node.region} ({region.name}: {len(region.bureaus)} 分局, {len(region.stations)} stations)")
        dispatched = ", ".join(merged.stations) if merged is not None else "none (no station names a jurisdiction file)"
        print(f"  central dispatches for: {dispatched}")
    b = config.broker
    login = f" as {b.username}" if b.username else " (anonymous)"
    print(f"  broker: {b.host}:{b.port}{' over TLS' if b.tls else ''}" + (login if b.enabled else " (disabled)"))
    print(f"  web: http://{config.web.host}:{config.web.port}")
    print(f"  speech recognition: {config.asr.engine}")
    for ch in config.channels:
        parts = [f"source {ch.source.type}"]
        if ch.line is not None:
            parts.append(f"line {ch.line.type}")
        if ch.tx is not None:
            parts.append(f"transmits to {ch.tx.output.type}")
        if not ch.enabled:
            parts.append("disabled")
        print(f"  channel {ch.id} [{ch.name}]: {', '.join(parts)}")
    for patch in config.patches:
        print(f"  patch {patch.a} <-> {patch.b} ({patch.mode})")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
    from bridge.config import VadConfig
    from bridge.decode import AudioDecodeError, decode_file
    from bridge.segmenter import segment_pcm

    try:
        pcm = decode_file(args.file)
    except AudioDecodeError as e:
        print(f"jingbao segment: {e}", file=sys.stderr)
        return 2
    utterances = segment_pcm(pcm, VadConfig())
    if not args.json:
        print(f"{'#':>4} {'start s':>9} {'end s':>9} {'dur s':>7}  end reason")
    for n, u in enumerate(utterances, 1):
        if args.json:
            print(json.dumps({"start": round(u.start, 3), "end": round(u.end, 3), "duration": round(u.duration, 3)}))
        else:
            print(f"{n:>4} {u.start:>9.3f} {u.end:>9.3f} {u.duration:>7.3f}  {u.reason}")
    seconds = len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)
    print(f"{args.file}: {len(utterances)} utterance(s) in {seconds:.3f} s of audio", file=sys.stderr)
    return 0


# --- archive ------------------------------------------------------------------------------------------------

RELATIVE_TIME = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
SECONDS_PER = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _register_archive(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="the utterance archive: list, verify")
    asub = p.add_subparsers(dest="archive_command", required=True)
    config_help = f"config file (default {DEFAULT_CONFIG})"
    ls = asub.add_parser("list", help="archived utterances, newest first")
    ls.add_argument("--channel", help="only this channel id")
    ls.add_argument(
        "--since", type=parse_since, metavar="T",
        help="only utterances starting at/after T: ISO date or time (local unless it has an offset: 2024-05-01, "
        "2024-05-01T08:30, 08:30) or relative (30m, 2h, 7d)",
    )  # fmt: skip
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line (every column)")
    ls.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    ls.set_defaults(func=cmd_archive_list)
    verify = asub.add_parser("verify", help="check the hash chain and every file; exit 1 when anything is wrong")
    verify.add_argument("--json", action="store_true", help="one JSON object: ok, rows, files, head, problems")
    verify.add_argument("--central", action="store_true", help="central's copy: each station's chain and the audio "
                        "it holds, in storage.database_url (PostgreSQL)")
    verify.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=config_help)
    verify.set_defaults(func=cmd_archive_verify)


def parse_since(text: str) -> float:
    """CLI time -> UTC epoch seconds. Naive ISO times are local time (what an operator means)."""
    text = text.strip()
    if match := RELATIVE_TIME.match(text):
        return time.time() - float(match[1]) * SECONDS_PER[match[2]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        pass
    try:
        return datetime.combine(date.today(), dt_time.fromisoformat(text)).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an ISO date or time (2024-05-01, 2024-05-01T08:30, 08:30) or a relative time (30m, 2h, 7d)"
        ) from None


def _open_archive(config_file: Path) -> Archive:
    """The archive the config points at, read-only; ConfigError when there is none (never creates an empty one)."""
    from bridge.archive import Archive

    storage = load_config(config_file).storage
    if not storage.database.is_file():
        raise ConfigError(f"{config_file}: no archive database at {storage.database}")
    return Archive(storage, readonly=True)  # listing and auditing never change the archive


def cmd_archive_list(args: argparse.Namespace) -> int:
    try:
        archive = _open_archive(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    with archive:
        rows = archive.list(channel=args.channel, since=args.since, limit=args.limit)
    if args.json:
        for row in rows:
            print(json.dumps(row.to_dict(), ensure_ascii=False))
        return 0
    print(f"{'seq':>6}  {'start (local)':<23} {'channel':<14} {'dur s':>6} {'peak':>6} {'rms':>6}  {'status':<12} {'fmt':<5} id")
    for r in rows:
        start = datetime.fromtimestamp(r.start_ms / 1000).isoformat(sep=" ", timespec="milliseconds")
        print(
            f"{r.seq:>6}  {start:<23} {r.channel:<14} {r.duration_ms / 1000:>6.1f} {r.peak_dbfs:>6.1f} {r.rms_dbfs:>6.1f}  "
            f"{r.status:<12} {r.format:<5} {r.id}" + (f"  FAULT: {r.fault}" if r.fault else "")
        )
    print(f"{len(rows)} utterance(s)", file=sys.stderr)
    return 0


def cmd_archive_verify(args: argparse.Namespace) -> int:
    if args.central:
        return _verify_central(args)
    try:
        archive = _open_archive(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    with archive:
        report = archive.verify()
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        for p in [*report.problems, *report.incomplete]:
            where = " ".join(f"{k} {v}" for k, v in (("seq", p.seq), ("id", p.id), ("path", p.path)) if v is not None)
            print(f"{p.kind}: {where}: {p.detail}")
        verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        if report.incomplete:  # a crash mid-write, not tampering: reported, but the archive is still OK
            verdict += f" ({len(report.incomplete)} incomplete write(s) left by a crash)"
        print(f"archive {verdict}: {report.rows} rows, {report.files} files, head {report.head}")
    return 0 if report.ok else 1


def _verify_central(args: argparse.Namespace) -> int:
    """Central's copy of every station's archive (bridge/central_archive.py), on storage.database_url."""
    import psycopg

    from bridge.central_archive import CentralArchive

    try:
        url = load_config(args.config).storage.database_url
        if url is None:
            raise ConfigError(f"{args.config}: --central needs storage.database_url (central's PostgreSQL)")
        report = CentralArchive(url).verify()
    except (ConfigError, psycopg.Error) as e:
        print(str(e).strip(), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
        return 0 if report.ok else 1
    for station, check in report.stations.items():
        for p in check.problems:
            where = " ".join(f"{k} {v}" for k, v in (("seq", p.seq), ("id", p.id)) if v is not None)
            print(f"{station}: {p.kind}: {where}: {p.detail}")
        verdict = "OK" if check.ok else f"{len(check.problems)} problem(s)"
        held = f"rows {check.first_seq}..{check.first_seq + check.rows - 1}" if check.first_seq is not None else "no rows"
        print(f"{station}: {verdict}: {held} ({check.audio_missing} without audio), head {check.head}")
    if not report.stations:
        print("central holds no station's archive yet")
    return 0 if report.ok else 1
