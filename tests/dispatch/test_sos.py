"""Emergency phrases on the radio (dispatch/sos.py): a caller's own cry for help raises an SOS, heard as characters or
as the on-board engine's toned pinyin; routine traffic, someone else's cry reported, the 53 real recordings and the
blind sets' lines (reports and routine alike: none is a caller's own SOS) do not. The SOS calls and hot microphones kept
on a box's SQLite and on central's PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bridge.db import Connection
from dispatch.announce import announcement_text
from dispatch.sos import SosCall, SosPhrases, SosStore, _HotMic
from tests.dispatch.chatter import ROUTINE_CHATTER
from tests.dispatch.test_location import tone_pinyin

BLIND = Path(__file__).with_name("blind")
PHRASES = SosPhrases()

EMERGENCIES = [
    ("救命！", "救命"),
    ("救命啊，快来人", "救命啊"),
    ("紧急求助，紧急求助，我在美食街", "紧急求助"),
    ("紧急求救，高桥市场东门", "紧急求救"),
    ("我被打了，在高桥市场东门，快来", "我被打了"),
    ("我被砍了", "我被砍了"),
    ("三号岗我被捅了", "我被捅了"),
]

NOT_AN_SOS = [
    *ROUTINE_CHATTER,
    "收到，马上过去",  # acknowledgements
    "一号岗到，二号岗到，三号岗到",  # a roll call
    "各岗位注意，如遇紧急情况请按紧急求助按钮",  # notices
    "请大家记住紧急求助电话",
    "这是他最后的救命稻草",
    "昨天我被打了一针疫苗，胳膊还疼",
    "他被打了，在美食街，快派人",  # someone else: an ordinary report (a fight), not the guard's SOS
    "三号楼两口子打起来了，女的在喊救命",  # someone else's cry, reported
    "刚才喊“救命”的是小孩在玩游戏",
    "你就叫我老王",
    "赶快叫我们上去",
    "没人喊救命，是看错了",
]


@pytest.mark.parametrize(("said", "phrase"), EMERGENCIES)
def test_a_callers_own_cry_for_help_is_heard(said: str, phrase: str) -> None:
    assert phrase in PHRASES.heard(said)
    assert phrase in PHRASES.heard(tone_pinyin(said))  # as the on-board recogniser gives it


@pytest.mark.parametrize("said", NOT_AN_SOS)
def test_routine_lines_and_reports_of_others_raise_no_sos(said: str) -> None:
    assert PHRASES.heard(said) == ()
    if not said.isascii():
        assert PHRASES.heard(tone_pinyin(said)) == ()


def test_two_syllable_phrases_need_their_tones() -> None:
    assert PHRASES.heard("jiu4 ming4") == ("救命",)
    assert PHRASES.heard("jiu3 ming2") == ()  # 九名 (nine people), as a count is read out


def test_a_sites_own_phrase_is_heard_too() -> None:
    assert SosPhrases(["快来救我"]).heard("快来救我，在三号楼") == ("快来救我",)
    assert PHRASES.heard("快来救我，在三号楼") == ()


def test_no_sos_in_the_real_recordings(shared_audio: Path) -> None:
    rows = list(csv.DictReader((shared_audio / "manifest.tsv").open(encoding="utf-8"), delimiter="\t"))
    assert len(rows) >= 50
    heard = {r["text"]: PHRASES.heard(r["text"]) or PHRASES.heard(tone_pinyin(r["text"])) for r in rows}
    assert {text: said for text, said in heard.items() if said} == {}


def test_no_sos_in_the_blind_sets() -> None:
    """Written by others, about others: reports (女的在喊救命 among them) and routine lines, none a caller's own SOS."""
    rows = [row for f in ("set_a.tsv", "set_b.tsv", "set_c.tsv")
            for row in csv.reader((BLIND / f).open(encoding="utf-8"), delimiter="\t")]  # fmt: skip
    lines = [row[-1] for row in rows if row and not row[0].startswith("#")]
    assert len(lines) >= 1400
    assert sum("救命" in line for line in lines) >= 5  # the cries reported are there
    heard = {line: PHRASES.heard(line) or PHRASES.heard(tone_pinyin(line)) for line in lines}
    assert {line: said for line, said in heard.items() if said} == {}


def test_the_spoken_call_of_an_sos_is_heard_as_no_sos() -> None:
    """The announcement on the alerted units' channels says what happened without an SOS phrase: a radio that carries
    it to another channel must not raise a second SOS there."""
    said = announcement_text(["东方仪表厂保卫科", "永定社区警长"], "万寿路花鸟市场", "sos")
    assert "紧急呼救" in said
    assert PHRASES.heard(said) == () and PHRASES.heard(tone_pinyin(said)) == ()


def test_an_sos_call_saved_again_is_the_same_row_updated_and_its_alarm_is_kept(state_db: Connection) -> None:
    store = SosStore(state_db)
    first = SosCall("INC-1", "g-1", "phone", raised_at=100.0, last_at=100.0)
    store.save(first)
    store.save(SosCall("INC-2", "channel:ch-market", "radio", raised_at=110.0, last_at=110.0))
    assert store.latest("g-1", since=50.0) == first and store.latest("g-1", since=101.0) is None
    acked = SosCall("INC-1", "g-1", "phone", 100.0, 100.0, acked_at=105.0, acked_by="op")
    store.save(acked)
    assert store.get("INC-1") == acked
    assert [c.incident_id for c in store.unacknowledged()] == ["INC-2"]
    pressed_again = SosCall("INC-1", "g-1", "phone", 100.0, last_at=120.5, presses=2)  # the alarm on again
    store.save(pressed_again)
    assert store.get("INC-1") == pressed_again
    assert [c.incident_id for c in store.unacknowledged()] == ["INC-1", "INC-2"]  # the latest first
    assert store.get("INC-none") is None


def test_hot_microphones_are_kept_with_their_ids_and_the_old_ones_forgotten(state_db: Connection) -> None:
    store = SosStore(state_db)
    old = _HotMic("INC-1", "ch-market", start=1000.0, end=1010.0)
    old.id = store.hot_mic_opened(old)
    store.hot_mic_closed(old)
    shut = _HotMic("INC-2", "ch-market", start=2000.0)
    shut.id = store.hot_mic_opened(shut)
    shut.end = 2005.5
    store.hot_mic_closed(shut)
    left_open = _HotMic("INC-2", "ch-park", start=2010.0)  # its process ended while it was open
    left_open.id = store.hot_mic_opened(left_open)
    assert 0 < old.id < shut.id < left_open.id
    assert store.hot_mics(since=0.0, longest_s=30.0) == [old, shut, _HotMic("INC-2", "ch-park", 2010.0, 2040.0, left_open.id)]
    assert [m.id for m in store.hot_mics(since=2006.0, longest_s=30.0)] == [left_open.id]  # the two closed before: gone
    assert store.hot_mics(since=0.0, longest_s=30.0)[0].id == left_open.id
