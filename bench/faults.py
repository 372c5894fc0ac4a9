"""What survives a fault, counted end to end: the real service through kill -9, a broker outage, a full disk and flooding.

    bench/faults.py [kill] [broker] [disk] [flood] [rtp] [--commit REV]   (no fault named: all five, ~15 minutes)

Each fault runs `jingbao run` as its own process with a private mosquitto and N `pipe` channels, fed by the pieces of
bench/load.py and bench/loadgen.py: the 30 spoken calls (27 incidents, 3 routine) through radio_degrade.py, one call a
transmission (each gives one utterance), written into each channel's FIFO one 20 ms frame when it is due. What the
service did is read back at the end from its database (utterances, transcripts, incidents, the outbox, the escalation
watches), `jingbao archive verify` and what a persistent-session QoS 1 subscriber to `jingbao/#` received. Each
utterance belongs to the transmission it overlaps (loadgen.assign), so per fault:

    in          transmissions the service accepted: on the air while it was reading its FIFO and closed (carrier
                down + CLOSE_S, the segmenter's hang-over and the archive write) before any kill
    archived    of those, with an archive row whose file verifies
    recognised  of those, with a stored transcript
    dispatched  of the incident calls among them, named by an incident record (alerted, or queued as 待确认)

- kill:   SIGKILL twice mid-run, restarted at once; what was on the air from CLOSE_S before the kill until the restarted
          service reads its FIFO again is the window (lost or not, counted apart). Escalation timers (ack_timeout_s
          shortened to 20 s so some fall due while the service is dead) must resume: no watch left overdue at the end.
- broker: mosquitto stopped (SIGTERM, its persistence kept) for 30 s mid-run; every outbox message made meanwhile must
          reach the subscriber afterwards, and every one of the run.
- disk:   data_dir on a 40 MB tmpfs (reserve 8 MB), filled to the last byte twice; /healthz must answer 503 naming the
          fault while it is full and 200 once freed; the second fill lasts past the clean stop, so what is held goes
          to storage.spill_dir and is archived at the next start.
- flood:  32 channels keying up within a second and talking half the time: no audio skipped, the backlog shows as
          recognition lag and clears.
- rtp:    the channels are RTP ports fed as a gateway feeds them (L16, a packet per 20 ms); for 30 s a second sender
          floods every port with 1000 packets a second of loud noise (one in ten malformed): all refused, nothing
          skipped, no utterance made of it.
Results: docs/performance.md "Faults".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import load, loadgen  # noqa: E402
from bench.loadgen import Clip, Feed, Message, Transmission  # noqa: E402
from bench.machine import describe  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402
from tests.support.broker import Mosquitto, free_port  # noqa: E402
from tests.support.disk import fill  # noqa: E402

CLOSE_S = 2.5  # carrier down -> utterance archived: the segmenter's ~1.2 s hang-over, the encode and fsync, room spare
DISK_MB, RESERVE_MB = 40, 8
ACK_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Fault:
    name: str
    channels: int
    duty: float
    seconds: float
    burst: bool = False
    rtp: bool = False  # channels are RTP ports (fed by RtpFeed), not FIFOs
    # The flooding sender's address: another one than the gateway's (127.0.0.1) by default. From the gateway's own
    # address its stream is "a new stream of the latched sender" (docs/performance.md "Faults" says what that does).
    flood_from: str = "127.0.0.2"


FAULTS = {
    "kill": Fault("kill", 8, 0.3, 150),
    "broker": Fault("broker", 8, 0.3, 110),
    "disk": Fault("disk", 8, 0.3, 120),
    "flood": Fault("flood", 32, 0.5, 80, burst=True),
    "rtp": Fault("rtp", 8, 0.3, 90, rtp=True),
}
RTP_FLOOD_PPS = 1000  # per channel, from a second sender: 20 times the gateway's own 50 packets a second
RTP_PAYLOAD_TYPE = 96  # dynamic: L16 at 16 kHz as configured (static type 11 is L16 at 44.1 kHz)


@dataclass
class GappedFeed(Feed):
    """A feed that outlives its reader, as a radio goes on talking when the service dies: frames written while
    nobody reads the FIFO are dropped (never accepted), the FIFO is opened again each frame until the service reads
    it again, and `gaps[ch]` keeps when the channel was unread (wall-clock [from, to], to None while it lasts)."""

    paths: list[Path] = field(default_factory=list)
    gaps: list[list[list[float | None]]] = field(default_factory=list)

    def _write(self, ch: int, data: bytes) -> bytes:
        if self.fifos[ch] < 0:
            try:
                self.fifos[ch] = os.open(self.paths[ch], os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return b""  # ENXIO: no reader yet
            self.gaps[ch][-1][1] = time.time()
        return super()._write(ch, data)

    def _reader_lost(self, ch: int, error: OSError) -> bytes:
        os.close(self.fifos[ch])  # the pipe's buffer, read by nobody, goes with it
        self.fifos[ch] = -1
        self.gaps[ch].append([time.time(), None])
        return b""


@dataclass
class RtpFeed(GappedFeed):
    """The timelines sent as a radio-over-IP gateway sends them: RTP, L16 at 16 kHz, one packet per 20 ms frame, to
    each channel's UDP port (`fifos` holds the ports). A UDP sender never sees its receiver go: no gaps."""

    sent: list[int] = field(default_factory=list)
    _socket: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    def _write(self, ch: int, data: bytes) -> bytes:
        if not self.sent:
            self.sent = [0] * len(self.fifos)
        n = self.sent[ch]
        self.sent[ch] += 1
        header = struct.pack("!BBHII", 0x80, RTP_PAYLOAD_TYPE, n & 0xFFFF, n * loadgen.FRAME & 0xFFFFFFFF, 0x4A420 + ch)
        self._socket.sendto(header + np.frombuffer(data, "<i2").astype(">i2").tobytes(), ("127.0.0.1", self.fifos[ch]))
        return b""


