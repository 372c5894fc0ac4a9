"""Live recognition: follows each channel's segmenter events, streams the audio into the recognition pool while
someone speaks (partials for the console and `on_partial`), and turns each finished utterance into a stored transcript.
When the segmenter hears the speaker pause (UtterancePaused) it asks for a partial at once, of all the audio so far,
handed over marked `paused` even when its words did not change: the dispatcher acts on it ~1 s before the hang-over
ends the utterance. If the pause goes on (the segmenter's second UtterancePaused, `settled`), the same partial is
handed over again marked `settled`: most likely all that will be said (the dispatcher alerts what its final would).
When the caller lets go of the key (the segmenter heard the squelch tail: `unkeyed`), the partial asked for is the
final itself, decoded there (`StreamHandle.pause(last=True)`) and handed over settled while the utterance is archived.

Nothing here ever drops an utterance. If the pool is full when speech starts, or recognition fails, the utterance
stays `pending` in the archive and the backlog sweep transcribes it later (also after a crash or restart). A failure
is retried on later sweeps, `MAX_ATTEMPTS` times in all; then the utterance is marked `asr_failed` and left for
people (`jingbao transcribe --archive` re-transcribes it once the cause is fixed): an unreadable file or an audio
that breaks the engine would otherwise be retried forever, ahead of newer speech.

An utterance is recognised once: its id is in `_busy` from the moment it is taken (speech start, or picked by the
sweep) until its status is written, and the sweep re-reads the status after taking it (its pending list is a
snapshot, possibly older than a live result).

A full disk does not hold recognition up. An utterance the archive could not write is held in its memory (with a
fault on /healthz): it is recognised and dispatched all the same, from the audio streamed while it was spoken or, when
the pool had no room then, by the sweep from the audio the channel handed over. Its status is kept with it by the
archive (`Archive.set_status`) and written with the row. A transcript the database cannot take (the same full disk)
is kept here and stored by a later sweep, the utterance staying taken (`_busy`) meanwhile; whoever it is handed to does
not wait for it. One still unstored when the service stops leaves its utterance `pending`: recognised again at the
next start.

An empty transcript (silence, squelch noise) is stored, so auditors see what the utterance gave, but not dispatched
-- unless its partials were handed to `on_partial` (the dispatcher may have raised a provisional incident on them): then
the final is handed over even when empty, and so is a discarded utterance's end, as an empty final, so that whoever saw
the partials always hears how the utterance ended.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from asr.store import TranscriptStore
from asr.transcript import Transcript
from asr.worker import PoolFull, PoolStats, RecognitionPool, StreamHandle
from bridge.archive import Archive, ArchivedUtterance, ArchiveError
from bridge.bus import EventBus
from bridge.events import (
    SegmentEvent,
    Utterance,
    UtteranceAudio,
    UtteranceDiscarded,
    UtterancePaused,
    UtteranceStarted,
)

logger = logging.getLogger(__name__)

BACKLOG_SWEEP_S = 5.0
MAX_ATTEMPTS = 3  # recognitions of one utterance (live or from the backlog) before it is marked asr_failed
LAG_LOG_EVERY_S = 60.0  # while recognition is behind, its lag is logged this often
BEHIND_AUDIO_S = 10.0  # undecoded audio (summed over streams) from which recognition counts as behind


@dataclass(slots=True, frozen=True)
class RecognisedUtterance:
    """What the dispatcher needs of an utterance (id, channel, start, end) with its final transcript; with a partial
    one, `end` is when the partial was heard (the utterance goes on), and `paused` says the speaker had paused
    (the partial holds everything said until then)."""

    id: str
    channel: str
    start: float
    end: float
    paused: bool = False
    settled: bool = False  # ... and the pause went on (`long_pause_ms`) or the key was let go of (a squelch tail)


@dataclass(slots=True)
class _Pause:
    """An utterance's latest pause (`number`: the recognition stream's count, which its partial carries): the partial
    taken there, once handed over, and whether the pause has settled (lasted `long_pause_ms`, or ended in a squelch
    tail) before that partial came."""

    number: int
    partial: tuple[Transcript, RecognisedUtterance] | None = None
    settled: bool = False


TranscriptHook = Callable[[Transcript, RecognisedUtterance], Awaitable[None]]
PartialHook = TranscriptHook  # called with each partial transcript while the utterance is still being spoken
PlaceWriter = Callable[[Transcript, str], Transcript]  # (a final, the channel it was heard on) -> its places named


@dataclass(slots=True, frozen=True)
class RecognitionLag:
    """How far recognition is behind: utterances waiting in the archive (per channel) and the pool's figures."""

    engine: str
    pending: dict[str, int]  # channel -> utterances archived and waiting for recognition (not being recognised now)
    pool: PoolStats

    @property
    def pending_total(self) -> int:
        return sum(self.pending.values())

    @property
    def behind(self) -> bool:
        return self.pending_total > 0 or self.pool.waiting_audio_s >= BEHIND_AUDIO_S

    def for_channel(self, channel: str) -> dict[str, Any]:
        """The figures of /api/channels: this channel's waiting utterances, and the pool's (shared by all channels)."""
        return {"engine": self.engine, "pending": self.pending.get(channel, 0), "pending_total": self.pending_total,
                "open": self.pool.open_streams, "waiting_audio_s": self.pool.waiting_audio_s,
                "oldest_wait_s": self.pool.oldest_wait_s, "rejected": self.pool.rejected,
                "heard_once": self.pool.heard_once, "heard_again": self.pool.heard_again, "failed": self.pool.failed}


