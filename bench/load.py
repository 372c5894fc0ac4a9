"""Latency and capacity of the whole service under load: N radio channels talking, a real broker, `jingbao run`.

    bench/load.py --channels N --duty D [--burst] [--cor] [--seconds S] [--search]

Each channel replays the 30 spoken calls (../shared/audio/calls, labels in ../shared/demo/calls.tsv; --set SET.tsv:
a labelled set's sample in the 8 Kokoro voices instead, calls nobody tuned on) and the 53 real
recordings (../shared/audio) in turn, each through ../shared/tools/radio_degrade.py (click, 0.3 s squelch tail, pink
noise at an SNR drawn from 12-20 dB; copies cached in var/bench-cache/load), separated by faint hiss so that the channel
talks D of the time, first key-ups staggered over a mean cycle (--burst: all within one second, an incident call each).
The bench writes each channel into a FIFO (`pipe` source) one 20 ms frame when it is due, so it knows when each call's
last speech sample reached the service: the end of speech is the clean recording's last loud 10 ms (voice band, within
25 dB of its loudest, as the segmenter tests measure it), placed after the click. --cor adds a CM108 COR line per
channel (a pty posing as its hidraw device, as tests/hardware do) raised at key-up and dropped after the squelch tail.

The service runs as its own process (`python -m bridge.cli run`), a private mosquitto beside it
(tests/support/broker.py). A subscriber to `jingbao/#` stamps every message on arrival; each message names the
utterances it is about (an alert's `utterance_id`, an incident's `utterance_ids`), and each utterance (from the service's
archive database after the run) is the call on its channel whose transmission it overlaps most in time. Latency of a
call = its first message minus its end of speech (negative: alerted while the speaker was still talking); its first
alert to a phone is reported beside it. Reports do not merge into one incident unless --merge (the same recordings
play on every channel). /api/channels and /healthz are polled every second for skipped audio, loop lag and the
recognition backlog; CPU and peak RSS of the service come from /proc/<pid>.

--incidents-per-minute R: about R incident calls a minute over all channels (each transmission one with the chance
that gives), the others routine, as a station's traffic is, instead of calls and recordings in turn (about half
incidents: more than the channels' airtime can announce).

--announce: the dispatcher speaks its announcements (dispatch/speech.py, the Kokoro voice) on the channels: the first
six channels are the jurisdiction's (ch-command, ch-market, ...: where responders listen), each with a file
transmit path (real time). Reported: incident -> key-up (the incident's first message on the broker to the service's
"keyed for announce" log line; a call goes out with the provisional alert, the final revises it), the report's end of
speech -> key-up, announcement queued -> key-up (wait for a clear channel, render the first phrase), the call free
to go -> key-up (from the latest of: queued, the end of speech of every transmission played on its channel before
its key-up, the channel's earlier call unkeyed: what is left is the busy-channel hold-off and the rendering; a call
keyed while a transmission's speech played on its channel is counted apart), and per channel the airtime, what
was dropped and the audio muted. Every phrase the service renders ahead is rendered into the bench cache before it
starts (the service once prepared); --cold-voice starts it with none, to see what rendering ahead costs the
channels while they talk (a first start).

--search: 60 s runs, N doubling from 1 then bisected, until the largest N whose p95 stays under --target with no audio
skipped, every FIFO read in time and no utterance refused by recognition. --commit REV runs the service from that
commit (exported by git archive) instead of the working tree, which others may be editing. Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tty
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import loadgen  # noqa: E402
from bench.loadgen import Clip, Feed, Message, Transmission, Utterance, percentile  # noqa: E402
from bench.machine import describe  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402
from tests.support.broker import Mosquitto, free_port  # noqa: E402

CACHE = REPO / "var" / "bench-cache" / "load"
SHERPA = "sherpa-onnx-kws-zipformer-wenetspeech-3.3M-2024-01-01-mobile"
KEEPING_UP_WAIT_S = 3.0  # recognition keeps up: nothing pending, no undecoded audio older (asr.admit_lag_s default)


@dataclass
class Options:
    channels: int
    duty: float
    seconds: float
    burst: bool = False
    cor: bool = False
    merge: bool = False
    archive_format: str | None = None
    code: Path = REPO
    seed: int = 0
    drain_s: float = 60.0
    announce: bool = False
    profile: Path | None = None  # py-spy's raw samples of the service over the timeline go here
    cold_voice: bool = False  # --announce: the service starts with nothing rendered and renders ahead meanwhile
    speeds: list[float] | None = None  # asr.alternative_speeds (None: the service's default)
    incidents_per_minute: float | None = None  # None: calls and recordings in turn (about half the transmissions)
    sentence_end_ms: int | None = None  # each channel's vad.sentence_end_ms (None: the service's default)


@dataclass
class Poll:
    at: float
    health: dict[str, Any]
    channels: list[dict[str, Any]]


@dataclass
class Outcome:
    """One run's raw observations."""

    options: Options
    plan: list[list[Transmission]]
    feed: Feed
    messages: list[Message]
    polls: list[Poll]
    utterances: list[Utterance]
    cpu_s: float
    window_s: float
    peak_rss_mb: float
    load_after: float
    service_log: str  # the service's whole log
    ended: str = ""
    announced: list[Keyed] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    voice: str = ""  # --announce: the voice the service said it speaks with


@dataclass(frozen=True)
class Incident:
    """An incident as the service stored it by the end of the run."""

    id: str
    type: str
    place: str  # place id, "" when at no known place
    status: str
    utterance_ids: frozenset[str]


@dataclass
class Keyed:
    """One announcement, from the service's log: when it was queued and when its channel was keyed for it."""

    channel: str
    incident: str
    queued: float  # wall clock
    ready: float | None = None  # rendered (its first phrase), and any earlier announcement on its channel over
    keyed: float | None = None  # ... and the channel clear: the busy-channel hold-off
    behind: bool = False  # queued while its channel was on the air with an earlier announcement
    unkeyed_before: float | None = None  # the end of the channel's last announcement transmission before this key-up


# --- the run ---------------------------------------------------------------------------------------------------