class RtpFlood:
    """A second sender on every channel (from `address`, another socket: another port and SSRC), `pps` packets a
    second each of loud noise, one in ten malformed (RTP version 1): the receiver must refuse it all without missing
    a frame of the stream it latched onto."""

    def __init__(self, ports: list[int], pps: int, address: str) -> None:
        self.ports, self.pps, self.address = ports, pps, address
        self.sent = 0
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-flood", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def end(self) -> None:
        self.stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        noise = (np.random.default_rng(7).standard_normal(loadgen.FRAME) * 8000).astype(">i2").tobytes()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((self.address, 0))
            t0, tick = time.monotonic(), 0
            while not self.stop.is_set():
                for _ in range(self.pps // 100):
                    version = 1 if self.sent % 10 == 9 else 2
                    for ch, port in enumerate(self.ports):
                        header = struct.pack("!BBHII", version << 6, RTP_PAYLOAD_TYPE, self.sent & 0xFFFF,
                                             self.sent * loadgen.FRAME & 0xFFFFFFFF, 0xBAD00 + ch)  # fmt: skip
                        sock.sendto(header + noise, ("127.0.0.1", port))
                    self.sent += 1
                tick += 1
                time.sleep(max(0.0, t0 + tick / 100 - time.monotonic()))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rig:
    """One fault run: the broker, the channels' FIFOs and their feed, the subscriber, the /healthz and /api/channels
    poller, and the service, which can be killed, stopped and started again on the same data."""

    def __init__(self, fault: Fault, tmp: Path, code: Path, plan: list[list[Transmission]]) -> None:
        self.fault, self.tmp, self.code, self.plan = fault, tmp, code, plan
        self.broker = Mosquitto(tmp / "mosquitto")
        self.data = tmp / "data"
        self.spill = tmp / "spill"
        self.fifos = [tmp / f"ch{i}.pcm" for i in range(fault.channels)]
        self.web = f"http://127.0.0.1:{free_port()}"
        self.env = os.environ | {"PYTHONPATH": str(code)}
        self.py = [sys.executable, "-m", "bridge.cli"]
        self.messages: list[Message] = []
        self.polls: list[load.Poll] = []
        gaps: list[list[list[float | None]]] = [[] for _ in self.fifos]
        self.feed = (RtpFeed(plan, [free_udp_port() for _ in self.fifos], gaps=gaps) if fault.rtp
                     else GappedFeed(plan, [], paths=self.fifos, gaps=gaps))  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stopped_at = 0.0  # the last clean stop
        self.marks: dict[str, float] = {}  # what the fault did when (wall-clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: threading.Thread | None = None
        self.config = self._configure()

    @property
    def options(self) -> load.Options:
        return load.Options(self.fault.channels, self.fault.duty, self.fault.seconds, self.fault.burst, code=self.code)

    def _configure(self) -> Path:
        for fifo in [] if self.fault.rtp else self.fifos:
            os.mkfifo(fifo)
        path = load.service_config(self.options, self.tmp, self.fifos, [], self.broker.port, int(self.web.rsplit(":", 1)[1]))
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if self.fault.name == "disk":
            config["storage"] |= {"spill_dir": str(self.spill), "reserve_mb": RESERVE_MB}
        if self.fault.rtp:
            for channel, port in zip(config["channels"], self.feed.fifos, strict=True):
                channel["source"] = {"type": "rtp", "port": port, "codec": "l16", "rate": loadgen.SAMPLE_RATE}
        config["broker"]["client_id"] = "jingbao-faults"
        config["dispatch"]["alerts"]["ack_timeout_s"] = ACK_TIMEOUT_S
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        return path

    @property
    def log(self) -> Path:
        return self.tmp / f"service-{self.starts}.log"

    async def start_service(self) -> None:
        self.starts += 1
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([*self.py, "run", "--config", str(self.config)], cwd=self.code, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        await load._until_running(self.proc, self.web, self.fault.channels, self.log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    async def stop(self) -> None:
        """A clean stop (SIGTERM): what is being said is closed and archived (or spilled)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        self.stopped_at = time.time()
        try:
            await asyncio.to_thread(self.proc.wait, 90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        await asyncio.sleep(1)  # what it published last reaches the subscriber

    async def begin(self) -> None:
        """Broker, subscriber, service, then the feed: the timeline's t = 0 is now."""
        self.broker.start()
        ready = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._listen(ready)))
        await asyncio.wait_for(ready.wait(), 10)
        await self.start_service()
        password = load.add_operator(self.py, self.config, self.code, self.env)
        token = (await load._http(self.web + "/api/login", {"name": "bench", "password": password}))["token"]
        self._tasks.append(asyncio.create_task(load._poll(self.web, token, self.polls)))  # sessions outlive restarts
        if not self.fault.rtp:
            self.feed.fifos = [await load._open_fifo(f) for f in self.fifos]
        self._writer = threading.Thread(target=self.feed.run, name="feed", daemon=True)
        self._writer.start()
        while not self.feed.t0_wall:
            await asyncio.sleep(0.01)

    async def at(self, t: float) -> None:
        """Until `t` seconds into the timeline."""
        await asyncio.sleep(max(0.0, self.feed.t0_wall + t - time.time()))

    def mark(self, what: str) -> None:
        self.marks[what] = time.time()
        print(f"  {time.time() - self.feed.t0_wall:6.1f} s  {what}", flush=True)

    async def drain(self, limit_s: float = 150) -> str:
        """After the timeline: until recognition is idle and no message names a new utterance for 5 s."""
        await self.at(self.fault.seconds)
        assert self.proc is not None
        return await load._drain(load.Options(**(self.options.__dict__ | {"drain_s": limit_s})), self.proc,
                                 self.messages, self.polls, self.feed)  # fmt: skip

    async def end(self) -> None:
        """Everything stopped (again: each part only once)."""
        await self.stop()
        self.feed.stop.set()
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join, 5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ch, fd in enumerate(self.feed.fifos):
            if fd >= 0 and not self.fault.rtp:
                os.close(fd)
                self.feed.fifos[ch] = -1
        self.broker.stop()

    async def _listen(self, ready: asyncio.Event) -> None:
        """A phone's way of listening: a persistent session (clean_session off) and QoS 1, so what is published while
        it is cut off (the broker down) is queued for it and delivered when it is back."""
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port, identifier="bench-faults",
                                          clean_session=False) as client:  # fmt: skip
                    await client.subscribe("jingbao/#", qos=1)
                    ready.set()
                    async for m in client.messages:
                        self.messages.append(load.stamp(m))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data / 'jingbao.db'}?mode=ro", uri=True)

    def verify(self) -> dict[str, Any]:
        done = subprocess.run([*self.py, "archive", "verify", "--json", "--config", str(self.config)], cwd=self.code,
                              env=self.env, capture_output=True, text=True)  # fmt: skip
        return json.loads(done.stdout)

    def service_logs(self) -> str:
        return "".join((self.tmp / f"service-{i}.log").read_text(errors="replace") for i in range(1, self.starts + 1))


