"""Where did it happen? The place spoken in a transcript, robust to ASR errors, with the detail said after it.

Evidence, strongest first: a place keyword spotted by the ASR (`ref` = place id); a name or alias found in the
characters; the same names found in pinyin space, tone-insensitive and tolerant of accent confusions (没事街 and
"mei si jie" are 美食街). Guards against ordinary words being taken for places:
- fuzzy matches need three or more syllables and nearly every syllable right (see `FUZZY_MIN`); two-syllable names
  only match in pinyin when the syllables and the tones are the same;
- a fuzzy match whose characters are themselves a common word (in jieba's dictionary) is the word, not the place;
- generic aliases (菜市场, 派出所: words of the language that the jurisdiction also uses as names) count only when not
  qualified by another name right before them (上坎镇派出所 is someone else's station) and rank below specific names;
- a name cut out of words (仪表|厂家, 幸福|里面, 没事|接着) is the words, in characters and in toned pinyin.
Then the most specific place wins (皮具饰品城 over the 高桥大市场 that contains it; a longer match over a shorter one
it overlaps), and a place that is only being called (怡园警务点请注意…, 高桥警务点，美食街…, X保安请到Y) ranks below the
scene.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any, Literal

import cn2an

from asr.words import jieba_words, word_freq
from dispatch.gazetteer import Jurisdiction, Place
from dispatch.phonetic import (
    Syllable,
    first_readings,
    heard_similarity,
    looks_like_pinyin,
    parse_pinyin,
    phrase,
    reading_freq,
    similarity,
    text_syllables,
    tones_agree,
    window_scores,
)
from dispatch.radio_channel import learned_alike
from dispatch.short_names import COMMUNITY_ROLES, RESIDENCE_KINDS, short_forms, split_name

logger = logging.getLogger(__name__)

ACCENT_MIN = 0.9  # a syllable heard right up to an accent confusion (sh/s, in/ing)
FUZZY_MIN = 0.85  # mean syllable similarity: 3 syllables allow only accent confusions; 4+ allow one half-right one
COMMON_WORD_FREQ = 5  # jieba dictionary frequency above which a span is an ordinary word
COMMON_NAME_FREQ = 20  # ... above which an alias is a word of the language (派出所), matched only when unqualified
# A name whose last character and the next one make a word this common (厂家 654, 里面 5994, 接着 6206), while the rest
# of the name is a word too (仪表|厂家, 幸福|里面, 没事|接着), was never said: the words were.
CROSSING_WORD_FREQ = 500
# ... unless the character after the name starts a word of its own with the next (幸福路|出事, 菜市场|面前, 厂|家里):
# then the name ended where it seemed to, and the crossing word is chance (above all in pinyin: 路出 lu4 chu1 = 露出).
FOLLOWING_WORD_FREQ = 100
CONFIDENCE = {"keyword": 0.9, "name": 0.95, "alias": 0.9, "short": 0.85, "generic": 0.6}
ADDRESSEE_PENALTY = 0.5
ADDRESSEE_FUZZY_MIN = 0.79  # mean similarity for 3+-syllable call phrases (请注意, 请回答) heard through ASR errors
LONG_NAME, LONG_NAME_MIN = 4, 0.9  # names of 4+ syllables heard with mean similarity >= 0.9 may have a weaker head
# A radio transmission's first syllable is the one the key-up click, the noise and the recogniser's cold start garble
# most (东方幼儿园 heard "zhong fang you er yuan", 幸福里小区 "you fu li xiao qu"): a name of ONSET_NAME+ syllables that
# opens a pinyin transcript counts when every other syllable of it is heard right (four or more: distinctive enough).
ONSET_NAME = 5
# ... and a name whose first syllable was lost altogether (fricatives, f x s p, are what a radio's band and noise mask
# most: 服装市场 heard "zhuang1 shi4 chang3", 西光中学 "guang1 zhong1 xue2"): the rest of a HEADLESS_NAME+ syllable name
# opening the transcript, every syllable of it heard right (three or more: no other name's tail, no common word)
HEADLESS_NAME = 4
NEARLY_WHOLE_NAME = 5  # a name this long with one syllable misheard after its first is still that name
HOME_FUZZY_MIN = 0.8  # mean similarity for a 4+ syllable name of the channel's own places, whatever its head
# The least a name's first syllable scores in any match of `_pinyin_candidates` but at a transmission's onset or on its
# home channel (a weaker head of a long name, LONG_NAME_MIN); names are looked for only where it is heard so.
HEAD_MIN = 0.75
KEYWORD_SLACK_S = 0.15  # a spotted keyword's reported times may trail its syllables' a little
NEAREST_S = 0.15  # another hearing's syllable heard this near a syllable's middle is heard there (`heard_together`)
NUMBERED_BUILDINGS = frozenset({"compound", "school", "enterprise", "hospital"})  # places whose buildings are numbered

Method = Literal["keyword", "name", "alias", "short", "generic", "fuzzy"]

# Radio address forms: the place being called or calling (怡园警务点请注意, 呼叫高桥警务点, 派出所请求支援).
_ADDRESSED_AFTER = ("请注意", "注意", "请回答", "请回复", "收到", "请求", "呼叫", "回复")
# ... and a unit asked to act (请派出所来人, 派出所帮忙开道): who is sent, not where; unless sent there (到美食街出警)
_ASKED_TO_ACT = ("来人", "派人", "出警", "帮忙", "协助", "支援")
_ADDRESSED_BEFORE = ("呼叫", "通知")
# ... and the people of a place (高桥市场保安请到美食街, 皮具城的保安，…): the unit called or calling, not the scene.
_ADDRESSEE_ROLES = ("保安", "保安队", "保卫科", "门卫", "门岗", "值班室", "民警", "警长", "巡逻队", "义警", "网格员", "志愿者")
# Places said as somewhere other than the scene: where someone ran or drove off to (往万寿北路方向跑了, 朝幸福路逃了,
# 往金花北路去了), where the caller stands as he reports what he sees (我在长乐公园门口，长乐东路那边…; 人在长乐医院门口，
# 看见对面…), where a casualty is taken (送长乐医院, 开道去长乐医院). Each weighs only against another place heard that is
# neither (halved then, when the scene is chosen): named alone it is still the scene, as sure (我在美食街，有人打架).
_HEADING_BEFORE = ("往", "朝", "向")
_HEADING_AFTER = ("方向", "跑", "逃", "跑了", "逃了", "去了", "走了", "开走")
_STANDING_BEFORE = ("我在", "我们在", "我现在在", "我人在")
_STANDING_AT_CLAUSE_START = "人在"  # ……网格员，人在长乐医院门口: but not 有人在美食街打架, 病人在…
_TAKEN_TO_BEFORE = ("送", "去")  # ... before a hospital (送到, 送往, 去往: the 到/往 between is passed over, _taken_to)
ELSEWHERE_PENALTY = 0.5
_ROOMS = set("室亭岗处部")  # 保安室, 保安亭: a room at the place, which is the scene
_QUALIFIER_OK = set("在到去回往的们我你他她这那个请给从向由被把是了有里和与跟及、，。,. ")
_TOWARDS = frozenset({"zai", "dao", "qu", "wang"})  # 在 到 去 往: what may stand between an address and the scene
# Places are followed by where at them (街上, 城里, 门口): such a character is not a word cut out of the name.
_LOCATIVE = set("里内外上下边前后旁门口头")
_DIRECTIONS = set("东南西北")  # 东门, 北口: a side of the place


@dataclass(slots=True, frozen=True)
class LocationMatch:
    place: Place
    heard: str  # the characters or syllables that matched
    method: Method
    confidence: float
    span: tuple[int, int] | None  # [start, end) in `span_unit`s; None for a spotted keyword not found in the text
    span_unit: Literal["char", "syllable"]
    detail: str | None = None
    addressed: bool = False  # the place is being called on the radio, not (necessarily) the scene
    elsewhere: bool = False  # where someone fled to, the caller stands, a casualty is taken: not (necessarily) the scene
    gone_to: bool = False  # ... of those, where someone went or is taken: they left the scene for it
    said: str = ""  # the name, alias or short form matched: what the caller said, however it was heard

    @property
    def aside(self) -> bool:
        """Named as the unit called or as somewhere other than the scene (elsewhere): another place heard beside it,
        in the same transmission or the one before it (dispatch/turns.py), is the scene rather than this one."""
        return self.addressed or self.elsewhere

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.place.id, "name": self.place.name, "detail": self.detail, "lat": self.place.lat,
            "lon": self.place.lon, "confidence": round(self.confidence, 3), "heard": self.heard, "method": self.method,
            "span": list(self.span) if self.span else None, "span_unit": self.span_unit,
        }


@dataclass(slots=True, frozen=True)
class _Name:
    text: str
    place: Place
    method: Method  # name, alias or generic


class PlaceIndex:
    """Names of a jurisdiction prepared for matching; build once, share (read-only)."""

    def __init__(self, jurisdiction: Jurisdiction) -> None:
        self.jurisdiction = jurisdiction
        names: dict[str, _Name] = {}
        for p in jurisdiction.places:
            for i, n in enumerate(p.names):
                method: Method = "name" if i == 0 else ("generic" if _is_generic(n, p) else "alias")
                # A shared name belongs to the place that carries it as its name (see gazetteer).
                if n not in names or method == "name":
                    names[n] = _Name(n, p, method)
        for place_id, forms in short_forms(jurisdiction).items():  # 东郊市场, 秦川厂, 怡园: what people say
            place = jurisdiction.place(place_id)
            for form in forms:
                names[form] = _Name(form, place, "generic" if _is_generic(form, place) else "short")
        self.names = sorted(names.values(), key=lambda n: -len(n.text))
        # The dictionary's words by toned reading (~1 s to build) and what the recogniser hears alike (~0.8 s, from the
        # heard corpus): now, not on the first pinyin call, which is timed and may run on the event loop.
        reading_freq(())
        learned_alike()

    def is_common_word(self, label: str) -> bool:
        """A name that is also a word of the language (派出所, 菜市场), not only the kind-part of a name (服装市场)."""
        return word_freq(label) >= COMMON_NAME_FREQ and any(n.text == label and n.method == "generic" for n in self.names)

    @cached_property
    def fuzzy_names(self) -> set[str]:
        """Names specific and long enough to be matched approximately."""
        return {n.text for n in self.names if n.method != "generic" and len(phrase(n.text)) >= 3}

    @cached_property
    def headless(self) -> list[tuple[_Name, tuple[str, ...]]]:
        """Names of HEADLESS_NAME+ syllables with the folded reading of all but their first syllable, where no other
        name shares that tail: what is left of the name when a transmission's key-up clipped its first syllable."""
        tails: dict[tuple[str, ...], list[_Name]] = {}
        for n in self.names:
            said = phrase(n.text)
            if n.text in self.fuzzy_names and len(said) >= HEADLESS_NAME:
                tails.setdefault(tuple(s.folded for s in said[1:]), []).append(n)
        return [(names[0], tail) for tail, names in tails.items() if len({n.place.id for n in names}) == 1]

    @cached_property
    def compound_heads(self) -> list[tuple[str, Place]]:
        """(head, compound): a residential compound's name without its kind-word (长乐坊 of 长乐坊小区, 兴庆 of 兴庆家园), where
        no other place with numbered buildings (a compound, school, works or hospital: 西光 of 西光中学, 西光机械厂) has a
        name that starts the same way: said before a building number, it is the compound."""
        heads: dict[str, set[str]] = {}
        for place in self.jurisdiction.places:
            if place.kind == "compound":
                for name in place.names:
                    parts = split_name(name)
                    if parts is not None and parts[2] in RESIDENCE_KINDS:
                        heads.setdefault(parts[0], set()).add(place.id)
        for head, ids in heads.items():
            ids.update(p.id for p in self.jurisdiction.places
                       if p.kind in NUMBERED_BUILDINGS and any(n.startswith(head) for n in p.names))
        return sorted(((head, self.jurisdiction.place(next(iter(ids)))) for head, ids in heads.items() if len(ids) == 1),
                      key=lambda hp: -len(hp[0]))


