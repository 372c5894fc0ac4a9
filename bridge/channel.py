"""One channel's receive chain, supervised: source -> segmenter -> archive, with its live state for the console.

The channel is its own task. When its source dies it is re-opened with back-off and the fault stays visible
until the source works again; utterances already accepted are never affected. When the task is cancelled (the
service stopping) an utterance being spoken is closed as one (end reason "shutdown") and archived before it ends.

When the channel falls behind (its archive or recognition hand-over is slow, the process is busy), its source holds
the audio and the channel takes it late: nothing is skipped. How late is measured on every frame it takes (the
frame's stamp against the wall clock) and shown as `behind_s`; more than a second behind is a "behind" fault until
it has caught up. A live source whose buffer overflows all the same drops audio and counts it (`skipped_s`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.archive import Archive, ArchivedUtterance, ArchiveUnavailable
from bridge.audio import FRAME_MS, Frame
from bridge.backoff import Backoff
from bridge.bus import EventBus
from bridge.config import ChannelConfig
from bridge.events import SegmentEvent, Utterance, UtteranceAudio, UtteranceDiscarded, UtterancePaused, UtteranceStarted
from bridge.segmenter import Segmenter
from bridge.sources import Source, SourceError, open_source
from hardware.lines import Line
from hardware.receive import ReceiveStats, receive
from hardware.transmit import Transmitter

logger = logging.getLogger(__name__)

# Called for every segmenter event after the utterance (if any) is archived: the ASR stage hooks in here.
EventHook = Callable[[SegmentEvent, ArchivedUtterance | None], Awaitable[None]]

LEVEL_PUBLISH_INTERVAL = 0.2  # seconds between level updates on the live bus (5 Hz is plenty for a meter)
LISTEN_BUFFER_FRAMES = 50  # 1 s: a live listener that falls further behind loses its oldest audio, not the channel
FRAME_S = FRAME_MS / 1000
BEHIND_FAULT_S = 1.0  # a channel taking its audio later than this after it was on the air shows a "behind" fault
CAUGHT_UP_S = 0.5  # ... until it is back under this (live sources' stamps carry a few hundred ms of buffering)


# What a fault is about, so that the end of one cause clears only its own faults. "archive": an utterance the archive
# could not write (held in memory) until none of the channel's is held; "encode": one stored in the fallback format
# until the next is stored as configured.
FaultKind = Literal["source", "archive", "encode", "radio", "behind"]


@dataclass(slots=True)
class Fault:
    at: float
    message: str
    kind: FaultKind = "source"
    active: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "message": self.message, "kind": self.kind, "active": self.active}


@dataclass
class ChannelState:
    """What the console shows for a channel."""

    id: str
    name: str
    source_type: str
    running: bool = False
    talking: bool = False
    level_dbfs: float = -120.0
    utterances: int = 0
    discarded: int = 0
    last_utterance: dict[str, Any] | None = None
    faults: deque[Fault] = field(default_factory=lambda: deque(maxlen=20))
    restarts: int = 0
    behind_s: float = 0.0  # how long ago the audio the channel last took was on the air (0: keeping up)
    skipped_s: float = 0.0  # audio its source had to drop since the start (a buffer overflowed); 0 in normal operation

    def fault(self, message: str, kind: FaultKind = "source") -> Fault:
        fault = Fault(time.time(), message, kind)
        self.faults.append(fault)
        return fault

    def clear_faults(self, kind: FaultKind) -> None:
        """What caused faults of this kind is over (the source re-opened, the radio is back); the others stay."""
        for f in self.faults:
            if f.kind == kind:
                f.active = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "source": self.source_type,
            "running": self.running,
            "talking": self.talking,
            "level_dbfs": round(self.level_dbfs, 1),
            "utterances": self.utterances,
            "discarded": self.discarded,
            "last_utterance": self.last_utterance,
            "faults": [f.to_dict() for f in self.faults],
            "active_faults": sum(f.active for f in self.faults),
            "restarts": self.restarts,
            "behind_s": round(self.behind_s, 2),
            "skipped_s": round(self.skipped_s, 2),
        }


@dataclass(slots=True)
class _BehindSpell:
    """A time the channel spent more than BEHIND_FAULT_S behind real time (or losing audio), until it caught up."""

    since: float  # monotonic
    most: float  # the furthest behind it was, in seconds
    fault: Fault
    dropped: float = 0.0  # audio the source dropped meanwhile, in seconds

    def describe(self) -> str:
        if self.dropped:
            return f"fell {self.most:.1f} s behind real time; {self.dropped:.1f} s of audio dropped (its buffer overflowed)"
        return f"fell {self.most:.1f} s behind real time: its audio is taken late, none skipped"


class Channel:
    def __init__(
        self,
        config: ChannelConfig,
        archive: Archive,
        bus: EventBus,
        on_event: EventHook | None = None,
        source: Source | None = None,
    ) -> None:
        self.config = config
        self.archive = archive
        self.bus = bus
        self.on_event = on_event
        self.source = source or open_source(config.id, config.source)
        squelch_tail_ms = config.line.squelch_tail_ms if config.line is not None else 0
        self.segmenter = Segmenter(config.id, config.vad, squelch_tail_ms)
        self.state = ChannelState(config.id, config.name, config.source.type)
        self._last_level_publish = 0.0
        self._level_peak = -120.0  # the loudest frame since the last level event: a meter shows peaks, not a sample
        self.line: Line | None = None  # set by the service when the channel has a control line
        self.transmitter: Transmitter | None = None  # set by the service when the channel can transmit
        self.receive_stats = ReceiveStats()  # what the receive glue did, e.g. audio muted while transmitting
        self._listeners: set[asyncio.Queue[bytes]] = set()
        self._behind: _BehindSpell | None = None
        self.closed_at_shutdown = 0  # utterances being spoken when the service stopped, closed and archived
        self._paused_at: float | None = None  # when the open utterance's speech last stopped (its last pause began)
        self._quiet_since = float("-inf")  # wall clock: since when the channel is quiet (its last utterance closed)

    def rejections(self) -> dict[str, Any]:
        """What the source refused since the start (packets, files, pushed audio), by kind, and the latest refusal
        or loss of its input."""
        stats = self.source.stats
        return {"rejected": stats.rejected, "rejected_by": dict(stats.rejected_by), "source_error": stats.last_error,
                "stream_switches": getattr(stats, "switches", None)}

    def muting(self) -> dict[str, Any]:
        """Seconds of received audio muted since the start because the channel was transmitting (its own echo, and
        whatever was said on the channel meanwhile: a radio hears nothing while it transmits)."""
        return {"muted_s": round(self.receive_stats.muted_s, 1)}

    async def listen(self) -> AsyncIterator[bytes]:
        """The channel's received audio, live, as 20 ms PCM frames (for an operator listening on the console)."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(LISTEN_BUFFER_FRAMES)
        self._listeners.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.discard(queue)

    async def run(self) -> None:
        """Receive until the source ends for good (a file without loop) or the task is cancelled."""
        backoff = Backoff(maximum=getattr(self.config.source, "reopen_backoff_max", 30.0))
        self.state.running = True
        try:
            while True:
                try:
                    logger.info("channel %s: opening %s source", self.config.id, self.config.source.type)
                    async for frame in self._frames():
                        if backoff.attempt:
                            logger.info("channel %s: source re-opened", self.config.id)
                            self.state.clear_faults("source")
                            backoff.reset()
                        for event in self.segmenter.feed(frame):
                            await self._handle(event)
                        self._publish_level()
                        if self._listeners:
                            self._send_to_listeners(frame.pcm)
                    for event in self.segmenter.flush():
                        await self._handle(event)
                    logger.info("channel %s: source ended", self.config.id)
                    return
                except SourceError as e:
                    delay = await self._source_lost(backoff, f"source lost: {e}")
                    logger.warning("channel %s: source lost (%s); re-opening in %.1f s", self.config.id, e, delay)
                    await asyncio.sleep(delay)
                except Exception as e:
                    # A failure nobody foresaw (a bug, odd input a source does not turn into SourceError) must not
                    # end this task: in the service's TaskGroup that would stop every channel. Restart this one.
                    delay = await self._source_lost(backoff, f"unexpected error: {type(e).__name__}: {e}")
                    logger.exception("channel %s: unexpected error; re-opening the source in %.1f s", self.config.id, delay)
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            await self._close_at_shutdown()
            raise
        finally:
            self.state.running = False
            self.state.talking = False

    async def _close_at_shutdown(self) -> None:
        """The service is stopping: what is being said is an utterance too (cut short, end reason "shutdown"), archived
        like any other, rather than lost with the process."""
        for event in self.segmenter.flush("shutdown"):
            if isinstance(event, Utterance):
                self.closed_at_shutdown += 1
                logger.warning("channel %s: utterance %s was being spoken when the service stopped: closed after %.1f s "
                               "(end reason shutdown)", self.config.id, event.id, event.duration)  # fmt: skip
            await self._handle(event)

    async def _source_lost(self, backoff: Backoff, fault: str) -> float:
        """Close what the segmenter holds, make the fault visible; returns the delay before re-opening."""
        for event in self.segmenter.flush():
            await self._handle(event)
        self.state.restarts += 1
        self.state.fault(fault)
        self.bus.publish("channel", self.state.to_dict())
        return backoff.next_delay()

    def _frames(self) -> AsyncIterator[Frame]:
        """The source's frames, stamped with carrier (COR/VOX) and with jingbao's own transmissions muted."""
        # measured as they leave the source, before a VOX line's delay line (which holds every frame on purpose)
        frames = self._measured(self.source.frames())
        if self.line is None and self.transmitter is None:
            return frames
        return receive(frames, self.line, self.transmitter, self.receive_stats)

    async def _measured(self, frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for frame in frames:
            self._measure_lag(time.time() - frame.ts - FRAME_S)
            yield frame

    def _measure_lag(self, lag: float) -> None:
        """`lag`: how long ago the frame just taken ended (negative for a file replayed faster than real time)."""
        state, skipped = self.state, self.source.stats.skipped_s
        state.behind_s = max(0.0, lag)
        spell, began = self._behind, False
        if spell is None:
            if lag <= BEHIND_FAULT_S and skipped <= state.skipped_s:
                return
            spell = self._behind = _BehindSpell(time.monotonic(), lag, state.fault("", "behind"))
            began = True
            logger.warning("channel %s: %.1f s behind real time; its source holds the audio until it catches up",
                           self.config.id, lag)  # fmt: skip
        spell.most = max(spell.most, lag)
        spell.dropped += skipped - state.skipped_s
        state.skipped_s = skipped
        spell.fault.message = spell.describe()
        if began:
            self.bus.publish("channel", state.to_dict())
        if lag < CAUGHT_UP_S:
            log = logger.warning if spell.dropped else logger.info
            log("channel %s: caught up with real time after %.1f s; it %s", self.config.id, time.monotonic() - spell.since,
                spell.describe())
            state.clear_faults("behind")
            self._behind = None
            self.bus.publish("channel", state.to_dict())

    def speech_ended(self) -> float | None:
        """When the speech the channel last heard ended (wall clock), for the transmitter's hold-off; None while it
        hears someone."""
        return None if self.state.talking else self._quiet_since

    async def _handle(self, event: SegmentEvent) -> None:
        archived: ArchivedUtterance | None = None
        if isinstance(event, UtteranceStarted):
            self.state.talking = True
            self._paused_at = None
            self.bus.publish("channel", self.state.to_dict())
        elif isinstance(event, UtterancePaused):
            self._paused_at = event.speech_end
        elif isinstance(event, UtteranceDiscarded):
            self.state.talking = False
            self._quiet_since = time.time()
            self.state.discarded += 1
            self.bus.publish("channel", self.state.to_dict())
        elif isinstance(event, Utterance):
            self.state.talking = False
            # closed by its hang-over: the channel has been quiet since the pause that began it (the segmenter says
            # when each pause began, the last one included), as long in the audio as from then to the utterance's end,
            # less what the channel has not heard yet when it is behind real time (someone may be talking in it);
            # cut by the carrier or at its longest: quiet from now
            now = time.time()
            quiet_s = event.end - self._paused_at if event.reason == "silence" and self._paused_at is not None else 0.0
            self._quiet_since = now - max(0.0, quiet_s - max(0.0, now - event.end))
            archived = await self._archive(event)
        elif not isinstance(event, UtteranceAudio):
            raise TypeError(f"unexpected segmenter event {event!r}")
        if self.on_event is not None:
            await self.on_event(event, archived)

    async def _archive(self, utt: Utterance) -> ArchivedUtterance | None:
        try:
            archived = await asyncio.to_thread(self.archive.store, utt)
        except ArchiveUnavailable as e:  # held in memory (its own fault in the archive): visible here until written
            logger.error("channel %s: utterance %s not archived yet: %s", self.config.id, utt.id, e)
            self._archive_failed(utt, f"utterance {utt.id} not archived yet, held in memory: {e}")
            return None
        except Exception as e:
            logger.exception("channel %s: utterance %s could not be archived", self.config.id, utt.id)
            self._archive_failed(utt, f"archive failed for {utt.id}: {e}")
            return None
        self._encoded(archived)
        self.state.utterances += 1
        self.state.last_utterance = {
            "id": utt.id,
            "start": utt.start,
            "end": utt.end,
            "duration": round(utt.duration, 2),
            "reason": utt.reason,
        }
        logger.info(
            "channel %s: utterance %d archived (%s, %.1f s, %s)",
            self.config.id, self.state.utterances, utt.id, utt.duration, utt.reason,
        )
        self.bus.publish("utterance", {"channel": self.config.id, **self.state.last_utterance})
        self.bus.publish("channel", self.state.to_dict())
        return archived

    def archived_late(self, archived: ArchivedUtterance) -> None:
        """One of this channel's held utterances is written at last (on the loop; the archive's hook says so): once
        none is held, the "archive" fault ends."""
        self.state.utterances += 1
        self._encoded(archived)
        if not self.archive.holds(self.config.id):
            self.state.clear_faults("archive")
        self.bus.publish("channel", self.state.to_dict())

    def _archive_failed(self, utt: Utterance, message: str) -> None:
        self.state.fault(message, "archive")
        self.bus.publish("fault", {"channel": self.config.id, "utterance_id": utt.id, "message": message})

    def _encoded(self, archived: ArchivedUtterance) -> None:
        if archived.fault:  # kept in a fallback format: nothing lost, but someone must look at the encoder
            self.state.fault(f"utterance {archived.id} archived as {archived.format}: {archived.fault}", "encode")
        else:
            self.state.clear_faults("encode")

    def _send_to_listeners(self, pcm: bytes) -> None:
        for queue in self._listeners:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(pcm)

    def _publish_level(self) -> None:
        now = time.monotonic()
        self.state.level_dbfs = self.segmenter.level_dbfs
        self._level_peak = max(self._level_peak, self.state.level_dbfs)
        if now - self._last_level_publish >= LEVEL_PUBLISH_INTERVAL:
            self._last_level_publish = now
            self.bus.publish(
                "level", {"channel": self.config.id, "level_dbfs": round(self._level_peak, 1), "talking": self.state.talking}
            )
            self._level_peak = -120.0
