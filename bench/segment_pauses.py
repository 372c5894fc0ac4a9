"""Pauses the segmenter reports inside speech and at its end, on clean and radio-degraded Mandarin.

A pause (UtterancePaused, after `vad.sentence_end_ms` of quiet) is when dispatch reads what was said so far; the
earlier in a call it comes, the earlier the alert (docs/dispatch.md, "Provisional alerts"). This counts, per
material and SNR, against the clean recording (its 10 ms voice-band levels; quiet = `QUIET_BELOW_PEAK_DB` below its
loudest):
- gaps: the clean speech's quiet stretches of at least `GAP_S` between its first and last sound (a comma's breath);
  heard: those a pause was reported in;
- false: pauses reported where the clean speech was not quiet (inside a word: the recogniser's stream is flushed
  there for nothing, and a reading of a half-said clause is acted on);
- end: the last sound -> the pause after it (what a call ending on its incident word waits for), p50 / p95, and calls
  whose end was never reported as a pause.

Radio copies are made by ../shared/tools/radio_degrade.py as bench/load.py makes them (key-up click, 0.3 s squelch
tail, pink noise at the SNR over the transmission) and put between `HISS_S` of the quiet channel's hiss (-62 dBFS),
the hard case: the quiet channel is far below the noise under the speech.

    .venv/bin/python bench/segment_pauses.py [--snr 20 15 12 10 5]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from loadgen import voice_band_db  # a sibling script: bench/ is on sys.path when one is run
from machine import describe

from bridge.audio import SAMPLE_RATE
from bridge.config import VadConfig
from bridge.decode import decode_file, iter_frames
from bridge.events import UtterancePaused
from bridge.segmenter import Segmenter
from bridge.shared import shared_dir

SHARED = shared_dir()
HISS_S = 2.0
CLICK_S = 0.02  # radio_degrade puts the key-up click before the speech
QUIET_BELOW_PEAK_DB = 30.0
GAP_S = 0.2


@dataclass
class Counts:
    gaps: int = 0
    heard: int = 0
    false: int = 0
    unheard_ends: int = 0
    calls: int = 0
    end_delays: list[float] = field(default_factory=list)  # last sound -> the pause after it, s


def quiet_frames(clean: bytes) -> tuple[np.ndarray, float, float]:
    """Per 10 ms of the clean recording: is it quiet? And its first and last sound (s)."""
    db = voice_band_db(clean)
    quiet = db < db.max() - QUIET_BELOW_PEAK_DB
    sounding = np.flatnonzero(~quiet)
    return quiet, sounding[0] * 0.01, (sounding[-1] + 1) * 0.01


def gaps_in(quiet: np.ndarray, onset: float, offset: float) -> list[tuple[float, float]]:
    gaps, start = [], None
    for k in range(round(onset * 100), round(offset * 100)):
        if quiet[k] and start is None:
            start = k
        elif not quiet[k] and start is not None:
            if (k - start) * 0.01 >= GAP_S:
                gaps.append((start * 0.01, k * 0.01))
            start = None
    return gaps


def pauses(pcm: bytes, vad: VadConfig) -> list[UtterancePaused]:
    segmenter = Segmenter("bench", vad)
    events = [e for frame in iter_frames(pcm) for e in segmenter.feed(frame)] + segmenter.flush()
    return [e for e in events if isinstance(e, UtterancePaused) and not e.settled]  # a pause once, settled or not


def score(clean: bytes, heard: list[UtterancePaused], offset_s: float, counts: Counts) -> None:
    """`heard`'s times are seconds into a recording where the clean one starts at `offset_s`."""
    quiet, onset, offset = quiet_frames(clean)
    gaps = gaps_in(quiet, onset, offset)
    times = [(p.speech_end - offset_s, p.at - offset_s) for p in heard]
    counts.calls += 1
    counts.gaps += len(gaps)
    counts.heard += sum(any(a <= end + 0.05 and at - 0.02 <= b + 0.05 for end, at in times) for a, b in gaps)
    for end, at in times:
        span = quiet[max(0, round(end * 100)) : max(0, round((at - 0.02) * 100))]
        if end < offset - 0.05 and (span.size == 0 or span.mean() < 0.75):
            counts.false += 1
    after = [at - offset for end, at in times if end >= offset - 0.1]
    if after:
        counts.end_delays.append(min(after))
    else:
        counts.unheard_ends += 1


def radio_degrader():
    spec = importlib.util.spec_from_file_location("radio_degrade", SHARED / "tools" / "radio_degrade.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hiss(seconds: float, rng: np.random.Generator) -> bytes:
    return (rng.standard_normal(round(seconds * SAMPLE_RATE)) * 32768 * 10 ** (-62 / 20)).astype("<i2").tobytes()


def materials() -> dict[str, list[Path]]:
    with open(SHARED / "audio" / "manifest.tsv", encoding="utf-8") as f:
        real = [SHARED / "audio" / row["file"] for row in csv.DictReader(f, delimiter="\t")]
    return {"demo calls": sorted((SHARED / "audio" / "calls").glob("c*.wav")), "real recordings": real}


def run(snrs: list[float], vad: VadConfig, tmp: Path) -> None:
    degrader = radio_degrader()
    rng = np.random.default_rng(0)
    print("material, SNR: gaps heard | false pauses | last sound -> pause p50 / p95 | ends with no pause")
    for name, files in materials().items():
        for snr in [None, *snrs]:
            counts = Counts()
            for path in files:
                clean = decode_file(path)
                if snr is None:
                    pcm, offset = bytes(int(HISS_S * SAMPLE_RATE) * 2) + clean + bytes(SAMPLE_RATE * 4), HISS_S
                else:
                    out = tmp / f"{path.stem}-{snr:g}.wav"
                    if not out.exists():
                        degrader.main([str(path), str(out), "--snr", str(snr), "--click", "--squelch-tail", "0.3",
                                       "--seed", "0"])
                    pcm = hiss(HISS_S, rng) + decode_file(out) + hiss(4.0, rng)
                    offset = HISS_S + CLICK_S
                score(clean, pauses(pcm, vad), offset, counts)
            delays = sorted(counts.end_delays)
            p95 = delays[int(0.95 * (len(delays) - 1))] if delays else float("nan")
            print(f"{name}, {'clean' if snr is None else f'{snr:g} dB'}: {counts.heard} of {counts.gaps} | "
                  f"{counts.false} | {statistics.median(delays) if delays else float('nan'):.2f} / {p95:.2f} s | "
                  f"{counts.unheard_ends} of {counts.calls}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snr", type=float, nargs="+", default=[20.0, 15.0, 12.0, 10.0, 5.0])
    args = p.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        run(args.snr, VadConfig(), Path(tmp))


if __name__ == "__main__":
    main()
