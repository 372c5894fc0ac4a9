"""Merging engines' transcripts: text and words from the text engine, keywords from the spotter."""

from __future__ import annotations

import pytest

from asr.combine import combine
from asr.transcript import Keyword, Transcript, Word

VOSK = Transcript(text="东方花园三号楼有家暴", pinyin="dong1 fang1 hua1 yuan2 san1 hao4 lou2 you3 jia1 bao4",
                  words=(Word("东方", 0.1, 0.4, 0.9), Word("花园", 0.4, 0.8, 0.7)), engine="vosk", conf=0.8)
SHERPA = Transcript(text="", pinyin="dong1 fang1 hua1 yuan2 san1 hao4 lou2",
                    words=(Word("dong1", 0.1, 0.2, 0.95),),
                    keywords=(Keyword("家暴", "incident:domestic", 1.2, 1.5, 0.9),
                              Keyword("东方花园", "dongfang-huayuan", 0.1, 0.8, 1.0)),
                    engine="sherpa", conf=0.9)


def test_text_and_words_from_vosk_keywords_from_sherpa() -> None:
    merged = combine([VOSK, SHERPA])
    assert (merged.text, merged.pinyin, merged.words, merged.conf) == (VOSK.text, VOSK.pinyin, VOSK.words, VOSK.conf)
    assert [k.ref for k in merged.keywords] == ["dongfang-huayuan", "incident:domestic"]  # in time order
    assert merged.engine == "vosk+sherpa" and not merged.partial
    assert merged.extra["pinyin_by_engine"] == {"vosk": VOSK.pinyin, "sherpa": SHERPA.pinyin}


def test_sherpa_gives_pinyin_words_and_conf_when_vosk_heard_nothing() -> None:
    merged = combine([Transcript(text="", pinyin="", engine="vosk"), SHERPA])
    assert (merged.text, merged.pinyin, merged.words, merged.conf) == ("", SHERPA.pinyin, SHERPA.words, SHERPA.conf)
    assert len(merged.keywords) == 2


def test_text_without_han_characters_takes_the_other_engines_pinyin() -> None:
    korean = Transcript(text="안녕하세요", pinyin="", words=(Word("안녕하세요", 0.0, 1.1, 1.0),), engine="vosk", conf=1.0)
    merged = combine([korean, SHERPA])
    assert (merged.text, merged.pinyin) == ("안녕하세요", SHERPA.pinyin)


def test_one_engine_passes_through_and_partial_is_kept() -> None:
    assert combine([SHERPA]) is SHERPA
    partial = Transcript(text="东方", pinyin="dong1 fang1", engine="vosk", partial=True)
    assert combine([partial, SHERPA]).partial
    with pytest.raises(ValueError):
        combine([])


def test_readable_is_the_text_engines_else_the_decoded_characters() -> None:
    vosk = Transcript(text=VOSK.text, pinyin=VOSK.pinyin, engine="vosk", readable=VOSK.text)
    sherpa = Transcript(text="", pinyin=SHERPA.pinyin, engine="sherpa", readable="东方花园三号楼")
    assert combine([vosk, sherpa]).readable == VOSK.text
    assert combine([Transcript(text="", pinyin="", engine="vosk"), sherpa]).readable == "东方花园三号楼"
    assert combine([vosk, sherpa]).shown == VOSK.text and Transcript("", "shou1 dao4").shown == "shou1 dao4"


def test_alternative_hearings_are_kept_from_every_engine_and_survive_a_round_trip() -> None:
    slowed = Transcript(text="", pinyin="dong1 fang1 hua1 yuan2", engine="sherpa",
                        keywords=(Keyword("东方花园", "dongfang-huayuan", 0.1, 0.8, 1.0),))
    merged = combine([VOSK, Transcript(text="", pinyin=SHERPA.pinyin, engine="sherpa", alternatives=(slowed,))])
    assert merged.alternatives == (slowed,)
    again = Transcript.from_dict(merged.to_dict())
    assert again.alternatives == (slowed,) and again.alternatives[0].keywords[0].ref == "dongfang-huayuan"
    assert Transcript.from_dict({"pinyin": "a1"}).alternatives == ()  # rows stored before alternatives existed