async def run_load(opts: Options, calls: list[Clip], real: list[Clip]) -> Outcome:
    plan = loadgen.plan(opts.channels, opts.duty, opts.seconds, calls, real, burst=opts.burst, seed=opts.seed,
                        incidents_per_minute=opts.incidents_per_minute)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="jingbao-load-") as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "mosquitto")
        broker.start()
        ptys: list[tuple[int, int]] = []
        try:
            fifos = []
            for i in range(opts.channels):
                os.mkfifo(tmp / f"ch{i}.pcm")
                fifos.append(tmp / f"ch{i}.pcm")
            if opts.cor:
                for _ in range(opts.channels):
                    master, slave = os.openpty()
                    tty.setraw(slave)
                    ptys.append((master, slave))
            web_port = free_port()
            config = service_config(opts, tmp, fifos, [os.ttyname(s) for _, s in ptys], broker.port, web_port)
            if opts.announce and not opts.cold_voice:  # the service keeps its renderings in its data folder: there,
                (tmp / "data").mkdir(exist_ok=True)  # as once it has rendered ahead
                (tmp / "data" / "voice-cache").symlink_to(await asyncio.to_thread(rendered_ahead, opts))
            env = os.environ | {"PYTHONPATH": str(opts.code)}
            py = [sys.executable, "-m", "bridge.cli"]
            password = add_operator(py, config, opts.code, env)
            return await _observe(opts, plan, tmp, fifos, [m for m, _ in ptys], broker, web_port, password,
                                  [*py, "run", "--config", str(config)], env)  # fmt: skip
        finally:
            broker.stop()
            for fd in (fd for pair in ptys for fd in pair):
                with contextlib.suppress(OSError):
                    os.close(fd)


def add_operator(py: list[str], config: Path, code: Path, env: dict[str, str]) -> str:
    """The console login `bench` (operator) in the service's database; returns its password."""
    password = secrets.token_urlsafe(12)
    subprocess.run([*py, "user", "add", "bench", "--role", "operator", "--password-stdin", "--config", str(config)],
                   input=password + "\n", text=True, cwd=code, env=env, check=True, capture_output=True)  # fmt: skip
    return password


def rendered_ahead(opts: Options) -> Path:
    """The phrases the service renders ahead (fixed_phrases, then place_phrases: ~880, ~40 min on two cores the first
    time), rendered before it starts and kept in the bench cache: the service as it runs once it has prepared them."""
    from asr.models import TTS, locate
    from dispatch.announce import fixed_phrases, place_phrases
    from dispatch.gazetteer import load_jurisdiction
    from dispatch.speech import KokoroVoice, Speaker

    keep = CACHE / "voice-cache"
    model = locate(TTS)
    if model.path is None:
        raise SystemExit(model.message())
    speaker = Speaker(KokoroVoice(model.path), keep=keep)
    jurisdiction = load_jurisdiction(opts.code / "config" / "jurisdiction.yaml")
    for phrase in [*fixed_phrases(jurisdiction, channel_ids(opts)), *place_phrases(jurisdiction)]:
        speaker.submit(phrase).result()
    speaker.close()
    return keep


def channel_ids(opts: Options) -> list[str]:
    """Channel i's id: load-NN; with --announce the jurisdiction's channels (where responders listen) come first."""
    jurisdiction = yaml.safe_load((opts.code / "config" / "jurisdiction.yaml").read_text(encoding="utf-8"))
    spoken = [c["id"] for c in jurisdiction["channels"]] if opts.announce else []
    return [spoken[i] if i < len(spoken) else f"load-{i:02d}" for i in range(opts.channels)]


