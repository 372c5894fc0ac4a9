"""Dispatch from audio in many voices: a labelled set's sentences rendered in the 8 Kokoro Mandarin voices
(bench/voices.py), clean and over a radio at 20, 10 and 5 dB SNR (several noise seeds), each rendering through the
service's own path (dispatch/from_audio.py: segmenter -> sherpa-onnx fed 20 ms frames -> Extractor, by
bench/dispatch_audio.run_calls); beside them the single neural voice of ../shared/audio/calls, for the rows it spoke.

    .venv/bin/python bench/dispatch_voices.py [SET.tsv ...] [--per-type N | --all] [--seeds N] [--voices NAME ...]
                                              [--snr DB ...] [--show-misses]

SET.tsv: a labelled set (columns id, kind, place, type, priority, text; '#' comment lines; kind report|routine; type
none on routine lines; place '-' when none), or the demo calls (id, channel, text, place, incident, priority: a call
whose incident is none is routine). Default: blind sets A and B (tests/dispatch/blind/; the sample figures in
docs/performance.md are of these two), else the demo calls.
Sample: --per-type N rows of each incident type and N routine lines (seeded, so runs compare), or --all rows. The
default (1: 16 rows of the blind sets, each rendered in 8 voices) took 22 minutes the first time on 2 shared cores
(load 2-4; 14 of them rendering), and a second run finds the renderings cached.

Per voice and condition: place top-1 over the reports that name a place; incident type over the reports (the type
decided, a guess queued for the operator's confirmation included); false incidents on routine lines; reports that
reached nobody (no utterance raised any incident). Then the same as one 9-row table (8 voices + the calls' voice).
Prints figures only, never a sentence: the blind sets are test material nobody tuning the dispatcher may read.
--show-misses lists misses (id, what was heard) for sets that are not blind only.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asr.config import AsrConfig  # noqa: E402
from bench.dispatch_audio import CallOutcome, HeardCache, run_calls  # noqa: E402
from bench.machine import describe  # noqa: E402
from bench.voices import CACHE, CLEAN, CONDITIONS, KOKORO_DIR, KokoroVoices, condition_name, radio_copies  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402

BLIND_DIR = REPO / "tests" / "dispatch" / "blind"
DEMO_CALLS = shared_dir() / "demo" / "calls.tsv"
CALLS_AUDIO = shared_dir() / "audio" / "calls"
CALLS_VOICE = "calls-voice"  # the FastSpeech2 voice that spoke ../shared/audio/calls
ROUTINE = "routine"


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    kind: str  # report | routine
    place: str  # place id, '-' when none
    type: str  # incident type, none on routine lines
    text: str
    channel: str = ""  # the radio channel it was said on (the demo calls name theirs)

    @property
    def stratum(self) -> str:
        return ROUTINE if self.kind == ROUTINE else self.type


def read_rows(path: Path, prefix: str = "") -> list[Row]:
    """A labelled set, a turn set (a call's transmissions are the lines of its row's text) or the demo calls, as rows
    (ids prefixed with `prefix`)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    rows = []
    calls: dict[str, list[dict[str, str]]] = {}  # a turn set's rows by call
    for r in csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE):
        if "turn" in r:
            calls.setdefault(r["call"], []).append(r)
        elif "kind" in r:
            if r["kind"] not in ("report", ROUTINE):
                raise SystemExit(f"{path}: row {r['id']}: kind {r['kind']!r} is neither report nor routine")
            rows.append(Row(prefix + r["id"], r["kind"], r["place"] or "-", r["type"], r["text"], r.get("channel") or ""))
        elif "incident" in r:  # the demo calls
            kind = ROUTINE if r["incident"] == "none" else "report"
            rows.append(Row(prefix + r["id"], kind, r["place"] or "-", r["incident"], r["text"], r.get("channel") or ""))
        else:
            raise SystemExit(f"{path}: neither a labelled set (kind, type columns) nor the demo calls (incident column)")
    for call, said in calls.items():  # a call told in several transmissions: its text has one line for each
        first = said[0]
        text = "\n".join(r["text"] for r in sorted(said, key=lambda r: int(r["turn"])))
        rows.append(Row(prefix + call, first["kind"], first["place"] or "-", first["type"], text, first["channel"]))
    return rows


