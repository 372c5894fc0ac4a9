"""Keyword lists for the spotter (from the demo jurisdiction and incident terms) and the pinyin helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr.keywords import (
    DISTINCTIVE_TWO_SYLLABLES,
    TUNED_BY_SYLLABLES,
    KeywordEntry,
    jurisdiction_keywords,
    keyword_file,
    labels_in_text,
    refs_in_text,
    sounds_like_common_word,
    tone_variants,
    tuned,
)
from asr.pinyin import syllable_errors, text_to_syllables, toneless_unit, units_to_syllables


@pytest.fixture(scope="module")
def tokens(sherpa_model: Path) -> Path:
    return sherpa_model / "tokens.txt"


def test_keyword_file_lines_keys_boosts_and_variants(tokens: Path) -> None:
    entries = [
        KeywordEntry("美食街", "meishijie", 1.5, 0.2),
        KeywordEntry("海宁皮革城", "haining", units="h ěn n ín p í g é ch éng"),  # a tone variant, spelled out
        KeywordEntry("海宁皮革城", "haining"),
        KeywordEntry("夜市", "gongyuan-yeshi"),
        KeywordEntry("夜市", "other-market"),  # the same sounds for another place: the first keeps them
    ]
    contents, by_key = keyword_file(entries, tokens)
    assert contents.splitlines() == [
        "m ěi sh í j iē :1.5 #0.2 @k0",
        "h ěn n ín p í g é ch éng @k1",
        "h ǎi n íng p í g é ch éng @k1",
        "y è sh ì @k2",
    ]
    assert {k: (e.label, e.ref) for k, e in by_key.items()} == {
        "k0": ("美食街", "meishijie"), "k1": ("海宁皮革城", "haining"), "k2": ("夜市", "gongyuan-yeshi")}
    assert by_key["k0"].units == "m ěi sh í j iē"


def test_unspellable_labels_are_left_out(tokens: Path) -> None:
    contents, by_key = keyword_file([KeywordEntry("😀", "x"), KeywordEntry("夜市", "y")], tokens)
    assert contents == "y è sh ì @k0\n" and list(by_key) == ["k0"]


def test_jurisdiction_keywords_from_the_demo_yaml(demo_dir: Path) -> None:
    entries = jurisdiction_keywords(demo_dir / "jurisdiction.yaml", {"打架": "fight", "夜市": "market-ish"}, tune=False)
    by_label = {e.label: e for e in entries}
    assert by_label["美食街"].ref == "meishijie" and by_label["夜宵街"].ref == "meishijie"  # name and alias
    assert by_label["西光广场"].ref == "xiguang-guangchang"  # a place's own name beats another place's alias
    assert by_label["打架"].ref == "incident:fight"
    assert by_label["夜市"].ref == "gongyuan-yeshi"  # a place name is not overridden by an incident term
    assert len(by_label) == len(entries)  # one entry per label
    assert all(e.boost is None and e.threshold is None for e in entries)
    assert len({e.ref for e in entries if not e.ref.startswith("incident:")}) == 47  # every place


def test_tuning_follows_syllable_count() -> None:
    two, three, five = (tuned(KeywordEntry(label, "r")) for label in ("夜市", "美食街", "东郊农贸市场"))
    assert (two.boost, two.threshold) == (1.0, 0.25)
    assert three.boost > two.boost and three.threshold < two.threshold
    assert five.boost >= three.boost and five.threshold <= three.threshold


def test_two_syllable_incident_terms_are_eased_unless_they_sound_like_a_common_word() -> None:
    assert sounds_like_common_word("打架") and sounds_like_common_word("可疑")  # 大家, 可以
    assert not sounds_like_common_word("被偷") and not sounds_like_common_word("家暴")
    eased, kept = tuned(KeywordEntry("家暴", "incident:domestic")), tuned(KeywordEntry("打架", "incident:fight"))
    assert (eased.boost, eased.threshold) == DISTINCTIVE_TWO_SYLLABLES
    assert (kept.boost, kept.threshold) == TUNED_BY_SYLLABLES[2]
    place = tuned(KeywordEntry("夜市", "gongyuan-yeshi"))  # places are never eased at two syllables
    assert (place.boost, place.threshold) == TUNED_BY_SYLLABLES[2]


def test_tone_variants_from_sandhi_and_neutral_tones() -> None:
    assert tone_variants("起火") == ["q í h uǒ"]  # third-tone sandhi
    assert "x ìng f ú l i x iǎo q ū" in tone_variants("幸福里小区")  # 里 may be neutral
    assert tone_variants("被偷") == [] and tone_variants("夜") == []


def test_tuned_keyword_list_carries_tone_variant_lines(demo_dir: Path, tokens: Path) -> None:
    entries = jurisdiction_keywords(demo_dir / "jurisdiction.yaml", {"起火": "fire"})
    fire = [e for e in entries if e.label == "起火"]
    assert [e.units for e in fire] == [None, "q í h uǒ"]
    contents, _ = keyword_file(entries, tokens)
    lines = [line for line in contents.splitlines() if line.startswith(("q ǐ h uǒ", "q í h uǒ"))]
    assert len(lines) == 2 and len({line.split("@")[1] for line in lines}) == 1  # one key: reported as one label
    assert keyword_file([KeywordEntry("起火", "incident:fire", units="q xyz")], tokens)[0] == ""  # unknown units


def test_refs_in_text_prefers_the_longest_label() -> None:
    entries = [KeywordEntry("公园北路", "street"), KeywordEntry("公园北路夜市", "market"), KeywordEntry("夜市", "market")]
    assert refs_in_text("公园北路夜市两桌客人喝多了", entries) == {"market"}
    assert refs_in_text("公园北路和夜市", entries) == {"street", "market"}
    assert refs_in_text("收到，明白", entries) == set()
    assert labels_in_text("夜市在公园北路夜市旁，公园北路", entries) == [
        (0, "夜市", "market"), (3, "公园北路夜市", "market"), (11, "公园北路", "street")]


def test_units_to_syllables_joins_initials_and_finals() -> None:
    units = ["d", "uō", "ōu", "n", "ǚ", "j", "ué", "m", "en", "q", "x", "iè", "B"]
    syllables = units_to_syllables(units, [i * 0.1 for i in range(len(units))], [-0.1] * len(units))
    # a final alone (殴), ü after n, ü written u after j, neutral tone 5, a stray initial dropped, a letter
    assert [s.text for s in syllables] == ["duo1", "ou1", "nv3", "jue2", "men5", "xie4", "B"]
    assert syllables[0].start == 0.0 and syllables[0].end == 0.2  # ends where the next syllable starts
    assert syllables[-1].end == pytest.approx(1.2 + 0.25)
    assert 0.9 < syllables[0].conf < 0.91


def test_reference_text_to_syllables_and_errors() -> None:
    assert text_to_syllables("万寿路地铁站B口有3个人，女士们") == [
        "wan4", "shou4", "lu4", "di4", "tie3", "zhan4", "B", "kou3", "you3", "san1", "ge4", "ren2", "nv3", "shi4", "men5"]
    assert syllable_errors(["mei3", "shi2", "jie1"], ["mei2", "shi2"]) == 2
    assert syllable_errors(["mei3", "shi2", "jie1"], ["mei2", "shi2"], tones=False) == 1
    assert toneless_unit("iǎn") == "ian" and toneless_unit("ǚ") == "ü" and toneless_unit("ń") == "n"
