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
from pathlib import Path

import sherpa_onnx
import yaml

logger = logging.getLogger(__name__)

# Tuning by length, chosen on the principle that a long keyword is hard to trigger by chance (so it can be eased in:
# more boost, lower threshold) while a two-syllable one is easily confused with everyday speech (so it keeps the
# model's defaults). Measured with bench/asr_accuracy.py; the values per syllable count are the only knobs.
TUNED_BY_SYLLABLES: dict[int, tuple[float, float]] = {  # syllables -> (boost, threshold); longer ones use the last
    2: (1.0, 0.25),
    3: (1.5, 0.20),
    4: (2.0, 0.15),
}


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
    """The entry with the boost and threshold of its syllable count (TUNED_BY_SYLLABLES)."""
    syllables = sum(1 for ch in entry.label if "\u4e00" <= ch <= "\u9fff")
    key = min(max(syllables, min(TUNED_BY_SYLLABLES)), max(TUNED_BY_SYLLABLES))
    boost, threshold = TUNED_BY_SYLLABLES[key]
    return replace(entry, boost=boost, threshold=threshold)


def keyword_file(entries: Iterable[KeywordEntry], tokens_file: Path) -> tuple[str, dict[str, KeywordEntry]]:
    """(contents of the spotter's keyword file, key -> entry with its `units` filled in). Entries whose label cannot
    be spelled in the model's units are logged and left out; a unit sequence already claimed is not repeated."""
    lines: list[str] = []
    keys: dict[tuple[str, str], str] = {}
    by_key: dict[str, KeywordEntry] = {}
    claimed: dict[str, KeywordEntry] = {}
    for entry in entries:
        units = entry.units or _spell(entry.label, tokens_file)
        if not units:
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


def _spell(label: str, tokens_file: Path) -> str:
    try:
        (units,) = sherpa_onnx.text2token([label], tokens=str(tokens_file), tokens_type="ppinyin")
    except Exception as e:  # text2token raises bare Exceptions/RuntimeErrors for unknown units
        logger.warning("keyword %r cannot be spelled in the model's units (%s): left out", label, e)
        return ""
    return " ".join(units)


def jurisdiction_keywords(
    jurisdiction_yaml: Path, incident_terms: Mapping[str, str], tune: bool = True
) -> list[KeywordEntry]:
    """Every place name and alias (ref = place id) and every incident term (ref = `incident:<type>`).

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
    labels = {**aliases, **names}
    entries = [KeywordEntry(label, ref) for label, ref in labels.items()]
    entries += [KeywordEntry(term, f"incident:{kind}") for term, kind in incident_terms.items() if term not in labels]
    return [tuned(e) for e in entries] if tune else entries


def refs_in_text(text: str, entries: Iterable[KeywordEntry]) -> set[str]:
    """The refs whose label is written in `text`, longest label first (公园北路夜市 is the market, not the street):
    the ground truth for spotting on transcribed audio, and keywords for engines that give characters."""
    by_label = {e.label: e.ref for e in entries}
    refs: set[str] = set()
    for label in sorted(by_label, key=len, reverse=True):
        if label in text:
            refs.add(by_label[label])
            text = text.replace(label, "\0")
    return refs