def is_blind(path: Path) -> bool:
    path = path.resolve()
    return path.is_relative_to(BLIND_DIR.resolve()) or any("blind" in part.lower() for part in path.parts)


def stratified(rows: Sequence[Row], per_type: int, seed: int = 0) -> list[Row]:
    """`per_type` rows of each stratum (each incident type; routine lines), drawn with a fixed seed."""
    rng = random.Random(seed)
    by_stratum: dict[str, list[Row]] = {}
    for row in sorted(rows, key=lambda r: r.id):
        by_stratum.setdefault(row.stratum, []).append(row)
    return [row for stratum in sorted(by_stratum) for row in rng.sample(by_stratum[stratum],
                                                                        min(per_type, len(by_stratum[stratum])))]


@dataclass
class Score:
    reports: int = 0
    named: int = 0  # reports that name a place
    place_ok: int = 0
    type_ok: int = 0
    nobody: int = 0  # reports that raised no incident at all
    routine: int = 0
    false: int = 0  # routine lines that raised an incident

    def add(self, row: Row, outcome: CallOutcome) -> bool:
        """Count one outcome; True when it is a miss (wrong place or type, or a false incident)."""
        if row.kind == ROUTINE:
            self.routine += 1
            self.false += outcome.type != "none"
            return outcome.type != "none"
        self.reports += 1
        self.type_ok += outcome.type == row.type
        self.nobody += outcome.type == "none"
        place_ok = row.place == "-" or outcome.place == row.place
        if row.place != "-":
            self.named += 1
            self.place_ok += place_ok
        return not place_ok or outcome.type != row.type

    def __iadd__(self, other: Score) -> Score:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


def ratio(k: int, n: int) -> str:
    return f"{k}/{n} {k / n:6.1%}" if n else "-"


def percent(k: int, n: int) -> str:
    return f"{k / n:.0%}" if n else "-"