# --- counting --------------------------------------------------------------------------------------------------


@dataclass
class Count:
    fault: str
    fed: int = 0  # transmissions put on the air
    accepted: int = 0
    archived: int = 0
    recognised: int = 0
    incident_calls: int = 0
    dispatched: int = 0
    window: int = 0  # transmissions in a kill's window
    window_archived: int = 0
    stray: int = 0  # utterances overlapping no transmission (noise taken for speech)
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # accepted calls short of a stage: "clip@channel: stage"

    @property
    def matches(self) -> bool:
        return self.accepted == self.archived == self.recognised and self.dispatched == self.incident_calls


def count(rig: Rig, windows: list[tuple[float, float]] | None = None,
          only: Callable[[Transmission], bool] = lambda _: True) -> Count:  # fmt: skip
    """The transmissions fed (those `only` takes) and what became of each; `windows` (wall-clock) are the spans in
    which what was said is not expected to survive (a kill until the service reads again)."""
    feed = rig.feed
    with contextlib.closing(rig.db()) as db:
        utterances = load.read_utterances(rig.data / "jingbao.db")
        transcribed = {r[0] for r in db.execute("SELECT utterance_id FROM transcripts")}
        named = {u for (ids,) in db.execute("SELECT utterance_ids FROM incidents") for u in json.loads(ids)}
    report = rig.verify()
    bad = {p.get("id") for p in report.get("problems", [])}
    archived = {u.id for u in utterances} - bad
    owner, stray = loadgen.assign(utterances, rig.plan, feed.wall)
    by_call: dict[tuple[int, int], list[str]] = {}
    for uid, key in owner.items():
        by_call.setdefault(key, []).append(uid)
    reasons = Counter(u.end_reason for u in utterances)
    split = sum(len(uids) > 1 for uids in by_call.values())
    c = Count(rig.fault.name, stray=len(stray), notes=[
        f"{len(utterances)} utterances (end reason " + ", ".join(f"{k} {n}" for k, n in sorted(reasons.items()))
        + f"), {split} transmission(s) cut into more than one", "outbox of the whole run: " + delivery(rig)])  # fmt: skip
    if not report.get("ok", False):
        c.notes.append("archive verify: " + ", ".join(sorted({p["kind"] for p in report.get("problems", [])})))
    if report.get("incomplete"):
        c.notes.append(f"{len(report['incomplete'])} incomplete write(s) left by a kill (never accepted)")
    for t in (t for tl in rig.plan for t in tl if t.key in feed.handed and only(t)):
        c.fed += 1
        if in_window(t, feed, windows or []):
            c.window += 1
            c.window_archived += any(u in archived for u in by_call.get(t.key, []))
            continue
        uids, name = by_call.get(t.key, []), f"{t.clip.name}@{t.channel}"
        c.accepted += 1
        stages = [("archived", any(u in archived for u in uids)), ("recognised", any(u in transcribed for u in uids))]
        if t.clip.is_incident:
            c.incident_calls += 1
            stages.append(("dispatched", any(u in named for u in uids)))
        c.archived += stages[0][1]
        c.recognised += stages[1][1]
        c.dispatched += len(stages) == 3 and stages[2][1]
        c.missing += [f"{name}: not {stage}" for stage, done in stages if not done]
    return c


