"""The language's words: jieba's dictionary with its word frequencies, loaded once (quietly) and shared by whoever
asks how common a word is: the keyword spotter's choice of boosts (asr/keywords.py) and the dispatcher's matching
(dispatch/phonetic.py and its users)."""

from __future__ import annotations

import logging
from functools import lru_cache


@lru_cache(maxsize=1)
def jieba_freq() -> dict[str, int]:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.dt.initialize()
    return jieba.dt.FREQ  # word -> frequency (a word's prefixes are listed with 0)


def word_freq(word: str) -> int:
    """How common a word is in the language (jieba's dictionary frequency; 0 for no word)."""
    return jieba_freq().get(word, 0)


def common_words(min_freq: int, length: int | None = None) -> list[str]:
    """The dictionary's words at least `min_freq` common (of `length` characters, if given)."""
    return [w for w, f in jieba_freq().items() if f >= min_freq and (length is None or len(w) == length)]


@lru_cache(maxsize=256)
def jieba_words(text: str) -> tuple[str, ...]:
    """`text` cut into jieba's dictionary words (no HMM guesses at unknown words), jieba initialised quietly."""
    import jieba

    word_freq("")
    return tuple(jieba.cut(text, HMM=False))
