"""Toned pinyin -> Chinese characters, the way a pinyin input method writes a sentence: the cheapest path through a
lattice of dictionary words whose readings cover the syllables (Viterbi over word ends).

The on-board recogniser (asr/sherpa_engine.py) hears syllables only ("ge4 dan1 wei4 zhu4 yi4"); people read
characters (各单位注意). The language model is a word unigram over jieba's dictionary (each word's cost is
-log of its share of the dictionary's frequencies, its reading from pypinyin), so a path of fewer, commoner words
wins. Tones pick among same-sounding words (大家 da4 jia1 / 打架 da3 jia4), but the recogniser's tones are not
reliable: a syllable heard in another tone still matches, at a cost (less for the neutral tone and third-tone
sandhi, which are what a wrong tone usually is). Words the caller knows the listeners say (the jurisdiction's place
names and aliases, the incident lexicon, radio phrases: handed in, never read from dispatch/ here) get a
boosted cost, so 怡园小区 is written as the compound and not as 亿元小区 (the same syllables, yi2 yuan2 xiao3 qu1).

Building the reading index from jieba's 349k words takes ~15 s; it is built once and cached on disk
(`$XDG_CACHE_HOME/jingbao/hanzi/`, keyed by the jieba and pypinyin versions), from where it loads in ~0.3 s, and
it is shared by every decoder in the process.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import pickle
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from asr.models import cache_dir

logger = logging.getLogger(__name__)

FORMAT = 3  # bump when the cached index's layout or content rules change
# Costs in nats (natural-log units of the unigram model; a common word costs about 8, a common character 6-9).
TONE_MISMATCH = 2.5  # a syllable heard in a tone the word does not have
TONE_NEAR = 1.5  # ...in the neutral tone, or a neutral one heard toned, or third tone heard as second (sandhi)
ALT_READING = 2.0  # a character read its less common way (的 di4, 行 hang2): its own word reading is preferred
CHAR_FLOOR = 0.5  # frequency given to characters jieba only lists inside words
PASS_THROUGH = 20.0  # a syllable no character reads (a Latin letter, a recognition slip) is written as heard
EXTRA_FREQ = 3000  # a caller's word is at least this common (jieba: 警察 1677, 公园 4609, 公元 6748)
SYLLABLE_EDIT = 4.0  # a hinted word (a spotted keyword) said where the recogniser heard another syllable, or none
MAX_WORD = 8  # syllables of the longest dictionary word tried (extra words may be longer)
_SYLLABLE = re.compile(r"^([a-zü]+)([1-5])$")
_CJK = re.compile(r"^[\u4e00-\u9fff]+$")

Entries = tuple[tuple[str, str, float], ...]  # (tones, word, cost): the cheapest word per tone pattern of a reading
_lock = threading.Lock()


def parse(syllable: str) -> tuple[str, str] | None:
    """"mei3" -> ("mei", "3"); None for what is not a tone-numbered syllable (a Latin letter "B")."""
    m = _SYLLABLE.match(syllable.lower().replace("ü", "v"))
    return (m[1], m[2]) if m else None


def tone_cost(heard: str, said: str) -> float:
    if heard == said:
        return 0.0
    if heard == "5" or said == "5" or (heard == "2" and said == "3"):
        return TONE_NEAR
    return TONE_MISMATCH


def reading(word: str) -> list[str]:
    """A word's tone-numbered syllables in context (pypinyin: 银行 yin2 hang2, 一个 yi2 ge4)."""
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True)