def delivery(rig: Rig, made: Callable[[float], bool] = lambda _: True) -> str:
    """The outbox's messages made when `made` says (alerts to phones apart), how many were left undelivered and how
    many the subscriber received (its persistent session holds what is published while it is cut off)."""
    with contextlib.closing(rig.db()) as db:
        rows = [r for r in db.execute("SELECT topic, payload, created_at, delivered_at FROM outbox") if made(r[2])]
    got = {(m.topic, json.dumps(m.data, sort_keys=True)) for m in rig.messages}

    def received(rows: list[Any]) -> int:
        return sum((topic, json.dumps(json.loads(payload), sort_keys=True)) in got for topic, payload, *_ in rows)

    alerts = [r for r in rows if "/alerts/" in r[0]]
    # made as the service stopped (an escalation falling due after the stop's drain): kept, sent at the next start
    left = ", ".join(f"{r[0]} made {rig.stopped_at - r[2]:+.1f} s before the stop{' (received)' if received([r]) else ''}"
                     for r in rows if r[3] is None)  # fmt: skip
    return (f"{len(rows)} messages ({len(alerts)} alerts to phones), {sum(r[3] is None for r in rows)} undelivered at "
            f"the end{f' ({left})' if left else ''}, {received(rows)} received by the subscriber ({received(alerts)} "
            "alerts)")  # fmt: skip


