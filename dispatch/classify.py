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
From ASR pinyin, words are also heard the way the recogniser errs on radio: long words nearly (onsets kept, one syllable
of a long word lost), two-syllable words with fricative onsets confused (翻墙 as "san1 qiang2"); a two-syllable word
read like a commoner word (自燃/自然) is not taken from pinyin alone. A word heard only approximately weighs a little
less than one heard as itself, so on a tie the surer word decides.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml

from asr.transcript import Transcript, Word
from asr.words import common_words, word_freq
from dispatch.config import LexiconExtension
from dispatch.location import (
    FUZZY_MIN,
    PlaceIndex,
    PlacesHeard,
    TranscriptInput,
    hear_places,
    heard_together,
    read_input,
)
from dispatch.phonetic import (
    Syllable,
    fold,
    phrase,
    reading_freq,
    split,
    text_syllables,
    tones_agree,
    window_scores,
)
from dispatch.type_model import Evidence, TypeModel, features, load_model

logger = logging.getLogger(__name__)

LEXICON_FILE = Path(__file__).with_name("lexicon.yaml")
PRIORITIES = ("low", "medium", "high", "critical")
WEAK, PLAIN = 0.5, 1.0
NEGATION_REACH = 2  # characters/syllables allowed between a negation and the word it cancels (没有|人|受伤)
FUZZY_SYLLABLES = 3  # incident words this long are also heard approximately in ASR pinyin (as place names are)
NEAR_SYLLABLE = 0.75  # ... each syllable at least its onset and glide right (see phonetic.similarity)
# Before onsets are raised (see _onset_kept: +0.25 each, at most 60 % of a word's syllables under a 0.85 mean) no
# window below this mean can become a near hit; skipping those keeps the scan cheap.
RAW_FLOOR = FUZZY_MIN - (NEAR_SYLLABLE - 0.5) * (1 - FUZZY_MIN) / (1 - NEAR_SYLLABLE)
LOST_SYLLABLE_WORD = 5  # ... and words this long with one syllable lost to noise, every other one right up to an accent
ACCENT_ONLY = 0.9  # (phonetic.similarity of the same syllable up to an accent confusion)
SURE_KEYWORD = 0.6  # a spotted word whose score (agreement with the free recogniser) reaches this counts as heard right
REPORT, REPORT_PRIORITY = "report", "medium"  # an incident of unknown type: sent, but not as urgent as a known danger
NOT_NOW = "not_now"  # the lexicon's role for words saying a matter is over, second-hand or a reminder
SOUND_ALIKE_FREQ = 1000  # a word read like a two-syllable term and this common (jieba; as asr.keywords.HOMOPHONE_FREQ)
# is likelier what was said
NAME_RUN_MIN = 0.6  # a name is written over syllables near where it was heard that sound more than this like it
HEARD_APPROXIMATELY = 0.9  # weight factor of a word not heard as itself: a word heard right outweighs it on a tie

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
    # It sounds like a report (not routine traffic) but its type is not certain: the operator confirms the type (or
    # dismisses it) before anyone is alerted. `type` is then the best guess, `other` when there is none.
    needs_confirmation: bool = False

    @property
    def is_incident(self) -> bool:
        return self.type != "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "priority": self.priority,
            "terms": list(self.terms),
            "confidence": round(self.confidence, 3),
            "needs_confirmation": self.needs_confirmation,
        }


@dataclass(slots=True, frozen=True)
class _Term:
    word: str
    role: str  # an incident type, "report", "chatter", "not_now", "severity", "negation"
    weight: float = PLAIN
    priority: str | None = None


