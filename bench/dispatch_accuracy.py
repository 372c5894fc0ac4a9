"""Dispatcher accuracy: place top-1 and incident type on ../shared/demo/calls.tsv and on the blind sets
(tests/dispatch/blind/: figures only, with missed reports and false confirmations), as clean text, as text with
simulated ASR errors, as pinyin-only input with syllable errors, and from audio (the spoken calls, clean and
radio-degraded at SNR 20 and 10 dB, through segmenter -> sherpa-onnx -> extract); decision time per transcript; the
time from the end of speech to the alert on a real broker, through the running service (see bench/dispatch_audio.py).

    .venv/bin/python bench/dispatch_accuracy.py [--calls FILE] [--seeds N] [--rate P] [--noise-seeds N] [--no-audio]
                                                [--no-latency]

Simulated errors (seeded, so runs compare):
- homophone: each character, with probability P, becomes another common character read the same, tone included
  (what a Chinese LM-backed ASR writes when it picks the wrong word);
- toneless: the same with any tone (没事街 for 美食街);
- pinyin: the transcript as plain (toneless) pinyin, each syllable with probability P/2 changed by an accent
  confusion (zh->z, ing->in, n->l ...) or, one time in four, replaced by a random syllable.
Place accuracy counts calls that name a place; type accuracy counts all calls (including `none`). Each radio SNR is
measured over several noise realisations (--noise-seeds; one realisation swings SNR 10 dB type accuracy by +-10
points). False alarms: places and incidents found in the 53 real recordings of ../shared/audio, which name no place
of the jurisdiction (seven are news sentences about real incidents, so some incidents there are right).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asr.engine import Engine  # noqa: E402
from asr.words import common_words  # noqa: E402
from bench.dispatch_audio import RADIO_FLAGS, degrade, measure_latency, percentiles, read_calls, run_calls  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402
from dispatch.extract import Extractor  # noqa: E402
from dispatch.gazetteer import load_jurisdiction  # noqa: E402
from dispatch.phonetic import text_syllables  # noqa: E402
from dispatch.type_model import misheard  # noqa: E402

SHARED = shared_dir()


def homophone_table(toned: bool) -> dict[str, list[str]]:
    """Common characters (from frequent jieba words) grouped by their reading."""
    chars = {c for w in common_words(2000) for c in w if "\u4e00" <= c <= "\u9fff"}
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


def garble_pinyin(text: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    """`text` as plain pinyin misheard on a radio (dispatch.type_model.misheard, which the type model trains on)."""
    return " ".join(s.base for s in misheard(text_syllables(text), rate, rng, vocabulary))


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
    ap.add_argument("--audio-dir", type=Path, default=SHARED / "audio" / "calls", help="the spoken calls (cNNN.wav)")
    ap.add_argument("--snr", type=float, nargs="*", default=[20, 10], help="radio-degraded conditions (dB)")
    ap.add_argument("--noise-seeds", type=int, default=3, help="noise realisations per SNR")
    ap.add_argument("--no-audio", action="store_true", help="text rows only")
    ap.add_argument("--no-blind", action="store_true", help="skip the blind sets (tests/dispatch/blind/*.tsv)")
    ap.add_argument("--no-latency", action="store_true", help="skip the real-time service run (~3 min)")
    ap.add_argument("--latency-snr", type=float, default=20, help="the radio copies the service replays for latency")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "(shared machine: figures vary)")
    text_rows(args)
    if not args.no_blind:
        blind_rows(args)
    if not args.no_audio:
        audio_rows(args)
    return 0


def blind_rows(args: argparse.Namespace) -> None:
    """The frozen blind sets (tests/dispatch/blind/): figures and confusion tables only (bench/dispatch_blind.py); the
    same sets in 8 voices x 4 radio conditions are bench/dispatch_voices.py's."""
    from bench.dispatch_blind import DEVELOPMENT_SETS, report

    extractor = Extractor(load_jurisdiction(args.jurisdiction))
    for path in DEVELOPMENT_SETS:
        report(path, lambda row: extractor, 3, args.rate)


def text_rows(args: argparse.Namespace) -> None:
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


