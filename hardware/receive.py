"""Receive-side glue between a channel's frames and its radio hardware (the channel wraps its source with it).

`receive(frames, line, transmitter)` yields the same 20 ms frames, with three changes:
1. carrier: each frame is stamped with the line's carrier/COR state at the frame's own timestamp (VOX lines
   first look at the frame to decide it), so the segmenter follows COR exactly (Frame.carrier is not None);
2. hindsight: frames pass through a short delay line whose stamps are corrected once the line knows better.
   - squelch tail: when the carrier drops, the last `squelch_tail_ms` of audio before the drop is the receiver's
     squelch-tail noise burst (it opens on the remote unkey and closes a moment later); those frames are
     re-stamped carrier=False, so the utterance ends where the speech did;
   - late rise: a VOX line declares the carrier only after its attack time, dated back to the first loud frame;
     the frames of that attack run are re-stamped carrier=True, so the first syllable is not clipped (in carrier
     mode the segmenter keeps no pre-roll: the utterance is exactly what the carrier covers).
   Cost: max(squelch tail, VOX attack) of extra latency on the live stream, nothing on the archive;
3. echo guard: frames received while this channel's transmitter is keyed, or within its echo guard after
   unkeying, are jingbao's own audio coming back (sound-card crosstalk, a gateway echoing RTP): their audio is
   replaced by silence and their carrier by False, so they never become a received utterance, and a patch never
   sends them back where they came from. Muting keeps the 20 ms cadence that the segmenter and meters rely on.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
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
    rise_restored: int = 0  # frames re-stamped carrier=True by a rise dated back (VOX attack)


class CarrierDelay:
    """Pure logic: a delay line that corrects carrier stamps in hindsight (see the module docstring).

    `carrier_since(ts)` tells when the carrier state in force at `ts` began (the line's own record); it is asked
    only when a rise arrives, and only frames within `hindsight_ms` before that rise can be re-stamped.
    """

    def __init__(
        self,
        tail_ms: int,
        hindsight_ms: int = 0,
        carrier_since: Callable[[float], float | None] | None = None,
        stats: ReceiveStats | None = None,
    ) -> None:
        self.tail = tail_ms // FRAME_MS
        self.hindsight = -(-hindsight_ms // FRAME_MS) if carrier_since is not None else 0
        self.depth = max(self.tail, self.hindsight)
        self.stats = stats or ReceiveStats()
        self._carrier_since = carrier_since
        self._delay: deque[Frame] = deque()

    def feed(self, frame: Frame) -> list[Frame]:
        if self.depth == 0:
            return [frame]
        delay = self._delay
        if delay and delay[-1].carrier and frame.carrier is False:
            for i in range(max(0, len(delay) - self.tail), len(delay)):
                if delay[i].carrier:
                    delay[i] = dataclasses.replace(delay[i], carrier=False)
                    self.stats.tail_trimmed += 1
        elif delay and delay[-1].carrier is False and frame.carrier and self._carrier_since is not None:
            rose_at = self._carrier_since(frame.ts)
            for i in range(max(0, len(delay) - self.hindsight), len(delay)):
                if rose_at is not None and delay[i].carrier is False and delay[i].ts >= rose_at:
                    delay[i] = dataclasses.replace(delay[i], carrier=True)
                    self.stats.rise_restored += 1
        delay.append(frame)
        out: list[Frame] = []
        while len(delay) > self.depth:
            out.append(delay.popleft())
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
    if line is not None and line.has_cor:
        delay = CarrierDelay(squelch_tail_ms, line.rise_hindsight_ms, line.carrier_since, stats)
    else:
        delay = CarrierDelay(0, stats=stats)
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
        for out in delay.feed(frame):
            yield out
    for out in delay.flush():
        yield out
