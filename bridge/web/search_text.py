"""What the transcript search indexes and how a query becomes a match expression; pure logic, no I/O, the same for
both engines (SQLite's FTS5 in bridge.web.search, PostgreSQL's tsvector in bridge.web.search_pg), so they agree.

Chinese text is indexed as its characters and its character bigrams (打架斗殴 -> 打 架 斗 殴 打架 架斗 斗殴), the
usual CJK n-gram scheme: any term of two or more characters is a phrase of consecutive bigrams, so a 2-character
term is one token lookup (FTS5's trigram tokenizer cannot match fewer than 3 characters) and nothing depends on a
word segmenter guessing right on ASR output (jieba splits 打架斗殴 as one word, and it is 12x slower here).

Pronunciation is indexed as bigrams of toneless, accent-folded syllables (dispatch.phonetic.fold: zh=z, n=l,
ing=in...): "da_jia jia_dou". A Chinese query is matched both as characters and as such a syllable phrase, so a
homophone the recogniser wrote (大家 for 打架) is still found, and so is a transcript that only has pinyin (the
on-board engine's "da3 jia4"). Syllables of indexed text come from each character's most common reading (a dict
lookup: pypinyin's contextual reading costs ~1 ms a sentence); a query is read both that way and in context.

Queries are never passed to an engine as written: they are cut into tokens made only of CJK characters, ASCII letters
and digits, each quoted by the engine's `Syntax`, so match syntax (FTS5's "*", NEAR, OR; tsquery's & | ! <->), quotes,
parentheses and SQL are searched as text or dropped as punctuation.
"""

from __future__ import annotations

import html
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

from pypinyin.contrib.tone_convert import to_normal
from pypinyin.pinyin_dict import pinyin_dict

from dispatch.phonetic import fold, text_syllables

CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{CJK}]+")
_TERM = re.compile(f"[{CJK}]+|[a-z0-9]+")
_PINYIN_TOKEN = re.compile(r"([A-Za-zü:]+)[1-5]?")
MAX_QUERY_CHARS = 100
MAX_TERMS = 8
SNIPPET_CHARS = 60


class QueryError(ValueError):
    """A query that cannot be searched (empty after dropping punctuation, too long); the message says why."""


# --- syllables --------------------------------------------------------------------------------------------


@cache  # bounded by the ~40k characters pypinyin knows
def char_syllable(ch: str) -> str | None:
    """The folded toneless syllable of a character's most common reading; None for non-Chinese characters."""
    readings = pinyin_dict.get(ord(ch))
    return fold(to_normal(readings.split(",")[0]).replace("ü", "v")) if readings else None


@lru_cache(maxsize=1)
def _known_syllables() -> frozenset[str]:
    marked = {r for v in pinyin_dict.values() for r in v.split(",")}  # ~1,500 distinct readings of ~40,000 characters
    readings = {to_normal(r).replace("ü", "v") for r in marked}
    return frozenset(s for s in readings if s.isalpha() and s not in {"m", "n", "ng", "hm", "hng"})


def split_pinyin(text: str) -> list[str] | None:
    """"da jia", "da3jia4", "da'jia", "dajia" -> ["da", "jia"] (toneless, not folded); None if it is not pinyin."""
    known = _known_syllables()
    out: list[str] = []
    for chunk in re.split(r"[\s']+|(?<=[1-5])", text.lower().replace("ü", "v")):
        chunk = chunk.rstrip("12345")
        while chunk:  # longest known syllable first: "xian" is one syllable, as pinyin input methods read it
            size = next((n for n in range(min(6, len(chunk)), 0, -1) if chunk[:n] in known), 0)
            if not size:
                return None
            out.append(chunk[:size])
            chunk = chunk[size:]
    return out or None


def bigrams(tokens: Sequence[str | None], joiner: str = "_") -> list[str]:
    """Pairs of neighbours; None (punctuation, an unknown character) breaks the sequence."""
    return [f"{a}{joiner}{b}" for a, b in itertools.pairwise(tokens) if a is not None and b is not None]


# --- indexing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexedText:
    words: str  # characters and character bigrams of the text and keyword labels, ASCII words; space-separated
    pinyin: str  # syllable bigrams