@dataclass(slots=True, frozen=True)
class _Hit:
    term: _Term
    start: int
    end: int
    exact: bool  # as characters, or the very syllables (not only accent-equal)
    as_itself: bool = True  # its very syllables (a homophone written for it counts), not only a reading near them


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
        terms += [_Term(w, NOT_NOW) for w in data.get("not_now", ())]
        terms += [_Term(w, "severity", priority=p) for p in ("critical", "high") for w in data["severity"][p]]
        terms += [_Term(w, "negation") for w in data["negations"]]
        if extension:
            terms += self._extension_terms(extension)
        # the operator's own words: the type model never saw them, so they are not second-guessed
        self.operator_words = {t.word for t in self._extension_terms(extension)} if extension else set()
        self.terms = terms
        self._by_key: dict[tuple[str, ...], list[_Term]] = defaultdict(list)
        for t in terms:
            key = tuple(s.folded for s in phrase(t.word))
            if len(key) == len(t.word) and len(key) >= 2 and _sound_alike(t.word) != WRITTEN_ONLY:
                self._by_key[key].append(t)  # pinyin look-up only for all-Chinese words of 2+ syllables
        self._lengths = sorted({len(k) for k in self._by_key}, reverse=True)
        # with each word's initials (folded): what _near compares first, for every word, on every transcript
        self._long_terms = [(t, [split(s.folded)[0] for s in phrase(t.word)]) for t in terms
                            if t.role not in ("negation", NOT_NOW) and len(phrase(t.word)) == len(t.word) >= FUZZY_SYLLABLES]
        self._incident_words = {t.word: t for t in terms if self.is_incident_word(t)}
        self._by_radio_key: dict[tuple[str, ...], list[_Term]] = defaultdict(list)
        for key, found in self._by_key.items():
            if len(key) == 2:
                self._by_radio_key[tuple(map(_radio_fold, key))] += [t for t in found if self.is_incident_word(t)]

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
                    if n == 2 and not exact and _sound_alike(t.word) == EXACT_ONLY:
                        continue
                    hits.append(_Hit(t, start, start + n, exact and not text, exact))
        if not text:
            found = {(h.term.word, h.start) for h in hits}
            hits += self._near(syllables, found) + self._fricatives_confused(syllables, found)
        return hits

    def _near(self, syllables: list[Syllable | None], found: set[tuple[str, int]]) -> list[_Hit]:
        """Long words heard with a syllable or two not quite right (mean similarity >= FUZZY_MIN, as for place
        names) and no syllable only half right (没有及时 is not 没有意识), a syllable whose onset was kept counting as
        nearly right (偷手机 heard "tong shou ji"); words of LOST_SYLLABLE_WORD or more syllables also with one syllable
        lost and the others right (找不到家长 heard "jiao bu dao jia zhang"). Short words are too easily made of
        ordinary speech."""
        hits = []
        # a syllable nearly right (>= NEAR_SYLLABLE, or onset kept) has the word's initial: windows whose initials
        # differ in more places than a word may lose syllables are skipped before any scoring
        heard = [split(s.folded)[0] if s else None for s in syllables]
        at: dict[str | None, list[int]] = defaultdict(list)  # where each initial was heard
        for i, initial in enumerate(heard):
            at[initial].append(i)
        for t, want in self._long_terms:
            n = len(want)
            lost = 1 if n >= LOST_SYLLABLE_WORD else 0
            floor = (n - 1) * ACCENT_ONLY / n if lost else RAW_FLOOR
            # a window may differ in `lost` initials at most: its first initial is right, or (one lost) its second
            starts = at.get(want[0], []) if not lost else sorted({*at.get(want[0], ()), *(i - 1 for i in at.get(want[1], ()))})
            for start in starts:
                if not 0 <= start <= len(syllables) - n or _initials_differ(want, heard, start, lost):
                    continue
                scores = window_scores(t.word, syllables, start, floor)
                if not scores or (t.word, start) in found:
                    continue
                scores = sorted(_onset_kept(t.word, syllables, start, scores) if min(scores) < NEAR_SYLLABLE else scores)
                nearly = sum(scores) / n >= FUZZY_MIN and scores[0] >= NEAR_SYLLABLE
                one_lost = n >= LOST_SYLLABLE_WORD and scores[1] >= ACCENT_ONLY
                if nearly or one_lost:
                    hits.append(_Hit(t, start, start + n, False, False))
        return hits

    def _fricatives_confused(self, syllables: list[Syllable | None], found: set[tuple[str, int]]) -> list[_Hit]:
        """Two-syllable incident words heard with one fricative onset swapped for another (翻墙 fan1 qiang2 as
        "san1 qiang2", 抢包 qiang3 bao1 as "xiang3 bao1"): the radio's voice band and noise cut the high frequencies
        that tell f, s, sh, x and h apart, and an aspirated affricate (q, ch, c) whose burst is lost sounds like the
        fricative. Only with
        both tones heard as the word's and the other syllable exact, and not where the syllables heard are a common
        word themselves (走上 is not 走散), so ordinary speech rarely makes one."""
        hits = []
        for start, (first, second) in enumerate(pairwise(syllables)):
            if first is None or second is None or reading_freq((first, second)) >= SOUND_ALIKE_FREQ:
                continue
            for t in self._by_radio_key.get((_radio_fold(first.folded), _radio_fold(second.folded)), ()):
                want = phrase(t.word)
                one_exact = want[0].base == first.base or want[1].base == second.base
                tones = want[0].tone == first.tone and want[1].tone == second.tone
                if one_exact and tones and (t.word, start) not in found:
                    hits.append(_Hit(t, start, start + 2, False, False))
        return hits

    def spotted(self, keywords: list[tuple[str, str, float, tuple[int, int] | None]], syllables: list[Syllable | None]
                ) -> list[_Hit]:
        """Incident words the ASR keyword spotter heard (ref `incident:<type>`), where its timing puts them;
        one whose place is unknown is put after the transcript (beyond any negation's reach). A word counts as heard
        surely when the recogniser, where the timing puts it, heard its very syllables too, or when the spotter is sure
        of it (score >= SURE_KEYWORD) and the recogniser heard about the same there (剐蹭 as "guan3 ceng4"); two ears
        that disagree make a guess (落水 spotted where the recogniser heard "lu4 shui3", 漏水)."""
        by_word = self._incident_words
        after = len(syllables) + NEGATION_REACH + 1
        hits = []
        for label, ref, score, span in keywords:
            term = by_word.get(label)
            if not ref.startswith("incident:") or term is None:
                continue
            start, end = span or (after, after)
            sure = score >= SURE_KEYWORD
            if span is not None and end - start == len(phrase(term.word)):  # what the recogniser heard there
                scores = window_scores(term.word, syllables, start)
                sure = min(scores, default=0.0) == 1.0 or (sure and sum(scores) / (end - start) >= FUZZY_MIN)
            hits.append(_Hit(term, start, end, sure, sure))
        return hits


