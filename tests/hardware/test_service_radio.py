"""Radio hardware inside the running service (bridge.service.Service, config from YAML, broker off, no ASR): COR and
VOX drive segmentation, the transmit path plays announcements without archiving its own echo, patches relay between
channels without looping, PTT is released when `jingbao run` is stopped, and the sound-card sink really plays.

Received audio goes in through named pipes (the pipe source), as a receiver's audio would; the only stand-ins are
at the hardware edge: the simulated line, a pty posing as a CM108's hidraw device, a PulseAudio null sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from bridge.audio import FRAME_BYTES, SAMPLE_RATE, levels_dbfs
from bridge.cli import main as cli_main
from bridge.config import load_config
from bridge.db import connect
from bridge.service import Service
from bridge.web.metrics import ServiceCollector
from bridge.web.users import Role, UserStore
from dispatch.announce import Announcement
from tests.bridge.test_service import free_port
from tests.hardware.fakes import FakeHidraw
from tests.support.audio_check import envelope_match
from tests.support.pulse import PulseServer, pulse, pulse_server  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]
KEY, UNKEY = bytes.fromhex("0000040400"), bytes.fromhex("0000000400")
BYTES_PER_S = SAMPLE_RATE * 2
SPEECH = "aishellsample_BAC009S0150W0005.wav"  # 1.95 s of read Mandarin
OPERATOR_PASSWORD = "patch-me-please-1"


# --- audio ---------------------------------------------------------------------------------------------------


def speech_pcm(shared_audio: Path, name: str = SPEECH) -> bytes:
    with wave.open(str(shared_audio / name)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        return w.readframes(w.getnframes())


def noise(seconds: float, dbfs: float, seed: int) -> bytes:
    """White noise at an RMS of `dbfs`, a whole number of frames long (a receiver's hiss, a squelch tail)."""
    n = round(seconds * 50) * FRAME_BYTES // 2
    rms = 32768 * 10 ** (dbfs / 20)
    return np.clip(np.random.default_rng(seed).normal(0, rms, n), -32768, 32767).astype("<i2").tobytes()


def pad(pcm: bytes) -> bytes:
    return pcm + bytes(-len(pcm) % FRAME_BYTES)


def seconds(nbytes: int) -> float:
    return nbytes / BYTES_PER_S


def wav_pcm(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes())


# --- the service ---------------------------------------------------------------------------------------------


def pipe_channel(tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    fifo = tmp_path / f"{name}.fifo"
    os.mkfifo(fifo)
    return {"id": name, "name": name, "source": {"type": "pipe", "path": str(fifo)}, **extra}


def file_tx(tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    return {"output": {"type": "file", "directory": str(tmp_path / "tx" / name)}, "key_up_delay_ms": 200, "tail_ms": 200,
            **extra}


def write_config(tmp_path: Path, channels: list[dict[str, Any]], **extra: Any) -> Path:
    config = {
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / "data"), "audio_format": "wav"},
        "broker": {"enabled": False},
        "asr": {"engine": "none"},
        "dispatch": {"enabled": False},
        "web": {"port": free_port()},
        "channels": channels,
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def running(config_path: Path, serve_http: bool = False):
    service = Service(load_config(config_path))
    task = asyncio.create_task(service.run(serve_http=serve_http))
    try:
        await until(lambda: all(ch.state.running for ch in service.channels) and service.radios.lines, 10, task)
        await asyncio.sleep(0.2)  # the channels open their pipes
        yield service
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def http_ready(client: httpx.AsyncClient) -> None:
    """Wait for the HTTP server, which starts beside the channels (/healthz is 503 while a fault is active)."""
    for _ in range(100):
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/healthz")).status_code in (200, 503):
                return
        await asyncio.sleep(0.05)


async def until(condition: Callable[[], Any], timeout: float, task: asyncio.Task | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if task is not None and task.done():
            task.result()  # the service died: show why
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


class Feeder:
    """Writes raw PCM into a channel's FIFO at real-time pace, as a receiver's audio output would arrive."""

    def __init__(self, fifo: Path) -> None:
        self.fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # read-write: never waits for the reader

    async def play(self, pcm: bytes, at: Iterable[tuple[float, Callable[[float], None]]] = ()) -> float:
        """Play `pcm` from now; each (offset_s, action) in `at` runs when that point of the audio is reached, given
        the wall-clock time the audio there was heard. Returns the wall-clock time the audio started."""
        events = sorted(at, key=lambda e: e[0])
        t0 = time.time()
        frames = len(pcm) // FRAME_BYTES
        for i in range(frames):
            while events and events[0][0] <= i * 0.02 + 1e-9:
                offset, action = events.pop(0)
                action(t0 + offset)
            # a frame is written once it has been "heard" in full (a sound card delivers audio after the fact)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.time()))
            await self._write(pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES])
        for offset, action in events:
            action(t0 + offset)
        return t0

    async def _write(self, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(self.fd, data) :]
            except BlockingIOError:
                await asyncio.sleep(0.01)

    def close(self) -> None:
        os.close(self.fd)


async def when_keyed(line: Any, then: Callable[[], Awaitable[None]]) -> None:
    """Run `then` as soon as the line is keyed (a radio's receiver hearing our own transmission)."""
    async for event in line.events():
        if event.kind == "ptt" and event.state:
            await then()
            return


# --- COR and VOX drive segmentation --------------------------------------------------------------------------


@pytest.mark.parametrize("tail_heard", [True, False])
async def test_cor_decides_the_utterance_and_the_squelch_tail_is_trimmed(tmp_path, shared_audio, tail_heard):
    tail_ms = 160
    vad = {} if tail_heard else {"vad": {"squelch_tail_detect_ms": 0}}  # the tail heard ends it, or the carrier drop
    channel = pipe_channel(tmp_path, "cor", line={"type": "simulated", "squelch_tail_ms": tail_ms}, **vad)
    speech = pad(speech_pcm(shared_audio))
    parts = [
        noise(0.8, -50, 1),  # receiver hiss, squelch closed
        noise(0.2, -50, 2),  # carrier up: the remote keyed, not yet talking
        speech,
        noise(0.3, -50, 3),
        noise(tail_ms / 1000, -12, 4),  # the squelch-tail burst after the remote unkeyed
        noise(0.6, -50, 5),  # carrier down
    ]
    fed = b"".join(parts)
    t_up = seconds(len(parts[0]))
    t_down = seconds(len(fed) - len(parts[-1]))
    async with running(write_config(tmp_path, [channel])) as service:
        line = service.radios.lines["cor"]
        feeder = Feeder(tmp_path / "cor.fifo")
        t0 = await feeder.play(fed, at=[(t_up, lambda ts: line.set_carrier(True, ts)),
                                        (t_down, lambda ts: line.set_carrier(False, ts))])
        await until(lambda: service.archive.list(), 5)
        feeder.close()
    [utt] = service.archive.list()
    pcm = wav_pcm(service.config.storage.data_dir / utt.path)
    offset = fed.find(pcm[:FRAME_BYTES * 10])
    assert offset >= 0 and offset % FRAME_BYTES == 0, "the archive holds the received audio itself"
    start, end = seconds(offset), seconds(offset + len(pcm))
    # the utterance is what the carrier covered, to the frame: no pre-roll of hiss before it, no squelch tail after
    assert abs(start - t_up) <= 0.021, (start, t_up)
    assert abs(end - (t_down - tail_ms / 1000)) <= 0.021, (end, t_down)
    assert fed[offset : offset + len(pcm)] == pcm
    assert utt.end_reason == ("squelch" if tail_heard else "carrier")  # the same audio either way
    assert abs(utt.start_ms / 1000 - (t0 + t_up)) <= 0.06, "stamped with the wall-clock time the carrier came up"


async def test_vox_carrier_does_not_clip_the_first_syllable(tmp_path, shared_audio):
    speech = pad(speech_pcm(shared_audio))
    fed = noise(1.0, -60, 6) + speech + noise(1.5, -60, 7)
    wav_path = tmp_path / "in.wav"
    with wave.open(str(wav_path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes(fed)
    vox = {"type": "vox", "threshold_dbfs": -40, "attack_ms": 60, "hang_ms": 400, "squelch_tail_ms": 0}
    channel = {"id": "vox", "name": "vox", "source": {"type": "file", "paths": [str(wav_path)], "realtime": False},
               "line": vox}
    loud = [i for i in range(len(fed) // FRAME_BYTES) if levels_dbfs(fed[i * FRAME_BYTES : (i + 1) * FRAME_BYTES])[1] >= -40]
    service = Service(load_config(write_config(tmp_path, [channel])))
    await asyncio.wait_for(service.run(serve_http=False), 20)
    [utt] = service.archive.list()
    pcm = wav_pcm(service.config.storage.data_dir / utt.path)
    offset = fed.find(pcm[: FRAME_BYTES * 10])
    # the carrier is declared after 60 ms of signal but dated back: the utterance starts at the first loud frame
    assert offset == loud[0] * FRAME_BYTES, (offset // FRAME_BYTES, loud[0])
    assert offset + len(pcm) >= (loud[-1] + 1) * FRAME_BYTES, "and ends after the last one (the hang time)"


# --- the transmit path ---------------------------------------------------------------------------------------


async def test_announcement_is_transmitted_and_its_echo_is_not_archived(tmp_path, shared_audio):
    channel = pipe_channel(tmp_path, "tx", tx=file_tx(tmp_path, "tx", echo_guard_ms=600))
    speech = pad(speech_pcm(shared_audio))
    # What the radio's receiver hears, continuously: hiss; our announcement coming back (sound-card crosstalk)
    # from 0.3 s after it is queued (key-up delay 0.2 s, plus room for scheduling); hiss; then a guard calling.
    announce_at, echo_at = 0.5, 0.8
    call_at = echo_at + seconds(len(speech)) + 0.2 + 0.6 + 0.5  # after the tail, the echo guard and a pre-roll
    hiss = noise(10, -70, 8)
    fed = bytearray(hiss[: round(call_at * 50) * FRAME_BYTES])
    echo = round(echo_at * 50) * FRAME_BYTES
    fed[echo : echo + len(speech)] = speech
    fed += speech + hiss[: round(1.6 * 50) * FRAME_BYTES]
    announcement = Announcement(channel="tx", incident_id="inc-1", text="…", pcm=speech)  # its own audio: played as given
    async with running(write_config(tmp_path, [channel])) as service:
        line, transmitter = service.radios.lines["tx"], service.transmitters["tx"]
        feeder = Feeder(tmp_path / "tx.fifo")
        t0 = await feeder.play(bytes(fed), at=[(announce_at, lambda ts: service.announcements.put_nowait(announcement))])
        await until(lambda: service.archive.list(), 3)
        feeder.close()
        [state] = service.channel_states()
        metrics = {(s.name, s.labels.get("outcome")): s.value for m in ServiceCollector(service).collect() for s in m.samples}
    [key], [unkey] = ([t for t, what in line.log if what == kind] for kind in ("key", "unkey"))
    # what the channel did not hear while it transmitted: shown per channel and in /metrics
    assert unkey - key <= state["muted_s"] <= unkey - key + 0.6 + 0.1, "keyed time and the echo guard"
    assert metrics["jingbao_channel_muted_seconds_total", None] == state["muted_s"]
    assert state["announcements"]["announced"] == 1 and state["announcements"]["airtime_s"] > 2
    assert metrics["jingbao_announcements_total", "announced"] == 1
    assert 0.2 + seconds(len(speech)) + 0.2 <= unkey - key <= 0.2 + seconds(len(speech)) + 0.2 + 0.25, "key-up, audio, tail"
    assert transmitter.counts["sent"] == 1
    [written] = transmitter.sink.written
    assert wav_pcm(Path(written)) == speech, "the sink played the announcement, sample for sample"
    [utt] = service.archive.list()
    pcm = wav_pcm(service.config.storage.data_dir / utt.path)
    offset = fed.find(pcm[: FRAME_BYTES * 10])
    assert seconds(offset) > echo_at + seconds(len(speech)), "only the guard's call was archived, not our own echo"
    assert speech in pcm
    assert utt.start_ms / 1000 > t0 + call_at - 0.6
    assert service.channels[0].state.discarded == 0, "the echo did not even open an utterance"


# --- patching ------------------------------------------------------------------------------------------------


async def test_patch_set_over_http_relays_a_to_b_and_nothing_comes_back(tmp_path, shared_audio, capsys, monkeypatch):
    channels = [pipe_channel(tmp_path, name, tx=file_tx(tmp_path, name, key_up_delay_ms=100, tail_ms=100))
                for name in ("a", "b")]
    config_path = write_config(tmp_path, channels)
    config = load_config(config_path)
    UserStore(connect(config.storage.database)).add("op", Role.OPERATOR, OPERATOR_PASSWORD)
    speech = pad(speech_pcm(shared_audio))
    async with running(config_path, serve_http=True) as service:
        base = f"http://127.0.0.1:{config.web.port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            await http_ready(client)
            anonymous = await client.post("/api/patches", json={"a": "a", "b": "b"})
            token = (await client.post("/api/login", json={"name": "op", "password": OPERATOR_PASSWORD})).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            added = await client.post("/api/patches", json={"a": "a", "b": "b"}, headers=auth)
            again = await client.post("/api/patches", json={"a": "b", "b": "a"}, headers=auth)

            b_feeder = Feeder(tmp_path / "b.fifo")
            echoing = asyncio.create_task(when_keyed(service.radios.lines["b"], lambda: b_feeder.play(speech)))
            a_feeder = Feeder(tmp_path / "a.fifo")
            await a_feeder.play(noise(0.5, -70, 9) + speech + noise(1.6, -70, 10))
            await until(lambda: service.transmitters["b"].counts["sent"] == 1, 8)
            await echoing
            await asyncio.sleep(0.6 + 1.5)  # echo guard and a whole hang-over: time for anything to come back
            patches = (await client.get("/api/patches", headers=auth)).json()
        # `jingbao patch` against the same service: refused without a login, obeyed with an operator's
        capsys.readouterr()
        cli_anonymous = await asyncio.to_thread(cli_main, ["patch", "--url", base, "list"])
        refusal = capsys.readouterr().err
        monkeypatch.setenv("JINGBAO_PASSWORD", OPERATOR_PASSWORD)
        cli_remove = await asyncio.to_thread(cli_main, ["patch", "--url", base, "--user", "op", "remove", "b", "a"])
        a_feeder.close()
        b_feeder.close()
    assert anonymous.status_code == 401
    assert added.status_code == 201 and added.json()["origin"] == "api"
    assert again.status_code == 409
    [utt] = service.archive.list()
    assert utt.channel == "a", "B's echo of the relay was not received as an utterance"
    [relayed] = service.transmitters["b"].sink.written
    assert wav_pcm(Path(relayed)) == wav_pcm(config.storage.data_dir / utt.path), "B transmitted A's utterance"
    assert service.transmitters["a"].sink.written == [] and service.transmitters["a"].counts["sent"] == 0
    assert patches == [{"a": "a", "b": "b", "mode": "utterance", "origin": "api", "forwarded": {"a->b": 1},
                        "echo_dropped": 0, "active": False}]
    assert cli_anonymous == 1 and "--user" in refusal
    assert cli_remove == 0 and service.radios.patches.list() == []


# --- a radio that is missing at start-up ---------------------------------------------------------------------


async def test_a_line_that_cannot_open_is_a_fault_on_its_channel_and_the_others_run(tmp_path, shared_audio):
    unplugged = {"type": "cm108", "device": str(tmp_path / "hidraw-unplugged")}
    channels = [pipe_channel(tmp_path, "market", line=unplugged, tx=file_tx(tmp_path, "market")),
                pipe_channel(tmp_path, "police", line={"type": "simulated"}, tx=file_tx(tmp_path, "police"))]
    config_path = write_config(tmp_path, channels, patches=[{"a": "market", "b": "police"}])
    port = load_config(config_path).web.port
    async with running(config_path, serve_http=True) as service:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await http_ready(client)
            health = (await client.get("/healthz")).json()
        sent = await service.transmitters["police"].transmit(pad(speech_pcm(shared_audio))[:BYTES_PER_S // 2])
        market, police = (ch.state.to_dict() for ch in service.channels)
    assert health["running"] == 2 and health["faults"] == 2, health
    [fault] = market["faults"]
    assert "hidraw-unplugged does not exist" in fault["message"] and fault["active"]
    assert market["running"], "the channel still receives, without its line (its VAD decides)"
    [patch_fault] = police["faults"]
    assert patch_fault["message"].startswith("radio: patch market <-> police not set")
    assert sorted(service.radios.lines) == ["police"] and sorted(service.transmitters) == ["police"]
    assert sent.status == "sent", "the other channel's radio works"


async def test_a_radio_lost_while_running_is_a_fault_on_its_channel_until_it_is_back(tmp_path):
    # A CM108 fob with COR behind a udev-style link: closing its pty is pulling the USB plug; a new one, plugging it in.
    fake = FakeHidraw.create()
    device = tmp_path / "radio-fob"
    device.symlink_to(fake.path)
    fob = {"type": "cm108", "device": str(device), "cor": "vol_down"}
    channels = [pipe_channel(tmp_path, "market", line=fob)]
    async with running(write_config(tmp_path, channels)) as service:
        [market] = service.channels
        market.state.fault("source lost: earlier trouble")  # a source fault stays when the radio is back
        fake.close()
        device.unlink()
        await until(lambda: any(f.kind == "radio" and f.active for f in market.state.faults), 5)
        [radio] = [f for f in market.state.faults if f.kind == "radio"]
        assert radio.message.startswith("radio: ")
        fake = FakeHidraw.create()
        device.symlink_to(fake.path)
        await until(lambda: not radio.active, 10)
        assert [f.kind for f in market.state.faults if f.active] == ["source"]
    fake.close()


# --- PTT never left keyed by `jingbao run` ---------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
async def test_jingbao_run_unkeys_at_start_and_when_stopped_mid_transmission(tmp_path, shared_audio, stop):
    fake = FakeHidraw.create()
    call = tmp_path / "call.wav"
    with wave.open(str(call), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes(noise(0.5, -70, 11) + speech_pcm(shared_audio) + noise(1.6, -70, 12))
    guards = {"id": "guards", "name": "市场保安", "source": {"type": "file", "paths": [str(call)], "realtime": False},
              "tx": file_tx(tmp_path, "guards")}
    police = pipe_channel(tmp_path, "police", line={"type": "cm108", "device": fake.path, "cor": None},
                          tx=file_tx(tmp_path, "police"))
    config = write_config(tmp_path, [guards, police], patches=[{"a": "guards", "b": "police"}])
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jingbao"), "run", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        reports: list[bytes] = []
        deadline = time.monotonic() + 20
        while KEY not in reports:  # the guards' call is relayed to the police radio: it keys
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
            assert time.monotonic() < deadline, f"never keyed; reports {reports}"
            reports += await asyncio.to_thread(fake.output_reports, 0.2)
        proc.send_signal(stop)
        code = await asyncio.to_thread(proc.wait, 10)
        reports += fake.output_reports(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        fake.close()
    assert reports[0] == UNKEY, "start-up drives PTT off before anything else"
    assert reports[-1] == UNKEY, f"{stop.name} in mid-transmission released PTT"
    assert code == 0


# --- the sound-card sink, for real -----------------------------------------------------------------------------


async def test_soundcard_sink_plays_the_speech_into_a_pulseaudio_sink(tmp_path, shared_audio, pulse: PulseServer):  # noqa: F811
    channel = pipe_channel(tmp_path, "card", tx={"output": {"type": "soundcard", "device": "pulse"},
                                                  "key_up_delay_ms": 100, "tail_ms": 100})
    speech = pad(speech_pcm(shared_audio))
    recording = tmp_path / "monitor.raw"
    async with running(write_config(tmp_path, [channel])) as service:
        with recording.open("wb") as out:
            recorder = subprocess.Popen(
                ["parecord", "--device=jb_null.monitor", "--raw", "--format=s16le", "--rate=16000", "--channels=1",
                 "--latency-msec=30"],  # pacat's default 2 s of buffering would be lost when it is stopped
                env={**os.environ, **pulse.env}, stdout=out,
            )
            try:
                await asyncio.sleep(0.3)
                result = await service.transmitters["card"].transmit(speech, label="talk-back")
                await asyncio.sleep(0.5)
            finally:
                recorder.terminate()
                recorder.wait(5)
    assert result.status == "sent"
    heard = recording.read_bytes()
    heard = heard[: len(heard) - len(heard) % FRAME_BYTES]
    # loudness envelopes: robust to the resampling (16 -> 44.1 -> 48 -> 16 kHz) and the null sink's clock
    corr, _ = envelope_match(speech, heard, max_lag_frames=max(0, (len(heard) - len(speech)) // FRAME_BYTES))
    assert corr > 0.8, f"what the sound card played is the speech (envelope correlation {corr:.2f})"
