"""Short forms of place names (dispatch/short_names.py): what people say instead of a place's full name, derived
from the name's parts, never one that two places would share or that is already a place's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.gazetteer import Jurisdiction, parse_jurisdiction
from dispatch.location import PlaceIndex, extract_location
from dispatch.phonetic import text_syllables
from dispatch.short_names import short_forms, split_name, spotted_short_names

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("东郊农贸市场", ("东郊", "农贸", "市场")),
        ("秦川电子厂", ("秦川", "电子", "厂")),
        ("韩森寨公交站", ("韩森寨", "", "公交站")),
        ("长乐坊菜市场", ("长乐坊", "", "菜市场")),
        ("公园北路夜市", ("公园北路", "", "夜市")),  # 北路 is part of a street's name, not a trade
        ("长乐第三小学", ("长乐第三", "", "小学")),  # an ordinal, not a trade
        ("美食街", None),
        ("怡园警务点", None),
    ],
)
def test_a_name_is_read_as_head_trade_and_kind(name: str, parts: tuple[str, str, str] | None) -> None:
    assert split_name(name) == parts


def test_the_demo_places_get_the_short_forms_people_say(jurisdiction: Jurisdiction) -> None:
    forms = short_forms(jurisdiction)
    assert {"东郊市场", "东郊农贸"} <= set(forms["dongjiao-nongmao"])
    assert {"秦川厂", "秦川电子"} <= set(forms["qinchuan-dianzi"])
    assert "华山厂" in forms["huashan-jixie"]  # a company is a 厂 to its neighbours
    assert "公园北小" in forms["gongyuanbeilu-xiaoxue"]  # its street's name said without 路
    assert "长乐坊菜场" in forms["changlefang-caishichang"]
    assert "万寿路地铁" in forms["wanshoulu-ditiezhan"]
    assert forms["yiyuan-xq"] == ("怡园",)  # 怡园社区 and 怡园警务点 are said with their kind-word
    assert "高桥" in forms["gaoqiao-market"]
    made = [f for fs in forms.values() for f in fs]
    assert len(made) == len(set(made)), "a short form names one place"
    names = {n for p in jurisdiction.places for n in p.names}
    assert not names & set(made), "a place's own name or alias is never made again"
    # heads several places share name none of them: 长乐坊 (the compound, the market), 西光, 韩森寨, 万寿路;
    # 机械厂 is in 西光机械厂 as much as it is 华山机械公司's trade
    assert not {"长乐坊", "西光", "韩森寨", "万寿路", "长乐", "机械厂"} & set(made)


def test_a_head_two_markets_share_is_neither_market() -> None:
    places = [
        {"id": "a", "name": "南关农贸市场", "kind": "market", "lat": 34.0, "lon": 108.0},
        {"id": "b", "name": "南关建材市场", "kind": "market", "lat": 34.0, "lon": 108.0},
        {"id": "c", "name": "北关电子厂", "kind": "enterprise", "lat": 34.0, "lon": 108.0, "aliases": ["北关厂"]},
    ]
    forms = short_forms(parse_jurisdiction({"name": "t", "center": {"lat": 34.0, "lon": 108.0}, "channels": [],
                                            "places": places, "responders": []}))
    assert "南关" not in forms.get("a", ()) + forms.get("b", ())
    assert "南关市场" not in forms.get("a", ()) + forms.get("b", ())  # both are 南关 markets
    assert "南关农贸" in forms["a"] and "南关建材" in forms["b"]
    assert "北关厂" not in forms["c"]  # already its alias
    assert "北关" in forms["c"]


@pytest.mark.parametrize(
    ("said", "place_id"),
    [
        ("东郊市场门口有个人晕倒了", "dongjiao-nongmao"),
        ("秦川厂宿舍两个人打起来了", "qinchuan-dianzi"),
        ("公园北小门口一辆车蹭了学生", "gongyuanbeilu-xiaoxue"),
        ("怡园5号楼楼下两口子吵架", "yiyuan-xq"),
        ("dong1 jiao1 shi4 chang3 men2 kou3 you3 ren2 yun1 dao3 le5", "dongjiao-nongmao"),
        ("qin2 chuan1 chang3 su4 she4 you3 ren2 da3 jia4", "qinchuan-dianzi"),
    ],
)
def test_a_short_form_places_a_report(jurisdiction: Jurisdiction, said: str, place_id: str) -> None:
    match = extract_location(said, PlaceIndex(jurisdiction))
    assert match is not None and match.place.id == place_id, match


def test_a_short_form_is_heard_whole_or_not_at_all(jurisdiction: Jurisdiction) -> None:
    """A full name may be heard with a slip; a short form, a step from the name already, may not (韩森路家具城 is a
    家具城 on 韩森路, not 韩森寨家具城 misheard)."""
    index = PlaceIndex(jurisdiction)
    match = extract_location("han2 sen1 lu4 jia1 ju4 cheng2 you3 ren2 tou1 dong1 xi1", index)
    assert match is None or match.place.id != "hansenzhai-jiaju"
    assert extract_location("xi1 guang1 jian4 cai2 na4 bian1 you3 ren2 du3 men2", index).place.id == "xiguang-jiancai"
    match = extract_location("xi1 guang1 jian4 mai2 na4 bian1 you3 ren2 du3 men2", index)  # 西光建材 one slip off
    assert match is None or match.place.id != "xiguang-jiancai"


def test_the_spotter_listens_for_the_longer_short_forms(jurisdiction: Jurisdiction) -> None:
    from dispatch.vocabulary import spotter_keywords

    spotted = spotted_short_names(jurisdiction)
    assert spotted["东郊市场"] == "dongjiao-nongmao" and spotted["秦川厂"] == "qinchuan-dianzi"
    assert "怡园" not in spotted and "东郊" not in spotted  # two syllables: heard everywhere
    entries = spotter_keywords(REPO / "config" / "jurisdiction.yaml")
    refs = {e.label: e.ref for e in entries}
    assert refs["东郊市场"] == "dongjiao-nongmao" and refs["美食街"] == "meishijie" and refs["打架"] == "incident:fight"


@pytest.mark.parametrize("form", [str, lambda t: " ".join(f"{s.base}{s.tone}" for s in text_syllables(t) if s)],
                         ids=["text", "toned"])
def test_a_communitys_people_say_who_they_are_without_its_kind_word(jurisdiction: Jurisdiction, form) -> None:
    """永定义警 is a volunteer of 永定社区: who reports, so their community is the place when no other is named."""
    index = PlaceIndex(jurisdiction)
    alone = extract_location(form("永定义警报告，社区里有两个人打起来了"), index)
    assert alone is not None and alone.place.id == "yongding-sq" and alone.addressed
    assert extract_location(form("长乐东网格员报告，美食街有人打架"), index).place.id == "meishijie"
    assert "长乐东网格员" in short_forms(jurisdiction)["changledong-sq"]