def _onset_kept(word: str, syllables: list[Syllable | None], start: int, scores: list[float]) -> list[float]:
    """`scores` with a syllable whose initial and first vowel were heard right raised to NEAR_SYLLABLE: the recogniser
    keeps a syllable's onset and loses its tail under noise (偷 tou heard "tong", as 街 jie is heard "jian")."""
    out = []
    for want, score, got in zip(phrase(word), scores, syllables[start:], strict=False):
        if got is not None and score < NEAR_SYLLABLE:
            (want_initial, want_final), (got_initial, got_final) = split(fold(want.base)), split(fold(got.base))
            if want_initial == got_initial and want_final[:1] == got_final[:1]:
                score = NEAR_SYLLABLE
        out.append(score)
    return out


RADIO_FRICATIVES = ("f", "s", "x", "h", "q", "c")  # (after folding sh to s, ch to c)


def _radio_fold(folded: str) -> str:
    """A folded syllable with its fricative (or aspirated affricate) onset made one (fan, san, xan, han, qan -> fan)."""
    initial, final = split(folded)
    return ("f" + final) if initial in RADIO_FRICATIVES else folded


WRITTEN_ONLY, EXACT_ONLY = "written", "exact"


@lru_cache(maxsize=4096)
def _sound_alike(word: str) -> str:
    """How a two-syllable word must be heard in pinyin when a commoner word is read like it, tones agreeing:
    WRITTEN_ONLY when that word reads exactly the same (自燃/自然, 大火/大伙: in pinyin it is the common word; the
    characters, or the spotter's ear, must say otherwise), EXACT_ONLY when they differ by an accent confusion only
    (走散/走上, 逆行/例行: its very syllables must be heard), '' when no common word sounds like it."""
    want = phrase(word)
    if len(want) != 2 or len(word) != 2:
        return ""
    verdict = ""
    for other, reading in _common_two_syllable_words().get(tuple(s.folded for s in want), ()):
        if word_freq(other) <= word_freq(word) or not all(
                a.tone == b.tone or 5 in (a.tone, b.tone) for a, b in zip(want, reading, strict=True)):
            continue
        if [s.base for s in reading] == [s.base for s in want]:
            return WRITTEN_ONLY
        verdict = EXACT_ONLY
    return verdict


