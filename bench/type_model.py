"""The incident type model (dispatch/type_model.py) measured on what it was not trained on: k-fold cross-validation
over the corpus (every view of a sentence in the same fold), the lexicon alone against lexicon + model, and a sweep
of the decision thresholds; then the shipped model on the tests' held-out reports and chatter.

    .venv/bin/python bench/type_model.py [--folds K] [--sweep]

Per view (characters; tone-numbered pinyin; pinyin misheard as on a radio): over reports, the right type, the right
type decided without the operator ("sure"), queued for confirmation, missed (no incident, nothing to confirm); over
routine lines, false incidents and false confirmations.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import random
import sys
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from dispatch import classify, type_model  # noqa: E402
from dispatch.classify import LEXICON_FILE, Reading, Thresholds, decide, load_lexicon, read_transcript  # noqa: E402
from dispatch.type_model import fit, lexicon_rows, load_model, radio_channels, read_corpus, training_views  # noqa: E402

VIEWS = ("text", "toned pinyin", "radio pinyin")


def _read(transcript: dict) -> Reading:
    return read_transcript(transcript)


def readings(rows: list[tuple[str, str]]) -> list[tuple[int, str, str, Reading]]:
    """(row index, view, label, reading) for every training view of every row (the slow part: the lexicon's scan,
    a few minutes on 2 cores; kept in var/bench-cache/ for the corpus, lexicon and code that made it)."""
    key = hashlib.sha256(repr(rows).encode() + LEXICON_FILE.read_bytes() + Path(classify.__file__).read_bytes()
                         + Path(type_model.__file__).read_bytes()).hexdigest()[:16]
    cache = REPO / "var" / "bench-cache" / f"type-readings-{key}.pickle"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    data = _read_all(rows)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(data))
    return data


def _read_all(rows: list[tuple[str, str]]) -> list[tuple[int, str, str, Reading]]:
    """The corpus's rows in every view, then the lexicon's rows as characters (as `train` has them). What the
    recogniser heard of some rows (dispatch/corpus/heard/) is left out: it is not split into the folds."""
    views = list(training_views(rows, channels=radio_channels()))
    per_row = len(views) // len(rows)
    words = list(training_views(lexicon_rows(), pinyin=False))
    with Pool(2) as pool:
        read = pool.map(_read, [t for _, t in views + words], chunksize=64)
    data = [(i // per_row, VIEWS[min(i % per_row, 2)], label, r)
            for i, ((label, _), r) in enumerate(zip(views, read[:len(views)], strict=True))]
    return data + [(len(rows) + i, VIEWS[0], label, r)
                   for i, ((label, _), r) in enumerate(zip(words, read[len(views):], strict=True))]


class Score:
    def __init__(self) -> None:
        self.c: Counter[str] = Counter()

    def add(self, label: str, got) -> None:
        if label == "none":
            self.c["routine"] += 1
            self.c["false_queued"] += got.type != "none" and got.needs_confirmation
            self.c["false_incident"] += got.type != "none" and not got.needs_confirmation
            return
        self.c["reports"] += 1
        self.c["type_ok"] += got.type == label
        self.c["sure_ok"] += got.type == label and not got.needs_confirmation
        self.c["queued"] += got.needs_confirmation
        self.c["missed"] += got.type == "none"

    def line(self, name: str) -> str:
        c, n = self.c, max(self.c["reports"], 1)
        return (f"{name:34} {c['type_ok'] / n:6.1%} {c['sure_ok'] / n:6.1%} {c['queued'] / n:6.1%} {c['missed'] / n:6.1%}"
                f" | {c['false_incident']:>5} {c['false_queued']:>5} of {c['routine']}")


HEADER = f"{'':34} {'type':>6} {'sure':>6} {'queued':>6} {'missed':>6} | {'false':>5} {'queue':>5} routine"


def cross_validate(data, corpus_rows: int, folds: int, thresholds: list[Thresholds]) -> None:
    """Folds over the corpus's rows; the rows after them (the lexicon's, `lexicon_rows`) are always trained on."""
    lexicon = load_lexicon()
    rng = random.Random(1)
    n_rows = max(i for i, *_ in data) + 1
    fold_of = [rng.randrange(folds) if i < corpus_rows else -1 for i in range(n_rows)]
    scores = {(th, v): Score() for th in [None, *thresholds] for v in VIEWS}
    for k in range(folds):
        train = [(r.features, label) for i, _, label, r in data if fold_of[i] != k]
        model = fit([f for f, _ in train], [lab for _, lab in train], "cv")
        for i, view, label, r in data:
            if fold_of[i] != k:
                continue
            scores[(None, view)].add(label, decide(r, None, lexicon))
            for th in thresholds:
                scores[(th, view)].add(label, decide(r, model, lexicon, th))
        print(f"  fold {k + 1}/{folds} done", file=sys.stderr, flush=True)
    print(HEADER)
    for th in [None, *thresholds]:
        for v in VIEWS:
            name = f"{v}, lexicon alone" if th is None else f"{v}, {_short(th)}"
            print(scores[(th, v)].line(name))


def _short(th: Thresholds) -> str:
    return f"w{th.sure_words:.1f} o{th.overrule:.1f} s{th.sure_model:.2f} r{th.report_like:.2f}"


def held_out() -> None:
    """The shipped model on the tests' own sets (written before the corpus, by other hands)."""
    from tests.dispatch.chatter import ROUTINE_CHATTER
    from tests.dispatch.heldout_calls import HELDOUT_CALLS

    lexicon, model = load_lexicon(), load_model()
    rows = [*((t, s) for s, t in HELDOUT_CALLS), *(("none", s) for s in ROUTINE_CHATTER)]
    print(f"\nthe shipped model on tests/dispatch/heldout_calls.py + chatter.py ({len(rows)} lines)\n{HEADER}")
    for name, m in (("lexicon alone", None), ("lexicon + model", model)):
        score = Score()
        for label, text in rows:
            score.add(label, decide(read_transcript(text, lexicon), m, lexicon))
        print(score.line(name))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--sweep", action="store_true", help="try several thresholds (sure, report-like)")
    args = ap.parse_args()
    print(describe())
    rows = read_corpus()
    print(f"corpus: {len(rows)} sentences, {dict(Counter(t for t, _ in rows))}; + lexicon rows (training only)")
    data = readings(rows)
    grid = [Thresholds()]
    if args.sweep:
        grid = [Thresholds(w, o, 0.8, s, r) for w, o in ((0.8, 0.3), (0.8, 0.5), (1.1, 0.5))
                for s in (0.55, 0.7) for r in (0.7,)]
    cross_validate(data, len(rows), args.folds, grid)
    held_out()
    return 0


if __name__ == "__main__":
    sys.exit(main())
