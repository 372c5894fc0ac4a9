"""Decode any audio file ffmpeg reads into jingbao's one format (16 kHz mono int16), with clear errors.

Two ways: `decode_stream` for a file played as a channel (any length: it is read as ffmpeg decodes it, 20 ms at a
time, on the event loop without blocking it), `decode_file` for callers that need a short file whole (an archived
utterance, a call for a benchmark or `jingbao segment`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from pydub import AudioSegment

from bridge.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, SAMPLE_WIDTH, Frame

# ffmpeg's output: the first audio stream, mixed down to mono, resampled, as raw 16-bit little-endian samples.
REAP_TIMEOUT_S = 2.0  # a killed ffmpeg is gone in milliseconds; longer means its exit went unreported
FFMPEG_TO_PCM = ["-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]


class AudioDecodeError(Exception):
    """The file is missing, unreadable, or not audio ffmpeg can decode."""


def _check_readable(path: Path) -> None:
    """A missing, empty or unreachable file, said plainly (ffmpeg's own words for these are obscure)."""
    try:
        if not path.is_file():
            raise AudioDecodeError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise AudioDecodeError(f"{path}: empty file (0 bytes)")
    except OSError as e:  # e.g. a folder on the way that we may not enter
        raise AudioDecodeError(f"{path}: cannot read ({e.strerror or e})") from e


async def decode_stream(path: Path | str) -> AsyncIterator[bytes]:
    """The file as 20 ms frames of 16 kHz mono int16 PCM (the last one zero-padded), read as ffmpeg decodes it.

    ffmpeg writes into a pipe that is read a frame at a time, so a file of any length costs about a pipe's worth of
    memory (asyncio stops reading at ~128 kB unread, and ffmpeg then waits) and nothing runs on the event loop but
    the reading. Close the generator (`contextlib.aclosing`) to stop early: ffmpeg is killed then. Raises
    AudioDecodeError when ffmpeg cannot read the file, before the first frame or, for a file broken part-way, after
    the frames it could decode. Zero-length audio yields nothing, which is not an error.
    """
    path = Path(path)
    _check_readable(path)
    try:
        # "file:": a name with a colon or a leading dash is still a file name, not a protocol or an option
        ffmpeg = await asyncio.create_subprocess_exec(
            "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", f"file:{path}", *FFMPEG_TO_PCM,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError as e:
        raise AudioDecodeError(f"{path}: cannot run ffmpeg ({e.strerror or e})") from e
    assert ffmpeg.stdout is not None and ffmpeg.stderr is not None
    # read all along: a file full of errors must not fill the stderr pipe and stall ffmpeg (and so us) for good
    errors = asyncio.ensure_future(_last_line(ffmpeg.stderr))
    try:
        while True:
            try:
                yield await ffmpeg.stdout.readexactly(FRAME_BYTES)
            except asyncio.IncompleteReadError as end:
                if end.partial:
                    yield end.partial + bytes(FRAME_BYTES - len(end.partial))
                break
        if await ffmpeg.wait() != 0:
            raise AudioDecodeError(f"{path}: cannot decode audio ({await errors or f'ffmpeg exit {ffmpeg.returncode}'})")
    finally:
        if ffmpeg.returncode is None:  # stopped early: the rest of the file is not wanted
            ffmpeg.kill()
            await _reap(ffmpeg)
        # stopped early, what ffmpeg wrote is read to its end (at once: ffmpeg is done): asyncio stopped reading the
        # full pipe, and until it sees the pipe's end it holds the process transport open (a ResourceWarning, and
        # "Event loop is closed" tracebacks when the service stops)
        with contextlib.suppress(OSError):
            await ffmpeg.stdout.read()
        errors.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await errors


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Wait for a killed ffmpeg to exit. asyncio hears of a child's exit through its child watcher, which was seen
    never to report one in a long test run (event loops created and closed one after another): a channel must not
    hang on that, so after REAP_TIMEOUT_S the dead process is reaped directly (waitpid returns at once after SIGKILL;
    ChildProcessError if the watcher reaped it meanwhile)."""
    try:
        await asyncio.wait_for(process.wait(), REAP_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(process.pid, 0)


async def _last_line(stream: asyncio.StreamReader) -> str:
    """The last line ffmpeg wrote (its error), read to the end; only the last few kB are kept."""
    tail = b""
    while chunk := await stream.read(4096):
        tail = (tail + chunk)[-4096:]
    lines = tail.decode(errors="replace").strip().splitlines()
    return lines[-1].strip()[:200] if lines else ""


def decode_file(path: Path | str) -> bytes:
    """Whole file -> 16 kHz mono int16 PCM. Multi-channel input is mixed down; 8/24/32-bit and float are converted.

    Zero-length audio decodes to b"" (nothing to segment), which is not an error. The whole file is held in memory,
    several times over while it is converted: for short files only (a channel plays files with `decode_stream`).
    """
    path = Path(path)
    _check_readable(path)
    try:
        seg = AudioSegment.from_file(path)
        seg = seg.set_channels(1).set_sample_width(SAMPLE_WIDTH).set_frame_rate(SAMPLE_RATE)
    except Exception as e:
        # Whatever the file holds must not take its caller down: besides CouldntDecodeError and OSError, odd headers
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
