"""Incident type and priority from characters or pinyin; chatter raises nothing; operators extend the lexicon."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.classify import classify, incident_terms, load_lexicon, read_report
from dispatch.config import DispatchConfig
from dispatch.gazetteer import load_jurisdiction
from dispatch.location import PlaceIndex
from dispatch.phonetic import text_syllables
from tests.dispatch.chatter import ROUTINE_CHATTER

REPO = Path(__file__).resolve().parents[2]

PRIORITY_OF = dict.fromkeys(
    ["fight", "theft", "robbery", "weapon", "fire", "medical", "missing", "suspicious", "dispute", "domestic", "gathering",
     "traffic", "noise", "fraud", "other", "none"]
)


def pinyin_of(said: str) -> str:
    """What the on-board engine would give for `said` heard right: tone-numbered syllables."""
    return " ".join(f"{s.base}{s.tone}" for s in text_syllables(said) if s is not None)


def kind(said: str) -> tuple[str, str]:
    c = classify(pinyin=said) if said.isascii() else classify(said)
    return c.type, c.priority


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("美食街有人打架斗殴", ("fight", "high")),
        ("mei si jie you ren da jia", ("fight", "high")),  # plain pinyin
        ("you3 ren2 chi2 dao1 kan3 ren2", ("weapon", "critical")),  # tone-numbered pinyin
        ("有人打价了", ("fight", "high")),  # homophone written by the ASR, same tones
        ("有人拿刀打架斗殴", ("weapon", "critical")),  # weapon beats fight
        ("两个人打架，有人流血了", ("fight", "high")),
        ("两个人打架，一个昏迷了", ("fight", "critical")),  # severity raises priority
        ("车辆起火无人员伤亡", ("fire", "critical")),
        ("仓库冒烟了", ("fire", "critical")),
        ("有人晕倒了", ("medical", "critical")),
        ("有人喝醉了躺在马路边", ("medical", "medium")),
        ("电动车被偷了", ("theft", "medium")),
        ("有小偷在偷手机", ("theft", "high")),
        ("有人抢包往北跑了", ("robbery", "critical")),
        ("有个老人走失了", ("missing", "high")),
        ("门口有可疑人员徘徊", ("suspicious", "medium")),
        ("有人翻墙进来", ("suspicious", "high")),
        ("摊主之间因为占道吵架", ("dispute", "medium")),  # a quarrel outranks congestion
        ("两车剐蹭，司机吵起来了", ("traffic", "medium")),  # an accident outranks the quarrel it causes
        ("车辆违停堵住消防通道", ("traffic", "low")),
        ("老公在家打老婆", ("domestic", "high")),
        ("一群人拉横幅堵门", ("gathering", "high")),
        ("楼上半夜唱歌太吵，扰民", ("noise", "low")),
        ("有个老太太被骗了五万块钱", ("fraud", "medium")),
        ("派出所请求支援，有人受伤了", ("medical", "high")),
        ("有人在放小广告", ("other", "low")),
        ("美食街有人打架，有情况随时报告", ("fight", "high")),
        ("有情况，快来美食街", ("other", "medium")),  # 有情况 alone is still a report
    ],
)
def test_types_and_priorities(said: str, expected: tuple[str, str]) -> None:
    assert kind(said) == expected


@pytest.mark.parametrize("said", [*ROUTINE_CHATTER, "今天下午三点在所里开会", "幸福路五金市场东门一切正常"])
def test_routine_chatter_raises_no_incident(said: str) -> None:
    result = classify(pinyin=said) if said.isascii() else classify(said)
    assert (result.type, result.priority, result.is_incident) == ("none", "none", False)


def test_two_weak_words_of_one_type_outweigh_one_of_another() -> None:
    assert kind("门口乱停车，把路堵死了") == ("traffic", "low")  # 乱停车 + 堵死 (weak, traffic)
    assert classify("车停这里堵住了，两个人吵架").type == "dispute"  # a plain word still beats weak ones


def test_a_cry_for_help_raises_the_priority_of_the_type_heard_and_names_none() -> None:
    """救命 says how urgent, not what: beside a type's words that type wins, however they were heard (in pinyin
    两口子打起来 is heard only near 两口子打架); alone it is a report of no known type, high, for the operator."""
    said = "西光社区十二号院有两口子打起来了，女的在喊救命"
    assert kind(said) == kind(pinyin_of(said)) == ("domestic", "high")
    for alone in ("美食街有人喊救命", pinyin_of("美食街有人喊救命")):
        c = classify(pinyin=alone) if alone.isascii() else classify(alone)
        assert (c.type, c.priority, c.needs_confirmation) == ("other", "high", True)


@pytest.mark.parametrize("said", ["巡逻完毕，没有异常情况", "不需要支援，已经处理好了"])
def test_negated_report_words_raise_nothing(said: str) -> None:
    assert kind(said) == ("none", "none")


@pytest.mark.parametrize("said", ["没有人受伤", "没有发现可疑人员", "巡逻完毕，未发现异常", "没打架，只是开玩笑"])
def test_negation_cancels_the_word(said: str) -> None:
    assert classify(said).type == "none"


@pytest.mark.parametrize("said", [
    "刚才那个火警是误报，是饭店排烟，没事了",  # over
    "三号楼的火警是误报，烧烤冒的烟",
    "西门那边两个人吵架的已经调解好了，人都走了",
    "走失的那个老人已经找到了，家属接走了",
    "听说昨天晚上隔壁小区有人电动车被偷了",  # second-hand
    "明天上午在所里搞一次消防演练，各单位派两个人",  # a drill, a reminder, a training
    "各岗位把防盗提示牌挂好，提醒商户看好自己的包",
    "下周三下午有个防诈骗讲座，老年人优先",
    "过年期间市场里严禁燃放烟花爆竹，各岗位盯紧点",
])
def test_what_is_over_second_hand_or_a_reminder_alerts_nobody(said: str) -> None:
    for c in (classify(said), classify(pinyin=pinyin_of(said))):
        assert c.type == "none" or c.needs_confirmation, c


@pytest.mark.parametrize(("said", "expected"), [
    ("不是误报，仓库里真着火了，快来", "fire"),  # negated: a report
    ("听说三号楼有人持刀砍人，快来", "weapon"),  # second-hand, but critical: not held back for a click
    ("培训学校门口有人打架", "fight"),  # a place's name, not a training
])
def test_a_negated_all_clear_a_critical_report_or_a_name_still_alerts(said: str, expected: str) -> None:
    c = classify(said)
    assert (c.type, c.needs_confirmation) == (expected, False), c


@pytest.mark.parametrize("said", ["东门那个小伙子挨了一刀，流了好多血", "后门有个人挨了一刀，躺在地上"])
def test_a_stabbing_told_by_its_victim_and_wound_is_a_weapon_not_a_medical_call(said: str) -> None:
    """The cause, not the injury it left: a knife sends who a knife needs (precedence: weapon before medical)."""
    for c in (classify(said), classify(pinyin=pinyin_of(said))):
        assert (c.type, c.priority) == ("weapon", "critical"), c


@pytest.mark.parametrize("said", ["长乐公园里几棵树被砍了，问问园林局", "怡园小区那个业主被刺激到了，在骂物业",
                                  "有人被看见翻墙进了仓库", "我帮你在拼多多上砍了一刀"])
def test_a_cut_tree_an_upset_owner_or_someone_seen_is_no_knife_attack(said: str) -> None:
    for c in (classify(said), classify(pinyin=pinyin_of(said))):
        assert c.type != "weapon", c


def test_two_syllable_words_need_tones_when_tones_are_known() -> None:
    assert classify(pinyin="da4 jia1 hao3").type == "none"  # 大家好, not 打架
    assert classify(pinyin="you3 ren2 da3 jia4").type == "fight"


def test_matched_terms_and_confidence() -> None:
    written = classify("美食街有人打架")
    heard = classify("美食街有人打价")
    assert written.terms == ("打架",) and heard.terms == ("打架",)
    assert heard.confidence < written.confidence


def test_a_report_with_no_type_word_goes_to_the_operator_with_a_guess() -> None:
    decided = classify("请求支援，这边出事了")  # something happened here, but what? the model's guess, a person decides
    assert decided.is_incident and decided.needs_confirmation and decided.priority == "medium"


def test_a_weak_word_alone_in_a_report_goes_to_the_operator() -> None:
    decided = classify("有人报警说门口违停")  # parking, or what the parking caused? a person decides
    assert decided.is_incident and decided.needs_confirmation


def test_operator_extends_the_lexicon() -> None:
    assert classify("有人在放孔明灯").type != "fire"
    config = DispatchConfig.model_validate({"lexicon": {"types": {"fire": {"terms": ["孔明灯"], "high": ["孔明灯"]}},
                                                        "chatter": ["报平安"]}})
    lexicon = load_lexicon(config.lexicon)
    assert classify("有人在放孔明灯", lexicon=lexicon).to_dict()["type"] == "fire"
    assert classify(pinyin="you ren fang kong ming deng", lexicon=lexicon).priority == "high"  # in pinyin too
    assert incident_terms(config.lexicon)["孔明灯"] == "fire"
    assert "孔明灯" not in incident_terms()


def test_incident_terms_feed_the_keyword_spotter() -> None:
    terms = incident_terms()
    assert terms["打架"] == "fight" and terms["持刀"] == "weapon" and terms["抢包"] == "robbery"
    assert "收到" not in terms and "没有" not in terms
    assert set(terms.values()) == set(PRIORITY_OF) - {"none"}
    assert len(terms) > 300


# --- more than the best hypothesis: the recogniser's alternative hearings of the same audio ---------------------------

FIGHT_AT_STREET = "mei3 shi2 jie1 you3 ren2 da3 jia4 le5"
THEFT_AT_STREET = "mei3 shi2 jie1 you3 ren2 bei4 tou1 le5 qian2 bao1"


def _read(main: str, *others: str) -> tuple[str | None, str]:
    index = PlaceIndex(load_jurisdiction(REPO / "config" / "jurisdiction.yaml"))
    what, places = read_report({"pinyin": main, "alternatives": [{"pinyin": o} for o in others]}, load_lexicon(), index)
    where = places.scene()
    return (where.place.id if where else None), what.type


def test_a_place_garbled_in_the_main_hearing_is_taken_from_an_alternative() -> None:
    assert _read("you3 ren2 da3 jia4 le5") == (None, "fight")
    assert _read("you3 ren2 da3 jia4 le5", "you3 ren2 da3 jia4", FIGHT_AT_STREET) == ("meishijie", "fight")
    # the main hearing's own place stands against one alternative, not against two that agree on another
    at_market = "gao1 qiao2 da4 shi4 chang3 you3 ren2 da3 jia4"
    assert _read(FIGHT_AT_STREET, at_market)[0] == "meishijie"
    assert _read(FIGHT_AT_STREET, at_market, "you3 ren2 da3 jia4")[0] == "meishijie"
    assert _read(FIGHT_AT_STREET, at_market, at_market)[0] == "gaoqiao-market"


def test_a_hearing_that_heard_the_agreed_place_as_the_unit_called_heard_the_scene_the_others_missed() -> None:
    """Two hearings of three hear only the post called (its name opens the call), the third the scene after it too:
    the post is the unit called in every hearing, the scene is the street. A hearing that heard the agreed place as
    the scene itself, beside another place, does not overrule them."""
    called = "gao1 qiao2 jing3 wu4 dian3 you3 ren2 da3 jia4 le5"
    scene_too = "gao1 qiao2 jing3 wu4 dian3 mei3 shi2 jie1 you3 ren2 da3 jia4 le5"
    assert _read(called, called)[0] == "gaoqiao-jingwudian"
    assert _read(called, called, scene_too)[0] == "meishijie"
    assert _read(called, scene_too, called)[0] == "meishijie"
    # where someone ran off to is not the scene either, when the caller named where it happened
    fled = "you3 ren2 qiang3 bao1 wang3 xing4 fu2 lu4 pao3 le5"
    assert _read(fled, fled)[0] == "xingfulu"
    assert _read(fled, fled, "mei3 shi2 jie1 " + fled)[0] == "meishijie"
    # the third hearing put the scene at the agreed place itself (the street after it heard as a corner's second)
    assert _read(FIGHT_AT_STREET, FIGHT_AT_STREET, "mei3 shi2 jie1 he2 xing4 fu2 lu4 you3 ren2 da3 jia4")[0] == "meishijie"


def _timed(pinyin: str, step: float = 0.2) -> dict:
    return {"pinyin": pinyin, "words": [{"text": s, "start": i * step, "end": (i + 1) * step, "conf": 0.9}
                                        for i, s in enumerate(pinyin.split())]}


def test_a_name_each_hearing_garbled_in_another_syllable_is_heard_together() -> None:
    """No hearing alone names the place (美食街 heard "mei zi jie" and "wei shi jie"); taken together, each syllable
    the nearest of what the hearings heard at its time, they do, as a phonetic match (never exact). Where a hearing
    names a place alone, or the syllables heard together are not the name's, nothing is pieced together."""
    index = PlaceIndex(load_jurisdiction(REPO / "config" / "jurisdiction.yaml"))
    main = _timed("you3 ren2 zai4 mei3 zi4 jie1 da3 jia4 le5")
    garbled = {**main, "alternatives": [_timed("you3 ren2 zai4 wei4 shi2 jie1 da3 jia4 le5"),
                                        _timed("you3 ren2 zai4 mei3 zi4 jie1 da3 jia4 le5", step=0.22)]}
    assert read_report(main, load_lexicon(), index)[1].scene() is None
    what, places = read_report(garbled, load_lexicon(), index)
    assert (places.scene().place.id, places.scene().method, what.type) == ("meishijie", "fuzzy", "fight")
    # the same syllables said at other times (no hearing heard shi where the main one heard zi): nothing
    apart = {**main, "alternatives": [_timed("wei4 shi2 jie1 you3 ren2 zai4 da3 jia4 le5", step=0.1)]}
    assert read_report(apart, load_lexicon(), index)[1].scene() is None
    assert read_report({**main, "alternatives": [_timed("you3 ren2 zai4 wei4 zi4 jie1 da3 jia4 le5")]},
                       load_lexicon(), index)[1].scene() is None
    # a hearing that heard one syllable, far from the others' time, puts it nowhere
    early = {"pinyin": "shi4", "words": [{"text": "shi4", "start": 0.0, "end": 0.2, "conf": 0.9}]}
    assert read_report({**main, "alternatives": [early]}, load_lexicon(), index)[1].scene() is None
    # alternatives the dispatcher cannot lay over the main hearing (no times, not hearings at all) are left out
    for odd in (["mei3 shi2 jie1"], [{"pinyin": "mei3 shi2 jie1", "words": [{"text": "mei3"}]}]):
        assert read_report({**main, "alternatives": odd}, load_lexicon(), index)[0].type == "fight"


