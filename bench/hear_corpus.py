"""The type model's corpus as the on-board recogniser hears it over a radio: a stratified sample of the corpus's
sentences (dispatch/corpus/*.tsv) rendered in some of the Kokoro voices (bench/voices.py), clean and through
radio_degrade.py at 20, 10 and 5 dB, segmented and recognised on the service's own path (dispatch/from_audio.py),
and written as `dispatch/corpus/heard/heard.tsv`: what was said beside what was heard.

    .venv/bin/python bench/hear_corpus.py [--per-type N] [--voices NAME ...] [--snr DB ...] [--out FILE]

The type model learns the recogniser's errors from it (dispatch/radio_channel.py, dispatch/type_model.py). Only the
training voices are used (default: 2 female, 2 male), so that the other four voices stay unheard by the model and
bench/dispatch_voices.py can show, per voice, whether what it learned carries over to voices it never heard.
Renderings and radio copies are cached under var/bench-audio (never committed); a second run only recognises.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from bench.voices import CACHE, CLEAN, KOKORO_DIR, KokoroVoices, condition_name, radio_copies  # noqa: E402
from dispatch.radio_channel import HEARD_FILE, HeardRow, write_heard  # noqa: E402

TRAINING_VOICES = ("zf_xiaobei", "zf_xiaoxiao", "zm_yunjian", "zm_yunyang")
ROUTINE_SHARE = 2  # routine lines sampled per report type's share: silence is half of what the model must get right
MAX_CHARS = 40  # longer lines cost render time and teach no more about how syllables are misheard


def sample(rows: list[tuple[str, str]], per_type: int, seed: int = 0) -> list[tuple[str, str]]:
    """`per_type` sentences of each incident type and ROUTINE_SHARE times as many routine lines, seeded."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for type_, text in rows:
        if len(text) <= MAX_CHARS:
            by_type[type_].append(text)
    rng = random.Random(seed)
    picked = []
    for type_ in sorted(by_type):
        n = per_type * (ROUTINE_SHARE if type_ == "none" else 1)
        picked += [(type_, text) for text in rng.sample(by_type[type_], min(n, len(by_type[type_])))]
    return picked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-type", type=int, default=20, help="sentences per incident type (routine: twice as many)")
    ap.add_argument("--voices", nargs="+", default=list(TRAINING_VOICES))
    ap.add_argument("--snr", type=float, nargs="*", default=[20.0, 10.0, 5.0])
    ap.add_argument("--out", type=Path, default=HEARD_FILE)
    ap.add_argument("--model", type=Path, default=KOKORO_DIR)
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args(argv)

    from asr.sherpa_engine import SherpaEngine
    from dispatch.type_model import read_corpus
    from tests.conftest import SHERPA_MODEL

    started = time.perf_counter()
    picked = sample(read_corpus(), args.per_type)
    tts = KokoroVoices(args.model, args.cache)
    rendered: list[tuple[str, str, str, Path]] = []  # (type, text, voice, clean file)
    for i, (type_, text) in enumerate(picked):
        voice = args.voices[i % len(args.voices)]
        rendered.append((type_, text, voice, tts.render(text, voice)))
        if i % 20 == 19:
            print(f"  rendered {i + 1}/{len(picked)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    print(tts.stats.line())

    # the recogniser alone: the spotter's keywords depend on the lexicon of the day, the syllables do not
    engine = SherpaEngine(SHERPA_MODEL)
    from dispatch.from_audio import recognise_file

    heard: list[HeardRow] = []
    for condition in [CLEAN, *args.snr]:
        if condition == CLEAN:
            files = [path for *_, path in rendered]
        else:
            copies = radio_copies([path for *_, path in rendered], float(condition), [0], args.cache)
            files = [copies[path][0] for *_, path in rendered]
        for (type_, text, voice, _), path in zip(rendered, files, strict=True):
            heard.append(HeardRow(type_, voice, condition_name(condition), text, recognise_file(path, [engine])))
        print(f"  heard {condition_name(condition)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    write_heard(args.out, heard, f"bench/hear_corpus.py --per-type {args.per_type} --voices {' '.join(args.voices)} "
                                 f"--snr {' '.join(f'{s:g}' for s in args.snr)}")
    print(f"{len(heard)} heard rows -> {args.out}; {time.perf_counter() - started:.0f} s; machine: {describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
