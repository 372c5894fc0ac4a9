"""The pieces of bench/load.py that need no service: the recordings as radio transmissions, one timeline per channel,
feeding the timelines into FIFOs in real time (and a COR line on a pty), and attributing MQTT messages to calls.

Times: a timeline counts 16 kHz samples from the moment feeding starts; `Feed` turns them into wall-clock times.
"""

from __future__ import annotations

import csv
import errno
import importlib.util
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
FRAME = 320  # samples: 20 ms, the service's frame
FRAME_S = FRAME / SAMPLE_RATE
CLICK_S = 0.02  # radio_degrade.py puts its key-up click before the speech
SQUELCH_TAIL_S = 0.3
# between the transmissions of a call told in several: the receiver muted (digital silence) until the next key-up,
# longer than the segmenter's hang-over, well inside the dispatcher's dispatch/turns.CARRY_S
BETWEEN_KEY_UPS_S = 2.0
HISS_DBFS = -62.0  # between transmissions the receiver's squelch is closed: a faint hiss, below the segmenter's -50 dBFS
COR_UP, COR_DOWN = bytes((0x02, 0, 0, 0)), bytes((0, 0, 0, 0))  # CM108 input report: bit 1 = vol_down carries COR


@dataclass(frozen=True)
class Clip:
    """One transmission as the receiver gives it: key-up click, the recording through radio_degrade.py, squelch tail."""

    name: str
    incident: str  # the call's labelled type, "none" for a routine call; "" for a real recording (not labelled)
    pcm: np.ndarray = field(repr=False)  # int16
    speech_end: int  # sample where the speech ends (the clean recording's last loud 10 ms, after the click)
    place: str = ""  # the call's labelled place id; "" when it names none or is not labelled

    @property
    def is_incident(self) -> bool:
        return self.incident not in ("", "none")


@dataclass(frozen=True)
class Transmission:
    channel: int
    index: int  # on its channel
    clip: Clip
    start: int  # sample of key-up on the channel's timeline (a whole frame)

    @property
    def end(self) -> int:
        return self.start + len(self.clip.pcm)

    @property
    def speech_end(self) -> int:
        return self.start + self.clip.speech_end

    @property
    def key(self) -> tuple[int, int]:
        return self.channel, self.index


# --- material --------------------------------------------------------------------------------------------------


def voice_band_db(pcm: np.ndarray | bytes) -> np.ndarray:
    """The level of each 10 ms of a 16 kHz recording in the voice band (300-3400 Hz), dB: what the benches and the
    segmenter's tests measure speech and its pauses by (the band keeps mains hum and DC steps from passing for it)."""
    from scipy.signal import butter, sosfilt

    samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes) else pcm
    x = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos"), samples.astype(np.float64))
    n = len(x) // 160
    return 10 * np.log10(np.maximum(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1), 1e-9))


def speech_end_s(pcm: np.ndarray, below_peak_db: float = 25.0) -> float:
    """End of the last voiced stretch: the last 10 ms whose voice-band energy is within `below_peak_db` of the
    loudest 10 ms (the measure tests/support/radio.py `speech_span` uses for the segmenter's tests)."""
    db = voice_band_db(pcm)
    return (int(np.flatnonzero(db > db.max() - below_peak_db)[-1]) + 1) * 0.01


def read_wav(path: Path) -> np.ndarray:
    import wave

    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


@dataclass(frozen=True)
class Labelled:
    """A clean recording of a call and what it says: its name in the bench's output, its type ("none": routine) and
    place id ("" when it names none)."""

    name: str
    clean: Path
    incident: str
    place: str = ""
    more: tuple[Path, ...] = ()  # the call's further transmissions, each a key-up of its own (a turn set's call)


def demo_calls(shared: Path) -> list[Labelled]:
    """The 30 spoken calls (../shared/audio/calls) with their labels (../shared/demo/calls.tsv)."""
    labels = {r["id"]: (r["incident"], r["place"]) for r in csv.DictReader(
        (shared / "demo" / "calls.tsv").open(encoding="utf-8"), delimiter="\t")}
    return [Labelled(p.stem, p, *labels[p.stem]) for p in sorted((shared / "audio" / "calls").glob("c*.wav"))]