def recordings_of(rows: Iterable[Row]) -> dict[Row, Path]:
    """The rows the calls' voice spoke: same id and same text as a demo call with a recording."""
    if not DEMO_CALLS.exists():
        return {}
    demo = {r.id: r.text for r in read_rows(DEMO_CALLS)}
    found = {}
    for row in rows:
        wav = CALLS_AUDIO / f"{row.id.rpartition(':')[2]}.wav"
        if demo.get(row.id.rpartition(":")[2]) == row.text and wav.exists():
            found[row] = wav
    return found


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="*", type=Path, help="labelled TSV sets (default: tests/dispatch/blind/*.tsv, else "
                                                       "the demo calls)")
    sample = ap.add_mutually_exclusive_group()
    sample.add_argument("--per-type", type=int, default=1, help="rows per incident type, and routine lines (default 1)")
    sample.add_argument("--all", action="store_true", help="every row")
    ap.add_argument("--seeds", type=int, default=2, help="noise realisations per SNR (default 2)")
    ap.add_argument("--snr", type=float, nargs="*", default=[c for c in CONDITIONS if c != CLEAN])
    ap.add_argument("--voices", nargs="+", help="Kokoro voices (default: all 8)")
    ap.add_argument("--jurisdiction", type=Path, default=REPO / "config" / "jurisdiction.yaml")
    ap.add_argument("--model", type=Path, default=KOKORO_DIR)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--show-misses", action="store_true", help="list the misses (not for blind sets)")
    ap.add_argument("--channel-prior", action="store_true", help="read each row as heard on its channel (the demo "
                    "calls and blind sets E-H name theirs): the channel's own places are heard more readily (docs/dispatch.md)")
    ap.add_argument("--no-spotter", action="store_true", help="the recogniser alone, without the keyword spotter "
                                                              "(half the acoustic work: what the spotter adds)")
    ap.add_argument("--speeds", type=float, nargs="*", help="the alternative hearings' speeds (default: the "
                    "service's, asr.alternative_speeds; none: the main hearing alone)")
    ap.add_argument("--noise-floor", type=lambda v: None if v == "off" else float(v), default=AsrConfig().noise_floor,
                    help="the noise suppressor's least gain (default: the service's, asr.noise_floor; off: the audio as "
                    "received)")
    ap.add_argument("--keep-heard", action="store_true", help="keep what the recogniser heard in each rendering under "
                    "--cache (keyed by the spotter's keyword list), so a dispatcher change is measured without recognising again")
    args = ap.parse_args(argv)
    # set C stays unscored for the classifier's next claimed gain (tests/dispatch/blind/README.md)
    sets = args.sets or [p for p in (BLIND_DIR / "set_a.tsv", BLIND_DIR / "set_b.tsv") if p.exists()] or [DEMO_CALLS]
    if args.show_misses and any(is_blind(s) for s in sets):
        ap.error("--show-misses is for sets that are not blind (the blind sets' sentences are not to be read)")
    started = time.perf_counter()
    print(f"machine: {describe()}")
    if not (args.model / "voices-zh-v1.0.bin").exists():
        print(f"no Kokoro Mandarin model in {args.model}: nothing to measure", file=sys.stderr)
        return 0

    rows = [row for s in sets for row in read_rows(s, f"{s.stem}:" if len(sets) > 1 else "")]
    picked = rows if args.all else stratified(rows, args.per_type)
    strata = Counter(row.stratum for row in picked)
    print(f"set: {', '.join(str(s) for s in sets)}: {len(rows)} rows; sample {'all' if args.all else f'{args.per_type} per type'}"
          f": {len(picked)} rows ({sum(r.kind != ROUTINE for r in picked)} reports, {strata[ROUTINE]} routine; "
          f"{len(strata) - (ROUTINE in strata)} incident types)")

    tts = KokoroVoices(args.model, args.cache)
    voices = args.voices or tts.voices
    unknown = set(voices) - set(tts.voices)
    if unknown:
        ap.error(f"unknown voices {sorted(unknown)}: {', '.join(tts.voices)}")
    sources: dict[str, dict[Row, Path]] = {}
    for voice in voices:
        sources[voice] = {}
        for row in picked:
            try:
                sources[voice][row] = tts.render(row.text, voice)
            except Exception as e:  # the message could quote the sentence: name the row only
                print(f"  {row.id} in {voice}: not rendered ({type(e).__name__})", file=sys.stderr)
        print(f"  rendered {voice}: {len(sources[voice])} rows ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)
    print(tts.stats.line())
    sources[CALLS_VOICE] = recordings_of(picked)

    from asr import denoise
    from asr.sherpa_engine import SherpaEngine
    from dispatch.extract import Extractor
    from dispatch.gazetteer import load_jurisdiction
    from dispatch.vocabulary import spotter_keywords
    from tests.conftest import SHERPA_MODEL

    keywords = () if args.no_spotter else spotter_keywords(args.jurisdiction)
    speeds = AsrConfig().alternative_speeds if args.speeds is None else args.speeds
    engine = SherpaEngine(SHERPA_MODEL, keywords, alternative_speeds=speeds, noise_floor=args.noise_floor)
    print(f"hearings: as spoken{''.join(f', at {s:g}x' for s in speeds)}; noise suppression: "
          f"{'off' if args.noise_floor is None else f'least gain {args.noise_floor:g}'}")
    heard_cache = None
    if args.keep_heard:
        # the suppressor's own code in the tag: a change to it is heard again, not taken from the cache
        suppressor_code = hashlib.sha1(Path(denoise.__file__).read_bytes()).hexdigest()[:12]
        tag = (str(SHERPA_MODEL), keywords, *([tuple(speeds)] if speeds else []),  # the tags of earlier runs stay valid
               *([("noise_floor", args.noise_floor, suppressor_code)] if args.noise_floor is not None else []))
        heard_cache = HeardCache(args.cache, hashlib.sha1(repr(tag).encode()).hexdigest()[:16])
    jurisdiction = load_jurisdiction(args.jurisdiction)
    extractor = Extractor(jurisdiction)
    by_channel = {row.channel: Extractor(jurisdiction, channel=row.channel) for row in picked if row.channel}
    conditions: list[str | float] = [CLEAN, *args.snr]
    scores: dict[tuple[str, str | float], Score] = {}
    misses: list[tuple[str, str, Row, CallOutcome]] = []
    for voice, clean in sources.items():
        for condition in conditions:
            score = scores[voice, condition] = Score()
            if condition == CLEAN:
                files = [(row, path) for row, path in clean.items()]
            else:
                copies = radio_copies(list(clean.values()), float(condition), range(args.seeds), args.cache)
                files = [(row, copy) for row, path in clean.items() for copy in copies[path]]
            for row, path in files:
                heard_by = by_channel[row.channel] if args.channel_prior and row.channel else extractor
                outcome = run_calls([path], {path.stem: {"place": row.place, "incident": row.type}}, [engine],
                                    heard_by, heard_cache)[0]
                if score.add(row, outcome):
                    misses.append((voice, condition_name(condition), row, outcome))
        print(f"  heard {voice} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    report(scores, voices, conditions, args.seeds, bool(sources[CALLS_VOICE]))
    if args.show_misses:
        print(f"\nmisses ({len(misses)}):")
        for voice, condition, row, o in misses:
            print(f"  {voice:12} {condition:6} {row.id:10} want {row.place}/{row.type}  got {o.place or '-'}/{o.type}  "
                  f"heard: {o.heard}")
    print(f"\n{time.perf_counter() - started:.0f} s in all; machine at the end: {describe()}")
    return 0


def report(scores: dict[tuple[str, str | float], Score], voices: Sequence[str], conditions: Sequence[str | float],
           seeds: int, calls_voice: bool) -> None:
    rows = [*voices, CALLS_VOICE] if calls_voice else list(voices)
    pooled = {c: Score() for c in conditions}
    for voice in voices:
        for c in conditions:
            pooled[c] += scores[voice, c]
    everyone = f"kokoro ({len(voices)})"  # the Kokoro voices together

    print(f"\nper voice and condition (radio copies: {seeds} noise seeds each, counted together)")
    print(f"{'voice':12} {'condition':9} {'place top-1':>16} {'incident type':>16} {'false (routine)':>16} "
          f"{'reached nobody':>16}")
    for voice in [*rows, everyone]:
        for c in conditions:
            s = pooled[c] if voice == everyone else scores[voice, c]
            print(f"{voice:12} {condition_name(c):9} {ratio(s.place_ok, s.named):>16} {ratio(s.type_ok, s.reports):>16} "
                  f"{ratio(s.false, s.routine):>16} {ratio(s.nobody, s.reports):>16}")

    print("\neach cell: place top-1 / incident type / false on routine / reports that reached nobody")
    cells = {(voice, c): " / ".join(percent(k, n) for k, n in (
        (s.place_ok, s.named), (s.type_ok, s.reports), (s.false, s.routine), (s.nobody, s.reports)))
        for voice in [*rows, everyone] for c in conditions
        for s in [pooled[c] if voice == everyone else scores[voice, c]]}
    width = max(len(cell) for cell in cells.values())
    print(f"{'voice':12} " + "  ".join(f"{condition_name(c):>{width}}" for c in conditions))
    for voice in [*rows, everyone]:
        print(f"{voice:12} " + "  ".join(f"{cells[voice, c]:>{width}}" for c in conditions))
    if not calls_voice:
        print(f"{CALLS_VOICE:12} (no recording of these rows: ../shared/audio/calls speaks the demo calls only)")

if __name__ == "__main__":
    raise SystemExit(main())
