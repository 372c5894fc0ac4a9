"""The keyword list of the sherpa-onnx keyword spotter: the jurisdiction's places (names and aliases) and the
dispatcher's incident terms, each with the boost and trigger threshold that suit it.

A keyword file line is `<ppinyin units> [:boost] [#threshold] @<key>`. The key is ours (`k0`, `k1` ...), not the
label: one (label, ref) pair may have several lines (tone variants, homophones) and one label may name two places,
so the key maps back to exactly one (label, ref) and a label is reported the same way whichever line fired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import product
from pathlib import Path

import sherpa_onnx
import yaml
from pypinyin import Style, lazy_pinyin, pinyin
from pypinyin.contrib.tone_convert import to_finals_tone, to_initials, to_normal, to_tone
from pypinyin.pinyin_dict import pinyin_dict

from asr.words import common_words, word_freq

logger = logging.getLogger(__name__)

# Tuning by length, chosen on the principle that a long keyword is hard to trigger by chance (so it can be eased in:
# more boost, lower threshold) while a two-syllable one is easily confused with everyday speech (so it keeps the
# model's defaults). Measured with bench/asr_accuracy.py; the values per syllable count are the only knobs.
TUNED_BY_SYLLABLES: dict[int, tuple[float, float]] = {  # syllables -> (boost, threshold); longer ones use the last
    2: (1.0, 0.25),
    3: (1.5, 0.20),
    4: (2.0, 0.15),
}
# ... except a two-syllable incident term that sounds like no common word, tones aside (被偷, 家暴, 翻墙): the spotter
# cannot fire on an everyday word said instead, so it is eased like a three-syllable word. Terms read like a common
# word (打架/大家, 可疑/可以, 倒地/到底) keep the defaults. Two-syllable place names keep them too (places must never
# fire falsely; see docs/dispatch.md). Measured on noisy calls and the 53 real recordings (bench/asr_accuracy.py).
DISTINCTIVE_TWO_SYLLABLES = (1.5, 0.15)
HOMOPHONE_FREQ = 1000  # jieba frequency from which a same-sounding word is everyday speech (大家 19177, 拿到 1464)
MAX_TONE_VARIANTS = 3  # keyword lines per label besides its dictionary reading


@dataclass(slots=True, frozen=True)
class KeywordEntry:
    """One keyword: `label` as written (美食街), `ref` what it refers to (place id, or `incident:<type>`).

    `boost`/`threshold` None use the spotter's defaults. `units` gives the ppinyin units explicitly (a tone variant,
    e.g. "h ěn n ín p í g é ch éng"); None derives them from the label with pypinyin.
    """

    label: str
    ref: str
    boost: float | None = None
    threshold: float | None = None
    units: str | None = None


def tuned(entry: KeywordEntry) -> KeywordEntry:
    """The entry with the boost and threshold of its syllable count (TUNED_BY_SYLLABLES), a distinctive two-syllable
    incident term eased (DISTINCTIVE_TWO_SYLLABLES)."""
    syllables = _syllable_count(entry.label)
    key = min(max(syllables, min(TUNED_BY_SYLLABLES)), max(TUNED_BY_SYLLABLES))
    boost, threshold = TUNED_BY_SYLLABLES[key]
    if syllables == 2 and entry.ref.startswith("incident:") and not sounds_like_common_word(entry.label):
        boost, threshold = DISTINCTIVE_TWO_SYLLABLES
    return replace(entry, boost=boost, threshold=threshold)


def _syllable_count(label: str) -> int:
    return sum(1 for ch in label if "\u4e00" <= ch <= "\u9fff")


def sounds_like_common_word(label: str) -> bool:
    """Another word read with the same syllables, tones aside, is everyday speech (jieba frequency >= HOMOPHONE_FREQ):
    打架 (大家), 可疑 (可以); not 被偷, 家暴."""
    keys = set(product(*(_readings(ch) for ch in label)))
    return any(word != label and word_freq(word) >= HOMOPHONE_FREQ
               for key in keys for word in _common_words_read(len(label)).get(key, ()))


@lru_cache(maxsize=8192)
def _readings(ch: str) -> frozenset[str]:
    """Every toneless reading of a character (大: da, dai), from pypinyin's dictionary."""
    return frozenset(to_normal(r) for r in pinyin_dict.get(ord(ch), "").split(",") if r)


@lru_cache(maxsize=4)
def _common_words_read(length: int) -> dict[tuple[str, ...], list[str]]:
    """Toneless readings -> the common words of `length` characters read so (every reading of every character)."""
    index: dict[tuple[str, ...], list[str]] = {}
    for word in common_words(HOMOPHONE_FREQ, length):
        for key in product(*(_readings(ch) for ch in word)):
            index.setdefault(key, []).append(word)
    return index


def tone_variants(label: str) -> list[str]:
    """Other ways the label's tones are said, as keyword units ("q í h uǒ"), its dictionary reading excluded: third-tone
    sandhi (起火 qí huǒ), 一/不 sandhi, and a neutral tone where pypinyin lists one for that character (家 jia). At most
    MAX_TONE_VARIANTS; generated from pypinyin's readings, never from recordings."""
    base = lazy_pinyin(label, style=Style.TONE3, neutral_tone_with_five=True)
    if len(base) != _syllable_count(label) or len(base) < 2:
        return []
    said = [lazy_pinyin(label, style=Style.TONE3, neutral_tone_with_five=True, tone_sandhi=True), _third_tone_sandhi(base)]
    readings = pinyin(label, style=Style.TONE3, heteronym=True, neutral_tone_with_five=True)
    for i in range(1, len(base)):  # a neutral tone is never word-initial
        if f"{base[i][:-1]}5" in readings[i] and base[i][-1] != "5":
            said.append([*base[:i], f"{base[i][:-1]}5", *base[i + 1:]])
    variants = list(dict.fromkeys(" ".join(v) for v in said if v != base))
    return [_units(v.split()) for v in variants[:MAX_TONE_VARIANTS]]


