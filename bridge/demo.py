"""Prepare the demo channels' audio: the demo dispatch calls, made to sound like an intercom, one folder per channel.

Spoken calls come from ../shared/audio/calls when present (read from there, never committed: their voice is
licensed for non-commercial use only); otherwise each call is synthesised here with espeak-ng's Mandarin voice.
Either way the audio is degraded like a radio channel: with ../shared/tools/radio_degrade.py when it is there, or
with `radio_like` here otherwise, which does the same (voice band, band-limited hiss at the chosen SNR, key-up click,
squelch tail): a receiver's audio filter band-limits its hiss too, which is what the segmenter expects of a channel.

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
import wave
from pathlib import Path

import numpy as np

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
from bridge.decode import decode_file
from bridge.shared import shared_dir

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
SHARED = shared_dir()
CALLS_TSV = REPO / "config" / "demo-calls.tsv"
SPOKEN_CALLS = SHARED / "audio" / "calls"
RADIO_DEGRADE = SHARED / "tools" / "radio_degrade.py"
# how the demo calls sound on the air (the same settings for radio_degrade.py and for radio_like)
LEAD_S, CLICK_S, SQUELCH_TAIL_S, TRAIL_S = 0.3, 0.02, 0.3, 0.5
SPEECH_RMS = 0.1  # -20 dBFS
SQUELCH_TAIL_LEVEL = 0.3  # white noise scaled so, then band-limited: louder than the speech, as radio_degrade.py makes it
VOICE_BAND_HZ = (300.0, 3400.0)


def prepare(out: Path, seed: int = 7, spoken_calls: Path = SPOKEN_CALLS, degrade_tool: Path = RADIO_DEGRADE) -> int:
    """Write out/<channel>/<call>.wav for every demo call; returns how many were written. Idempotent.

    `spoken_calls` and `degrade_tool` are used when they exist (the defaults are in ../shared).
    """
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
            clean = spoken_calls / f"{call['id']}.wav"
            if not clean.exists():
                clean = Path(tmp) / "clean.wav"
                _synthesise(call["text"], clean)
            part = dst.with_suffix(".part.wav")
            _degrade(clean, part, snr, rng.randrange(1 << 30), degrade_tool)
            part.replace(dst)
        written += 1
    return written


def _synthesise(text: str, dst: Path) -> None:
    subprocess.run(["espeak-ng", "-v", "cmn", "-s", "150", "-w", str(dst), text], check=True, capture_output=True)


def _degrade(src: Path, dst: Path, snr: float, seed: int, tool: Path) -> None:
    if tool.exists():
        cmd = [sys.executable, str(tool), str(src), str(dst), "--snr", str(snr), "--click",
               "--squelch-tail", str(SQUELCH_TAIL_S), "--lead", str(LEAD_S), "--trail", str(TRAIL_S), "--seed", str(seed)]
        subprocess.run(cmd, check=True, capture_output=True)
        return
    pcm = radio_like(decode_file(src), snr, np.random.default_rng(seed))
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)


def radio_like(pcm: bytes, snr: float, rng: np.random.Generator) -> bytes:
    """16 kHz int16 speech -> what an intercom channel delivers, as radio_degrade.py makes it.

    Lead silence, a key-up click, the speech in the voice band at -20 dBFS RMS, a squelch tail (a burst of voice-band
    noise after release), trailing silence; hiss in the voice band `snr` dB below the speech over all of it.
    """
    speech = _voice_band(np.frombuffer(pcm, dtype="<i2") / 32768.0)
    speech *= SPEECH_RMS / max(_rms(speech), 1e-6)
    click = np.zeros(round(CLICK_S * SAMPLE_RATE))
    click[:40] = np.linspace(0.6, 0.0, 40)
    tail = _voice_band(rng.standard_normal(round(SQUELCH_TAIL_S * SAMPLE_RATE))) * SQUELCH_TAIL_LEVEL
    lead, trail = np.zeros(round(LEAD_S * SAMPLE_RATE)), np.zeros(round(TRAIL_S * SAMPLE_RATE))
    radio = np.concatenate([lead, click, speech, tail, trail])
    hiss = _voice_band(rng.standard_normal(radio.size))
    radio += hiss * (_rms(speech) / 10 ** (snr / 20.0) / max(_rms(hiss), 1e-9))
    return (np.clip(radio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def _voice_band(x: np.ndarray) -> np.ndarray:
    """Keep 300-3400 Hz, as a radio's audio filter does."""
    spectrum = np.fft.rfft(x)
    hz = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    spectrum[(hz < VOICE_BAND_HZ[0]) | (hz > VOICE_BAND_HZ[1])] = 0
    return np.fft.irfft(spectrum, x.size)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


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
