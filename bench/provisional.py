"""Provisional alerts on the blind sets: how often a decision made on a growing partial transcript would later be
retracted or re-routed by the whole sentence's decision, and how early it comes.

    .venv/bin/python bench/provisional.py [SET.tsv ...] [--step N] [--sweep] [--cache FILE]

Each sentence of blind sets A and B (tests/dispatch/blind/; set C stays unscored for the classifier's next claim),
reports and routine lines, is replayed as the recogniser streams it:
partials are its growing prefixes -- by characters (punctuation kept inside: a pause; a prefix always ends on a spoken
character) and by syllables of its tone-numbered pinyin as the on-board engine gives them (timed, ~4.5 a second, a
pause where the sentence has a punctuation mark) -- `--step` units more each time (1: a partial per character or
syllable, more often than the real ~0.3 s of audio per partial, so the stability rule is measured at its weakest); the
last partial is the whole sentence. Every changed partial is read by the dispatcher's own classifier and place matcher
and fed to `dispatch.provisional.PartialGate` with the configured rules (`dispatch.partials`); when it opens, the
provisional incident is settled against the whole sentence's reading with `dispatch.provisional.settle`, as the
running dispatcher does with the final transcript. A partial that ends a clause (a punctuation mark follows it) or
the sentence is also taken as the one the recogniser gives at a pause in the speech (`paused`: the segmenter's
`sentence_end_ms` of silence), where the gate acts at once and may queue an unsure report as 待确认; `--no-pauses`
measures the gate without them.

Prints figures only, never a sentence (tests/dispatch/blind/README.md): per set and form, over the reports, the share
alerted from partials (of all, and of those the final alone would alert for) and how early, and what the final made of
those alerts (kept; re-routed: place or type changed; undone: retracted as routine, or requeued as 待确认, the phones
stood down); over the routine lines, the alerts raised from partials and how many the final did not keep (the rest the
final sends itself: the classifier's own false alarms). `--sweep` prints the same for a grid of rules on the first set
(set_a, the development set: tune there, claim on set_b). Readings are computed once per run; `--cache FILE` keeps them
between runs while the classifier, the matcher and the partials are unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import itertools
import pickle
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asr.transcript import Transcript, Word  # noqa: E402
from bench.dispatch_blind import BLIND_DIR, read_set  # noqa: E402
from bench.machine import describe  # noqa: E402
from dispatch.classify import load_lexicon, read_report  # noqa: E402
from dispatch.config import PartialRules  # noqa: E402
from dispatch.gazetteer import load_jurisdiction  # noqa: E402
from dispatch.location import PlaceIndex  # noqa: E402
from dispatch.phonetic import text_syllables  # noqa: E402
from dispatch.provisional import PAUSE_S, PartialGate, Raise, Reading, Verdict, heard, settle  # noqa: E402

# Set C is held back, unscored, for the next claimed gain of the classifier (tests/dispatch/blind/README.md).
SETS = ("set_a.tsv", "set_b.tsv")
FORMS = ("characters", "toned pinyin")
SPOKEN = str.isalnum  # a character a recogniser would write (punctuation is a pause, not a partial of its own)
SYLLABLE_S, PAUSE_GAP_S = 0.22, 0.4  # ~4.5 syllables a second; a breath at a clause's end


@dataclass(slots=True)
class Replay:
    """One sentence in one form: the reading of every prefix (the last is the whole sentence) and of the final."""

    kind: str  # report | routine
    prefixes: list[Reading]
    paused: list[bool]  # the speaker pauses after this prefix (a clause's or the sentence's end)
    final: Reading


@dataclass
class Outcome:
    sentences: int = 0
    final_alerts: int = 0  # sentences the final transcript alone would alert for (certain, at a known place)
    fired: int = 0
    early: int = 0  # alerted before the last partial: while the speaker was still talking
    at_end: int = 0  # alerted on the last partial, at the pause after the sentence (before the hang-over ends it)
    messaged: int = 0  # a first message (an alert or a 待确认 entry) by the pause after the sentence
    queued: int = 0  # a 待确认 entry raised at a pause (no alert from partials)
    queued_undone: int = 0  # ... that the final retracted
    lead: list[int] = field(default_factory=list)  # units still to be said when the alert went out
    verdicts: Counter[str] = field(default_factory=Counter)
    place_changed: int = 0
    type_changed: int = 0

    @property
    def undone(self) -> int:
        """Alerts the final stood the phones down from (retracted, or requeued as 待确认)."""
        return self.verdicts[Verdict.RETRACTED] + self.verdicts[Verdict.REQUEUED]


def prefix_inputs(text: str, form: str, step: int) -> tuple[list[object], list[bool], object]:
    """(the partials, whether the speaker pauses after each, the final) of a sentence in one form. Tone-numbered
    pinyin comes as the on-board engine gives it: syllables with their timing, a clause's end (a punctuation mark in
    the sentence) a pause between two of them."""
    if form == "characters":
        ends = [i + 1 for i, c in enumerate(text) if SPOKEN(c)]
        cuts = ends[step - 1 :: step]
        if ends and cuts[-1:] != ends[-1:]:
            cuts.append(ends[-1])
        clause_end = lambda i: i == ends[-1] or not SPOKEN(text[i:].lstrip()[:1] or "。")  # noqa: E731
        return [text[:i] for i in cuts], [clause_end(i) for i in cuts], text
    words = timed_syllables(text)
    cuts = list(range(step, len(words) + 1, step))
    if words and cuts[-1:] != [len(words)]:
        cuts.append(len(words))
    spoken = lambda n: Transcript("", " ".join(w.text for w in words[:n]), words=tuple(words[:n]))  # noqa: E731
    pause_after = lambda n: n == len(words) or words[n].start - words[n - 1].end >= PAUSE_GAP_S  # noqa: E731
    return [spoken(n) for n in cuts], [pause_after(n) for n in cuts], spoken(len(words))


def timed_syllables(text: str) -> list[Word]:
    """The sentence's syllables, SYLLABLE_S each, and PAUSE_GAP_S more where a punctuation mark separates two."""
    out: list[Word] = []
    t, pause = 0.0, False
    for c, s in zip(text, text_syllables(text), strict=True):
        if s is None:
            pause = pause or (bool(out) and not c.isalnum() and not c.isspace())
            continue
        t += PAUSE_GAP_S if pause else 0.0
        out.append(Word(f"{s.base}{s.tone}", round(t, 3), round(t + SYLLABLE_S, 3), 1.0))
        t, pause = t + SYLLABLE_S, False
    return out