def _is_generic(alias: str, place: Place) -> bool:
    """An alias that is a word of the language (派出所) or the kind-part of the place's own name (建材市场)."""
    return word_freq(alias) >= COMMON_NAME_FREQ or (place.name.endswith(alias) and len(place.name) > len(alias))


@dataclass(slots=True, frozen=True)
class TranscriptInput:
    text: str
    syllables: list[Syllable | None]
    keywords: list[tuple[str, str, float, tuple[int, int] | None]]  # label, ref, score, syllable span if known

    @property
    def unit(self) -> Literal["char", "syllable"]:
        return "char" if self.text else "syllable"


def read_input(transcript_like: Any) -> TranscriptInput:
    """Accept a Transcript, its dict, a plain string (Chinese characters or pinyin), or an input already read."""
    if isinstance(transcript_like, TranscriptInput):
        return transcript_like
    if isinstance(transcript_like, str):
        d: dict[str, Any] = {"pinyin": transcript_like} if looks_like_pinyin(transcript_like) else {"text": transcript_like}
    elif isinstance(transcript_like, dict):
        d = transcript_like
    else:  # a Transcript: its fields as they are (to_dict would copy its words and every alternative hearing too)
        d = {"text": transcript_like.text, "pinyin": transcript_like.pinyin, "words": transcript_like.words,
             "keywords": transcript_like.keywords}
    text = (d.get("text") or "").strip()
    syllables = text_syllables(text) if text else parse_pinyin(d.get("pinyin") or "")
    keywords = []
    for k in d.get("keywords") or ():
        k = k if isinstance(k, dict) else {"label": k.label, "ref": k.ref, "score": k.score, "start": k.start, "end": k.end}
        span = None if text else _keyword_span(k, d.get("words") or (), syllables)
        keywords.append((k["label"], k["ref"], float(k.get("score", 1.0)), span))
    return TranscriptInput(text, syllables, keywords)


