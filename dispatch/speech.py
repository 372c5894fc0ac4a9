"""The voice of the spoken announcements: Mandarin text -> 16 kHz mono int16 PCM, phrase by phrase.

A sentence is cut at its commas (，) and enumeration commas (、) into phrases, each rendered on its own and joined
with a short pause. That is what makes an announcement fast to start on a 2-core machine, where the neural voice
takes ~0.6-1.5 s per second of speech: the channel can be keyed once the first phrase is ready while the later ones
render, and the fixed phrases (a unit addressed, 请注意, the closing 请迅速赶往<place>) are rendered once, at
start-up or on first use, and kept. Transcribed back by the on-board recogniser, phrases joined this way are heard
as well as the sentence rendered whole (bench/announce.py).

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
import queue
import re
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Protocol

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
# of live announcements, then the warm-up. Another channel's announcement waits for one phrase, not a whole sentence.
FIRST, LIVE, WARM_UP = 0, 1, 2

_SPLIT = re.compile(r"([，、])")


class SpeechError(Exception):
    """The voice could not render a phrase (espeak-ng missing, a model that fails)."""


class Voice(Protocol):
    name: str
    identity: str  # model and voice: renderings kept on disk are found again only by the same identity

    def synthesise(self, phrase: str) -> bytes:
        """One phrase -> 16 kHz mono int16 PCM of the speech alone (blocking; raises SpeechError)."""
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

    def __init__(self, model_dir: Path, voice: str = DEFAULT_VOICE) -> None:
        import jieba
        from kokoro_onnx import Kokoro
        from misaki import zh

        jieba.setLogLevel(logging.WARNING)
        voices = next((model_dir / f for f in ("voices-v1.0.bin", "voices-zh-v1.0.bin") if (model_dir / f).is_file()), None)
        if voices is None:
            raise SpeechError(f"no Kokoro voices file in {model_dir}")
        vocab = model_dir / "vocab.json"
        self._tts = Kokoro(str(model_dir / "kokoro-v1.0.int8.onnx"), str(voices),
                           vocab_config=str(vocab) if vocab.is_file() else None)  # fmt: skip
        if voice not in self._tts.get_voices():
            raise SpeechError(f"no voice {voice!r} in {voices}")
        # the legacy Chinese G2P (jieba + pypinyin): the one Kokoro v1.0 was trained with
        self._g2p = zh.ZHG2P()
        self.name = f"kokoro:{voice}"
        self.identity = f"{model_dir.name}/{voice}"  # what a rendering kept on disk depends on
        self.voice = voice

    def synthesise(self, phrase: str) -> bytes:
        import soxr

        from asr.numbers import normalise_numbers

        phonemes, _ = self._g2p(normalise_numbers(phrase))  # 3号门 is said 三号门, as the radio says it
        samples, rate = self._tts.create(phonemes, voice=self.voice, is_phonemes=True, lang="z")
        samples = soxr.resample(np.asarray(samples, dtype=np.float32), rate, SAMPLE_RATE)
        ramp = np.linspace(0.0, 1.0, min(160, len(samples)), dtype=np.float32)  # 10 ms fades: no click at the joins
        samples[: len(ramp)] *= ramp
        samples[len(samples) - len(ramp) :] *= ramp[::-1]
        return float_to_pcm(samples)


class EspeakVoice:
    """espeak-ng's Mandarin voice: the fallback when no Kokoro model is found."""

    def __init__(self, voice: str = "cmn", speed: int = 160) -> None:
        self.name = f"espeak-ng:{voice}"
        self.identity = f"espeak-ng/{voice}-{speed}"
        self._voice, self._speed = voice, speed

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
    given out as soon as it is ready; `warm_up(phrases)` renders fixed phrases when nothing live is waiting. One
    thread: the voice uses both cores for each phrase already.
    """

    def __init__(self, voice: Voice, on_rendered: Callable[[str], None] | None = None, keep: Path | None = None) -> None:
        """`keep`: a folder where renderings are kept across restarts (the start-up phrases are rendered once)."""
        self.voice = voice
        self.on_rendered = on_rendered  # told each phrase as its rendering ends (tests: the order of events)
        self._kept = keep / voice.identity if keep is not None else None
        self.rendered = 0
        self.render_s = 0.0  # wall seconds spent rendering
        self.speech_s = 0.0  # seconds of speech rendered
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._work: queue.PriorityQueue[tuple[int, int, str, concurrent.futures.Future[bytes]]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._live_queued = 0  # live phrases waiting for the worker (warm-up ones left out)
        self._thread: threading.Thread | None = None
        self._closed = False

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
        if priority < WARM_UP:
            with self._lock:
                self._live_queued += 1
        self._work.put((priority, next(self._order), phrase, fut))
        return fut

    def live_queued(self) -> int:
        """Live phrases waiting for the worker (not the one it renders)."""
        with self._lock:
            return self._live_queued

    def warm_up(self, fixed: Iterable[str]) -> None:
        for phrase in dict.fromkeys(fixed):
            if self.cached(phrase) is None:
                self.submit(phrase, WARM_UP)

    def render(self, text: str) -> bytes:
        """The whole announcement, blocking: exactly the audio `stream(text)` gives out (`jingbao announce`)."""
        return b"".join(self.submit(phrase).result() + silence(pause) for phrase, pause in phrases(text))

    def stream(self, text: str, first: bool = True) -> PhraseStream:
        """`first`: its first phrase goes ahead of other announcements' later ones (it keys a channel); False for an
        announcement that follows another in the same transmission."""
        parts = [(p, self.submit(p, FIRST if first and i == 0 else LIVE), pause) for i, (p, pause) in enumerate(phrases(text))]
        return PhraseStream(self, parts)

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Ends the worker after the phrase it is rendering, waiting up to `wait_s` for it: a process that exits while
        onnxruntime still renders in that thread is aborted by the C++ runtime ("terminate called without an active
        exception"). Blocks: call it off the event loop."""
        self._closed = True
        self._work.put((-1, -1, "", concurrent.futures.Future()))  # wakes the worker to end
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait_s)
            if self._thread.is_alive():
                logger.warning("announcement voice: still rendering %.0f s after the stop; exiting anyway", wait_s)

    def _run(self) -> None:
        import time

        while True:
            priority, _, phrase, fut = self._work.get()
            if self._closed:
                return
            if priority < WARM_UP:
                with self._lock:
                    self._live_queued -= 1
            if not fut.set_running_or_notify_cancel():
                continue  # its announcement was replaced or dropped before this phrase began
            pcm = self.cached(phrase)  # rendered meanwhile (a warm-up and a live request for the same phrase)
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
                continue
            if self.on_rendered is not None:
                self.on_rendered(phrase)
            fut.set_result(pcm)

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
