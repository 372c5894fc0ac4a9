"""The pinyin -> characters decoder (asr/hanzi.py): ordinary sentences and radio phrases from their toned pinyin,
tolerance of the recogniser's wrong tones, keyword hints, and the on-disk cache of its index.

Sentences here are written for these tests from general usage (not from ../shared/audio or the demo calls)."""

from __future__ import annotations

import pickle

import pytest
from rapidfuzz.distance import Levenshtein

from asr import hanzi
from asr.hanzi import HanziDecoder, reading
from dispatch.vocabulary import RADIO_PHRASES, decoder_words

ORDINARY = ["今天天气很好", "我们明天去北京开会", "请你把门关上", "这个问题我们已经讨论过了", "前面路口发生了交通事故",
            "孩子找不到妈妈了", "医院门口停满了车", "周末我们一起去看电影吧", "工厂的工人已经下班了", "她正在准备期末考试"]
RADIO = ["各单位注意", "收到请回答", "请立即赶往现场", "请先期处置并保护好现场", "值班民警请回答", "请各岗位加强巡查",
         "有人在商场门口打架", "嫌疑人往北边跑了"]


@pytest.fixture(scope="module")
def plain() -> HanziDecoder:
    return HanziDecoder()


@pytest.fixture(scope="module")
def radio() -> HanziDecoder:
    return HanziDecoder(decoder_words())


def cer(pairs: list[tuple[str, str]]) -> float:
    return sum(Levenshtein.distance(ref, out) for ref, out in pairs) / sum(len(ref) for ref, _ in pairs)


def test_ordinary_sentences_from_their_toned_pinyin(plain: HanziDecoder) -> None:
    pairs = [(s, plain.decode(reading(s))) for s in ORDINARY]
    assert cer(pairs) <= 0.05, pairs
    assert plain.decode("wo3 men5 ming2 tian1 qu4 bei3 jing1 kai1 hui4") == "我们明天去北京开会"


def test_radio_phrases_need_the_radio_words(plain: HanziDecoder, radio: HanziDecoder) -> None:
    assert plain.decode("ge4 dan1 wei4 zhu4 yi4") == "个单位注意"  # 各单位 is not in jieba's dictionary
    assert radio.decode("ge4 dan1 wei4 zhu4 yi4") == "各单位注意"
    pairs = [(s, radio.decode(reading(s))) for s in RADIO]
    assert cer(pairs) <= 0.03, pairs
    assert "先期处置" in RADIO_PHRASES


def test_place_names_handed_in_are_written_as_such() -> None:
    heard = "yi2 yuan2 xiao3 qu1 you3 ren2 da3 jia4"
    assert HanziDecoder().decode(heard) == "亿元小区有人打架"
    assert HanziDecoder(["怡园小区"]).decode(heard) == "怡园小区有人打架"


def test_tones_choose_between_words_of_the_same_sound(radio: HanziDecoder) -> None:
    assert radio.decode("da4 jia1 zhu4 yi4") == "大家注意"
    assert radio.decode("you3 ren2 da3 jia4") == "有人打架"


def test_a_wrong_tone_costs_but_does_not_break_a_word(radio: HanziDecoder) -> None:
    # third-tone sandhi (hen2 hao3), a neutral tone heard toned (men2), a plain wrong tone (jing3, xian1)
    assert radio.decode("jin1 tian1 tian1 qi4 hen2 hao3") == "今天天气很好"
    assert radio.decode("wo3 men2 qu4 bei3 jing3") == "我们去北京"
    assert radio.decode("qing3 li4 ji2 gan3 wang3 xian1 chang3") == "请立即赶往现场"
    # ...while the right tones still win when they are heard
    assert radio.decode("da3 jia4") == "打架" and radio.decode("da4 jia1") == "大家"


def test_a_hint_replaces_a_misheard_run_but_not_right_words(radio: HanziDecoder) -> None:
    heard = ["fa1", "xian4", "ke3", "yuan2", "yuan2"]  # 发现可疑人员 with a syllable lost and one misheard
    assert radio.decode(heard) != "发现可疑人员"
    assert radio.decode(heard, [(2, 5, "可疑人员")]) == "发现可疑人员"
    # a keyword fired beside words that were heard right: they stay
    assert radio.decode("zhe4 jia1 fan4 dian4 de5 cai4 wei4 dao4 bu4 cuo4", [(5, 9, "被盗")]) == "这家饭店的菜味道不错"


def test_a_name_is_written_over_exactly_its_syllables(radio: HanziDecoder) -> None:
    heard = "zhong1 fang1 you4 er2 yan2 men2 kou3 you3 mo4 sheng1 ren2"  # a kindergarten's name, its head misheard
    assert not radio.decode(heard).startswith("东方幼儿园")
    assert radio.decode(heard, names=[(0, 5, "东方幼儿园")]) == "东方幼儿园门口有陌生人"
    # the rest is decoded around it, a hint cut to its side; of two names that overlap the first is kept
    assert radio.decode("fa1 xian4 ke3 yuan2 yuan2 zai4 mei3 shi2 jie1", [(2, 5, "可疑人员")],
                        names=[(7, 9, "世界"), (6, 9, "美食街")]) == "发现可疑人员在美食街"  # fmt: skip


def test_what_no_character_reads_stays_as_heard(plain: HanziDecoder) -> None:
    assert plain.decode("B chao1") == "B超"
    assert plain.decode("") == ""
    assert plain.decode([]) == ""


def test_the_index_is_shared_and_cached_on_disk(tmp_path, monkeypatch) -> None:
    first = hanzi.base_index()
    assert HanziDecoder()._index is first[0]  # every decoder shares the one index
    assert hanzi._cache_path().is_file()
    # a cache that cannot be read is built again (a small stand-in for jieba's dictionary here)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(hanzi, "_build", lambda: ({"da": "4,大,5.0", "jia": "1,家,5.0"}, 100.0))
    hanzi.base_index.cache_clear()
    try:
        path = hanzi._cache_path()
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not a pickle")
        index, total = hanzi.base_index()
        assert index == {"da": "4,大,5.0", "jia": "1,家,5.0"} and total == 100.0
        assert pickle.loads(path.read_bytes()) == (index, total)
        assert HanziDecoder().decode("da4 jia1") == "大家"
    finally:
        hanzi.base_index.cache_clear()
