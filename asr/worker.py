"""Recognition off the event loop: streams decode in a pool of worker threads; the loop only moves bytes.

Threads, not processes: both engines release the GIL while decoding (Vosk through cffi, sherpa-onnx in its
pybind11 calls: a Python loop kept 61-76 % of its pace beside a decoding thread), so threads share one copy of
each model and need no IPC. `bench/asr_speed.py` (sherpa engine, 2 workers, the 2 shared cores; docs/performance.md):
threads 16.9x real time vs processes 11.8x at load ~3; at load 4-6 from other work the runs scatter (8.4x vs 8.5x,
12.6x vs 7.9x, 23.7x vs 27.4x), with no clear winner. Processes never won by more than that noise.

Scheduling: each utterance is a `StreamHandle`. `feed()` only appends to the handle's buffer; a handle with audio
waiting is queued on the executor, decodes at most `MAX_BATCH_S` of it, and queues itself again when more is left,
so a long re-transcription cannot starve live channels (round robin in arrival order). A handle with a decision
waiting on it -- the speaker paused (a partial to dispatch on) or stopped (the final), and no more than one batch
left to decode -- is served before the streams that are only being fed: those lose a few milliseconds, the alert
does not wait behind their batches (a whole archived utterance re-transcribed is due only for its last batch).
A pause is served where it was said: the audio fed before it is decoded, the streams flushed and read there, and only
then what came after it, so its flush never lands inside later words however far behind the workers were (a pause
not yet served when the next comes is skipped: the speaker went on).

Hearing once, and again: while recognition keeps up each utterance is heard with the engines' alternative hearings
too; while it is behind, once (`ALTERNATIVES_MAX_LAG_S`), and then again with them after its final (`hear_again`),
in one thread of the lowest OS priority that decodes only in the live streams' gaps: the final is never delayed for
them (docs/dispatch.md, "Heard again after the final").

Back-pressure: a new utterance is admitted while recognition keeps up -- the oldest audio waiting for a worker has
waited less than `admit_lag_s` -- and at most `queue_size` at once (a bound on memory, not on speed: at 200 channels
~40 people talk at once, and each open stream costs only the audio it is fed). Otherwise `open()` raises `PoolFull`
at once (the caller leaves the utterance `pending` in the archive and transcribes it later, oldest first);
`transcribe()` (backlog work) waits instead, until recognition keeps up and fewer than half the places are taken, so
live channels keep the other half.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from asr.combine import combine
from asr.config import AsrConfig
from asr.engine import Engine, EngineUnavailable, RecognitionStream
from asr.keywords import KeywordEntry
from asr.models import locate_all
from asr.transcript import Transcript
from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH

if TYPE_CHECKING:
    from asr.sherpa_engine import SherpaEngine  # loaded only when ASR is wanted (native libraries)

logger = logging.getLogger(__name__)

BYTES_PER_S = SAMPLE_RATE * SAMPLE_WIDTH
MAX_BATCH_S = 2.0  # audio one executor task decodes before yielding its worker to other streams
# Recognition this far behind (the oldest audio waiting for a worker) hears utterances once: new ones start without the
# engines' alternative hearings and open ones drop theirs, which cost as much CPU again each (the main hearing needs it)
ALTERNATIVES_MAX_LAG_S = 0.1
BEHIND_CHECK_S = 0.02  # how stale that look at the lag may be (a frame)
# An utterance heard once is heard again at the engines' alternative speeds after its final, in a thread of its own
# that decodes only while no live audio has waited this long (live recognition first; the late hearing takes the gaps)
LATE_YIELD_LAG_S = 0.05
LATE_CHUNK_S = 0.32  # audio the late hearing decodes between two looks at the live lag (a spotter step)
LATE_MAX_WAIT_S = 5.0  # ... and it gives up when it has waited this long for gaps (a verdict that late helps nobody)
PARTIAL_EVERY_S = 0.3  # a partial result per this much new audio: often enough for the console, cheap for Vosk


@dataclass(slots=True, frozen=True)
class Partial:
    """A partial transcript; `at_pause`: asked for at a pause in the speech (`StreamHandle.pause`), after all the
    audio fed until then was decoded, so it holds everything said before the pause."""

    transcript: Transcript
    pause: int = 0  # the pause it was asked for at (`StreamHandle.pause`'s count); 0: a partial between pauses

    @property
    def at_pause(self) -> bool:
        return self.pause > 0


class PoolFull(Exception):
    """Recognition is behind and no more utterances are admitted now; keep the utterance `pending`."""


class RecognitionFailed(Exception):
    """An engine raised while decoding this utterance (the cause is chained)."""


@dataclass(slots=True, frozen=True)
class PoolStats:
    """Lag figures for /api/channels and the logs."""

    workers: int
    capacity: int  # utterances admitted at once (queue_size)
    open_streams: int  # admitted and not finished
    waiting_streams: int  # streams with audio waiting for a worker: the queue depth
    waiting_audio_s: float  # audio fed but not decoded yet, summed over streams
    oldest_wait_s: float  # how long the oldest undecoded audio has waited
    rejected: int  # open() refused since start (those utterances stayed pending)
    heard_once: int  # heard without (all of) the engines' alternative hearings since start (recognition was behind)
    heard_again: int  # ... of them, heard again with them after their final (`RecognitionPool.hear_again`)
    completed: int
    failed: int


@dataclass(slots=True, frozen=True)
class _PausePoint:
    at: int  # bytes of audio fed before the pause
    number: int  # the pause's number (`Partial.pause`)
    last: bool  # `pause(last=True)`: its partial is the final


class StreamHandle:
    """One utterance being recognised. Use from the event loop: `feed()` as audio arrives, read `partials()` (`pause()`
    when the speaker paused), then `await finish()`; `abort()` drops a discarded utterance."""

    def __init__(self, pool: RecognitionPool, utterance_id: str, alternatives: bool = True) -> None:
        self.utterance_id = utterance_id
        self.alternatives = alternatives  # with the engines' alternative hearings (RecognitionPool.open decides)
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._buffer = bytearray()  # fed, not yet decoded
        self._waiting_since: float | None = None  # monotonic time the oldest byte in _buffer arrived
        self._queued = False  # an executor task for this handle is pending or running
        self._closing = False
        self._aborted = False
        self._over = False  # the worker has delivered the outcome: nothing more to schedule
        self._queued_bytes = 0  # audio put in _buffer so far (held audio counts once it is let in)
        self._decoded_bytes = 0  # audio taken out of _buffer for decoding so far
        # the pause not yet served: served exactly where it came in the audio, however far behind decoding is, since
        # its flush feeds the streams quiet (late, it would land inside the words after it); a later pause replaces
        # it, as the speaker has gone on (its partial would be stale, and its flush would delay the later one's)
        self._pause_point: _PausePoint | None = None
        self._pauses = 0  # pauses asked for so far
        self._final: Transcript | None = None  # decoded at the last pause, returned by finish()
        self._held = bytearray()  # unvoiced audio after a pause, not decoded unless speech resumes
        self._holding = False
        self._streams: list[RecognitionStream] | None = None  # made in the worker (Vosk's takes ~0.1 s)
        self._since_partial = 0
        self._last_partial: tuple[str, str, int] | None = None
        self._partials: asyncio.Queue[Partial | None] = asyncio.Queue()
        self._result: asyncio.Future[Transcript] = self._loop.create_future()

    # --- event-loop side -------------------------------------------------------------------------------

    def feed(self, pcm: bytes, voiced: bool = True) -> None:
        """Queue audio for decoding; never blocks. After a pause, unvoiced audio is held back until speech resumes,
        and dropped if the utterance ends first: a second of hang-over silence per utterance is not decoded (the final
        pads the end with silence anyway)."""
        if self._closing:
            raise RuntimeError(f"utterance {self.utterance_id}: feed() after finish()/abort()")
        if self._holding and not voiced:
            self._held += pcm
            return
        with self._lock:
            if not self._buffer:
                self._waiting_since = time.monotonic()
            if self._held:  # speech resumed: what was held is decoded first, in order
                self._buffer += self._held
                self._queued_bytes += len(self._held)
                self._held.clear()
            self._buffer += pcm
            self._queued_bytes += len(pcm)
            self._holding = False
            self._schedule()

    def pause(self, last: bool = False) -> int:
        """The speaker paused: a partial of everything fed so far is wanted now, changed or not. Returns the pause's
        number, which that partial carries (`Partial.pause`; 0: none will come, the utterance is ending). `last`: the
        speaker let go of the key and no more speech will be fed: the streams are finished there, the partial is the
        final transcript, and finish() returns it without decoding again."""
        with self._lock:
            if self._closing:
                return 0
            self._pauses += 1
            self._holding = True
            self._pause_point = _PausePoint(self._queued_bytes, self._pauses, last)
            self._schedule()
            if self._due():
                self._pool._hurry(self)
            return self._pauses

    async def partials(self) -> AsyncIterator[Partial]:
        """Partial transcripts as they improve (and one per `pause()`); ends when the utterance is finished (or
        failed/aborted)."""
        while (item := await self._partials.get()) is not None:
            yield item

    async def finish(self) -> Transcript:
        """The final transcript, a few hundred ms after the last audio when the pool keeps up."""
        if self._aborted:
            raise RuntimeError(f"utterance {self.utterance_id}: finish() after abort()")
        with self._lock:
            self._closing = True
            self._schedule()
            if self._due():
                self._pool._hurry(self)
        return await asyncio.shield(self._result)

    def abort(self) -> None:
        """Forget this utterance (it was discarded): no result, its place is freed."""
        with self._lock:
            self._closing = self._aborted = True
            self._buffer.clear()
            self._pause_point = None
            self._waiting_since = None
            self._schedule()

    @property
    def decoded_bytes(self) -> int:
        """How much of the utterance's audio, from its start, was taken for decoding (held quiet at its end was not)."""
        return self._decoded_bytes

    @property
    def heard_once(self) -> bool:
        """Heard without the engines' alternative hearings (recognition was behind): `RecognitionPool.hear_again`."""
        return self._pool.hears_again and not self.alternatives

    def waiting(self) -> tuple[int, float | None]:
        """(undecoded bytes, when the oldest of them arrived)."""
        with self._lock:
            return len(self._buffer), self._waiting_since

    def _schedule(self) -> None:  # with self._lock held
        if not self._queued and not self._over:
            self._queued = True
            self._pool._submit(self, due=self._due())

    def _due(self) -> bool:  # with self._lock held
        """A decision waits on the next batch: a pause's partial or the final, with at most that batch to decode."""
        if self._pause_point is not None:
            return self._pause_point.at - self._decoded_bytes <= MAX_BATCH_S * BYTES_PER_S
        return self._closing and len(self._buffer) <= MAX_BATCH_S * BYTES_PER_S

    # --- worker side -----------------------------------------------------------------------------------

    def _work(self) -> None:
        with self._lock:
            size = int(MAX_BATCH_S * BYTES_PER_S)
            point = self._pause_point
            if point is not None:  # decoded up to the pause, no further, before it is served
                size = min(size, point.at - self._decoded_bytes)
            batch = bytes(self._buffer[:size])
            del self._buffer[: len(batch)]
            self._decoded_bytes += len(batch)
            if not self._buffer:  # what remains keeps the older arrival time: the lag figure errs on the high side
                self._waiting_since = None
            last = self._closing and not self._buffer
            self._over = last or self._aborted
            pause, final_here = 0, False
            if point is not None and point.at == self._decoded_bytes:
                self._pause_point = None
                # a pause reached as the utterance ends is served only if it is the last one (its partial is the final)
                if point.last or not last:
                    pause, final_here = point.number, point.last
        try:
            if self._aborted:
                self._done(None)
                return
            if self._streams is None:
                self._streams = [engine.start_stream(self.alternatives) for engine in self._pool.engines]
            if self.alternatives and self._final is None and self._pool.behind():  # shed them now, not just for new ones
                self.alternatives = False
                self._pool.count_heard_once()
                for stream in self._streams:
                    stream.drop_alternatives()
            if batch and self._final is None:  # (after the last pause nothing is decoded: the streams are finished)
                for stream in self._streams:
                    stream.feed(batch)
            if final_here:
                self._final = self._finish_streams()
                if not self._final.empty:  # (nothing heard: as at any pause, no partial)
                    self._deliver(replace(self._final, partial=True), pause)
            elif pause:
                self._partial(pause)
            elif batch:
                self._maybe_partial(len(batch))
            if last:
                self._done(self._final if self._final is not None else self._finish_streams())
                return
        except Exception as e:
            logger.exception("recognition of utterance %s failed", self.utterance_id)
            with self._lock:
                self._over = True
            self._done(e)
            return
        with self._lock:
            self._queued = False
            # a pause() that came while this batch decoded found the work queued, and is served by the next one
            if self._buffer or self._closing or self._pause_point is not None:
                self._schedule()

    def _finish_streams(self) -> Transcript:
        """The final transcript: every engine's stream finished, combined."""
        return combine([stream.finish() for stream in self._streams or ()])

    def _maybe_partial(self, fed: int) -> None:
        self._since_partial += fed
        if self._since_partial >= PARTIAL_EVERY_S * BYTES_PER_S:
            self._partial()

    def _partial(self, pause: int = 0) -> None:
        """Deliver the streams' partial when it changed, or at a pause (its number) whatever it is (when there is
        one)."""
        self._since_partial = 0
        streams = self._streams or ()
        found = [p for p in (s.pause_partial() if pause else s.partial() for s in streams) if p is not None]
        if not found:
            return
        partial = combine(found)
        key = (partial.text, partial.pinyin, len(partial.keywords))
        if key != self._last_partial or pause:
            self._deliver(partial, pause)

    def _deliver(self, partial: Transcript, pause: int) -> None:
        self._last_partial = (partial.text, partial.pinyin, len(partial.keywords))
        self._loop.call_soon_threadsafe(self._partials.put_nowait, Partial(partial, pause))

    def _done(self, outcome: Transcript | Exception | None) -> None:
        self._loop.call_soon_threadsafe(self._settle, outcome)

    def _settle(self, outcome: Transcript | Exception | None) -> None:  # on the loop
        self._partials.put_nowait(None)
        if self._result.done():  # the pool was closed meanwhile
            return
        if isinstance(outcome, Transcript):
            self._result.set_result(outcome)
        elif isinstance(outcome, Exception):
            error = RecognitionFailed(f"utterance {self.utterance_id}: {outcome}")
            error.__cause__ = outcome
            self._result.set_exception(error)
        else:
            self._result.cancel()
        self._pool._closed(self, outcome)


