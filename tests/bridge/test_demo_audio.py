"""The demo's audio when ../shared is absent: calls synthesised with espeak-ng and made radio-like here. Each must
sound like a channel (click, squelch tail, band-limited hiss) and give the segmenter exactly one utterance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge import demo
from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
from bridge.config import VadConfig
from bridge.decode import decode_file
from bridge.segmenter import segment_pcm

# the speech sits between the lead + click and the squelch tail + trail
SPEECH_FROM_S = demo.LEAD_S + demo.CLICK_S
AFTER_SPEECH_S = demo.SQUELCH_TAIL_S + demo.TRAIL_S


@pytest.fixture(scope="module")
def fallback_calls(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("demo-audio")
    absent = out / "absent"  # neither the spoken calls nor radio_degrade.py: the fallback path
    assert demo.prepare(out, spoken_calls=absent, degrade_tool=absent) == 30
    return sorted(out.glob("*/*.wav"))


def test_every_synthesised_call_is_one_whole_utterance(fallback_calls: list[Path]) -> None:
    # measured: 30 of 30 found whole, none split (the white, full-band hiss this replaced lost 5 of 30)
    for path in fallback_calls:
        pcm = decode_file(path)
        total = len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)
        utterances = segment_pcm(pcm, VadConfig())
        assert len(utterances) == 1, f"{path.name}: {[(u.start, u.end) for u in utterances]}"
        (utt,) = utterances
        assert utt.start <= SPEECH_FROM_S, f"{path.name}: start {utt.start:.2f} clips the speech"
        # ended where its squelch tail begins (the tail left out): the speech, and espeak's own quiet after it, whole
        assert utt.reason == "squelch", f"{path.name}: ended by {utt.reason}"
        assert abs(utt.end - (total - AFTER_SPEECH_S)) <= 0.02, f"{path.name}: end {utt.end:.2f} of {total:.2f} s"


def test_a_synthesised_call_sounds_like_a_radio_channel(fallback_calls: list[Path]) -> None:
    x = np.frombuffer(decode_file(fallback_calls[0]), dtype="<i2") / 32768.0
    lead, click_at = x[: round(demo.LEAD_S * SAMPLE_RATE) - 1], round(demo.LEAD_S * SAMPLE_RATE)
    assert np.max(np.abs(x[click_at : click_at + 40])) > 0.4 > 10 * np.max(np.abs(lead))  # a click out of hiss
    tail_end = x.size - round(demo.TRAIL_S * SAMPLE_RATE)
    tail = x[tail_end - round(demo.SQUELCH_TAIL_S * SAMPLE_RATE) : tail_end]
    trail = x[tail_end:]
    assert np.sqrt(np.mean(tail**2)) > 10 * np.sqrt(np.mean(trail**2))  # the squelch burst, then hiss only
    power = np.abs(np.fft.rfft(trail)) ** 2
    hz = np.fft.rfftfreq(trail.size, 1 / SAMPLE_RATE)
    assert power[hz > 3600].sum() < 0.01 * power.sum()  # the hiss is band-limited like a receiver's audio