def replays(rows: list[dict[str, str]], form: str, step: int, read) -> list[Replay]:
    out = []
    for row in rows:
        partials, paused, final = prefix_inputs(row["text"], form, step)
        cache: dict[str, Reading] = {}
        readings = []
        for p in partials:
            key = repr(p)
            if key not in cache:
                cache[key] = read(p)
            readings.append(cache[key])
        out.append(Replay(row["kind"], readings, paused, cache.get(repr(final)) or read(final)))
    return out


@dataclass(slots=True, frozen=True)
class Raised:
    """What one sentence's partials raised: the alert (index of its partial, reading) if any, else a 待确认 entry; and
    what the final made of the alert, else of the entry."""

    alert: tuple[int, Reading] | None
    verdict: Verdict


def simulate(replay: Replay, rules: PartialRules, pauses: bool = True) -> Raised | None:
    """None: the partials raised nothing (the final decides alone, as without provisional alerts)."""
    gate = PartialGate(rules)
    for i, (reading, paused) in enumerate(zip(replay.prefixes, replay.paused, strict=True)):
        if gate.feed(reading, paused=paused and pauses) == Raise.ALERT:
            return Raised((i, reading), settle(reading, replay.final))
    if gate.queued is None:
        return None
    return Raised(None, settle(gate.queued, replay.final))


def tally(replays_: list[Replay], rules: PartialRules, kind: str, pauses: bool = True) -> Outcome:
    out = Outcome()
    for r in replays_:
        if r.kind != kind:
            continue
        out.sentences += 1
        out.final_alerts += r.final.certain and r.final.place_id is not None
        done = simulate(r, rules, pauses)
        if done is None:
            continue
        out.messaged += 1
        if done.alert is None:
            out.queued += 1
            out.queued_undone += done.verdict == Verdict.RETRACTED
            continue
        i, provisional = done.alert
        verdict = done.verdict
        out.fired += 1
        out.early += i < len(r.prefixes) - 1
        out.at_end += i == len(r.prefixes) - 1
        out.lead.append(r.prefixes[-1].units - provisional.units)  # characters / syllables still to say
        out.verdicts[verdict] += 1
        if verdict == Verdict.REROUTED:
            out.place_changed += provisional.place_id != r.final.place_id
            out.type_changed += provisional.type != r.final.type
    return out


def pct(a: int, b: int) -> str:
    return f"{a / b:6.1%}" if b else "     -"


HEADER = (f"{'':38} {'alerted':>7} {'of fin.':>7} {'early':>6} {'at end':>6} {'lead':>4} {'message':>7} | {'kept':>6} "
          f"{'rerout':>6} {'place':>5} {'type':>4} {'undone':>6} | {'queued':>6} {'undone':>6} | {'routine':>7} "
          f"{'undone':>6} {'queued':>6} {'undone':>6}")
LEGEND = """\
alerted: reports alerted from partials (of all reports; of fin.: of those the final alone alerts for, certain and at a
known place); early: before the last partial, while the speaker still talks; at end: at the pause after the sentence
(the segmenter's sentence_end_ms, long before its hang-over ends the utterance); lead: median characters or syllables
still to say when alerted; message: reports with a first message (an alert, or a 待确认 entry) by the pause after the
sentence. Of the alerts, what the final made of them: kept (same place and type), re-routed (place / type: how many
changed which), undone (retracted or requeued to 待确认: the phones stood down). queued: 待确认 entries raised at a pause
(no alert from partials), and how many the final retracted. Routine lines: alerts raised from their partials, how many
of those the final did not keep (the rest the final would have sent itself: the classifier's own false alarms, not
the partials'); 待确认 entries raised at a pause, and how many the final retracted."""


