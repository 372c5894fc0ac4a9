"""Pinyin helpers: the pinyin recogniser's units (initials and tone-marked finals, "ppinyin") <-> tone-numbered
syllables, Chinese text -> syllables (pypinyin), and the syllable error rate.

Conventions, the same as pypinyin's `Style.TONE3` with `neutral_tone_with_five=True`, so recogniser output and
references converted from text compare directly: every syllable ends in its tone digit, the neutral tone is `5`
(`men5`), and ü is written `v` (`nv3`, `lve4`) except after j/q/x/y where pinyin writes it `u` (`jue2`).
Latin letters (the model spells some English) are upper-case syllables without a digit (`B`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pypinyin import Style, lazy_pinyin
from pypinyin.contrib.tone_convert import to_tone3
from rapidfuzz.distance import Levenshtein

from asr.numbers import normalise_numbers

logger = logging.getLogger(__name__)

INITIALS = frozenset(
    {"b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "zh", "ch", "sh", "r", "z", "c", "s", "y", "w"}
)
# the model writes 〇 (ling2, "zero" in digit strings) as a token of its own
SPECIAL_UNITS = {"○": "ling2"}
LAST_SYLLABLE_TAIL = 0.25  # seconds a syllable lasts after its last unit when nothing follows it
_TONE_DIGIT = re.compile(r"[1-5]$")
_PLAIN = {marked: plain for plain, row in {"a": "āáǎà", "e": "ēéěè", "i": "īíǐì", "o": "ōóǒò", "u": "ūúǔù", "ü": "ǖǘǚǜ",
                                          "n": "ńňǹ"}.items() for marked in row}


@dataclass(slots=True, frozen=True)
class Syllable:
    text: str  # tone-numbered, e.g. "mei3"
    start: float
    end: float
    conf: float  # geometric mean of its units' probabilities


def _unit_to_syllable(unit: str) -> str:
    if unit in SPECIAL_UNITS:
        return SPECIAL_UNITS[unit]
    if unit.isascii() and unit.isalpha() and unit.isupper():
        return unit
    return to_tone3(unit, neutral_tone_with_five=True)


def units_to_syllables(units: Sequence[str], times: Sequence[float], logprobs: Sequence[float]) -> list[Syllable]:
    """Join initials with the final that follows them. A final without an initial (ōu, ér) is a syllable by itself;
    an initial not followed by a final is a decoding slip with no syllable to give, and is dropped."""
    groups: list[tuple[str, list[int]]] = []  # (pinyin with tone mark, unit indices)
    pending: int | None = None  # index of an initial waiting for its final
    for i, unit in enumerate(units):
        if unit in INITIALS:
            if pending is not None:
                logger.debug("initial %r without a final dropped", units[pending])
            pending = i
            continue
        if pending is not None:
            groups.append((units[pending] + unit, [pending, i]))
            pending = None
        else:
            groups.append((unit, [i]))
    syllables = []
    for n, (marked, idx) in enumerate(groups):
        start = times[idx[0]]
        tail = times[idx[-1]] + LAST_SYLLABLE_TAIL
        end = min(times[groups[n + 1][1][0]], tail) if n + 1 < len(groups) else tail
        mean_logprob = sum(logprobs[i] for i in idx) / len(idx) if logprobs else 0.0
        conf = math.exp(mean_logprob)
        syllables.append(Syllable(_unit_to_syllable(marked), round(start, 3), round(max(end, start), 3), round(conf, 4)))
    return syllables


def _latin_letters(chars: str) -> list[str]:
    """pypinyin's callback for characters with no pinyin: keep letters (spelled one by one), drop punctuation."""
    return [c.upper() for c in chars if c.isascii() and c.isalpha()]


def text_to_syllables(text: str) -> list[str]:
    """Chinese text -> tone-numbered syllables; Arabic numbers are read out first, as spoken (codes digit by digit,
    quantities as numbers: `asr.numbers`), punctuation dropped."""
    spoken = normalise_numbers(text)
    return lazy_pinyin(spoken, style=Style.TONE3, neutral_tone_with_five=True, errors=_latin_letters)


def toneless_unit(unit: str) -> str:
    """A ppinyin unit without its tone mark (iǎn -> ian, ǚ -> ü)."""
    return "".join(_PLAIN.get(ch, ch) for ch in unit)


def toneless(syllables: Sequence[str]) -> list[str]:
    return [_TONE_DIGIT.sub("", s) for s in syllables]


def syllable_errors(reference: Sequence[str], hypothesis: Sequence[str], tones: bool = True) -> int:
    """Substitutions + deletions + insertions between two syllable sequences (with or without tone digits)."""
    if not tones:
        reference, hypothesis = toneless(reference), toneless(hypothesis)
    return Levenshtein.distance(list(reference), list(hypothesis))
