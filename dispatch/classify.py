"""What is happening? Incident type and priority from the words of a transcript, in characters or pinyin alike.

The lexicon (dispatch/lexicon.yaml, extended by operators through `DispatchConfig.lexicon`) lists words per type.
Words are found as characters and in pinyin space (tone-insensitive, accent-tolerant) so a homophone written by the
ASR (打价 for 打架) or a pinyin-only transcript still counts. Two-syllable words in pinyin must also agree in tone
where the input has tones (大家 is not 打架); one-character words count only as characters.
Overlapping words: the longest wins (大家注意 shadows 打架 in "da jia zhu yi"); on equal length an incident word wins
over chatter. The type is the one with the strongest evidence: its words' weights combined (a plain term is sure;
two weak words of one type outweigh one weak word of another), ties by `precedence` (weapon beats fight). Priority:
the highest priority carried by a matched term of that type, else the type's default, raised by severity words (持刀,
昏迷 -> critical; 流血, 孩子 -> high). A negation just before a word (没有人受伤, 无人员伤亡, 没有发现可疑) cancels it.
Report words (报警, 请求支援, 赶往现场) say that something happened without saying what: when no type word is heard they
give `other` at REPORT_PRIORITY, so the operator sees a call that the ASR garbled. Only chatter, or nothing -> `none`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from dispatch.config import LexiconExtension
from dispatch.location import FUZZY_MIN, read_input
from dispatch.phonetic import Syllable, phrase, tones_agree, window_scores

logger = logging.getLogger(__name__)

LEXICON_FILE = Path(__file__).with_name("lexicon.yaml")
PRIORITIES = ("low", "medium", "high", "critical")
WEAK, PLAIN = 0.5, 1.0
NEGATION_REACH = 2  # characters/syllables allowed between a negation and the word it cancels (没有|人|受伤)
FUZZY_SYLLABLES = 3  # incident words this long are also heard approximately in ASR pinyin (as place names are)
NEAR_SYLLABLE = 0.75  # ... each syllable at least its onset and glide right (see phonetic.similarity)
SURE_KEYWORD = 0.6  # a spotted word whose score (agreement with the free recogniser) reaches this counts as heard right
REPORT, REPORT_PRIORITY = "report", "medium"  # an incident of unknown type: sent, but not as urgent as a known danger

IncidentType = Literal[
    "fight", "theft", "robbery", "weapon", "fire", "medical", "missing", "suspicious", "dispute", "domestic",
    "gathering", "traffic", "noise", "fraud", "other", "none",
]


@dataclass(slots=True, frozen=True)
class Classification:
    type: IncidentType
    priority: str  # critical | high | medium | low | none
    terms: tuple[str, ...]  # the words that decided it (as in the lexicon)
    confidence: float

    @property
    def is_incident(self) -> bool:
        return self.type != "none"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "priority": self.priority, "terms": list(self.terms), "confidence": round(self.confidence, 3)}


@dataclass(slots=True, frozen=True)
class _Term:
    word: str
    role: str  # an incident type, "report", "chatter", "severity", "negation"
    weight: float = PLAIN
    priority: str | None = None


@dataclass(slots=True, frozen=True)
class _Hit:
    term: _Term
    start: int
    end: int
    exact: bool  # as characters, or the very syllables (not only accent-equal)


class Lexicon:
    """The compiled lexicon: words indexed by their folded syllables for pinyin-space look-up."""

    def __init__(self, data: dict[str, Any], extension: LexiconExtension | None = None) -> None:
        self.precedence: list[str] = list(data["precedence"])
        self.default_priority: dict[str, str] = {t: spec["priority"] for t, spec in data["types"].items()}
        terms: list[_Term] = []
        for type_, spec in data["types"].items():
            terms += _type_terms(type_, spec)
        terms += [_Term(w, REPORT) for w in data["reports"]]
        terms += [_Term(w, "chatter") for w in data["chatter"]]
        terms += [_Term(w, "severity", priority=p) for p in ("critical", "high") for w in data["severity"][p]]
        terms += [_Term(w, "negation") for w in data["negations"]]
        if extension:
            terms += self._extension_terms(extension)
        self.terms = terms
        self._by_key: dict[tuple[str, ...], list[_Term]] = defaultdict(list)
        for t in terms:
            key = tuple(s.folded for s in phrase(t.word))
            if len(key) == len(t.word) and len(key) >= 2:  # pinyin look-up only for all-Chinese words of 2+ syllables
                self._by_key[key].append(t)
        self._lengths = sorted({len(k) for k in self._by_key}, reverse=True)
        self._long_terms = [t for t in terms if t.role != "negation" and len(phrase(t.word)) == len(t.word) >= FUZZY_SYLLABLES]

    def _extension_terms(self, ext: LexiconExtension) -> list[_Term]:
        out: list[_Term] = []
        for type_, spec in ext.types.items():
            if spec.priority:
                self.default_priority[type_] = spec.priority
            out += _type_terms(type_, spec.model_dump())
        out += [_Term(w, "chatter") for w in ext.chatter]
        out += [_Term(w, "severity", priority="critical") for w in ext.severity_critical]
        out += [_Term(w, "severity", priority="high") for w in ext.severity_high]
        out += [_Term(w, "negation") for w in ext.negations]
        return out

    def incident_terms(self) -> dict[str, str]:
        """term -> incident type (`other` for report words), for the keyword spotter."""
        return {t.word: "other" if t.role == REPORT else t.role for t in self.terms if self.is_incident_word(t)}

    def is_incident_word(self, term: _Term) -> bool:
        return term.role in self.default_priority or term.role == REPORT

    def find(self, text: str, syllables: list[Syllable | None]) -> list[_Hit]:
        """Every occurrence of every word, as characters and in pinyin space (approximately, for words of
        `FUZZY_SYLLABLES` or more, when the input is pinyin only: the recogniser's near-misses)."""
        hits: list[_Hit] = []
        if text:
            for t in self.terms:
                start = text.find(t.word)
                while start >= 0:
                    hits.append(_Hit(t, start, start + len(t.word), True))
                    start = text.find(t.word, start + 1)
        folded = [s.folded if s else None for s in syllables]
        for n in self._lengths:
            for start in range(len(folded) - n + 1):
                for t in self._by_key.get(tuple(folded[start:start + n]), ()):
                    if text and text[start:start + n] == t.word:
                        continue  # found as characters
                    if n == 2 and not tones_agree(t.word, syllables, start):
                        continue
                    exact = [s.base for s in phrase(t.word)] == [s.base for s in syllables[start:start + n] if s]
                    hits.append(_Hit(t, start, start + n, exact and not text))
        if not text:
            hits += self._near(syllables, {(h.term.word, h.start) for h in hits})
        return hits

    def _near(self, syllables: list[Syllable | None], found: set[tuple[str, int]]) -> list[_Hit]:
        """Long words heard with a syllable or two not quite right (mean similarity >= FUZZY_MIN, as for place
        names) and no syllable only half right (没有及时 is not 没有意识). Short words are too easily made of ordinary
        speech."""
        hits = []
        for t in self._long_terms:
            n = len(phrase(t.word))
            for start in range(len(syllables) - n + 1):
                scores = window_scores(t.word, syllables, start, FUZZY_MIN)
                if scores and sum(scores) / n >= FUZZY_MIN and min(scores) >= NEAR_SYLLABLE and (t.word, start) not in found:
                    hits.append(_Hit(t, start, start + n, False))
        return hits

    def spotted(self, keywords: list[tuple[str, str, float, tuple[int, int] | None]], after: int) -> list[_Hit]:
        """Incident words the ASR keyword spotter heard (ref `incident:<type>`), where its timing puts them;
        one whose place is unknown is put `after` the transcript (beyond any negation's reach)."""
        by_word = {t.word: t for t in self.terms if self.is_incident_word(t)}
        hits = []
        for label, ref, score, span in keywords:
            term = by_word.get(label)
            if not ref.startswith("incident:") or term is None:
                continue
            start, end = span or (after + NEGATION_REACH + 1, after + NEGATION_REACH + 1)
            hits.append(_Hit(term, start, end, score >= SURE_KEYWORD))
        return hits


def _type_terms(type_: str, spec: dict[str, Any]) -> list[_Term]:
    own = {w: p for p in PRIORITIES for w in spec.get(p) or ()}
    terms = [_Term(w, type_, PLAIN, own.get(w)) for w in spec.get("terms") or ()]
    terms += [_Term(w, type_, WEAK, own.get(w)) for w in spec.get("weak") or ()]
    listed = {t.word for t in terms}
    terms += [_Term(w, type_, PLAIN, p) for w, p in own.items() if w not in listed]
    return terms


@lru_cache(maxsize=1)
def _builtin_data() -> dict[str, Any]:
    return yaml.safe_load(LEXICON_FILE.read_text(encoding="utf-8"))


def load_lexicon(extension: LexiconExtension | None = None) -> Lexicon:
    """The built-in lexicon plus operator additions (compiled once per distinct extension)."""
    return _compiled((extension or LexiconExtension()).model_dump_json())


@lru_cache(maxsize=8)
def _compiled(extension_json: str) -> Lexicon:
    return Lexicon(_builtin_data(), LexiconExtension.model_validate_json(extension_json))


def incident_terms(extension: LexiconExtension | None = None) -> dict[str, str]:
    """term -> incident type: the words the ASR keyword spotter should listen for."""
    return load_lexicon(extension).incident_terms()


def classify(text: str = "", pinyin: str = "", lexicon: Lexicon | None = None) -> Classification:
    """Type and priority of what the text (or, with no text, the pinyin) reports; `none` for routine chatter."""
    return classify_transcript({"text": text, "pinyin": pinyin}, lexicon)


def classify_transcript(transcript_like: Any, lexicon: Lexicon | None = None) -> Classification:
    """`classify` of a whole transcript (Transcript, its dict, or a string): its text or pinyin, and the incident
    words the ASR keyword spotter heard (what the recogniser alone often mishears: 持刀 as "chi1 dao1")."""
    lexicon = lexicon or load_lexicon()
    inp = read_input(transcript_like)
    hits = lexicon.find(inp.text, inp.syllables) + lexicon.spotted(inp.keywords, len(inp.syllables))
    negations = [h for h in hits if h.term.role == "negation"]
    words = _longest([h for h in hits if h.term.role not in ("negation", "severity")])
    words = [h for h in words if not _negated(h, negations)]
    incident = [h for h in words if h.term.role not in ("chatter", REPORT)]
    reports = [h for h in words if h.term.role == REPORT and h.exact]  # a guess from context needs a sure word
    severity = [h for h in hits if h.term.role == "severity" and not _negated(h, negations)]
    if not incident and reports:  # something happened, the ASR did not say what
        priority = _raised(REPORT_PRIORITY, severity)
        return Classification("other", priority, tuple(dict.fromkeys(h.term.word for h in reports)), 0.5)
    if not incident:
        return Classification("none", "none", tuple(h.term.word for h in words), 0.9 if words else 0.5)
    evidence = {t: _combined([h for h in incident if h.term.role == t]) for t in {h.term.role for h in incident}}
    best_type = max(evidence, key=lambda t: (evidence[t], -lexicon.precedence.index(t)))
    decisive = [h for h in incident if h.term.role == best_type]
    own = [h.term.priority for h in decisive if h.term.priority]
    priority = _raised(max(own, key=PRIORITIES.index) if own else lexicon.default_priority[best_type], severity)
    strength = evidence[best_type] * (1.0 if any(h.exact for h in decisive) else 0.85)
    rivals = {h.term.role for h in incident} - {best_type}
    confidence = strength * (0.8 if rivals else 1.0)
    return Classification(best_type, priority, tuple(dict.fromkeys(h.term.word for h in decisive)), confidence)  # type: ignore[arg-type]


def _combined(hits: list[_Hit]) -> float:
    """Evidence for one type from its distinct words, as independent clues (1 - product of 1 - weight): one plain word
    is sure (1.0), two weak ones (0.75) outweigh one weak word of another type (0.5)."""
    weights = {h.term.word: h.term.weight for h in hits}
    doubt = 1.0
    for w in weights.values():
        doubt *= 1.0 - w
    return round(1.0 - doubt, 6)  # rounded so that equal evidence ties and precedence decides


def _longest(hits: list[_Hit]) -> list[_Hit]:
    """Non-overlapping words, longest first; on equal length incident words before chatter, characters before pinyin."""
    kept: list[_Hit] = []
    for h in sorted(hits, key=lambda h: (-(h.end - h.start), h.term.role == "chatter", not h.exact, h.start)):
        if not any(k.start < h.end and h.start < k.end for k in kept):
            kept.append(h)
    return sorted(kept, key=lambda h: h.start)


def _negated(hit: _Hit, negations: list[_Hit]) -> bool:
    """A negation ends just before the word, or runs into its start (不需要|支援 in 不需要支援); one the word begins
    with is part of it (没有呼吸)."""
    return any(0 <= hit.start - n.end <= NEGATION_REACH or n.start < hit.start < n.end <= hit.end for n in negations)


def _raised(level: str, severity: list[_Hit]) -> str:
    """`level` raised by severity words."""
    for h in severity:
        if PRIORITIES.index(h.term.priority) > PRIORITIES.index(level):
            level = h.term.priority
    return level
