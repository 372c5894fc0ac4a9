"""Decode any audio file ffmpeg reads into jingbao's one format (16 kHz mono int16), with clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydub import AudioSegment

from bridge.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, SAMPLE_WIDTH, Frame


class AudioDecodeError(Exception):
    """The file is missing, unreadable, or not audio ffmpeg can decode."""


def decode_file(path: Path | str) -> bytes:
    """Whole file -> 16 kHz mono int16 PCM. Multi-channel input is mixed down; 8/24/32-bit and float are converted.

    Zero-length audio decodes to b"" (nothing to segment), which is not an error.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise AudioDecodeError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise AudioDecodeError(f"{path}: empty file (0 bytes)")
    except OSError as e:  # e.g. a folder on the way that we may not enter
        raise AudioDecodeError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        seg = AudioSegment.from_file(path)
        seg = seg.set_channels(1).set_sample_width(SAMPLE_WIDTH).set_frame_rate(SAMPLE_RATE)
    except Exception as e:
        # Whatever the file holds must not take a channel down: besides CouldntDecodeError and OSError, odd headers
        # that ffmpeg passes through make pydub / audioop fail in their own ways (0 channels: ZeroDivisionError,
        # 0 Hz or 7-bit samples: audioop.error), so every failure here is a decode failure of this one file.
        first = str(e).strip().splitlines()[-1:] or [type(e).__name__]
        raise AudioDecodeError(f"{path}: cannot decode audio ({first[0][:200]})") from e
    return seg.raw_data


def iter_frames(pcm: bytes, start: float = 0.0, pad_last: bool = True) -> Iterator[Frame]:
    """Cut PCM into 20 ms frames timestamped from `start`; a short last frame is zero-padded (or dropped)."""
    step = FRAME_MS / 1000.0
    for i, offset in enumerate(range(0, len(pcm), FRAME_BYTES)):
        chunk = pcm[offset : offset + FRAME_BYTES]
        if len(chunk) < FRAME_BYTES:
            if not pad_last:
                return
            chunk = chunk + bytes(FRAME_BYTES - len(chunk))
        yield Frame(chunk, start + i * step)