def audio_rows(args: argparse.Namespace) -> None:
    from asr.config import AsrConfig
    from asr.sherpa_engine import SherpaEngine
    from dispatch.vocabulary import spotter_keywords
    from tests.conftest import RADIO_DEGRADE, SHERPA_MODEL

    rows = read_calls(args.calls)
    clean = sorted(p for p in args.audio_dir.glob("c*.wav") if p.stem in rows)
    engine = SherpaEngine(SHERPA_MODEL, spotter_keywords(args.jurisdiction),
                          alternative_speeds=AsrConfig().alternative_speeds,
                          noise_floor=AsrConfig().noise_floor)  # hears as the service does
    extractor = Extractor(load_jurisdiction(args.jurisdiction))
    print(f"\nfrom audio: {len(clean)} spoken calls in {args.audio_dir}; radio copies by {RADIO_DEGRADE.name} "
          f"{' '.join(RADIO_FLAGS)}\n")
    print(f"{'condition':28} {'place top-1':>16} {'incident type':>16} {'priority':>12}")
    decisions: list[float] = []
    misses = []
    with tempfile.TemporaryDirectory(prefix="jingbao-radio-") as tmp:
        conditions = {"audio, clean": [clean]}
        for snr in args.snr:
            conditions[f"audio, radio SNR {snr:g} dB"] = [
                degrade(clean, snr, Path(tmp) / f"snr{snr:g}-{seed}", RADIO_DEGRADE, seed) for seed in range(args.noise_seeds)]
        for name, realisations in conditions.items():
            outcomes = [o for files in realisations for o in run_calls(files, rows, [engine], extractor)]
            named = [o for o in outcomes if o.expected_place != "-"]
            place_ok = sum(o.place == o.expected_place for o in named)
            type_ok = sum(o.type == o.expected_type for o in outcomes)
            prio_ok = sum(o.priority == rows[o.id]["priority"] for o in outcomes)
            print(f"{name:28} {place_ok / len(named):>9.1%} ({len(named):>4}) {type_ok / len(outcomes):>9.1%} "
                  f"({len(outcomes):>4}) {prio_ok / len(outcomes):>11.1%}")
            decisions += [d for o in outcomes for d in o.decision_s]
            misses += [(name, o) for o in outcomes
                       if (o.expected_place != "-" and o.place != o.expected_place) or o.type != o.expected_type]
        false_alarms(engine, extractor)
        p50, p95 = percentiles(decisions)
        print(f"\ndecision time per transcript from audio, {len(decisions)} transcripts: p50 {p50 * 1000:.2f} ms, "
              f"p95 {p95 * 1000:.2f} ms")
        print(f"\nmisses ({len(misses)}):")
        for name, o in misses:
            print(f"  {name:24} {o.id}  want {o.expected_place}/{o.expected_type}  got {o.place or '-'}/{o.type}\n"
                  f"  {'':24} heard: {o.heard}")
        if not args.no_latency:
            radio = (conditions.get(f"audio, radio SNR {args.latency_snr:g} dB") or [None])[0] or degrade(
                clean, args.latency_snr, Path(tmp) / "latency", RADIO_DEGRADE)
            print(f"\nend of speech -> alert on the broker: the service replays the {len(radio)} SNR "
                  f"{args.latency_snr:g} dB calls at real-time pace ...", flush=True)
            latencies = measure_latency(radio, args.audio_dir, args.jurisdiction)
            p50, p95 = percentiles(latencies)
            print(f"end of speech -> first alert received by a subscriber, {len(latencies)} alerted calls: "
                  f"p50 {p50:.2f} s, p95 {p95:.2f} s (max {max(latencies, default=float('nan')):.2f} s)")


def false_alarms(engine: Engine, extractor: Extractor) -> None:
    """Places and incidents the dispatcher finds in the real recordings (no place of the jurisdiction is named)."""
    from dispatch.from_audio import extract_file

    manifest = SHARED / "audio" / "manifest.tsv"
    rows = list(csv.DictReader(manifest.open(encoding="utf-8"), delimiter="\t"))
    places, incidents = [], []
    for row in rows:
        for h in extract_file(SHARED / "audio" / row["file"], [engine], extractor):
            if h.result["place"]:
                places.append((row["file"], h.result["place"]["name"]))
            if h.result["incident"]["type"] != "none":
                incidents.append((row["text"], h.result["incident"]["type"]))
    print(f"{len(rows)} real recordings (no place named): {len(places)} false places {places}; "
          f"{len(incidents)} typed as incidents:")
    for text, kind in incidents:
        print(f"  {kind:10} {text}")


if __name__ == "__main__":
    sys.exit(main())
