"""The sherpa-onnx engine: one small streaming Zipformer transducer (WenetSpeech KWS 3.3M) used twice, as a pinyin
recogniser (initials and tone-marked finals -> tone-numbered syllables) and as a keyword spotter for the
jurisdiction's places and the incident terms. Both are loaded once and shared read-only; each stream owns its state.

The model gives no Chinese characters, so `text` is always "" and `pinyin`/`words` carry the result; with a
`HanziDecoder` (asr/hanzi.py) `readable` holds characters decoded from the syllables, each spotted keyword written as
its label over the syllables it covers.
Keyword scores: the spotter reports no score, so a keyword's score is how well the free-running recogniser agrees
with it over the same stretch of audio (1 - normalised edit distance between the keyword's units and the units
the recogniser emitted there, tones included): 1.0 when both heard it, lower when only the biased spotter did.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import sherpa_onnx
import soxr
from rapidfuzz.distance import Levenshtein

from asr.denoise import NoiseSuppressor, checked_floor
from asr.engine import EngineUnavailable
from asr.hanzi import HanziDecoder
from asr.keywords import KeywordEntry, keyword_file
from asr.pinyin import LAST_SYLLABLE_TAIL, toneless_unit, units_to_syllables
from asr.transcript import Keyword, Transcript, Word
from bridge.audio import SAMPLE_RATE, pcm_to_float

logger = logging.getLogger(__name__)

TAIL_PADDING_S = 0.66  # the encoder needs this much audio after the last word to emit it
# ... and at a pause in the speech as much silence again, less the pause itself (the segmenter's sentence_end_ms,
# 240 ms): without it the partial at a pause lacks the last words, often the call's incident words (docs/performance.md)
PAUSE_FLUSH_S = 0.42
# ... made of the pause's own last PAUSE_SOUND_S, repeated: the channel's noise going on, as in a longer pause. Digital
# silence in a noisy transmission is audio the model never heard: fed inside a call, at a breath, it cost the words
# after it (places on blind set I's calls at 12-20 dB: 89 -> 75 %, docs/performance.md)
PAUSE_SOUND_S = 0.1
KWS_CHUNK_S = 0.32  # audio consumed per spotter decode step (chunk-16 model: 16 encoder frames = 32 feature frames)
KEYWORD_CONTEXT_S = 0.2  # slack around a keyword when looking up what the recogniser heard there
KWS_TIME_SLACK_S = 0.2  # the spotter and the recogniser may place the same unit a few 40 ms frames apart
EXTENSION_MATCH = 0.75  # share of a longer keyword's remaining units the recogniser must have heard (toneless)
# Noise gate: a syllable whose units average below this probability is the recogniser guessing at noise. Real
# speech syllables sit well above it (see tests/asr/test_sherpa_engine.py for the measured margins).
MIN_SYLLABLE_CONF = 0.25

# A decision waits on a stream's pause partial or its final, both mostly the decoding of the quiet each hearing
# needs after the last word (~0.1 s of CPU for three hearings): the hearings decode it side by side, on as many
# cores as there are (the decoders release the GIL), in threads shared by every stream (made per process: a forked
# child has none of its parent's).
_hearing_threads: tuple[int, ThreadPoolExecutor] | None = None
_hearing_threads_lock = threading.Lock()


def _hearing_executor() -> ThreadPoolExecutor:
    global _hearing_threads
    with _hearing_threads_lock:
        if _hearing_threads is None or _hearing_threads[0] != os.getpid():
            threads = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="hearing")
            _hearing_threads = (os.getpid(), threads)
        return _hearing_threads[1]


@dataclass(slots=True, frozen=True)
class ModelFiles:
    tokens: Path
    encoder: Path
    decoder: Path
    joiner: Path

    @classmethod
    def find(cls, model_dir: Path) -> ModelFiles:
        """The transducer files in `model_dir`; int8 encoder/joiner preferred (faster, the mobile model has only
        those), float decoder preferred (upstream's advice: int8 hurts the small decoder)."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise EngineUnavailable(f"sherpa-onnx model directory {model_dir} does not exist "
                                    "(set asr.sherpa_model in the config, or run `jingbao model fetch`)")
        tokens = model_dir / "tokens.txt"
        if not tokens.is_file():
            raise EngineUnavailable(f"{model_dir}: no tokens.txt, not a sherpa-onnx model directory")
        pick = functools.partial(_pick, model_dir)
        return cls(tokens, encoder=pick("encoder", prefer_int8=True), decoder=pick("decoder", prefer_int8=False),
                   joiner=pick("joiner", prefer_int8=True))


