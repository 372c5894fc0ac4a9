"""Receive-side glue between a channel's frames and its radio hardware (the channel wraps its source with it).

`receive(frames, line, transmitter)` yields the same 20 ms frames, with three changes:
1. carrier: each frame is stamped with the line's carrier/COR state at the frame's own timestamp (VOX lines
   first look at the frame to decide it), so the segmenter follows COR exactly (Frame.carrier is not None);
2. hindsight: a VOX line declares the carrier only after its attack time, dated back to the first loud frame, so
   frames pass through a delay line as long as that attack whose stamps are corrected once the line knows better:
   the frames of the attack run are re-stamped carrier=True, so the first syllable is not clipped (in carrier mode
   the segmenter keeps no pre-roll: the utterance is exactly what the carrier covers). A COR line knows its carrier
   at once and delays nothing. (The squelch tail before a carrier drop is the segmenter's to leave out: it holds
   back only unvoiced frames, so the live stream is not delayed by it.)
3. echo guard: frames received while this channel's transmitter is keyed, or within its echo guard after
   unkeying, are jingbao's own audio coming back (sound-card crosstalk, a gateway echoing RTP): their audio is
   replaced by silence and their carrier by False, so they never become a received utterance, and a patch never
   sends them back where they came from. Muting keeps the 20 ms cadence that the segmenter and meters rely on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

from bridge.audio import FRAME_BYTES, FRAME_MS, Frame
from hardware.lines.base import Line
from hardware.transmit import Transmitter

logger = logging.getLogger(__name__)

SILENT_FRAME = bytes(FRAME_BYTES)
MUTED_LOG_EVERY_S = 60.0  # the muted-while-transmitting line is logged at most this often per channel


@dataclass(slots=True)
class ReceiveStats:
    frames: int = 0
    muted: int = 0  # frames replaced by silence as jingbao's own echo: audio not received while transmitting
    rise_restored: int = 0  # frames re-stamped carrier=True by a rise dated back (VOX attack)
    muted_logged: int = 0  # `muted` when it was last logged
    logged_at: float = float("-inf")  # monotonic

    @property
    def muted_s(self) -> float:
        return self.muted * FRAME_MS / 1000

    def muting_ended(self, channel: str) -> None:
        """A spell of muting is over: said in the log (at most once a minute, with all muted since the last line):
        whoever called the channel meanwhile was not heard."""
        now = time.monotonic()
        if now - self.logged_at < MUTED_LOG_EVERY_S:
            return
        since = (self.muted - self.muted_logged) * FRAME_MS / 1000
        logger.warning("channel %s: %.1f s of received audio muted while transmitting (%.1f s since the start): "
                       "calls made on the channel meanwhile were not heard", channel, since, self.muted_s)  # fmt: skip
        self.muted_logged, self.logged_at = self.muted, now


class CarrierDelay:
    """Pure logic: a delay line that dates a VOX carrier rise back in hindsight (see the module docstring).

    `carrier_since(ts)` tells when the carrier state in force at `ts` began (the line's own record); it is asked
    only when a rise arrives, and only frames within `hindsight_ms` before that rise can be re-stamped.
    """

    def __init__(
        self, hindsight_ms: int, carrier_since: Callable[[float], float | None], stats: ReceiveStats | None = None
    ) -> None:
        self.depth = -(-hindsight_ms // FRAME_MS)
        self.stats = stats or ReceiveStats()
        self._carrier_since = carrier_since
        self._delay: deque[Frame] = deque()

    def feed(self, frame: Frame) -> list[Frame]:
        if self.depth == 0:
            return [frame]
        delay = self._delay
        if delay and delay[-1].carrier is False and frame.carrier:
            rose_at = self._carrier_since(frame.ts)
            for i in range(len(delay)):
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
    stats: ReceiveStats | None = None,
) -> AsyncIterator[Frame]:
    """Stamp carrier, date a VOX rise back and mute jingbao's own echo (see the module docstring)."""
    stats = stats if stats is not None else ReceiveStats()
    hindsight_ms = line.rise_hindsight_ms if line is not None and line.has_cor else 0
    delay = CarrierDelay(hindsight_ms, line.carrier_since if line is not None else lambda ts: None, stats)
    muting = False
    async for frame in frames:
        stats.frames += 1
        echo = transmitter is not None and transmitter.is_echo(frame.ts)
        if echo:  # muted before a VOX line sees it, so our own audio cannot raise its carrier either
            stats.muted += 1
            frame = Frame(SILENT_FRAME, frame.ts, frame.carrier)
        elif muting and transmitter is not None:
            stats.muting_ended(transmitter.channel)
        muting = echo
        if line is not None:
            line.observe(frame)
            frame = dataclasses.replace(frame, carrier=line.carrier_at(frame.ts))
        if echo and frame.carrier:
            frame = dataclasses.replace(frame, carrier=False)
        for out in delay.feed(frame):
            yield out
    for out in delay.flush():
        yield out
