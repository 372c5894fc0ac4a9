"""The short forms people say on the radio for a place, derived from its name: nobody calls 东郊农贸市场 by its full
name twice in a shift. A name is read as head + trade + kind (东郊|农贸|市场, 秦川|电子|厂, 韩森寨|公交站), and the
forms Mandarin speakers make of such names are derived from those parts:
- head + trade, the kind dropped: 西光建材, 幸福路五金, 万寿路地铁;
- head + kind, the trade dropped: 东郊市场, 秦川厂, 华山厂 (a company is a 厂 to its neighbours), 韩森寨站;
- head + a kind-word the place is also known by: 韩森寨家具城 (its alias 家具城), 长乐坊菜场 (菜场 for 菜市场);
- a community's people without 社区 (永定义警, 长乐东网格员): who reports, from the community;
- the head alone, when one place of the jurisdiction is the area it names: 怡园 is the compound (the community and
  the police post are always said with 社区 and 警务点), 高桥 the market.
A form two places would make, or that is already a name or alias of some place, is left out: the jurisdiction's own
names always win, and an ambiguous form names nothing. Streets and places without a kind-word are not shortened.
"""

from __future__ import annotations

from collections.abc import Iterable

from asr.words import jieba_words, word_freq
from dispatch.gazetteer import Jurisdiction, Place

# Kind-words a place's name ends with, longest first where one ends another (大市场 before 市场).
KINDS = ("大市场", "市场", "夜市", "城", "小区", "家园", "花园", "厂", "公司", "公交站", "地铁站", "车站", "站", "医院", "小学",
         "中学")
# What a kind-word is shortened to in speech (菜市场 -> 菜场), and the kind-word a kind of place also goes by.
SPOKEN_KIND = {"菜市场": ("菜场",), "大市场": ("市场",), "公交站": ("站",), "地铁站": ("站", "地铁"), "车站": ("站",),
               "公司": ("厂",), "小学": ("小",), "中学": ("中",)}
RESIDENCE_KINDS = frozenset({"小区", "家园", "花园"})  # a residential compound's kind-words (its buildings numbered)
STREET_HEAD_ONLY = frozenset({"小学", "中学"})  # 公园北小 is said, 西光中 is not: only after a street's name
_STREET_ENDINGS = tuple("路街道巷")  # 公园|北路|夜市: a street in the head, not a trade
# An area's own name is its head alone only for places people go to; units and grids are said with their kind-word.
HEAD_ALONE_KINDS = frozenset({"compound", "market", "enterprise", "school", "hospital", "transit", "landmark"})
SAID_WITH_KIND = frozenset({"community", "police_post"})
# The people of a community (社区), said after its name without 社区: 永定义警, 长乐东网格员, 西光警长.
COMMUNITY_ROLES = ("网格员", "义警", "警长", "民警", "志愿者")


def short_forms(jurisdiction: Jurisdiction) -> dict[str, tuple[str, ...]]:
    """Place id -> the short forms of its name that only it makes and that no place already has as a name."""
    taken = {n for p in jurisdiction.places for n in p.names}
    made: dict[str, set[str]] = {}
    for place in jurisdiction.places:
        for form in _forms(place):
            if form not in taken and len(form) >= 2:
                # a form inside another place's name is that place's too (机械厂: 西光机械厂 as much as 华山机械公司)
                made.setdefault(form, set()).update({place.id} | {p.id for p in jurisdiction.places if form in p.name})
    for form, ids in _heads(jurisdiction).items():
        if form not in taken:
            made.setdefault(form, set()).update(ids)
    forms: dict[str, list[str]] = {}
    for form, ids in made.items():
        if len(ids) == 1:
            forms.setdefault(next(iter(ids)), []).append(form)
    return {pid: tuple(sorted(fs, key=lambda f: (-len(f), f))) for pid, fs in forms.items()}


def split_name(name: str) -> tuple[str, str, str] | None:
    """(head, trade, kind) of a name that ends with a kind-word (东郊农贸市场: 东郊, 农贸, 市场; 韩森寨公交站: 韩森寨, '',
    公交站), or None. The trade is the dictionary word of 2+ characters before the kind, when a head is left."""
    kind = next((k for k in KINDS if name.endswith(k) and len(name) > len(k)), None)
    if kind is None:
        return None
    rest = name[: -len(kind)]
    if rest.endswith("菜") and kind == "市场":  # 菜市场 is one kind-word (长乐坊|菜市场)
        rest, kind = rest[:-1], "菜市场"
    words = jieba_words(rest)
    last = words[-1] if len(words) >= 2 else ""
    trade = last if (len(last) >= 2 and word_freq(last) > 0 and not last.endswith(_STREET_ENDINGS)
                     and not last.startswith("第")) else ""  # 长乐|第三|小学: an ordinal, not a trade
    head = rest[: len(rest) - len(trade)]
    if len(head) < 2:
        head, trade = rest, ""
    return head, trade, kind


def _forms(place: Place) -> Iterable[str]:
    if place.kind == "community" and place.name.endswith("社区") and len(place.name) >= 4:
        # its people say who they are without 社区 (永定义警, 长乐东网格员): the community's name only with them
        for role in COMMUNITY_ROLES:
            yield place.name[: -len("社区")] + role
        return
    parts = split_name(place.name)
    if parts is None or place.kind == "street":
        return
    head, trade, kind = parts
    spoken = SPOKEN_KIND.get(kind, ())
    if trade:
        yield head + trade
        yield head + kind
    if kind not in STREET_HEAD_ONLY:
        for short in spoken:
            yield head + short
            if trade:
                yield trade + short
    if head.endswith("路") and len(head) >= 3:  # named after its street, said without 路: 公园北小, 公园北夜市
        yield head[:-1] + kind
        for short in spoken:
            yield head[:-1] + short
    for alias in place.aliases:  # a kind-word the place also goes by (家具城), after its head; 菜场 for 菜市场
        if not place.name.endswith(alias) and head not in alias and split_name("某" + alias):
            yield head + alias
        yield from SPOKEN_KIND.get(alias, ())


def _heads(jurisdiction: Jurisdiction) -> dict[str, set[str]]:
    """Head -> the places it could name alone: each place people go to whose name it heads, and any other place
    whose name starts with it (长乐|东路, 兴庆|公园北门), bar the units and grids, always said with their kind-word."""
    heads: dict[str, set[str]] = {}
    for place in jurisdiction.places:
        parts = split_name(place.name)
        if parts is not None and place.kind in HEAD_ALONE_KINDS:
            heads.setdefault(parts[0], set()).add(place.id)
    for head, ids in heads.items():
        ids.update(p.id for p in jurisdiction.places if p.name.startswith(head) and p.kind not in SAID_WITH_KIND)
    return heads


SPOTTED_MIN_CHARS = 3  # a spotter listening for two syllables hears them everywhere


def spotted_short_names(jurisdiction: Jurisdiction) -> dict[str, str]:
    """Short form -> place id, for the keyword spotter to listen for beside the names: the forms of three or more
    characters that are not words of the language (东郊市场, 秦川厂; not 怡园, 菜场)."""
    return {form: place_id for place_id, forms in short_forms(jurisdiction).items() for form in forms
            if len(form) >= SPOTTED_MIN_CHARS and word_freq(form) == 0}