class LiveRecognition:
    def __init__(
        self,
        pool: RecognitionPool,
        archive: Archive,
        store: TranscriptStore,
        bus: EventBus,
        on_transcript: TranscriptHook | None = None,
        on_partial: PartialHook | None = None,
        write_places: PlaceWriter | None = None,
        on_heard_again: TranscriptHook | None = None,
    ) -> None:
        """`on_partial` is called without being waited for (a task per partial, in order): a slow reader of partials
        never delays the console's partial lines nor the final. `write_places` (called in a worker thread, before a
        final is stored or shown) gives the final whose readable characters name the places found in it.
        `on_heard_again`: an utterance heard once live (recognition was behind) is heard again with the alternative
        hearings after its final was handed over, when recognition has time to spare; the final with them is stored,
        shown, and handed to this hook (the dispatcher reconsiders what it made of the final)."""
        self.pool = pool
        self.archive = archive
        self.store = store
        self.bus = bus
        self.on_transcript = on_transcript
        self.on_partial = on_partial
        self.write_places = write_places
        self.on_heard_again = on_heard_again
        self._partials_seen: dict[str, float] = {}  # utterance id -> start: partials handed to on_partial
        self._pauses: dict[str, _Pause] = {}  # utterance id -> its latest pause (a new one replaces it)
        self._streams: dict[str, StreamHandle] = {}
        self._busy: set[str] = set()  # utterance ids taken for recognition (live or from the backlog), until stored
        self._waiting: dict[str, str] = {}  # id -> channel: waiting for the sweep (pending in the archive, or held)
        self._unarchived: dict[str, Utterance] = {}  # not admitted and held by the archive: the sweep takes them
        self._unsaved: dict[str, tuple[Transcript, RecognisedUtterance]] = {}  # recognised; the database was full
        self._attempts: Counter[str] = Counter()  # failed recognitions per utterance (this run)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lag_logged: RecognitionLag | None = None  # the last lag logged while behind; None when caught up
        self._lag_logged_at = 0.0

    async def on_event(self, event: SegmentEvent, archived: ArchivedUtterance | None) -> None:
        """The channel hook: called for every segmenter event, after the archive has stored a final utterance (or held
        it: `archived` is None then)."""
        if isinstance(event, UtteranceStarted):
            self._start(event)
        elif isinstance(event, UtteranceAudio):
            handle = self._streams.get(event.utterance_id)
            if handle is not None:
                handle.feed(event.pcm, event.voiced)
            if event.voiced and (pause := self._pauses.get(event.utterance_id)) is not None:
                pause.settled = False  # speech again: the pause was a breath, not the end of the call
        elif isinstance(event, UtterancePaused):
            handle = self._streams.get(event.utterance_id)
            if handle is not None:
                if event.unkeyed:  # the key is up: the streams are finished at this pause, its partial is the final's
                    self._pauses[event.utterance_id] = _Pause(handle.pause(last=True), settled=True)
                elif event.settled:
                    self._settle_pause(event.utterance_id)
                else:
                    self._pauses[event.utterance_id] = _Pause(handle.pause())
        elif isinstance(event, UtteranceDiscarded):
            self._pauses.pop(event.utterance_id, None)
            handle = self._streams.pop(event.utterance_id, None)
            if handle is not None:
                handle.abort()
                self._busy.discard(event.utterance_id)
            start = self._partials_seen.pop(event.utterance_id, None)
            if start is not None and self.on_transcript is not None:  # it ended as nothing: tell who saw its partials
                ref = RecognisedUtterance(event.utterance_id, event.channel, start, start + event.duration)
                self._spawn(self._hand_over(Transcript(text="", pinyin=""), ref))
        elif isinstance(event, Utterance):
            pause = self._pauses.get(event.id)
            if pause is None or not pause.settled:  # (a settled pause's partial may come after the utterance ended,
                self._pauses.pop(event.id, None)  # the key let go of right after the pause: dropped once delivered)
            handle = self._streams.pop(event.id, None)
            if handle is not None:  # archived or held, its audio is all in the stream
                ref = RecognisedUtterance(event.id, event.channel, event.start, event.end)
                self._spawn(self._finish(handle, ref, event.pcm))
                return
            # not admitted (pool full): the backlog sweep takes it, from the archive (pending) or, held, from memory
            self._waiting[event.id] = event.channel
            if archived is None:
                self._unarchived[event.id] = event

    async def run_backlog(self) -> None:
        """Transcribe utterances left pending (by a crash, a full pool or a failed engine), oldest first, forever;
        and log the lag while recognition is behind."""
        self._spawn(self._report_lag())
        while True:
            await self.sweep_backlog()
            await asyncio.sleep(BACKLOG_SWEEP_S)

    async def sweep_backlog(self) -> None:
        """One pass: transcripts the database could not take, then the utterances pending in the archive, oldest
        first, then those held by the archive that recognition had no room for."""
        await self._store_unsaved()
        waiting_before = set(self._waiting).difference(self._unarchived)
        pending = await asyncio.to_thread(self.archive.pending)
        for gone in waiting_before.difference(pending):  # stored meanwhile by someone else (transcribe --archive)
            self._waiting.pop(gone, None)
        unknown = [i for i in pending if i not in self._waiting and i not in self._busy]  # left by a crash/restart
        if unknown:
            channels = await asyncio.to_thread(lambda: {i: self.archive.get(i).channel for i in unknown})
            self._waiting |= {i: channel for i, channel in channels.items() if i not in self._busy}
        for utterance_id in pending:
            self._unarchived.pop(utterance_id, None)  # written meanwhile: taken from the archive like any other
            await self._transcribe_archived(utterance_id)
        for utterance in list(self._unarchived.values()):
            await self._transcribe_held(utterance)

    def lag(self) -> RecognitionLag:
        return RecognitionLag(self.pool.name, dict(Counter(self._waiting.values())), self.pool.stats())

    async def close(self) -> None:
        if self._unsaved:
            logger.error("%d transcript(s) could not be stored (the database could not be written): their utterances "
                         "stay pending and are recognised again at the next start", len(self._unsaved))  # fmt: skip
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
        self._spawn(self._relay_partials(handle, event.channel, event.start))

    async def _relay_partials(self, handle: StreamHandle, channel: str, start: float) -> None:
        async for partial in handle.partials():
            transcript = partial.transcript
            self.bus.publish("partial", {"channel": channel, "utterance_id": handle.utterance_id,
                                         "at_pause": partial.at_pause, **transcript.to_dict()})
            if self.on_partial is not None:
                self._partials_seen[handle.utterance_id] = start
                pause = self._pauses.get(handle.utterance_id)
                if pause is not None and (not partial.at_pause or pause.number != partial.pause):
                    pause = None  # not the partial of the speaker's latest pause
                settled = pause is not None and pause.settled
                ref = RecognisedUtterance(handle.utterance_id, channel, start, time.time(), partial.at_pause, settled)
                if settled:
                    del self._pauses[handle.utterance_id]
                elif pause is not None:
                    pause.partial = (transcript, ref)  # handed over again, settled, if the pause goes on
                self._spawn(self._hand_partial(transcript, ref))

    def _settle_pause(self, utterance_id: str) -> None:
        """The speaker's pause has gone on for `long_pause_ms`: the partial taken at it is handed over again, marked
        settled, or will be when it comes (unless the speaker goes on first)."""
        pause = self._pauses.get(utterance_id)
        if pause is None or self.on_partial is None:
            return
        if pause.partial is None:
            pause.settled = True
            return
        del self._pauses[utterance_id]
        transcript, ref = pause.partial
        self._spawn(self._hand_partial(transcript, replace(ref, settled=True)))

    async def _hand_partial(self, partial: Transcript, ref: RecognisedUtterance) -> None:
        assert self.on_partial is not None
        try:
            await self.on_partial(partial, ref)
        except Exception:  # dispatching from partials must not stop recognition
            logger.exception("channel %s: dispatching a partial transcript of %s failed", ref.channel, ref.id)

    async def _finish(self, handle: StreamHandle, ref: RecognisedUtterance, pcm: bytes) -> None:
        try:
            try:
                transcript = await handle.finish()
            except Exception as e:
                await self._failed(ref.id, ref.channel, e)
                return
            await self._deliver(transcript, ref)
        finally:
            self._pauses.pop(ref.id, None)
            self._release(ref.id)
        if handle.heard_once and self.on_heard_again is not None and not transcript.empty:
            await self._hear_again(pcm[: handle.decoded_bytes], transcript, ref)

    async def _hear_again(self, pcm: bytes, final: Transcript, ref: RecognisedUtterance) -> None:
        """The utterance heard once live, heard again with the alternative hearings (when recognition has time to
        spare): stored with them, shown (its places named again), and handed to `on_heard_again`. Its final was
        stored and dispatched already: nothing here can lose it."""
        assert self.on_heard_again is not None
        again = await self.pool.hear_again(pcm, final, ref.id)
        if again is None:
            return
        again = await self._with_places(again, ref)
        # stored as any final is (one waiting for the database is replaced by it, and waits as that one did)
        if await self._store(again, ref):
            self._release(ref.id)
        logger.info("channel %s: %s heard again with the alternative hearings", ref.channel, ref.id)
        self.bus.publish("transcript", {"channel": ref.channel, "utterance_id": ref.id, "start": ref.start,
                                        **again.to_dict()})
        try:
            await self.on_heard_again(again, ref)
        except Exception:
            logger.exception("channel %s: reconsidering %s heard again failed", ref.channel, ref.id)

    async def _transcribe_archived(self, utterance_id: str) -> None:
        if utterance_id in self._busy:  # being recognised live (or already taken): checked and taken at once
            return
        self._busy.add(utterance_id)
        try:
            row = await asyncio.to_thread(self.archive.get, utterance_id)
            self._waiting.pop(utterance_id, None)
            if row.status != "pending":  # a live result stored since the sweep's snapshot
                return
            try:
                pcm = await asyncio.to_thread(self.archive.read_pcm, utterance_id)
                transcript = await self.pool.transcribe(pcm, utterance_id)
            except Exception as e:
                await self._failed(utterance_id, row.channel, e)
                return
            ref = RecognisedUtterance(row.id, row.channel, row.start_ms / 1000, row.end_ms / 1000)
            logger.info("channel %s: pending utterance %s transcribed from the archive", row.channel, utterance_id)
            await self._deliver(transcript, ref)
        finally:
            self._release(utterance_id)

    async def recognised_elsewhere(self, utterance_id: str, transcript: Transcript) -> bool:
        """A transcript made elsewhere (a recognition worker of the central tier, bridge/recognition_node.py) of an
        utterance still pending here: delivered as if recognised here (stored, shown, dispatched, marked transcribed),
        so this box does not recognise it too. False when it is not pending here (recognised meanwhile, or being)."""
        if utterance_id in self._busy:
            return False
        self._busy.add(utterance_id)
        try:
            try:
                row = await asyncio.to_thread(self.archive.get, utterance_id)
            except ArchiveError:  # not this box's (a payload naming another's), or held unarchived: left as it is
                return False
            if row.status != "pending":
                return False
            self._waiting.pop(utterance_id, None)
            self._unarchived.pop(utterance_id, None)  # (held in memory, then written: the sweep must not take it too)
            logger.info("channel %s: pending utterance %s recognised by the central tier's workers", row.channel,
                        utterance_id)  # fmt: skip
            await self._deliver(transcript, RecognisedUtterance(row.id, row.channel, row.start_ms / 1000, row.end_ms / 1000))
            return True
        finally:
            self._release(utterance_id)

    async def _transcribe_held(self, utterance: Utterance) -> None:
        """An utterance the archive holds in memory (its disk full) and the pool had no room for when it was spoken."""
        if utterance.id in self._busy or utterance.id not in self._unarchived:  # (taken since the sweep's snapshot)
            return
        self._busy.add(utterance.id)
        try:
            try:
                transcript = await self.pool.transcribe(utterance.pcm, utterance.id)
            except Exception as e:
                await self._failed(utterance.id, utterance.channel, e)
                return
            self._unarchived.pop(utterance.id, None)
            self._waiting.pop(utterance.id, None)
            logger.info("channel %s: utterance %s, not archived yet, transcribed from memory", utterance.channel,
                        utterance.id)  # fmt: skip
            await self._deliver(transcript, RecognisedUtterance(utterance.id, utterance.channel, utterance.start,
                                                                utterance.end))  # fmt: skip
        finally:
            self._release(utterance.id)

    def _release(self, utterance_id: str) -> None:
        """Recognition of the utterance is over: a sweep may look at it again, unless its transcript waits to be
        stored (then it stays taken, or the sweep would find it pending and recognise it twice)."""
        if utterance_id not in self._unsaved:
            self._busy.discard(utterance_id)

    async def _failed(self, utterance_id: str, channel: str, error: Exception) -> None:
        """A failed recognition: left pending for a later sweep, or marked asr_failed after MAX_ATTEMPTS."""
        self._attempts[utterance_id] += 1
        attempt = self._attempts[utterance_id]
        if attempt < MAX_ATTEMPTS:
            logger.warning("channel %s: recognition of %s failed (attempt %d of %d: %s); it stays pending",
                           channel, utterance_id, attempt, MAX_ATTEMPTS, error)
            self._waiting[utterance_id] = channel
            return
        logger.error("channel %s: recognition of %s failed %d times (last: %s); marked asr_failed, not retried",
                     channel, utterance_id, attempt, error)
        del self._attempts[utterance_id]
        self._unarchived.pop(utterance_id, None)
        self._waiting.pop(utterance_id, None)
        await asyncio.to_thread(self.archive.set_status, utterance_id, "asr_failed")

    async def _deliver(self, transcript: Transcript, ref: RecognisedUtterance) -> None:
        """Stored, shown, dispatched, and only then marked transcribed: a crash before the mark leaves the utterance
        pending, and the next start recognises and dispatches it again (at worst a report twice, which merges into its
        incident; a report marked transcribed before dispatch had it would be lost to a crash in between)."""
        transcript = await self._with_places(transcript, ref)
        stored = await self._store(transcript, ref, mark=False)
        shown = transcript.shown or "(nothing recognised)"
        logger.info("channel %s: %s transcribed: %s", ref.channel, ref.id, shown[:80])
        self.bus.publish("transcript", {"channel": ref.channel, "utterance_id": ref.id, "start": ref.start,
                                        **transcript.to_dict()})
        partials_seen = self._partials_seen.pop(ref.id, None) is not None
        if not transcript.empty or partials_seen:  # silence or noise: nothing to dispatch (stored, for the audit)
            await self._hand_over(transcript, ref)
        if stored:
            await self._store(transcript, ref, save=False)

    async def _with_places(self, transcript: Transcript, ref: RecognisedUtterance) -> Transcript:
        """The final with the places found in it named in its readable characters; as it was when that fails (the
        characters are for people: never a reason to lose the transcript)."""
        if self.write_places is None or transcript.empty:
            return transcript
        try:
            return await asyncio.to_thread(self.write_places, transcript, ref.channel)
        except Exception:
            logger.exception("channel %s: naming the places heard in %s failed; its characters stay as decoded",
                             ref.channel, ref.id)  # fmt: skip
            return transcript

    async def _store(self, transcript: Transcript, ref: RecognisedUtterance, *, save: bool = True, mark: bool = True
                     ) -> bool:
        """The transcript stored (`save`), then the utterance marked transcribed (`mark`; a held one keeps the status
        until it is written). False when the database cannot be written now: the transcript waits in `_unsaved` for a
        sweep, which stores and marks it."""
        try:
            if save:
                await asyncio.to_thread(self.store.save, ref.id, ref.channel, ref.start, transcript)
            if mark:
                await asyncio.to_thread(self.archive.set_status, ref.id, "transcribed")
        except (OSError, sqlite3.Error) as e:
            if ref.id not in self._unsaved:
                logger.error("channel %s: the transcript of %s cannot be stored now (%s); kept in memory until the "
                             "database can be written", ref.channel, ref.id, e)  # fmt: skip
            self._unsaved[ref.id] = (transcript, ref)
            return False
        except ArchiveError as e:  # neither archived nor held (the archive refused it): the transcript is all there is
            logger.error("channel %s: %s has no archive row to mark transcribed: %s", ref.channel, ref.id, e)
        self._unsaved.pop(ref.id, None)
        self._attempts.pop(ref.id, None)
        return True

    async def _store_unsaved(self) -> None:
        for transcript, ref in list(self._unsaved.values()):
            if not await self._store(transcript, ref):
                return  # the database is still full: the rest waits for the next sweep too
            logger.info("channel %s: the transcript of %s is stored at last", ref.channel, ref.id)
            self._release(ref.id)

    async def _hand_over(self, transcript: Transcript, ref: RecognisedUtterance) -> None:
        if self.on_transcript is not None:
            try:
                await self.on_transcript(transcript, ref)
            except Exception:  # dispatch problems must not stop recognition of the next utterance
                logger.exception("channel %s: dispatching %s failed", ref.channel, ref.id)

    async def _report_lag(self) -> None:
        while True:
            self.log_lag()
            await asyncio.sleep(BACKLOG_SWEEP_S)  # "caught up" is said within a few seconds

    def log_lag(self) -> None:
        """While recognition is behind, a warning with its lag when it falls behind and every `LAG_LOG_EVERY_S`
        after; one line when it has caught up."""
        lag, now = self.lag(), time.monotonic()
        if not lag.behind:
            if self._lag_logged is not None:
                logger.info("speech recognition caught up (%d utterances recognised, %d failed since start)",
                            lag.pool.completed, lag.pool.failed)
                self._lag_logged = None
            return
        if self._lag_logged is not None and now - self._lag_logged_at < LAG_LOG_EVERY_S:
            return
        trend = f" (was {self._lag_logged.pending_total})" if self._lag_logged is not None else ""
        waiting = ", ".join(f"{channel} {n}" for channel, n in sorted(lag.pending.items())) or "none"
        logger.warning("speech recognition behind: %d utterances pending%s [%s]; %d being recognised, %.1f s of "
                       "audio not decoded yet, oldest waiting %.1f s; %d refused by the full pool since start",
                       lag.pending_total, trend, waiting, lag.pool.open_streams, lag.pool.waiting_audio_s,
                       lag.pool.oldest_wait_s, lag.pool.rejected)
        self._lag_logged, self._lag_logged_at = lag, now

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
