"""Location extraction from characters, tone-numbered or plain pinyin and spotted keywords."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dispatch.gazetteer import Jurisdiction, load_jurisdiction
from dispatch.location import LocationMatch, PlaceIndex, extract_location
from dispatch.phonetic import FINAL_FOLD, INITIAL_FOLD, split, text_syllables
from tests.dispatch.chatter import ROUTINE_CHATTER

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def jurisdiction() -> Jurisdiction:
    return load_jurisdiction(REPO / "config" / "jurisdiction.yaml")


@pytest.fixture(scope="module")
def index(jurisdiction: Jurisdiction) -> PlaceIndex:
    return PlaceIndex(jurisdiction)


def where(text, index: PlaceIndex) -> LocationMatch:
    match = extract_location(text, index)
    assert match is not None, f"no place found in {text!r}"
    return match


@pytest.mark.parametrize(
    ("said", "place_id"),
    [
        ("没事街有人打架", "meishijie"),  # homophones written by the ASR
        ("mei si jie you ren da jia", "meishijie"),  # plain pinyin, sh heard as s
        ("mei3 shi2 jie1 you3 ren2 da3 jia4", "meishijie"),  # what the on-board engine gives
        ("xi guan zhong xue men kou you ke yi ren yuan", "xiguang-zhongxue"),  # -ng dropped
        ("高桥大市场皮具饰品城有人在店里闹事", "piju-city"),  # the most specific of two nested places
        ("公园北路夜市两桌客人打起来了", "gongyuan-yeshi"),  # longest match over 公园北路 + 夜市
        ("西光广场小区有住户投诉", "xiguang-guangchang-xq"),
        ("西光广场有人摔倒了", "xiguang-guangchang"),  # the place named so beats the one aliased so
        ("怡园警务点请注意，美食街有人打架斗殴", "meishijie"),  # the addressee is not the scene
        ("yi2 yuan2 jing3 wu4 dian3 qing3 zhu4 yi4, mei3 shi2 jie1 you3 ren2 da3 jia4", "meishijie"),
        ("派出所请求支援，东方花园三号楼有家暴", "dongfang-huayuan"),
        ("长乐东路和韩森路路口两车剐蹭", "changledonglu"),
        ("皮具城二楼有小偷", "piju-city"),
        ("到派出所来一趟", "paichusuo"),  # a generic alias alone still counts
        ("今天下午三点在所里开会", "paichusuo"),
        ("qu4 pai4 chu1 suo3 bao4 an4", "paichusuo"),
    ],
)
def test_named_examples(said: str, place_id: str, index: PlaceIndex) -> None:
    assert where(said, index).place.id == place_id


def test_specific_name_beats_generic_alias(index: PlaceIndex) -> None:
    match = where("菜市场门口的人说韩森寨家具市场有人吵架", index)
    assert match.place.id == "hansenzhai-jiaju"
    generic = where("菜市场门口有人吵架", index)
    assert generic.place.id == "changlefang-caishichang"
    assert generic.method == "generic" and generic.confidence < match.confidence


def test_generic_alias_qualified_by_another_name_is_not_ours(index: PlaceIndex) -> None:
    assert extract_location("张女士给武隆上坎镇派出所民警打去电话", index) is None
    assert extract_location("海宁农贸市场今天关门", index) is None
    assert extract_location("wu3 long2 shang4 kan3 zhen4 pai4 chu1 suo3", index) is None


def test_span_and_confidence(index: PlaceIndex) -> None:
    exact = where("东郊农贸市场门口有个电动车被偷了", index)
    assert (exact.span, exact.span_unit, exact.heard, exact.method) == ((0, 6), "char", "东郊农贸市场", "name")
    fuzzy = where("刚才没事街有人打架", index)
    assert (fuzzy.span, fuzzy.heard, fuzzy.method) == ((2, 5), "没事街", "fuzzy")
    assert fuzzy.confidence < exact.confidence
    spoken = where("gang cai mei si jie you ren da jia", index)
    assert (spoken.span, spoken.span_unit) == ((2, 5), "syllable")


def test_spotted_keyword(index: PlaceIndex) -> None:
    transcript = {"text": "", "pinyin": "", "keywords": [{"label": "韩森寨站", "ref": "hansenzhai-gongjiaozhan",
                                                           "start": 0.2, "end": 0.9, "score": 0.8}]}
    match = where(transcript, index)
    assert (match.place.id, match.method, match.span) == ("hansenzhai-gongjiaozhan", "keyword", None)
    stray = {"text": "", "pinyin": "", "keywords": [{"label": "打架", "ref": "incident:fight", "start": 0, "end": 1, "score": 1}]}
    assert extract_location(stray, index) is None


@pytest.mark.parametrize(
    ("said", "detail"),
    [
        ("东方花园三号楼有家暴", "3号楼"),
        ("康复路服装市场二楼有小偷", "2楼"),
        ("万寿路地铁站B口有人抢包", "B口"),
        ("wan4 shou4 lu4 di4 tie3 zhan4 B kou3 you3 ren2 qiang3 bao1", "B口"),
        ("幸福路五金市场东门有人吵架", "东门"),
        ("dong fang hua yuan san hao lou you jia bao", "3号楼"),
        ("西光中学门口有可疑人员", "门口"),
        ("长乐公园对面有人晕倒", "对面"),
        ("长乐东路与韩森路交叉口两车相撞", "长乐东路与韩森路路口"),
        ("美食街有人打架", None),
    ],
)
def test_detail(said: str, detail: str | None, index: PlaceIndex) -> None:
    assert where(said, index).detail == detail


def test_reference_texts_name_no_place(shared_audio: Path, index: PlaceIndex) -> None:
    rows = list(csv.DictReader((shared_audio / "manifest.tsv").open(encoding="utf-8"), delimiter="\t"))
    assert len(rows) >= 50
    found = {r["text"]: extract_location(r["text"], index) for r in rows}
    assert {t: m.place.id for t, m in found.items() if m} == {}
    spoken = {r["text"]: extract_location(" ".join(s.base for s in text_syllables(r["text"]) if s), index) for r in rows}
    assert {t: m.place.id for t, m in spoken.items() if m} == {}


@pytest.mark.parametrize("said", ROUTINE_CHATTER)
def test_chatter_names_no_place(said: str, index: PlaceIndex) -> None:
    assert extract_location(said, index) is None


def _accent_variants(base: str) -> set[str]:
    """The syllable as a southern speaker or a confused recogniser may produce it."""
    ini, fin = split(base)
    swap_ini = {**INITIAL_FOLD, **{v: k for k, v in INITIAL_FOLD.items()}}
    swap_fin = {**FINAL_FOLD, **{v: k for k, v in FINAL_FOLD.items()}}
    return {swap_ini.get(ini, ini) + fin, ini + swap_fin.get(fin, fin)} - {base}


def test_every_single_accent_confusion_in_every_long_name(jurisdiction: Jurisdiction, index: PlaceIndex) -> None:
    """Built on phonetics, not on sentences: each name with any one syllable accent-confused is still found."""
    misses = []
    checked = 0
    for place in jurisdiction.places:
        syllables = [s.base for s in text_syllables(place.name) if s]
        if len(syllables) < 3:
            continue
        for i, base in enumerate(syllables):
            for variant in _accent_variants(base):
                said = " ".join([*syllables[:i], variant, *syllables[i + 1:]]) + " you ren da jia"
                match = extract_location(said, index)
                checked += 1
                if match is None or place.id not in (match.place.id, *jurisdiction.ancestors(match.place.id)):
                    misses.append((said, match and match.place.id))
    assert checked > 100
    assert misses == []


def test_a_long_name_opening_a_transmission_may_have_lost_its_first_syllable(index: PlaceIndex) -> None:
    """The key-up click and the noise garble a transmission's first syllable; the rest of a 5+ syllable name is
    enough there, and only there."""
    assert where("zhong1 fang1 you4 er2 yuan2 men2 kou3", index).place.id == "dongfang-youeryuan"
    assert where("you4 fu3 li3 xiao3 qu1 lou2 shang4", index).place.id == "xingfuli"
    assert extract_location("ta1 shuo1 zhong1 fang1 you4 er2 yuan2", index) is None  # not at the onset
    assert extract_location("zhong1 fang1 you4 er2 men2", index) is None  # the rest not heard right
    assert extract_location("中方幼儿园门口", index) is None  # characters are read as written