def _third_tone_sandhi(syllables: list[str]) -> list[str]:
    """A third tone before another third tone is said as a second tone (水果 shuí guǒ)."""
    out = list(syllables)
    for i in range(len(out) - 1):
        if out[i].endswith("3") and syllables[i + 1].endswith("3"):
            out[i] = out[i][:-1] + "2"
    return out


def _units(tone3_syllables: list[str]) -> str:
    """Tone-numbered syllables -> the model's ppinyin units (initial, tone-marked final), as text2token spells them."""
    units: list[str] = []
    for syllable in tone3_syllables:
        marked = to_tone(syllable.replace("5", ""))
        initial = to_initials(marked, strict=False)
        units += [initial, to_finals_tone(marked, strict=False)] if initial else [to_finals_tone(marked, strict=False)]
    return " ".join(units)


def keyword_file(entries: Iterable[KeywordEntry], tokens_file: Path) -> tuple[str, dict[str, KeywordEntry]]:
    """(contents of the spotter's keyword file, key -> entry with its `units` filled in). Entries whose label cannot
    be spelled in the model's units are logged and left out; a unit sequence already claimed is not repeated."""
    known = _model_units(tokens_file)
    lines: list[str] = []
    keys: dict[tuple[str, str], str] = {}
    by_key: dict[str, KeywordEntry] = {}
    claimed: dict[str, KeywordEntry] = {}
    for entry in entries:
        units = entry.units or _spell(entry.label, tokens_file)
        if not units or not set(units.split()) <= known:
            if units:
                logger.warning("keyword %s: units %r are not all the model's: left out", entry.label, units)
            continue
        if units in claimed:
            if claimed[units].ref != entry.ref:  # a homophone of the same ref (撕打/厮打) loses nothing
                logger.warning("keyword %s (%s) sounds like %s (%s): keeping the first",
                               entry.label, entry.ref, claimed[units].label, claimed[units].ref)
            continue
        claimed[units] = entry
        key = keys.setdefault((entry.label, entry.ref), f"k{len(keys)}")
        by_key.setdefault(key, replace(entry, units=units))
        line = units
        if entry.boost is not None:
            line += f" :{entry.boost:g}"
        if entry.threshold is not None:
            line += f" #{entry.threshold:g}"
        lines.append(f"{line} @{key}")
    return "".join(line + "\n" for line in lines), by_key


@lru_cache(maxsize=4)
def _model_units(tokens_file: Path) -> frozenset[str]:
    return frozenset(line.split()[0] for line in Path(tokens_file).read_text(encoding="utf-8").splitlines() if line.strip())


def _spell(label: str, tokens_file: Path) -> str:
    try:
        (units,) = sherpa_onnx.text2token([label], tokens=str(tokens_file), tokens_type="ppinyin")
    except Exception as e:  # text2token raises bare Exceptions/RuntimeErrors for unknown units
        logger.warning("keyword %r cannot be spelled in the model's units (%s): left out", label, e)
        return ""
    return " ".join(units)


def jurisdiction_keywords(
    jurisdiction_yaml: Path, incident_terms: Mapping[str, str], tune: bool = True,
    short_names: Mapping[str, str] | None = None,
) -> list[KeywordEntry]:
    """Every place name and alias (ref = place id) and every incident term (ref = `incident:<type>`), tuned, each
    followed by its tone variants (`tone_variants`: same label and ref, other units). `short_names`: more labels of
    places (what people say for them: 东郊市场), handed in by whoever wires the dispatcher to the engine.

    A label shared by two places goes to the place whose own name it is (西光广场 is the landmark, not the alias of
    西光广场小区); between two aliases the first place in the file wins.
    """
    doc = yaml.safe_load(Path(jurisdiction_yaml).read_text(encoding="utf-8")) or {}
    names: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for place in doc.get("places") or []:
        names.setdefault(str(place["name"]), str(place["id"]))
        for alias in place.get("aliases") or []:
            aliases.setdefault(str(alias), str(place["id"]))
    labels = {**(short_names or {}), **aliases, **names}
    entries = [KeywordEntry(label, ref) for label, ref in labels.items()]
    entries += [KeywordEntry(term, f"incident:{kind}") for term, kind in incident_terms.items() if term not in labels]
    if not tune:
        return entries
    return [variant for e in map(tuned, entries) for variant in [e, *(replace(e, units=u) for u in tone_variants(e.label))]]


def labels_in_text(text: str, entries: Iterable[KeywordEntry]) -> list[tuple[int, str, str]]:
    """(position, label, ref) of every label written in `text`, in text order; where labels overlap the longest wins
    (公园北路夜市 is the market, not the street): keywords for engines that give characters (Vosk)."""
    by_label = {e.label: e.ref for e in entries}
    found = []
    for label in sorted(by_label, key=len, reverse=True):
        at = text.find(label)
        while at >= 0:  # str.find, not a regex per label: hundreds of labels would thrash re's pattern cache
            found.append((at, label, by_label[label]))
            at = text.find(label, at + len(label))
        text = text.replace(label, "\0" * len(label))  # same length: the positions of shorter labels still hold
    return sorted(found)


def refs_in_text(text: str, entries: Iterable[KeywordEntry]) -> set[str]:
    """The refs whose label is written in `text` (`labels_in_text`): the ground truth for spotting on transcribed
    audio."""
    return {ref for _, _, ref in labels_in_text(text, entries)}