def load_material(shared: Path, cache: Path, snr: tuple[float, float], seed: int,
                  calls: Sequence[Labelled] | None = None) -> tuple[list[Clip], list[Clip]]:  # fmt: skip
    """(the calls: the 30 spoken calls unless `calls` are given, the 53 real recordings) as radio transmissions, each
    at its own SNR drawn from `snr` (rounded to 0.5 dB). Radio copies are made by radio_degrade.py (loaded once, run
    in this interpreter) into `cache` and reused; the recordings themselves are only read."""
    spec = importlib.util.spec_from_file_location("radio_degrade", shared / "tools" / "radio_degrade.py")
    assert spec and spec.loader
    degrader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(degrader)
    rng = random.Random(seed)
    cache.mkdir(parents=True, exist_ok=True)

    def radio_copy(clean: Path, level: float) -> np.ndarray:
        # the folder too: a rendering's name is its text's, the same in every voice (bench/voices.py's cache)
        radio = cache / f"{clean.parent.name}-{clean.stem}-snr{level:g}-seed{seed}.wav"
        if not radio.exists():
            degrader.main([str(clean), str(radio), "--snr", str(level), "--seed", str(seed), "--click",
                           "--squelch-tail", str(SQUELCH_TAIL_S)])  # fmt: skip
        return read_wav(radio)

    def clip(call: Labelled) -> Clip:
        level = round(rng.uniform(*snr) * 2) / 2
        return call_clip(call, lambda clean: radio_copy(clean, level))

    labelled = [clip(c) for c in (calls if calls is not None else demo_calls(shared))]
    real = [clip(Labelled(p.stem, p, "")) for p in sorted((shared / "audio").glob("*.wav"))]
    return labelled, real


def call_clip(call: Labelled, radio_copy: Callable[[Path], np.ndarray]) -> Clip:
    """The call's transmissions as the receiver gives them (`radio_copy`: a clean recording through the radio), the
    receiver silent between them; its speech ends where the last transmission's does."""
    *said, last = [radio_copy(clean) for clean in (call.clean, *call.more)]
    between = np.zeros(round(BETWEEN_KEY_UPS_S * SAMPLE_RATE), dtype=np.int16)
    before_last = sum(len(pcm) + len(between) for pcm in said)
    end = before_last + round((CLICK_S + speech_end_s(read_wav(call.more[-1] if call.more else call.clean))) * SAMPLE_RATE)
    pcm = np.concatenate([part for pcm in said for part in (pcm, between)] + [last])
    return Clip(call.name, call.incident, pcm, end, call.place)


# --- timelines -------------------------------------------------------------------------------------------------