def heard_together(transcript_like: Any) -> TranscriptInput | None:
    """The main hearing's syllables, each with what the alternative hearings of the same audio (the recogniser at
    other speeds) heard nearest its time (`Syllable.others`): a name each hearing garbled in another syllable
    ("mei zi jie" / "wei shi jie") is heard whole across them. None for characters, or without alternatives or times.
    """
    if isinstance(transcript_like, dict):
        main_words, others = transcript_like.get("words") or (), transcript_like.get("alternatives") or ()
    elif hasattr(transcript_like, "alternatives"):
        main_words, others = transcript_like.words, transcript_like.alternatives
    else:
        return None
    inp = read_input(transcript_like)
    main = _timed(main_words)
    timed = [t for t in (_timed(o.get("words") if isinstance(o, dict) else getattr(o, "words", None)) for o in others) if t]
    slots = [i for i, s in enumerate(inp.syllables) if s is not None]
    if inp.text or not timed or not main or len(slots) != len(main):
        return None
    syllables = list(inp.syllables)
    for i, (_, at) in zip(slots, main, strict=True):
        mine = syllables[i]
        nearest = {_heard_at(hearing, at) for hearing in timed}
        syllables[i] = replace(mine, others=tuple(sorted(b for b in nearest if b and b != mine.base)))  # type: ignore[arg-type]
    return TranscriptInput("", syllables, inp.keywords)


def _heard_at(hearing: list[tuple[str, float]], at: float) -> str:
    """The syllable a hearing heard with its middle nearest `at`, if within NEAREST_S of it; else ""."""
    base, middle = min(hearing, key=lambda bm: abs(bm[1] - at))
    return base if abs(middle - at) <= NEAREST_S else ""


def _timed(words: Any) -> list[tuple[str, float]]:
    """(toneless syllable, the middle of its time) of each word, or [] when any lacks its text or times."""
    timed = []
    for w in words or ():
        try:
            text, start, end = (w["text"], w["start"], w["end"]) if isinstance(w, dict) else (w.text, w.start, w.end)
            heard = parse_pinyin(str(text))
            timed.append((heard[0].base if len(heard) == 1 and heard[0] is not None else "", (float(start) + float(end)) / 2))
        except (KeyError, TypeError, ValueError, AttributeError):
            return []
    return timed


def _keyword_span(keyword: dict[str, Any], words: Any, syllables: list[Syllable | None]) -> tuple[int, int] | None:
    """Where a spotted keyword lies in a pinyin-only transcript: the syllables (words) its time span covers.

    The spotter and the recogniser hear independently, so the keyword's own syllables may be misheard in the
    pinyin; its timing still says where it was said (which matters for 「X请注意」: X is called, not the scene)."""
    start, end = keyword.get("start"), keyword.get("end")
    if start is None or end is None or not words:
        return None
    slots = [i for i, s in enumerate(syllables) if s is not None]  # syllable index of each recognised word
    if len(slots) != len(words):
        return None
    inside = [slots[i] for i, w in enumerate(words)
              if (w["start"] if isinstance(w, dict) else w.start) >= start - KEYWORD_SLACK_S
              and (w["start"] if isinstance(w, dict) else w.start) < end - KEYWORD_SLACK_S]
    return (min(inside), max(inside) + 1) if inside else None


@dataclass(slots=True, frozen=True)
class PlacesHeard:
    """Every place name heard in one transcript (the scene's, the addressee's): found once, read twice, by the
    type model (which leaves the names out: `spans`) and by `scene`."""

    inp: TranscriptInput
    candidates: list[LocationMatch]  # overlaps resolved
    jurisdiction: Jurisdiction
    _scene: LocationMatch | None = field(init=False)  # chosen once: read by the type decision and the dispatcher
    _weighed: list[LocationMatch] = field(init=False)  # the candidates as weighed for it (the unit called marked)

    def __post_init__(self) -> None:
        weighed = _opening_addressee(_most_specific(self.candidates, self.jurisdiction), self.inp)
        object.__setattr__(self, "_weighed", _community_yields(weighed, self.inp, self.jurisdiction))
        object.__setattr__(self, "_scene", self._choose_scene())

    @property
    def spans(self) -> list[tuple[int, int]]:
        """Where the names are, in the transcript's units."""
        return [c.span for c in self.candidates if c.span is not None]

    def scene(self) -> LocationMatch | None:
        """The most likely scene, or None when no place is named."""
        return self._scene

    def heard_aside(self, place_id: str) -> bool:
        """The place was heard here as the unit called or as somewhere other than the scene (`LocationMatch.aside`)."""
        return any(c.place.id == place_id and c.aside for c in self._weighed)

    def _choose_scene(self) -> LocationMatch | None:
        candidates = self._weighed
        if not candidates:
            return None
        if any(c.elsewhere for c in candidates) and any(not c.aside for c in candidates):
            candidates = [replace(c, confidence=c.confidence * ELSEWHERE_PENALTY) if c.elsewhere else c
                          for c in candidates]
        elif any(c.gone_to for c in candidates) and any(c.elsewhere and not c.gone_to for c in candidates):
            # every place aside: where someone went gives way to where the caller stands (我在高桥市场，…往幸福路跑了),
            # not to a unit called (高桥警务点请注意，…往万寿北路跑了: the one place to go, as sure as said alone)
            candidates = [replace(c, confidence=c.confidence * ELSEWHERE_PENALTY) if c.gone_to else c
                          for c in candidates]
        best = max(candidates, key=lambda c: (not c.addressed, c.confidence, -(c.span or (0,))[0]))
        best = _first_street(best, candidates)
        return _home_of(replace(best, detail=_detail(self.inp, best, candidates)), self.jurisdiction)


