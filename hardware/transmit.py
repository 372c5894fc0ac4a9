"""The transmit path of one channel: key PTT, wait the key-up delay, play, wait the tail, unkey.

Rules a radio operator expects, all enforced here:
- one transmission at a time, in priority order (then first come, first served);
- a channel that is receiving (COR up, or the segmenter hearing speech) is not transmitted over: a normal
  transmission waits until the channel has been quiet for `clear_ms`, and gives up after `max_wait_s`; the command
  room's COMMAND priority skips the wait. Quiet counts from the end of the speech the receiver heard: the segmenter
  closes an utterance after a hang-over of silence, which counts towards `clear_ms` (a COR line's drop is its own);
- the time-out timer cuts a transmission keyed longer than `tot_s`;
- PTT is released in a `finally` whatever happens (error, cancellation, time-out), and the line itself unkeys when
  opened and closed; a line that cannot be driven (an unplugged USB fob) fails the transmission and is reported
  through `on_fault`, and never leaves the transmitter believing it is still on the air;
- every keyed interval is remembered, so the receive side can tell jingbao's own audio coming back (`is_echo`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from bridge.sinks import Sink, SinkError
from hardware.config import TransmitConfig
from hardware.lines.base import Line, LineError

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.02  # how often a held-off transmission looks at the channel again (one frame)
CHUNK_BYTES = 640 * 5  # 100 ms: bytes given to the sink at a time, so the time-out timer can cut promptly
WINDOWS_KEPT = 64


class Priority(IntEnum):
    PATCH = 0  # audio relayed from a patched channel
    NORMAL = 1  # announcements, operator talk-back
    COMMAND = 2  # the command room: goes first and transmits even over a busy channel


TxStatus = Literal["sent", "timeout", "busy", "failed"]


@dataclass(slots=True, frozen=True)
class TxResult:
    status: TxStatus  # sent; timeout: cut by the TOT; busy: the channel never cleared; failed: the output failed
    label: str
    waited: float  # seconds between the request and key-up (or giving up)
    keyed: float  # seconds PTT was held (0 when never keyed)
    error: str | None = None


class Transmitter:
    def __init__(
        self,
        channel: str,
        line: Line,
        sink: Sink,
        config: TransmitConfig,
        speech_ended: Callable[[], float | None] | None = None,
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.channel = channel
        self.line = line
        self.sink = sink
        self.config = config
        # when the speech the receiver last heard ended (wall clock; None: it hears speech now), e.g. the segmenter's;
        # COR is read from the line directly
        self.speech_ended = speech_ended
        self.on_fault = on_fault  # told why a transmission failed (PTT or output), e.g. to show it on the channel
        self.counts = {"sent": 0, "timeout": 0, "busy": 0, "failed": 0}
        self._windows: deque[tuple[float, float | None]] = deque(maxlen=WINDOWS_KEPT)  # wall-clock keyed intervals
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._busy_turn = False
        self._quiet_since: float | None = float("-inf")  # monotonic time the channel went quiet; None: busy
        self._current: str | None = None
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the sink; the line (opened by its owner) has already been unkeyed by its own open()."""
        self.line.unkey()
        await self.sink.open()

    async def close(self) -> None:
        self._closed = True  # a transmission still queued must not key a line that is about to close
        self._release_ptt()
        await self.sink.close()

    # --- state the rest of jingbao reads ------------------------------------------------------------------------

    @property
    def transmitting(self) -> bool:
        return bool(self._windows) and self._windows[-1][1] is None

    @property
    def queued(self) -> int:
        return sum(not fut.done() for _, _, fut in self._waiters)

    def is_echo(self, ts: float) -> bool:
        """True if audio received at wall-clock `ts` falls in a keyed interval or its echo guard afterwards."""
        guard = self.config.echo_guard_ms / 1000
        for start, end in reversed(self._windows):
            if start <= ts and (end is None or ts <= end + guard):
                return True
            if end is not None and end + guard < ts:
                return False  # windows are in time order: older ones ended even earlier
        return False

    def channel_busy(self) -> bool:
        return self.line.carrier is True or (self.speech_ended is not None and self.speech_ended() is None)

    def state(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "transmitting": self.transmitting,
            "current": self._current,
            "queued": self.queued,
            "keyed": self.line.keyed,
            "counts": dict(self.counts),
        }

    # --- transmitting -------------------------------------------------------------------------------------------

    async def transmit(
        self, audio: bytes | AsyncIterable[bytes], priority: Priority = Priority.NORMAL, label: str = ""
    ) -> TxResult:
        """Play `audio` (16 kHz mono int16: whole, or a stream of chunks) onto the channel; returns when done."""
        requested = time.monotonic()
        override = priority >= Priority.COMMAND
        deadline = requested + self.config.max_wait_s
        while True:
            if not override and not await self._wait_clear(deadline):
                return self._finish(TxResult("busy", label, time.monotonic() - requested, 0.0))
            await self._take_turn(priority)
            if self._closed:
                self._give_turn()
                return self._finish(TxResult("failed", label, time.monotonic() - requested, 0.0, "transmitter closed"))
            if override or self.clear_now():
                break
            self._give_turn()  # the channel came alive while we queued: wait again, keeping the deadline
        if override and self.channel_busy():
            logger.warning("channel %s: %s transmitting over incoming traffic (command priority)", self.channel, label)
        try:
            return await self._key_and_play(audio, label, time.monotonic() - requested)
        finally:
            self._give_turn()

    async def _key_and_play(self, audio: bytes | AsyncIterable[bytes], label: str, waited: float) -> TxResult:
        c = self.config
        self._current = label
        self._windows.append((time.time(), None))
        keyed_at = time.monotonic()
        status: TxStatus = "sent"
        error: str | None = None
        drained = False
        try:
            self.line.key()
            logger.info("channel %s: keyed for %s", self.channel, label or "transmission")
            async with asyncio.timeout(c.tot_s):
                await asyncio.sleep(c.key_up_delay_ms / 1000)
                await self.sink.begin()
                async for chunk in _chunks(audio):
                    await self.sink.play(chunk)
                await self.sink.end(drain=True)
                drained = True
                await asyncio.sleep(c.tail_ms / 1000)
        except TimeoutError:
            status, error = "timeout", f"time-out timer ({c.tot_s:g} s) cut the transmission"
            logger.warning("channel %s: %s: %s", self.channel, label or "transmission", error)
        except (SinkError, LineError, OSError) as e:
            status, error = "failed", str(e)
            logger.error("channel %s: transmission %s failed: %s", self.channel, label, e)
        finally:
            unkey_error = self._release_ptt()  # first, before anything else can fail or be cancelled
            self._windows[-1] = (self._windows[-1][0], time.time())  # off the air: received audio is no echo
            self._current = None
            if not drained:
                try:
                    await self.sink.end(drain=False)
                except (SinkError, OSError) as e:
                    logger.debug("channel %s: sink stop after failure: %s", self.channel, e)
        if unkey_error is not None and status != "failed":
            status, error = "failed", unkey_error
        if status == "failed" and self.on_fault is not None:
            self.on_fault(f"{label or 'transmission'} failed: {error}")
        keyed = time.monotonic() - keyed_at
        logger.info("channel %s: unkeyed after %.1f s (%s)", self.channel, keyed, status)
        return self._finish(TxResult(status, label, waited, keyed, error))

    def _release_ptt(self) -> str | None:
        """Unkey without raising (it runs in `finally` and at close); a line that cannot be driven is logged and its
        error returned. The line keeps "unkeyed" as the wanted state and drives it once the device is back."""
        try:
            self.line.unkey()
        except LineError as e:
            logger.error("channel %s: %s", self.channel, e)
            return str(e)
        return None

    def _finish(self, result: TxResult) -> TxResult:
        self.counts[result.status] += 1
        if result.status == "busy":
            logger.warning(
                "channel %s: %s dropped, channel busy for %.1f s", self.channel, result.label or "transmission", result.waited
            )
        return result

    # --- hold-off while the channel is receiving ------------------------------------------------------------------

    def clear_now(self) -> bool:
        """Whether the channel has been quiet for `clear_ms` (a normal transmission may key)."""
        if self.channel_busy():
            self._quiet_since = None
            return False
        now = time.monotonic()
        if self._quiet_since is None:
            self._quiet_since = now
        quiet_for = now - self._quiet_since
        ended = self.speech_ended() if self.speech_ended is not None else None
        if ended is not None:  # quiet since the speech ended, not since the segmenter's hang-over closed it
            quiet_for = max(quiet_for, time.time() - ended)
        dropped = self.line.carrier_dropped_at  # catches a carrier that came and went between two looks
        if dropped is not None:
            quiet_for = min(quiet_for, time.time() - dropped)
        return quiet_for >= self.config.clear_ms / 1000

    async def _wait_clear(self, deadline: float) -> bool:
        """Wait until the channel has been quiet for clear_ms; False if `deadline` passes first."""
        while not self.clear_now():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return True

    # --- one transmission at a time, highest priority first ---------------------------------------------------------

    async def _take_turn(self, priority: Priority) -> None:
        if not self._busy_turn:  # a free turn means no live waiter is left (_give_turn hands it over directly)
            self._busy_turn = True
            self._waiters.clear()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-int(priority), next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._give_turn()  # we were handed the turn just as we were cancelled: pass it on
            raise

    def _give_turn(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._busy_turn = False


async def _chunks(audio: bytes | AsyncIterable[bytes]) -> AsyncIterable[bytes]:
    if isinstance(audio, bytes | bytearray | memoryview):
        data = bytes(audio)
        for i in range(0, len(data), CHUNK_BYTES):
            yield data[i : i + CHUNK_BYTES]
        return
    async for chunk in audio:
        yield chunk


def silence(seconds: float) -> bytes:
    """Digital silence of the given length (tests, tone-less keying)."""
    return bytes(int(seconds * 16000) * 2)

