"""Dispatcher accuracy: place top-1 and incident type on ../shared/demo/calls.tsv, as clean text, as text with
simulated ASR errors, and as pinyin-only input with syllable errors; plus decision time per transcript.

    .venv/bin/python bench/dispatch_accuracy.py [--calls FILE] [--seeds N] [--rate P]

Simulated errors (seeded, so runs compare):
- homophone: each character, with probability P, becomes another common character read the same, tone included
  (what a Chinese LM-backed ASR writes when it picks the wrong word);
- toneless: the same with any tone (没事街 for 美食街);
- pinyin: the transcript as plain (toneless) pinyin, each syllable with probability P/2 changed by an accent
  confusion (zh->z, ing->in, n->l ...) or, one time in four, replaced by a random syllable.
Place accuracy counts calls that name a place; type accuracy counts all calls (including `none`).
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dispatch.extract import Extractor  # noqa: E402
from dispatch.gazetteer import load_jurisdiction  # noqa: E402
from dispatch.location import _jieba_freq  # noqa: E402
from dispatch.phonetic import FINAL_FOLD, INITIAL_FOLD, split, text_syllables  # noqa: E402

SHARED = REPO.parent / "shared"


def homophone_table(toned: bool) -> dict[str, list[str]]:
    """Common characters (from frequent jieba words) grouped by their reading."""
    chars = {c for w, f in _jieba_freq().items() if f >= 2000 for c in w if "\u4e00" <= c <= "\u9fff"}
    table: dict[str, list[str]] = defaultdict(list)
    for c in sorted(chars):
        s = text_syllables(c)[0]
        if s is not None:
            table[f"{s.base}{s.tone}" if toned else s.base].append(c)
    return table


def swap_characters(text: str, rate: float, rng: random.Random, table: dict[str, list[str]], toned: bool) -> str:
    out = []
    for c, s in zip(text, text_syllables(text), strict=True):
        if s is not None and rng.random() < rate:
            others = [o for o in table.get(f"{s.base}{s.tone}" if toned else s.base, ()) if o != c]
            c = rng.choice(others) if others else c
        out.append(c)
    return "".join(out)


ACCENT = {**{v: k for k, v in INITIAL_FOLD.items()}, **INITIAL_FOLD}
NASAL = {**{v: k for k, v in FINAL_FOLD.items()}, **FINAL_FOLD}


def garble_pinyin(text: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    out = []
    for s in text_syllables(text):
        if s is None:
            continue
        base = s.base
        if rng.random() < rate:
            ini, fin = split(base)
            if rng.random() < 0.25:
                base = rng.choice(vocabulary)
            elif ini in ACCENT and (fin not in NASAL or rng.random() < 0.5):
                base = ACCENT[ini] + fin
            elif fin in NASAL:
                base = ini + NASAL[fin]
        out.append(base)
    return " ".join(out)


def evaluate(extractor: Extractor, rows: list[dict], inputs: list[str], timings: list[float]) -> tuple[int, int, int, int, int]:
    place_ok = place_n = type_ok = prio_ok = 0
    for row, inp in zip(rows, inputs, strict=True):
        t0 = time.perf_counter()
        result = extractor(inp)
        timings.append(time.perf_counter() - t0)
        if row["place"] != "-":
            place_n += 1
            place_ok += bool(result["place"]) and result["place"]["id"] == row["place"]
        type_ok += result["incident"]["type"] == row["incident"]
        prio_ok += result["incident"]["priority"] == row["priority"]
    return place_ok, place_n, type_ok, prio_ok, len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=Path, default=SHARED / "demo" / "calls.tsv")
    ap.add_argument("--jurisdiction", type=Path, default=REPO / "config" / "jurisdiction.yaml")
    ap.add_argument("--seeds", type=int, default=20, help="noisy variants per call")
    ap.add_argument("--rate", type=float, default=0.15, help="per-character / per-syllable error rate")
    args = ap.parse_args()

    rows = list(csv.DictReader(args.calls.open(encoding="utf-8"), delimiter="\t"))
    extractor = Extractor(load_jurisdiction(args.jurisdiction))
    extractor(rows[0]["text"])  # warm caches (jieba, lexicon) out of the timings
    tables = {toned: homophone_table(toned) for toned in (True, False)}
    vocabulary = sorted({k for k in tables[False]})
    timings: list[float] = []

    def swapped(toned: bool):
        return lambda rng: [swap_characters(r["text"], args.rate, rng, tables[toned], toned) for r in rows]

    conditions = {"clean text": lambda rng: [r["text"] for r in rows]}
    conditions["text, homophone swaps"] = swapped(True)
    conditions["text, toneless swaps"] = swapped(False)
    conditions["pinyin only, clean"] = lambda rng: [garble_pinyin(r["text"], 0.0, rng, vocabulary) for r in rows]
    conditions["pinyin only, errors"] = lambda rng: [garble_pinyin(r["text"], args.rate / 2, rng, vocabulary) for r in rows]

    print(f"{len(rows)} calls from {args.calls}; error rate {args.rate}; {args.seeds} seeds for noisy conditions\n")
    print(f"{'condition':28} {'place top-1':>16} {'incident type':>16} {'priority':>12}")
    for name, make in conditions.items():
        seeds = 1 if "clean" in name else args.seeds
        totals = [0, 0, 0, 0, 0]
        for seed in range(seeds):
            res = evaluate(extractor, rows, make(random.Random(seed)), timings)
            totals = [a + b for a, b in zip(totals, res, strict=True)]
        p_ok, p_n, t_ok, pr_ok, n = totals
        print(f"{name:28} {p_ok / p_n:>9.1%} ({p_n:>4}) {t_ok / n:>9.1%} ({n:>4}) {pr_ok / n:>11.1%}")
    q = statistics.quantiles(timings, n=20)
    print(f"\ndecision time per transcript (place + type + responders), {len(timings)} runs: "
          f"p50 {statistics.median(timings) * 1000:.2f} ms, p95 {q[18] * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
