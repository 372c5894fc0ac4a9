"""How the on-board recogniser mishears Mandarin over a radio, learned from what it heard rather than guessed.

`dispatch/corpus/heard/heard.tsv` (made by bench/hear_corpus.py) holds corpus sentences beside the toned pinyin the
recogniser gave for them, rendered in several voices and played over a radio at several noise levels. From these
pairs, aligned syllable by syllable, `RadioChannel` learns how often a syllable is lost, replaced or added, and what
a replaced syllable's initial and final become (zh->z, in->ing, but also what no list would name: p->t, an->a). The
type model trains on every corpus sentence passed through this channel (dispatch/type_model.py), so it has seen the
errors the recogniser makes, at their real rates, on 21 000 sentences rather than on the few hundred rendered.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from dispatch.phonetic import Syllable, split

HEARD_FILE = Path(__file__).with_name("corpus") / "heard" / "heard.tsv"
_COLUMNS = ("type", "voice", "condition", "said", "heard")


@dataclass(slots=True, frozen=True)
class HeardRow:
    """One corpus sentence (`said`) as the recogniser heard it (`heard`: toned pinyin) in `voice` under `condition`
    ("clean" or an SNR in dB)."""

    type: str
    voice: str
    condition: str
    said: str
    heard: str

    def syllables(self) -> tuple[list[str], list[str]]:
        """(said, heard) as toneless syllables, ready to `align`."""
        from dispatch.phonetic import text_syllables

        return [s.base for s in text_syllables(self.said) if s], [h.rstrip("012345") for h in self.heard.split()]


def write_heard(path: Path, rows: Iterable[HeardRow], made_by: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# made by {made_by}: corpus sentences rendered by Kokoro, played over radio_degrade.py and recognised by",
             "# the on-board model (the recogniser alone, no keywords); not to be edited by hand",
             "\t".join(_COLUMNS)]
    lines += ["\t".join((r.type, r.voice, r.condition, r.said, r.heard)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_heard(path: Path = HEARD_FILE) -> list[HeardRow]:
    """The heard rows, or [] when the file is missing (the model then trains on the corpus alone)."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line or line.startswith("#") or line.startswith("type\t"):
            continue
        cells = line.split("\t")
        if len(cells) != len(_COLUMNS):
            raise ValueError(f"{path}:{n}: want {len(_COLUMNS)} TAB-separated columns")
        rows.append(HeardRow(*cells))
    return rows


# --- alignment -------------------------------------------------------------------------------------------------------


def _cost(said: str, heard: str) -> float:
    if said == heard:
        return 0.0
    (si, sf), (hi, hf) = split(said), split(heard)
    # half right is nearer than nothing alike; nothing alike is still one replacement rather than a loss and an
    # addition (2), but two in a row are a loss and an addition around a right one
    return 0.6 if si == hi or sf == hf else 1.4


