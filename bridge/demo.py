"""Prepare the demo channels' audio: the demo dispatch calls, made to sound like an intercom, one folder per channel.

Spoken calls come from ../shared/audio/calls when present (read from there, never committed: their voice is
licensed for non-commercial use only); otherwise each call is synthesised here with espeak-ng's Mandarin voice.
Either way the audio is degraded like a radio channel: with ../shared/tools/radio_degrade.py when it is there, or
with sox (voice band and noise) otherwise.

Usage: python -m bridge.demo [--out var/demo-audio]
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CALLS_TSV = REPO / "config" / "demo-calls.tsv"
SPOKEN_CALLS = SHARED / "audio" / "calls"
RADIO_DEGRADE = SHARED / "tools" / "radio_degrade.py"


def prepare(out: Path, seed: int = 7) -> int:
    """Write out/<channel>/<call>.wav for every demo call; returns how many were written. Idempotent."""
    rng = random.Random(seed)
    written = 0
    with CALLS_TSV.open(encoding="utf-8") as f:
        calls = list(csv.DictReader(f, delimiter="\t"))
    for call in calls:
        dst = out / call["channel"] / f"{call['id']}.wav"
        snr = rng.choice([30, 25, 20, 15])
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            clean = SPOKEN_CALLS / f"{call['id']}.wav"
            if not clean.exists():
                clean = Path(tmp) / "clean.wav"
                _synthesise(call["text"], clean)
            part = dst.with_suffix(".part.wav")
            _degrade(clean, part, snr, seed=rng.randrange(1 << 30))
            part.replace(dst)
        written += 1
    return written


def _synthesise(text: str, dst: Path) -> None:
    subprocess.run(["espeak-ng", "-v", "cmn", "-s", "150", "-w", str(dst), text], check=True, capture_output=True)


def _degrade(src: Path, dst: Path, snr: float, seed: int) -> None:
    if RADIO_DEGRADE.exists():
        cmd = [sys.executable, str(RADIO_DEGRADE), str(src), str(dst), "--snr", str(snr), "--click",
               "--squelch-tail", "0.3", "--lead", "0.3", "--trail", "0.5", "--seed", str(seed)]
        subprocess.run(cmd, check=True, capture_output=True)
        return
    # sox: band-limit to the voice band at 16 kHz mono, then mix in white noise about `snr` dB down.
    noise_gain = f"{-snr - 3:.1f}"
    with tempfile.TemporaryDirectory() as tmp:
        band = Path(tmp) / "band.wav"
        subprocess.run(["sox", str(src), "-r", "16000", "-c", "1", "-b", "16", str(band), "sinc", "300-3400",
                        "norm", "-3", "pad", "0.3", "0.8"], check=True, capture_output=True)
        noise = Path(tmp) / "noise.wav"
        length = subprocess.run(["soxi", "-D", str(band)], check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth", length, "whitenoise",
                        "gain", noise_gain], check=True, capture_output=True)
        subprocess.run(["sox", "-m", str(band), str(noise), str(dst)], check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "var" / "demo-audio")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not shutil.which("ffmpeg"):
        logger.error("ffmpeg is missing: run `make run` (it installs it)")
        return 2
    source = "spoken calls from ../shared/audio/calls" if SPOKEN_CALLS.exists() else "espeak-ng synthesis"
    n = prepare(args.out)
    if n:
        logger.info("demo audio: %d calls prepared in %s (%s)", n, args.out, source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