def in_window(t: Transmission, feed: GappedFeed, windows: list[tuple[float, float]]) -> bool:
    """Whether `t` was not wholly accepted: on the air (until its utterance closed, CLOSE_S after the carrier
    dropped) during one of `windows` or while nobody read its channel's FIFO."""
    start, closed = feed.wall(t.start), feed.wall(t.end) + CLOSE_S
    unread = [(a, b if b is not None else float("inf")) for a, b in feed.gaps[t.channel]]
    return any(start < b and a < closed for a, b in [*windows, *unread])


def kill_windows(rig: Rig) -> list[tuple[float, float]]:
    """Each kill until the restarted service was running: an utterance that had not closed by the kill (its
    transmission's end + CLOSE_S) was in the dead process's memory."""
    kills = sorted(v for k, v in rig.marks.items() if k.startswith("kill"))
    ups = sorted(v for k, v in rig.marks.items() if k.startswith("running again"))
    return list(zip(kills, ups, strict=True))


# --- the faults ------------------------------------------------------------------------------------------------


async def kill_run(rig: Rig) -> Count:
    await rig.begin()
    for n, t in enumerate((45.0, 95.0), 1):
        await rig.at(t)
        rig.kill()
        rig.mark(f"kill {n}")
        await asyncio.sleep(2.0)  # a supervisor's restart delay
        await rig.start_service()
        rig.mark(f"running again {n}")
    ended = await rig.drain()
    await asyncio.sleep(ACK_TIMEOUT_S)  # one more timer round for the watches armed last
    await rig.stop()
    stopped = time.time()
    c = count(rig, kill_windows(rig))
    with contextlib.closing(rig.db()) as db:
        timeline = [json.loads(d) for (d,) in db.execute("SELECT detail FROM incident_timeline WHERE kind = 'escalated'")]
        overdue = db.execute("SELECT count(*) FROM alert_watches WHERE due_at IS NOT NULL AND due_at < ?",
                             (stopped - 5,)).fetchone()[0]  # fmt: skip
    resumed = [line.split("escalation resumed for ", 1)[1].strip() for line in rig.service_logs().splitlines()
               if "escalation resumed for" in line]  # fmt: skip
    late = [d["overdue_s"] for d in timeline if d.get("overdue_s")]
    c.notes.append(f"{len(timeline)} escalations, {len(late)} of them overdue at a restart (up to "
                   f"{max(late, default=0):.0f} s late); restarts resumed: {'; '.join(resumed) or 'none'}; "
                   f"watches left overdue at the end: {overdue}")  # fmt: skip
    return note_end(c, ended)


async def broker_run(rig: Rig, outage_s: float = 30.0) -> Count:
    await rig.begin()
    await rig.at(40.0)
    rig.broker.stop()
    rig.mark("broker stopped")
    await asyncio.sleep(outage_s)
    rig.broker.start()
    rig.mark("broker started")
    ended = await rig.drain()
    await rig.stop()
    c = count(rig)
    down, up = rig.marks["broker stopped"], rig.marks["broker started"]
    c.notes.append(f"made during the {outage_s:.0f} s outage: " + delivery(rig, lambda made: down <= made <= up))
    return note_end(c, ended)


async def disk_run(rig: Rig) -> Count:
    rig.data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(rig.data)], check=True)
    try:
        return await _disk_run(rig)
    finally:
        subprocess.run(["umount", "-l", str(rig.data)], check=False)


