"""How many channels one core segments in real time.

Runs one Segmenter (default VadConfig) over real speech from ../shared/audio, each file followed by as much silence
with faint hiss (a channel is mostly idle), in this single process, and times feed() for every 20 ms frame:
events included, decoding excluded. Prints the machine, frames/s, the real-time factor and channels per core.

    .venv/bin/python bench/segment_throughput.py [--seconds 120]

`segment_bench()` returns the figures as a dict, so other benches (the archive's) can be printed beside them.
"""

from __future__ import annotations

import argparse
import csv
import platform
import time

import numpy as np
from archive_throughput import archive_bench  # a sibling script: bench/ is on sys.path when one is run
from machine import cpu_model  # a sibling script: bench/ is on sys.path when one is run

from bridge.audio import FRAME_MS, Frame
from bridge.config import VadConfig
from bridge.decode import decode_file, iter_frames
from bridge.segmenter import Segmenter
from bridge.shared import shared_dir

SHARED_AUDIO = shared_dir() / "audio"


def channel_audio(seconds: float) -> list[Frame]:
    """Real speech, each file followed by the same length of faint hiss, repeated to `seconds` of audio."""
    with open(SHARED_AUDIO / "manifest.tsv", encoding="utf-8") as f:
        files = [SHARED_AUDIO / row["file"] for row in csv.DictReader(f, delimiter="\t")]
    rng = np.random.default_rng(0)
    one_pass = bytearray()
    for path in files:
        speech = decode_file(path)
        hiss = (rng.standard_normal(len(speech) // 2) * 30).astype("<i2").tobytes()  # about -60 dBFS
        one_pass += speech + hiss
    pcm = bytes(one_pass) * max(1, round(seconds * 32_000 / len(one_pass)))
    return list(iter_frames(pcm))


def segment_bench(seconds: float = 120.0, repeats: int = 3) -> dict:
    """Time the segmenter over `seconds` of channel audio; the best of `repeats` runs (least disturbed by others)."""
    frames = channel_audio(seconds)
    best = float("inf")
    events = 0
    for _ in range(repeats):
        segmenter = Segmenter("bench", VadConfig())
        events = 0
        t0 = time.perf_counter()
        for frame in frames:
            events += len(segmenter.feed(frame))
        best = min(best, time.perf_counter() - t0)
    audio_s = len(frames) * FRAME_MS / 1000
    us_per_frame = best / len(frames) * 1e6
    return {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "audio_s": round(audio_s, 1),
        "frames": len(frames),
        "events": events,
        "us_per_frame": round(us_per_frame, 2),
        "frames_per_s": round(len(frames) / best),
        "realtime_factor": round(audio_s / best),
        "channels_per_core": int(audio_s / best),  # each channel needs 1 s of CPU budget per s of audio
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="at least this much channel audio, s")
    parser.add_argument("--no-archive", action="store_true", help="skip the archive's utterances-per-second figures")
    args = parser.parse_args()
    r = segment_bench(args.seconds)
    print(f"machine: {r['cpu']}, Python {r['python']}, one process, one core")
    print(f"segmenter: {r['audio_s']} s of audio ({r['frames']} frames of {FRAME_MS} ms, {r['events']} events)")
    print(f"  {r['us_per_frame']} µs per frame, {r['frames_per_s']:,} frames/s")
    print(f"  real-time factor {r['realtime_factor']:,}x")
    print(f"  channels per core in real time: {r['channels_per_core']:,} (goal >= 500)")
    if not args.no_archive:
        a = archive_bench(count=10)
        print(f"archive: {a['utterance_s']:.0f} s utterances stored (encode + fsync + hash-chained row), utterances/s:")
        for key, rate in a["utterances_per_s"].items():
            fmt, threads = key.split("_threads")
            print(f"  {fmt:<5} {threads} thread(s): {rate:7.1f}")


if __name__ == "__main__":
    main()
