"""The small typed events that flow between stages (source -> segmenter -> archive -> ASR -> dispatcher).

Each is an immutable dataclass, so a stage can be tested alone and later moved behind a queue or an MQTT topic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH

# "eof": the input ended or was lost; "shutdown": the service stopped while it was being spoken
EndReason = Literal["silence", "squelch", "max_length", "carrier", "eof", "shutdown"]


def new_utterance_id(start: float) -> str:
    """Sortable, unique id: UTC start time to the millisecond plus 8 random hex digits. (Four were too few: 40
    utterances begun in one millisecond, as a burst replayed by a test is, shared an id about once in 80 runs.)"""
    stamp = datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
    return f"{stamp}-{os.urandom(4).hex()}"


@dataclass(slots=True, frozen=True)
class UtteranceStarted:
    """The segmenter decided speech began. `pcm` is the pre-roll plus the frames that confirmed it."""

    channel: str
    utterance_id: str
    start: float
    pcm: bytes


@dataclass(slots=True, frozen=True)
class UtteranceAudio:
    """One more frame of an utterance in progress (for streaming recognition and live listening). `voiced`: the
    segmenter took it for speech (always True while a carrier holds the utterance open)."""

    channel: str
    utterance_id: str
    pcm: bytes
    voiced: bool = True


@dataclass(slots=True, frozen=True)
class UtterancePaused:
    """The speaker of an utterance in progress has been silent for `sentence_end_ms` (VAD mode): most often the end
    of what they had to say. The utterance stays open (a pause inside a call may last ~0.9 s); what was recognised
    so far can be acted on now, and the final transcript settles it."""

    channel: str
    utterance_id: str
    at: float  # when the pause was detected (the stamp of the frame after the frame that completed it)
    speech_end: float  # the end of the last voiced frame before the pause
    # the same pause, still silent after `long_pause_ms`: most likely the end of the transmission (reported once more)
    settled: bool = False
    # the caller let go of the key (a squelch tail was heard) before this pause was reported: nothing more will be
    # said, and the utterance ends right after this event (settled too; a pause reported already is only settled)
    unkeyed: bool = False


@dataclass(slots=True, frozen=True)
class UtteranceDiscarded:
    """An utterance that started but ended too short to keep (a key-up click, a cough): nothing to archive."""

    channel: str
    utterance_id: str
    duration: float


@dataclass(slots=True, frozen=True)
class Utterance:
    """A finished utterance: the immutable record the archive stores and every later stage refers to."""

    id: str
    channel: str
    start: float  # UTC epoch seconds of the first sample (pre-roll included)
    end: float
    pcm: bytes = field(repr=False)
    reason: EndReason = "silence"

    @property
    def duration(self) -> float:
        return len(self.pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)


SegmentEvent = UtteranceStarted | UtteranceAudio | UtterancePaused | UtteranceDiscarded | Utterance
