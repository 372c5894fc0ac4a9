"""The Vosk engine: full text from a Kaldi model (vosk-model-small-cn-0.22 for Mandarin).

One `vosk.Model` is loaded per engine and shared read-only; each stream owns a `KaldiRecognizer` (per-utterance
state). Vosk's C calls go through cffi, which releases the GIL, so streams decode in parallel in worker threads.

Output conventions:
- `text`: words joined the Chinese way — no space next to a Han character, one space between other words (Latin,
  digits, Hangul). `[unk]` (the grammar's "something else") is dropped from text and words.
- Numbers are canonical in Chinese numerals, read as spoken (`asr.numbers`: codes digit by digit, 110 -> 幺幺零;
  quantities as numbers, 3号楼 -> 三号楼): the jurisdiction writes its places that way, and the pinyin of a numeral
  is its reading.
- `pinyin`: from `text` with `asr.pinyin.text_to_syllables` (pypinyin TONE3, neutral tone `5`), the same
  convention as the sherpa pinyin recogniser.
- `conf`: mean of the word confidences (0.0 without words).
- `keywords`: the jurisdiction's places and incident terms written in `text` (`asr.keywords.labels_in_text`), timed
  by the words that spell them and scored by their mean confidence; Vosk has no spotter of its own.

A missing or unreadable model raises `EngineUnavailable`. Vosk reports a model Kaldi cannot read by returning NULL
(checked here: truncated or garbage final.mdl, final.ie, Gr.fst, a missing conf file or a bad option all raise
rather than abort the process); a broken decoding graph only shows when a recogniser is made, so the engine makes
one at load time.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import vosk

from asr.engine import EngineUnavailable
from asr.keywords import KeywordEntry, labels_in_text
from asr.models import VOSK, ModelLocation
from asr.numbers import normalise_numbers
from asr.pinyin import text_to_syllables
from asr.transcript import Keyword, Transcript, Word
from bridge.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

UNKNOWN = "[unk]"
_HAN = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def join_words(words: Sequence[str]) -> str:
    """Join recognised words the Chinese way: no space next to a Han character, a space between other words."""
    out = ""
    for word in filter(None, words):
        if out and not _HAN.match(out[-1]) and not _HAN.match(word[0]):
            out += " "
        out += word
    return out


class VoskEngine:
    name = "vosk"
    alternative_speeds: tuple[float, ...] = ()  # Vosk hears each utterance once

    def __init__(self, model_dir: Path, grammar: list[str] | None = None,
                 keywords: Sequence[KeywordEntry] = ()) -> None:
        model_dir = Path(model_dir)
        problems = VOSK.problems(model_dir)
        if problems:
            location = ModelLocation(VOSK, None, "", (f"{model_dir} ({'; '.join(problems)})",))
            raise EngineUnavailable(location.message())
        vosk.SetLogLevel(-1)  # Kaldi's info chatter off; its warnings and errors still reach stderr
        try:
            self._model = vosk.Model(str(model_dir))
        except Exception as e:  # vosk raises a bare Exception("Failed to create a model")
            raise EngineUnavailable(self._unusable(model_dir, "Kaldi cannot read it")) from e
        self.model_dir = model_dir
        self._keywords = tuple(keywords)
        self._use_grammar(grammar)
        logger.info("Vosk model %s loaded%s", model_dir, f" with a grammar of {len(grammar)} phrases" if grammar else "")

    def _use_grammar(self, grammar: list[str] | None) -> None:
        self._grammar = json.dumps(grammar, ensure_ascii=False) if grammar else None
        if grammar:
            self._warn_unknown_words(grammar)
        try:
            self.start_stream()
        except RuntimeError as e:
            raise EngineUnavailable(self._unusable(self.model_dir, "its decoding graph cannot be built")) from e

    @staticmethod
    def _unusable(model_dir: Path, why: str) -> str:
        return (f"the Vosk model at {model_dir} is corrupt or incomplete ({why}; Kaldi's error is printed above). "
                f"Fetch a fresh copy with `jingbao model fetch --vosk`, or point {VOSK.config_key} / {VOSK.env_var} "
                "at a good one.")

    def _warn_unknown_words(self, grammar: list[str]) -> None:
        """Vosk silently leaves out grammar words its vocabulary lacks; say which, once, at load time."""
        unknown = sorted({w for phrase in grammar for w in phrase.split()
                          if w != UNKNOWN and self._model.vosk_model_find_word(w) < 0})
        if unknown:
            logger.warning("grammar words not in the Vosk vocabulary, ignored: %s", " ".join(unknown))

    def start_stream(self, alternatives: bool = True) -> VoskStream:  # no alternative hearings to make
        try:
            if self._grammar:
                recognizer = vosk.KaldiRecognizer(self._model, SAMPLE_RATE, self._grammar)
            else:
                recognizer = vosk.KaldiRecognizer(self._model, SAMPLE_RATE)
        except Exception as e:  # bare Exception("Failed to create a recognizer")
            raise RuntimeError(f"Vosk cannot create a recognizer for {self.model_dir}") from e
        recognizer.SetWords(True)
        recognizer.SetPartialWords(True)
        return VoskStream(recognizer, self._keywords)

    def start_alternatives(self) -> None:  # no alternative hearings to make
        return None


class VoskStream:
    """One utterance. Vosk may end a segment by itself on a long pause inside the utterance (AcceptWaveform
    returns True); those segments are kept and joined with the rest, with times from the stream's start."""

    def __init__(self, recognizer: vosk.KaldiRecognizer, keywords: Sequence[KeywordEntry] = ()) -> None:
        self._recognizer = recognizer
        self._keywords = keywords
        self._segments: list[Word] = []
        self._finished: Transcript | None = None

    def feed(self, pcm: bytes) -> None:
        if self._finished is not None:
            raise RuntimeError("feed() after finish()")
        if pcm and self._recognizer.AcceptWaveform(pcm):
            self._segments += _words(json.loads(self._recognizer.Result()).get("result", ()))

    def partial(self) -> Transcript | None:
        current = json.loads(self._recognizer.PartialResult())
        words = self._segments + _words(current.get("partial_result", ()))
        return _transcript(words, self._keywords, partial=True) if words else None

    def drop_alternatives(self) -> None:  # Vosk hears once
        pass

    def pause_partial(self) -> Transcript | None:  # Vosk's partial holds every word decoded so far
        return self.partial()

    def finish(self) -> Transcript:
        if self._finished is None:
            tail = _words(json.loads(self._recognizer.FinalResult()).get("result", ()))
            self._finished = _transcript(self._segments + tail, self._keywords, partial=False)
        return self._finished


