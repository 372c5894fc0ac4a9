"""Live recognition: follows each channel's segmenter events, streams the audio into the recognition pool while
someone speaks (partials for the console), and turns each archived utterance into a stored transcript.

Nothing here ever drops an utterance. If the pool is full when speech starts, or recognition fails, the utterance
stays `pending` in the archive and the backlog sweep transcribes it later (also after a crash or restart).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asr.store import TranscriptStore
from asr.transcript import Transcript
from asr.worker import PoolFull, RecognitionPool, StreamHandle
from bridge.archive import Archive, ArchivedUtterance
from bridge.bus import EventBus
from bridge.events import SegmentEvent, Utterance, UtteranceAudio, UtteranceDiscarded, UtteranceStarted

logger = logging.getLogger(__name__)

BACKLOG_SWEEP_S = 5.0


@dataclass(slots=True, frozen=True)
class RecognisedUtterance:
    """What the dispatcher needs of an utterance (id, channel, start, end) with its final transcript."""

    id: str
    channel: str
    start: float
    end: float


TranscriptHook = Callable[[Transcript, RecognisedUtterance], Awaitable[None]]


class LiveRecognition:
    def __init__(
        self,
        pool: RecognitionPool,
        archive: Archive,
        store: TranscriptStore,
        bus: EventBus,
        on_transcript: TranscriptHook | None = None,
    ) -> None:
        self.pool = pool
        self.archive = archive
        self.store = store
        self.bus = bus
        self.on_transcript = on_transcript
        self._streams: dict[str, StreamHandle] = {}
        self._busy: set[str] = set()  # utterance ids being recognised now (live or from the backlog)
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_event(self, event: SegmentEvent, archived: ArchivedUtterance | None) -> None:
        """The channel hook: called for every segmenter event, after the archive has stored a final utterance."""
        if isinstance(event, UtteranceStarted):
            self._start(event)
        elif isinstance(event, UtteranceAudio):
            handle = self._streams.get(event.utterance_id)
            if handle is not None:
                handle.feed(event.pcm)
        elif isinstance(event, UtteranceDiscarded):
            handle = self._streams.pop(event.utterance_id, None)
            if handle is not None:
                handle.abort()
                self._busy.discard(event.utterance_id)
        elif isinstance(event, Utterance):
            handle = self._streams.pop(event.id, None)
            if handle is None:
                return  # not admitted (pool full): it stays pending for the backlog sweep
            if archived is None:  # not archived (the archive holds it and shows a fault): nothing to attach to
                handle.abort()
                self._busy.discard(event.id)
                return
            ref = RecognisedUtterance(event.id, event.channel, event.start, event.end)
            self._spawn(self._finish(handle, ref))

    async def run_backlog(self) -> None:
        """Transcribe utterances left pending (by a crash, a full pool or a failed engine), oldest first, forever."""
        while True:
            for utterance_id in await asyncio.to_thread(self.archive.pending):
                if utterance_id in self._busy:
                    continue
                await self._transcribe_archived(utterance_id)
            await asyncio.sleep(BACKLOG_SWEEP_S)

    async def close(self) -> None:
        for handle in self._streams.values():
            handle.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, event: UtteranceStarted) -> None:
        try:
            handle = self.pool.open(event.utterance_id)
        except PoolFull:
            return
        self._streams[event.utterance_id] = handle
        self._busy.add(event.utterance_id)
        handle.feed(event.pcm)
        self._spawn(self._relay_partials(handle, event.channel))

    async def _relay_partials(self, handle: StreamHandle, channel: str) -> None:
        async for partial in handle.partials():
            self.bus.publish("partial", {"channel": channel, "utterance_id": handle.utterance_id, **partial.to_dict()})

    async def _finish(self, handle: StreamHandle, ref: RecognisedUtterance) -> None:
        try:
            transcript = await handle.finish()
        except Exception:
            logger.exception("channel %s: recognition of %s failed; it stays pending", ref.channel, ref.id)
            return
        finally:
            self._busy.discard(ref.id)
        await self._deliver(transcript, ref)

    async def _transcribe_archived(self, utterance_id: str) -> None:
        row = await asyncio.to_thread(self.archive.get, utterance_id)
        if row is None:
            return
        self._busy.add(utterance_id)
        try:
            pcm = await asyncio.to_thread(self.archive.read_pcm, utterance_id)
            transcript = await self.pool.transcribe(pcm, utterance_id)
        except Exception as e:
            logger.error("utterance %s: cannot transcribe from the archive (%s); marked asr_failed", utterance_id, e)
            await asyncio.to_thread(self.archive.set_status, utterance_id, "asr_failed")
            return
        finally:
            self._busy.discard(utterance_id)
        ref = RecognisedUtterance(row.id, row.channel, row.start_ms / 1000, row.end_ms / 1000)
        logger.info("channel %s: pending utterance %s transcribed from the archive", row.channel, utterance_id)
        await self._deliver(transcript, ref)

    async def _deliver(self, transcript: Transcript, ref: RecognisedUtterance) -> None:
        await asyncio.to_thread(self.store.save, ref.id, ref.channel, ref.start, transcript)
        await asyncio.to_thread(self.archive.set_status, ref.id, "transcribed")
        shown = transcript.text or transcript.pinyin or "(nothing recognised)"
        logger.info("channel %s: %s transcribed: %s", ref.channel, ref.id, shown[:80])
        self.bus.publish("transcript", {"channel": ref.channel, "utterance_id": ref.id, "start": ref.start,
                                        **transcript.to_dict()})
        if self.on_transcript is not None:
            try:
                await self.on_transcript(transcript, ref)
            except Exception:  # dispatch problems must not stop recognition of the next utterance
                logger.exception("channel %s: dispatching %s failed", ref.channel, ref.id)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