def analyze(text: str, pinyin: str = "", labels: Iterable[str] = (), readable: str = "") -> IndexedText:
    """The two FTS columns of a transcript: its text, its readable characters (decoded from an on-board engine's
    pinyin) and its keyword labels as characters; the pronunciation of its text or, without text, of its pinyin
    (the syllables heard, not a reading of the decoded characters)."""
    words: list[str] = []
    for part in (text, *([readable] if readable != text else []), *labels):
        words.extend(_char_tokens(unicodedata.normalize("NFKC", part).lower()))
    if _CJK_RUN.search(text):
        syllables = [bg for run in _CJK_RUN.findall(text) for bg in bigrams([char_syllable(c) for c in run])]
    else:
        syllables = bigrams([syllable for _, _, syllable in pinyin_syllables(pinyin)])
    return IndexedText(" ".join(words), " ".join(syllables))


def pinyin_syllables(pinyin: str) -> list[tuple[int, int, str]]:
    """(start, end, folded toneless syllable) of each syllable in a pinyin string such as "da3 jia4"."""
    return [(m.start(), m.end(), fold(m[1].lower().replace("ü", "v").replace("u:", "v"))) for m in _PINYIN_TOKEN.finditer(pinyin)]


def _char_tokens(text: str) -> list[str]:
    tokens: list[str] = []
    for term in _TERM.findall(text):
        if _CJK_RUN.fullmatch(term):
            tokens.extend(term)  # unigrams first, then bigrams: a phrase of bigrams never straddles the two
            tokens.extend(bigrams(term, joiner=""))
        else:
            tokens.append(term)
    return tokens


# --- queries ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    text: str | None  # characters or an ASCII word to find as written; None for a pinyin-only term
    readings: tuple[tuple[str, ...], ...] = ()  # folded syllable sequences (2+ syllables) to find in pinyin space


@dataclass(frozen=True, slots=True)
class Syntax:
    """How one engine's full-text match language writes what a query needs: a phrase (consecutive tokens) in one of
    the two indexed fields ("words", "pinyin"), and/or of sub-expressions, and "this but not that". The tokens are
    those of `analyze`, so both engines match the same documents."""

    phrase: Callable[[str, Sequence[str]], str]
    and_: str
    or_: str
    but_not_template: str  # "{0}" the expression wanted, "{1}" the one excluded

    def all_of(self, parts: Iterable[str]) -> str:
        return self.and_.join(parts)

    def any_of(self, parts: Iterable[str]) -> str:
        return "(" + self.or_.join(parts) + ")"

    def but_not(self, wanted: str, excluded: str) -> str:
        return self.but_not_template.format(wanted, excluded)


@dataclass(frozen=True, slots=True)
class Query:
    """The terms of a query; every term must match. `expressions(syntax)` writes them in one engine's match language."""

    terms: tuple[Term, ...]

    def expressions(self, syntax: Syntax) -> tuple[str, str | None]:
        """(exact, sounds_like): `exact` finds the terms as written, `sounds_like` finds the rest that match only in
        pinyin space (None when there is nothing more to find that way)."""
        exact = syntax.all_of(_term_expression(t, syntax, exact=True) for t in self.terms)
        fuzzy = syntax.all_of(_term_expression(t, syntax, exact=False) for t in self.terms)
        return exact, (syntax.but_not(fuzzy, exact) if fuzzy != exact else None)


def parse_query(raw: str) -> Query:
    q = unicodedata.normalize("NFKC", raw).strip().lower()
    if len(q) > MAX_QUERY_CHARS:
        raise QueryError(f"query too long ({len(q)} characters, at most {MAX_QUERY_CHARS})")
    if _CJK_RUN.search(q):
        terms = [_cjk_term(t) if _CJK_RUN.fullmatch(t) else Term(t) for t in _TERM.findall(q)]
    elif re.fullmatch(r"[a-zü:1-5'\s]+", q) and (syllables := split_pinyin(q)) and len(syllables) >= 2:
        terms = [Term(None, (tuple(fold(s) for s in syllables),))]
    else:
        terms = [Term(t) for t in _TERM.findall(q)]
    if not terms:
        raise QueryError("nothing to search for: the query has no Chinese characters, letters or digits")
    if len(terms) > MAX_TERMS:
        raise QueryError(f"too many search terms ({len(terms)}, at most {MAX_TERMS})")
    return Query(tuple(terms))