def hear_places(transcript_like: Any, index: PlaceIndex | Jurisdiction, home: frozenset[str] = frozenset()
                ) -> PlacesHeard:
    """The place names heard in a transcript (Transcript, its dict, a string, or a TranscriptInput). `home`: the
    places the channel it was heard on usually talks about (Jurisdiction.channel_posts), heard more readily."""
    if isinstance(index, Jurisdiction):
        index = _index_for(index)
    inp = read_input(transcript_like)
    return PlacesHeard(inp, _resolve_overlaps(list(_candidates(inp, index, home))), index.jurisdiction)


def extract_location(transcript_like: Any, index: PlaceIndex | Jurisdiction) -> LocationMatch | None:
    """The most likely scene spoken in the transcript, or None when no place is named."""
    return hear_places(transcript_like, index).scene()


def _opening_addressee(candidates: list[LocationMatch], inp: TranscriptInput) -> list[LocationMatch]:
    """A call opens with whom it addresses: a place that opens the transmission and is followed at once (directly,
    after a pause, or 在/到/去) by another place (高桥警务点，美食街有人打架; gao qiao jing wu dian mei shi jie you ren
    da jia) is the addressee, and the other place the scene. Two streets are a corner or a way taken, not a call."""
    placed = sorted((c for c in candidates if c.span), key=lambda c: c.span[0])
    if len(placed) < 2 or placed[0].addressed or placed[1].addressed:
        return candidates
    first, second = placed[0], placed[1]
    start, end = first.span
    opens = all(s is None or s.base == "wei" for s in inp.syllables[:start])  # nothing before it but a pause or 喂
    # The scene follows the address at once (a pause, 在/到/去): "美食街，有人打架，请高桥警务点出警" is not a call to 美食街.
    between = inp.syllables[end:second.span[0]]
    next_to = all(s is None or s.base in _TOWARDS for s in between) and len(between) <= 2
    if not opens or not next_to or first.place.kind == second.place.kind == "street":
        return candidates
    return [_addressed(c) if c is first else c for c in candidates]


def _addressed(c: LocationMatch) -> LocationMatch:
    return replace(c, addressed=True, confidence=c.confidence * ADDRESSEE_PENALTY)


def _home_of(scene: LocationMatch, places: Jurisdiction) -> LocationMatch:
    """A building or entrance number said after a place inside a residential compound (西光广场7号楼, the square of the
    西光广场小区 around it) is an address in the compound: the compound is the scene."""
    if not scene.detail or not _RESIDENCE.search(scene.detail) or scene.place.kind in ("compound", "community"):
        return scene
    home = next((places.place(a) for a in places.ancestors(scene.place.id) if places.place(a).kind == "compound"), None)
    return replace(scene, place=home) if home else scene


def _first_street(best: LocationMatch, candidates: list[LocationMatch]) -> LocationMatch:
    """Two streets in one report are a corner (长乐东路和韩森路路口) or a way taken from the first: the scene is
    reported at the street named first, however well each was heard."""
    if best.place.kind != "street" or best.span is None or best.addressed:
        return best
    streets = [c for c in candidates if c.place.kind == "street" and c.span and not c.aside]
    return min(streets, key=lambda c: c.span[0], default=best)


@lru_cache(maxsize=8)
def _index_for(jurisdiction: Jurisdiction) -> PlaceIndex:
    return PlaceIndex(jurisdiction)


def _candidates(inp: TranscriptInput, index: PlaceIndex, home: frozenset[str] = frozenset()):
    places = index.jurisdiction
    for label, ref, score, syllable_span in inp.keywords:
        try:
            place = places.place(ref)
        except KeyError:
            continue  # incident keywords (incident:<term>) and refs of another jurisdiction
        start = inp.text.find(label) if inp.text else -1
        span = (start, start + len(label)) if start >= 0 else syllable_span
        if index.is_common_word(label) and (span is None or not _unqualified_at(inp, span[0])):
            continue  # 派出所 spotted in 上坎镇派出所 is someone else's station (unplaced: cannot tell, so not ours)
        confidence = CONFIDENCE["keyword"] * min(1.0, max(score, 0.5))
        yield _mark(LocationMatch(place, label, "keyword", confidence, span, inp.unit, said=label), inp)
    if inp.text:
        for n in index.names:
            for m in re.finditer(re.escape(n.text), inp.text):
                if n.method == "generic" and not _unqualified_at(inp, m.start()):
                    continue
                if _cuts_words(inp, *m.span()):
                    continue  # 仪表厂家, 幸福里面: the words 厂家 and 里面, not the places
                yield _mark(LocationMatch(n.place, n.text, n.method, CONFIDENCE[n.method], m.span(), "char", said=n.text), inp)
    yield from _pinyin_candidates(inp, index, home)
    yield from _headless_at_onset(inp, index)
    yield from _compound_by_building(inp, index)


