"""The recogniser's radio channel, learned from what it heard: alignment, rates, and hearing through it."""

from __future__ import annotations

import random

import pytest

from dispatch.phonetic import text_syllables
from dispatch.radio_channel import HEARD_FILE, HeardRow, RadioChannel, align, learn_channels, read_heard, write_heard


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