@lru_cache(maxsize=1)
def _common_two_syllable_words() -> dict[tuple[str, ...], list[tuple[str, tuple[Syllable, ...]]]]:
    """Common two-character words (jieba frequency >= SOUND_ALIKE_FREQ) by their folded syllables."""
    index: dict[tuple[str, ...], list[tuple[str, tuple[Syllable, ...]]]] = defaultdict(list)
    for word in common_words(SOUND_ALIKE_FREQ, 2):
        reading = tuple(s for s in text_syllables(word) if s is not None)
        if len(reading) == 2:
            index[tuple(s.folded for s in reading)].append((word, reading))
    return index


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


def classify_transcript(transcript_like: Any, lexicon: Lexicon | None = None, places: PlacesHeard | None = None
                        ) -> Classification:
    """`classify` of a whole transcript (Transcript, its dict, or a string): its text or pinyin, and the incident
    words the ASR keyword spotter heard (what the recogniser alone often mishears: 持刀 as "chi1 dao1"). With the
    `places` heard in it (location.hear_places), the type model does not read their names (see `read_transcript`)."""
    lexicon = lexicon or load_lexicon()
    at_place = places is not None and places.scene() is not None
    return decide(read_transcript(transcript_like, lexicon, places), load_model(), lexicon, at_place=at_place)


def read_report(transcript_like: Any, lexicon: Lexicon, index: PlaceIndex, home: frozenset[str] = frozenset()
                ) -> tuple[Classification, PlacesHeard]:
    """What a transcript reports, and the places heard in it (`.scene()` is where): the names are found once, for
    the type model to leave out and for the scene. `home`: the places its channel usually talks about.

    A transcript with alternative hearings of the same audio (`Transcript.alternatives`: the recogniser at other
    speeds) is read in each: the recogniser's errors differ from one hearing to the next, so a name garbled in one is
    often whole in another. The type model's probabilities are averaged over the hearings (an ensemble: a word
    misheard in one hearing weighs a third, and a type two hearings lean to together wins where neither is sure
    alone), and the main hearing's lexicon reading decides with them; when that is routine but one hearing alone was
    sure of a report, the report goes to the operator (needs_confirmation, that hearing's type the guess). The places
    are those of the scene most hearings name, else the main hearing's when it names one, else those of the first
    alternative that does (docs/dispatch.md, "More than the best hypothesis")."""
    heard = [hear_places(hearing, index, home) for hearing in _hearings(transcript_like)]
    places = _places_heard(heard, transcript_like, index, home)
    if all(places is not h for h in heard):  # heard together: the names lie over the main hearing's syllables, and
        heard[0] = PlacesHeard(heard[0].inp, places.candidates, places.jurisdiction)  # are left out of its reading
        read_alone = heard[0]
    else:
        read_alone = places
    model = load_model()
    if len(heard) == 1 or model is None:
        return classify_transcript(read_alone.inp, lexicon, read_alone), places
    readings = [read_transcript(h.inp, lexicon, h) for h in heard]
    at_place = places.scene() is not None
    each = [model.probabilities(r.features) for r in readings]
    mean = {t: sum(q[t] for q in each) / len(each) for t in each[0]}
    # the main hearing's words, and "over or second-hand" if any hearing heard it so (a word garbled in one hearing)
    main = replace(readings[0], not_now=any(r.not_now for r in readings))
    what = decide(main, model, lexicon, at_place=at_place, p=mean)
    if not what.is_incident:  # one hearing sure of a report, outweighed: a person decides
        alone = (decide(r, model, lexicon, at_place=at_place, p=q) for r, q in zip(readings, each, strict=True))
        sure = next((c for c in alone if c.is_incident and not c.needs_confirmation), None)
        if sure is not None:
            what = replace(sure, needs_confirmation=True)
    return what, places