def _pinyin_candidates(inp: TranscriptInput, index: PlaceIndex, home: frozenset[str] = frozenset()):
    syl = inp.syllables
    heads: dict[tuple[str, ...], list[int]] = {}  # a name's first readings -> where a name read so may start
    bases_at = [(i, (s.base, *s.others)) for i, s in enumerate(syl) if s is not None]  # (heard together: all of them)
    for n in index.names:
        size = len(phrase(n.text))
        fuzzy_ok = n.text in index.fuzzy_names
        # A channel's own places (the school guards' channel and its schools) are what it talks about: a long name of
        # one of them is heard with its head garbled too (zhong fang you er yan: 东方幼儿园), up to HOME_FUZZY_MIN.
        at_home = fuzzy_ok and size >= LONG_NAME and n.place.id in home
        if at_home:
            starts: Iterable[int] = range(len(syl) - size + 1)
        else:  # only where its first syllable is heard well enough for any rule below (a decision time per transcript)
            firsts = first_readings(n.text, heteronyms=bool(inp.text))
            if firsts not in heads:
                heads[firsts] = [i for i, bases in bases_at
                                 if max(heard_similarity(f, b) for f in firsts for b in bases) >= HEAD_MIN]
            starts = [i for i in heads[firsts] if i <= len(syl) - size]
            if not inp.text and fuzzy_ok and size >= ONSET_NAME and (not starts or starts[0] != 0) and len(syl) >= size:
                starts = [0, *starts]  # the onset rule below takes any first syllable
        for start in starts:
            if inp.text and inp.text[start:start + size] == n.text:
                continue  # found as characters already
            at_onset = start == 0 and not inp.text and fuzzy_ok and size >= ONSET_NAME
            if fuzzy_ok:  # a long name may have one syllable quite wrong (see nearly_whole below): its floor lets it
                floor = (0.0 if at_onset else min(FUZZY_MIN, 0.9 * (size - 1) / size) if size >= NEARLY_WHOLE_NAME
                         else FUZZY_MIN)  # fmt: skip
                floor = min(floor, HOME_FUZZY_MIN) if at_home else floor
            else:  # a generic or two-syllable name is heard whole (a long kind-part in pinyin up to accents: below)
                floor = ACCENT_MIN if n.method == "generic" and not inp.text and size >= 3 else 1.0
            scores = window_scores(n.text, syl, start, floor,  # characters may be written by another reading
                                   heteronyms=bool(inp.text), moved_n=True)
            if not scores or (n.method == "short" and min(scores) < 0.9):
                continue  # a short form (东郊市场) is not the name itself: heard whole, up to accent confusions
            score = sum(scores) / size
            exact = (score == 1.0 and tones_agree(n.text, syl, start) and (size >= 3 or _has_tones(syl, start, size))
                     and not any(s.others for s in syl[start:start + size] if s))  # (pieced together: never exact)
            # The distinctive head of a name (美食|街, 怡园|小区) must be heard right up to accent confusions; in a
            # long name heard nearly whole, the head may have lost a syllable's tail (jie hua yuan xiao qu: 金花苑小区).
            # A name of 5+ syllables heard right but for one slip after its first syllable is that name
            # (wan4 sheng4 lu4 hua1 niao3 shi4 chang3: 万寿路花鸟市场). A wrong first syllable mid-call is another
            # place with the same generic tail (中方幼儿园), unless it opens the transmission (the onset rule).
            head = min(scores[: min(2, size - 1)])
            nearly_whole = size >= NEARLY_WHOLE_NAME and scores[0] >= 0.9 and sum(s >= 0.9 for s in scores) >= size - 1
            head_ok = head >= 0.9 or nearly_whole or (size >= LONG_NAME and head >= 0.75 and score >= LONG_NAME_MIN)
            onset_ok = at_onset and min(scores[1:]) >= 0.9
            home_ok = at_home and score >= HOME_FUZZY_MIN
            generic_ok = n.method == "generic" and _generic_heard(inp, scores, exact)
            if not (exact or onset_ok or home_ok or generic_ok
                    or (fuzzy_ok and (nearly_whole or (score >= FUZZY_MIN and head_ok)))):
                continue
            heard = inp.text[start:start + size] if inp.text else " ".join(s.base for s in syl[start:start + size] if s)
            if inp.text and not _whole_words(inp.text, start, start + size):
                continue  # an ordinary word or words that sound like the place
            if not inp.text and (_cuts_words(inp, start, start + size)
                                 or (not exact and reading_freq(tuple(syl[start:start + size])) >= COMMON_WORD_FREQ)):
                continue  # the pinyin of ordinary words: 没事|接着 (mei2 shi4 jie1 zhe5), 美食节 (mei3 shi2 jie2)
            if n.method == "generic" and not (generic_ok and _unqualified_at(inp, start)):
                continue  # a generic word heard only as itself (in text: its very reading, 农冒市场), unqualified
            method: Method = "fuzzy" if inp.text or not exact else n.method
            conf = 0.9 * score if method == "fuzzy" else CONFIDENCE[method]
            yield _mark(LocationMatch(n.place, heard, method, conf, (start, start + size), inp.unit, said=n.text), inp)


def _headless_at_onset(inp: TranscriptInput, index: PlaceIndex):
    """A name whose first syllable the key-up clipped or the noise masked: the transmission opens with the rest of it
    (金花苑小区 heard "hua1 yuan4 xiao3 qu1 ...", 服装市场 "zhuang1 shi4 chang3 ..."), three or more syllables heard right
    up to accent confusions, that are no other name's, no common word and not cut out of words. Pinyin only: characters are a
    person's writing, not a clipped recording."""
    syl = inp.syllables
    if inp.text or not syl or syl[0] is None:
        return
    for n, tail in index.headless:
        size = len(tail)
        heard = syl[:size]
        if len(heard) < size or any(h is None for h in heard):
            continue
        scores = [similarity(h.folded, t) for h, t in zip(heard, tail, strict=True)]
        if min(scores) < 0.9 or reading_freq(tuple(heard)) >= COMMON_WORD_FREQ or _cuts_words(inp, 0, size):
            continue
        score = sum(scores) / (size + 1)  # the clipped syllable counts as not heard
        words = " ".join(h.base for h in heard if h)
        yield _mark(LocationMatch(n.place, words, "fuzzy", 0.9 * score, (0, size), inp.unit, said=n.text), inp)


