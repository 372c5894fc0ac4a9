"""Files a channel or `jingbao segment` may be handed that are not what they claim: odd WAV headers, unreadable
files and folders. Each is a clear error or a counted rejection of that file, never a crash of the channel.

Permission tests run as an unprivileged user (nobody) when the suite runs as root, since root reads everything.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.audio import FRAME_BYTES
from bridge.config import FileSource
from bridge.decode import AudioDecodeError, decode_file
from bridge.sources import FileInput, open_source
from tests.conftest import REPO
from tests.support.audio_check import collect

NOBODY = 65534


def wav_with_header(path: Path, channels: int, rate: int, bits: int, data: bytes = bytes(3200)) -> Path:
    """A RIFF/WAVE file whose fmt chunk says exactly what it is told to (the wave module refuses odd values)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def tone_wav(path: Path, seconds: float = 1.0) -> Path:
    """A readable 16 kHz mono WAV (a 440 Hz tone), written with the wave module."""
    import numpy as np

    t = np.arange(int(16000 * seconds)) / 16000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())
    return path


ODD_HEADERS = [  # name, channels, rate, bits: each failed outside pydub's CouldntDecodeError before
    ("zero-channels.wav", 0, 16000, 16),  # ZeroDivisionError in pydub
    ("zero-hz.wav", 1, 0, 16),  # audioop.error: sampling rate not > 0
    ("seven-bit.wav", 1, 16000, 7),  # audioop.error: Size should be 1, 2, 3 or 4
]


def jingbao(*args: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    return python("-m", "bridge.cli", *args, as_nobody=as_nobody)


def python(*args: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """Run this Python in the repository; as_nobody: without root's power to read anything (util-linux setpriv)."""
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if as_nobody and os.geteuid() == 0 else []
    return subprocess.run([*drop, sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("name", "channels", "rate", "bits"), ODD_HEADERS)
def test_odd_wav_header_is_a_decode_error(tmp_path: Path, name: str, channels: int, rate: int, bits: int) -> None:
    odd = wav_with_header(tmp_path / name, channels, rate, bits)
    with pytest.raises(AudioDecodeError, match=rf"{name}: cannot decode audio"):
        decode_file(odd)


@pytest.mark.parametrize(("name", "channels", "rate", "bits"), ODD_HEADERS)
def test_segment_cli_names_an_odd_file_without_a_traceback(
    tmp_path: Path, name: str, channels: int, rate: int, bits: int
) -> None:
    done = jingbao("segment", str(wav_with_header(tmp_path / name, channels, rate, bits)), "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and name in done.stderr and "cannot decode audio" in done.stderr


# A channel decodes with ffmpeg itself (a stream, bridge.decode.decode_stream), which reads a 7-bit header as 8-bit
# samples: that file plays (as whatever it holds) instead of being refused, as pydub refused it in decode_file.
REFUSED_BY_FFMPEG = [header for header in ODD_HEADERS if header[3] != 7]


async def test_a_file_channel_skips_odd_files_and_plays_the_next(tmp_path: Path) -> None:
    odd = [wav_with_header(tmp_path / name, c, r, b) for name, c, r, b in REFUSED_BY_FFMPEG]
    good = tone_wav(tmp_path / "good.wav")
    source = open_source("t1", FileSource(type="file", paths=[*odd, good], realtime=False))
    assert isinstance(source, FileInput)
    frames = await collect(source)
    assert b"".join(f.pcm for f in frames) == decode_file(good)
    assert source.stats.rejected == len(REFUSED_BY_FFMPEG) and source.stats.errors == 0
    assert "zero-hz.wav: cannot decode audio" in (source.stats.last_error or "")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="jingbao-perm-"))
    path.chmod(0o755)
    yield path
    for p in path.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(path)


def test_segment_cli_reports_a_file_in_an_unreadable_folder(shared_tmp: Path) -> None:
    locked = shared_tmp / "locked"
    locked.mkdir()
    tone_wav(locked / "call.wav")
    locked.chmod(0o000)
    done = jingbao("segment", str(locked / "call.wav"), as_nobody=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "call.wav" in done.stderr and "Permission denied" in done.stderr


def test_a_file_channel_skips_an_unreadable_folder_and_plays_the_others(shared_tmp: Path) -> None:
    locked, readable = shared_tmp / "locked", shared_tmp / "readable"
    locked.mkdir()
    readable.mkdir()
    tone_wav(locked / "a.wav")
    tone_wav(readable / "b.wav", seconds=0.5)
    locked.chmod(0o000)
    script = textwrap.dedent(f"""
        import asyncio, json
        from pathlib import Path
        from bridge.config import FileSource
        from bridge.sources import open_source

        async def main():
            source = open_source("t1", FileSource(type="file", paths=[Path({str(locked)!r}), Path({str(readable)!r})],
                                                  realtime=False))
            frames = [f async for f in source.frames()]
            print(json.dumps({{"frames": len(frames), "rejected": source.stats.rejected,
                               "last_error": source.stats.last_error}}))

        asyncio.run(main())
    """)
    done = python("-c", script, as_nobody=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["frames"] == 8000 * 2 // FRAME_BYTES  # 0.5 s of b.wav
    assert result["rejected"] == 1 and "locked: cannot list (Permission denied)" in result["last_error"]