def _cjk_term(text: str) -> Term:
    in_context = tuple(fold(s.base) if s else "" for s in text_syllables(text))
    per_char = tuple(char_syllable(c) or "" for c in text)
    readings = tuple(dict.fromkeys(r for r in (in_context, per_char) if len(r) >= 2 and all(r)))
    return Term(text, readings)


def _term_expression(term: Term, syntax: Syntax, *, exact: bool) -> str:
    """The term as written (characters: a phrase of their bigrams; a word), or else or also as any of its readings."""
    options = []
    if term.text is not None:
        multi_char = _CJK_RUN.fullmatch(term.text) and len(term.text) > 1
        options.append(syntax.phrase("words", bigrams(term.text, joiner="") if multi_char else [term.text]))
    if not (exact and options):
        options.extend(syntax.phrase("pinyin", bigrams(r)) for r in term.readings)
    return syntax.any_of(options)


# --- highlighting -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Highlight:
    source: str  # "text", "readable" or "pinyin": which field the marks are in
    marks: list[tuple[int, int]]  # [start, end) character offsets of matched spans in that field
    snippet: str  # HTML: the field (cropped around the first mark when long), escaped, spans in <mark>

    @property
    def matched(self) -> bool:
        return bool(self.marks)


def highlight(query: Query | None, text: str, pinyin: str, readable: str = "") -> Highlight:
    """The marks in what people read: the text, else the characters decoded from the pinyin (a match only in the
    pinyin layer is marked on the characters of the same syllables), else the pinyin itself."""
    if not _CJK_RUN.search(text) and _CJK_RUN.search(readable):
        marks = _text_marks(query, readable) if query else []
        return Highlight("readable", marks, render_snippet(readable, marks))
    if not _CJK_RUN.search(text) and pinyin.strip():
        marks = _pinyin_marks(query, pinyin) if query else []
        return Highlight("pinyin", marks, render_snippet(pinyin, marks))
    marks = _text_marks(query, text) if query else []
    return Highlight("text", marks, render_snippet(text, marks))


def _text_marks(query: Query, text: str) -> list[tuple[int, int]]:
    lowered = text.lower()
    spans = []
    syllables = [char_syllable(c) for c in text]
    for term in query.terms:
        found = [(m.start(), m.end()) for m in re.finditer(re.escape(term.text), lowered)] if term.text else []
        if not found:  # then it matched as a homophone the recogniser wrote instead
            found = [(i, i + len(r)) for r in term.readings for i in _find_runs(syllables, r)]
        spans.extend(found)
    return _merge(spans)


def _pinyin_marks(query: Query, pinyin: str) -> list[tuple[int, int]]:
    tokens = pinyin_syllables(pinyin)
    syllables = [syllable for _, _, syllable in tokens]
    spans = []
    for term in query.terms:
        for reading in term.readings:
            spans.extend((tokens[i][0], tokens[i + len(reading) - 1][1]) for i in _find_runs(syllables, reading))
    return _merge(spans)


def _find_runs(haystack: Sequence[str | None], needle: Sequence[str]) -> list[int]:
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if tuple(haystack[i:i + n]) == tuple(needle)]


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def render_snippet(source: str, marks: list[tuple[int, int]], width: int = SNIPPET_CHARS) -> str:
    """HTML-escaped `source` with each mark in <mark>...</mark>, cropped to about `width` characters around the
    first mark (with … where cut)."""
    start = 0
    if len(source) > width and marks:
        start = max(0, min(marks[0][0] - width // 3, len(source) - width))
    end = min(len(source), start + width)
    out, pos = [], start
    for m_start, m_end in marks:
        m_start, m_end = max(m_start, start), min(m_end, end)
        if m_start >= m_end:
            continue
        out.append(html.escape(source[pos:m_start]) + "<mark>" + html.escape(source[m_start:m_end]) + "</mark>")
        pos = m_end
    out.append(html.escape(source[pos:end]))
    return ("…" if start > 0 else "") + "".join(out) + ("…" if end < len(source) else "")
