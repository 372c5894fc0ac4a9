"""The segmenter on real speech (../shared/audio) and on the demo calls degraded like a radio channel, with default
settings, plus the `jingbao segment` command.

Bounds are what was measured with the defaults, with some room, and tight enough that the mistakes that matter
fail: no pre-roll or a late trigger clips the onset, no noise gates open on the lead hiss (start near 0) or glue the
squelch tail on (end about 1.5 s after speech), a short hang-over splits calls.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.config import VadConfig
from bridge.decode import decode_file, iter_frames
from bridge.events import SegmentEvent, Utterance, UtteranceDiscarded
from bridge.segmenter import Segmenter, segment_pcm
from tests.conftest import REPO
from tests.support.radio import RadioCall, pad_with_silence, radio_calls_fixture, speech_span  # noqa: F401 (fixture)

PAD_S = 1.0
# measured with the defaults over the 53 files: start - onset <= -0.33 s, end - offset >= +0.80 s, 51 files in one
# utterance and 2 (long pauses mid-sentence) in two
CLEAN_START_BEFORE_ONSET_S = 0.25
CLEAN_END_AFTER_OFFSET_S = 0.5
CLEAN_FILES_SPLIT_MAX = 3
# measured over the 30 calls at SNR 20 and 10: start - onset in [-0.41, -0.30] s, end - offset in [+0.54, +1.08] s
RADIO_START_BEFORE_ONSET_S = (0.25, 0.8)
RADIO_END_AFTER_OFFSET_S = (0.3, 1.2)


def manifest_files(shared_audio: Path) -> list[Path]:
    with open(shared_audio / "manifest.tsv", encoding="utf-8") as f:
        return [shared_audio / row["file"] for row in csv.DictReader(f, delimiter="\t")]


def test_real_speech_is_found_whole(shared_audio: Path):
    split = []
    for path in manifest_files(shared_audio):
        pcm = pad_with_silence(decode_file(path), PAD_S)
        onset, offset = speech_span(pcm)
        utterances = segment_pcm(pcm, VadConfig())
        assert utterances, f"{path.name}: no utterance"
        first, last = utterances[0], utterances[-1]
        assert 0.0 <= first.start <= onset - CLEAN_START_BEFORE_ONSET_S, f"{path.name}: onset {onset:.2f} clipped"
        assert last.end >= offset + CLEAN_END_AFTER_OFFSET_S, f"{path.name}: speech to {offset:.2f} cut at {last.end:.2f}"
        if len(utterances) > 1:
            split.append(path.name)
    assert len(split) <= CLEAN_FILES_SPLIT_MAX, split


def run_events(pcm: bytes) -> list[SegmentEvent]:
    segmenter = Segmenter("radio", VadConfig())
    events: list[SegmentEvent] = []
    for frame in iter_frames(pcm):
        events.extend(segmenter.feed(frame))
    return events + segmenter.flush()


@pytest.mark.parametrize("snr", [20, 10])
def test_radio_call_is_one_utterance_without_click_or_squelch_tail(
    radio_calls: Callable[[float], list[RadioCall]], snr: int
):
    calls = radio_calls(snr)
    assert len(calls) == 30
    for call in calls:
        onset, offset = speech_span(decode_file(call.clean))
        onset += call.speech_offset_s
        offset += call.speech_offset_s
        events = run_events(decode_file(call.radio))
        utterances = [e for e in events if isinstance(e, Utterance)]
        assert [e for e in events if isinstance(e, UtteranceDiscarded)] == [], call.radio.name
        assert len(utterances) == 1, f"{call.radio.name}: {[(u.start, u.end) for u in utterances]}"
        (utt,) = utterances
        lo, hi = RADIO_START_BEFORE_ONSET_S
        assert onset - hi <= utt.start <= onset - lo, f"{call.radio.name}: start {utt.start:.2f}, speech from {onset:.2f}"
        lo, hi = RADIO_END_AFTER_OFFSET_S
        assert offset + lo <= utt.end <= offset + hi, f"{call.radio.name}: end {utt.end:.2f}, speech to {offset:.2f}"


def jingbao(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def test_segment_cli_prints_one_json_line_per_utterance(radio_calls: Callable[[float], list[RadioCall]]):
    call = radio_calls(10)[0]
    done = jingbao("segment", str(call.radio), "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 1
    (utt,) = lines
    assert set(utt) == {"start", "end", "duration"}
    onset, offset = speech_span(decode_file(call.clean))
    assert utt["start"] < onset + call.speech_offset_s < offset + call.speech_offset_s < utt["end"]
    assert utt["duration"] == pytest.approx(utt["end"] - utt["start"], abs=0.002)

    table = jingbao("segment", str(call.radio))
    assert table.returncode == 0 and f"{utt['start']:.3f}" in table.stdout


def test_segment_cli_rejects_corrupt_file_with_exit_2(tmp_path: Path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio at all")
    done = jingbao("segment", str(bad), "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "broken.wav" in done.stderr and "cannot decode" in done.stderr
