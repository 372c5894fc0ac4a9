"""The one audio format inside jingbao, and the frame that carries it.

Every source converts whatever it receives to 16 kHz mono signed 16-bit little-endian PCM and cuts it into
20 ms frames (what webrtcvad accepts, and a common RTP packetisation). Everything downstream relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 320
SAMPLE_WIDTH = 2
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH  # 640


@dataclass(slots=True, frozen=True)
class Frame:
    """20 ms of 16 kHz mono int16 PCM.

    `ts` is the wall-clock time (UTC epoch seconds) of the frame's first sample. `carrier` is the channel's
    carrier/COR line state when it has one (None when the channel has no such signal).
    """

    pcm: bytes
    ts: float
    carrier: bool | None = None


def pcm_to_float(pcm: bytes) -> np.ndarray:
    """int16 PCM bytes -> float32 samples in [-1, 1) (what the speech models take)."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> int16 PCM bytes, clipped."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def levels_dbfs(pcm: bytes) -> tuple[float, float]:
    """(peak, rms) of int16 PCM in dBFS; -120 for digital silence."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    if x.size == 0:
        return -120.0, -120.0
    peak = float(np.max(np.abs(x))) / 32768.0
    rms = float(np.sqrt(np.mean(x * x))) / 32768.0
    return _db(peak), _db(rms)


def _db(amplitude: float) -> float:
    return max(-120.0, 20.0 * float(np.log10(amplitude))) if amplitude > 0 else -120.0
