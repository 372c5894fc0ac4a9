"""Audio outputs of the transmit path: RTP packets as a gateway receives them on a local UDP socket, a FIFO read
by another thread (and one nobody reads), WAV files; G.711 encoders checked against the reference tables (the
stdlib audioop)."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import threading
import time
import warnings

import numpy as np
import pytest

from bridge.sinks import PipeSink, RtpSink, SinkError, lin2alaw, lin2ulaw
from hardware.config import PipeSinkConfig, RtpSinkConfig

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # reference implementation, present up to Python 3.12

TONE = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 12000).astype("<i2")


def test_g711_encoders_match_the_reference_for_every_sample():
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert lin2ulaw(every) == audioop.lin2ulaw(every.tobytes(), 2)
    assert lin2alaw(every) == audioop.lin2alaw(every.tobytes(), 2)


@pytest.fixture
def gateway():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    yield sock
    sock.close()


def _received(sock: socket.socket) -> list[bytes]:
    packets = []
    while True:
        try:
            packets.append(sock.recv(2048))
        except TimeoutError:
            return packets


async def _transmit(sink, pcm: bytes) -> float:
    started = time.monotonic()
    await sink.begin()
    for i in range(0, len(pcm), 3200):
        await sink.play(pcm[i : i + 3200])
    await sink.end()
    return time.monotonic() - started


async def test_rtp_pcmu_talk_spurts(gateway):
    sink = RtpSink("ch", RtpSinkConfig(type="rtp", host="127.0.0.1", port=gateway.getsockname()[1], codec="pcmu"))
    await sink.open()
    took = await _transmit(sink, TONE[:8000].tobytes())  # 0.5 s
    await _transmit(sink, TONE[:3200].tobytes())  # a second talk spurt, 0.2 s
    await sink.close()
    assert 0.45 <= took <= 0.7, "paced at real time"
    packets = _received(gateway)
    assert len(packets) == 25 + 10
    headers = [struct.unpack("!BBHII", p[:12]) for p in packets]
    assert all(h[0] == 0x80 and h[1] & 0x7F == 0 and len(p) == 12 + 160 for h, p in zip(headers, packets, strict=True))
    assert [h[1] >> 7 for h in headers] == [1] + [0] * 24 + [1] + [0] * 9  # marker opens each talk spurt
    assert all((b[2] - a[2]) % 65536 == 1 for a, b in itertools.pairwise(headers))
    assert all(b[3] - a[3] == 160 for a, b in itertools.pairwise(headers[:25]))
    assert len({h[4] for h in headers}) == 1
    decoded = np.frombuffer(audioop.ulaw2lin(b"".join(p[12:] for p in packets[:25]), 2), dtype="<i2")
    expected_8k = TONE[:8000:2].astype(np.float64)
    # compare level and frequency (zero crossings) away from the edges, so the resampler's delay does not matter
    rms = np.sqrt(np.mean(decoded[400:3600].astype(np.float64) ** 2))
    assert abs(rms - np.sqrt(np.mean(expected_8k**2))) < 600
    crossings = np.count_nonzero(np.diff(np.signbit(decoded[400:3600])))
    assert abs(crossings - 2 * 440 * 0.4) <= 4


async def test_rtp_l16_at_16k_is_bit_exact(gateway):
    config = RtpSinkConfig(type="rtp", host="127.0.0.1", port=gateway.getsockname()[1], codec="l16", rate=16000)
    sink = RtpSink("ch", config)
    await sink.open()
    await _transmit(sink, TONE[:3200].tobytes())
    await sink.close()
    packets = _received(gateway)
    assert struct.unpack("!B", packets[0][1:2])[0] & 0x7F == 96
    payload = b"".join(p[12:] for p in packets)
    assert np.array_equal(np.frombuffer(payload, dtype=">i2"), TONE[:3200])


async def test_pipe_sink_writes_raw_pcm_to_a_fifo(tmp_path):
    fifo = tmp_path / "tx.pcm"
    os.mkfifo(fifo)
    received = bytearray()
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the reader is there before the sink opens
    os.set_blocking(read_end, True)

    def reader() -> None:
        with open(read_end, "rb") as f:
            while chunk := f.read(4096):
                received.extend(chunk)

    sink = PipeSink("ch", PipeSinkConfig(type="pipe", path=str(fifo), realtime=False))
    await sink.open()
    # Read only once the sink holds the write end: a read with no writer yet is end of file, and the reader would quit.
    thread = threading.Thread(target=reader)
    thread.start()
    await _transmit(sink, TONE.tobytes())
    await sink.close()
    await asyncio.to_thread(thread.join, 5)
    assert bytes(received) == TONE.tobytes()


async def test_pipe_sink_never_waits_for_a_fifo_reader(tmp_path):
    fifo = tmp_path / "tx.pcm"
    os.mkfifo(fifo)
    pcm = TONE[:3200].tobytes()
    sink = PipeSink("ch", PipeSinkConfig(type="pipe", path=str(fifo), realtime=False))
    await asyncio.wait_for(sink.open(), 2)  # a plain open() of a FIFO waits for its reader: for ever, here
    with pytest.raises(SinkError, match="nothing reads the FIFO"):
        await asyncio.wait_for(sink.begin(), 2)
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the radio's audio program starts
    try:
        await _transmit(sink, pcm)  # the transmission opens the FIFO again, now with a reader
        assert os.read(read_end, 65536) == pcm
    finally:
        os.close(read_end)  # ... and goes away
    await sink.begin()
    with pytest.raises(SinkError, match=r"writing to .* failed"):
        await sink.play(pcm)
    with pytest.raises(SinkError, match="nothing reads the FIFO"):  # the next transmission says why, at once
        await asyncio.wait_for(sink.begin(), 2)
    await sink.close()
