"""One channel's receive chain, supervised: source -> segmenter -> archive, with its live state for the console.

The channel is its own task. When its source dies it is re-opened with back-off and the fault stays visible
until the source works again; utterances already accepted are never affected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.archive import Archive, ArchivedUtterance
from bridge.audio import Frame
from bridge.backoff import Backoff
from bridge.bus import EventBus
from bridge.config import ChannelConfig
from bridge.events import SegmentEvent, Utterance, UtteranceAudio, UtteranceDiscarded, UtterancePaused, UtteranceStarted
from bridge.segmenter import Segmenter
from bridge.sources import Source, SourceError, open_source
from hardware.lines import Line
from hardware.receive import receive
from hardware.transmit import Transmitter

logger = logging.getLogger(__name__)

# Called for every segmenter event after the utterance (if any) is archived: the ASR stage hooks in here.
EventHook = Callable[[SegmentEvent, ArchivedUtterance | None], Awaitable[None]]

LEVEL_PUBLISH_INTERVAL = 0.2  # seconds between level updates on the live bus (5 Hz is plenty for a meter)
LISTEN_BUFFER_FRAMES = 50  # 1 s: a live listener that falls further behind loses its oldest audio, not the channel


# What a fault is about, so that the end of one cause clears only its own faults.
FaultKind = Literal["source", "archive", "radio"]


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

    def fault(self, message: str, kind: FaultKind = "source") -> None:
        self.faults.append(Fault(time.time(), message, kind))

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
        }


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
        self.segmenter = Segmenter(config.id, config.vad)
        self.state = ChannelState(config.id, config.name, config.source.type)
        self._last_level_publish = 0.0
        self._level_peak = -120.0  # the loudest frame since the last level event: a meter shows peaks, not a sample
        self.line: Line | None = None  # set by the service when the channel has a control line
        self.transmitter: Transmitter | None = None  # set by the service when the channel can transmit
        self._listeners: set[asyncio.Queue[bytes]] = set()

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
        finally:
            self.state.running = False
            self.state.talking = False

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
        frames = self.source.frames()
        if self.line is None and self.transmitter is None:
            return frames
        tail = self.config.line.squelch_tail_ms if self.config.line is not None else 0
        return receive(frames, self.line, self.transmitter, tail)

    async def _handle(self, event: SegmentEvent) -> None:
        archived: ArchivedUtterance | None = None
        if isinstance(event, UtteranceStarted):
            self.state.talking = True
            self.bus.publish("channel", self.state.to_dict())
        elif isinstance(event, UtteranceDiscarded):
            self.state.talking = False
            self.state.discarded += 1
            self.bus.publish("channel", self.state.to_dict())
        elif isinstance(event, Utterance):
            self.state.talking = False
            archived = await self._archive(event)
        elif not isinstance(event, UtteranceAudio | UtterancePaused):
            raise TypeError(f"unexpected segmenter event {event!r}")
        if self.on_event is not None:
            await self.on_event(event, archived)

    async def _archive(self, utt: Utterance) -> ArchivedUtterance | None:
        try:
            archived = await asyncio.to_thread(self.archive.store, utt)
        except Exception as e:  # the archive keeps the audio and records its own fault; make it visible here too
            logger.exception("channel %s: utterance %s could not be archived", self.config.id, utt.id)
            self.state.fault(f"archive failed for {utt.id}: {e}", "archive")
            self.bus.publish("fault", {"channel": self.config.id, "utterance_id": utt.id, "message": str(e)})
            return None
        if archived.fault:  # kept in a fallback format: nothing lost, but someone must look at the encoder or disk
            self.state.fault(f"utterance {utt.id} archived as {archived.format}: {archived.fault}", "archive")
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
