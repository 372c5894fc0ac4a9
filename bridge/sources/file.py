"""Replay audio files as a channel: any format ffmpeg reads, at real-time pace or as fast as possible.

The demo channels talk this way: a list of calls, looped, with a random gap of silence between them. Silence frames
keep flowing during a gap, as they would from a real receiver, so the segmenter sees the quiet between calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from pathlib import Path

from bridge.audio import FRAME_BYTES, FRAME_MS, Frame
from bridge.config import FileSource
from bridge.decode import AudioDecodeError, decode_stream
from bridge.logsafe import clip
from bridge.sources.base import SourceStats

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset(
    {".wav", ".wave", ".mp3", ".ogg", ".oga", ".opus", ".flac", ".m4a", ".aac", ".amr", ".wma", ".webm", ".mka", ".aif",
     ".aiff", ".au", ".spx", ".caf", ".3gp"}
)
FRAME_S = FRAME_MS / 1000
SILENCE = bytes(FRAME_BYTES)


def expand_paths(paths: Iterable[Path], reject: Callable[[str, str], None]) -> list[Path]:
    """Files as given; a directory becomes its audio files (by suffix), sorted by name.

    A directory that cannot be listed (no permission, an I/O error) is passed to `reject` and skipped, so one bad
    folder does not silence the others; a file that cannot be read is left for decode_stream to reject.
    """
    files: list[Path] = []
    for path in paths:
        try:
            if path.is_dir():
                files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES))
            else:
                files.append(path)
        except OSError as e:
            reject(f"{path}: cannot list ({e.strerror or e})", "unreadable")
    return files


class Pacer:
    """Stamps consecutive frames and, in real time, waits for each one's moment.

    Frame n is due at a fixed offset n * 20 ms from one monotonic start, the moment the first frame is asked for
    (never sleep(0.02) per frame, which drifts by every wake-up's lateness). Its stamp is the wall-clock time of that
    moment, whenever it is taken: a consumer that fell behind (a slow archive, a busy process) gets the frames it
    missed as fast as it takes them, stamped when they were on the air, until it has caught up. Nothing is skipped,
    as a radio receiver's audio is not; the channel sees how late it is from the stamps (bridge/channel.py).
    """

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self._start_mono = 0.0
        self._start_wall = 0.0
        self._n = 0

    async def next(self) -> float:
        if self._n == 0:
            self._start_mono, self._start_wall = time.monotonic(), time.time()
        due = self._n * FRAME_S
        if self.realtime:
            # late frames at once, but one turn of the loop each: a channel catching up lets the others run
            await asyncio.sleep(max(0.0, self._start_mono + due - time.monotonic()))
        elif self._n % 50 == 0:
            await asyncio.sleep(0)  # as fast as possible, but let the other channels run
        self._n += 1
        return self._start_wall + due


class FileInput:
    """A channel fed from audio files (config type "file").

    Each file is decoded as it is played (`decode_stream`): a file of hours costs no more memory than a short one,
    and nothing is decoded ahead on the event loop. A file that cannot be decoded is skipped and counted; a whole
    pass over the files that gives no audio at all (every file broken, empty or silent of samples) is a SourceError,
    so the channel shows a fault instead of warning about the same files forever.
    """

    def __init__(self, channel_id: str, config: FileSource, rng: random.Random | None = None) -> None:
        self.channel_id = channel_id
        self.config = config
        self.rng = rng or random.Random()
        self.stats = SourceStats()

    async def frames(self) -> AsyncIterator[Frame]:
        files = expand_paths(self.config.paths, self._reject)
        if not files:
            unreadable = f" ({self.stats.last_error})" if self.stats.rejected else ""
            raise self.stats.fail(f"no audio files in {', '.join(map(str, self.config.paths))}{unreadable}")
        logger.info("channel %s: playing %d file(s)%s", self.channel_id, len(files), " in a loop" if self.config.loop else "")
        pacer = Pacer(self.config.realtime)
        gap = False  # silence goes between two files that gave audio: never first, nor for a file that gave none
        while True:
            heard, problem = 0, ""  # frames of audio in this pass, and the last file it had to skip
            order = self.rng.sample(files, len(files)) if self.config.shuffle else files
            for path in order:
                played = 0
                async with aclosing(decode_stream(path)) as decoded:
                    try:
                        async for pcm in decoded:
                            if gap and not played:
                                async for frame in self._gap(pacer):
                                    yield frame
                            played += 1
                            ts = await pacer.next()
                            self.stats.frames += 1
                            yield Frame(pcm, ts)
                    except AudioDecodeError as e:  # a file broken part-way keeps what it gave
                        problem = str(e)
                        self._reject(problem, "undecodable")
                heard += played
                gap = gap or bool(played)
            if not heard:
                last = f" (last: {problem})" if problem else ""
                raise self.stats.fail(f"none of the {len(files)} file(s) gave any audio in a whole pass{last}")
            if not self.config.loop:
                return

    def _reject(self, reason: str, kind: str) -> None:
        self.stats.reject(reason, kind=kind)
        logger.warning("channel %s: skipping %s", self.channel_id, clip(reason))

    async def _gap(self, pacer: Pacer) -> AsyncIterator[Frame]:
        low, high = self.config.gap
        for _ in range(round(self.rng.uniform(low, high) / FRAME_S)):
            ts = await pacer.next()
            self.stats.frames += 1
            yield Frame(SILENCE, ts)