class RecognitionPool:
    """Runs the engines' streams in `workers` threads. Create and use it on the service's event loop."""

    def __init__(self, engines: Sequence[Engine], workers: int = 2, queue_size: int = 256, admit_lag_s: float = 3.0,
                 spare_lag_s: float = ALTERNATIVES_MAX_LAG_S, late_wait_s: float = LATE_MAX_WAIT_S) -> None:
        """`spare_lag_s`: an utterance gets the engines' alternative hearings (more CPU) only while the oldest audio
        waiting for a worker has waited less than this, and drops them as soon as it has waited longer: under load
        every utterance is still heard, once. `late_wait_s`: how long `hear_again` waits for recognition to have
        time to spare before it gives up."""
        if not engines:
            raise ValueError("RecognitionPool needs at least one engine")
        self.engines = tuple(engines)
        self.workers = workers
        self.queue_size = queue_size
        self.admit_lag_s = admit_lag_s
        self.spare_lag_s = spare_lag_s
        self.late_wait_s = late_wait_s
        self._alternatives = any(engine.alternative_speeds for engine in self.engines)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="asr")
        # hear_again: one at a time, in the gaps, at the lowest priority the OS gives a thread
        self._late = ThreadPoolExecutor(1, thread_name_prefix="asr-late", initializer=_lowest_priority)
        self._stopping = False  # close() was called: a late hearing waiting for gaps gives up
        # the handles queued for a worker, one executor task each: those with a decision due are taken first
        self._due_queue: deque[StreamHandle] = deque()
        self._fed_queue: deque[StreamHandle] = deque()
        self._queue_lock = threading.Lock()
        self._open: dict[int, StreamHandle] = {}
        self._room = asyncio.Condition()
        self._rejected = self._completed = self._failed = 0
        self._heard_once = 0  # utterances heard without (all of) their alternative hearings: recognition was behind
        self._heard_again = 0  # ... and heard again with them after their final
        self._behind, self._behind_at = False, float("-inf")  # behind(), as last looked at, and when
        self._count_lock = threading.Lock()

    @property
    def name(self) -> str:
        return "+".join(engine.name for engine in self.engines)

    def open(self, utterance_id: str) -> StreamHandle:
        """Start recognising an utterance as it is spoken. Raises PoolFull when recognition is too far behind."""
        lag = self._lag()
        if len(self._open) >= self.queue_size or lag >= self.admit_lag_s:
            self._rejected += 1
            logger.warning("recognition behind (%d utterances open, audio waiting %.1f s): %s stays pending",
                           len(self._open), lag, utterance_id)
            raise PoolFull(f"{len(self._open)} utterances being recognised, audio waiting {lag:.1f} s")
        handle = StreamHandle(self, utterance_id, alternatives=self._alternatives and lag < self.spare_lag_s)
        if self._alternatives and not handle.alternatives:
            self.count_heard_once()
        self._open[id(handle)] = handle
        return handle

    def behind(self) -> bool:
        """Too far behind for the alternative hearings (any thread). Asked before every batch of every stream, it
        looks at the open streams at most every BEHIND_CHECK_S (each look takes every stream's lock)."""
        now = time.monotonic()
        if now - self._behind_at >= BEHIND_CHECK_S:  # a race between workers only looks twice
            self._behind, self._behind_at = self._lag() >= self.spare_lag_s, now
        return self._behind

    def count_heard_once(self) -> None:
        with self._count_lock:
            self._heard_once += 1

    @property
    def hears_again(self) -> bool:
        """The engines make alternative hearings: an utterance heard without them can be heard again with them."""
        return self._alternatives

    async def hear_again(self, pcm: bytes, final: Transcript, utterance_id: str = "") -> Transcript | None:
        """`final` (of the utterance `pcm`, heard once: recognition was behind) with the engines' alternative hearings
        as its `alternatives`, made now, in a thread of their own that decodes only while no live audio has waited
        `LATE_YIELD_LAG_S`: the live channels' recognition comes first. None when it had no such time for
        `late_wait_s`, or recognition failed (logged): the final as dispatched stands."""
        if not self._alternatives:
            return None
        deadline = time.monotonic() + self.late_wait_s
        try:
            heard = await asyncio.get_running_loop().run_in_executor(self._late, self._hear_again, pcm, deadline)
        except Exception:
            logger.exception("hearing utterance %s again failed; its final stands as heard once", utterance_id)
            return None
        if heard is None:
            logger.debug("utterance %s not heard again: no time to spare within %.0f s", utterance_id, self.late_wait_s)
            return None
        with self._count_lock:
            self._heard_again += 1
        return replace(final, alternatives=(*final.alternatives, *heard))

    def _hear_again(self, pcm: bytes, deadline: float) -> tuple[Transcript, ...] | None:
        """(in the late thread) The alternative hearings of `pcm`; None once `deadline` passes waiting for gaps (or
        behind other late hearings), or the pool is closing. The end (the padding that lets the last words out) is
        decoded without looking at the gaps."""
        if time.monotonic() > deadline:  # waited behind other late hearings all that time
            return None
        streams = [s for s in (engine.start_alternatives() for engine in self.engines) if s is not None]
        step = int(LATE_CHUNK_S * SAMPLE_RATE) * SAMPLE_WIDTH
        for at in range(0, len(pcm), step):
            while self._lag() >= LATE_YIELD_LAG_S and not self._stopping:
                if time.monotonic() > deadline:
                    return None
                time.sleep(BEHIND_CHECK_S)
            if self._stopping:
                return None
            for stream in streams:
                stream.feed(pcm[at : at + step])
        if self._stopping:
            return None
        heard = [stream.finish() for stream in streams]
        return tuple(t for first in heard for t in (replace(first, alternatives=()), *first.alternatives))

    async def transcribe(self, pcm: bytes, utterance_id: str = "") -> Transcript:
        """A whole utterance (re-transcription, or one left pending): waits for room rather than failing."""
        async with self._room:
            await self._room.wait_for(lambda: len(self._open) < max(1, self.queue_size // 2)
                                      and self._lag() < self.admit_lag_s)
            handle = self.open(utterance_id)
        handle.feed(pcm)
        return await handle.finish()

    def _lag(self) -> float:
        """How long the oldest audio not decoded yet has waited (0 when every stream is decoded up to date). From any
        thread: the open handles are copied first (in one step under the GIL) while the loop may add or remove one."""
        since = [s for s in (handle.waiting()[1] for handle in list(self._open.values())) if s is not None]
        return time.monotonic() - min(since) if since else 0.0

    def stats(self) -> PoolStats:
        now = time.monotonic()
        waiting = [handle.waiting() for handle in self._open.values()]
        oldest = min((since for _, since in waiting if since is not None), default=None)
        return PoolStats(
            workers=self.workers,
            capacity=self.queue_size,
            open_streams=len(self._open),
            waiting_streams=sum(1 for size, _ in waiting if size),
            waiting_audio_s=round(sum(size for size, _ in waiting) / BYTES_PER_S, 3),
            oldest_wait_s=round(now - oldest, 3) if oldest is not None else 0.0,
            rejected=self._rejected,
            heard_once=self._heard_once,
            heard_again=self._heard_again,
            completed=self._completed,
            failed=self._failed,
        )

    def close(self) -> None:
        """Stop the workers. Utterances still open are cancelled (they stay pending in the archive)."""
        self._stopping = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._late.shutdown(wait=False, cancel_futures=True)
        for handle in list(self._open.values()):
            handle._settle(None)

    def _submit(self, handle: StreamHandle, due: bool) -> None:
        with self._queue_lock:
            (self._due_queue if due else self._fed_queue).append(handle)
        self._executor.submit(self._run_next)

    def _hurry(self, handle: StreamHandle) -> None:
        """A handle waiting in the queue of fed streams now has a decision due: it goes to the other queue (one
        being decoded is queued as due when it queues itself again)."""
        with self._queue_lock:
            if handle in self._fed_queue:
                self._fed_queue.remove(handle)
                self._due_queue.append(handle)

    def _run_next(self) -> None:
        with self._queue_lock:  # as many executor tasks as handles queued: neither queue is empty here
            handle = (self._due_queue or self._fed_queue).popleft()
        handle._work()

    def _closed(self, handle: StreamHandle, outcome: object) -> None:  # on the loop
        self._open.pop(id(handle), None)
        if isinstance(outcome, Transcript):
            self._completed += 1
        elif isinstance(outcome, Exception):
            self._failed += 1
        asyncio.get_running_loop().create_task(self._notify_room())

    async def _notify_room(self) -> None:
        async with self._room:
            self._room.notify_all()


def _lowest_priority() -> None:
    """The calling thread yields the CPU to every other (Linux: a thread's own nice value; elsewhere, as it is)."""
    with contextlib.suppress(AttributeError, OSError):  # none here: the gaps alone keep it out of the way
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def character_writer(engines: Sequence[Engine]) -> SherpaEngine | None:
    """The engine whose characters are decoded from its pinyin: `write_names` writes in them the places a reader
    that knows how names are misheard found (none without the decoder, or for Vosk, whose characters are its own)."""
    from asr.sherpa_engine import SherpaEngine

    return next((e for e in engines if isinstance(e, SherpaEngine) and e.hanzi is not None), None)


def build_engines(config: AsrConfig, keywords: Sequence[KeywordEntry] = (), words: Sequence[str] = ()) -> list[Engine]:
    """The engines `config.engine` asks for, in combining order (Vosk's text first). A missing or broken model is
    logged with the one clear message and left out: the service runs on without it (ASR is never required).

    The pinyin engine writes characters (`config.hanzi`) preferring the keywords' labels and `words` (the caller's
    vocabulary: dispatch.vocabulary.decoder_words, the incident lexicon and radio phrases)."""
    from asr.hanzi import HanziDecoder
    from asr.sherpa_engine import SherpaEngine  # the engines load native libraries: only when ASR is wanted
    from asr.vosk_engine import VoskEngine

    wanted = {"none": (), "vosk": ("vosk",), "sherpa": ("sherpa",)}.get(config.engine, ("vosk", "sherpa"))
    status = locate_all(config)
    engines: list[Engine] = []
    for location in status.locations:
        kind = location.spec.kind
        if kind not in wanted:
            continue
        if location.path is None:
            # under "auto" a missing engine is expected (no Mandarin Vosk model is the normal case): say it quietly
            log = logger.info if config.engine == "auto" else logger.error
            log("%s", location.message())
            continue
        try:
            if kind == "vosk":
                engines.append(VoskEngine(location.path, config.vosk_grammar, keywords))
            else:
                hanzi = HanziDecoder([*(k.label for k in keywords), *words]) if config.hanzi else None
                engines.append(SherpaEngine(location.path, keywords, num_threads=1, hanzi=hanzi,
                                             alternative_speeds=config.alternative_speeds,
                                             noise_floor=config.noise_floor))
        except EngineUnavailable as e:
            logger.error("%s engine unavailable: %s", kind, e)
    if not engines and wanted:
        logger.warning("no speech recognition engine available: utterances are archived and stay pending")
    return engines