class HanziDecoder:
    """Decodes syllable sequences into characters. Built once (the index is shared and read-only); `decode` is
    thread-safe. `extra_words`: words to prefer (at least `extra_freq` common), with their own reading."""

    def __init__(self, extra_words: Iterable[str] = (), extra_freq: float = EXTRA_FREQ) -> None:
        self._index, total = base_index()
        self._log_total = math.log(total)
        self._extra: dict[str, Entries] = {}
        self.max_word = MAX_WORD
        self._extra_cost = extra_cost = self._log_total - math.log(extra_freq)
        merged: dict[str, dict[str, tuple[float, str]]] = {}
        for word in dict.fromkeys(extra_words):
            if len(word) < 2 or not _CJK.match(word):  # a single character is not made commoner: 没 would be everywhere
                continue
            parsed = [parse(s) for s in reading(word)]
            if len(parsed) != len(word) or None in parsed:
                continue
            key = " ".join(p[0] for p in parsed)  # type: ignore[index]
            tones = "".join(p[1] for p in parsed)  # type: ignore[index]
            options = merged.setdefault(key, {t: (c, w) for t, w, c in _unpack(self._index.get(key, ""))})
            own = options[tones][0] if tones in options and options[tones][1] == word else math.inf
            cost = min(own, extra_cost)
            if tones not in options or cost <= options[tones][0]:
                options[tones] = (cost, word)
            self.max_word = max(self.max_word, len(word))
        self._extra = {key: tuple((t, w, c) for t, (c, w) in options.items()) for key, options in merged.items()}

    def entries(self, key: str) -> Entries:
        """The words read `key` (toneless syllables joined by spaces), cheapest per tone pattern."""
        found = self._extra.get(key)
        if found is not None:
            return found
        packed = self._index.get(key)
        return _unpack(packed) if packed else ()

    def decode(self, syllables: Sequence[str] | str, hints: Sequence[tuple[int, int, str]] = (),
               names: Sequence[tuple[int, int, str]] = ()) -> str:
        """Tone-numbered syllables ("ge4 dan1 wei4", or a list) -> characters. What no character reads stays as
        heard (a Latin letter).

        `hints`: (lo, hi, label) for a word heard somewhere in syllables[lo:hi] by other means (a keyword the
        spotter heard there). It may stand for a run of its length (or one less) in that window, at the cost of an
        extra word plus SYLLABLE_EDIT per syllable the recogniser heard otherwise, so it replaces a misheard run
        (可疑人员 for "ke3 yuan2 yuan2") but not the right words of another meaning beside it.

        `names`: (lo, hi, label) written as `label` over exactly syllables[lo:hi], however they were heard (a place
        the dispatcher found there: its matcher knows how names are misheard); the rest is decoded around them. Of
        two that overlap, the first in the sentence is kept (the longer of two that start together)."""
        if isinstance(syllables, str):
            syllables = syllables.split()
        out: list[str] = []
        at = 0
        for lo, hi, label in sorted(names, key=lambda name: (name[0], -name[1])):  # of two at one place, the longer
            if lo < at or hi <= lo or hi > len(syllables):
                continue
            out += [self._decode(syllables[at:lo], _within(hints, at, lo)), label]
            at = hi
        out.append(self._decode(syllables[at:], _within(hints, at, len(syllables))))
        return "".join(out)

    def _decode(self, syllables: Sequence[str], hints: Sequence[tuple[int, int, str]]) -> str:
        n = len(syllables)
        parsed = [parse(s) for s in syllables]
        edges: dict[int, list[tuple[int, str, float]]] = {}
        for lo, hi, label in hints:
            said = _label_reading(label)
            if not said:
                continue
            for i in range(max(0, lo), min(n, hi)):
                # a run as long as the word, or one shorter for a word of 3+ (the recogniser dropped a syllable);
                # never longer: the hint would swallow a neighbour for the price of one edit
                for j in range(i + max(len(said) - 1, 2 if len(said) > 2 else len(said)), min(hi, i + len(said)) + 1):
                    cost = self._extra_cost + _edit_cost(said, parsed[i:j])
                    edges.setdefault(i, []).append((j, label, cost))
        best = [0.0] + [math.inf] * n  # best[j]: cost of the cheapest writing of syllables[:j]
        back: list[tuple[int, str]] = [(0, "")] * (n + 1)  # (where its last word starts, that word)
        for i in range(n):
            here = best[i]
            for j, label, cost in edges.get(i, ()):
                if here + cost < best[j]:
                    best[j], back[j] = here + cost, (i, label)
            if parsed[i] is None or not self.entries(parsed[i][0]):  # type: ignore[index]
                if here + PASS_THROUGH < best[i + 1]:
                    best[i + 1], back[i + 1] = here + PASS_THROUGH, (i, syllables[i])
                continue
            key = ""
            for j in range(i, min(n, i + self.max_word)):
                p = parsed[j]
                if p is None:
                    break
                key = f"{key} {p[0]}" if key else p[0]
                for tones, word, cost in self.entries(key):
                    total = here + cost
                    for k, said in enumerate(tones, start=i):
                        heard = parsed[k][1]  # type: ignore[index]
                        if heard != said:
                            total += tone_cost(heard, said)
                    if total < best[j + 1]:
                        best[j + 1], back[j + 1] = total, (i, word)
        out: list[str] = []
        j = n
        while j > 0:
            j, word = back[j]
            out.append(word)
        return "".join(reversed(out))


def _within(hints: Sequence[tuple[int, int, str]], lo: int, hi: int) -> list[tuple[int, int, str]]:
    """The hints' windows cut to syllables[lo:hi], counted from lo."""
    return [(max(a, lo) - lo, min(b, hi) - lo, label) for a, b, label in hints if a < hi and b > lo]


@lru_cache(maxsize=4096)
def _label_reading(label: str) -> tuple[tuple[str, str], ...]:
    parsed = [parse(s) for s in reading(label)] if _CJK.match(label) else []
    return () if not parsed or None in parsed or len(parsed) != len(label) else tuple(parsed)  # type: ignore[arg-type]


