"""Radio-degraded copies of the spoken demo calls, and where the speech in a recording begins and ends.

The copies are made by ../shared/tools/radio_degrade.py itself (the same degradation the demo uses), once per
session per setting, into pytest's temporary directory. The script is loaded and its `main` called in this
interpreter (the venv's python): one subprocess per file would spend seconds importing scipy each time.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from bench.loadgen import voice_band_db
from bridge.audio import SAMPLE_RATE
from tests.conftest import RADIO_DEGRADE

LEAD_S = 1.0
CLICK_S = 0.02  # the key-up click sits between the lead silence and the speech
RADIO_FLAGS = ("--click", "--squelch-tail", "0.3", "--lead", str(LEAD_S), "--trail", "1.5")


@dataclass(frozen=True)
class RadioCall:
    clean: Path
    radio: Path

    @property
    def speech_offset_s(self) -> float:
        """Where the clean call's first sample lands in the radio copy."""
        return LEAD_S + CLICK_S


def load_degrader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("radio_degrade", RADIO_DEGRADE)
    assert spec and spec.loader, RADIO_DEGRADE
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session", name="radio_calls")
def radio_calls_fixture(calls_audio: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[float], list[RadioCall]]:
    """radio_calls(snr) -> every demo call with click, squelch tail and noise at that SNR (made once per session)."""
    degrader = load_degrader()
    made: dict[float, list[RadioCall]] = {}

    def make(snr: float) -> list[RadioCall]:
        if snr not in made:
            out = tmp_path_factory.mktemp(f"radio_snr{snr:g}")
            calls = []
            for clean in sorted(calls_audio.glob("c*.wav")):
                radio = out / clean.name
                degrader.main([str(clean), str(radio), "--snr", str(snr), *RADIO_FLAGS])
                calls.append(RadioCall(clean, radio))
            made[snr] = calls
        return made[snr]

    return make


def speech_span(pcm: bytes, below_peak_db: float = 25.0) -> tuple[float, float]:
    """(onset, offset) in seconds: the first and last 10 ms whose voice-band (300-3400 Hz) energy is within
    `below_peak_db` of the loudest 10 ms. The band keeps mains hum and DC steps from passing for speech."""
    db = voice_band_db(pcm)
    loud = np.flatnonzero(db > db.max() - below_peak_db)
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def pad_with_silence(pcm: bytes, seconds: float) -> bytes:
    """Digital silence each side. The recording's DC offset is removed and its ends faded over 20 ms first, so the
    step into silence is not a click of its own."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    x = x - x.mean()
    ramp = np.linspace(0.0, 1.0, 320)
    x[:320] *= ramp
    x[-320:] *= ramp[::-1]
    pad = bytes(round(seconds * SAMPLE_RATE) * 2)
    return pad + np.clip(x, -32768, 32767).astype("<i2").tobytes() + pad
