"""What every channel source shares: the protocol, its counters, and the pieces that turn raw input into frames.

A source turns whatever a channel receives into jingbao's one format (bridge.audio): 20 ms frames of 16 kHz mono
int16, each stamped with the wall-clock time of its first sample. `frames()` ends when the input ends and raises
SourceError when the input is lost; calling it again re-opens the input (that is how the channel's supervisor brings
a re-plugged USB card back).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import soxr

from bridge.audio import FRAME_BYTES, SAMPLE_RATE, Frame
from bridge.logsafe import clip

# What a live source (sound card, pipe, pushed audio) holds for a channel that is not taking its audio (its archive or
# recognition hand-over is slow, the process is busy): the channel takes it late, and only beyond this is audio
# dropped (counted in skipped_s). Two minutes of 16 kHz audio is ~4 MB; a radio's audio cannot be asked to wait.
BACKLOG_S = 120.0

class SourceError(Exception):
    """The input is lost or cannot be opened; the message says which input and why."""


@dataclass
class SourceStats:
    """Counters a source keeps across re-opens (shown on the console, never reset by a re-open).

    frames: frames yielded; rejected: input refused (malformed packets, undecodable files, overflow), and
    rejected_by: the same by kind ("malformed" unless the source says otherwise: "undecodable", "too_fast", ...);
    lost: frames' worth of audio that never arrived and was filled with silence or dropped (RTP loss, overruns);
    skipped_s: seconds of audio that did arrive but was dropped because the channel fell so far behind that the
    source's buffer overflowed (0 in normal operation; see BACKLOG_S);
    errors: times the input was lost or failed to open; last_error: the latest of those, or of the rejections.
    """

    frames: int = 0
    rejected: int = 0
    rejected_by: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    skipped_s: float = 0.0
    errors: int = 0
    last_error: str | None = None

    def fail(self, message: str) -> SourceError:
        """Record a lost input and return the error to raise."""
        self.errors += 1
        self.last_error = message
        return SourceError(message)

    def reject(self, reason: str, count: int = 1, *, kind: str = "malformed") -> None:
        """Count refused input; `reason` (clipped: it may quote the input) becomes last_error, `kind` its counter."""
        self.rejected += count
        self.rejected_by[kind] += count
        self.last_error = clip(reason)


class Source(Protocol):
    stats: SourceStats

    def frames(self) -> AsyncIterator[Frame]: ...


class FrameClock:
    """Wall-clock stamps for a stream of 16 kHz samples: counted sample by sample, re-anchored after a gap.

    Counting keeps consecutive frames exactly 20 ms apart (no jitter from arrival times). When the input pauses
    (push-to-talk released, RTP talk spurt over, a stalled pipe), the count falls behind the arrival time and is
    re-anchored to it. A count running ahead (input faster than real time, e.g. a file on a pipe) is kept, unless
    `max_lead` bounds it: a live device whose clock runs fast is pulled back that way.
    """

    def __init__(self, max_gap: float = 0.2, max_lead: float | None = None) -> None:
        self.max_gap = max_gap
        self.max_lead = max_lead
        self._next: float | None = None

    def stamp(self, samples: int, arrived: float | None = None) -> float:
        """Stamp of the first of `samples` samples that finished arriving at `arrived` (None: continue the count)."""
        duration = samples / SAMPLE_RATE
        if arrived is not None:
            start = arrived - duration
            if (
                self._next is None
                or start - self._next > self.max_gap
                or (self.max_lead is not None and self._next - start > self.max_lead)
            ):
                self._next = start
        elif self._next is None:
            self._next = time.time() - duration
        ts = self._next
        self._next += duration
        return ts


class FrameAssembler:
    """Cuts 16 kHz int16 PCM arriving in chunks of any size into 640-byte frames with correct stamps."""

    def __init__(self, clock: FrameClock, stats: SourceStats) -> None:
        self.clock = clock
        self.stats = stats
        self._pending = b""
        self._pending_ts = 0.0

    def feed(self, pcm: bytes, arrived: float | None = None) -> list[Frame]:
        if not pcm:
            return []
        ts = self.clock.stamp(len(pcm) // 2, arrived)
        if not self._pending:
            self._pending_ts = ts
        data = self._pending + pcm
        frames = []
        whole = len(data) - len(data) % FRAME_BYTES
        for offset in range(0, whole, FRAME_BYTES):
            frames.append(Frame(data[offset : offset + FRAME_BYTES], self._pending_ts + offset / 2 / SAMPLE_RATE))
        self._pending = data[whole:]
        self._pending_ts += whole / 2 / SAMPLE_RATE
        self.stats.frames += len(frames)
        return frames

    def flush(self) -> list[Frame]:
        """The held partial frame, zero-padded (at the end of the input, or before a pause)."""
        if not self._pending:
            return []
        frame = Frame(self._pending + bytes(FRAME_BYTES - len(self._pending)), self._pending_ts)
        self._pending = b""
        self.stats.frames += 1
        return [frame]

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)


class Resampler:
    """Streaming int16 resampler to 16 kHz (soxr keeps its filter state between chunks); a no-op at 16 kHz."""

    def __init__(self, in_rate: int) -> None:
        self.in_rate = in_rate
        self._stream = None if in_rate == SAMPLE_RATE else soxr.ResampleStream(in_rate, SAMPLE_RATE, 1, dtype="int16")

    def __call__(self, samples: np.ndarray, last: bool = False) -> bytes:
        """int16 mono samples at the input rate -> 16 kHz int16 PCM bytes."""
        if self._stream is None:
            return samples.astype("<i2", copy=False).tobytes()
        return self._stream.resample_chunk(np.ascontiguousarray(samples, dtype=np.int16), last=last).tobytes()

    @property
    def lag_s(self) -> float:
        """Input received but not yet output, in seconds: soxr releases its output in blocks of up to ~100 ms."""
        return 0.0 if self._stream is None else self._stream.delay() / SAMPLE_RATE


class ThrottledLog:
    """Logs the first occurrence of a kind of bad input, then one line per `every` occurrences (never a flood)."""

    def __init__(self, log: logging.Logger, what: str, every: int = 100) -> None:
        self.log = log
        self.what = what
        self.every = every
        self.count = 0

    def __call__(self, channel_id: str, reason: str) -> None:
        self.count += 1
        if self.count == 1 or self.count % self.every == 0:
            self.log.warning("channel %s: %s #%d: %s", channel_id, self.what, self.count, clip(reason))
