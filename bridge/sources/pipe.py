"""Raw PCM from standard input, a named pipe or a file: any of four sample formats, N channels, any rate.

Pipes and FIFOs are read through the event loop (connect_read_pipe), regular files in a worker thread (epoll cannot
watch them, and their reads never block for long). A FIFO is opened read-write, so it never reports end-of-input
between writers: the channel keeps listening when the program feeding it restarts, as a receiver would. What is fed
into a pipe is read at once and held for a channel that has fallen behind (BACKLOG_S): the program feeding it (a
capture tool) never has to wait and overrun its own device.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import time
from collections.abc import AsyncIterator
from typing import BinaryIO

import numpy as np

from bridge.audio import Frame
from bridge.config import PipeSource
from bridge.sources.base import BACKLOG_S, FrameAssembler, FrameClock, Resampler, SourceStats

logger = logging.getLogger(__name__)

CHUNK_BYTES = 8192
SAMPLE_BYTES = {"s16le": 2, "u8": 1, "s24le": 3, "f32le": 4}


def to_int16(raw: bytes, sample_format: str, channels: int) -> np.ndarray:
    """Whole interleaved samples (len(raw) a multiple of width * channels) -> int16 samples of the first channel."""
    if sample_format == "s16le":
        x = np.frombuffer(raw, dtype="<i2")
    elif sample_format == "u8":
        x = ((np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    elif sample_format == "s24le":
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        # the top two bytes of each little-endian 24-bit sample are its 16-bit value (sign in the top byte)
        x = (b[:, 1] | (b[:, 2] << 8)).astype(np.uint16).view(np.int16)
    elif sample_format == "f32le":
        f = np.nan_to_num(np.frombuffer(raw, dtype="<f4"), nan=0.0, posinf=1.0, neginf=-1.0)
        x = (np.clip(f, -1.0, 1.0) * 32767.0).astype(np.int16)
    else:
        raise ValueError(f"unknown sample format {sample_format!r}")
    return x[::channels]


class _Received(asyncio.StreamReaderProtocol):
    """Notes when data last arrived from the pipe."""

    received = 0.0

    def data_received(self, data: bytes) -> None:
        self.received = time.time()
        super().data_received(data)


class PipeInput:
    """A channel fed raw PCM (config type "pipe"): '-' for standard input, or the path of a FIFO or file."""

    def __init__(self, channel_id: str, config: PipeSource) -> None:
        self.channel_id = channel_id
        self.config = config
        self.stats = SourceStats()

    async def frames(self) -> AsyncIterator[Frame]:
        cfg = self.config
        step = SAMPLE_BYTES[cfg.sample_format] * cfg.channels
        resample = Resampler(cfg.rate)
        assembler = FrameAssembler(FrameClock(), self.stats)
        held = b""
        logger.info(
            "channel %s: reading %s PCM (%s, %d ch, %d Hz)", self.channel_id, cfg.path, cfg.sample_format, cfg.channels, cfg.rate
        )
        async for chunk, arrived in self._chunks():
            data = held + chunk
            whole = len(data) - len(data) % step
            held = data[whole:]
            if whole:
                pcm = resample(to_int16(data[:whole], cfg.sample_format, cfg.channels))
                for frame in assembler.feed(pcm, arrived=arrived - resample.lag_s):
                    yield frame
        if held:
            logger.warning("channel %s: input ended mid-sample; %d trailing byte(s) dropped", self.channel_id, len(held))
        for frame in assembler.feed(resample(np.zeros(0, np.int16), last=True)) + assembler.flush():
            yield frame
        logger.info("channel %s: end of %s", self.channel_id, cfg.path)

    async def _chunks(self) -> AsyncIterator[tuple[bytes, float]]:
        """The input as it comes, each piece with the time its last byte arrived."""
        try:
            file = self._open()
        except OSError as e:
            raise self.stats.fail(f"cannot open {self.config.path}: {e.strerror or e}") from e
        try:
            if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
                    yield chunk, time.time()
                return
            loop = asyncio.get_running_loop()
            cfg = self.config
            # the transport stops reading once twice `limit` is held: that is BACKLOG_S of the input
            backlog = round(BACKLOG_S * cfg.rate * cfg.channels * SAMPLE_BYTES[cfg.sample_format])
            reader = asyncio.StreamReader(limit=backlog // 2)
            protocol = _Received(reader)
            transport, _ = await loop.connect_read_pipe(lambda: protocol, file)
            try:
                # All that is waiting, as one piece stamped when its last byte was received (not when it is taken):
                # audio that waited while the channel was busy or the loop stalled keeps its place in time. Stamped
                # when taken, a piece was dated as if just spoken, the frame clock jumped ahead by the wait and the
                # segmenter cut the utterance there (end reason eof).
                while chunk := await reader.read(backlog):
                    yield chunk, protocol.received
            finally:
                transport.close()
        except OSError as e:
            raise self.stats.fail(f"reading {self.config.path} failed: {e.strerror or e}") from e
        finally:
            file.close()

    def _open(self) -> BinaryIO:
        if self.config.path == "-":
            # a duplicate, so that closing the transport leaves the process's own stdin alone
            return os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
        if stat.S_ISFIFO(os.stat(self.config.path).st_mode):
            return os.fdopen(os.open(self.config.path, os.O_RDWR | os.O_NONBLOCK), "rb", buffering=0)
        return open(self.config.path, "rb", buffering=0)
