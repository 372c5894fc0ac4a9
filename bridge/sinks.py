"""Audio outputs of the transmit path (the mirror of bridge/sources): what jingbao plays onto a radio channel.

Every sink takes jingbao's one format (16 kHz mono int16) and converts it for its output. A transmission is
`begin()`, any number of `play(pcm)`, then `end()`. `play` is paced to real time (it returns when the output is
ready for more, keeping only a few tens of milliseconds queued), so the caller's clock (PTT key-up delay, tail,
time-out timer) matches what goes over the air. `end(drain=True)` returns once the audio has been played out;
`end(drain=False)` drops what is queued (the time-out timer cut the transmission).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import socket
import struct
import sys
import time
import wave
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import soxr

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
from hardware.config import FileSinkConfig, PipeSinkConfig, RtpSinkConfig, SinkConfig, SoundCardSinkConfig

logger = logging.getLogger(__name__)

PACING_LEAD = 0.06  # seconds of audio allowed ahead of real time: smooths scheduling without audible latency


class SinkError(Exception):
    """The output cannot be used (device missing, reader gone); the message says which output and why."""


class Sink(Protocol):
    async def open(self) -> None: ...
    async def begin(self) -> None: ...
    async def play(self, pcm: bytes) -> None: ...
    async def end(self, drain: bool = True) -> None: ...
    async def close(self) -> None: ...


def open_sink(name: str, config: SinkConfig) -> Sink:
    """The sink a channel's `tx.output` describes (call `await sink.open()` before use)."""
    match config:
        case SoundCardSinkConfig():
            return SoundCardSink(name, config)
        case RtpSinkConfig():
            return RtpSink(name, config)
        case FileSinkConfig():
            return FileSink(name, config)
        case PipeSinkConfig():
            return PipeSink(name, config)
    raise TypeError(f"unknown sink config {config!r}")


def duration(pcm: bytes) -> float:
    return len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)


