"""Checks on what sources yield: collect frames, compare loudness envelopes (robust to resampling, codecs, gain and
a time offset), and the spacing of frame stamps."""

from __future__ import annotations

from contextlib import aclosing
from itertools import pairwise

import numpy as np

from bridge.audio import FRAME_SAMPLES, Frame
from bridge.sources import Source


async def collect(source: Source, limit: int | None = None) -> list[Frame]:
    """Frames of one frames() call, until it ends or `limit` frames came; then the source is closed, as a channel
    that stops closes it (a file source's decoder ends with it)."""
    frames: list[Frame] = []
    async with aclosing(source.frames()) as stream:
        async for frame in stream:
            frames.append(frame)
            if limit is not None and len(frames) >= limit:
                break
    return frames


def stamp_steps(frames: list[Frame]) -> set[float]:
    """The distinct gaps between consecutive frames' stamps, rounded to the microsecond."""
    return {round(b.ts - a.ts, 6) for a, b in pairwise(frames)}


def envelope_db(pcm: bytes) -> np.ndarray:
    """Level of each 20 ms frame of 16 kHz int16 PCM, in dB (floored at -60 dBFS so silence does not dominate)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    x = x[: len(x) - len(x) % FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    return 10 * np.log10(np.maximum(np.mean(x * x, axis=1), 1e-6))


def envelope_match(reference: bytes, captured: bytes, max_lag_frames: int = 0) -> tuple[float, int]:
    """(best Pearson correlation of the envelopes, lag in frames of `captured` behind `reference` at that best)."""
    ref, cap = envelope_db(reference), envelope_db(captured)
    best = (-1.0, 0)
    for lag in range(0, max_lag_frames + 1):
        n = min(len(ref), len(cap) - lag)
        if n < 10:
            break
        corr = float(np.corrcoef(ref[:n], cap[lag : lag + n])[0, 1])
        best = max(best, (corr, lag))
    return best
