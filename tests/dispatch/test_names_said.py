"""Where the places the dispatcher reads were said (dispatch/classify.names_said): the spans over which the characters
people read write a place's name (asr/sherpa_engine.SherpaEngine.write_names), in the main hearing's words."""

from __future__ import annotations

from asr.transcript import Keyword, Transcript, Word
from dispatch.classify import names_said
from dispatch.gazetteer import Jurisdiction
from dispatch.location import PlaceIndex


def heard(pinyin: str, step: float = 0.2, keywords: tuple[Keyword, ...] = (), alternatives: tuple[Transcript, ...] = ()
          ) -> Transcript:
    """An on-board engine's transcript, each syllable `step` long from the start."""
    words = tuple(Word(s, i * step, (i + 1) * step, 0.9) for i, s in enumerate(pinyin.split()))
    return Transcript(text="", pinyin=pinyin, words=words, keywords=keywords, engine="sherpa", alternatives=alternatives)


def test_a_name_heard_with_its_head_garbled_on_its_own_channel(index: PlaceIndex, jurisdiction: Jurisdiction) -> None:
    said = heard("zhong1 fang1 you4 er2 yan2 men2 kou3 you3 mo4 sheng1 ren2 pai1 zhao4")
    school = jurisdiction.channel_posts["ch-school"]  # 东方幼儿园 is one of the school guards' posts
    assert names_said(said, index, school) == [(0, 5, "东方幼儿园")]
    assert names_said(said, index) == []  # elsewhere "zhong fang" is no place: nothing is written over it


def test_a_name_another_hearing_heard_is_laid_over_the_main_hearings_syllables(index: PlaceIndex) -> None:
    # the main hearing garbled the factory's name (and named nothing); two other hearings heard it, a little apart
    other = heard("dong1 fang1 yi2 biao3 chang3 men2 kou3 you3 ren2 la1 heng2 fu2")
    later = Transcript(text="", pinyin=other.pinyin, engine="sherpa",
                       words=tuple(Word(w.text, w.start + 0.05, w.end + 0.05, w.conf) for w in other.words))
    said = heard("zhong1 fang1 yi2 diao4 chang3 men2 kou3 you3 ren2 la1 heng2 fu2", alternatives=(later, later))
    assert names_said(said, index) == [(0, 5, "东方仪表厂")]
    # one syllable more in the main hearing: no run of it is the name from end to end, so none is written
    said = heard("zhong1 fang1 yi2 ding4 yao4 chang3 men2 kou3 you3 ren2 la1 heng2 fu2", alternatives=(later, later))
    assert names_said(said, index) == []


def test_a_name_laid_over_never_takes_a_neighbouring_word(index: PlaceIndex) -> None:
    # the other hearings heard 康复路服装市场 whole; the main one lost its head in the noise: nothing is written over 在
    other = heard("ren2 zai4 kang1 fu4 lu4 fu2 zhuang1 shi4 chang3 bei4 tou1 le5")
    main = heard("ren2 zai4 fu4 lu4 fu2 zhuang1 shi4 chang3 bei4 tou1 le5")
    main = Transcript(text="", pinyin=main.pinyin, words=main.words[:2] + tuple(
        Word(w.text, w.start + 0.2, w.end + 0.2, w.conf) for w in main.words[2:]), engine="sherpa",
        alternatives=(other, other))  # fmt: skip
    assert all(lo >= 2 for lo, _, _ in names_said(main, index))
    # hearings half a syllable apart, none lost: the name goes where it sounds, not where the times round to
    early = Transcript(text="", pinyin="you3 ren2 zai4 mei3 shi2 jie1 da3 jia4", engine="sherpa", words=tuple(
        Word(w.text, w.start - 0.11, w.end - 0.11, w.conf) for w in heard("you3 ren2 zai4 mei3 shi2 jie1 da3 jia4").words))
    said = heard("you3 ren2 zai4 mei2 si4 jie1 da3 jia4", alternatives=(early, early))
    assert names_said(said, index) == [(3, 6, "美食街")]


def test_a_spotted_name_is_written_where_it_sounds_in_its_time(index: PlaceIndex) -> None:
    # the spotter's 韩森路 covers, by its time, a syllable either side of the street's name
    said = heard("chang2 le4 dong1 lu4 he2 han2 sen1 lu4 lu4 kou3 liang3 che1 gua1 ceng4",
                 keywords=(Keyword("韩森路", "hansenlu", 0.85, 1.75, 0.6),))
    assert sorted(names_said(said, index)) == [(0, 4, "长乐东路"), (5, 8, "韩森路")]


def test_characters_are_the_engines_own_writing(index: PlaceIndex) -> None:
    said = Transcript(text="没事街有人打架", pinyin="", words=(Word("没事街", 0.0, 0.6, 0.9),), engine="vosk")
    assert names_said(said, index) == []