# A building of a compound: a number, then 号楼 / 栋 / 幢 / 单元 (not 2楼, a floor of any building), after the compound's
# head and at most BUILDING_GAP syllables of filler (怡园那个小区6号楼: "that compound of 怡园").
BUILDING_GAP = 4
_BUILDING_TEXT = re.compile(r"[0-9零一二三四五六七八九十两幺]+(?:号楼|栋|幢|单元)")
_NUMBER_SYLLABLES = frozenset({"ling", "yi", "er", "san", "si", "wu", "liu", "qi", "ba", "jiu", "shi", "liang", "yao"})
# ... in pinyin only the words no everyday word sounds like after a number (栋 dong: 以东, 一动不动; 幢 zhuang)
_BUILDING_SYLLABLES = (("hao", "lou"), ("dan", "yuan"))
# ... and between the head and the number only 那个/这个/的/小区 (怡园那个小区六号楼), as in characters
_BUILDING_FILLER = frozenset({"na", "nei", "zhe", "zhei", "ge", "de", "xiao", "qu"})


def _compound_by_building(inp: TranscriptInput, index: PlaceIndex):
    """A residential compound said by its head and a building number (长乐坊7号楼, 怡园5号楼, "chang le fang qi hao
    lou"), as people name where they live: the head alone may be another place's too (长乐坊: the compound and the
    market), the building says which. In pinyin each syllable of the head heard right up to accent and learned
    confusions, a two-syllable head with its very tones (as a two-syllable name) and no head heard as a common word."""
    if inp.text:
        for head, place in index.compound_heads:
            for m in re.finditer(re.escape(head), inp.text):
                if _BUILDING_TEXT.match(re.sub(r"^(?:那个|这个|的)?(?:小区)?(?:的)?", "", inp.text[m.end():m.end() + 12])):
                    yield _mark(LocationMatch(place, head, "short", CONFIDENCE["short"], m.span(), "char", said=head), inp)
        return
    syl = inp.syllables
    buildings = _buildings(syl)
    if not buildings:
        return  # (most transmissions: no head is looked for)
    ends = sorted({end for at in buildings for end in range(max(0, at - BUILDING_GAP), at + 1)
                   if all(s is None or s.base in _BUILDING_FILLER for s in syl[end:at])})  # where a head may end
    for head, place in index.compound_heads:
        size = len(phrase(head))
        for start in (end - size for end in ends if end >= size):
            scores = window_scores(head, syl, start, floor=ACCENT_MIN)
            if not scores or min(scores) < ACCENT_MIN:
                continue
            # (医院 yi1 yuan4 is not 怡园 yi2 yuan2)
            exact = min(scores) == 1.0 and _has_tones(syl, start, size) and tones_agree(head, syl, start)
            if not exact and (size <= 2 or reading_freq(tuple(syl[start:start + size])) >= COMMON_WORD_FREQ):
                continue
            words = " ".join(s.base for s in syl[start:start + size] if s)
            yield _mark(LocationMatch(place, words, "fuzzy", CONFIDENCE["short"] * sum(scores) / size,
                                      (start, start + size), inp.unit, said=head), inp)


def _buildings(syllables: list[Syllable | None]) -> list[int]:
    """Where a building number begins in pinyin: a number, then 号楼 or 单元 ("qi hao lou", "shi er dan yuan")."""
    bases = [s.base if s else "" for s in syllables]
    found = []
    for i, base in enumerate(bases):
        if base not in _NUMBER_SYLLABLES or (i > 0 and bases[i - 1] in _NUMBER_SYLLABLES):
            continue
        j = i
        while j < len(bases) and bases[j] in _NUMBER_SYLLABLES:
            j += 1
        if any(tuple(bases[j:j + len(b)]) == b for b in _BUILDING_SYLLABLES):
            found.append(i)
    return found


def _has_tones(syllables: list[Syllable | None], start: int, size: int) -> bool:
    """Two-syllable names need tones to tell them from common words (夜市 ye4 shi4, 也是 ye3 shi4)."""
    return all(s is not None and s.tone is not None for s in syllables[start:start + size])


def _whole_words(text: str, start: int, end: int) -> bool:
    """A misheard name is still made of whole words (没事|街), and is not itself a common word (西瓜) or a piece
    cut out of other words (河西|官场 is not 西光厂)."""
    if word_freq(text[start:end]) >= COMMON_WORD_FREQ:
        return False
    bounds = {0}
    for token in jieba_words(text):
        bounds.add(max(bounds) + len(token))
    # The segmenter does not know the misheard name and may join its edge to a neighbour that is how places are
    # spoken of: 我在|业市 read as 在业, 皮具士品城|东门 as 城东, 辟具城|门口 as 城门. Such a neighbour keeps the edge.
    start_ok = start in bounds or text[start - 1] in _QUALIFIER_OK
    end_ok = end in bounds or end == len(text) or text[end] in _LOCATIVE or text[end] in _DIRECTIONS
    return start_ok and end_ok


def _cuts_words(inp: TranscriptInput, start: int, end: int) -> bool:
    """The span's edge syllable makes a common word with its neighbour outside while the rest of the span is a word
    too (仪表|厂家, 幸福|里面, 没事|接着; at the head likewise) and the neighbour starts no word of its own with the
    next one (幸福路|出事 is the street): words were said, not the name. Only where the words can
    be told (characters, or pinyin with tones: plain "mei shi jie zhe" may as well be 美食街 接着). A locative or a
    function word next to the name (城里, 街上, 街到) is how places are spoken of, not a word cut out of the name."""
    if inp.text:
        def freq(a: int, b: int) -> int:
            return word_freq(inp.text[a:b])

        def outside(i: int) -> bool:
            return inp.text[i] not in _QUALIFIER_OK and inp.text[i] not in _LOCATIVE
    else:
        syl = inp.syllables

        def freq(a: int, b: int) -> int:
            span = syl[a:b]
            return reading_freq(tuple(span)) if None not in span else 0  # type: ignore[arg-type]

        def outside(i: int) -> bool:
            return syl[i] is not None and f"{syl[i].base}{syl[i].tone}" not in _bound_syllables()

    size = len(inp.text) if inp.text else len(inp.syllables)
    tail = end < size and end - start >= 3 and outside(end) and freq(end - 1, end + 1) >= CROSSING_WORD_FREQ \
        and freq(start, end - 1) >= COMMON_WORD_FREQ and freq(end, end + 2) < FOLLOWING_WORD_FREQ \
        and not _call_follows(inp.syllables, end)
    head = start > 0 and end - start >= 3 and outside(start - 1) and freq(start - 1, start + 1) >= CROSSING_WORD_FREQ \
        and freq(start + 1, end) >= COMMON_WORD_FREQ and (start < 2 or freq(start - 2, start) < FOLLOWING_WORD_FREQ)
    return tail or head


