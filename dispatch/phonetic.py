"""Pinyin space: one syllable per Chinese character, compared tone-insensitively and tolerant of the confusions
ASR and southern accents make (zh/z, ch/c, sh/s, n/l, in/ing, en/eng, an/ang).

Both place names and incident terms are matched here, so a transcript in characters, in tone-numbered pinyin
("mei3 shi2 jie1") or in plain pinyin ("mei si jie") is read the same way.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import Style, lazy_pinyin, pinyin

from asr.words import jieba_freq

logger = logging.getLogger(__name__)

INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z", "c", "s", "y", "w")
# Confusions that carry no meaning for matching: retroflex/dental, n/l, and front/back nasals.
INITIAL_FOLD = {"zh": "z", "ch": "c", "sh": "s", "n": "l"}
FINAL_FOLD = {"ing": "in", "eng": "en", "ang": "an", "iang": "ian", "uang": "uan"}

READING_MIN_FREQ = 5  # rarer words are not worth indexing by reading (they are not what a caller is likely saying)

_SYLLABLE = re.compile(r"^([a-zü:]+?)([1-5])?$")
_PINYIN_LINE = re.compile(r"^[a-zA-Zü:1-5\s,.;!?，。；！？]+$")


@dataclass(slots=True, frozen=True)
class Syllable:
    base: str  # toneless, lower case, ü written v ("lv")
    tone: int | None  # 1-4, 5 for neutral; None when unknown (plain pinyin)
    others: tuple[str, ...] = ()  # toneless, what other hearings of the same audio heard there (`window_scores`)

    @property
    def folded(self) -> str:
        return fold(self.base)


@lru_cache(maxsize=4096)
def split(base: str) -> tuple[str, str]:
    for ini in INITIALS:
        if base.startswith(ini) and len(base) > len(ini):
            return ini, base[len(ini):]
    return "", base


@lru_cache(maxsize=4096)
def fold(base: str) -> str:
    ini, fin = split(base)
    return INITIAL_FOLD.get(ini, ini) + FINAL_FOLD.get(fin, fin)


@lru_cache(maxsize=65536)
def similarity(a: str, b: str) -> float:
    """Of two toneless syllables: 1.0 the same, 0.9 the same up to an accent confusion, 0.75 same initial and the
    same medial glide (jie/jian, xiu/xia: ASR keeps the onset and loses the tail), 0.5 same initial or same final,
    else 0."""
    if a == b:
        return 1.0
    if fold(a) == fold(b):
        return 0.9
    ai, af = split(fold(a))
    bi, bf = split(fold(b))
    if ai and ai == bi:
        return 0.75 if _medial(af) and _medial(af) == _medial(bf) else 0.5
    return 0.5 if af == bf else 0.0


HEARD_ALIKE = 0.9  # a part the recogniser often hears as another is as near as an accent confusion
BOTH_HEARD_ALIKE = 0.75  # both parts so: as near as a syllable whose onset alone was kept (`similarity`)


@lru_cache(maxsize=65536)
def heard_similarity(said: str, heard: str) -> float:
    """`similarity` of a syllable said and one heard, where a confusion the on-board recogniser often makes over a
    radio (c heard as t, q as j, uo as u: learned from what it heard, dispatch/radio_channel.learned_alike) counts as
    near as an accent confusion; a syllable near in both parts that way (or whose part is near only once folded) as
    near as a kept onset (BOTH_HEARD_ALIKE)."""
    score = similarity(said, heard)
    if score >= HEARD_ALIKE:
        return score
    from dispatch.radio_channel import learned_alike

    (si, sf), (hi, hf) = split(said), split(heard)
    alike = learned_alike()
    if (sf == hf and (si, hi) in alike.initials) or (si == hi and (sf, hf) in alike.finals):
        return HEARD_ALIKE
    # each part the same, an accent confusion away, or misheard the way the recogniser often does: qing heard as ji
    # (q as j, the nasal lost), and a part found after folding (chang heard as tang: ch folds to c, heard as t)
    (fsi, fsf), (fhi, fhf) = split(fold(said)), split(fold(heard))
    initial_near = fsi == fhi or (si, hi) in alike.initials or (fsi, fhi) in alike.initials
    final_near = fsf == fhf or (sf, hf) in alike.finals or (fsf, fhf) in alike.finals
    if initial_near and final_near:
        return max(score, BOTH_HEARD_ALIKE)
    return score


def _medial(final: str) -> str:
    """The glide a final starts with (i, u or ü written v), '' for open finals; a lone i/u/v is a vowel, not a glide."""
    return final[0] if len(final) > 1 and final[0] in "iuv" else ""


def _syllable(token: str) -> Syllable | None:
    m = _SYLLABLE.match(token.lower().replace("ü", "v").replace("u:", "v"))
    if not m:
        return None
    return Syllable(m.group(1), int(m.group(2)) if m.group(2) else None)


def looks_like_pinyin(line: str) -> bool:
    """True for "mei3 shi2 jie1" or "mei si jie you ren da jia"; False for Chinese characters."""
    line = line.strip()
    return bool(line) and bool(_PINYIN_LINE.match(line)) and " " in line


def parse_pinyin(line: str) -> list[Syllable | None]:
    """Space-separated syllables; anything that is not a syllable (punctuation) becomes None, a phrase break."""
    return [_syllable(tok) for tok in re.split(r"[\s,.;!?，。；！？]+|(?<=[1-5])(?=[a-z])", line.strip()) if tok]


def text_syllables(text: str) -> list[Syllable | None]:
    """One entry per character of `text`: its syllable (contextual reading), or None for non-Chinese characters."""
    out: list[Syllable | None] = []
    for token in lazy_pinyin(text, style=Style.TONE3, errors=lambda s: [None] * len(s), neutral_tone_with_five=True):
        out.append(_syllable(token) if token is not None else None)
    return out


@lru_cache(maxsize=8192)
def phrase(word: str) -> tuple[Syllable, ...]:
    """The contextual tone-numbered syllables of a lexicon word."""
    return tuple(s for s in text_syllables(word) if s is not None)


def window_scores(word: str, syllables: list[Syllable | None], start: int, floor: float = 0.0,
                  heteronyms: bool = False, moved_n: bool = False) -> list[float]:
    """Similarity of each syllable of `word` laid over `syllables` from `start`; [] if it runs off the end, crosses a
    break, or can no longer reach a mean of `floor` (which makes scanning many names over a transcript cheap).
    Words are read as pypinyin reads them in context (长乐 chang le), the same reading ASR text gets. With
    `heteronyms`, a character's other readings count too (长 zhang): a recogniser or a person writing the name's
    sound character by character may have read it so (掌乐东路 for 长乐东路); for place names, which are long and
    few, not for the lexicon's many short words. With `moved_n` (place names), two syllables heard with an n on the
    wrong side of their boundary (`resyllabified`) count as the word's two if that reads them better, each at most
    as near as an accent confusion: a name so heard is never heard exactly. A syllable that other hearings of the
    audio heard otherwise (`Syllable.others`) counts as the nearest of them."""
    want = _word_readings(word, heteronyms)
    n = len(want)
    if start + n > len(syllables):
        return []
    heard = syllables[start:start + n]
    if any(syl is None for syl in heard):
        return []
    bases = [syl.base for syl in heard]  # type: ignore[union-attr]
    scores: list[float] = []
    total, need = 0.0, floor * n
    i = 0
    while i < n:
        others = heard[i].others  # type: ignore[union-attr]
        taken = [max(_best(want[i], base) for base in (bases[i], *others)) if others else _best(want[i], bases[i])]
        if moved_n and taken[0] < 1.0 and i + 1 < n and (moved := resyllabified(bases[i], bases[i + 1])):
            moved_scores = [min(HEARD_ALIKE, _best(want[i + j], moved[j])) for j in (0, 1)]
            if sum(moved_scores) > taken[0] + _best(want[i + 1], bases[i + 1]):
                taken = moved_scores
        for score in taken:
            scores.append(score)
            total += score
            i += 1
            if total + (n - i) < need:
                return []
    return scores


def _best(readings: tuple[str, ...], heard: str) -> float:
    return heard_similarity(readings[0], heard) if len(readings) == 1 else max(heard_similarity(r, heard) for r in readings)


# A syllable without an initial as pinyin spells it, and its final as it reads after a consonant (yao: n-iao).
_ZERO_INITIAL = {
    "yi": "i", "ya": "ia", "yao": "iao", "ye": "ie", "you": "iu", "yan": "ian", "yang": "iang", "yin": "in",
    "ying": "ing", "yong": "iong", "yu": "v", "yue": "ve", "yuan": "van", "yun": "vn",
    "wu": "u", "wa": "ua", "wo": "uo", "wai": "uai", "wei": "ui", "wan": "uan", "wen": "un", "wang": "uang",
    "weng": "ueng",
    **{vowel: vowel for vowel in ("a", "o", "e", "ai", "ei", "ao", "ou", "an", "en", "ang", "eng", "er")},
}
_SPELLED = {final: spelled for spelled, final in _ZERO_INITIAL.items()}


@lru_cache(maxsize=65536)
def resyllabified(first: str, second: str) -> tuple[str, str] | None:
    """The same sounds split at the other side of an n: a final n heard as the next syllable's initial or the other
    way round (花鸟 hua niao heard "huan yao", 晚安 wan an heard "wa nan"), which a recogniser cannot tell apart
    in fast speech; None when no such split reads as two syllables of the language."""
    valid = _syllables()
    if first.endswith("n") and second in _ZERO_INITIAL:
        moved = first[:-1], "n" + _ZERO_INITIAL[second]
    elif second.startswith("n") and second[1:] in _SPELLED and not first.endswith(("n", "ng")):
        moved = first + "n", _SPELLED[second[1:]]
    else:
        return None
    return moved if all(m in valid for m in moved) else None


@lru_cache(maxsize=1)
def _syllables() -> frozenset[str]:
    """Every toneless syllable of the language (pypinyin's readings; ü written v), the interjections (n, m, ng, hm) aside."""
    from pypinyin.contrib.tone_convert import to_normal
    from pypinyin.pinyin_dict import pinyin_dict

    readings = {to_normal(r) for value in pinyin_dict.values() for r in value.split(",")}
    return frozenset(readings - {"n", "m", "ng", "hm", "hng"})


def first_readings(word: str, heteronyms: bool = False) -> tuple[str, ...]:
    """The toneless readings `window_scores` compares a word's first syllable with."""
    return _word_readings(word, heteronyms)[0]


def _word_readings(word: str, heteronyms: bool) -> tuple[tuple[str, ...], ...]:
    """Per character: its reading in context; with `heteronyms`, its other readings too."""
    return _readings(word) if heteronyms else _reading(word)


@lru_cache(maxsize=8192)
def _reading(word: str) -> tuple[tuple[str, ...], ...]:
    """Per character of `word`: its reading in context, alone."""
    return tuple((s.base,) for s in phrase(word))


@lru_cache(maxsize=4096)
def _readings(word: str) -> tuple[tuple[str, ...], ...]:
    """Per character of `word`: its reading in context first, then its other readings."""
    context = [s.base for s in phrase(word)]
    if len(context) != len(word):
        return tuple((b,) for b in context)
    others = [pinyin(ch, style=Style.NORMAL, heteronym=True)[0] for ch in word]  # one by one: a phrase has one reading
    return tuple(tuple(dict.fromkeys([c, *alts])) for c, alts in zip(context, others, strict=True))


def tones_agree(word: str, syllables: list[Syllable | None], start: int) -> bool:
    """Tones of `word` match where the input carries tones (neutral tone and unknown tones agree with anything)."""
    for want, got in zip(phrase(word), syllables[start:start + len(phrase(word))], strict=False):
        if got is None:
            return False
        if got.tone not in (None, 5) and want.tone != 5 and want.tone != got.tone:
            return False
    return True


def reading_freq(syllables: tuple[Syllable, ...]) -> int:
    """How common the most common word read exactly so is, tones included (jie1 zhe5: 接着); 0 for none or a rare one.

    For pinyin-only input what `asr.words.word_freq` is for characters. Words of 2-5 characters of jieba's dictionary, each
    read as pypinyin's phrase dictionary reads it (接着 jie1 zhe5, not the 着 zhuo2 of its first reading)."""
    if any(s.tone is None for s in syllables):
        return 0
    return _reading_index().get(tuple(f"{s.base}{s.tone}" for s in syllables), 0)


@lru_cache(maxsize=1)
def _reading_index() -> dict[tuple[str, ...], int]:
    from pypinyin.contrib.tone_convert import to_tone3
    from pypinyin.phrases_dict import phrases_dict
    from pypinyin.pinyin_dict import pinyin_dict

    tone3 = lru_cache(maxsize=None)(lambda marked: to_tone3(marked, neutral_tone_with_five=True).replace("ü", "v"))
    index: dict[tuple[str, ...], int] = {}
    for word, freq in jieba_freq().items():
        if freq < READING_MIN_FREQ or not 2 <= len(word) <= 5:
            continue
        readings = phrases_dict.get(word) or [[pinyin_dict.get(ord(ch), "").split(",")[0]] for ch in word]
        if not all(r and r[0] for r in readings):
            continue  # a character pypinyin does not know
        key = tuple(tone3(r[0]) for r in readings)
        index[key] = max(index.get(key, 0), freq)
    return index