async def _disk_run(rig: Rig) -> Count:
    await rig.begin()
    await rig.at(30.0)
    filler = fill(rig.data)
    rig.mark("disk full")
    await rig.at(70.0)
    filler.unlink()
    rig.mark("disk freed")
    await rig.at(90.0)
    filler = fill(rig.data)
    rig.mark("disk full again")
    ended = await rig.drain()
    health = healthz_story(rig)
    await rig.stop()
    rig.mark("stopped, disk still full")
    spilled = sorted(p.stem for p in rig.spill.glob("*.wav")) if rig.spill.is_dir() else []
    filler.unlink()
    await rig.start_service()
    rig.mark("started again, disk freed")
    await asyncio.sleep(10)  # the spilled utterances archived, their recognition done
    await rig.stop()
    with contextlib.closing(rig.db()) as db:
        back = db.execute(f"SELECT count(*) FROM utterances WHERE id IN ({','.join('?' * len(spilled))})",
                          spilled).fetchone()[0]  # fmt: skip
    c = count(rig)
    full = [(rig.marks["disk full"], rig.marks["disk freed"]), (rig.marks["disk full again"], float("inf"))]
    held = count(rig, only=lambda t: any(a <= rig.feed.wall(t.end) + CLOSE_S <= b for a, b in full))
    c.notes += [
        health,
        f"transmissions ending while the disk was full: {held.accepted}, archived {held.archived}, recognised "
        f"{held.recognised}, incident calls dispatched {held.dispatched} of {held.incident_calls}; spilled at the "
        f"stop: {len(spilled)}, archived at the next start: {back}",
    ]
    return note_end(c, ended)


def healthz_story(rig: Rig) -> str:
    """What /healthz said during each full-disk span and how soon it said 200 after the disk was freed."""
    full, freed = rig.marks["disk full"], rig.marks["disk freed"]
    during = [p for p in rig.polls if full < p.at < freed]
    kinds = sorted({f.get("kind", "?") for p in during for f in p.health.get("failing") or [] if isinstance(f, dict)})
    first_bad = next((p.at - full for p in during if not p.health.get("ok", True)), None)
    ok_again = next((p.at - freed for p in rig.polls if p.at > freed and p.health.get("ok")), None)
    return (
        f"/healthz while full: 503 from {load.fmt(first_bad)} after the fill, naming {', '.join(kinds) or 'nothing'}"
        f"; 200 again {load.fmt(ok_again)} after the space was freed"
    )


async def flood_run(rig: Rig) -> Count:
    await rig.begin()
    ended = await rig.drain(limit_s=240)
    pressure = under_pressure(rig)
    await rig.stop()
    return note_end(count(rig), ended, pressure)


async def rtp_run(rig: Rig) -> Count:
    await rig.begin()
    await rig.at(30.0)
    flood = RtpFlood(rig.feed.fifos, RTP_FLOOD_PPS, rig.fault.flood_from)
    flood.start()
    rig.mark(f"RTP flood on from {flood.address}, {RTP_FLOOD_PPS} packets/s a channel")
    try:
        await rig.at(60.0)
    finally:
        flood.end()
    rig.mark(f"RTP flood off, {flood.sent * len(rig.feed.fifos)} packets sent")
    ended = await rig.drain()
    pressure = under_pressure(rig)
    refused: dict[str, int] = {}
    for channel in rig.polls[-1].channels if rig.polls else []:
        for reason, n in (channel.get("rejected_by") or {}).items():
            refused[reason] = refused.get(reason, 0) + n
    await rig.stop()
    received = sum(refused.values())
    flood_note = (f"flood: {flood.sent * len(rig.feed.fifos)} packets sent, {received} refused ("
                  + ", ".join(f"{k} {n}" for k, n in sorted(refused.items())) + ")")  # fmt: skip
    return note_end(count(rig), ended, pressure, flood_note)