def _call_follows(syllables: list[Syllable | None], at: int) -> bool:
    """A call word or the place's people right after the name (皮具城|保安, not 皮具|城堡 however alike they sound)."""
    return any(_said(w, syllables, at) for w in (*_ADDRESSED_AFTER, *_ADDRESSEE_ROLES))


@lru_cache(maxsize=1)
def _bound_syllables() -> frozenset[str]:
    """Toned syllables of the function words and locatives that may follow or precede a place (到 dao4, 里 li3)."""
    return frozenset(f"{s.base}{s.tone}" for ch in _QUALIFIER_OK | _LOCATIVE for s in text_syllables(ch) if s)


def _unqualified(text: str, start: int) -> bool:
    """A generic alias not preceded by another name (上坎镇|派出所): start of text, punctuation or a function word."""
    return start == 0 or text[start - 1] in _QUALIFIER_OK


def _unqualified_at(inp: TranscriptInput, start: int) -> bool:
    """`_unqualified` in characters, or by sound: a character recogniser writes a function word's sound with another
    character of it (那各 for 那个, 再 for 在), which qualifies a name no more than the word itself."""
    if inp.text and _unqualified(inp.text, start):
        return True
    return _unqualified_syllable(inp.syllables, start)


def _generic_heard(inp: TranscriptInput, scores: list[float], exact: bool) -> bool:
    """A generic alias counts only heard as itself: its very reading, tones and all, but for the tones where they are
    not heard for sure. The on-board recogniser's tones are unreliable: in its pinyin a kind-part of three or more
    syllables counts by its toneless reading (jia3 ju1 cheng2: 家具城) up to accent confusions (jian1 cai2 si1 chang4:
    建材市场, cai4 si1 chang2: 菜市场, sh/s being a speaker's accent). A character recogniser that wrote the same sound
    in another tone heard that tone: four syllables read alike are not chance (弄贸市场, 兼材市场), three may be
    (彩市场)."""
    if exact or len(scores) < 3:
        return exact
    if inp.text:
        return len(scores) >= LONG_NAME and min(scores) == 1.0
    return min(scores) >= ACCENT_MIN


def _unqualified_syllable(syllables: list[Syllable | None], start: int) -> bool:
    """`_unqualified` for pinyin-only input: nothing, a break or a function word before (qu4 pai4 chu1 suo3)."""
    return start == 0 or syllables[start - 1] is None or syllables[start - 1].base in _function_syllables()


@lru_cache(maxsize=1)
def _function_syllables() -> frozenset[str]:
    return frozenset(s.base for s in text_syllables("".join(_QUALIFIER_OK)) if s)


def _mark(c: LocationMatch, inp: TranscriptInput) -> LocationMatch:
    """Flag a place that is only being called; compared in pinyin space so it works for pinyin-only input too."""
    if c.span is None:
        return c
    start, end = c.span
    if any(end - len(phrase(r)) > start and _said(r, inp.syllables, end - len(phrase(r))) for r in COMMUNITY_ROLES):
        return _addressed(c)  # 永定义警, 长乐东网格员: who reports (their community, if nothing else is named)
    sent_there = start > 0 and inp.syllables[start - 1] is not None and inp.syllables[start - 1].base in _TOWARDS
    asked = not sent_there and any(_said(w, inp.syllables, end) for w in _ASKED_TO_ACT)
    after = asked or any(_said(w, inp.syllables, end) for w in _ADDRESSED_AFTER) or _role_after(inp, end)
    before = any(_said_before(w, inp.syllables, start) for w in _ADDRESSED_BEFORE)
    if after or before:
        return _addressed(c)
    heading = (any(_said_before(w, inp.syllables, start) for w in _HEADING_BEFORE)
               and any(_said(w, inp.syllables, end) for w in _HEADING_AFTER))
    standing = any(_said_before(w, inp.syllables, start) for w in _STANDING_BEFORE) or (
        _said_before(_STANDING_AT_CLAUSE_START, inp.syllables, start) and (start == 2 or inp.syllables[start - 3] is None))
    taken_to = c.place.kind == "hospital" and _taken_to(inp.syllables, start)
    return replace(c, elsewhere=True, gone_to=heading or taken_to) if heading or standing or taken_to else c


def _said_before(word: str, syllables: list[Syllable | None], at: int) -> bool:
    """`word` is said just before syllable `at`."""
    size = len(phrase(word))
    return at >= size and _said(word, syllables, at - size)


def _taken_to(syllables: list[Syllable | None], at: int) -> bool:
    """送/去 just before a hospital, 到 or 往 between allowed (送到长乐医院, 送往长乐医院, 去长乐医院)."""
    if at >= 1 and syllables[at - 1] is not None and syllables[at - 1].base in ("dao", "wang"):
        at -= 1
    return any(_said_before(w, syllables, at) for w in _TAKEN_TO_BEFORE)


def _role_after(inp: TranscriptInput, at: int) -> bool:
    """The place's people named right after it (高桥市场保安, 皮具城的保安), and not a room there (保安室)."""
    syl = inp.syllables
    if at < len(syl) and syl[at] is not None and syl[at].base == "de":
        at += 1
    for role in _ADDRESSEE_ROLES:
        size = len(phrase(role))
        if _said(role, syl, at):
            after = at + size
            room = after < len(syl) and (inp.text[after] in _ROOMS if inp.text else _is_room(syl[after]))
            if not room:
                return True
    return False


def _is_room(s: Syllable | None) -> bool:
    return s is not None and s.base in _room_syllables()


@lru_cache(maxsize=1)
def _room_syllables() -> frozenset[str]:
    return frozenset(x.base for ch in _ROOMS for x in text_syllables(ch) if x)


