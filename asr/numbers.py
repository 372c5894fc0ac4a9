"""Arabic numbers as they are spoken on the radio, written in Chinese numerals (the canonical form of transcripts:
the jurisdiction writes its places that way, 三号楼, 二楼, and the pinyin of a numeral is its reading).

Chinese speech reads a number two ways, and the transcript must follow the speech:
- codes digit by digit, 1 said 幺 (yao1: 一 and 七 are confused over a noisy line, so radio, phone and room numbers
  use 幺): 110 -> 幺幺零, room 302室 -> 三零二室, plate 陕A12345 -> 陕A幺二三四五, 13912345678 -> 幺三九...
  A code is a run of 3 or more digits, a run with a leading zero, a run next to a Latin letter (plates, exits like
  B2 read as codes too), or a room number (before 室, 房, 号房).
- quantities as numbers (cn2an `an2cn`): 3个人 -> 三个人, 20岁 -> 二十岁, 5楼 -> 五楼, and so do 3+ digit runs
  followed by a unit (200米 -> 二百米, 150人 -> 一百五十人). Decimals, percentages and years are cn2an's too
  (1.5公里 -> 一点五公里, 2024年 -> 二零二四年: a year is read digit by digit, but with 一).
"""

from __future__ import annotations

import re

import cn2an

CODE_DIGITS = dict(zip("0123456789", "零幺二三四五六七八九", strict=True))
CODE_MIN_DIGITS = 3
ROOM_WORDS = ("室", "房", "号房")
# words after a number that make it an amount, however many digits it has
UNIT_WORDS = ("米", "公里", "千米", "元", "块", "毛", "人", "个", "名", "位", "辆", "岁", "斤", "公斤", "克", "吨",
              "分钟", "秒", "小时", "天", "多", "余", "万", "亿", "千", "百", "平", "户", "次", "台", "只", "条", "件",
              "年", "%")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DIGIT = re.compile(r"\d")
_LATIN = re.compile(r"[A-Za-z]")


def normalise_numbers(text: str, before: str = "", after: str = "") -> str:
    """`text` with its Arabic numbers in Chinese numerals, read as spoken (see the module doc). `before`/`after` are
    the neighbouring text when `text` is one recognised word (Vosk gives 302 and 室 as two words)."""
    if not _DIGIT.search(text):
        return text
    context = before + text + after
    offset = len(before)

    def spoken(match: re.Match[str]) -> str:
        start, end = match.start() + offset, match.end() + offset
        if _is_code(match.group(), context[:start], context[end:]):
            return "".join(CODE_DIGITS[d] for d in match.group())
        return match.group()  # left for cn2an below

    coded = _NUMBER.sub(spoken, text)
    return cn2an.transform(coded, "an2cn") if _DIGIT.search(coded) else coded


def _is_code(number: str, preceding: str, following: str) -> bool:
    if "." in number or following.startswith(UNIT_WORDS):
        return False
    return (following.startswith(ROOM_WORDS) or len(number) >= CODE_MIN_DIGITS
            or (len(number) > 1 and number.startswith("0"))
            or bool(_LATIN.match(preceding[-1:]) or _LATIN.match(following[:1])))
