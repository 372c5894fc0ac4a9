"""The voice of the spoken announcements: Mandarin text -> 16 kHz mono int16 PCM, phrase by phrase.

A sentence is cut at its commas (，) and enumeration commas (、) into phrases, each rendered on its own and joined
with a short pause. That is what makes an announcement fast to start on a 2-core machine, where the neural voice
takes ~0.6-1.5 s per second of speech: the channel can be keyed once the first phrase is ready while the later ones
render, and every phrase an announcement can be made of but a place's detail (a unit addressed, 请注意, the place
with what happened there, the closing 请迅速赶往<place>) is rendered ahead, in the background, and kept on disk.
Transcribed back by the on-board recogniser, phrases joined this way are heard as well as the sentence rendered whole
(bench/announce.py).

Voices: Kokoro-82M v1.0 (kokoro-onnx, `misaki[zh]` for text -> phonemes), found like the speech models
(`dispatch.announce_model`, JINGBAO_TTS_MODEL, the model cache where `jingbao model fetch --tts` puts it,
../shared/models); espeak-ng when there is none (robotic, but the announcement still goes out).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import logging
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH, float_to_pcm
from bridge.decode import AudioDecodeError, decode_file

logger = logging.getLogger(__name__)

DEFAULT_VOICE = "zm_yunjian"  # a calm adult male voice; heard back at 1-3 % syllable error (bench/voices.py)
PAUSE_S = {"、": 0.12, "，": 0.22}  # what a speaker leaves at each mark; kept short so the call stays brisk
CHARS_PER_S = 4.0  # how fast the voice speaks, phrase pauses included (measured ~4.3): what a text's speech lasts
CACHE_PHRASES = 512  # ~2 s of audio each: ~60 MB at most
CLOSE_WAIT_S = 15.0  # a phrase renders in 1-3 s on 2 busy cores; a stop waits this long for the one under way
# Render priorities: the first phrase of a live announcement (the channel is keyed once it is ready), then the rest
# of live announcements. Another channel's announcement waits for one phrase, not a whole sentence.
FIRST, LIVE = 0, 1
# Rendering ahead runs at the lowest CPU priority (a thread's own nice value on Linux): whatever the recogniser and
# a live announcement leave idle, never their share of the two cores.
AHEAD_NICE = 19
AHEAD_LOG_EVERY = 100  # phrases rendered ahead between progress lines in the log

_SPLIT = re.compile(r"([，、])")


class SpeechError(Exception):
    """The voice could not render a phrase (espeak-ng missing, a model that fails)."""


class Interrupted(SpeechError):
    """A rendering stopped part-way by `Voice.interrupt()` (a live phrase needed the cores, or the speaker closed)."""


class Voice(Protocol):
    name: str
    identity: str  # model and voice: renderings kept on disk are found again only by the same identity

    def synthesise(self, phrase: str) -> bytes:
        """One phrase -> 16 kHz mono int16 PCM of the speech alone (blocking; raises SpeechError)."""
        ...

    def background(self) -> Voice:
        """The same voice (same identity: its renderings are kept alike) for rendering ahead, on one core. Built in the
        thread that will use it."""
        ...

    def interrupt(self) -> None:
        """Stops a `synthesise` under way in another thread soon (it raises Interrupted); called before one starts, it
        stops that one at its start (the caller wanted the cores then)."""
        ...


def phrases(text: str) -> list[tuple[str, float]]:
    """(phrase, pause after it) in speaking order: the sentence cut at ，and 、 (the last phrase has no pause)."""
    parts = _SPLIT.split(text.strip())
    out: list[tuple[str, float]] = []
    for phrase, mark in itertools.zip_longest(parts[::2], parts[1::2], fillvalue=""):
        if phrase.strip():
            out.append((phrase.strip(), PAUSE_S.get(mark, 0.0)))
    if out:
        out[-1] = (out[-1][0], 0.0)
    return out


def silence(seconds: float) -> bytes:
    return bytes(round(seconds * SAMPLE_RATE) * SAMPLE_WIDTH)


class KokoroVoice:
    """Kokoro-82M v1.0 through kokoro-onnx: the official release files (voices-v1.0.bin, its own vocabulary) or the
    Mandarin-only copy in ../shared (voices-zh-v1.0.bin with vocab.json)."""

    def __init__(self, model_dir: Path, voice: str = DEFAULT_VOICE, threads: int = 0) -> None:
        """`threads`: onnxruntime's intra-op threads (0: one per core; 1: all of it in the calling thread)."""
        import jieba
        import onnxruntime as ort
        from kokoro_onnx import Kokoro
        from misaki import zh

        jieba.setLogLevel(logging.WARNING)
        voices = next((model_dir / f for f in ("voices-v1.0.bin", "voices-zh-v1.0.bin") if (model_dir / f).is_file()), None)
        if voices is None:
            raise SpeechError(f"no Kokoro voices file in {model_dir}")
        vocab = model_dir / "vocab.json"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1 if threads == 1 else 0
        session = ort.InferenceSession(str(model_dir / "kokoro-v1.0.int8.onnx"), options, providers=["CPUExecutionProvider"])
        self._session = _InterruptibleSession(session)
        self._tts = Kokoro.from_session(self._session, str(voices), vocab_config=str(vocab) if vocab.is_file() else None)  # type: ignore[arg-type]
        if voice not in self._tts.get_voices():
            raise SpeechError(f"no voice {voice!r} in {voices}")
        # the legacy Chinese G2P (jieba + pypinyin): the one Kokoro v1.0 was trained with
        self._g2p = zh.ZHG2P()
        self.name = f"kokoro:{voice}"
        self.identity = f"{model_dir.name}/{voice}"  # what a rendering kept on disk depends on
        self.voice = voice
        self._model_dir = model_dir

    def background(self) -> KokoroVoice:
        # its own session on one thread: onnxruntime's pool threads would otherwise render at the recogniser's
        # priority whatever this thread's (and a second session's ~100 MB is what that costs)
        return KokoroVoice(self._model_dir, self.voice, threads=1)

    def interrupt(self) -> None:
        self._session.interrupt()

    def synthesise(self, phrase: str) -> bytes:
        import soxr

        from asr.numbers import normalise_numbers

        phonemes, _ = self._g2p(normalise_numbers(phrase))  # 3号门 is said 三号门, as the radio says it
        samples, rate = self._session.guarded(lambda: self._tts.create(phonemes, voice=self.voice, is_phonemes=True, lang="z"))
        samples = soxr.resample(np.asarray(samples, dtype=np.float32), rate, SAMPLE_RATE)
        ramp = np.linspace(0.0, 1.0, min(160, len(samples)), dtype=np.float32)  # 10 ms fades: no click at the joins
        samples[: len(ramp)] *= ramp
        samples[len(samples) - len(ramp) :] *= ramp[::-1]
        return float_to_pcm(samples)