def _words(result: Sequence[dict[str, Any]]) -> list[Word]:
    said = [w for w in result if w["word"] != UNKNOWN]
    texts = ["", *(w["word"] for w in said), ""]  # padded: every word has a neighbour on each side
    # a number's reading depends on its neighbours (302 室 is a room, 302 人 a crowd): each word sees the next one
    return [Word(normalise_numbers(texts[i + 1], before=texts[i], after=texts[i + 2]),
                 round(float(w["start"]), 3), round(float(w["end"]), 3), round(float(w.get("conf", 1.0)), 4))
            for i, w in enumerate(said)]


def _transcript(words: list[Word], keywords: Sequence[KeywordEntry], partial: bool) -> Transcript:
    text = join_words([w.text for w in words])
    conf = sum(w.conf for w in words) / len(words) if words else 0.0
    return Transcript(text=text, pinyin=" ".join(text_to_syllables(text)), words=tuple(words),
                      keywords=_keywords_in(text, words, keywords), engine=VoskEngine.name, conf=round(conf, 4),
                      partial=partial, readable=text)


def _keywords_in(text: str, words: Sequence[Word], entries: Sequence[KeywordEntry]) -> tuple[Keyword, ...]:
    """The labels written in `text`, timed by the words that spell them (a label may span words: 美食 街)."""
    if not entries or not text:
        return ()
    spans, at = [], 0  # each word's (start, end) character offsets in `text`
    for word in words:
        at = text.index(word.text, at)
        spans.append((at, at + len(word.text)))
        at += len(word.text)
    keywords = []
    for position, label, ref in labels_in_text(text, entries):
        spelling = [w for w, (start, end) in zip(words, spans, strict=True) if start < position + len(label) and end > position]
        score = sum(w.conf for w in spelling) / len(spelling)
        keywords.append(Keyword(label, ref, spelling[0].start, spelling[-1].end, round(score, 4)))
    return tuple(keywords)