def line(label: str, replays_: list[Replay], rules: PartialRules, pauses: bool = True) -> tuple[Outcome, Outcome]:
    rep, rou = tally(replays_, rules, "report", pauses), tally(replays_, rules, "routine", pauses)
    v, f, n = rep.verdicts, rep.fired, rep.sentences
    lead = statistics.median(rep.lead) if rep.lead else 0
    print(f"{label:38} {pct(f, n)} {pct(f, rep.final_alerts)} {pct(rep.early, n)} {pct(rep.at_end, n)} {lead:4.0f} "
          f"{pct(rep.messaged, n)} | {pct(v[Verdict.CONFIRMED], f)} {pct(v[Verdict.REROUTED], f)} {rep.place_changed:5} "
          f"{rep.type_changed:4} {pct(rep.undone, f)} | {pct(rep.queued, n)} {pct(rep.queued_undone, rep.queued)} | "
          f"{rou.fired:3} /{rou.sentences:3} {rou.fired - rou.verdicts[Verdict.CONFIRMED]:6} {rou.queued:6} "
          f"{rou.queued_undone:6}")
    return rep, rou


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", type=Path, nargs="*", help="blind sets (default: sets A and B of tests/dispatch/blind/)")
    ap.add_argument("--jurisdiction", type=Path, default=REPO / "config" / "jurisdiction.yaml")
    ap.add_argument("--step", type=int, default=1, help="characters / syllables more per partial")
    ap.add_argument("--sweep", action="store_true", help="also print a grid of rules")
    ap.add_argument("--no-pauses", dest="pauses", action="store_false", help="the gate without pauses in the speech")
    ap.add_argument("--cache", type=Path, help="keep the readings here between runs (keyed by set, form, step, code)")
    args = ap.parse_args()
    print(describe())
    index, lexicon = PlaceIndex(load_jurisdiction(args.jurisdiction)), load_lexicon()

    def read(inp: object) -> Reading:
        what, places = read_report(inp, lexicon, index)
        return Reading.of(what, places.scene(), inp)

    rules = PartialRules()
    print(f"rules (dispatch.partials): {rules!r}; a partial every {args.step} character(s) / syllable(s)")
    print(LEGEND)
    every: dict[str, list[Replay]] = {form: [] for form in FORMS}
    by_set: dict[tuple[str, str], list[Replay]] = {}
    for path in args.sets or [BLIND_DIR / name for name in SETS]:
        rows = read_set(path)
        print(f"\n{path.name}: {sum(r['kind'] == 'report' for r in rows)} reports, "
              f"{sum(r['kind'] == 'routine' for r in rows)} routine lines")
        print(HEADER)
        for form in FORMS:
            started = time.perf_counter()
            rs = cached(args.cache, path, form, args.step, lambda rows=rows, form=form: replays(rows, form, args.step, read))
            every[form] += rs
            by_set[(path.name, form)] = rs
            took = time.perf_counter() - started
            line(f"{form} ({sum(len(r.prefixes) for r in rs)} partials, {took:.0f} s)", rs, rules, args.pauses)
    print("\nall sets")
    print(HEADER)
    for form in FORMS:
        line(form, every[form], rules, args.pauses)
    if args.sweep:
        dev = BLIND_DIR / SETS[0] if not args.sets else args.sets[0]
        for form in FORMS:
            rs = by_set[(dev.name, form)]
            print(f"\nsweep on {dev.name} (the development set), {form}; place confidence >= "
                  f"{rules.min_place_confidence}, at least {rules.stable_partials} partials")
            print(HEADER)
            grid = itertools.product(("low", "medium", "high"), (0.8, 0.9), (3, 5, 8), (0, 3, 4, 6))
            for priority, conf, units, pause in grid:
                r = rules.model_copy(update={"min_priority": priority, "min_confidence": conf, "stable_units": units,
                                             "after_pause": pause})  # fmt: skip
                line(f"{priority:>6}+ c{conf} held {units} pause+{pause}", rs, r, args.pauses)
    return 0


def cached(cache: Path | None, path: Path, form: str, step: int, compute) -> list[Replay]:
    """The readings of a set, from `cache` when the set and the deciding code are unchanged."""
    if cache is None:
        return compute()
    code = [REPO / "dispatch" / name for name in ("classify.py", "location.py", "lexicon.yaml", "type_model.py",
                                                   "type_model.npz", "phonetic.py")]
    digest = hashlib.sha256(path.read_bytes())
    for f in code:
        if f.exists():
            digest.update(f.read_bytes())
    for fn in (heard, prefix_inputs, timed_syllables):  # what makes the partials and measures them (not the gate)
        digest.update(inspect.getsource(fn).encode())
    digest.update(repr((PAUSE_S, SYLLABLE_S, PAUSE_GAP_S)).encode())
    key = f"{path.name}|{form}|{step}|{digest.hexdigest()[:16]}"
    store = pickle.loads(cache.read_bytes()) if cache.exists() else {}
    if key not in store:
        store[key] = compute()
        cache.write_bytes(pickle.dumps(store))
    return store[key]


if __name__ == "__main__":
    sys.exit(main())