class Pacer:
    """Real-time schedule of one transmission: sleep so that playing never runs more than PACING_LEAD ahead."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._queued = 0.0

    async def played(self, seconds: float) -> None:
        self._queued += seconds
        await asyncio.sleep(max(0.0, self._t0 + self._queued - PACING_LEAD - time.monotonic()))

    async def drain(self) -> None:
        await asyncio.sleep(max(0.0, self._t0 + self._queued - time.monotonic()))


# --- G.711 encoders (ITU-T G.711 segment tables, vectorised: the stdlib audioop is gone from Python 3.13) ----

_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def lin2ulaw(samples: np.ndarray) -> bytes:
    x = samples.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    x = np.minimum(np.abs(x), 8159) + 33
    seg = np.searchsorted(_ULAW_SEG_END, x)
    code = (seg << 4) | ((x >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8).tobytes()


def lin2alaw(samples: np.ndarray) -> bytes:
    x = samples.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    x = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_ALAW_SEG_END, x)
    shift = np.where(seg < 2, 1, seg)
    code = (np.minimum(seg, 7) << 4) | ((x >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8).tobytes()


class _Resampler:
    """16 kHz int16 -> `rate` int16, streaming (no clicks between chunks); a pass-through at 16 kHz."""

    def __init__(self, rate: int) -> None:
        self._stream = soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="int16") if rate != SAMPLE_RATE else None

    def __call__(self, pcm: bytes, last: bool = False) -> np.ndarray:
        samples = np.frombuffer(pcm, dtype="<i2")
        return samples if self._stream is None else self._stream.resample_chunk(samples, last=last)


# --- RTP ---------------------------------------------------------------------------------------------------

_STATIC_PAYLOAD_TYPES = {"pcmu": 0, "pcma": 8}


class RtpSink:
    """RTP/UDP to a radio-over-IP gateway: one talk spurt per transmission (marker bit on its first packet)."""

    def __init__(self, name: str, config: RtpSinkConfig) -> None:
        self.name = name
        self.config = config
        static = _STATIC_PAYLOAD_TYPES.get(config.codec, 96)
        self.payload_type = config.payload_type if config.payload_type is not None else static
        self.samples_per_packet = config.rate * config.ptime_ms // 1000
        self.packets_sent = 0
        self._sock: socket.socket | None = None
        self._seq = random.randrange(1 << 16)
        self._timestamp = random.randrange(1 << 32)
        self._ssrc = random.randrange(1 << 32)
        self._pending = np.zeros(0, dtype=np.int16)
        self._resample = _Resampler(config.rate)
        self._pacer = Pacer()
        self._marker = True

    async def open(self) -> None:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_DGRAM)
            family, _, _, _, address = infos[0]
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
            self._sock.connect(address)
        except OSError as e:
            raise SinkError(f"channel {self.name}: cannot send RTP to {self.config.host}:{self.config.port}: {e}") from e

    async def begin(self) -> None:
        self._resample = _Resampler(self.config.rate)
        self._pending = np.zeros(0, dtype=np.int16)
        self._pacer = Pacer()
        self._marker = True
        self._timestamp = (self._timestamp + self.config.rate) & 0xFFFFFFFF  # a gap in RTP time between talk spurts

    async def play(self, pcm: bytes) -> None:
        self._pending = np.concatenate([self._pending, self._resample(pcm)])
        await self._send_full_packets()
        await self._pacer.played(duration(pcm))

    async def end(self, drain: bool = True) -> None:
        if drain:
            tail = self._resample(b"", last=True)
            self._pending = np.concatenate([self._pending, tail])
            if self._pending.size % self.samples_per_packet:
                padding = self.samples_per_packet - self._pending.size % self.samples_per_packet
                self._pending = np.concatenate([self._pending, np.zeros(padding, dtype=np.int16)])
            await self._send_full_packets()
            await self._pacer.drain()
        self._pending = np.zeros(0, dtype=np.int16)

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _send_full_packets(self) -> None:
        n = self.samples_per_packet
        while self._pending.size >= n:
            chunk, self._pending = self._pending[:n], self._pending[n:]
            self._send(self._encode(chunk))

    def _encode(self, samples: np.ndarray) -> bytes:
        if self.config.codec == "pcmu":
            return lin2ulaw(samples)
        if self.config.codec == "pcma":
            return lin2alaw(samples)
        return samples.astype(">i2").tobytes()

    def _send(self, payload: bytes) -> None:
        if self._sock is None:
            raise SinkError(f"channel {self.name}: RTP sink is not open")
        header = struct.pack(
            "!BBHII", 0x80, (0x80 if self._marker else 0) | self.payload_type, self._seq, self._timestamp, self._ssrc
        )
        try:
            self._sock.send(header + payload)
        except (BlockingIOError, ConnectionRefusedError) as e:  # UDP: a full buffer or an ICMP "no listener" loses one packet
            logger.debug("channel %s: RTP packet lost: %s", self.name, e)
        except OSError as e:
            raise SinkError(f"channel {self.name}: RTP send to {self.config.host}:{self.config.port} failed: {e}") from e
        self.packets_sent += 1
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._timestamp = (self._timestamp + samples_in(payload, self.config.codec)) & 0xFFFFFFFF


def samples_in(payload: bytes, codec: str) -> int:
    return len(payload) // 2 if codec == "l16" else len(payload)


# --- file and pipe -----------------------------------------------------------------------------------------


class FileSink:
    """Each transmission becomes <directory>/<channel>-<UTC time>.wav (written to a temporary name, then renamed)."""

    def __init__(self, name: str, config: FileSinkConfig) -> None:
        self.name = name
        self.config = config
        self.written: list[str] = []
        self._wav: wave.Wave_write | None = None
        self._path = ""
        self._pacer = Pacer()

    async def open(self) -> None:
        try:
            self.config.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"channel {self.name}: cannot create {self.config.directory}: {e.strerror}") from e

    async def begin(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
        self._path = str(self.config.directory / f"{self.name}-{stamp}.wav")
        try:
            wav = wave.open(self._path + ".part", "wb")  # noqa: SIM115 - open for the whole transmission, closed in end()
        except OSError as e:
            raise SinkError(f"channel {self.name}: cannot write {self._path}: {e.strerror}") from e
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(SAMPLE_RATE)
        self._wav = wav
        self._pacer = Pacer()

    async def play(self, pcm: bytes) -> None:
        if self._wav is None:
            raise SinkError(f"channel {self.name}: play() outside a transmission")
        self._wav.writeframes(pcm)
        if self.config.realtime:
            await self._pacer.played(duration(pcm))

    async def end(self, drain: bool = True) -> None:
        if self._wav is None:
            return
        self._wav.close()
        self._wav = None
        os.replace(self._path + ".part", self._path)
        self.written.append(self._path)
        if drain and self.config.realtime:
            await self._pacer.drain()

    async def close(self) -> None:
        await self.end(drain=False)


class PipeSink:
    """Raw 16 kHz mono s16le to a FIFO, a file or standard output, only while transmitting (no silence between).

    A FIFO is opened without waiting for its reader (a plain open would block until one comes): with no reader yet,
    the service starts anyway and each transmission tries again, failing with a clear error until a reader is there.
    """

    def __init__(self, name: str, config: PipeSinkConfig) -> None:
        self.name = name
        self.config = config
        self._file: Any = None
        self._pacer = Pacer()

    async def open(self) -> None:
        if not self._connect():
            logger.warning("channel %s: nothing reads the FIFO %s yet; transmissions fail until a reader opens it",
                           self.name, self.config.path)

    def _connect(self) -> bool:
        """Open the output for writing without waiting; False when it is a FIFO nobody reads (ENXIO)."""
        if self.config.path == "-":
            self._file = sys.stdout.buffer
            return True
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.config.path, flags, 0o666)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return False
            raise SinkError(f"channel {self.name}: cannot open {self.config.path}: {e.strerror}") from e
        os.set_blocking(fd, True)  # only the open must not wait; writes run in a worker thread, paced by the reader
        self._file = os.fdopen(fd, "ab", buffering=0)
        return True

    async def begin(self) -> None:
        if self._file is None and not self._connect():
            raise SinkError(
                f"channel {self.name}: nothing reads the FIFO {self.config.path}: start the program that plays it"
            )
        self._pacer = Pacer()

    async def play(self, pcm: bytes) -> None:
        if self._file is None:
            raise SinkError(f"channel {self.name}: pipe sink is not open")
        try:
            await asyncio.to_thread(self._write, pcm)
        except OSError as e:  # BrokenPipeError: the reader went away; the next transmission opens the path again
            await self.close()
            raise SinkError(f"channel {self.name}: writing to {self.config.path} failed: {e}") from e
        if self.config.realtime:
            await self._pacer.played(duration(pcm))

    def _write(self, pcm: bytes) -> None:
        self._file.write(pcm)
        self._file.flush()

    async def end(self, drain: bool = True) -> None:
        if drain and self.config.realtime:
            await self._pacer.drain()

    async def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout.buffer:
            self._file.close()
        self._file = None


# --- sound card --------------------------------------------------------------------------------------------


class SoundCardSink:
    """A PyAudio output stream, opened at the device's own rate; blocking writes run in a worker thread."""

    def __init__(self, name: str, config: SoundCardSinkConfig) -> None:
        self.name = name
        self.config = config
        self._pa: Any = None
        self._stream: Any = None
        self._rate = config.rate or SAMPLE_RATE
        self._resample = _Resampler(self._rate)

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        import pyaudio

        self._pa = pyaudio.PyAudio()
        try:
            index = _output_device(self._pa, self.config.device)
            info = self._pa.get_device_info_by_index(index)
            self._rate = self.config.rate or int(info["defaultSampleRate"])
            self._stream = self._pa.open(
                format=pyaudio.paInt16, channels=self.config.channels, rate=self._rate,
                output=True, output_device_index=index, start=False,
            )
        except (OSError, ValueError) as e:
            self._pa.terminate()
            self._pa = None
            raise SinkError(f"channel {self.name}: cannot open output device {self.config.device!r}: {e}") from e
        logger.info("channel %s: output %s at %d Hz", self.name, info["name"], self._rate)

    async def begin(self) -> None:
        if self._stream is None:
            raise SinkError(f"channel {self.name}: output device is not open")
        self._resample = _Resampler(self._rate)
        await asyncio.to_thread(self._stream.start_stream)

    async def play(self, pcm: bytes) -> None:
        samples = self._resample(pcm)
        await asyncio.to_thread(self._write, samples)

    def _write(self, samples: np.ndarray) -> None:
        if self.config.channels > 1:
            samples = np.repeat(samples, self.config.channels)
        try:
            self._stream.write(samples.astype("<i2").tobytes())
        except OSError as e:
            raise SinkError(f"channel {self.name}: output device failed: {e}") from e

    async def end(self, drain: bool = True) -> None:
        if self._stream is None:
            return
        if drain:
            await asyncio.to_thread(self._write, self._resample(b"", last=True))
            await asyncio.sleep(self._stream.get_output_latency())
        await asyncio.to_thread(self._stream.stop_stream)

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


def _output_device(pa: Any, wanted: str | int) -> int:
    if isinstance(wanted, int):
        return wanted
    if wanted == "default":
        return int(pa.get_default_output_device_info()["index"])
    names = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if info["maxOutputChannels"] > 0:
            names.append(info["name"])
            if wanted.lower() in info["name"].lower():
                return i
    raise ValueError(f"no output device matches {wanted!r} (outputs: {', '.join(names) or 'none'})")
