"""What flushing the recogniser at the pauses inside a call costs the words after them.

At a pause (the segmenter's UtterancePaused) each stream is fed PAUSE_FLUSH_S of quiet so that the partial holds the
last words heard (asr/sherpa_engine.py). Inside a call the speech goes on after it, through a stream whose left
context now holds that quiet. This decodes each call three ways -- never flushed, flushed at the pauses the segmenter
hears (after a quiet channel, as bench/segment_pauses.py) with digital silence, and with the pause's own sound
repeated (what the service does) -- and counts toneless syllable errors against the text (pypinyin), over the rows
of a labelled set that is not blind (default: the development set P) rendered in Kokoro voices (bench/voices.py,
cached) through radio_degrade.py at the SNR. Prints figures only.

    .venv/bin/python bench/pause_flush.py [SET.tsv] [--rows 60] [--voices zf_xiaoni zm_yunxi] [--snr 12]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pypinyin import lazy_pinyin
from rapidfuzz.distance import Levenshtein

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import asr.sherpa_engine as sherpa  # noqa: E402
from bench.dispatch_voices import is_blind, read_rows  # noqa: E402
from bench.machine import describe  # noqa: E402
from bench.segment_pauses import hiss, pauses, radio_degrader  # noqa: E402
from bench.voices import KokoroVoices  # noqa: E402
from bridge.audio import SAMPLE_RATE  # noqa: E402
from bridge.config import VadConfig  # noqa: E402
from bridge.decode import decode_file  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402

HISS_S = 2.0


def silence_flush(hearing: sherpa._Hearing) -> None:
    """The flush as it was before 4a634fd: digital silence."""
    start = hearing._fed_s
    hearing.accept(np.zeros(int(sherpa.PAUSE_FLUSH_S * SAMPLE_RATE), np.float32))
    hearing._silence.append((start, hearing._fed_s - start))


def decode(engine: sherpa.SherpaEngine, pcm: bytes, pauses_s: list[float]) -> list[str]:
    """Toneless syllables of the final transcript, the stream flushed (pause_partial) at each of `pauses_s`."""
    stream = engine.start_stream(alternatives=False)
    fed = 0
    for t in pauses_s:
        cut = int(t * SAMPLE_RATE) * 2
        stream.feed(pcm[fed:cut])
        fed = cut
        stream.pause_partial()
    stream.feed(pcm[fed:])
    return [re.sub(r"\d", "", s) for s in stream.finish().pinyin.split()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("set", nargs="?", type=Path, default=REPO / "tests" / "dispatch" / "dev" / "set_p.tsv")
    p.add_argument("--rows", type=int, default=60)
    p.add_argument("--voices", nargs="+", default=["zf_xiaoni", "zm_yunxi"])
    p.add_argument("--snr", type=float, default=12.0)
    args = p.parse_args()
    if is_blind(args.set):
        p.error("not for a blind set: the rows' text is compared here")
    print(describe())
    try:
        tts = KokoroVoices()
    except FileNotFoundError as e:
        print(f"{e}: nothing to measure", file=sys.stderr)
        return
    engine = sherpa.SherpaEngine(shared_dir() / "models" / "sherpa-onnx-kws-zipformer-wenetspeech-3.3M-2024-01-01-mobile")
    degrader, rng = radio_degrader(), np.random.default_rng(0)
    flushes: dict[str, Callable[[sherpa._Hearing], None]] = {"digital silence": silence_flush,
                                                              "the pause's own sound": sherpa._Hearing.flush}  # fmt: skip
    errors = dict.fromkeys(["never flushed", *flushes], 0)
    syllables = calls = 0
    with tempfile.TemporaryDirectory() as tmp:
        for row in read_rows(args.set)[: args.rows]:
            for voice in args.voices:
                radio = Path(tmp) / f"{voice}.wav"
                degrader.main([str(tts.render(row.text, voice)), str(radio), "--snr", str(args.snr), "--click",
                               "--squelch-tail", "0.3", "--seed", "1"])  # fmt: skip
                pcm = decode_file(radio)
                quiet = hiss(HISS_S, rng)
                inside = [e.at - HISS_S for e in pauses(quiet + pcm + quiet, VadConfig())
                          if e.at - HISS_S < len(pcm) / (2 * SAMPLE_RATE) - 0.5]  # fmt: skip
                if not inside:
                    continue
                truth = [s for s in lazy_pinyin(row.text) if s.isalpha()]
                calls += 1
                syllables += len(truth)
                errors["never flushed"] += Levenshtein.distance(truth, decode(engine, pcm, []))
                for name, flush in flushes.items():
                    sherpa._Hearing.flush = flush  # type: ignore[method-assign]
                    errors[name] += Levenshtein.distance(truth, decode(engine, pcm, inside))
                sherpa._Hearing.flush = flushes["the pause's own sound"]  # type: ignore[method-assign]
    print(f"{calls} renderings with a pause inside, {syllables} syllables, SNR {args.snr:g} dB: toneless syllable errors")
    for name, n in errors.items():
        print(f"  {name}: {n} ({100 * n / max(1, syllables):.1f} %)")


if __name__ == "__main__":
    main()