def align(said: Sequence[str], heard: Sequence[str]) -> list[tuple[str | None, str | None]]:
    """Toneless syllables paired by least edit cost: (s, h) a syllable heard as h (h == s when right), (s, None) lost,
    (None, h) one the recogniser added."""
    n, m = len(said), len(heard)
    d = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        d[i][0] = float(i)
    for j in range(1, m + 1):
        d[0][j] = float(j)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j - 1] + _cost(said[i - 1], heard[j - 1]), d[i - 1][j] + 1, d[i][j - 1] + 1)
    pairs: list[tuple[str | None, str | None]] = []
    i, j = n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + _cost(said[i - 1], heard[j - 1]):
            pairs.append((said[i - 1], heard[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            pairs.append((said[i - 1], None))
            i -= 1
        else:
            pairs.append((None, heard[j - 1]))
            j -= 1
    return pairs[::-1]


# --- the channel -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RadioChannel:
    """Syllable error rates and the distributions of what a replaced initial or final becomes, for one condition."""

    syllables: int = 0
    lost: int = 0
    replaced: int = 0
    added: int = 0
    initials: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    finals: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    additions: Counter[str] = field(default_factory=Counter)
    valid: set[str] = field(default_factory=set)  # every syllable seen, said or heard: what a replacement may be

    @classmethod
    def learn(cls, pairs: Iterable[tuple[Sequence[str], Sequence[str]]]) -> RadioChannel:
        """From (said, heard) toneless syllable sequences."""
        channel = cls()
        for said, heard in pairs:
            channel.valid.update(said)
            channel.valid.update(heard)
            for s, h in align(said, heard):
                if s is None:
                    channel.added += 1
                    channel.additions[h] += 1
                    continue
                channel.syllables += 1
                if h is None:
                    channel.lost += 1
                elif h != s:
                    channel.replaced += 1
                    (si, sf), (hi, hf) = split(s), split(h)
                    channel.initials[si][hi] += 1
                    channel.finals[sf][hf] += 1
        return channel

    def rates(self) -> tuple[float, float, float]:
        """(lost, replaced, added) per syllable said."""
        n = max(self.syllables, 1)
        return self.lost / n, self.replaced / n, self.added / n

    def hear(self, syllables: Sequence[Syllable | None], rng: random.Random) -> list[Syllable]:
        """The syllables as this channel would deliver them, toneless: each lost, replaced or kept at the learned rates,
        a syllable added now and then. A replacement draws the initial and the final from what the said ones were
        heard as (each keeps itself when it never was replaced), and keeps the whole syllable when the draw is not
        a syllable of the language."""
        lost, replaced, added = self.rates()
        out = []
        for s in syllables:
            if s is None:
                continue
            if self.additions and rng.random() < added:
                out.append(Syllable(_draw(self.additions, rng), None))
            roll = rng.random()
            if roll < lost:
                continue
            base = s.base
            if roll < lost + replaced:
                ini, fin = split(base)
                new = _draw(self.initials.get(ini), rng, ini) + _draw(self.finals.get(fin), rng, fin)
                base = new if new in self.valid else base
            out.append(Syllable(base, None))
        return out


def _draw(counts: Counter[str] | None, rng: random.Random, default: str = "") -> str:
    if not counts:
        return default
    return rng.choices(list(counts), weights=list(counts.values()))[0]


def learn_channels(rows: Sequence[HeardRow]) -> dict[str, RadioChannel]:
    """One channel per condition of the heard rows ("clean", "20", ...)."""
    by_condition: dict[str, list[tuple[list[str], list[str]]]] = defaultdict(list)
    for row in rows:
        by_condition[row.condition].append(row.syllables())
    return {condition: RadioChannel.learn(pairs) for condition, pairs in by_condition.items()}


# --- what the recogniser hears alike ----------------------------------------------------------------------------------

ALIKE_CONDITIONS = ("20 dB", "10 dB")  # radio as it mostly is; at 5 dB nearly anything becomes anything
ALIKE_MIN_RATE = 0.03  # heard so in at least 3 % of the said part's syllables ...
ALIKE_MIN_COUNT = 10  # ... and at least this often: rarer pairs are chance


@dataclass(slots=True, frozen=True)
class HeardAlike:
    """Parts of a syllable the recogniser often hears as another while hearing the rest right: (said, heard) initials
    (c->t, q->j, l->d) and finals (uo->u, ie->i, in->ing). A name heard with one of these is as near as with an accent
    confusion (dispatch/phonetic.heard_similarity)."""

    initials: frozenset[tuple[str, str]]
    finals: frozenset[tuple[str, str]]


def heard_alike(rows: Iterable[HeardRow], min_rate: float = ALIKE_MIN_RATE, min_count: int = ALIKE_MIN_COUNT,
                conditions: Sequence[str] = ALIKE_CONDITIONS) -> HeardAlike:
    said_initials: Counter[str] = Counter()
    said_finals: Counter[str] = Counter()
    initials: Counter[tuple[str, str]] = Counter()
    finals: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if row.condition not in conditions:
            continue
        for s, h in align(*row.syllables()):
            if s is None or h is None:
                continue
            (si, sf), (hi, hf) = split(s), split(h)
            said_initials[si] += 1
            said_finals[sf] += 1
            if sf == hf and si != hi:
                initials[si, hi] += 1
            elif si == hi and sf != hf:
                finals[sf, hf] += 1

    def frequent(pairs: Counter[tuple[str, str]], said: Counter[str]) -> frozenset[tuple[str, str]]:
        return frozenset(p for p, n in pairs.items() if n >= min_count and n >= min_rate * said[p[0]])

    return HeardAlike(frequent(initials, said_initials), frequent(finals, said_finals))


@lru_cache(maxsize=1)
def learned_alike() -> HeardAlike:
    """What the on-board recogniser hears alike, learned from the heard corpus (empty when it is missing)."""
    return heard_alike(read_heard())
