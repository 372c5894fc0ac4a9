"""16 kHz mono int16 PCM as the bytes of a WAV file, for tests that upload or serve audio."""

from __future__ import annotations

import io
import wave


def wave_bytes(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()
