"""The recogniser's radio channel, learned from what it heard: alignment, rates, and hearing through it."""

from __future__ import annotations

import random

import pytest

from dispatch.extract import Extractor
from dispatch.gazetteer import load_jurisdiction
from dispatch.phonetic import BOTH_HEARD_ALIKE, HEARD_ALIKE, heard_similarity, similarity, text_syllables
from dispatch.radio_channel import (
    HEARD_FILE,
    HeardRow,
    RadioChannel,
    align,
    heard_alike,
    learn_channels,
    learned_alike,
    read_heard,
    write_heard,
)
from tests.conftest import REPO

JURISDICTION = REPO / "config" / "jurisdiction.yaml"


def syl(line: str) -> list[str]:
    return line.split()


def test_alignment_pairs_replacements_losses_and_additions() -> None:
    said = syl("mei shi jie you ren da jia")
    heard = syl("mei si jie ren da da jia")  # shi -> si, you lost, da said once heard twice
    pairs = align(said, heard)
    assert ("shi", "si") in pairs and ("you", None) in pairs
    assert sum(1 for s, h in pairs if s is None) == 1
    assert [s for s, _ in pairs if s is not None] == said and [h for _, h in pairs if h is not None] == heard


def test_a_channel_learns_rates_and_what_sounds_become() -> None:
    pairs = [(syl("zhong xue men kou"), syl("zong xue men")), (syl("zhi dao le"), syl("zi dao le a"))]
    channel = RadioChannel.learn(pairs)
    lost, replaced, added = channel.rates()
    assert (channel.syllables, channel.lost, channel.replaced, channel.added) == (7, 1, 2, 1)
    assert (lost, replaced, added) == pytest.approx((1 / 7, 2 / 7, 1 / 7))
    assert channel.initials["zh"] == {"z": 2}


def test_hearing_through_a_channel_is_reproducible_toneless_and_made_of_syllables_it_knows() -> None:
    channel = RadioChannel.learn([(syl("zhong xue men kou da jia"), syl("zong xue men gou da jia"))] * 3)
    said = text_syllables("中学门口打架")
    first = channel.hear(said, random.Random(3))
    assert first == channel.hear(said, random.Random(3))
    assert all(s.tone is None and s.base in channel.valid for s in first)
    heard = [" ".join(s.base for s in channel.hear(said, random.Random(seed))) for seed in range(50)]
    assert "zhong xue men kou da jia" in heard and any("zong" in h or "gou" in h for h in heard)


def test_the_heard_file_round_trips_and_a_missing_one_is_empty(tmp_path) -> None:
    rows = [HeardRow("fight", "zm_yunjian", "10 dB", "美食街有人打架", "mei3 si4 jie1 you3 ren2 da3 jia4")]
    write_heard(tmp_path / "heard.tsv", rows, "a test")
    assert read_heard(tmp_path / "heard.tsv") == rows
    assert read_heard(tmp_path / "absent.tsv") == []
    (tmp_path / "bad.tsv").write_text("fight\tonly two\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:1"):
        read_heard(tmp_path / "bad.tsv")


def test_the_shipped_heard_corpus_gives_a_channel_per_condition_noisier_as_the_noise_grows() -> None:
    channels = learn_channels(read_heard(HEARD_FILE))
    assert set(channels) >= {"clean", "20 dB", "10 dB", "5 dB"}
    errors = [sum(channels[c].rates()) for c in ("clean", "20 dB", "10 dB", "5 dB")]
    assert errors == sorted(errors) and errors[0] < 0.1 < errors[-1]


def test_parts_heard_alike_are_the_frequent_one_part_confusions() -> None:
    said, heard = "强盗抢钱", "jiang2 dao4 jiang3 qian2"  # q heard as j twice, the final kept: alike
    rows = [HeardRow("robbery", "v", "10 dB", said, heard)] * 5
    rows += [HeardRow("robbery", "v", "10 dB", "打人", "ta3 ren2")] * 3  # d -> t: 3 times, under min_count 10
    rows += [HeardRow("robbery", "v", "10 dB", "偷包", "dou1 fan1")] * 20  # t -> d alone; bao -> fan: both parts
    rows += [HeardRow("robbery", "v", "clean", "快跑", "tuai4 pao3")] * 20  # not a radio condition
    alike = heard_alike(rows)
    assert ("q", "j") in alike.initials and ("d", "t") not in alike.initials and ("k", "t") not in alike.initials
    assert ("t", "d") in alike.initials and ("b", "f") not in alike.initials and ("ao", "an") not in alike.finals
    assert heard_alike(rows, min_rate=0.9).initials == frozenset({("t", "d")})  # 20 of 20 t's; q -> j 10 of 15


def test_the_shipped_corpus_teaches_what_the_recogniser_hears_alike() -> None:
    alike = learned_alike()
    assert len(alike.initials) >= 3 and len(alike.finals) >= 3
    said_initial, heard_initial = sorted(alike.initials)[0]
    said, heard = said_initial + "ao", heard_initial + "ao"
    assert similarity(said, heard) < HEARD_ALIKE == heard_similarity(said, heard)
    assert heard_similarity("mei", "mei") == 1.0 and heard_similarity("mei", "dan") == 0.0


def test_a_syllable_whose_initial_and_final_were_both_misheard_the_usual_ways_is_near() -> None:
    """兴庆家园 heard over a radio as "jing1 ji4 jia1 yuan2": qing as ji, q heard as j and the nasal lost (both
    learned from the recogniser); as near as a syllable whose onset alone was kept, and the place is found."""
    alike = learned_alike()
    assert ("q", "j") in alike.initials and ("in", "i") in alike.finals  # what the shipped corpus teaches
    assert similarity("qing", "ji") == 0.0 and heard_similarity("qing", "ji") == BOTH_HEARD_ALIKE
    assert heard_similarity("qing", "ma") == 0.0 and heard_similarity("qing", "jiu") < BOTH_HEARD_ALIKE
    where = Extractor(load_jurisdiction(JURISDICTION))({"pinyin": "jing1 ji4 jia1 yuan2 er4 hao4 lou2 men2 kou3"})["place"]
    assert where is not None and where["name"] == "兴庆家园"