def names_said(transcript: Transcript, index: PlaceIndex, home: frozenset[str] = frozenset()
               ) -> list[tuple[int, int, str]]:
    """(lo, hi, name): the place names heard in an on-board engine's transcript, each over its words[lo:hi] and named
    as the caller said it (the name, alias or short form), from the hearing `read_report` takes its places from: for
    the characters people read (asr/sherpa_engine.SherpaEngine.write_names), so that a name the recogniser misheard
    reads as the place the dispatcher found. A transcript in characters has its engine's own writing: none."""
    if transcript.text or not transcript.words:
        return []
    hearings = [transcript, *transcript.alternatives]
    heard = [hear_places(hearing, index, home) for hearing in hearings]
    places = _places_heard(heard, transcript, index, home)
    # (heard together, the names lie over the main hearing's syllables)
    hearing = next((h for h, p in zip(hearings, heard, strict=True) if p is places), transcript)
    if any(len(p.inp.syllables) != len(h.words) for h, p in ((hearing, places), (transcript, heard[0]))):
        return []  # each word one syllable, as the engine gives them: else the spans are not the words
    # a name matched in the pinyin lies over exactly the syllables it was heard in; a spotted keyword's span is only
    # where its time falls, a syllable or so either side: the run there that sounds most like it
    spans = []
    for c in places.candidates:
        span = _sounds_most_like(c.said, places.inp.syllables, *c.span) if c.method == "keyword" and c.span else c.span
        if span is not None and c.said:
            spans.append((*span, c.said))
    return spans if hearing is transcript else _laid_over(spans, hearing.words, heard[0].inp, transcript.words)


def _sounds_most_like(label: str, syllables: list[Syllable | None], lo: int, hi: int) -> tuple[int, int] | None:
    """The run of syllables as long as `label`, starting from one before `lo` to where it ends one after `hi`, that
    sounds most like it (the earliest of equals), its first and last syllables at least half like the name's; None
    when none sounds more than NAME_RUN_MIN like it (the name's head lost, say)."""
    size = len(phrase(label))
    best, best_score = None, NAME_RUN_MIN * size
    for start in range(max(0, lo - 1), min(len(syllables), hi + 1) - size + 1):
        scores = window_scores(label, syllables, start)
        if not scores or min(scores[0], scores[-1]) < 0.5:
            continue  # a run that begins or ends on a neighbour's syllable, not the name's
        score = sum(scores)
        if score > best_score:
            best, best_score = (start, start + size), score
    return best


def _laid_over(spans: list[tuple[int, int, str]], heard: tuple[Word, ...], main: TranscriptInput,
               words: tuple[Word, ...]) -> list[tuple[int, int, str]]:
    """Spans of another hearing's words moved onto the main hearing's: near the main words said nearest (by their
    middles: each hearing's syllables end where the next begins) to the span's first and last, the run that sounds
    most like the name. Only a name heard whole: where the rest of a clipped one lies is guesswork."""
    middles = [(w.start + w.end) / 2 for w in words]

    def nearest(word: Word) -> int:
        return min(range(len(words)), key=lambda i: abs(middles[i] - (word.start + word.end) / 2))

    moved = []
    for lo, hi, name in spans:
        if hi - lo == len(phrase(name)):
            run = _sounds_most_like(name, main.syllables, nearest(heard[lo]), nearest(heard[hi - 1]) + 1)
            if run is not None:
                moved.append((*run, name))
    return moved