def _extensions(keywords: dict[str, KeywordEntry]) -> dict[str, list[tuple[str, list[str]]]]:
    """key -> [(key of a longer keyword that starts with it, the units after the common start)]."""
    units = {key: (entry.units or "").split() for key, entry in keywords.items()}
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for short, prefix in units.items():
        for long, whole in units.items():
            if len(whole) > len(prefix) and whole[: len(prefix)] == prefix:
                found.setdefault(short, []).append((long, whole[len(prefix) :]))
    return found


def _pick(model_dir: Path, part: str, prefer_int8: bool) -> Path:
    found = sorted(model_dir.glob(f"{part}*.onnx"), key=lambda p: (".int8." in p.name) != prefer_int8)
    if not found:
        raise EngineUnavailable(f"{model_dir}: no {part}*.onnx, not a sherpa-onnx transducer model directory")
    return found[0]


class SherpaEngine:
    name = "sherpa"

    def __init__(self, model_dir: Path, keywords: Sequence[KeywordEntry] = (), num_threads: int = 1,
                 hanzi: HanziDecoder | None = None, alternative_speeds: Sequence[float] = (),
                 noise_floor: float | None = None) -> None:
        """`alternative_speeds`: also hear each utterance at these speeds (0.9: slowed to nine tenths), at that much
        more CPU each; the final transcript lists those hearings as its `alternatives` (docs/dispatch.md, "More than
        the best hypothesis"). `noise_floor`: hear the audio through asr/denoise.py's noise suppressor with this least
        gain; None hears it as received."""
        files = ModelFiles.find(model_dir)
        self.hanzi = hanzi
        if any(not 0.5 <= speed <= 2.0 or speed == 1.0 for speed in alternative_speeds):
            raise ValueError(f"alternative speeds must lie in [0.5, 2] and not be 1: {list(alternative_speeds)}")
        self.alternative_speeds = tuple(alternative_speeds)
        self.noise_floor = None if noise_floor is None else checked_floor(noise_floor)
        common = dict(tokens=str(files.tokens), encoder=str(files.encoder), decoder=str(files.decoder),
                      joiner=str(files.joiner), num_threads=num_threads, provider="cpu")
        try:
            self.recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(**common, decoding_method="greedy_search")
            self.keywords: dict[str, KeywordEntry] = {}
            self.spotter: sherpa_onnx.KeywordSpotter | None = None
            contents, self.keywords = keyword_file(keywords, files.tokens)
            if contents:
                # the spotter only takes its keywords from a file
                with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8") as f:
                    f.write(contents)
                    f.flush()
                    # num_trailing_blanks stays 1: upstream's advice for overlapping keywords (8) makes the spotter
                    # wait for a pause, and measured recall on the calls fell from 28/32 to 18/32 (3) and 8/32 (10)
                    self.spotter = sherpa_onnx.KeywordSpotter(**common, keywords_file=f.name)
        except (RuntimeError, ValueError, OSError) as e:
            raise EngineUnavailable(f"{model_dir}: cannot load the sherpa-onnx model ({e})") from e
        self.extensions = _extensions(self.keywords)
        logger.info("sherpa-onnx model %s loaded, %d keywords (%d keyword lines)",
                    files.encoder.name, len(self.keywords), contents.count("\n"))

    def start_stream(self, alternatives: bool = True) -> SherpaStream:
        return SherpaStream(self, (1.0, *self.alternative_speeds) if alternatives else (1.0,))

    def start_alternatives(self) -> SherpaStream | None:
        # decoded one hearing after the other in the caller's thread (a late hearing's, at a low priority): the
        # threads that decode side by side serve the decisions live channels wait on
        return SherpaStream(self, self.alternative_speeds, side_by_side=False) if self.alternative_speeds else None

    def write_names(self, transcript: Transcript, names: Sequence[tuple[int, int, str]]) -> Transcript:
        """The transcript with its readable characters decoded again, each of `names` (lo, hi, name: a place found
        over its words[lo:hi] by a reader that knows how names are misheard) written as named over those syllables:
        "zhong1 fang1 you4 er2 yan2 …" reads 东方幼儿园…, not 中方又而言…. Its pinyin, words and keywords stay as heard."""
        words = transcript.words
        if self.hanzi is None or transcript.text or not names:
            return transcript
        readable = self.hanzi.decode([w.text for w in words], keyword_windows(words, transcript.keywords), names)
        return replace(transcript, readable=readable)