def _said(word: str, syllables: list[Syllable | None], at: int) -> bool:
    """`word` is said at syllable `at`: exactly for two-syllable words, up to one accent-level confusion for longer
    ones (请注意 heard as qing zhong yi is still a call)."""
    size = len(phrase(word))
    floor = 1.0 if size < 3 else ADDRESSEE_FUZZY_MIN
    scores = window_scores(word, syllables, at, floor)
    return bool(scores) and sum(scores) / size >= floor


def _resolve_overlaps(cands: list[LocationMatch]) -> list[LocationMatch]:
    """Keep the longest match where spans overlap (公园北路夜市 over 公园北路 + 夜市); then the most confident."""
    kept: list[LocationMatch] = []
    for c in sorted(cands, key=lambda c: (-(c.span[1] - c.span[0]) if c.span else 0, -c.confidence)):
        if c.span and any(k.span and k.span[0] < c.span[1] and c.span[0] < k.span[1] for k in kept):
            continue
        kept.append(c)
    return kept


def _community_yields(cands: list[LocationMatch], inp: TranscriptInput, places: Jurisdiction) -> list[LocationMatch]:
    """Drop a community when a place of its grid was named as the scene: not the unit called, not where someone went
    (往…, also with a detail before 跑了: 往长乐公园南门跑了) or the caller stands (长乐东社区网格员报告，长乐公园南门…: the
    park, even when 网格员, which says the community only reports, was misheard; 永定社区有人打架，请高桥警务点出警:
    the community)."""
    inner = {grid for c in cands if not c.aside and (grid := places.grid_of(c.place.id)) != c.place.id
             and not (c.span and any(_said_before(w, inp.syllables, c.span[0]) for w in _HEADING_BEFORE))}
    return [c for c in cands if c.place.id not in inner] if inner else cands


def _most_specific(cands: list[LocationMatch], places: Jurisdiction) -> list[LocationMatch]:
    """Drop a place when a place inside it was also named (高桥大市场 + 皮具饰品城 -> 皮具饰品城)."""
    named = {c.place.id for c in cands}
    contains = {a for pid in named for a in places.ancestors(pid)}
    best: dict[str, LocationMatch] = {}
    for c in cands:
        if c.place.id in contains:
            continue
        if c.place.id not in best or c.confidence > best[c.place.id].confidence:
            best[c.place.id] = c
    return list(best.values())


# --- detail: which building, gate, floor, exit or corner ------------------------------------------------------

_NUM = r"[0-9零一二三四五六七八九十百两幺]+"
_DETAIL = re.compile(
    rf"{_NUM}号楼|{_NUM}栋|{_NUM}单元|{_NUM}(?:楼|层)(?!梯)|[A-Za-z]\d?口|{_NUM}号口|{_NUM}号门"
    r"|[东南西北][南北]?门(?:口|外|内)?|(?:正|大|后|侧)门(?:口|外|内)?|门口|附近|对面|旁边|楼道|地下车库|停车场|仓库|楼顶"
    r"|十字路口|路口|交叉口"
)
_ROAD = r"([\u4e00-\u9fff]{1,8}?[路街道巷])"
_CORNER = re.compile(rf"{_ROAD}(?:与|和|跟|同){_ROAD}的?(?:十字路口|路口|交叉口|交口)")
_RESIDENCE = re.compile(r"号楼|栋|单元")  # a dwelling's address (not 2楼, a floor of any building)
_CLAUSE_END = re.compile(r"[，。,.!?！？；;]")
# Enough syllables spelled back into characters for the detail patterns to read pinyin-only transcripts (the names
# of the places heard are put back as written, so that a corner of two known streets is read too).
_DETAIL_SYLLABLES = {
    "dong": "东", "nan": "南", "xi": "西", "bei": "北", "men": "门", "kou": "口", "hao": "号", "lou": "楼", "fu": "附",
    "jin": "近", "dui": "对", "mian": "面", "pang": "旁", "bian": "边", "dan": "单", "yuan": "元", "ceng": "层",
    "zheng": "正", "da": "大", "hou": "后", "ce": "侧", "wai": "外", "nei": "内", "lu": "路", "zi": "字", "jiao": "交",
    "cha": "叉", "he": "和", "yu": "与", "gen": "跟", "tong": "同", "dao": "道", "ting": "停", "che": "车",
    "chang": "场", "di": "地", "xia": "下", "ku": "库", "cang": "仓", "ding": "顶",
    "yi": "一", "er": "二", "san": "三", "si": "四", "wu": "五", "liu": "六", "qi": "七", "ba": "八", "jiu": "九",
    "shi": "十", "liang": "两", "yao": "幺",
}
_NUMERALS = set("一二三四五六七八九十两幺")


def _spell(s: Syllable | None, previous: str) -> str:
    if s is None:
        return "，"
    if len(s.base) == 1 and s.base not in "aeo":
        return s.base.upper()  # a spelled letter: B口
    if s.base == "dong" and previous in _NUMERALS:
        return "栋"  # 三栋, not 三东
    return _DETAIL_SYLLABLES.get(s.base, "□")


def _spelled(inp: TranscriptInput, places: list[LocationMatch]) -> str:
    """A pinyin-only transcript as characters, one per syllable: the places heard as named, the detail words spelled."""
    chars: list[str] = []
    for s in inp.syllables:
        chars.append(_spell(s, chars[-1] if chars else ""))
    for c in places:
        if c.span and c.span[1] - c.span[0] == len(c.place.name):
            chars[c.span[0]:c.span[1]] = c.place.name
    return "".join(chars)


def _detail(inp: TranscriptInput, match: LocationMatch, places: list[LocationMatch]) -> str | None:
    text = inp.text or _spelled(inp, places)
    start = match.span[1] if match.span else 0
    corner = _CORNER.search(text)
    if corner and (match.span is None or corner.start() <= match.span[0] < corner.end()):
        return f"{corner.group(1)}与{corner.group(2)}路口"
    end = _CLAUSE_END.search(text, start)
    clause = text[start:end.start() if end else len(text)]
    parts = list(dict.fromkeys(m.group(0) for m in _DETAIL.finditer(clause)))
    if not parts:
        return None
    detail = "".join(parts)
    try:
        return cn2an.transform(detail.replace("幺", "一"), "cn2an")
    except (ValueError, KeyError):  # cn2an rejects odd numerals; keep the words as said
        return detail