def _places_heard(heard: list[PlacesHeard], transcript_like: Any, index: PlaceIndex, home: frozenset[str]
                  ) -> PlacesHeard:
    """The places of the scene most hearings name (`_scene_most_heard`); when none names one, those heard with the
    hearings taken together, each syllable as the nearest of what they heard there (`heard_together`)."""
    places = _scene_most_heard(heard)
    if places.scene() is None and len(heard) > 1 and (together := heard_together(transcript_like)) is not None:
        joint = hear_places(together, index, home)
        if joint.scene() is not None:
            return joint
    return places


def _scene_most_heard(hearings: list[PlacesHeard]) -> PlacesHeard:
    """The places of the hearing whose scene most hearings name (more than half of them), else of the main hearing
    when it names one, else of the first alternative that does: a name garbled into another place in one hearing is
    outvoted when the others agree. Unless another hearing heard that place as the unit called or as somewhere other
    than the scene (where someone ran off to), beside a scene of its own: it heard what the others missed, the place
    that makes the one they agree on the unit called (高桥警务点，皮具饰品城二楼…, the market's name garbled in two
    hearings of three). Hearings differ in what they miss, not in what was said."""
    scenes = [heard.scene() for heard in hearings]
    named = Counter(scene.place.id for scene in scenes if scene is not None)
    chosen = next((heard for heard, scene in zip(hearings, scenes, strict=True) if scene is not None), hearings[0])
    if named:
        place_id, count = named.most_common(1)[0]
        if count * 2 > len(hearings):
            chosen = next(heard for heard, scene in zip(hearings, scenes, strict=True)
                          if scene and scene.place.id == place_id)
    scene = chosen.scene()
    if scene is None:
        return chosen
    return next((heard for heard, other in zip(hearings, scenes, strict=True)
                 if other is not None and not other.aside and heard.heard_aside(scene.place.id)), chosen)


def _hearings(transcript_like: Any) -> list[Any]:
    """The transcript, then its alternative hearings (none for a string or an input already read)."""
    if isinstance(transcript_like, Transcript):
        return [transcript_like, *transcript_like.alternatives]
    if isinstance(transcript_like, dict):
        return [transcript_like, *(transcript_like.get("alternatives") or ())]
    return [transcript_like]


@dataclass(slots=True, frozen=True)
class Reading:
    """What the lexicon made of a transcript: its own decision, and the features the type model reads."""

    by_words: Classification
    features: list[str]
    severity: list[_Hit]
    types_heard: frozenset[str]  # every incident type whose words were heard (the words' decision weighed them)
    not_now: bool = False  # a word saying it is over, second-hand or a reminder was heard (lexicon `not_now`)


def read_transcript(transcript_like: Any, lexicon: Lexicon | None = None, places: PlacesHeard | None = None) -> Reading:
    """The lexicon's reading and the model's features. A place's name says where, not what happened, and toneless
    its syllables can sound like words that do (美食街 "mei shi jie" reads like 没事, all is well, and the demo's
    fight at 美食街 went to the operator as routine-sounding): with the `places` heard, their names are left out of
    what the model reads (the lexicon still reads everything), and the transcript is the one they were heard in
    (`places.inp`, read once)."""
    lexicon = lexicon or load_lexicon()
    inp = places.inp if places is not None else read_input(transcript_like)
    words, severity = _words(inp, lexicon)
    not_now = any(h.term.role == NOT_NOW and h.as_itself for h in words)
    words = [h for h in words if h.term.role != NOT_NOW]  # not in the words' decision, nor what the model was taught
    evidence = [Evidence(h.term.role, h.term.weight < PLAIN, h.as_itself) for h in words]
    text, syllables = _without_places(inp, places.spans) if places is not None else (inp.text, inp.syllables)
    names = features(text, syllables, evidence + [Evidence("severity") for _ in severity])
    heard = frozenset(h.term.role for h in words if h.term.role in lexicon.default_priority)
    return Reading(_by_words(words, severity, lexicon), names, severity, heard, not_now)