def plan(n: int, duty: float, seconds: float, calls: Sequence[Clip], real: Sequence[Clip], *, burst: bool,
         seed: int = 0, lead_s: float = 3.0, min_gap_s: float = 2.5, incidents_per_minute: float | None = None,
         ) -> list[list[Transmission]]:  # fmt: skip
    """One timeline per channel: spoken calls and real recordings in turn (each channel its own order), separated by
    hiss so that the channel talks `duty` of the time (each gap drawn around the mean that gives it, at least
    `min_gap_s` so the segmenter hears the end). Staggered: channel i keys up first at lead + i/n of a mean cycle;
    `burst`: every channel keys up within one second after the lead, with an incident call. Transmissions end before
    `seconds`. `incidents_per_minute`: instead of calls and recordings in turn, each transmission is an incident call
    with the chance that gives about that many over all channels, else routine (a real recording or a routine call)."""
    rng = random.Random(seed)
    mean_tx = float(np.mean([len(c.pcm) for c in [*calls, *real]])) / SAMPLE_RATE
    cycle = mean_tx / duty
    incident_calls = [c for c in calls if c.is_incident]
    routine = [*real, *(c for c in calls if not c.is_incident)]
    incident_share = None if incidents_per_minute is None else min(1.0, incidents_per_minute * cycle / 60 / n)
    channels = []
    for ch in range(n):
        first = lead_s + (rng.uniform(0, 1) if burst else ch / n * cycle)
        call_order, real_order = rng.sample(list(calls), len(calls)), rng.sample(list(real), len(real))
        if burst:
            opening = rng.choice(incident_calls)
            call_order = [opening, *(c for c in call_order if c is not opening)]
        at = round(first * SAMPLE_RATE / FRAME) * FRAME
        timeline: list[Transmission] = []
        while True:
            if incident_share is not None:
                clip = rng.choice(incident_calls if rng.random() < incident_share else routine)
            else:
                pool = call_order if len(timeline) % 2 == 0 else real_order
                clip = pool[(len(timeline) // 2) % len(pool)]
            if (at + len(clip.pcm)) / SAMPLE_RATE > seconds:
                break
            timeline.append(Transmission(ch, len(timeline), clip, at))
            gap = max(min_gap_s, len(clip.pcm) / SAMPLE_RATE * (1 - duty) / duty * rng.uniform(0.5, 1.5))
            at = timeline[-1].end + math.ceil(gap * SAMPLE_RATE / FRAME) * FRAME
        channels.append(timeline)
    return channels


def talk_share(channels: Sequence[Sequence[Transmission]], seconds: float) -> float:
    """The share of channel-time spent transmitting, as planned."""
    return sum(len(t.clip.pcm) for tl in channels for t in tl) / SAMPLE_RATE / (seconds * max(1, len(channels)))


class ChannelAudio:
    """A timeline's audio, frame by frame, made on the fly (hiss, and each transmission where it is keyed)."""

    def __init__(self, timeline: Sequence[Transmission], hiss: np.ndarray, offset: int) -> None:
        self.timeline = list(timeline)
        self.hiss = hiss
        self.offset = offset  # where in the hiss loop this channel starts, so channels do not hiss in unison
        self._next = 0  # first transmission that has not ended before the current frame

    def frame(self, k: int) -> bytes:
        a, b = k * FRAME, (k + 1) * FRAME
        out = self.hiss.take(np.arange(a + self.offset, b + self.offset), mode="wrap")
        while self._next < len(self.timeline) and self.timeline[self._next].end <= a:
            self._next += 1
        for t in self.timeline[self._next : self._next + 2]:
            s, e = max(a, t.start), min(b, t.end)
            if s < e:
                out[s - a : e - a] = t.clip.pcm[s - t.start : e - t.start]
        return out.tobytes()


def make_hiss(seconds: float = 10.0, seed: int = 1) -> np.ndarray:
    level = 32768 * 10 ** (HISS_DBFS / 20)
    return (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * level).astype(np.int16)


# --- feeding in real time --------------------------------------------------------------------------------------


@dataclass
class Feed:
    """Writes every channel's timeline into its FIFO one 20 ms frame at a time, each frame when its last sample is
    due (as a sound card hands over a period), and notes when each call's last speech sample was taken by the FIFO:
    `handed[key]`, wall-clock. With `cor`, the channel's pty gets a carrier-up report as its key-up frame begins and
    a carrier-down one once the squelch tail has been written. What a FIFO does not take (it holds 64 KiB, 2 s of
    audio; the service is not reading) is held here and written first next time: `held_max_s` says how far behind
    the service's reading fell."""

    channels: list[list[Transmission]]
    fifos: list[int]
    cor: list[int] | None = None
    t0_wall: float = 0.0
    handed: dict[tuple[int, int], float] = field(default_factory=dict)
    late_max_s: float = 0.0
    held_max_s: float = 0.0
    broken: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        hiss = make_hiss()
        audio = [ChannelAudio(tl, hiss, 7919 * i) for i, tl in enumerate(self.channels)]
        ends = [sorted((t.speech_end * 2, t.key) for t in tl) for tl in self.channels]  # byte position of speech end
        keyups: dict[int, list[int]] = {}
        drops: dict[int, list[int]] = {}
        for tl in self.channels:
            for t in tl:
                keyups.setdefault(t.start // FRAME, []).append(t.channel)
                drops.setdefault((t.end - 1) // FRAME, []).append(t.channel)
        held = [b""] * len(self.fifos)
        taken = [0] * len(self.fifos)  # bytes each FIFO has taken
        t0 = time.monotonic()
        self.t0_wall = time.time()
        if self.cor is not None:
            self._cor(keyups.get(0, []), COR_UP)
        k = 0
        while not self.stop.is_set() and not self.broken:
            delay = t0 + (k + 1) * FRAME_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                self.late_max_s = max(self.late_max_s, -delay)
            for ch in range(len(self.fifos)):
                data = held[ch] + audio[ch].frame(k)
                held[ch] = self._write(ch, data)
                taken[ch] += len(data) - len(held[ch])
            now = time.time()
            for ch in range(len(self.fifos)):
                while ends[ch] and ends[ch][0][0] <= taken[ch]:
                    self.handed[ends[ch].pop(0)[1]] = now
            self.held_max_s = max(self.held_max_s, max(map(len, held)) / 2 / SAMPLE_RATE)
            if self.cor is not None:
                self._cor(drops.get(k, []), COR_DOWN)
                self._cor(keyups.get(k + 1, []), COR_UP)
            k += 1

    def _write(self, ch: int, data: bytes) -> bytes:
        """Write what channel `ch`'s FIFO takes; return the rest (held for the next frame)."""
        while data:
            try:
                n = os.write(self.fifos[ch], data[:4096])
            except BlockingIOError:
                return data
            except OSError as e:
                return self._reader_lost(ch, e)
            data = data[n:]
        return b""

    def _reader_lost(self, ch: int, error: OSError) -> bytes:
        """Writing failed (the service is gone): the run is broken. Returns what to hold for the next frame."""
        self.broken = f"writing to the service failed: {os.strerror(error.errno or errno.EIO)}"
        return b""

    def _cor(self, channels: list[int], report: bytes) -> None:
        assert self.cor is not None
        for ch in channels:
            os.write(self.cor[ch], report)

    def wall(self, sample: int) -> float:
        return self.t0_wall + sample / SAMPLE_RATE


# --- attributing messages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    at: float  # wall-clock arrival at the bench's subscriber
    topic: str
    data: Any  # parsed JSON, or the raw text


def utterance_ids(message: Message) -> list[str]:
    """The utterances a message is about: an alert's `utterance_id`, an incident event's or retained state's
    `utterance_ids` (dispatch/alerts.py, dispatch/dispatcher.py `_emit`); nothing for other topics."""
    data, kind = message.data, message.topic.split("/")[-2] if message.topic.count("/") >= 2 else message.topic
    if not isinstance(data, dict):
        return []
    if kind == "alerts":
        return [data["utterance_id"]] if data.get("utterance_id") else []
    if message.topic.endswith("/events"):
        data = data.get("after") or {}
    return [u for u in data.get("utterance_ids") or [] if isinstance(u, str)]


def is_provisional(message: Message) -> bool:
    data = message.data if isinstance(message.data, dict) else {}
    if message.topic.endswith("/events"):
        data = data.get("after") or {}
    return bool(data.get("provisional"))


def is_alert(m: Message) -> bool:
    """An alert sent to a responder's phone (not an update or retraction of one)."""
    return "/alerts/" in m.topic and isinstance(m.data, dict) and m.data.get("kind", "alert") == "alert"


def first_wave_alerts(messages: Iterable[Message], window_s: float = 30.0) -> list[Message]:
    """Alerts to phones in each incident's first wave (within `window_s` of its first alert). Later ones escalate an
    unanswered alert (after the 60 s ack timeout) and name the incident's latest report, which did not cause them."""
    first: dict[Any, float] = {}
    wave = []
    for m in sorted(messages, key=lambda m: m.at):
        if is_alert(m) and m.at - first.setdefault(m.data.get("incident_id"), m.at) <= window_s:
            wave.append(m)
    return wave


def first_mentions(messages: Iterable[Message]) -> dict[str, Message]:
    """utterance id -> the first message (by arrival) that names it."""
    first: dict[str, Message] = {}
    for m in sorted(messages, key=lambda m: m.at):
        for uid in utterance_ids(m):
            first.setdefault(uid, m)
    return first


@dataclass(frozen=True)
class Utterance:
    id: str
    channel: int
    start: float
    end: float
    end_reason: str = ""


def assign(utterances: Iterable[Utterance], channels: Sequence[Sequence[Transmission]], feed_wall: Any
           ) -> tuple[dict[str, tuple[int, int]], list[Utterance]]:  # fmt: skip
    """Each utterance -> the transmission on its channel it overlaps most (wall-clock), and the ones overlapping none
    (noise the segmenter took for speech). `feed_wall(sample)` converts timeline samples to wall-clock time."""
    owner: dict[str, tuple[int, int]] = {}
    stray = []
    for u in utterances:
        best, key = 0.0, None
        for t in channels[u.channel]:
            overlap = min(u.end, feed_wall(t.end)) - max(u.start, feed_wall(t.start))
            if overlap > best:
                best, key = overlap, t.key
        if key is None:
            stray.append(u)
        else:
            owner[u.id] = key
    return owner, stray


def first_message_per_call(owner: dict[str, tuple[int, int]], first: dict[str, Message]) -> dict[tuple[int, int], Message]:
    calls: dict[tuple[int, int], Message] = {}
    for uid, key in owner.items():
        if uid in first and (key not in calls or first[uid].at < calls[key].at):
            calls[key] = first[uid]
    return calls


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
