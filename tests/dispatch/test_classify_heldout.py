"""Classification measured on reports it was not written from (tests/dispatch/heldout_calls.py), as characters and as
the pinyin the on-board engine gives, and the ways the recogniser mishears incident words on a radio."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch.classify import classify, classify_transcript, read_transcript
from dispatch.phonetic import text_syllables
from tests.dispatch.chatter import ROUTINE_CHATTER
from tests.dispatch.heldout_calls import HELDOUT_CALLS

INCIDENT_TYPES = {"fight", "theft", "robbery", "weapon", "fire", "medical", "missing", "suspicious", "dispute", "domestic",
                  "gathering", "traffic", "noise", "fraud", "other"}


def as_input(sentence: str, form: str) -> str:
    """The sentence as written, as tone-numbered pinyin (what the on-board engine gives) or as plain pinyin."""
    if form == "characters":
        return sentence
    syllables = [s for s in text_syllables(sentence) if s is not None]
    return " ".join(f"{s.base}{s.tone}" if form == "toned" else s.base for s in syllables)


def type_of(said: str) -> str:
    return (classify(pinyin=said) if said.isascii() else classify(said)).type


def words_type_of(said: str) -> str:
    """The lexicon's own reading (before the type model has its say): what its matching rules decide."""
    return read_transcript({"pinyin": said} if said.isascii() else {"text": said}).by_words.type


@pytest.mark.parametrize(("form", "at_least"), [("characters", 0.9), ("toned", 0.9), ("plain", 0.85)])
def test_accuracy_on_held_out_reports(form: str, at_least: float) -> None:
    misses = [(s, want, got) for s, want in HELDOUT_CALLS if (got := type_of(as_input(s, form))) != want]
    accuracy = 1 - len(misses) / len(HELDOUT_CALLS)
    assert accuracy >= at_least, f"{form}: {accuracy:.1%}, misses {misses}"


def test_held_out_set_covers_every_type() -> None:
    assert {want for _, want in HELDOUT_CALLS} == INCIDENT_TYPES
    assert len(HELDOUT_CALLS) >= 5 * len(INCIDENT_TYPES)


@pytest.mark.parametrize("form", ["characters", "toned", "plain"])
def test_routine_chatter_stays_none_in_every_form(form: str) -> None:
    raised = [(s, got) for s in ROUTINE_CHATTER if (got := type_of(as_input(s, form))) != "none"]
    assert not raised


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("有人抢了她的手机就跑", "robbery"),
        ("一个男的手里拿着刀", "weapon"),
        ("有人从楼梯上摔下来了", "medical"),
        ("工人从架子上掉下来了", "medical"),
        ("老太太摔了一跤", "medical"),
        ("孩子跟家人走散了", "missing"),
        ("有人在店里砸东西", "dispute"),
        ("他被人用砖头砸破了头", "weapon"),  # hit with a brick: an attack with an implement (持械), the injury raising it
        ("有人专门骗老人", "fraud"),
        ("有人在卖假药", "fraud"),
        ("有人跳河了", "medical"),
        ("一个女的要跳楼", "medical"),
        ("有人在吸毒", "suspicious"),
        ("楼道里有煤气味", "fire"),
        ("有人往楼下扔东西", "other"),
        ("有个男的在偷看", "suspicious"),
        ("喝醉的人在砸车", "other"),  # being drunk is not the incident; the damage is
        ("病人家属打医生", "fight"),
        ("十字路口出车祸，有人受伤", "traffic"),  # the accident is the incident; the injury raises its priority
        ("广告牌掉下来了", "other"),
    ],
)
def test_common_wordings(said: str, expected: str) -> None:
    assert [type_of(as_input(said, form)) for form in ("characters", "toned", "plain")] == [expected] * 3


def test_drunk_words_only_decide_alone() -> None:
    assert classify("有人喝醉了躺在路边").type == "medical"
    assert classify("喝醉了在饭店耍酒疯").type == "dispute"


def test_a_word_read_like_a_commoner_word_needs_its_characters() -> None:
    assert type_of("zi4 ran2 er2 ran2") == "none"  # 自然而然, not 自燃
    assert type_of("仓库里的货物自燃了") == "fire"
    assert type_of("ta1 zou3 shang4 lou2 le5") == "none"  # 走上, not 走散 (accent-folded alike)
    assert type_of("hai2 zi5 zou3 san4 le5") == "missing"  # ... its very syllables still count


def test_onset_kept_and_one_syllable_lost_in_long_words() -> None:
    assert type_of("er4 lou2 you3 ren2 tong1 shou3 ji1") == "theft"  # 偷手机, the tail of tou lost
    assert type_of("hai2 zi5 jiao4 bu2 dao4 jia1 zhang3 le5") == "missing"  # 找不到家长, its first syllable garbled
    assert type_of("ta1 men5 tong1 guo4 shou3 ji1 lian2 xi4") == "none"  # 通过手机联系: words between


def test_fricative_onsets_confused_on_radio() -> None:
    assert type_of("wei2 qiang2 wai4 you3 ren2 san1 qiang2") == "suspicious"  # 翻墙 heard "san qiang"
    assert type_of("you3 ren2 xiang3 bao1 wang3 bei3 pao3") == "robbery"  # 抢包, the burst of q lost
    assert words_type_of("you3 ren2 san3 qiang1") == "none"  # the tones must be the word's
    assert words_type_of("you3 ren2 san1 qiang1") == "none"  # ... and one syllable must be exact


def spoken(pinyin: str, keywords: list[tuple[str, str, int, int, float]]) -> dict[str, Any]:
    """A pinyin-only transcript with one word per syllable (0.3 s each) and spotted keywords over syllable spans."""
    syllables = pinyin.split()
    return {
        "text": "",
        "pinyin": pinyin,
        "words": [{"text": s, "start": i * 0.3, "end": i * 0.3 + 0.3, "conf": 1.0} for i, s in enumerate(syllables)],
        "keywords": [{"label": label, "ref": ref, "start": a * 0.3, "end": b * 0.3, "score": score}
                     for label, ref, a, b, score in keywords],
    }


def test_spotted_word_the_recogniser_heard_otherwise_is_a_guess() -> None:
    # 楼上漏水，邻居吵起来了: the spotter took 漏水 for 落水, the recogniser heard "lou" (uo heard as u would be
    # near: the recogniser hears them alike, dispatch/radio_channel.learned_alike)
    pinyin = "lou2 shang4 lou4 shui3 lin2 ju1 chao3 qi3 lai2 le5"
    heard = spoken(pinyin, [("落水", "incident:medical", 2, 4, 0.75), ("吵起来了", "incident:dispute", 6, 10, 0.9)])
    assert classify_transcript(heard).type == "dispute"
    agreeing = spoken("you3 ren2 luo4 shui3 le5", [("落水", "incident:medical", 2, 4, 0.75)])
    assert classify_transcript(agreeing).type == "medical"