def service_config(opts: Options, tmp: Path, fifos: list[Path], cor_devices: list[str], broker_port: int,
                   web_port: int) -> Path:  # fmt: skip
    alerts: dict[str, Any] = {"announce": opts.announce}  # without --announce: no transmit paths, nothing to say
    if opts.announce:  # the bench's own Kokoro model: code exported by --commit has no ../shared beside it, and the
        from asr.models import TTS, locate  # service would otherwise speak with espeak-ng (and render in no time)

        alerts["announce_model"] = str(locate(TTS).path)
    if not opts.merge:
        alerts["merge_window_s"] = 0  # every report its own incident, as distinct incidents across a city would be
    channels = []
    for i, (cid, fifo) in enumerate(zip(channel_ids(opts), fifos, strict=True)):
        channel: dict[str, Any] = {"id": cid, "name": f"负载{i:02d}", "source": {"type": "pipe", "path": str(fifo)}}
        if not cid.startswith("load-"):  # a channel responders listen on: announcements are played to a file
            channel["tx"] = {"output": {"type": "file", "directory": str(tmp / "tx" / cid)}}
        if cor_devices:
            channel["line"] = {"type": "cm108", "device": cor_devices[i], "ptt_gpio": None, "cor": "vol_down",
                               "squelch_tail_ms": round(loadgen.SQUELCH_TAIL_S * 1000)}  # fmt: skip
        if opts.sentence_end_ms is not None:
            channel["vad"] = {"sentence_end_ms": opts.sentence_end_ms}
        channels.append(channel)
    storage: dict[str, Any] = {"data_dir": str(tmp / "data")}
    if opts.archive_format:
        storage["audio_format"] = opts.archive_format
    config = {
        "jurisdiction": str(opts.code / "config" / "jurisdiction.yaml"),
        "storage": storage,
        "broker": {"enabled": True, "port": broker_port, "client_id": "jingbao-load"},
        "web": {"host": "127.0.0.1", "port": web_port},
        "asr": {"engine": "sherpa", "sherpa_model": str(shared_dir() / "models" / SHERPA),
                **({} if opts.speeds is None else {"alternative_speeds": opts.speeds})},
        "dispatch": {"alerts": alerts},
        "channels": channels,
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


async def _observe(opts: Options, plan: list[list[Transmission]], tmp: Path, fifos: list[Path], cor: list[int],
                   broker: Mosquitto, web_port: int, password: str, command: list[str], env: dict[str, str]
                   ) -> Outcome:  # fmt: skip
    messages: list[Message] = []
    ready = asyncio.Event()
    listener = asyncio.create_task(_listen(broker, messages, ready))
    await asyncio.wait_for(ready.wait(), 10)
    log_path = tmp / "service.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=opts.code, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{web_port}"
    polls: list[Poll] = []
    feed = Feed(plan, [], cor or None)
    try:
        await _until_running(proc, base, opts.channels, log_path)
        token = (await _http(base + "/api/login", {"name": "bench", "password": password}))["token"]
        feed.fifos = [await _open_fifo(f) for f in fifos]
        cpu0, t0 = proc_cpu_s(proc.pid), time.monotonic()
        writer = threading.Thread(target=feed.run, name="feed", daemon=True)
        writer.start()
        poller = asyncio.create_task(_poll(base, token, polls))
        spy = start_profile(proc.pid, opts.profile) if opts.profile else None
        await asyncio.sleep(opts.seconds)
        if spy is not None:
            await asyncio.to_thread(stop_profile, spy)
        ended = await _drain(opts, proc, messages, polls, feed)
        cpu1, window = proc_cpu_s(proc.pid), time.monotonic() - t0
        rss = peak_rss_mb(proc.pid)
        feed.stop.set()
        await asyncio.to_thread(writer.join, 5)
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    finally:
        feed.stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fd in feed.fifos:
            os.close(fd)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    log_text = log_path.read_text(errors="replace")
    utterances = read_utterances(tmp / "data" / "jingbao.db", channel_ids(opts))
    voice = re.search(r"announcements: voice (\S+)", log_text)
    return Outcome(opts, plan, feed, messages, polls, utterances, cpu1 - cpu0, window, rss, os.getloadavg()[0],
                   log_text, ended, announcements_in(log_text), read_incidents(tmp / "data" / "jingbao.db"),
                   voice[1] if voice else "none")  # fmt: skip


# --- where the CPU goes (--profile) ----------------------------------------------------------------------------------

# The stage a sample belongs to: the first of these found in its stack, from the innermost frame out.
STAGES = (
    ("recognition: sherpa-onnx (recogniser + keyword spotter)", ("sherpa_engine.py",)),
    ("recognition: pinyin -> characters", ("asr/hanzi.py",)),
    ("recognition: hand-over, partials, store", ("asr/",)),
    ("dispatch (classify, locate, alerts, SQLite)", ("dispatch/",)),
    ("segmentation (webrtcvad, gates)", ("segmenter.py",)),
    ("archive (encode, fsync, hash chain)", ("archive.py",)),
    ("sources (pipe, frames, resampling)", ("bridge/sources/",)),
    ("channel loop, events, level meters", ("bridge/channel.py", "bridge/bus.py")),
    ("web: HTTP, WebSockets", ("bridge/web/", "uvicorn", "starlette", "fastapi")),
    ("MQTT", ("aiomqtt", "paho")),
    ("asyncio itself", ("asyncio/",)),
)


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the service (all its threads, 50 Hz, without pausing it) until stop_profile."""
    spy = Path(sys.executable).parent / "py-spy"
    command = [str(spy), "record", "--pid", str(pid), "--rate", "50", "--format", "raw", "--threads", "--nonblocking",
               "--output", str(out)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_profile(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled on SIGINT
    _, err = spy.communicate(timeout=60)
    if spy.returncode not in (0, -signal.SIGINT):
        print(f"py-spy: {err.decode(errors='replace')[-500:]}", file=sys.stderr)


def profile_lines(raw: Path, cpu_s: float) -> list[str]:
    """py-spy's raw samples (collapsed stacks, innermost frame last) as the share of the service's busy samples per
    stage, with the CPU seconds that share is of the run's, and the hottest innermost frames of the project's code."""
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        stage = next((name for frame in reversed(frames) for name, marks in STAGES if any(m in frame for m in marks)),
                     "other")  # fmt: skip
        stages[stage] += int(count)
        ours = next((f for f in reversed(frames) if any(p in f for p in ("bridge/", "asr/", "dispatch/", "hardware/"))), None)
        if ours:
            leaves[ours] += int(count)
    total = sum(stages.values()) or 1
    lines = [f"where the CPU goes (py-spy, {total} busy samples at 50 Hz; CPU s by share of the run's {cpu_s:.0f}):"]
    lines += [f"  {100 * n / total:5.1f} %  {cpu_s * n / total:6.1f} s  {name}" for name, n in stages.most_common()]
    lines.append("  hottest frames of the project's code (innermost):")
    lines += [f"  {100 * n / total:5.1f} %  {frame}" for frame, n in leaves.most_common(12)]
    return lines


_LOGGED = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ +"
_QUEUED = re.compile(_LOGGED + r"hardware\.announcements: channel (\S+): announcement for (\S+) queued", re.M)
_READY = re.compile(_LOGGED + r"hardware\.announcements: channel (\S+): announcement for (\S+) ready", re.M)
_KEYED = re.compile(_LOGGED + r"hardware\.transmit: channel (\S+): keyed for announce (\S+)", re.M)
_UNKEYED = re.compile(_LOGGED + r"hardware\.transmit: channel (\S+): unkeyed after", re.M)


def announcements_in(log: str) -> list[Keyed]:
    """Each announcement the service queued, with the key-up that first carried it (its log's times, wall clock)."""

    def wall(stamp: str) -> float:
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the service logs local time

    said = {(m[2], m[3]): Keyed(m[2], m[3], wall(m[1])) for m in reversed(list(_QUEUED.finditer(log)))}
    for pattern, attribute in ((_READY, "ready"), (_KEYED, "keyed")):
        for m in pattern.finditer(log):
            for incident in m[3].split("+"):
                keyed = said.get((m[2], incident))
                if keyed is not None and getattr(keyed, attribute) is None:
                    setattr(keyed, attribute, wall(m[1]))
    on_air: dict[str, list[list[float]]] = {}  # channel -> [keyed, unkeyed] of each announcement transmission
    for m in sorted([*_KEYED.finditer(log), *_UNKEYED.finditer(log)], key=lambda m: m.start()):
        spans = on_air.setdefault(m[2], [])
        if m.re is _KEYED:
            spans.append([wall(m[1]), float("inf")])
        elif spans and spans[-1][1] == float("inf"):
            spans[-1][1] = wall(m[1])
    for k in said.values():
        k.behind = any(start <= k.queued < end for start, end in on_air.get(k.channel, []))
        if k.keyed is not None:
            k.unkeyed_before = max((end for _, end in on_air.get(k.channel, []) if end <= k.keyed), default=None)
    return sorted(said.values(), key=lambda k: k.queued)


async def _listen(broker: Mosquitto, messages: list[Message], ready: asyncio.Event) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-load") as client:
        await client.subscribe("jingbao/#", qos=1)
        ready.set()
        async for m in client.messages:
            messages.append(stamp(m))


def stamp(m: aiomqtt.Message) -> Message:
    """A message as it arrives: now, its topic, its payload parsed as JSON (or its text)."""
    raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
    try:
        data = json.loads(raw)
    except ValueError:
        data = raw.decode(errors="replace")
    return Message(time.time(), str(m.topic), data)


async def _until_running(proc: subprocess.Popen[bytes], base: str, n: int, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError, ValueError):
            if (await _http(base + "/healthz")).get("running") == n:
                return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the service did not run its {n} channels within {timeout:.0f} s")


async def _open_fifo(path: Path, timeout: float = 30) -> int:
    """The FIFO's write end, once the service holds it open for reading (non-blocking: a full FIFO never stalls the
    other channels)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _http(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    """The JSON answer; /healthz answers 503 with its JSON while a fault is active, which is an answer here too."""
    def call() -> Any:
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        data = json.dumps(body).encode() if body is not None else None
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code != 503:
                raise
            return json.loads(e.read())

    return await asyncio.to_thread(call)


async def _poll(base: str, token: str, polls: list[Poll], every: float = 1.0) -> None:
    while True:
        with contextlib.suppress(OSError, ValueError):
            health, channels = await asyncio.gather(_http(base + "/healthz"), _http(base + "/api/channels", token=token))
            polls.append(Poll(time.time(), health, channels))
        await asyncio.sleep(every)


async def _drain(opts: Options, proc: subprocess.Popen[bytes], messages: list[Message], polls: list[Poll],
                 feed: Feed) -> str:  # fmt: skip
    """After the last transmission: until recognition has nothing left and no message has named a new utterance for
    5 s (escalations of unanswered alerts go on meanwhile), at most `drain_s`, so the last calls' messages are
    counted. Returns why the run ended early, if it did."""
    deadline = time.monotonic() + opts.drain_s
    named, changed = 0, time.monotonic()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"the service exited ({proc.returncode})"
        if feed.broken:
            return feed.broken
        if (now_named := len(loadgen.first_mentions(messages))) != named:
            named, changed = now_named, time.monotonic()
        asr = (polls[-1].channels[0].get("asr") or {}) if polls and polls[-1].channels else {}
        idle = polls and polls[-1].at > time.time() - 2 and not asr.get("pending_total") and not asr.get("open")
        if idle and time.monotonic() - changed > 5:
            return ""
        await asyncio.sleep(0.5)
    return f"still busy {opts.drain_s:.0f} s after the last transmission"


def proc_cpu_s(pid: int) -> float:
    """User + system CPU of the process and of the children it has waited for (an encoder it ran), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def read_utterances(database: Path, ids: list[str] | None = None) -> list[Utterance]:
    """The archived utterances, each with its channel's index (`ids`: the channels' ids in order; default load-NN)."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT id, channel, start_ms, end_ms, end_reason FROM utterances").fetchall()
    index = {cid: i for i, cid in enumerate(ids)} if ids else None
    return [Utterance(uid, index[ch] if index else int(ch.split("-")[1]), start / 1000, end / 1000, reason)
            for uid, ch, start, end, reason in rows]  # fmt: skip


def read_incidents(database: Path) -> list[Incident]:
    """The incidents the dispatcher stored (retracted and dismissed ones left out: they are no longer the call's)."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT id, type, place_id, status, utterance_ids FROM incidents").fetchall()
    return [Incident(id_, type_, place or "", status, frozenset(json.loads(ids))) for id_, type_, place, status, ids in rows
            if status not in ("retracted", "dismissed")]


# --- figures ---------------------------------------------------------------------------------------------------


def numbers_under(obj: Any, key_part: str, inside: bool = False) -> list[float]:
    """Every number in `obj` whose key (or an enclosing key) contains `key_part`: fields other engineers add may be
    a number or a small dict of them."""
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [float(obj)] if inside else []
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in numbers_under(v, key_part, inside or key_part in str(k))]
    if isinstance(obj, list):
        return [x for v in obj for x in numbers_under(v, key_part, inside)]
    return []


@dataclass
class Figures:
    latencies: list[float]  # incident calls with a message, seconds
    early: int
    incident_calls: int
    silent: list[str]  # incident calls with no message
    routine_alerted: list[str]
    routine_total: int
    first_kinds: Counter[str]  # what the incident calls' first messages were
    skipped_s: float | None
    behind_s: float | None
    loop_lag_s: float | None
    loop_stalls: int | None
    faults: Counter[str]  # active faults seen on /healthz ('failing'), by kind: polls they were seen in
    pending_max: int
    waiting_audio_max_s: float
    rejected: int
    heard_once: int  # utterances heard without the alternative hearings (recognition was behind)
    heard_again: int  # ... of them, heard again with them after their final
    failed: int
    cpu_per_channel_min: float
    peak_rss_mb: float
    alert_latencies: list[float] = field(default_factory=list)  # incident calls that reached a phone: first alert
    routine_phoned: int = 0  # routine transmissions whose incident alerted a phone

    @property
    def phoned_early(self) -> int:
        """Incident calls whose first alert reached a phone before the speaker stopped (a 待确认 entry is no alert)."""
        return sum(latency < 0 for latency in self.alert_latencies)
    # incident calls whose utterances became an incident at all / one at the labelled place / one of the labelled type
    # (a type guessed for the operator's confirmation counts, as in bench/dispatch_voices.py)
    became_incident: int = 0
    right_place: int = 0
    named_place: int = 0  # incident calls that name a place
    right_type: int = 0
    burst: dict[str, Any] = field(default_factory=dict)

    @property
    def p95(self) -> float:
        return percentile(self.latencies, 95)

    def passes(self, target_s: float) -> bool:
        return bool(self.latencies) and self.p95 < target_s and not self.skipped_s and self.rejected == 0


def message_kind(m: Message) -> str:
    """'event needs_confirmation (from partials)', 'alert to a phone', ...: what reached the broker first."""
    data = m.data if isinstance(m.data, dict) else {}
    if "/alerts/" in m.topic:
        what = f"{data.get('kind', 'alert')} to a phone"
    elif m.topic.endswith("/events"):
        what = f"event {data.get('reason') or data.get('type')}"
    else:
        what = "incident state"
    return what + (" (from partials)" if loadgen.is_provisional(m) else "")


def figures(o: Outcome) -> Figures:
    feed = o.feed
    owner, _stray = loadgen.assign(o.utterances, o.plan, feed.wall)
    first = loadgen.first_message_per_call(owner, loadgen.first_mentions(o.messages))
    phoned = loadgen.first_message_per_call(owner, loadgen.first_mentions(loadgen.first_wave_alerts(o.messages)))
    latencies, alert_latencies, silent, routine_alerted, first_kinds, early = [], [], [], [], Counter[str](), 0
    routine_phoned = 0
    understood = Counter[str]()
    for t in (t for tl in o.plan for t in tl):
        if t.key not in feed.handed:
            continue  # never fed (the run ended early)
        message = first.get(t.key)
        if t.clip.is_incident:
            understood.update(call_understood(t, owner, o.incidents))
        if not t.clip.is_incident:
            if message is not None:
                routine_alerted.append(f"{t.clip.name}@{t.channel}")
                routine_phoned += t.key in phoned
            continue
        if message is None:
            silent.append(f"{t.clip.name}@{t.channel}")
            continue
        latencies.append(message.at - feed.handed[t.key])
        if t.key in phoned:
            alert_latencies.append(phoned[t.key].at - feed.handed[t.key])
        early += latencies[-1] < 0
        first_kinds[message_kind(message)] += 1
    chans = [c for p in o.polls for c in p.channels]
    per_channel_skip: dict[str, float] = {}
    for c in chans:
        for x in numbers_under(c, "skipped_s"):
            per_channel_skip[c["id"]] = max(per_channel_skip.get(c["id"], 0.0), x)
    behind = [x for c in chans for x in numbers_under(c, "behind_s")]
    lag = [x for p in o.polls for x in numbers_under(p.health, "loop_lag")]
    stalls = [x for p in o.polls for x in numbers_under(p.health, "loop_stalls")]
    faults = Counter(f.get("kind", "?") for p in o.polls for f in p.health.get("failing") or [] if isinstance(f, dict))
    asr = [c.get("asr") or {} for c in chans]
    fed = [t for tl in o.plan for t in tl if t.key in feed.handed]
    result = Figures(
        latencies=latencies, early=early, incident_calls=sum(t.clip.is_incident for t in fed), silent=silent,
        routine_alerted=routine_alerted, routine_total=sum(not t.clip.is_incident for t in fed),
        first_kinds=first_kinds, alert_latencies=alert_latencies, routine_phoned=routine_phoned,
        became_incident=understood["became"], right_place=understood["place"], named_place=understood["named"],
        right_type=understood["type"],
        skipped_s=sum(per_channel_skip.values()) if per_channel_skip else None,
        behind_s=max(behind) if behind else None,
        loop_lag_s=max(lag) if lag else None,
        loop_stalls=int(max(stalls)) if stalls else None, faults=faults,
        pending_max=max((a.get("pending_total") or 0 for a in asr), default=0),
        waiting_audio_max_s=max((a.get("waiting_audio_s") or 0.0 for a in asr), default=0.0),
        rejected=max((a.get("rejected") or 0 for a in asr), default=0),
        heard_once=max((a.get("heard_once") or 0 for a in asr), default=0),
        heard_again=max((a.get("heard_again") or 0 for a in asr), default=0),
        failed=max((a.get("failed") or 0 for a in asr), default=0),
        cpu_per_channel_min=o.cpu_s / o.options.channels / (o.window_s / 60),
        peak_rss_mb=o.peak_rss_mb,
    )  # fmt: skip
    if o.options.burst:
        result.burst = burst_figures(o, first)
    return result


def call_understood(t: Transmission, owner: dict[str, tuple[int, int]], incidents: list[Incident]) -> Counter[str]:
    """What became of one incident call: "became" (an incident names one of its utterances), "named" (it names a
    place), "place" (such an incident is at that place), "type" (... of the call's type)."""
    said = {uid for uid, key in owner.items() if key == t.key}
    its = [i for i in incidents if i.utterance_ids & said]
    named = bool(t.clip.place)
    return Counter(became=bool(its), named=named, place=named and any(i.place == t.clip.place for i in its),
                   type=any(i.type == t.clip.incident for i in its))


def burst_figures(o: Outcome, first: dict[tuple[int, int], Message]) -> dict[str, Any]:
    """The burst is every channel's first transmission: its calls' latencies, the recognition backlog it built, and
    how long after its last speech end recognition kept up again (nothing pending in the archive, no undecoded
    audio waiting 3 s or more: the service's own test for admitting an utterance)."""
    feed, opening = o.feed, [tl[0] for tl in o.plan if tl and tl[0].key in o.feed.handed]
    if not opening:
        return {}
    ended = max(feed.handed[t.key] for t in opening)
    lat = [first[t.key].at - feed.handed[t.key] for t in opening if t.key in first]
    during = [(p.at, (p.channels[0].get("asr") or {}) if p.channels else {}) for p in o.polls
              if p.at >= feed.wall(min(t.start for t in opening))]  # fmt: skip
    busy = [(at, (a.get("pending_total") or 0) > 0 or (a.get("oldest_wait_s") or 0) >= KEEPING_UP_WAIT_S)
            for at, a in during]  # fmt: skip
    last_busy = max((at for at, b in busy if b), default=None)
    clear = next((at for at, b in busy if last_busy is not None and at > last_busy and not b), None)
    return {"calls": len(opening), "answered": len(lat), "p50": percentile(lat, 50), "max": max(lat, default=float("nan")),
            "last_answer_s": max((first[t.key].at for t in opening if t.key in first), default=ended) - ended,
            "pending_peak": max((a.get("pending_total") or 0 for _, a in during), default=0),
            "waiting_peak_s": max((a.get("waiting_audio_s") or 0.0 for _, a in during), default=0.0),
            "caught_up": "no backlog built" if last_busy is None else (
                "still behind at the end of the run" if clear is None
                else f"caught up {clear - ended:.1f} s after the burst's last speech ended")}  # fmt: skip


def dump(o: Outcome, path: Path) -> None:
    """One JSON line per transmission fed (what was played, when its speech ended, its utterances, first message and
    first alert), then the stray utterances, the polls of /healthz and /api/channels, and every MQTT message."""
    owner, stray = loadgen.assign(o.utterances, o.plan, o.feed.wall)
    first_by_uid = loadgen.first_mentions(o.messages)
    first = loadgen.first_message_per_call(owner, first_by_uid)
    phoned = loadgen.first_message_per_call(owner, loadgen.first_mentions(loadgen.first_wave_alerts(o.messages)))
    with path.open("w", encoding="utf-8") as out:
        for t in (t for tl in o.plan for t in tl if t.key in o.feed.handed):
            m = first.get(t.key)
            row = {"channel": t.channel, "clip": t.clip.name, "incident": t.clip.incident,
                   "key_up": o.feed.wall(t.start), "speech_end": o.feed.handed[t.key], "carrier_down": o.feed.wall(t.end),
                   "utterances": [[u.id, u.start, u.end, u.end_reason] for u in o.utterances if owner.get(u.id) == t.key],
                   "first": None if m is None else {"at": m.at, "topic": m.topic, "provisional": loadgen.is_provisional(m),
                                                    "reason": m.data.get("reason") if isinstance(m.data, dict) else None},
                   "first_alert": phoned[t.key].at - o.feed.handed[t.key] if t.key in phoned else None,
                   "latency": None if m is None else m.at - o.feed.handed[t.key]}  # fmt: skip
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        for u in stray:
            out.write(json.dumps({"stray_utterance": [u.id, u.channel, u.start, u.end, u.end_reason]}) + "\n")
        for p in o.polls:
            asr = (p.channels[0].get("asr") or {}) if p.channels else {}
            out.write(json.dumps({"poll": p.at, "asr": asr, "health": p.health}) + "\n")
        for message in o.messages:
            out.write(json.dumps({"message": [message.at, message.topic, message.data]}, ensure_ascii=False) + "\n")


def fmt(x: float | None, unit: str = " s", digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def report(o: Outcome, f: Figures) -> str:
    opts = o.options
    fed = [t for tl in o.plan for t in tl if t.key in o.feed.handed]
    kinds = Counter("incident call" if t.clip.is_incident else ("routine call" if t.clip.incident else "real recording")
                    for t in fed)  # fmt: skip
    reasons = Counter(u.end_reason for u in o.utterances)
    to_phones = Counter(m.data.get("kind", "alert") + (f" ({m.data['change']})" if m.data.get("change") else "")
                        for m in o.messages if "/alerts/" in m.topic and isinstance(m.data, dict))  # fmt: skip
    lines = [
        f"load: {opts.channels} channels, duty {opts.duty:.2f} (as played {loadgen.talk_share(o.plan, opts.seconds):.2f}), "
        f"{opts.seconds:.0f} s{' + burst' if opts.burst else ', staggered'}{', COR lines' if opts.cor else ', VAD'}"
        f"{', reports merge' if opts.merge else ''}"
        f"{f', pauses at {opts.sentence_end_ms} ms' if opts.sentence_end_ms is not None else ''}; {len(fed)} transmissions ("
        + ", ".join(f"{n} {k}s" for k, n in sorted(kinds.items())) + f"); load average after {o.load_after:.1f}",
        f"end of speech -> first message, {len(f.latencies)} incident calls: p50 {fmt(percentile(f.latencies, 50))}, "
        f"p95 {fmt(f.p95)}, max {fmt(max(f.latencies, default=None))}",
        f"first message before the speaker stopped: {f.early} of {len(f.latencies)} "
        f"({100 * f.early / max(1, len(f.latencies)):.0f} %); phones alerted before: {f.phoned_early} of "
        f"{f.incident_calls} ({100 * f.phoned_early / max(1, f.incident_calls):.0f} %); first messages: "
        + ", ".join(f"{n} {k}" for k, n in f.first_kinds.most_common()),
        f"incident calls with no message: {len(f.silent)} of {f.incident_calls}"
        + (f" ({', '.join(f.silent)})" if f.silent else ""),
        f"incident calls understood: {f.became_incident} of {f.incident_calls} became an incident, "
        f"{f.right_place} of {f.named_place} at the right place ({100 * f.right_place / max(1, f.named_place):.0f} %), "
        f"{f.right_type} of {f.incident_calls} of the right type ({100 * f.right_type / max(1, f.incident_calls):.0f} %)",
        f"end of speech -> first alert to a phone (escalations left out), {len(f.alert_latencies)} incident calls: p50 "
        f"{fmt(percentile(f.alert_latencies, 50))}, p95 {fmt(percentile(f.alert_latencies, 95))}",
        "messages to phones: " + (", ".join(f"{n} {k}" for k, n in sorted(to_phones.items())) or "none")
        + " (an update or retraction says what the final made of an alert)",
        f"routine transmissions with a message: {len(f.routine_alerted)} of {f.routine_total}, "
        f"{f.routine_phoned} alerting a phone" + (f" ({', '.join(f.routine_alerted[:6])})" if f.routine_alerted else ""),
        f"skipped audio: {fmt(f.skipped_s)}; behind max {fmt(f.behind_s)}; loop lag max {fmt(f.loop_lag_s)}, stalls "
        f"{'n/a' if f.loop_stalls is None else f.loop_stalls}; faults on /healthz: "
        + (", ".join(f"{k} x{n}" for k, n in f.faults.most_common()) or "none"),
        f"recognition backlog: pending max {f.pending_max}, undecoded audio max {f.waiting_audio_max_s:.1f} s, "
        f"rejected {f.rejected}, heard once (no CPU to spare for the alternative hearings) {f.heard_once}, "
        f"heard again after their final {f.heard_again}, failed {f.failed}",
        f"service CPU: {f.cpu_per_channel_min:.2f} s per channel per minute ({o.cpu_s:.0f} CPU s in {o.window_s:.0f} s, "
        f"its children included); peak RSS {f.peak_rss_mb:.0f} MB",
        f"utterances: {len(o.utterances)} (" + ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())) + f"); "
        f"bench: frames late by up to {1000 * o.feed.late_max_s:.0f} ms, service reading behind by up to "
        f"{o.feed.held_max_s:.2f} s; {len(o.messages)} MQTT messages",
    ]
    if f.burst:
        b = f.burst
        lines.append(f"burst: {b['calls']:.0f} calls keyed up within 1 s, {b['answered']:.0f} answered (latency p50 "
                     f"{fmt(b['p50'])}, max {fmt(b['max'])}; last answer {fmt(b['last_answer_s'])} after the burst's "
                     f"last speech end); recognition pending peak {b['pending_peak']:.0f}, undecoded audio peak "
                     f"{b['waiting_peak_s']:.1f} s, {b['caught_up']}")  # fmt: skip
    if opts.announce:
        lines += announcement_lines(o)
    if o.ended:
        lines.append(f"NOTE: {o.ended}")
    return "\n".join(lines)


def announcement_lines(o: Outcome) -> list[str]:
    """--announce: how soon announcements keyed their channel, and what they cost the channels (last /api/channels)."""
    created = {}
    for m in o.messages:
        incident = m.topic.rsplit("/", 1)[-1] if "/incidents/" in m.topic else None
        if incident is not None:
            created.setdefault(incident, m.at)
    keyed = [k for k in o.announced if k.keyed is not None and k.ready is not None]
    from_incident = [k.keyed - created[k.incident] for k in keyed if k.incident in created]
    owner, _ = loadgen.assign(o.utterances, o.plan, o.feed.wall)
    spoken_end = {i.id: min(ends) for i in o.incidents  # the end of speech of the incident's first report
                  if (ends := [o.feed.handed[owner[u]] for u in i.utterance_ids if owner.get(u) in o.feed.handed])}
    from_speech = [k.keyed - spoken_end[k.incident] for k in keyed if k.incident in spoken_end]
    from_queue = [k.keyed - k.queued for k in keyed]
    idle = [k.keyed - created[k.incident] for k in keyed if k.incident in created and not k.behind]
    to_ready = [k.ready - k.queued for k in keyed if k.ready is not None]
    from_free = [k.keyed - at for k in keyed if (at := channel_free(o, k)) is not None]
    over_a_caller = sum(keyed_over_a_caller(o, k) for k in keyed)
    hold_off = [k.keyed - k.ready for k in keyed if k.ready is not None]
    states = o.polls[-1].channels if o.polls else []
    spoken = [s for s in states if s.get("announcements")]
    ahead = next((p.health["announce_phrases"] for p in reversed(o.polls) if "announce_phrases" in p.health), None)
    dropped = Counter[str]()
    for s in spoken:
        dropped.update(s["announcements"]["dropped"])
    return [
        f"announcements (voice {o.voice}): {len(o.announced)} queued, {len(keyed)} keyed up; incident (first message) "
        f"-> key-up p50 {fmt(percentile(from_incident, 50))}, p95 {fmt(percentile(from_incident, 95))}, max "
        f"{fmt(max(from_incident, default=None))}; the report's end of speech -> key-up p50 "
        f"{fmt(percentile(from_speech, 50))}, p95 {fmt(percentile(from_speech, 95))}, max "
        f"{fmt(max(from_speech, default=None))} (n {len(from_speech)}); queued -> key-up p50 "
        f"{fmt(percentile(from_queue, 50))}, p95 "
        f"{fmt(percentile(from_queue, 95))}, max {fmt(max(from_queue, default=None))}; of which queued -> ready "
        f"(the channel clear of callers and earlier announcements, the first phrase rendered) p50 "
        f"{fmt(percentile(to_ready, 50))}, p95 {fmt(percentile(to_ready, 95))}, and ready -> key-up (a caller keyed up "
        f"meanwhile) p50 {fmt(percentile(hold_off, 50))}, p95 {fmt(percentile(hold_off, 95))}; incident -> key-up of the "
        f"{len(idle)} queued while their channel was "
        f"not on the air p50 {fmt(percentile(idle, 50))}, p95 {fmt(percentile(idle, 95))}; the call free to go (queued, "
        f"the caller's and any other speech on its channel over, any earlier call unkeyed) -> key-up, the busy-channel "
        f"hold-off and the rendering: p50 {fmt(percentile(from_free, 50))}, p95 {fmt(percentile(from_free, 95))}, max "
        f"{fmt(max(from_free, default=None))} (n {len(from_free)}), keyed while a transmission played on its channel "
        f"{over_a_caller}; phrases rendered ahead: "
        + ("n/a" if ahead is None else f"{ahead['ready']} of {ahead['total']}"),
        "announcement airtime per channel: " + ", ".join(
            f"{s['id']} {s['announcements']['airtime_s']:.0f} s ({s['announcements']['announced']} said, "
            f"{s['announcements']['merged']} merged), muted {s['muted_s']:.0f} s" for s in spoken)
        + "; dropped: " + (", ".join(f"{k} {n}" for k, n in dropped.most_common()) or "none"),
        f"calls revised by their final: {o.service_log.count('(it corrects what was said)')} corrected or withdrawn on "
        f"the air (更正), {o.service_log.count('withdrawn before it was said')} withdrawn before they were said",
    ]  # fmt: skip


def channel_free(o: Outcome, k: Keyed) -> float | None:
    """When announcement `k` could have gone out but for the hold-off: queued, every transmission the bench played
    on its channel before its key-up over (their end of speech), and the channel's earlier announcement unkeyed.
    None for a channel the bench did not play."""
    assert k.keyed is not None
    channel = played_on(o, k.channel)
    if channel is None:
        return None
    spoken = [o.feed.handed[t.key] for t in o.plan[channel] if t.key in o.feed.handed and o.feed.handed[t.key] <= k.keyed]
    return max([k.queued, *spoken, *([k.unkeyed_before] if k.unkeyed_before is not None else [])])


def keyed_over_a_caller(o: Outcome, k: Keyed) -> bool:
    """Whether announcement `k` keyed up while the bench was playing a transmission's speech on its channel (the
    hold-off should never let it: left out of `channel_free`, counted here)."""
    assert k.keyed is not None
    channel = played_on(o, k.channel)
    return channel is not None and any(
        o.feed.wall(t.start) < k.keyed < o.feed.handed[t.key] for t in o.plan[channel] if t.key in o.feed.handed)


def played_on(o: Outcome, channel_id: str) -> int | None:
    """The bench's index of a service channel (its timeline in the plan), None for one the bench did not play."""
    return {cid: i for i, cid in enumerate(channel_ids(o.options))}.get(channel_id)


# --- the command -----------------------------------------------------------------------------------------------


def code_dir(commit: str | None) -> tuple[Path, str]:
    """Where the service's code comes from: this checkout as it is (others may be editing it), or `commit` exported
    by git archive into the cache (a fixed baseline)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    if commit is None:
        changed = git("diff", "--name-only", "HEAD").split()
        dirty = f" + uncommitted changes to {', '.join(changed)}" if changed else ""
        return REPO, git("rev-parse", "--short", "HEAD") + dirty
    sha = git("rev-parse", "--short", commit)
    target = CACHE.parent / f"code-{sha}"
    if not (target / "bridge").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target, f"{sha} (exported to {target.relative_to(REPO)})"


def search(base: Options, calls: list[Clip], real: list[Clip], target_s: float, limit: int = 256) -> None:
    """Largest N whose p95 stays under `target_s` with nothing skipped: doubling from 1, then bisection."""
    def attempt(n: int) -> bool:
        o = asyncio.run(run_load(Options(**(base.__dict__ | {"channels": n})), calls, real))
        f = figures(o)
        ok = f.passes(target_s) and not o.ended and o.feed.held_max_s == 0  # the service kept reading its FIFOs
        print(f"  N={n}: p95 {fmt(f.p95)}, {len(f.latencies)} calls, skipped {fmt(f.skipped_s)}, pending max "
              f"{f.pending_max}, rejected {f.rejected}, load average after {o.load_after:.1f}{', ' + o.ended if o.ended else ''}"
              f" -> {'ok' if ok else 'no'}",
              flush=True)  # fmt: skip
        return ok

    good, bad, n = 0, None, 1
    while n <= limit and bad is None:
        if attempt(n):
            good, n = n, n * 2
        else:
            bad = n
    while bad is not None and bad - good > max(1, good // 8):
        mid = (good + bad) // 2
        if attempt(mid):
            good = mid
        else:
            bad = mid
    print(f"largest N with p95 < {target_s:g} s and nothing skipped: {good or 'none (N=1 misses it)'}"
          + (f" (N={bad} misses)" if bad else f" (searched up to {limit})"))


def set_calls(path: Path, per_type: int, voices: list[str] | None) -> list[loadgen.Labelled]:
    """A labelled set's stratified sample (bench/dispatch_voices.py's), each row rendered in each voice: the calls the
    channels play, named `<row id>/<voice>` (a turn set's call is one clip: its transmissions, the receiver silent
    between them)."""
    from bench.dispatch_voices import ROUTINE, Row, read_rows, stratified
    from bench.voices import KokoroVoices

    tts = KokoroVoices()
    rows = stratified(read_rows(path), per_type)
    print(f"calls: {path.name}, {per_type} per type: {len(rows)} rows x {len(voices or tts.voices)} voices", flush=True)

    def rendered(row: Row, voice: str) -> loadgen.Labelled:
        first, *more = (tts.render(said, voice) for said in row.text.split("\n"))  # a line per transmission
        return loadgen.Labelled(f"{row.id}/{voice}", first, "none" if row.kind == ROUTINE else row.type,
                                "" if row.place == "-" else row.place, tuple(more))  # fmt: skip

    return [rendered(row, voice) for row in rows for voice in voices or tts.voices]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=6, help="channels talking at once (default 6)")
    p.add_argument("--duty", type=float, default=0.2, help="share of the time each channel talks (default 0.2)")
    p.add_argument("--seconds", type=float, default=None, help="length of the timeline (default 120; 60 per --search run)")
    p.add_argument("--burst", action="store_true", help="every channel keys up within one second at the start")
    p.add_argument("--cor", action="store_true", help="a COR line per channel: utterances end on carrier drop")
    p.add_argument("--sentence-end-ms", type=int, help="each channel's vad.sentence_end_ms: the quiet that is a pause "
                   "(default: the service's)")  # fmt: skip
    p.add_argument("--search", action="store_true", help="find the largest N meeting --target (doubling, bisection)")
    p.add_argument("--target", type=float, default=1.0, help="p95 end of speech -> first message to meet (seconds)")
    p.add_argument("--merge", action="store_true", help="keep the service's merging of same-type reports (default: off)")
    p.add_argument("--incidents-per-minute", type=float, help="about this many incident calls a minute over all channels, "
                   "the other transmissions routine (default: calls and recordings in turn, about half incidents)")
    p.add_argument("--archive-format", choices=["opus", "flac", "wav"], help="archive format (default: the service's)")
    p.add_argument("--snr", type=float, nargs=2, default=(12.0, 20.0), metavar=("LOW", "HIGH"), help="SNR range, dB")
    p.add_argument("--commit", help="run the service from this commit (git archive) instead of the working tree")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speeds", type=float, nargs="*", help="asr.alternative_speeds (default: the service's; no value: "
                   "each utterance heard once)")
    p.add_argument("--announce", action="store_true", help="speak announcements on the jurisdiction's channels (tx to files)")
    p.add_argument("--cold-voice", action="store_true", help="--announce from an empty voice cache: the service renders "
                   "ahead while the channels talk (a first start)")  # fmt: skip
    p.add_argument("--set", type=Path, help="play this labelled set's calls (e.g. a blind set: figures only, never a "
                   "sentence), rendered in the Kokoro voices (bench/voices.py, cached), instead of the 30 spoken calls")
    p.add_argument("--per-type", type=int, default=2, help="--set: rows of each incident type, and routine lines (default 2)")
    p.add_argument("--voices", nargs="+", help="--set: Kokoro voices (default: all 8)")
    p.add_argument("--service-log", type=Path, help="write the service's whole log here")
    p.add_argument("--dump", type=Path, help="write one JSON line per transmission here (times, utterances, first message)")
    p.add_argument("--profile", type=Path, help="sample the service with py-spy over the timeline (raw stacks to this "
                   "file) and print where the CPU went, stage by stage")  # fmt: skip
    args = p.parse_args(argv)
    if not 0 < args.duty < 1:
        p.error("--duty must be between 0 and 1")
    code, code_line = code_dir(args.commit)
    print(f"machine: {describe()}")
    print(f"code: {code_line}", flush=True)
    labelled = set_calls(args.set, args.per_type, args.voices) if args.set else None
    calls, real = loadgen.load_material(shared_dir(), CACHE, tuple(args.snr), args.seed, labelled)
    seconds = args.seconds or (60.0 if args.search else 120.0)
    opts = Options(args.channels, args.duty, seconds, args.burst, args.cor, args.merge, args.archive_format, code, args.seed,
                   announce=args.announce, profile=args.profile, cold_voice=args.cold_voice, speeds=args.speeds,
                   incidents_per_minute=args.incidents_per_minute, sentence_end_ms=args.sentence_end_ms)  # fmt: skip
    if args.search:
        search(opts, calls, real, args.target)
        return 0
    outcome = asyncio.run(run_load(opts, calls, real))
    print(report(outcome, figures(outcome)))
    if args.profile:
        print("\n".join(profile_lines(args.profile, outcome.cpu_s)))
    if args.dump:
        dump(outcome, args.dump)
    if args.service_log:
        args.service_log.write_text(outcome.service_log, encoding="utf-8")
    if outcome.ended:
        print(outcome.service_log[-3000:], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
