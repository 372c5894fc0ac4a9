"""Edge boxes -> one central tier on this machine (issue 13): K `jingbao run --role edge` processes with N channels each,
one `jingbao run --role central` on a private PostgreSQL, a private mosquitto between them.

    bench/cluster.py [--edges K] [--channels N] [--duty D] [--seconds S] [--cut-at T] [--cut-s C] [--flood M]
                     [--recognition W]

Each channel replays the spoken calls and the real recordings through the radio as bench/load.py does (bench/loadgen.py:
the same material, timelines and real-time FIFO feed; copies cached in var/bench-cache/load), so every edge segments,
archives (Opus) and recognises (the on-board model) live and forwards to central over MQTT 5 QoS 1. Each edge reaches
the broker through its own TCP relay (tests/support/relay.py); at T seconds edge 0's relay is cut silently, as a pulled
cable (its channels go on talking), for C seconds (default 120), then restored. PostgreSQL runs durable (fsync and
synchronous commits on), as a production server would.

Dispatch is central's, as docs/deployment.md "Dispatch at central" sets it up: the region file (one 分局, a station per
edge, none bordering another) names each station's jurisdiction file, and each edge runs with `node.dispatch: central`
(its dispatcher on, raising no incident from what it hears). Every station's file is a copy of the demo jurisdiction
(config/jurisdiction.yaml) with its responder ids prefixed with the station (`edge0-g-gaoqiao`): a responder id is his
phone's topic, so the region refuses one named by two stations (bridge/region_jurisdiction.py); the copies are the
bench's, made in the run's folder. Central alerts on the same mosquitto (its `broker` section, client id
central-dispatch), every report its own incident (`dispatch.alerts.merge_window_s: 0`, as bench/load.py without
--merge: the same recordings recur on every channel). A subscriber of the bench's on that broker stamps every alert,
incident state and incident event on arrival.

--recognition W: the edges recognise nothing (`asr.engine: none`: archive and forward only) and W `jingbao run --role
recognition` processes (bridge/recognition_node.py, `node.recognition.after_s: 0`, two utterances at once each) take
every utterance from central's PostgreSQL, recognise it and send central its transcript; their CPU is reported beside
the edges'. No flood then (the workers would recognise the replayed utterances too).

Reported:
- end of speech -> the first alert or incident event at central's broker about the call (the message names the
  call's utterance: an alert's `utterance_id`, an incident's `utterance_ids`, as bench/load.py matches them),
  p50/p95/max over the incident calls (loadgen's labelled ones) that the cut did not hold back, and -> the first
  alert to a responder's phone (escalations left out) beside it; the incident calls with no message, and routine
  calls or real recordings that raised one;
- end of speech -> the call's utterance stored at central (central's `received_at`) and -> its transcript seen at
  central (the bench polls central's transcripts every 0.25 s), p50/p95, over the calls that the cut did not hold back;
  the edge's archive time -> stored at central beside it (the forwarding alone). The end of speech is the feed's
  (loadgen.Feed.handed: the wall-clock time the FIFO took the call's last speech sample).
- messages per second stored at central: over the timeline (what K x N channels offer), and the busiest second (the
  catch-up); then central's own throughput (--flood M): the edges' real messages (utterances with their audio,
  transcripts) replayed under stations flood0, flood1, ... (in the region, each with its own copy of the demo
  jurisdiction, as the edges' stations) as fast as the broker takes them, until central has stored them all and its
  dispatcher has handled every transcript (dispatched, or refused and why), with the CPU each tier spent per 1000
  messages, and how many channels like these each rate would serve;
- catch-up after the cut: restore -> the edge reconnected (its first connection through the restored relay), and ->
  every entry it had queued before the restore acknowledged by central (its forward_queue read as another process
  would);
- CPU seconds of the central tier per 100 channels per minute (central, PostgreSQL's processes, mosquitto, each from
  /proc), over the timeline and the drain; the edges' CPU beside it;
- whether central holds exactly the edges' utterances and transcripts, each once; what central's dispatcher counted
  (its log's last counts: dispatched, refused by reason); the machine and its load.

The flood replays each utterance again under another station, so central takes every message as new, and its
dispatcher reads each transcript as a fresh report of that station (every report its own incident, as above): the
dispatcher's figure is what a region of that many stations' traffic costs it, at the timeline's share of incident
calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import loadgen  # noqa: E402
from bench.load import CACHE, SHERPA, _open_fifo, _until_running, proc_cpu_s, read_utterances, stamp  # noqa: E402
from bench.loadgen import Feed, Message, percentile  # noqa: E402
from bench.machine import describe  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402
from tests.support.broker import Mosquitto, free_port  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.relay import Relay  # noqa: E402

POLL_S = 0.25
JURISDICTION = REPO / "config" / "jurisdiction.yaml"
SHERPA_DIR = shared_dir() / "models" / SHERPA


@dataclass
class Options:
    edges: int = 2
    channels: int = 4  # per edge
    duty: float = 0.2
    seconds: float = 240.0  # the timeline: transmissions end before it
    cut_at: float = 60.0
    cut_s: float = 120.0
    seed: int = 0
    drain_s: float = 120.0
    snr: tuple[float, float] = (12.0, 20.0)
    flood: int = 4000  # messages replayed at central as fast as the broker takes them, after the timeline (0: none)
    recognition: int = 0  # recognition worker processes; then the edges recognise nothing


@dataclass
class Edge:
    index: int
    station: str
    dir: Path
    relay: Relay
    web_port: int
    fifos: list[Path]
    process: subprocess.Popen[bytes] | None = None
    # what its database held at the end (read before the run's folder goes)
    utterances: list[loadgen.Utterance] = field(default_factory=list)
    archived_at: dict[str, float] = field(default_factory=dict)  # utterance id -> when archived (epoch s)
    transcribed: set[str] = field(default_factory=set)

    @property
    def database(self) -> Path:
        return self.dir / "data" / "jingbao.db"

    def channel_ids(self, per_edge: int) -> list[str]:
        return [f"load-{self.index * per_edge + j:02d}" for j in range(per_edge)]  # global index: loadgen's channel


@dataclass
class CatchUp:
    restored_at: float
    backlog: int  # entries queued at the restore
    last_entry: int  # the newest of them
    connections: int  # the relay's accepted connections at the restore: the next one is the edge reconnecting
    reconnected_at: float | None = None
    caught_up_at: float | None = None


@dataclass
class Observed:
    transcripts_seen: dict[str, float] = field(default_factory=dict)  # central id -> when the bench first saw it
    messages: list[Message] = field(default_factory=list)  # alerts and incidents at central's broker, on arrival
    cut_at: float | None = None
    catch_up: CatchUp | None = None


# --- the processes ---------------------------------------------------------------------------------------------


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def station_jurisdiction(folder: Path, station: str) -> Path:
    """The demo jurisdiction as `station`'s own: its responder ids prefixed with the station (unique across the region,
    as bridge/region_jurisdiction.py requires)."""
    raw = yaml.safe_load(JURISDICTION.read_text(encoding="utf-8"))
    for responder in raw["responders"]:
        responder["id"] = f"{station}-{responder['id']}"
    return write_config(folder / f"jurisdiction-{station}.yaml", raw)


def region_config(tmp: Path, stations: list[str]) -> Path:
    """One 分局, a station per edge naming its jurisdiction file: central dispatches for every one of them."""
    return write_config(tmp / "region.yaml", {
        "name": "基准市局",
        "bureaus": [{"id": "bench", "name": "基准分局", "stations": [
            {"id": s, "name": f"{s}派出所", "jurisdiction": str(station_jurisdiction(tmp, s))} for s in stations]}],
    })  # fmt: skip


def edge_config(opts: Options, edge: Edge) -> Path:
    channels = [{"id": cid, "name": f"负载{cid[-2:]}", "source": {"type": "pipe", "path": str(fifo)}}
                for cid, fifo in zip(edge.channel_ids(opts.channels), edge.fifos, strict=True)]  # fmt: skip
    return write_config(edge.dir / "config.yaml", {
        "jurisdiction": str(station_jurisdiction(edge.dir, edge.station)),  # the file central's region names
        "storage": {"data_dir": str(edge.dir / "data")},
        "broker": {"enabled": False},
        "web": {"host": "127.0.0.1", "port": edge.web_port},
        "asr": {"engine": "none"} if opts.recognition else {"engine": "sherpa", "sherpa_model": str(SHERPA_DIR)},
        "channels": channels,
        "node": {"station": edge.station,
                 "broker": {"host": edge.relay.host, "port": edge.relay.port, "client_id": f"node-{edge.station}"},
                 "dispatch": "central"},
    })  # fmt: skip


def central_config(tmp: Path, broker: Mosquitto, database_url: str, stations: list[str]) -> Path:
    return write_config(tmp / "central.yaml", {
        "jurisdiction": str(JURISDICTION),
        "storage": {"data_dir": str(tmp / "central"), "database_url": database_url},
        # the dispatcher's alerts, on the broker between nodes (the bench's responders' phones are on it)
        "broker": {"enabled": True, "host": broker.host, "port": broker.port, "client_id": "central-dispatch"},
        "dispatch": {"alerts": {"merge_window_s": 0}},
        # validated as any config's, never opened by central
        "channels": [{"id": "unused", "name": "unused", "source": {"type": "file", "paths": ["unused.wav"]}}],
        "node": {"broker": {"host": broker.host, "port": broker.port, "client_id": "central"},
                 "region": str(region_config(tmp, stations))},
    })  # fmt: skip


def recognition_config(tmp: Path, broker: Mosquitto, database_url: str, index: int) -> Path:
    return write_config(tmp / f"recognition{index}.yaml", {
        "jurisdiction": str(JURISDICTION),  # the stations' copies differ in their responders' ids only
        "storage": {"data_dir": str(tmp / f"recognition{index}"), "database_url": database_url},
        "broker": {"enabled": False},
        "asr": {"engine": "sherpa", "sherpa_model": str(SHERPA_DIR), "workers": 2},
        "channels": [{"id": "unused", "name": "unused", "source": {"type": "file", "paths": ["unused.wav"]}}],
        "node": {"broker": {"host": broker.host, "port": broker.port, "client_id": f"recognition{index}"},
                 "recognition": {"after_s": 0, "poll_s": 0.25}},
    })  # fmt: skip


def start(role: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--role", role, "--config", str(config)],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


async def until_logged(proc: subprocess.Popen[bytes], log: Path, line: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while line not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {line!r} in {log.name} ({proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
        await asyncio.sleep(0.2)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def postgres_cpu_s(cluster: PostgresCluster, leave_out: int) -> float:
    """The postmaster's CPU with what its ended backends used (reaped: its children's time), and its live children's
    but `leave_out`'s (the bench's own backend)."""
    postmaster = int((cluster.dir / "data" / "postmaster.pid").read_text().split()[0])
    total = proc_cpu_s(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster and int(stat.parent.name) != leave_out:
                total += proc_cpu_s(int(stat.parent.name))
    return total


# --- watching --------------------------------------------------------------------------------------------------


def queue_state(edge: Edge) -> tuple[int, int | None, int | None]:
    """The edge's forward queue: entries, the oldest's and the newest's (read-only, as another process)."""
    with contextlib.closing(sqlite3.connect(f"file:{edge.database}?mode=ro", uri=True, timeout=5)) as db:
        n, oldest, newest = db.execute("SELECT count(*), min(seq), max(seq) FROM forward_queue").fetchone()
    return n, oldest, newest


