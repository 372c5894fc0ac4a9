"""Helpers for the archive tests: real speech as PCM, utterances made from it, a storage config in tmp_path."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bridge.config import StorageConfig
from bridge.decode import decode_file
from bridge.events import Utterance, new_utterance_id
from tests.conftest import SHARED_AUDIO

SPEECH_FILE = SHARED_AUDIO / "aishell1_BAC009S0724W0121.wav"
DAY_START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
_offsets = itertools.count()


@pytest.fixture(scope="session")
def speech_pcm() -> bytes:
    """About 4 s of real Mandarin speech, 16 kHz mono int16."""
    if not SPEECH_FILE.is_file():
        pytest.fail(f"test material missing: {SPEECH_FILE} (tests read it from ../shared)")
    return decode_file(SPEECH_FILE)


def make_utterance(pcm: bytes, channel: str = "ch-test", start: float | None = None) -> Utterance:
    """An utterance of `pcm`; each call without `start` gets a distinct start a few seconds after the last."""
    if start is None:
        start = DAY_START + 10.0 * next(_offsets)
    return Utterance(new_utterance_id(start), channel, start, start + len(pcm) / 32_000, pcm)


def storage(
    data_dir: Path, audio_format: str = "wav", opus_bitrate: str = "24k", reserve_mb: float = 0, spill_dir: Path | None = None
) -> StorageConfig:
    """No reserve for the database unless asked (a test's 2 MB disk has no room for the default)."""
    return StorageConfig(data_dir=data_dir, audio_format=audio_format, opus_bitrate=opus_bitrate, reserve_mb=reserve_mb,
                         spill_dir=spill_dir)  # fmt: skip
