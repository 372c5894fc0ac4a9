"""Spoken announcements for the radio: 「怡园警务点请注意，美食街有人打架斗殴，请迅速赶往现场」.

Rendered offline with espeak-ng (Mandarin voice) into a 16 kHz mono WAV, then put on a queue that the channel's
transmit path (hardware: PTT + playback) consumes.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
from bridge.decode import AudioDecodeError, decode_file

logger = logging.getLogger(__name__)

# What happened, as a dispatcher says it on the air; keyed by incident type.
SPOKEN_TYPE = {
    "fight": "有人打架斗殴",
    "theft": "发生盗窃",
    "robbery": "发生抢劫",
    "weapon": "有人持械",
    "fire": "发生火情",
    "medical": "有人需要急救",
    "missing": "有人走失",
    "suspicious": "发现可疑情况",
    "dispute": "发生纠纷",
    "domestic": "发生家庭纠纷",
    "gathering": "有人聚集",
    "traffic": "发生交通事故",
    "noise": "有人噪音扰民",
    "fraud": "有人诈骗",
}


def announcement_text(addressee: str, place: str | None, incident_type: str) -> str:
    """「<addressee>请注意，<place><what happened>，请迅速赶往现场」; an unknown place is said to be unconfirmed."""
    what = SPOKEN_TYPE.get(incident_type, "发生警情")
    where = place if place else "地点待确认，"
    return f"{addressee}请注意，{where}{what}，请迅速赶往现场"


@dataclass(slots=True, frozen=True)
class Announcement:
    channel: str
    incident_id: str
    text: str
    wav: Path  # 16 kHz mono int16
    pcm: bytes = field(repr=False)  # the same audio, ready for the transmit path

    @property
    def duration(self) -> float:
        return len(self.pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)


class AnnounceError(Exception):
    """espeak-ng is missing or failed, or the WAV cannot be written."""


def render(text: str, wav: Path, *, voice: str = "cmn", speed: int = 160) -> bytes:
    """Text -> 16 kHz mono int16 WAV at `wav` (blocking); returns the PCM."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "espeak.wav"  # espeak-ng writes 22.05 kHz
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True, capture_output=True, timeout=30
            )
            pcm = decode_file(raw)
        wav.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(SAMPLE_WIDTH)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm)
    except (OSError, subprocess.SubprocessError, AudioDecodeError) as e:
        raise AnnounceError(f"cannot render announcement: {e}") from e
    return pcm


class Announcer:
    """Renders announcements in a worker thread (never blocking the loop) and queues them for transmission."""

    def __init__(self, out_dir: Path, queue: asyncio.Queue[Announcement] | None = None, *, voice: str = "cmn") -> None:
        self.out_dir = out_dir
        self.queue: asyncio.Queue[Announcement] = queue if queue is not None else asyncio.Queue(maxsize=100)
        self._voice = voice
        self.rendered = 0
        self.failed = 0

    async def announce(self, channel: str, incident_id: str, text: str) -> Announcement | None:
        wav = self.out_dir / f"{incident_id}-{channel}.wav"
        try:
            pcm = await asyncio.to_thread(render, text, wav, voice=self._voice)
        except AnnounceError as e:
            self.failed += 1
            logger.error("announcement for %s on %s: %s", incident_id, channel, e)
            return None
        announcement = Announcement(channel, incident_id, text, wav, pcm)
        try:
            self.queue.put_nowait(announcement)
        except asyncio.QueueFull:
            self.failed += 1
            logger.error("transmit queue full: announcement for %s on %s dropped", incident_id, channel)
            return None
        self.rendered += 1
        return announcement
