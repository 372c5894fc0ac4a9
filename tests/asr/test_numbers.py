"""Numbers read as they are spoken on the radio: codes digit by digit, quantities as numbers (asr/numbers.py)."""

from __future__ import annotations

import pytest

from asr.numbers import normalise_numbers
from asr.pinyin import text_to_syllables


@pytest.mark.parametrize(("written", "spoken"), [
    ("打110报警", "打幺幺零报警"),  # cn2an alone says 一百一十
    ("3楼302室有人晕倒", "三楼三零二室有人晕倒"),  # a floor is a quantity, a room a code
    ("住1202号房", "住幺二零二号房"),
    ("12室", "幺二室"),  # a room number is a code however short
    ("车牌陕A12345", "车牌陕A幺二三四五"),  # next to a letter: a plate
    ("电话13912345678", "电话幺三九幺二三四五六七八"),
    ("坐302路公交", "坐三零二路公交"),
    ("05号岗", "零五号岗"),  # a leading zero is never a quantity
])
def test_codes_are_read_digit_by_digit(written: str, spoken: str) -> None:
    assert normalise_numbers(written) == spoken


@pytest.mark.parametrize(("written", "spoken"), [
    ("有3个人", "有三个人"),
    ("老人20岁左右", "老人二十岁左右"),
    ("东方花园3号楼5楼", "东方花园三号楼五楼"),
    ("往前200米", "往前二百米"),  # 3 digits, but a distance
    ("聚集了150人", "聚集了一百五十人"),
    ("120多人", "一百二十多人"),
    ("1.5公里", "一点五公里"),
    ("10点30分", "十点三十分"),
    ("2024年", "二零二四年"),  # a year: cn2an reads it digit by digit, with 一
    ("三号楼二楼", "三号楼二楼"),
    ("五金市场", "五金市场"),  # cn2an's other direction would make this 5金市场
])
def test_quantities_are_read_as_numbers(written: str, spoken: str) -> None:
    assert normalise_numbers(written) == spoken


def test_the_pinyin_of_a_code_is_its_reading() -> None:
    assert text_to_syllables("打110") == ["da3", "yao1", "yao1", "ling2"]
    assert text_to_syllables("302室") == ["san1", "ling2", "er4", "shi4"]
    assert text_to_syllables("3个人") == ["san1", "ge4", "ren2"]