def _without_places(inp: TranscriptInput, spans: list[tuple[int, int]]) -> tuple[str, list[Syllable | None]]:
    """The transcript's text and syllables with every place name heard blanked (a pause in the text, no syllable)."""
    text, syllables = list(inp.text), list(inp.syllables)
    for start, end in spans:
        text[start:end] = "，" * len(text[start:end])
        syllables[start:end] = [None] * len(syllables[start:end])
    return "".join(text), syllables


def transcript_features(transcript_like: Any, lexicon: Lexicon | None = None) -> list[str]:
    """The transcript as the statistical type model reads it (dispatch/type_model.py)."""
    return read_transcript(transcript_like, lexicon).features


@dataclass(slots=True, frozen=True)
class Thresholds:
    """How the lexicon's words and the model's probabilities make one decision (chosen on the corpus's held-out
    folds: bench/type_model.py --sweep)."""

    sure_words: float = 0.8  # lexicon evidence this strong, for one type only, stands ...
    overrule: float = 0.5  # ... unless the model gives another reading at least this probability
    routine_veto: float = 0.8  # ... which, when it is "routine", silences the words only this surely
    sure_model: float = 0.55  # a type this probable is dispatched without the operator
    report_like: float = 0.7  # a transmission this likely to be a report goes to the operator when the type is unsure
    # ... and one that names a known place this likely (issue 10: a transmission that names a place and sounds like
    # a report is never silent). Chosen on development sets D-F (text) and P (audio): reports that reached nobody
    # 5 -> 2 / 10 -> 8 of 480 on P (clean / 10 dB), 1-2 more routine lines of ~220 queued per text set
    report_like_at_place: float = 0.5
    guess: float = 0.3  # ... with the model's likeliest type as the guess when it has at least this probability


def decide(reading: Reading, model: TypeModel | None, lexicon: Lexicon, th: Thresholds = Thresholds(),
           at_place: bool = False, p: dict[str, float] | None = None) -> Classification:
    """`_decide`, made less certain when the transmission says the matter is over, second-hand or a reminder
    (lexicon `not_now`): what would alert goes to the operator instead, unless a critical severity word was heard
    (听说三号楼有人持刀砍人; 找到了，人昏迷了: a knife or a life is not held back for a click). What would go to the
    operator still goes (dropping it too missed reports on blind set L: never silent about a report)."""
    decided = _decide(reading, model, lexicon, th, at_place, p)
    critical = any(h.term.priority == "critical" for h in reading.severity)
    if reading.not_now and decided.is_incident and not critical:
        return replace(decided, needs_confirmation=True)
    return decided


