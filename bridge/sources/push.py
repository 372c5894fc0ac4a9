"""Audio pushed into a channel by the web server: the guard page's hold-to-talk, 16 kHz int16 PCM over WebSocket.

Only real audio is yielded, no silence between pushes. A press's first burst is stamped with the wall-clock time it
arrived; the rest of the press is counted on from it, however late it arrived: a press is one contiguous recording, and
a phone's network hiccup or a busy server must not cut it in two (the segmenter ends an utterance at a gap in stamps).
A client cannot talk faster than real time: its audio may run ahead of the wall clock by at most `max_buffer_s`
(room for a phone's network hiccup), like a radio, which cannot either; a flood beyond that is refused and counted.
Audio for a channel that has fallen behind is held for it (BACKLOG_S); only beyond that is it refused, and counted
as skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH, Frame
from bridge.config import WebSource
from bridge.sources.base import BACKLOG_S, FrameAssembler, FrameClock, SourceStats, ThrottledLog

logger = logging.getLogger(__name__)

PARTIAL_FRAME_WAIT_S = 0.1  # a talk burst's last partial frame is sent (padded) once no more audio came this long


class PushSource:
    """A channel fed by `push()` calls (config type "web")."""

    def __init__(
        self, channel_id: str, config: WebSource | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.channel_id = channel_id
        self.config = config or WebSource(type="web")
        self.stats = SourceStats()
        self.max_bytes = round(self.config.max_buffer_s * SAMPLE_RATE) * SAMPLE_WIDTH
        self.backlog_bytes = round(max(BACKLOG_S, self.config.max_buffer_s) * SAMPLE_RATE) * SAMPLE_WIDTH
        self._chunks: deque[tuple[bytes, float | None]] = deque()  # PCM, its arrival (None: counted on)
        self._buffered = 0
        # Real-time pacing as a token bucket: credit (bytes) grows with the clock at the audio rate, up to max_bytes.
        self._clock = clock
        self._credit = float(self.max_bytes)
        self._credit_at = clock()
        self._arrived = asyncio.Event()
        self._refusals = ThrottledLog(logger, "pushed audio refused")

    def push(self, pcm16k: bytes, *, paced: bool = True, contiguous: bool = False) -> bool:
        """Queue 16 kHz mono int16 PCM; False (counted, logged sparingly) if malformed, faster than real time, or
        the buffer is full. `paced=False` is for the server's own audio (the release silence), not a client's.
        `contiguous`: the audio follows the last accepted push without a gap (the same press), so it is stamped on
        from it rather than by its arrival."""
        now = self._clock()
        self._credit = min(float(self.max_bytes), self._credit + (now - self._credit_at) * SAMPLE_RATE * SAMPLE_WIDTH)
        self._credit_at = now
        if len(pcm16k) % SAMPLE_WIDTH:
            kind, reason = "malformed", f"odd length {len(pcm16k)}: not 16-bit PCM"
        elif paced and len(pcm16k) > self._credit:
            kind, reason = "too_fast", (
                f"faster than real time (more than {self.config.max_buffer_s:g} s ahead of the clock): a flooding client")
        elif self._buffered + len(pcm16k) > self.backlog_bytes:
            kind, reason = "buffer_full", (
                f"buffer full ({self.backlog_bytes / SAMPLE_RATE / SAMPLE_WIDTH:g} s): the channel is not reading")
            self.stats.skipped_s += len(pcm16k) / SAMPLE_RATE / SAMPLE_WIDTH
        else:
            if paced:
                self._credit -= len(pcm16k)
            self._chunks.append((pcm16k, None if contiguous else time.time()))
            self._buffered += len(pcm16k)
            self._arrived.set()
            return True
        self.stats.reject(reason, kind=kind)
        self._refusals(self.channel_id, reason)
        return False

    async def frames(self) -> AsyncIterator[Frame]:
        assembler = FrameAssembler(FrameClock(), self.stats)
        while True:
            if not self._chunks:
                self._arrived.clear()
                try:
                    # not wait_for: Python 3.11's can swallow a cancellation that lands as the event is set
                    async with asyncio.timeout(PARTIAL_FRAME_WAIT_S if assembler.has_pending else None):
                        await self._arrived.wait()
                except TimeoutError:
                    for frame in assembler.flush():
                        yield frame
                    continue
            pcm, arrived = self._chunks.popleft()
            self._buffered -= len(pcm)
            for frame in assembler.feed(pcm, arrived):
                yield frame