class TranscriptWatch:
    """Notes when each transcript first shows at central, on one connection of its own; its backend's CPU is the
    bench's, left out of PostgreSQL's figure."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.backend = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.seen: dict[str, float] = {}  # central id -> when the bench first saw it

    def poll(self) -> None:
        now = time.time()
        for (uid,) in self.conn.execute("SELECT utterance_id FROM transcripts"):
            self.seen.setdefault(uid, now)


async def watch(transcripts: TranscriptWatch, edges: list[Edge], observed: Observed) -> None:
    """Every POLL_S: the transcripts central holds, and after the cut, how far the cut edge has caught up."""
    while True:
        with contextlib.suppress(psycopg.errors.UndefinedTable):  # central has not made its tables yet
            await asyncio.to_thread(transcripts.poll)
        c = observed.catch_up
        if c is not None:
            if c.reconnected_at is None and edges[0].relay.connections > c.connections:
                c.reconnected_at = time.time()
            if c.caught_up_at is None:
                _, oldest, _ = await asyncio.to_thread(queue_state, edges[0])
                if oldest is None or oldest > c.last_entry:
                    c.caught_up_at = time.time()
        await asyncio.sleep(POLL_S)


async def listen(broker: Mosquitto, messages: list[Message], ready: asyncio.Event) -> None:
    """Stamp every alert, incident state and incident event central publishes, on arrival (bench/load.py's stamp)."""
    import aiomqtt

    from dispatch.topics import Topics

    prefix = Topics().prefix
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-alerts") as client:
        for topic in (f"{prefix}/alerts/#", f"{prefix}/incidents/#", f"{prefix}/events"):
            await client.subscribe(topic, qos=1)
        ready.set()
        async for m in client.messages:
            messages.append(stamp(m))


async def cut_edge(opts: Options, edge: Edge, observed: Observed, feed_started: float) -> None:
    await asyncio.sleep(max(0.0, feed_started + opts.cut_at - time.time()))
    await edge.relay.cut()
    observed.cut_at = time.time()
    print(f"  {time.strftime('%H:%M:%S')} {edge.station}'s link cut for {opts.cut_s:.0f} s", flush=True)
    await asyncio.sleep(opts.cut_s)
    n, _, newest = await asyncio.to_thread(queue_state, edge)
    await edge.relay.restore()
    observed.catch_up = CatchUp(time.time(), n, newest or 0, edge.relay.connections)
    print(f"  {time.strftime('%H:%M:%S')} link restored, {n} entries queued", flush=True)


@dataclass
class Flood:
    """Central's throughput: the edges' real messages replayed under the flood's stations as fast as the broker takes
    them, how fast central stored them (its dispatcher at work meanwhile) and how fast its dispatcher handled them."""

    messages: int
    published_s: float  # first publish -> the broker's last PUBACK
    stored_s: float  # first publish -> central holding them all
    cpu: dict[str, float]  # central, postgres, mosquitto, from the first publish until the dispatcher was done
    transcripts: int = 0  # of the messages
    dispatched_s: float = 0.0  # first publish -> central's dispatcher having handled every transcript
    outcomes: Counter[str] = field(default_factory=Counter)  # what it made of them: dispatched, or why not
    ended: str = ""


def flood_stations(opts: Options, plan: list[list[loadgen.Transmission]]) -> list[str]:
    """Enough stations for the flood to replay every utterance under a new one each round: a round is an utterance
    and a transcript per transmission the timeline plays (at least half of them heard, counted safe)."""
    per_round = 2 * max(1, sum(len(timeline) for timeline in plan) // 2)
    return [f"flood{r}" for r in range(opts.flood // per_round + 1)] if opts.flood else []


def replayed(edges: list[Edge], n: int, stations: list[str]) -> list[tuple[str, bytes]]:
    """At most `n` (topic, payload) pairs: every utterance and transcript the edges hold, as their forwarders build
    them (bridge/forward.ForwardQueue.payload: real audio, real transcripts), again and again under `stations`, one
    round each, so central stores each as new."""
    from bridge.forward import Entry, ForwardQueue
    from dispatch.topics import Topics

    topics = Topics()
    queues = [ForwardQueue(e.database, e.dir / "data") for e in edges]
    try:
        rows = [(q, u.id) for q, e in zip(queues, edges, strict=True) for u in e.utterances if u.id in e.transcribed]
        out: list[tuple[str, bytes]] = []
        for station in stations:
            for queue, uid in rows:
                for kind in ("utterances", "transcripts"):
                    payload = queue.payload(station, Entry(len(out) + 1, kind, uid))
                    if payload is not None and len(out) < n:
                        out.append((topics.node(station, kind), payload))
        return out
    finally:
        for queue in queues:
            queue.close()


def flood_dispatched(conn: psycopg.Connection) -> Counter[str]:
    """What central's dispatcher made of the flood's transcripts so far (its record, in central's PostgreSQL)."""
    with contextlib.suppress(psycopg.errors.UndefinedTable):  # central's dispatcher has not made it yet
        return Counter(dict(conn.execute("SELECT outcome, count(*) FROM central_dispatched WHERE utterance_id LIKE "
                                         "'flood%' GROUP BY outcome").fetchall()))  # fmt: skip
    return Counter()


def flood_stored(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT (SELECT count(*) FROM node_utterances WHERE station LIKE 'flood%')"
                        " + (SELECT count(*) FROM transcripts WHERE utterance_id LIKE 'flood%')").fetchone()[0]  # fmt: skip


async def flood(broker: Mosquitto, messages: list[tuple[str, bytes]], conn: psycopg.Connection, cpu_now: Any,
                timeout: float = 300) -> Flood:  # fmt: skip
    """Publish `messages` QoS 1 on one connection (each awaited: the broker's PUBACK), then wait for central to store
    them all and for its dispatcher to handle every transcript."""
    import aiomqtt

    cpu0 = cpu_now()
    t0 = time.monotonic()
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-flood", protocol=aiomqtt.ProtocolVersion.V5,
                              max_queued_outgoing_messages=None) as client:  # fmt: skip
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)
    published = time.monotonic() - t0
    ended = ""
    while (await asyncio.to_thread(flood_stored, conn)) < len(messages):
        if time.monotonic() - t0 > timeout:
            ended = f"central had not stored them all {timeout:.0f} s after the first"
            break
        await asyncio.sleep(0.1)
    stored = time.monotonic() - t0
    transcripts = sum(topic.endswith("/transcripts") for topic, _ in messages)
    while sum((outcomes := await asyncio.to_thread(flood_dispatched, conn)).values()) < transcripts:
        if time.monotonic() - t0 > timeout:
            ended = ended or f"central's dispatcher had not handled them all {timeout:.0f} s after the first"
            break
        await asyncio.sleep(0.1)
    dispatched = time.monotonic() - t0
    cpu1 = cpu_now()
    return Flood(len(messages), published, stored, {k: cpu1[k] - cpu0[k] for k in cpu0}, transcripts, dispatched,
                 outcomes, ended)  # fmt: skip


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    opts: Options
    edges: list[Edge]
    plan: list[list[loadgen.Transmission]]
    feed: Feed
    observed: Observed
    received: dict[str, float]  # central id -> received_at
    central_transcripts: Counter[str]
    cpu: dict[str, float]  # seconds over the timeline and the drain: central, postgres, mosquitto, edges
    machine: str  # and its load before the run
    flood: Flood | None
    window_s: float
    load_after: float
    drained: str
    dispatch_counts: str  # central's dispatcher's last logged counts


async def run(opts: Options) -> Outcome:
    machine = describe()
    calls, real = await asyncio.to_thread(loadgen.load_material, shared_dir(), CACHE, opts.snr, opts.seed)
    total = opts.edges * opts.channels
    plan = loadgen.plan(total, opts.duty, opts.seconds, calls, real, burst=False, seed=opts.seed)
    with tempfile.TemporaryDirectory(prefix="jingbao-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "mosquitto")
        # as docs/deployment.md advises for the broker between nodes: room for a backlog (mosquitto's default, 1000
        # per session, would drop most of the flood below while central stores it)
        broker.config.write_text(broker.config.read_text(encoding="utf-8") + "max_queued_messages 100000\n", encoding="utf-8")
        cluster = PostgresCluster(durable=True)
        edges: list[Edge] = []
        central: subprocess.Popen[bytes] | None = None
        workers: list[subprocess.Popen[bytes]] = []
        feed = Feed(plan, [])
        try:
            broker.start()
            await asyncio.to_thread(cluster.start)
            url = cluster.url(cluster.create_database())
            stations = [f"edge{k}" for k in range(opts.edges)]
            flooding = flood_stations(opts, plan)
            central = start("central", central_config(tmp, broker, url, stations + flooding), tmp / "central.log")
            # before the edges: until its first subscription the broker keeps nothing for central
            await until_logged(central, tmp / "central.log", "node link connected")
            for w in range(opts.recognition):
                workers.append(start("recognition", recognition_config(tmp, broker, url, w), tmp / f"recognition{w}.log"))
                await until_logged(workers[-1], tmp / f"recognition{w}.log", "node link connected")
            for k in range(opts.edges):
                relay = Relay((broker.host, broker.port))
                await relay.start()
                edge = Edge(k, stations[k], tmp / f"edge{k}", relay, free_port(), [])
                edge.dir.mkdir()
                for cid in edge.channel_ids(opts.channels):
                    os.mkfifo(edge.dir / f"{cid}.pcm")
                    edge.fifos.append(edge.dir / f"{cid}.pcm")
                edge.process = start("edge", edge_config(opts, edge), edge.dir / "edge.log")
                edges.append(edge)
            for edge in edges:
                assert edge.process is not None
                await _until_running(edge.process, f"http://127.0.0.1:{edge.web_port}", opts.channels, edge.dir / "edge.log")
            feed.fifos = [await _open_fifo(f) for edge in edges for f in edge.fifos]
            pids = {"central": central.pid, "mosquitto": broker._process.pid if broker._process else 0}
            edge_cpu0 = sum(proc_cpu_s(e.process.pid) for e in edges if e.process)
            workers_cpu0 = sum(proc_cpu_s(w.pid) for w in workers)
            transcripts = TranscriptWatch(url)

            def tier_cpu() -> dict[str, float]:
                return {name: proc_cpu_s(pid) for name, pid in pids.items()} | {
                    "postgres": postgres_cpu_s(cluster, transcripts.backend)}

            observed = Observed(transcripts.seen)
            ready = asyncio.Event()
            listener = asyncio.create_task(listen(broker, observed.messages, ready))
            await asyncio.wait_for(ready.wait(), 10)
            cpu0 = tier_cpu()
            t0 = time.monotonic()
            writer = threading.Thread(target=feed.run, name="feed", daemon=True)
            writer.start()
            await asyncio.sleep(0.1)
            watcher = asyncio.create_task(watch(transcripts, edges, observed))
            print(f"  {time.strftime('%H:%M:%S')} {total} channels talking for {opts.seconds:.0f} s", flush=True)
            await cut_edge(opts, edges[0], observed, feed.t0_wall)
            await asyncio.sleep(max(0.0, feed.t0_wall + opts.seconds - time.time()))
            drained = await drain(opts, edges, transcripts.conn, every_utterance=bool(workers))
            window = time.monotonic() - t0
            cpu1 = tier_cpu()
            cpu = {name: cpu1[name] - cpu0[name] for name in cpu0}
            cpu["edges"] = sum(proc_cpu_s(e.process.pid) for e in edges if e.process) - edge_cpu0
            cpu["recognition"] = sum(proc_cpu_s(w.pid) for w in workers) - workers_cpu0
            feed.stop.set()
            await asyncio.to_thread(writer.join, 5)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if observed.messages:  # the last incidents' alerts: a few seconds after their transcripts
                await asyncio.sleep(5)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            received, held = await asyncio.to_thread(central_holds, transcripts.conn)
            for edge in edges:
                read_edge(edge)
            load_after = os.getloadavg()[0]
            flooded = None
            if opts.flood:
                messages = await asyncio.to_thread(replayed, edges, opts.flood, flooding)
                print(f"  {time.strftime('%H:%M:%S')} replaying {len(messages)} messages at central", flush=True)
                flooded = await flood(broker, messages, transcripts.conn, tier_cpu)
            transcripts.conn.close()
            stop(central)  # its dispatcher logs its counts as it stops
            counts = [ln for ln in (tmp / "central.log").read_text(errors="replace").splitlines() if "central dispatch" in ln]
            return Outcome(opts, edges, plan, feed, observed, received, held, cpu, machine, flooded, window, load_after,
                           drained, counts[-1] if counts else "(central logged no dispatch counts)")  # fmt: skip
        finally:
            feed.stop.set()
            for edge in edges:
                stop(edge.process)
                await edge.relay.stop()
            for fd in feed.fifos:
                os.close(fd)
            for worker in workers:
                stop(worker)
            stop(central)
            broker.stop()
            await asyncio.to_thread(cluster.stop)


async def drain(opts: Options, edges: list[Edge], conn: psycopg.Connection, every_utterance: bool = False) -> str:
    """After the timeline: until every edge's queue is empty and central holds every utterance and transcript the
    edges hold (`every_utterance`: a transcript of every utterance, the recognition workers'), twice in a row 2 s
    apart (a last transcript may still be on its way), at most drain_s. Returns why it ended early, if it did."""
    deadline = time.monotonic() + opts.drain_s
    settled = 0
    while time.monotonic() < deadline:
        for edge in edges:
            await asyncio.to_thread(read_edge, edge)
        queued = sum([(await asyncio.to_thread(queue_state, e))[0] for e in edges])
        received, transcripts = await asyncio.to_thread(central_holds, conn)
        wanted = len(received) if every_utterance else sum(len(e.transcribed) for e in edges)
        done = queued == 0 and len(received) == sum(len(e.utterances) for e in edges) and len(transcripts) == wanted
        settled = settled + 1 if done else 0
        if settled == 2:
            return ""
        await asyncio.sleep(2.0)
    return f"not drained {opts.drain_s:.0f} s after the timeline"


def read_edge(edge: Edge) -> None:
    edge.utterances = read_utterances(edge.database)
    with contextlib.closing(sqlite3.connect(f"file:{edge.database}?mode=ro", uri=True)) as db:
        edge.archived_at = {uid: ms / 1000 for uid, ms in db.execute("SELECT id, created_at FROM utterances")}
        edge.transcribed = {uid for (uid,) in db.execute("SELECT utterance_id FROM transcripts")}


def central_holds(conn: psycopg.Connection) -> tuple[dict[str, float], Counter[str]]:
    """Central's utterances (central id -> received_at) and its transcripts (central id -> rows: 1 each, by key)."""
    received = {uid: at for uid, at in conn.execute("SELECT id, received_at FROM node_utterances")}
    transcripts = Counter(uid for (uid,) in conn.execute("SELECT utterance_id FROM transcripts"))
    return received, transcripts


# --- figures ---------------------------------------------------------------------------------------------------


def report(out: Outcome) -> list[str]:
    opts, observed = out.opts, out.observed
    total = opts.edges * opts.channels
    catch = observed.catch_up
    held_until = catch.caught_up_at if catch and catch.caught_up_at else float("inf")
    stored: list[float] = []
    seen: list[float] = []
    forwarding: list[float] = []
    held: list[float] = []
    archived_n = transcribed_n = 0
    missing: list[str] = []
    # central's messages about each call (central ids: <station>.<the edge's id>), first of any kind and first alert
    first = loadgen.first_mentions(observed.messages)
    phoned = loadgen.first_mentions(loadgen.first_wave_alerts(observed.messages))
    alerted: list[float] = []  # incident calls: end of speech -> first alert or incident message at central
    phone: list[float] = []  # ... -> first alert to a phone
    alert_held: list[float] = []
    incident_calls = 0
    silent: list[str] = []
    raised_by_others = Counter[str]()  # routine calls and real recordings that raised a message
    for edge in out.edges:
        utterances, archive_times, texts = edge.utterances, edge.archived_at, edge.transcribed
        owner, _ = loadgen.assign(utterances, out.plan, out.feed.wall)
        central_owner = {f"{edge.station}.{uid}": key for uid, key in owner.items()}
        first_call = loadgen.first_message_per_call(central_owner, first)
        phoned_call = loadgen.first_message_per_call(central_owner, phoned)
        for j in range(opts.channels):
            for t in out.plan[edge.index * opts.channels + j]:
                end = out.feed.handed.get(t.key)
                if end is None:
                    continue  # never fed
                message = first_call.get(t.key)
                if not t.clip.is_incident:
                    if message is not None:
                        raised_by_others["routine call" if t.clip.incident else "real recording"] += 1
                    continue
                incident_calls += 1
                if message is None:
                    silent.append(f"{edge.station}/{t.channel}/{t.clip.name}")
                    continue
                if edge.index == 0 and observed.cut_at is not None and observed.cut_at <= message.at and end <= held_until:
                    alert_held.append(message.at - end)
                    continue
                alerted.append(message.at - end)
                if t.key in phoned_call:
                    phone.append(phoned_call[t.key].at - end)
        archived_n += len(utterances)
        transcribed_n += len(texts)
        missing += [f"{edge.station}.{u.id}" for u in utterances if f"{edge.station}.{u.id}" not in out.received]
        missing += [f"{edge.station}.{t} (transcript)" for t in texts if f"{edge.station}.{t}" not in out.central_transcripts]
        calls: dict[tuple[int, int], list[str]] = {}
        for uid, key in owner.items():
            calls.setdefault(key, []).append(f"{edge.station}.{uid}")
        for key, ids in calls.items():
            end = out.feed.handed.get(key)
            if end is None or any(i not in out.received for i in ids):
                continue
            at_central = max(out.received[i] for i in ids)
            cut_held = edge.index == 0 and observed.cut_at is not None and observed.cut_at <= at_central and end <= held_until
            if cut_held:
                held.append(at_central - end)
                continue
            stored.append(at_central - end)
            forwarding += [out.received[i] - archive_times[i.split(".", 1)[1]] for i in ids]
            if all(i in observed.transcripts_seen for i in ids):
                seen.append(max(observed.transcripts_seen[i] for i in ids) - end)
    # every message central stored, by the second it was stored (transcripts: when the bench saw them)
    moments = list(out.received.values()) + list(observed.transcripts_seen.values())
    per_second = Counter(int(t) for t in moments)
    timeline_s = opts.seconds
    lines = [
        f"cluster: {opts.edges} edges x {opts.channels} channels = {total} channels, duty {opts.duty}, "
        f"{opts.seconds:.0f} s timeline; edge0's link cut at {opts.cut_at:.0f} s for {opts.cut_s:.0f} s",
        f"  machine: {out.machine} at the start, {out.load_after:.1f} at the end",
        f"  transmissions {sum(map(len, out.plan))}, talking {100 * loadgen.talk_share(out.plan, opts.seconds):.0f} % of "
        f"channel time; feed late max {out.feed.late_max_s:.3f} s, held max {out.feed.held_max_s:.2f} s",
        f"  edges archived {archived_n}, transcribed {transcribed_n}; central holds {len(out.received)} utterances,"
        f" {len(out.central_transcripts)} transcripts, each once: {max(out.central_transcripts.values(), default=1) == 1};"
        f" missing at central: {len(missing)} {missing[:5]}" + (f"; {out.drained}" if out.drained else ""),
        f"  end of speech -> utterance stored at central: p50 {percentile(stored, 50):.2f} s, p95 "
        f"{percentile(stored, 95):.2f} s, max {max(stored, default=float('nan')):.2f} s ({len(stored)} calls, the cut "
        "edge's held calls apart)",
        f"  end of speech -> transcript at central (seen, 0.25 s polls): p50 {percentile(seen, 50):.2f} s, p95 "
        f"{percentile(seen, 95):.2f} s ({len(seen)} calls)",
        f"  edge archive -> stored at central: p50 {percentile(forwarding, 50):.3f} s, p95 {percentile(forwarding, 95):.3f} s",
        f"  messages stored at central: {len(moments)} = {len(moments) / timeline_s:.2f}/s over the timeline; busiest"
        f" second {max(per_second.values(), default=0)}",
    ]
    lines += [
        f"  end of speech -> first alert or incident message at central, {len(alerted)} incident calls (the cut edge's"
        f" held calls apart): p50 {percentile(alerted, 50):.2f} s, p95 {percentile(alerted, 95):.2f} s, max "
        f"{max(alerted, default=float('nan')):.2f} s; -> first alert to a phone ({len(phone)} calls): p50 "
        f"{percentile(phone, 50):.2f} s, p95 {percentile(phone, 95):.2f} s, max {max(phone, default=float('nan')):.2f} s",
        f"  incident calls {incident_calls}: with no message {len(silent)} {silent[:5]}; held by the cut "
        f"{len(alert_held)} (end of speech -> first message max {max(alert_held, default=float('nan')):.0f} s);"
        f" other transmissions that raised one: {dict(raised_by_others)}; messages at central's broker "
        f"{len(observed.messages)} ({dict(Counter(m.topic.split('/')[1] for m in observed.messages))})",
        f"  central's dispatcher, as it stopped (the flood included): "
        f"{out.dispatch_counts.split('central dispatch stops:')[-1].strip()}",
    ]
    if catch is not None:
        reconnect = (catch.reconnected_at or float("nan")) - catch.restored_at
        caught = (catch.caught_up_at or float("nan")) - catch.restored_at
        lines.append(f"  catch-up after the {opts.cut_s:.0f} s cut: {catch.backlog} entries queued; reconnected "
                     f"{reconnect:.1f} s after the restore, all of them acknowledged by central {caught:.1f} s after it;"
                     f" calls held by the cut {len(held)}, end of speech -> central max "
                     f"{max(held, default=float('nan')):.0f} s")  # fmt: skip
    if out.flood is not None:
        f = out.flood
        per_1000 = {name: 1000 * s / f.messages for name, s in f.cpu.items()}
        offered = len(moments) / (total * timeline_s / 60)  # messages per channel-minute in the timeline
        rate = f.messages / f.stored_s
        lines.append(f"  central throughput: {f.messages} real messages (utterances with their audio, transcripts) replayed"
                     f" as fast as the broker took them ({f.messages / f.published_s:.0f}/s): stored at {rate:.0f}/s"
                     f" (its dispatcher at work alongside); CPU s per 1000 messages, ingest and dispatch: central"
                     f" {per_1000['central']:.2f}, PostgreSQL {per_1000['postgres']:.2f},"
                     f" mosquitto {per_1000['mosquitto']:.2f}; at the timeline's {offered:.1f} messages per channel-minute"
                     f" that is ~{rate * 60 / offered:.0f} channels")  # fmt: skip
        heard = max(1, len(out.central_transcripts)) / (total * timeline_s / 60)  # transcripts per channel-minute
        handled = sum(f.outcomes.values()) / f.dispatched_s
        lines.append(f"  central's dispatcher on the flood: its {f.transcripts} transcripts, each a report of its"
                     f" station, {sum(f.outcomes.values())} handled {f.dispatched_s:.1f} s after the first publish"
                     f" ({handled:.0f}/s; {', '.join(f'{k} {n}' for k, n in f.outcomes.most_common())}); at the"
                     f" timeline's {heard:.2f} transcripts per channel-minute that is ~{handled * 60 / heard:.0f} channels"
                     + (f"; {f.ended}" if f.ended else ""))  # fmt: skip
    minutes = out.window_s / 60
    per_100 = {name: s / (total / 100) / minutes for name, s in out.cpu.items()}
    tier = per_100["central"] + per_100["postgres"] + per_100["mosquitto"]
    lines.append(f"  central tier CPU per 100 channels per minute: {tier:.1f} s (central {per_100['central']:.1f}, "
                 f"PostgreSQL {per_100['postgres']:.1f}, mosquitto {per_100['mosquitto']:.1f}) over {out.window_s:.0f} s;"
                 f" raw: central {out.cpu['central']:.1f} s, PostgreSQL {out.cpu['postgres']:.1f} s, mosquitto "
                 f"{out.cpu['mosquitto']:.1f} s; the edges {out.cpu['edges']:.0f} s "
                 f"({out.cpu['edges'] / total / minutes:.2f} s per channel-minute)")  # fmt: skip
    if opts.recognition:
        lines.append(f"  recognition workers ({opts.recognition}): {out.cpu['recognition']:.0f} s "
                     f"({out.cpu['recognition'] / total / minutes:.2f} s per channel-minute)")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    p.add_argument("--edges", type=int, default=d.edges, help=f"edge processes (default {d.edges})")
    p.add_argument("--channels", type=int, default=d.channels, help=f"channels per edge (default {d.channels})")
    p.add_argument("--duty", type=float, default=d.duty, help=f"share of the time each channel talks (default {d.duty})")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"timeline length (default {d.seconds:.0f})")
    p.add_argument("--cut-at", type=float, default=d.cut_at, help=f"when edge 0's link is cut (default {d.cut_at:.0f} s)")
    p.add_argument("--cut-s", type=float, default=d.cut_s, help=f"how long it stays cut (default {d.cut_s:.0f} s)")
    p.add_argument("--snr", type=float, nargs=2, default=d.snr, metavar=("LOW", "HIGH"), help="SNR range, dB")
    p.add_argument("--flood", type=int, default=d.flood, help=f"messages replayed at central afterwards (default {d.flood})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--recognition", type=int, default=0, help="recognition worker processes; the edges then recognise "
                   "nothing (default 0: the edges recognise)")  # fmt: skip
    a = p.parse_args(argv)
    if a.cut_at + a.cut_s >= a.seconds:
        p.error("the cut must end before the timeline does (--cut-at + --cut-s < --seconds)")
    if a.recognition and a.flood:
        p.error("--recognition needs --flood 0: the workers would recognise the replayed utterances too")
    opts = Options(a.edges, a.channels, a.duty, a.seconds, a.cut_at, a.cut_s, a.seed, snr=tuple(a.snr), flood=a.flood,
                   recognition=a.recognition)
    print("\n".join(report(asyncio.run(run(opts)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