def _edit_cost(said: Sequence[tuple[str, str]], heard: Sequence[tuple[str, str] | None]) -> float:
    """Weighted edit distance between a word's syllables and the syllables heard: SYLLABLE_EDIT per syllable
    inserted, dropped or heard as another, the tone cost for one heard in another tone."""
    row = [k * SYLLABLE_EDIT for k in range(len(heard) + 1)]
    for a in said:
        prev, row[0] = row[0], row[0] + SYLLABLE_EDIT
        for k, b in enumerate(heard, start=1):
            sub = SYLLABLE_EDIT if b is None or a[0] != b[0] else tone_cost(b[1], a[1])
            prev, row[k] = row[k], min(row[k] + SYLLABLE_EDIT, row[k - 1] + SYLLABLE_EDIT, prev + sub)
    return row[-1]


@lru_cache(maxsize=1)
def base_index() -> tuple[dict[str, str], float]:
    """(toneless reading -> entries, total frequency) of jieba's dictionary: loaded from the cache, else built and
    cached."""
    with _lock:
        path = _cache_path()
        if path.is_file():
            try:
                gc.disable()  # a few hundred thousand small tuples: collections while unpickling double the time
                with path.open("rb") as f:
                    index, total = pickle.load(f)
                return index, total
            except Exception as e:  # a truncated or foreign file: build again
                logger.warning("hanzi index cache %s unreadable (%s): rebuilding it", path, e)
            finally:
                gc.enable()
        logger.info("building the pinyin -> characters index from jieba's dictionary (once; cached in %s)", path.parent)
        index, total = _build()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False) as f:
                pickle.dump((index, total), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(f.name, path)
            for old in path.parent.glob("index-*.pickle"):  # other formats or library versions: never read again
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError as e:
            logger.warning("hanzi index not cached (%s): it is built again at the next start", e)
        return index, total


def _cache_path() -> Path:
    from importlib.metadata import version

    return cache_dir().parent / "hanzi" / f"index-{FORMAT}-jieba{version('jieba')}-pypinyin{version('pypinyin')}.pickle"


def _jieba_words() -> dict[str, int]:
    import jieba

    words: dict[str, int] = {}
    with open(os.path.join(os.path.dirname(jieba.__file__), "dict.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                words[parts[0]] = words.get(parts[0], 0) + int(parts[1])
    return words


def _build() -> tuple[dict[str, str], float]:
    from pypinyin.contrib.tone_convert import to_tone3
    from pypinyin.pinyin_dict import pinyin_dict

    freq = _jieba_words()
    total = float(sum(freq.values()))
    log_total = math.log(total)
    best: dict[str, dict[str, tuple[float, str]]] = {}

    def add(key: str, tones: str, word: str, cost: float) -> None:
        options = best.setdefault(key, {})
        if tones not in options or cost < options[tones][0]:
            options[tones] = (cost, word)

    for word, f in freq.items():
        if len(word) < 2 or len(word) > MAX_WORD or not _CJK.match(word):
            continue
        parsed = [parse(s) for s in reading(word)]
        if len(parsed) != len(word) or None in parsed:
            continue
        add(" ".join(p[0] for p in parsed), "".join(p[1] for p in parsed), word, log_total - math.log(f))  # type: ignore[index]
    for code, readings in pinyin_dict.items():
        ch = chr(code)
        if not _CJK.match(ch):
            continue
        cost = log_total - math.log(freq.get(ch, 0) + CHAR_FLOOR)
        for n, marked in enumerate(readings.split(",")):
            p = parse(to_tone3(marked, neutral_tone_with_five=True))
            if p is not None:
                add(p[0], p[1], ch, cost + (ALT_READING if n else 0.0))
    # A word dearer than writing its syllables as single characters of the same tones can never be on a cheapest
    # path (the characters take the same tone costs): dropped, which halves the index.
    chars = {key: options for key, options in best.items() if " " not in key}
    index: dict[str, str] = {}
    for key, options in best.items():
        keep = options
        if " " in key:
            bases = key.split()
            keep = {t: (c, w) for t, (c, w) in options.items()
                    if c < sum(chars.get(b, {}).get(tone, (math.inf, ""))[0] for b, tone in zip(bases, t, strict=True))}
        if keep:
            index[key] = ";".join(f"{t},{w},{c:.2f}" for t, (c, w) in keep.items())
    return index, total


@lru_cache(maxsize=65536)
def _unpack(packed: str) -> Entries:
    """"34,打架,8.71;41,大家,8.06" -> (("34", "打架", 8.71), ("41", "大家", 8.06)). The index keeps its entries packed in
    one string per reading: a third of the memory of tuples (about 40 MB for 260k readings), and a third of the
    load time."""
    if not packed:
        return ()
    out = []
    for item in packed.split(";"):
        tones, word, cost = item.split(",")
        out.append((tones, word, float(cost)))
    return tuple(out)
