"""Capture from a sound card through PyAudio (PortAudio): one channel of the card, resampled to 16 kHz.

PortAudio calls back from its own thread; the callback only hands the bytes to the event loop
(call_soon_threadsafe), so nothing here ever blocks the loop. Opening, closing and device scanning run in worker
threads. A device that vanishes (USB card unplugged, sound server gone) stops the stream or its data: either way
frames() raises SourceError, and the next frames() call initialises PortAudio afresh, which re-scans the devices,
so a re-plugged card comes back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pyaudio

from bridge.audio import FRAME_MS, Frame
from bridge.config import SoundCardSource
from bridge.sources.base import (
    BACKLOG_S,
    FrameAssembler,
    FrameClock,
    Resampler,
    SourceError,
    SourceStats,
    ThrottledLog,
)

logger = logging.getLogger(__name__)

FIRST_DATA_TIMEOUT_S = 5.0  # PulseAudio's ALSA plug-in takes about a second to deliver the first buffer
STALL_TIMEOUT_S = 2.0  # an open stream that delivers nothing for this long has lost its device
QUEUE_BUFFERS = round(BACKLOG_S * 1000 / FRAME_MS)  # 20 ms buffers held for a channel that is behind; beyond, overflow
CLOSE_WAIT_S = 10.0

# PortAudio's initialise/terminate and device scans are process-global and not thread-safe.
_portaudio_lock = threading.Lock()

Chunk = tuple[bytes, float, int]  # data, wall-clock arrival, PortAudio status flags


def find_device(pa: pyaudio.PyAudio, device: str | int) -> dict[str, Any]:
    """The input device named by index, 'default', or a case-insensitive substring of its name."""
    if isinstance(device, int) or device.isdigit():
        info = pa.get_device_info_by_index(int(device))
    elif device == "default":
        info = pa.get_default_input_device_info()
    else:
        inputs = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
        inputs = [d for d in inputs if d["maxInputChannels"] > 0]
        matches = [d for d in inputs if device.lower() in str(d["name"]).lower()]
        if not matches:
            names = ", ".join(repr(d["name"]) for d in inputs) or "none"
            raise SourceError(f"no input device matching {device!r} (inputs: {names})")
        info = matches[0]
    if int(info["maxInputChannels"]) <= 0:
        raise SourceError(f"device {info['index']} {info['name']!r} has no inputs")
    return info


class SoundCardInput:
    """A channel captured from a sound-card input (config type "soundcard")."""

    def __init__(self, channel_id: str, config: SoundCardSource) -> None:
        self.channel_id = channel_id
        self.config = config
        self.stats = SourceStats()
        self._overflows = ThrottledLog(logger, "capture buffer overflowed, audio dropped")

    async def frames(self) -> AsyncIterator[Frame]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk] = asyncio.Queue(QUEUE_BUFFERS)

        def deliver(chunk: Chunk) -> None:  # runs on the loop
            try:
                queue.put_nowait(chunk)
            except asyncio.QueueFull:  # the channel is minutes behind: the newest audio is lost, and counted
                self.stats.lost += 1
                self.stats.skipped_s += FRAME_MS / 1000
                reason = f"{queue.maxsize * FRAME_MS / 1000:g} s of audio waiting: the channel is not taking it"
                self.stats.last_error = reason
                self._overflows(self.channel_id, reason)

        def callback(data: bytes | None, count: int, time_info: Any, status: int) -> tuple[None, int]:  # PortAudio's thread
            try:
                loop.call_soon_threadsafe(deliver, (data or b"", time.time(), status))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return None, pyaudio.paAbort
            return None, pyaudio.paContinue

        try:
            pa, stream, info, channels, rate = await asyncio.to_thread(self._open, callback)
        except SourceError as e:
            raise self.stats.fail(str(e)) from e
        name = f"{info['name']!r} (device {info['index']}, channel {self.config.channel}, {rate} Hz)"
        logger.info("channel %s: capturing from %s", self.channel_id, name)
        try:
            async for frame in self._capture(queue, stream, channels, rate, name):
                yield frame
        finally:
            threading.Thread(target=_close, args=(pa, stream), name=f"close-{self.channel_id}", daemon=True).start()

    async def _capture(
        self, queue: asyncio.Queue[Chunk], stream: Any, channels: int, rate: int, name: str
    ) -> AsyncIterator[Frame]:
        resample = Resampler(rate)
        assembler = FrameAssembler(FrameClock(max_lead=0.5), self.stats)
        timeout = FIRST_DATA_TIMEOUT_S
        while True:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that lands as the
                # item arrives, and the channel (or a test stopping it) would then wait for ever.
                async with asyncio.timeout(timeout):
                    data, arrived, status = await queue.get()
            except TimeoutError:
                if not queue.empty():  # the loop itself was stalled past the timeout; the audio did arrive
                    continue
                state = "stream stopped" if not stream.is_active() else f"no audio for {timeout:g} s"
                raise self.stats.fail(f"sound card {name} lost: {state}") from None
            timeout = STALL_TIMEOUT_S
            if status & pyaudio.paInputOverflow:
                self.stats.lost += 1
            samples = np.frombuffer(data, dtype="<i2")[self.config.channel :: channels]
            pcm = resample(samples)
            for frame in assembler.feed(pcm, arrived - resample.lag_s):
                yield frame

    def _open(self, callback: Any) -> tuple[pyaudio.PyAudio, Any, dict[str, Any], int, int]:
        """Initialise PortAudio (a fresh device scan) and start the stream; in a worker thread."""
        if not _portaudio_lock.acquire(timeout=CLOSE_WAIT_S):
            raise SourceError("PortAudio is still busy closing a previous stream")
        try:
            try:
                pa = pyaudio.PyAudio()
            except Exception as e:  # PortAudio's initialise failing (no sound system at all); OSError in practice
                raise SourceError(f"cannot initialise PortAudio for sound card {self.config.device!r}: {e}") from e
            try:
                info = find_device(pa, self.config.device)
                channels = self.config.channel + 1
                if channels > int(info["maxInputChannels"]):
                    raise SourceError(f"device {info['name']!r} has {info['maxInputChannels']} input channel(s), "
                                      f"channel {self.config.channel} asked for")
                rate = self.config.rate or int(info["defaultSampleRate"])
                stream = pa.open(
                    format=pyaudio.paInt16, channels=channels, rate=rate, input=True, input_device_index=int(info["index"]),
                    frames_per_buffer=rate * FRAME_MS // 1000, stream_callback=callback,
                )
            except (OSError, ValueError) as e:  # PyAudio reports PortAudio errors as OSError / ValueError
                pa.terminate()
                raise SourceError(f"cannot open sound card {self.config.device!r}: {e}") from e
            except BaseException:
                pa.terminate()
                raise
            return pa, stream, info, channels, rate
        finally:
            _portaudio_lock.release()


def _close(pa: pyaudio.PyAudio, stream: Any) -> None:
    """Stop and release the stream and PortAudio; in its own thread (a dead device can make this hang)."""
    with _portaudio_lock:
        try:
            stream.close()
        except OSError as e:
            logger.debug("closing a lost stream: %s", e)
        pa.terminate()