@dataclass(slots=True, frozen=True)
class _Hit:
    key: str
    units: tuple[str, ...]
    start: float  # seconds of the audio as spoken (a hearing at another speed scales its own clock back)
    end: float


class _Hearing:
    """The recogniser and the spotter decoding the utterance at one `speed`: 1.0 as spoken, 0.9 slowed to nine tenths
    (the pitch lowered with it: the audio resampled to 16 kHz / speed and decoded as 16 kHz, by a streaming resampler
    that keeps its state between chunks). Times are scaled back to the audio as spoken."""

    def __init__(self, engine: SherpaEngine, speed: float) -> None:
        self.speed = speed
        self._resampler = None if speed == 1.0 else soxr.ResampleStream(SAMPLE_RATE, SAMPLE_RATE / speed, 1,
                                                                          dtype="float32")
        self._engine = engine
        self.asr = engine.recognizer.create_stream()
        self.kws = engine.spotter.create_stream() if engine.spotter else None
        self._kws_steps = 0  # spotter decode steps since the stream began
        self._kws_since = 0.0  # where the spotter's clock restarted (it restarts after each hit)
        self.hits: list[_Hit] = []
        self._fed_s = 0.0  # audio handed to the decoders, on their clock
        self._silence: list[tuple[float, float]] = []  # (decoder time, seconds) of silence fed at pauses
        self._last_sound = np.zeros(0, np.float32)  # the last PAUSE_SOUND_S accepted, as spoken

    def accept(self, samples: np.ndarray, last: bool = False) -> None:
        keep = int(PAUSE_SOUND_S * SAMPLE_RATE)
        self._last_sound = np.concatenate((self._last_sound, samples[-keep:]))[-keep:]
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        self._fed_s += samples.size / SAMPLE_RATE
        self.asr.accept_waveform(SAMPLE_RATE, samples)
        if self.kws is not None:
            self.kws.accept_waveform(SAMPLE_RATE, samples)
        self.decode()

    def flush(self) -> None:
        """Feed the decoders the quiet they need to emit the last words heard (the speaker paused): the pause's own
        sound, repeated (each copy reversed from the last, so that they join without a step); it is no part of the
        audio as spoken, so its time (on the decoders' clock, as resampled) is taken out of every time reported after
        it."""
        start = self._fed_s
        needed = int(PAUSE_FLUSH_S * SAMPLE_RATE)
        sound = self._last_sound
        if sound.size:
            copies = [sound if k % 2 else sound[::-1] for k in range(-(-needed // sound.size))]
            quiet = np.concatenate(copies)[:needed]
        else:
            quiet = np.zeros(needed, np.float32)
        self.accept(quiet)
        self._silence.append((start, self._fed_s - start))

    def spoken(self, t: float) -> float:
        """A time on the decoders' clock -> on the audio as spoken (the silence fed at pauses taken out)."""
        shift = sum(min(t - at, length) for at, length in self._silence if t > at)
        return (t - shift) * self.speed

    def finish_input(self, padding: np.ndarray) -> None:
        """The utterance is over: `padding` (silence) lets the decoders emit the last words."""
        self.accept(padding, last=True)
        self.asr.input_finished()
        if self.kws is not None:
            self.kws.input_finished()
        self.decode()

    def decode(self) -> None:
        recognizer, spotter = self._engine.recognizer, self._engine.spotter
        while recognizer.is_ready(self.asr):
            recognizer.decode_stream(self.asr)
        if spotter is None or self.kws is None:
            return
        while spotter.is_ready(self.kws):
            spotter.decode_stream(self.kws)
            self._kws_steps += 1
            result = spotter.keyword_spotter.get_result(self.kws)
            if result.keyword:
                times = [self.spoken(self._kws_since + t) for t in result.timestamps]
                self.hits.append(_Hit(result.keyword.strip(), tuple(result.tokens), times[0], times[-1]))
                spotter.reset_stream(self.kws)  # required after every hit; its timestamps restart from here
                self._kws_since = self._kws_steps * KWS_CHUNK_S

    def result(self) -> tuple[list[str], list[float], list[float]]:
        """(units, their times in the audio as spoken, their log-probabilities) heard so far."""
        result = self._engine.recognizer.get_result_all(self.asr)
        return list(result.tokens), [self.spoken(t) for t in result.timestamps], list(result.ys_probs)


class SherpaStream:
    """One utterance: feeds the recogniser and the spotter with the same audio at each of `speeds`, as spoken (1.0)
    and at the engine's alternative speeds; the first hearing's is the transcript, the others' its `alternatives`."""

    def __init__(self, engine: SherpaEngine, speeds: Sequence[float], side_by_side: bool = True) -> None:
        """`side_by_side`: the hearings' pauses and ends are decoded in parallel threads (the decision waits on them)."""
        self._engine = engine
        self._hearings = [_Hearing(engine, speed) for speed in speeds]
        self._side_by_side = side_by_side
        self._denoiser = NoiseSuppressor(engine.noise_floor) if engine.noise_floor is not None else None
        self._samples = 0
        self._finished = False

    def feed(self, pcm: bytes) -> None:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._accept(pcm_to_float(pcm))

    def partial(self) -> Transcript | None:
        transcript = self._transcript(self._hearings[0], partial=True)
        return None if transcript.empty else transcript

    def finish(self) -> Transcript:
        if not self._finished:
            if self._denoiser is not None:  # the audio the suppressor still holds
                self._hear(self._denoiser.flush())
            padding = np.zeros(int(TAIL_PADDING_S * SAMPLE_RATE), np.float32)
            self._each_hearing(lambda hearing: hearing.finish_input(padding))
            self._finished = True
        return self._every_hearing(partial=False)

    def drop_alternatives(self) -> None:
        del self._hearings[1:]

    def pause_partial(self) -> Transcript | None:
        """Every hearing flushed, so that each holds its last words now, and read: at a pause the dispatcher weighs
        the hearings as it does a final's (a partial between pauses is the main hearing's alone)."""
        self._each_hearing(_Hearing.flush)
        transcript = self._every_hearing(partial=True)
        return None if transcript.empty else transcript

    def _each_hearing(self, work: Callable[[_Hearing], None]) -> None:
        if len(self._hearings) == 1 or not self._side_by_side:
            for hearing in self._hearings:
                work(hearing)
        else:
            list(_hearing_executor().map(work, self._hearings))  # (list: waits for all, raises the first error)

    def _every_hearing(self, partial: bool) -> Transcript:
        """The main hearing's transcript, the other hearings' as its `alternatives`."""
        main, *others = (self._transcript(hearing, partial=partial) for hearing in self._hearings)
        return replace(main, alternatives=tuple(others)) if others else main

    def _accept(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        self._samples += samples.size
        self._hear(samples if self._denoiser is None else self._denoiser.process(samples))

    def _hear(self, samples: np.ndarray) -> None:
        if samples.size:
            for hearing in self._hearings:
                hearing.accept(samples)

    @property
    def duration(self) -> float:
        return self._samples / SAMPLE_RATE

    def _transcript(self, hearing: _Hearing, partial: bool) -> Transcript:
        units, times, logprobs = hearing.result()
        syllables = [s for s in units_to_syllables(units, times, logprobs) if s.conf >= MIN_SYLLABLE_CONF]
        duration = self.duration
        words = tuple(Word(s.text, min(s.start, duration), min(s.end, duration), s.conf) for s in syllables)
        keywords = self._keywords(hearing.hits, units, times, duration) if syllables else ()
        conf = math.exp(sum(math.log(max(w.conf, 1e-6)) for w in words) / len(words)) if words else 0.0
        readable = ""
        if self._engine.hanzi is not None and words and hearing.speed == 1.0:  # people read the main hearing only
            readable = self._engine.hanzi.decode([w.text for w in words], keyword_windows(words, keywords))
        return Transcript(text="", pinyin=" ".join(w.text for w in words), words=words, keywords=keywords,
                          engine=SherpaEngine.name, conf=round(conf, 4), partial=partial, readable=readable)

    def _keywords(self, hits: list[_Hit], units: list[str], times: list[float], duration: float
                  ) -> tuple[Keyword, ...]:
        """Hits -> Keywords with an agreement score; one Keyword per ref and stretch of audio (tone-variant lines of
        one place firing on the same words collapse to the best scored)."""
        found: list[Keyword] = []
        for hit in hits:
            key, end = self._extend(hit, units, times)
            entry = self._engine.keywords[key]
            heard = [u for u, t in zip(units, times, strict=True)
                     if hit.start - KEYWORD_CONTEXT_S <= t <= end + KEYWORD_CONTEXT_S]
            score = round(Levenshtein.normalized_similarity((entry.units or "").split(), heard), 3)
            end = min(end + LAST_SYLLABLE_TAIL, duration)
            keyword = Keyword(entry.label, entry.ref, round(min(hit.start, duration), 3), round(end, 3), score)
            same = next((i for i, k in enumerate(found) if k.ref == entry.ref and k.start < end and keyword.start < k.end), None)
            if same is None:
                found.append(keyword)
            elif keyword.score > found[same].score:
                found[same] = keyword
        return tuple(found)

    def _extend(self, hit: _Hit, units: list[str], times: list[float]) -> tuple[str, float]:
        """(key, end) of the longest keyword that the hit begins and the recogniser heard through to its end.

        The spotter fires on 公园北路 as soon as it is said and restarts, so it can never complete 公园北路夜市; the
        recogniser's units after the hit decide whether the longer name was said (toneless, EXTENSION_MATCH)."""
        plain = [toneless_unit(u) for u in units]
        # where the recogniser put the hit's last unit: the two decoders may place it a few frames apart
        last = toneless_unit(hit.units[-1])
        ends = [i for i, t in enumerate(times) if abs(t - hit.end) <= KWS_TIME_SLACK_S and plain[i] == last]
        longest_first = sorted(self._engine.extensions.get(hit.key, ()), key=lambda ext: -len(ext[1]))
        for key, rest in longest_first:
            expected = [toneless_unit(u) for u in rest]
            for i in ends:
                heard = plain[i + 1 : i + 1 + len(rest)]
                if len(heard) == len(rest) and Levenshtein.normalized_similarity(expected, heard) >= EXTENSION_MATCH:
                    return key, times[i + len(rest)]
        return hit.key, hit.end


def keyword_windows(words: Sequence[Word], keywords: Sequence[Keyword]) -> list[tuple[int, int, str]]:
    """(lo, hi, label): the syllables words[lo:hi] lie, by their middle, within KEYWORD_CONTEXT_S of a spotted keyword's
    time; the characters decoder may write the label over a run of them (`HanziDecoder.decode` hints)."""
    windows = []
    for keyword in keywords:
        inside = [i for i, w in enumerate(words)
                  if keyword.start - KEYWORD_CONTEXT_S <= (w.start + w.end) / 2 <= keyword.end + KEYWORD_CONTEXT_S]
        if inside:
            windows.append((inside[0], inside[-1] + 1, keyword.label))
    return windows