def under_pressure(rig: Rig) -> str:
    """What the load cost while the service still runs: skipped audio, lag, the recognition backlog and when it
    cleared (bench/load.py's figures over this run's polls)."""
    assert rig.proc is not None
    outcome = load.Outcome(rig.options, rig.plan, rig.feed, rig.messages, rig.polls,
                           load.read_utterances(rig.data / "jingbao.db"), 0.0, 1.0, load.peak_rss_mb(rig.proc.pid),
                           os.getloadavg()[0], "")  # fmt: skip
    f = load.figures(outcome)
    burst = f"; {f.burst['caught_up']}" if f.burst else ""
    return (f"skipped audio {load.fmt(f.skipped_s)}, behind max {load.fmt(f.behind_s)}, loop lag max "
            f"{load.fmt(f.loop_lag_s)}; recognition pending max {f.pending_max}, undecoded audio max "
            f"{f.waiting_audio_max_s:.1f} s, refused (recognised later from the archive) {f.rejected}{burst}; "
            f"peak RSS {f.peak_rss_mb:.0f} MB")  # fmt: skip


def note_end(c: Count, ended: str, *notes: str) -> Count:
    c.notes += notes
    if ended:
        c.notes.append(f"NOTE: {ended}")
    return c


RUNS: dict[str, Callable[[Rig], Awaitable[Count]]] = {"kill": kill_run, "broker": broker_run, "disk": disk_run,
                                                      "flood": flood_run, "rtp": rtp_run}  # fmt: skip


async def run(fault: Fault, calls: list[Clip], code: Path, keep: Path | None) -> Count:
    plan = loadgen.plan(fault.channels, fault.duty, fault.seconds, calls, calls, burst=fault.burst)
    with tempfile.TemporaryDirectory(prefix=f"jingbao-faults-{fault.name}-") as tmp_name:
        rig = Rig(fault, Path(tmp_name), code, plan)
        try:
            return await RUNS[fault.name](rig)
        finally:
            await rig.end()
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{fault.name}-service.log").write_text(rig.service_logs(), encoding="utf-8")
                for db in rig.data.glob("jingbao.db*"):  # gone with the disk fault's tmpfs
                    shutil.copy(db, keep / f"{fault.name}-{db.name}")


def table(counts: list[Count]) -> str:
    lines = ["| fault | transmissions | in (accepted) | archived | recognised | incident calls | dispatched | "
             "in a kill's window: archived | stray utterances |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in counts:
        window = f"{c.window_archived} of {c.window}" if c.window else "-"
        lines.append(
            f"| {c.fault} | {c.fed} | {c.accepted} | {c.archived} | {c.recognised} | {c.incident_calls} | "
            f"{c.dispatched} | {window} | {c.stray} |"
        )
    for c in counts:
        lines.append(f"- {c.fault}: {'in = archived = recognised, every incident call dispatched' if c.matches else 'MISMATCH'}"
                     + "".join(f"\n  - {n}" for n in [*c.notes, *c.missing]))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("faults", nargs="*", metavar="FAULT", help=f"any of {', '.join(FAULTS)} (default: all)")
    p.add_argument("--commit", help="run the service from this commit (git archive) instead of the working tree")
    p.add_argument("--keep-logs", type=Path, help="write each run's service log and database into this folder")
    p.add_argument(
        "--rtp-flood-from",
        default=FAULTS["rtp"].flood_from,
        metavar="ADDRESS",
        help="the RTP flood's source address (default %(default)s; 127.0.0.1 is the gateway's own)",
    )
    args = p.parse_args(argv)
    if unknown := set(args.faults) - set(FAULTS):
        p.error(f"no such fault: {', '.join(sorted(unknown))}")
    names = args.faults or list(FAULTS)
    FAULTS["rtp"] = replace(FAULTS["rtp"], flood_from=args.rtp_flood_from)
    if os.geteuid() != 0 and "disk" in names:
        if args.faults:
            p.error("the disk fault mounts a tmpfs: run as root, or leave it out")
        names.remove("disk")
        print("disk: left out (mounting its tmpfs needs root)")
    code, code_line = load.code_dir(args.commit)
    print(f"machine: {describe()}")
    print(f"code: {code_line}", flush=True)
    calls, _ = loadgen.load_material(shared_dir(), load.CACHE, (12.0, 20.0), 0)
    counts = []
    for name in names:
        print(f"{name}: {FAULTS[name]}", flush=True)
        counts.append(asyncio.run(run(FAULTS[name], calls, code, args.keep_logs)))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(table(counts))
    return 0 if all(c.matches for c in counts) else 1


if __name__ == "__main__":
    sys.exit(main())
