"""The blind rows of bench/dispatch_accuracy.py: place and incident type on the frozen blind sets
(tests/dispatch/blind/*.tsv), written by helpers that never saw the lexicon or the matcher.

    .venv/bin/python bench/dispatch_blind.py [SET.tsv ...] [--seeds N] [--rate P]   (default: sets A-C)

Prints figures only, never a sentence: whoever tunes the classifier reads the scores and the confusion table, not
the test material (a set read while tuning stops measuring generalisation).

Per condition (clean text; text with homophone swaps as a character recogniser writes them, same tone and any tone;
the same as tone-numbered pinyin, what the on-board engine gives; plain pinyin with accent confusions and random
syllables), over the reports: place top-1 (reports that name a place), incident type (the type decided, a
needs-confirmation guess included), decided surely (the right type without the operator's confirmation), queued
for confirmation, missed (no incident and nothing to confirm); over the routine lines: false incidents and false
confirmations. Then the per-type confusion table of the clean-text condition.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.dispatch_accuracy import garble_pinyin, homophone_table, swap_characters  # noqa: E402
from bench.machine import describe  # noqa: E402
from dispatch.extract import Extractor  # noqa: E402
from dispatch.gazetteer import load_jurisdiction  # noqa: E402
from dispatch.phonetic import text_syllables  # noqa: E402

BLIND_DIR = REPO / "tests" / "dispatch" / "blind"
# The sets that may be read while tuning (their claims are made); the newest, set_d.tsv, is held back for the next
# claim and is scored only when named.
DEVELOPMENT_SETS = tuple(BLIND_DIR / f"set_{name}.tsv" for name in "abc")
COLUMNS = ("id", "kind", "place", "type", "priority", "text")


def read_set(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    missing = set(COLUMNS) - set(rows[0] if rows else ())
    if missing:
        raise SystemExit(f"{path}: columns {sorted(missing)} missing")
    return rows


def toned_pinyin(text: str) -> str:
    return " ".join(f"{s.base}{s.tone}" for s in text_syllables(text) if s is not None)


@dataclass
class Tally:
    reports: int = 0
    named: int = 0
    place_ok: int = 0
    type_ok: int = 0
    sure_ok: int = 0
    queued: int = 0
    missed: int = 0
    routine: int = 0
    false_incidents: int = 0
    false_queued: int = 0
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, row: dict[str, str], result: dict) -> None:
        incident = result["incident"]
        got, queued = incident["type"], incident.get("needs_confirmation", False)
        if row["kind"] == "routine":
            self.routine += 1
            self.false_queued += got != "none" and queued
            self.false_incidents += got != "none" and not queued
            return
        self.reports += 1
        if row["place"] != "-":
            self.named += 1
            self.place_ok += bool(result["place"]) and result["place"]["id"] == row["place"]
        self.type_ok += got == row["type"]
        self.sure_ok += got == row["type"] and not queued
        self.queued += queued
        self.missed += got == "none"
        self.confusion[(row["type"], got + ("?" if queued else ""))] += 1


Extractors = Callable[[dict[str, str]], Extractor]  # the extractor that hears a row (on its channel, or on none)


def run(extractor_for: Extractors, rows: list[dict[str, str]], make: Callable[[random.Random], list[str]], seeds: int
        ) -> Tally:
    tally = Tally()
    for seed in range(seeds):
        for row, inp in zip(rows, make(random.Random(seed)), strict=True):
            tally.add(row, extractor_for(row)(inp))
    return tally


def conditions(rows: list[dict[str, str]], rate: float) -> dict[str, tuple[Callable[[random.Random], list[str]], bool]]:
    """name -> (inputs for a seed, noisy: run over several seeds)."""
    tables = {toned: homophone_table(toned) for toned in (True, False)}
    vocabulary = sorted(tables[False])

    def swapped(toned: bool) -> Callable[[random.Random], list[str]]:
        return lambda rng: [swap_characters(r["text"], rate, rng, tables[toned], toned) for r in rows]

    return {
        "clean text": (lambda rng: [r["text"] for r in rows], False),
        "text, homophone swaps": (swapped(True), True),
        "text, toneless swaps": (swapped(False), True),
        "toned pinyin": (lambda rng: [toned_pinyin(r["text"]) for r in rows], False),
        "plain pinyin, errors": (lambda rng: [garble_pinyin(r["text"], rate / 2, rng, vocabulary) for r in rows], True),
    }


def pct(a: int, b: int) -> str:
    return f"{a / b:6.1%}" if b else "     -"


def report(path: Path, extractor_for: Extractors, seeds: int, rate: float) -> dict[str, Tally]:
    rows = read_set(path)
    kinds = Counter(r["kind"] for r in rows)
    print(f"\n{path.name}: {kinds['report']} reports, {kinds['routine']} routine lines; error rate {rate}, "
          f"{seeds} seeds for noisy conditions")
    print(f"{'condition':24} {'place':>7} {'type':>7} {'sure':>7} {'queued':>7} {'missed':>7} | "
          f"{'false inc.':>10} {'false queued':>12}")
    tallies = {}
    for name, (make, noisy) in conditions(rows, rate).items():
        t = tallies[name] = run(extractor_for, rows, make, seeds if noisy else 1)
        print(f"{name:24} {pct(t.place_ok, t.named)} {pct(t.type_ok, t.reports)} {pct(t.sure_ok, t.reports)} "
              f"{pct(t.queued, t.reports)} {pct(t.missed, t.reports)} | {t.false_incidents:>10} {t.false_queued:>12}")
    print_confusion(tallies["clean text"].confusion)
    return tallies


def print_confusion(confusion: Counter[tuple[str, str]]) -> None:
    """Rows: the labelled type; columns: what was decided (`?` marks a guess queued for confirmation)."""
    want = sorted({w for w, _ in confusion})
    got = sorted({g for _, g in confusion}, key=lambda g: (g.rstrip("?") not in want, g))
    short = {g: g[:5] + ("?" if g.endswith("?") else "") for g in got}
    print("\nconfusion, clean text (rows: labelled; columns: decided, ? = queued for confirmation)")
    print(f"{'':11}" + "".join(f"{short[g]:>7}" for g in got) + f"{'acc':>7}")
    for w in want:
        n = sum(confusion[(w, g)] for g in got)
        cells = "".join(f"{confusion[(w, g)] or '.':>7}" for g in got)
        print(f"{w:11}{cells}{pct(confusion[(w, w)] + confusion[(w, w + '?')], n):>7}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", type=Path, nargs="*", help="blind sets (default: the development sets A-C)")
    ap.add_argument("--jurisdiction", type=Path, default=REPO / "config" / "jurisdiction.yaml")
    ap.add_argument("--seeds", type=int, default=3, help="noisy variants per sentence")
    ap.add_argument("--rate", type=float, default=0.15, help="per-character / per-syllable error rate")
    ap.add_argument("--channel-prior", action="store_true", help="hear each row on the channel it names (a set with a "
                    "`channel` column): the channel's own places are heard more readily (docs/dispatch.md)")
    args = ap.parse_args()
    print(describe())
    jurisdiction = load_jurisdiction(args.jurisdiction)
    extractors = {"": Extractor(jurisdiction)}

    def extractor_for(row: dict[str, str]) -> Extractor:
        channel = row.get("channel", "") if args.channel_prior else ""
        if channel not in extractors:
            extractors[channel] = Extractor(jurisdiction, channel=channel)
        return extractors[channel]

    for path in args.sets or DEVELOPMENT_SETS:
        report(path, extractor_for, args.seeds, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