class _InterruptibleSession:
    """An onnxruntime session whose runs can be stopped from another thread (RunOptions.terminate: onnxruntime checks
    it between the graph's nodes, so a run ends within milliseconds). kokoro-onnx calls `run(None, inputs)`."""

    def __init__(self, session: Any) -> None:
        import onnxruntime as ort

        self._ort = ort
        self._session = session
        self._options = ort.RunOptions()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # the rest of the session as it is (inputs, outputs, metadata)
        return getattr(self._session, name)

    def run(self, outputs: Any, inputs: dict[str, Any], run_options: Any = None) -> Any:
        with self._lock:
            options = self._options
        return self._session.run(outputs, inputs, options)

    def interrupt(self) -> None:
        with self._lock:
            self._options.terminate = True

    def guarded(self, render: Callable[[], Any]) -> Any:
        """`render()` (one phrase: one or more runs), raising Interrupted if interrupt() was called meanwhile; the
        next phrase runs afresh. An interrupt before it starts counts too: the live phrase wanted the cores then."""
        try:
            return render()
        except Exception as e:
            with self._lock:
                stopped = self._options.terminate
            if stopped:
                raise Interrupted("interrupted") from e
            raise
        finally:
            with self._lock:
                if self._options.terminate:
                    self._options = self._ort.RunOptions()


class EspeakVoice:
    """espeak-ng's Mandarin voice: the fallback when no Kokoro model is found."""

    def __init__(self, voice: str = "cmn", speed: int = 160) -> None:
        self.name = f"espeak-ng:{voice}"
        self.identity = f"espeak-ng/{voice}-{speed}"
        self._voice, self._speed = voice, speed

    def background(self) -> EspeakVoice:
        return self  # a process per phrase, which inherits the calling thread's priority

    def interrupt(self) -> None:
        pass  # a phrase takes a tenth of a second

    def synthesise(self, phrase: str) -> bytes:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / "espeak.wav"  # espeak-ng writes 22.05 kHz
                subprocess.run(["espeak-ng", "-v", self._voice, "-s", str(self._speed), "-w", str(raw), phrase],
                               check=True, capture_output=True, timeout=30)  # fmt: skip
                return decode_file(raw)
        except (OSError, subprocess.SubprocessError, AudioDecodeError) as e:
            raise SpeechError(f"espeak-ng: {e}") from e


