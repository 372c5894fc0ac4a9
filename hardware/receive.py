"""Receive-side glue between a channel's frames and its radio hardware (the channel wraps its source with it).

`receive(frames, line, transmitter)` yields the same 20 ms frames, with three changes:
1. carrier: each frame is stamped with the line's carrier/COR state at the frame's own timestamp (VOX lines
   first look at the frame to decide it), so the segmenter follows COR exactly (Frame.carrier is not None);
2. squelch tail: when the carrier drops, the last `squelch_tail_ms` of audio before the drop is the receiver's
   squelch-tail noise burst (it opens on the remote unkey and closes a moment later). Frames pass through a delay
   line of that length; on a drop, the frames still in it are re-stamped carrier=False, so the utterance ends
   where the speech did. Cost: `squelch_tail_ms` of extra latency on the live stream, nothing on the archive;
3. echo guard: frames received while this channel's transmitter is keyed, or within its echo guard after
   unkeying, are jingbao's own audio coming back (sound-card crosstalk, a gateway echoing RTP): their audio is
   replaced by silence and their carrier by False, so they never become a received utterance, and a patch never
   sends them back where they came from. Muting keeps the 20 ms cadence that the segmenter and meters rely on.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from bridge.audio import FRAME_BYTES, FRAME_MS, Frame
from hardware.lines.base import Line
from hardware.transmit import Transmitter

SILENT_FRAME = bytes(FRAME_BYTES)


@dataclass(slots=True)
class ReceiveStats:
    frames: int = 0
    muted: int = 0  # frames replaced by silence as jingbao's own echo
    tail_trimmed: int = 0  # frames re-stamped carrier=False as squelch tail


class SquelchTailTrimmer:
    """Pure logic: a delay line of `tail_ms` that un-carriers the frames just before each carrier drop."""

    def __init__(self, tail_ms: int, stats: ReceiveStats | None = None) -> None:
        self.depth = tail_ms // FRAME_MS
        self.stats = stats or ReceiveStats()
        self._delay: deque[Frame] = deque()

    def feed(self, frame: Frame) -> list[Frame]:
        if self.depth == 0:
            return [frame]
        if frame.carrier is False and self._delay and self._delay[-1].carrier:
            for i, held in enumerate(self._delay):
                if held.carrier:
                    self._delay[i] = dataclasses.replace(held, carrier=False)
                    self.stats.tail_trimmed += 1
        self._delay.append(frame)
        out: list[Frame] = []
        while len(self._delay) > self.depth:
            out.append(self._delay.popleft())
        return out

    def flush(self) -> list[Frame]:
        out = list(self._delay)
        self._delay.clear()
        return out


async def receive(
    frames: AsyncIterable[Frame],
    line: Line | None = None,
    transmitter: Transmitter | None = None,
    squelch_tail_ms: int = 0,
    stats: ReceiveStats | None = None,
) -> AsyncIterator[Frame]:
    """Stamp carrier, trim the squelch tail and mute jingbao's own echo (see the module docstring)."""
    stats = stats if stats is not None else ReceiveStats()
    trimmer = SquelchTailTrimmer(squelch_tail_ms if line is not None and line.has_cor else 0, stats)
    async for frame in frames:
        stats.frames += 1
        echo = transmitter is not None and transmitter.is_echo(frame.ts)
        if echo:  # muted before a VOX line sees it, so our own audio cannot raise its carrier either
            stats.muted += 1
            frame = Frame(SILENT_FRAME, frame.ts, frame.carrier)
        if line is not None:
            line.observe(frame)
            frame = dataclasses.replace(frame, carrier=line.carrier_at(frame.ts))
        if echo and frame.carrier:
            frame = dataclasses.replace(frame, carrier=False)
        for out in trimmer.feed(frame):
            yield out
    for out in trimmer.flush():
        yield out