def test_a_name_heard_together_is_left_out_of_the_main_hearings_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """The type model does not read a place's name (its syllables may sound like words that say what happened): a
    name found only with the hearings taken together lies over the main hearing's syllables, and is blanked there."""
    from dispatch import classify as classify_module

    read = classify_module.read_transcript
    blanked: list[list[tuple[int, int]]] = []

    def spy(transcript_like: object, lexicon: object = None, places: object = None) -> object:
        blanked.append(getattr(places, "spans", []))
        return read(transcript_like, lexicon, places)  # type: ignore[arg-type]

    monkeypatch.setattr(classify_module, "read_transcript", spy)
    index = PlaceIndex(load_jurisdiction(REPO / "config" / "jurisdiction.yaml"))
    main = _timed("you3 ren2 zai4 mei3 zi4 jie1 da3 jia4 le5")
    garbled = {**main, "alternatives": [_timed("you3 ren2 zai4 wei4 shi2 jie1 da3 jia4 le5")]}
    what, places = read_report(garbled, load_lexicon(), index)
    assert places.scene() is not None and what.type == "fight"
    assert blanked[0] == [(3, 6)]  # the main hearing, read without "mei zi jie"
    assert blanked[1] == []  # the alternative named nothing alone


def test_the_type_the_hearings_lean_to_together_wins() -> None:
    """The type model's probabilities are averaged over the hearings: two hearings of a fight outweigh one of a
    theft; with one each, the main hearing's own words decide."""
    assert _read(THEFT_AT_STREET) == ("meishijie", "theft")
    assert _read(THEFT_AT_STREET, FIGHT_AT_STREET, FIGHT_AT_STREET)[1] == "fight"  # outvoted two to one
    assert _read(THEFT_AT_STREET, FIGHT_AT_STREET)[1] == "theft"  # a tie: the main hearing's
    assert _read(THEFT_AT_STREET, FIGHT_AT_STREET, "gao1 qiao2 da4 shi4 chang3 ji3 dian3 kai1 men2")[1] == "theft"


def test_a_report_one_hearing_was_sure_of_but_the_others_heard_as_routine_goes_to_the_operator() -> None:
    index = PlaceIndex(load_jurisdiction(REPO / "config" / "jurisdiction.yaml"))
    routine = "ge4 dan1 wei4 zhu4 yi4 jin1 wan3 ba1 dian3 kai1 hui4"
    what, _ = read_report({"pinyin": routine, "alternatives": [{"pinyin": FIGHT_AT_STREET}, {"pinyin": routine}]},
                          load_lexicon(), index)
    assert (what.type, what.needs_confirmation) == ("fight", True)  # not dispatched, not silent either
    what, _ = read_report({"pinyin": routine, "alternatives": [{"pinyin": routine}, {"pinyin": "shou1 dao4"}]},
                          load_lexicon(), index)
    assert not what.is_incident and not what.needs_confirmation