def load_voice(model_dir: Path | None, voice: str = DEFAULT_VOICE) -> Voice:
    """Kokoro from `model_dir`; espeak-ng when there is no model (or it cannot be loaded: said in the log)."""
    if model_dir is not None:
        try:
            return KokoroVoice(model_dir, voice)
        except (SpeechError, OSError, ValueError, RuntimeError) as e:
            logger.error("announcement voice: Kokoro model in %s unusable (%s); using espeak-ng", model_dir, e)
    return EspeakVoice()


class Speaker:
    """Renders phrases in one worker thread, live announcements first, and keeps what it rendered.

    `stream(text)` starts rendering every phrase of `text` at once (in order, its first phrase ahead of other
    announcements' later ones) and returns an async iterator over their audio, each phrase followed by its pause,
    given out as soon as it is ready. One thread: the voice uses both cores for each phrase already.

    `prepare(phrases)` renders phrases ahead, in a second thread at the lowest CPU priority on one core, only while no
    live phrase is waiting or rendering: a live phrase that arrives stops the one being rendered ahead (rendered again
    later), so it never waits behind it. What is rendered ahead is kept on disk (`keep`), not in memory.
    """

    def __init__(self, voice: Voice, on_rendered: Callable[[str], None] | None = None, keep: Path | None = None) -> None:
        """`keep`: a folder where renderings are kept across restarts (what was rendered ahead is rendered once)."""
        self.voice = voice
        self.on_rendered = on_rendered  # told each phrase as its rendering ends (tests: the order of events)
        self._kept = keep / voice.identity if keep is not None else None
        self.rendered = 0
        self.render_s = 0.0  # wall seconds spent rendering
        self.speech_s = 0.0  # seconds of speech rendered
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._live_done = threading.Condition(self._lock)  # notified when no live phrase waits or renders any more
        self._work: queue.PriorityQueue[tuple[int, int, str, concurrent.futures.Future[bytes]]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._live_queued = 0  # live phrases waiting for the worker
        self._live_rendering = False
        self._thread: threading.Thread | None = None
        self._closed = False
        # rendering ahead
        self._ahead_thread: threading.Thread | None = None
        self._ahead_voice: Voice | None = None
        self._ahead_rendering = False
        self._ahead_total = 0
        self._ahead_ready = 0
        self._ahead_failed = 0
        self.ahead_rendered = 0  # rendered ahead by this process (not found on disk)
        self.ahead_interrupted = 0  # renderings ahead stopped for a live phrase (rendered again later)

    @property
    def name(self) -> str:
        return self.voice.name

    def pace(self) -> float:
        """Seconds of rendering per second of speech lately (since the start; 1.5 before anything was rendered)."""
        return self.render_s / self.speech_s if self.speech_s else 1.5

    def cached(self, phrase: str) -> bytes | None:
        with self._lock:
            pcm = self._cache.get(phrase)
            if pcm is not None:
                self._cache.move_to_end(phrase)
                return pcm
        kept = self._kept_path(phrase)
        if kept is not None and kept.is_file():
            pcm = kept.read_bytes()
            self._keep(phrase, pcm)
        return pcm

    def _kept_path(self, phrase: str) -> Path | None:
        if self._kept is None:
            return None
        return self._kept / f"{hashlib.sha256(phrase.encode()).hexdigest()[:24]}.pcm"

    def submit(self, phrase: str, priority: int = LIVE) -> concurrent.futures.Future[bytes]:
        fut: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        pcm = self.cached(phrase)
        if pcm is not None:
            fut.set_result(pcm)
            return fut
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="speech", daemon=True)
            self._thread.start()
        with self._lock:
            self._live_queued += 1
            ahead = self._ahead_voice if self._ahead_rendering else None
        self._work.put((priority, next(self._order), phrase, fut))
        if ahead is not None:
            ahead.interrupt()  # the live phrase gets the cores now; the one rendered ahead is done again later
        return fut

    def live_queued(self) -> int:
        """Live phrases waiting for the worker (not the one it renders)."""
        with self._lock:
            return self._live_queued

    def prepare(self, ahead: Iterable[str]) -> None:
        """Renders `ahead` (in that order) in the background, keeping each on disk; returns at once. Once per speaker."""
        todo = list(dict.fromkeys(ahead))
        if self._kept is None:  # kept in memory only: no more than it holds, or the last would push out the first
            todo = todo[:CACHE_PHRASES]
        if self._ahead_thread is not None or not todo:
            return
        with self._lock:
            self._ahead_total = len(todo)
        self._ahead_thread = threading.Thread(target=self._run_ahead, args=(todo,), name="speech-ahead", daemon=True)
        self._ahead_thread.start()

    @property
    def rendering_ahead(self) -> bool:
        """A phrase is being rendered ahead right now."""
        with self._lock:
            return self._ahead_rendering

    def prepared(self) -> dict[str, int]:
        """How far rendering ahead has come: phrases `ready` (rendered now or kept from before) of `total`, `failed`."""
        with self._lock:
            return {"ready": self._ahead_ready, "total": self._ahead_total, "failed": self._ahead_failed}

    def render(self, text: str) -> bytes:
        """The whole announcement, blocking: exactly the audio `stream(text)` gives out (`jingbao announce`)."""
        return b"".join(self.submit(phrase).result() + silence(pause) for phrase, pause in phrases(text))

    def stream(self, text: str, first: bool = True) -> PhraseStream:
        """`first`: its first phrase goes ahead of other announcements' later ones (it keys a channel); False for an
        announcement that follows another in the same transmission."""
        parts = [(p, self.submit(p, FIRST if first and i == 0 else LIVE), pause) for i, (p, pause) in enumerate(phrases(text))]
        return PhraseStream(self, parts)

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Ends the worker after the phrase it is rendering, waiting up to `wait_s` for it, and stops rendering ahead: a
        process that exits while onnxruntime still renders in a thread is aborted by the C++ runtime ("terminate
        called without an active exception"). Blocks: call it off the event loop."""
        with self._lock:
            self._closed = True
            ahead = self._ahead_voice
            self._live_done.notify_all()
        self._work.put((-1, -1, "", concurrent.futures.Future()))  # wakes the worker to end
        if ahead is not None:
            ahead.interrupt()
        for thread in (self._thread, self._ahead_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(wait_s)
                if thread.is_alive():
                    logger.warning("announcement voice: still rendering %.0f s after the stop; exiting anyway", wait_s)

    def _run(self) -> None:
        while True:
            _, _, phrase, fut = self._work.get()
            if self._closed:
                return
            with self._lock:
                self._live_queued -= 1
                self._live_rendering = True
            try:
                self._render_live(phrase, fut)
            finally:
                with self._lock:
                    self._live_rendering = False
                    if not self._live_queued:
                        self._live_done.notify_all()

    def _render_live(self, phrase: str, fut: concurrent.futures.Future[bytes]) -> None:
        if not fut.set_running_or_notify_cancel():
            return  # its announcement was replaced or dropped before this phrase began
        pcm = self.cached(phrase)  # rendered meanwhile (rendered ahead, or a live request for the same phrase)
        try:
            if pcm is None:
                t0 = time.perf_counter()
                pcm = self.voice.synthesise(phrase)
                self.render_s += time.perf_counter() - t0
                self.speech_s += len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)
                self.rendered += 1
                self._keep(phrase, pcm)
                self._write(phrase, pcm)
        except Exception as e:
            fut.set_exception(e if isinstance(e, SpeechError) else SpeechError(f"{self.name}: {e}"))
            return
        if self.on_rendered is not None:
            self.on_rendered(phrase)
        fut.set_result(pcm)

    def _run_ahead(self, todo: list[str]) -> None:
        _lower_priority()
        t0 = time.monotonic()
        missing = [phrase for phrase in todo if not self._is_kept(phrase)]
        with self._lock:
            self._ahead_ready = len(todo) - len(missing)
        if not missing:
            logger.info("announcements: all %d phrases rendered ahead already (kept on disk)", len(todo))
            return
        logger.info("announcements: %d of %d phrases rendered ahead already; rendering %d in the background (one core, "
                    "lowest priority)", len(todo) - len(missing), len(todo), len(missing))  # fmt: skip
        try:
            voice = self.voice.background()
        except Exception as e:  # the live voice still works: only what would have been ready stays to render live
            logger.error("announcement voice: cannot render ahead (%s); phrases are rendered when announced", e)
            return
        with self._lock:
            self._ahead_voice = voice
        for phrase in missing:
            if not self._render_ahead(voice, phrase):
                return
            if (done := self.ahead_rendered) and done % AHEAD_LOG_EVERY == 0:
                ready = self.prepared()
                logger.info("announcements: %d of %d phrases rendered ahead", ready["ready"], ready["total"])
        ready = self.prepared()
        logger.info("announcements: %d of %d phrases rendered ahead (%d rendered in %.0f s, %d failed)", ready["ready"],
                    ready["total"], self.ahead_rendered, time.monotonic() - t0, ready["failed"])  # fmt: skip

    def _render_ahead(self, voice: Voice, phrase: str) -> bool:
        """One phrase, once no live phrase waits or renders (again if a live one interrupts it); False: closed."""
        while True:
            with self._lock:
                self._live_done.wait_for(lambda: self._closed or not (self._live_queued or self._live_rendering))
                if self._closed:
                    return False
                self._ahead_rendering = True
            if self._is_kept(phrase):  # a live announcement needed it meanwhile
                pcm = None
            else:
                try:
                    pcm = voice.synthesise(phrase)
                except Interrupted:
                    self.ahead_interrupted += 1
                    continue
                except Exception as e:  # a phrase the voice cannot say is said (or fails) when announced
                    logger.warning("announcement voice: cannot render %r ahead: %s", phrase, e)
                    with self._lock:
                        self._ahead_failed += 1
                    return True
                finally:
                    with self._lock:
                        self._ahead_rendering = False
            if pcm is not None:
                self.ahead_rendered += 1
                if self._kept is None:
                    self._keep(phrase, pcm)  # nowhere else to keep it
                else:
                    self._write(phrase, pcm)  # not in memory: read from disk when announced (a few ms)
                if self.on_rendered is not None:
                    self.on_rendered(phrase)
            with self._lock:
                self._ahead_rendering = False
                self._ahead_ready += 1
            return True

    def _is_kept(self, phrase: str) -> bool:
        path = self._kept_path(phrase)
        if path is not None:
            return path.is_file()
        with self._lock:
            return phrase in self._cache

    def _write(self, phrase: str, pcm: bytes) -> None:
        """Kept on disk (written beside, renamed into place: never half a file); a disk that refuses is no fault."""
        path = self._kept_path(phrase)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_suffix(".part")
            part.write_bytes(pcm)
            part.replace(path)
        except OSError as e:
            logger.warning("announcement voice: cannot keep a rendering in %s: %s", path.parent, e)

    def _keep(self, phrase: str, pcm: bytes) -> None:
        with self._lock:
            self._cache[phrase] = pcm
            while len(self._cache) > CACHE_PHRASES:
                self._cache.popitem(last=False)


def _lower_priority() -> None:
    """This thread only (Linux: a thread has its own nice value) to the lowest CPU priority. Elsewhere, or if refused,
    it renders at the process's priority, still one core and only while nothing live renders."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(AHEAD_NICE, os.getpriority(os.PRIO_PROCESS, tid)))
    except (AttributeError, OSError) as e:
        logger.info("announcement voice: rendering ahead at normal priority (%s)", e)


class PhraseStream:
    """One announcement's audio as it renders: `first()` waits for the first phrase, `keeps_up()` says whether the rest
    will be ready before playing reaches it (key up only then), iterating gives every phrase with its pause;
    `cancel()` stops what has not started rendering."""

    def __init__(self, speaker: Speaker, parts: list[tuple[str, concurrent.futures.Future[bytes], float]]) -> None:
        self._speaker = speaker
        self._parts = parts

    async def first(self) -> None:
        if self._parts:
            await asyncio.wrap_future(self._parts[0][1])

    def first_ready(self) -> bool:
        """The first phrase rendered (or failed: `first()` raises then)."""
        return not self._parts or self._parts[0][1].done()

    def done(self) -> bool:
        return all(fut.done() for _, fut, _ in self._parts)

    def keeps_up(self, lead_s: float) -> bool:
        """At the voice's recent pace, the phrases not rendered yet will be before they are due: their rendering, and
        other announcements' phrases waiting ahead of them, take no longer than the audio ready at the head plus
        `lead_s` (the keyed silence before it). Otherwise a keyed channel would carry silence mid-announcement."""
        ready_s, rest = lead_s, 0
        for phrase, fut, pause in self._parts:
            if rest or not fut.done() or fut.exception() is not None:
                rest += len(phrase) if not fut.done() else 0
            else:
                ready_s += len(fut.result()) / (SAMPLE_RATE * SAMPLE_WIDTH) + pause
        ours = sum(not fut.done() and not fut.running() for _, fut, _ in self._parts)
        if self._speaker.live_queued() > ours:
            return False  # other channels' phrases render first: how long they take is not known here
        return rest / CHARS_PER_S * self._speaker.pace() <= ready_s

    def cancel(self) -> None:
        for _, fut, _ in self._parts:
            fut.cancel()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            for _, fut, pause in self._parts:
                yield await asyncio.wrap_future(fut) + silence(pause)
        finally:
            self.cancel()  # cut short (time-out timer, shutdown): nothing more needs rendering