def _decide(reading: Reading, model: TypeModel | None, lexicon: Lexicon, th: Thresholds, at_place: bool,
            p: dict[str, float] | None) -> Classification:
    """The model reads the transcript whole; the lexicon's sure words stand unless the model is sure of another
    reading (corpus folds: where they disagree, the model is right three times as often, but on short plain reports
    it is unsure and the words are right). A type the model is sure of is dispatched; a transmission it hears as a
    report without being sure of the type goes to the operator (needs_confirmation, with its best guess), the more
    readily when it names a known place (`at_place`); what it hears as routine is routine. Without a model, the
    lexicon decides alone."""
    by_words, severity = reading.by_words, reading.severity
    if model is None:
        return by_words
    p = p or model.probabilities(reading.features)
    routine = p.get("none", 0.0)
    guess = max((t for t in p if t != "none"), key=p.__getitem__)
    if by_words.is_incident and not by_words.needs_confirmation and by_words.confidence >= th.sure_words:
        top = max(p, key=p.__getitem__)
        # the model may overrule the words with a reading they did not weigh; not with one they found weaker (喝醉
        # 耍酒疯: a weak word of `medical` under a plain one of `dispute`), nor against the operator's own words
        if top == by_words.type or p[top] < th.overrule or top in reading.types_heard \
                or lexicon.operator_words.intersection(by_words.terms):
            return by_words
        if top == "none" and routine < th.routine_veto:  # words of an incident, said as routine: a person decides
            return replace(by_words, needs_confirmation=True)
    if p[guess] >= th.sure_model:
        priority = by_words.priority if by_words.type == guess else _raised(lexicon.default_priority[guess], severity)
        return Classification(guess, priority, by_words.terms, p[guess])  # type: ignore[arg-type]
    if 1.0 - routine >= (th.report_like_at_place if at_place else th.report_like) or by_words.needs_confirmation:
        if p[guess] < th.guess:  # no type stands out: the words' own reading, else none ("other")
            guess = by_words.type if by_words.is_incident else "other"
        priority = by_words.priority if by_words.type == guess else _raised(REPORT_PRIORITY, severity)
        return Classification(guess, priority, by_words.terms, p.get(guess, 0.0), needs_confirmation=True)  # type: ignore[arg-type]
    return Classification("none", "none", by_words.terms, routine)


def _words(inp: TranscriptInput, lexicon: Lexicon) -> tuple[list[_Hit], list[_Hit]]:
    """The lexicon's words heard in the input, overlaps resolved and negated ones dropped; and the severity words."""
    hits = lexicon.find(inp.text, inp.syllables) + lexicon.spotted(inp.keywords, inp.syllables)
    negations = [h for h in hits if h.term.role == "negation"]
    words = _longest([h for h in hits if h.term.role not in ("negation", "severity")])
    words = [h for h in words if not _negated(h, negations)]
    severity = [h for h in hits if h.term.role == "severity" and not _negated(h, negations)]
    return words, severity


def _by_words(words: list[_Hit], severity: list[_Hit], lexicon: Lexicon) -> Classification:
    """The lexicon's decision: the type whose words weigh most."""
    incident = [h for h in words if h.term.role not in ("chatter", REPORT)]
    reports = [h for h in words if h.term.role == REPORT and h.exact]  # a guess from context needs a sure word
    if not incident and reports:  # something happened, the ASR did not say what
        priority = _raised(REPORT_PRIORITY, severity)
        return Classification("other", priority, tuple(dict.fromkeys(h.term.word for h in reports)), 0.5, True)
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
    is sure (1.0), two weak ones (0.75) outweigh one weak word of another type (0.5); a word heard only approximately
    (an accent-folded or near reading, a spotter's unsure hit) counts HEARD_APPROXIMATELY of its weight, so on a tie
    the word heard as itself decides (迷路 heard right beats 勒索 read into "le shuo")."""
    weights: dict[str, float] = {}
    for h in hits:
        weight = h.term.weight * (1.0 if h.as_itself else HEARD_APPROXIMATELY)
        weights[h.term.word] = max(weights.get(h.term.word, 0.0), weight)
    doubt = 1.0
    for w in weights.values():
        doubt *= 1.0 - w
    return round(1.0 - doubt, 6)  # rounded so that equal evidence ties and precedence decides


def _initials_differ(want: list[str], heard: list[str | None], start: int, allowed: int) -> bool:
    """More than `allowed` of the word's initials differ from those heard from `start` (most windows fail on their
    first syllables: stop there, this runs for every long word at every position)."""
    wrong = 0
    for i, initial in enumerate(want):
        if heard[start + i] != initial:
            wrong += 1
            if wrong > allowed:
                return True
    return False


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
