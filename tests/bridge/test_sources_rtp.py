"""RTP source: real packets over 127.0.0.1 UDP carrying a real recording, with every impairment a network adds."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from bridge.audio import FRAME_BYTES, Frame
from bridge.config import RtpSource, load_config
from bridge.decode import decode_file
from bridge.service import Service
from bridge.sources import RtpInput, SourceError, open_source
from bridge.sources.jitter import MAX_FILL, JitterBuffer
from bridge.sources.rtp import ALAW, ULAW, MalformedPacket, parse_rtp
from tests.support.audio_check import envelope_match

SPEECH = "aishell1_BAC009S0724W0121.wav"  # 4.28 s
SSRC = 0x1234ABCD
# idle silence before the first packet is sent, and the resampler's delay: about 25 frames, more when a busy machine
# slows the loop down (its 0.3 s lead then lasts longer); the search window of the envelope match, not a bound tested
LEAD_FRAMES = 60


def ffmpeg_encode(src: Path, fmt: str, rate: int) -> bytes:
    """The recording as raw μ-law / A-law / big-endian PCM, encoded by ffmpeg (an encoder independent of ours)."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(src), "-ac", "1", "-ar", str(rate), "-f", fmt, "-"],
        check=True, capture_output=True,
    ).stdout


def rtp_packet(seq: int, ts: int, payload: bytes, pt: int, csrcs: int = 0, extension: bytes | None = None,
               padding: int = 0, version: int = 2, ssrc: int = SSRC) -> bytes:
    first = version << 6 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | csrcs
    header = struct.pack("!BBHII", first, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + bytes(4 * csrcs)
    if extension is not None:
        header += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    return header + payload + pad


def packetise(payload: bytes, bytes_per_packet: int, samples_per_packet: int, pt: int, first_seq: int,
              ssrc: int = SSRC) -> list[bytes]:
    return [
        rtp_packet(first_seq + i, 1000 + i * samples_per_packet, payload[offset : offset + bytes_per_packet], pt,
                   ssrc=ssrc)
        for i, offset in enumerate(range(0, len(payload), bytes_per_packet))
    ]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def receiving(source: RtpInput, settle: float = 0.3) -> AsyncIterator[list[Frame]]:
    """Run the source for the block (silence flows for 0.3 s before it, `settle` s after); the list fills with its frames."""
    frames: list[Frame] = []

    async def consume() -> None:
        async for frame in source.frames():
            frames.append(frame)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.3)  # nothing on the air yet: the receiver already yields silence
    yield frames
    await asyncio.sleep(settle)
    await released(source, frames)
    consumer.cancel()
    if consumer.done() and not consumer.cancelled() and consumer.exception():
        raise consumer.exception()  # type: ignore[misc]


async def released(source: RtpInput, frames: list[Frame]) -> None:
    """Wait (5 s at most) until the source has released all it was sent and is back to silence: a loop slowed down by
    a busy machine may still hold the last packets when a fixed pause is over."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (source._buffer.next_deadline() is not None or not idle(frames)):
        await asyncio.sleep(0.05)


async def send(source: RtpInput, datagrams: list[bytes | tuple[str, bytes]]) -> None:
    """Send the datagrams to the source, 5x faster than real time, in bursts.

    A datagram is sent from 127.0.0.1, or as (address, datagram) from that loopback address (127.0.0.2, ...); each
    address sends from one socket (one port)."""
    with contextlib.ExitStack() as stack:
        senders: dict[str, socket.socket] = {}
        for i, item in enumerate(datagrams):
            address, datagram = item if isinstance(item, tuple) else ("127.0.0.1", item)
            if address not in senders:
                senders[address] = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                senders[address].bind((address, 0))
            senders[address].sendto(datagram, (source.config.bind, source.config.port))
            if i % 5 == 4:
                await asyncio.sleep(0.02)


async def receive(source: RtpInput, datagrams: list[bytes | tuple[str, bytes]], settle: float = 0.3) -> list[Frame]:
    """Run the source, send the datagrams, and return what it yielded."""
    async with receiving(source, settle) as frames:
        await send(source, datagrams)
    return frames


def rtp_source(**options: object) -> RtpInput:
    source = open_source("r1", RtpSource(type="rtp", port=free_udp_port(), **options))  # bind: 127.0.0.1 by default
    assert isinstance(source, RtpInput)
    return source


@pytest.fixture(scope="module")
def speech(shared_audio: Path) -> Path:
    return shared_audio / SPEECH


@pytest.mark.parametrize(("fmt", "table"), [("mulaw", ULAW), ("alaw", ALAW)])
def test_g711_tables_match_ffmpeg_for_all_256_codes(tmp_path: Path, fmt: str, table: np.ndarray) -> None:
    codes = tmp_path / "codes.raw"
    codes.write_bytes(bytes(range(256)))
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", fmt, "-ar", "8000", "-ac", "1", "-i", str(codes), "-f", "s16le", "-"],
        check=True, capture_output=True,
    ).stdout
    assert table.tolist() == np.frombuffer(decoded, dtype="<i2").tolist()


@pytest.mark.parametrize(
    ("fmt", "rate", "pt", "config"),
    [
        ("mulaw", 8000, 0, {}),
        ("alaw", 8000, 8, {}),
        ("s16be", 44100, 11, {}),
        ("s16be", 16000, 96, {"codec": "l16", "rate": 16000}),
    ],
)
async def test_clean_stream_decodes_to_the_recording(speech: Path, fmt: str, rate: int, pt: int, config: dict) -> None:
    width = 1 if fmt in ("mulaw", "alaw") else 2
    samples = rate // 50
    # sequence numbers wrap from 65535 to 0 early on
    datagrams = packetise(ffmpeg_encode(speech, fmt, rate), samples * width, samples, pt, first_seq=65500)
    source = rtp_source(**config)
    frames = await receive(source, datagrams)
    reference = decode_file(speech)
    assert all(len(f.pcm) == FRAME_BYTES for f in frames)
    corr, lag = envelope_match(reference, b"".join(f.pcm for f in frames), max_lag_frames=LEAD_FRAMES)
    assert corr > 0.95, corr
    assert len(frames) - lag >= len(reference) // FRAME_BYTES  # all of it, then the receiver's idle silence
    assert lag >= 5 and all(f.pcm == bytes(FRAME_BYTES) for f in frames[:5])  # silence flowed before anything was sent
    assert (source.stats.lost, source.stats.late, source.stats.duplicate, source.stats.rejected) == (0, 0, 0, 0)


async def test_reordered_duplicated_lost_and_malformed_packets(speech: Path) -> None:
    good = packetise(ffmpeg_encode(speech, "mulaw", 8000), 160, 160, 0, first_seq=65000)
    lost = set(range(20, len(good), 25))
    datagrams: list[bytes] = []
    for i, packet in enumerate(good):
        if i in lost:
            continue
        datagrams.append(packet)
        if i % 30 == 7:
            datagrams.append(packet)  # duplicated
    for i in range(40, len(datagrams) - 1, 40):  # neighbours swapped
        datagrams[i], datagrams[i + 1] = datagrams[i + 1], datagrams[i]
    malformed = [
        b"\x80\x00\x01",  # shorter than a header
        bytes([1 << 6]) + good[3][1:],  # RTP version 1
        bytes([0x80 | 15]) + good[3][1:20],  # claims 15 CSRCs, too short for them
        bytes([0x90]) + good[3][1:12] + b"\xbe\xde",  # extension header cut off
        bytes([0xA0]) + good[3][1:-1] + b"\xff",  # padding longer than the packet
        bytes([0x80, 99]) + good[3][2:],  # dynamic payload type, no codec configured
    ]
    for k, bad in enumerate(malformed):
        datagrams.insert(10 + 17 * k, bad)
    # one valid packet using every optional header part, replacing an ordinary one
    i = 60
    seq, ts = struct.unpack_from("!HI", good[i], 2)
    datagrams[datagrams.index(good[i])] = rtp_packet(seq, ts, good[i][12:], 0, csrcs=2, extension=bytes(8), padding=4)

    source = rtp_source(jitter_ms=200)
    frames = await receive(source, datagrams)
    stats = source.stats
    assert stats.rejected == len(malformed) and stats.rejected_by == {"malformed": len(malformed)}
    assert stats.duplicate == sum(1 for i in range(len(good)) if i % 30 == 7 and i not in lost)
    assert stats.lost == len(lost)
    assert stats.late == 0
    reference = decode_file(speech)
    pcm = b"".join(f.pcm for f in frames)
    corr, lag = envelope_match(reference, pcm, max_lag_frames=LEAD_FRAMES)
    assert corr > 0.9, corr  # lost packets became silence of their length: nothing after them is shifted
    got = np.frombuffer(pcm, dtype="<i2").astype(np.float64).reshape(-1, 320)[lag:]
    ref = np.frombuffer(reference, dtype="<i2").astype(np.float64)[: len(reference) // FRAME_BYTES * 320].reshape(-1, 320)
    rms = lambda x: float(np.sqrt(np.mean(x * x)))  # noqa: E731
    loud_lost = [i for i in lost if rms(ref[i]) > 1000]
    assert loud_lost, "the test should lose some packets in the middle of speech"
    for i in loud_lost:  # the middle of a lost packet's place is (nearly) silent; the resampler smears its edges
        assert rms(got[i][80:240]) < 0.1 * rms(ref[i][80:240]), i


async def test_a_packet_later_than_the_buffer_is_counted_late(speech: Path) -> None:
    good = packetise(ffmpeg_encode(speech, "mulaw", 8000), 160, 160, 0, first_seq=100)[:30]
    source = rtp_source(jitter_ms=20)
    frames: list[Frame] = []

    async def consume() -> None:
        async for frame in source.frames():
            frames.append(frame)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for packet in good[:10] + good[11:]:
            sender.sendto(packet, ("127.0.0.1", source.config.port))
        await asyncio.sleep(0.2)
        sender.sendto(good[10], ("127.0.0.1", source.config.port))
        await asyncio.sleep(0.1)
    consumer.cancel()
    assert (source.stats.late, source.stats.lost) == (1, 1)
    assert len(frames) >= 30


async def test_port_in_use_is_a_clear_source_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        source = RtpInput("r1", RtpSource(type="rtp", bind="127.0.0.1", port=taken.getsockname()[1]))
        with pytest.raises(SourceError, match=r"cannot listen on UDP 127\.0\.0\.1"):
            async for _ in source.frames():
                pass
    assert source.stats.errors == 1


def mulaw_call(speech: Path, first_seq: int = 1000, ssrc: int = SSRC) -> list[bytes]:
    return packetise(ffmpeg_encode(speech, "mulaw", 8000), 160, 160, 0, first_seq, ssrc=ssrc)


def is_the_recording(speech: Path, frames: list[Frame]) -> bool:
    """The frames hold the whole recording, undisturbed, after some silence: however much silence, since a loaded
    machine may run the receiver's idle frames on well past LEAD_FRAMES before the test's sender gets the loop."""
    reference = decode_file(speech)
    lead = max(LEAD_FRAMES, len(frames) - len(reference) // FRAME_BYTES)
    corr, lag = envelope_match(reference, b"".join(f.pcm for f in frames), max_lag_frames=lead)
    return corr > 0.95 and len(frames) - lag >= len(reference) // FRAME_BYTES


def idle(frames: list[Frame]) -> bool:
    """The source is back to the silence it yields when nothing is on the air."""
    return bool(frames) and frames[-1].pcm == bytes(FRAME_BYTES)


def is_silent(frames: list[Frame]) -> bool:
    return all(f.pcm == bytes(FRAME_BYTES) for f in frames)


@pytest.mark.parametrize(
    ("intruder", "ssrc", "reason"),
    [
        ("127.0.0.2", 0x0BADF00D, "other_sender"),
        ("127.0.0.2", SSRC, "other_sender"),  # the call's SSRC, from another address
        ("127.0.0.1", 0x0BADF00D, "other_ssrc"),  # another stream from the call's own address and port
    ],
)
async def test_a_second_sender_interleaved_with_a_call_is_refused_and_counted(
    speech: Path, intruder: str, ssrc: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    call = mulaw_call(speech)
    noise = np.random.default_rng(12).integers(0, 256, (len(call), 160), dtype=np.uint8)
    intrusion = [(intruder, rtp_packet(40000 + i, 160 * i, n.tobytes(), 0, ssrc=ssrc)) for i, n in enumerate(noise)]
    source = rtp_source()
    caplog.set_level(logging.INFO, logger="bridge.sources.rtp")
    frames = await receive(source, [packet for pair in zip(call, intrusion, strict=True) for packet in pair])
    assert is_the_recording(speech, frames)
    stats = source.stats
    assert stats.rejected == len(intrusion) and stats.rejected_by == {reason: len(intrusion)}
    assert (stats.lost, stats.late, stats.duplicate) == (0, 0, 0)
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "bridge.sources.rtp"]
    latched = [m for level, m in logged if level == logging.INFO and m.endswith("latched")]
    refused = [m for level, m in logged if level == logging.WARNING and "refused" in m]
    assert len(latched) == 1 and len(refused) == 1, logged  # once each, not per packet


async def test_an_allowed_sender_takes_over_once_the_latched_one_is_silent(speech: Path) -> None:
    source = rtp_source(allow=["127.0.0.1", "127.0.0.0/30"], takeover_s=0.5)
    second = [("127.0.0.2", p) for p in mulaw_call(speech, first_seq=30000, ssrc=0x0BADF00D)]
    async with receiving(source) as frames:
        await send(source, mulaw_call(speech))
        await send(source, second[:5])  # too soon: the first has been silent less than takeover_s
        await asyncio.sleep(1.0)
        await released(source, frames)  # (a busy machine's loop may still hold the first call's end)
        taken_over = len(frames)
        await send(source, second[5:])
    assert is_the_recording(speech, frames[:taken_over])
    assert source.stats.rejected_by == {"other_sender": 5}
    reference = decode_file(speech)
    corr, _ = envelope_match(reference[5 * FRAME_BYTES :], b"".join(f.pcm for f in frames[taken_over:]), LEAD_FRAMES)
    assert corr > 0.95, corr


async def test_the_latched_address_starts_a_new_stream_once_its_last_has_ended(speech: Path) -> None:
    """A gateway restarted (or starting each talk spurt afresh): a new SSRC and sequence from the same address."""
    source = rtp_source()
    call = mulaw_call(speech)
    async with receiving(source) as frames:
        await send(source, call[:100])
        await asyncio.sleep(0.5)  # longer than new_stream_after_s: that stream has ended
        restarted = len(frames)
        await send(source, mulaw_call(speech, first_seq=7, ssrc=0x0BADF00D)[100:])
    assert source.stats.rejected == 0 and source.stats.switches == 1
    assert not is_silent(frames[:restarted]) and not is_silent(frames[restarted:])
    assert source.stats.lost == 0


async def test_a_sender_not_on_the_allow_list_is_refused(speech: Path) -> None:
    source = rtp_source(allow=["127.0.0.2"])
    async with receiving(source) as frames:
        await send(source, mulaw_call(speech))  # from 127.0.0.1
        refused = len(frames)
        await send(source, [("127.0.0.2", p) for p in mulaw_call(speech)])  # the refused one latched nothing
    assert is_silent(frames[:refused])
    assert is_the_recording(speech, frames[refused:])
    assert source.stats.rejected_by == {"not_allowed": len(mulaw_call(speech))}


async def test_the_socket_listens_on_the_configured_address_only(speech: Path) -> None:
    source = rtp_source(bind="127.0.0.2")
    async with receiving(source) as frames:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.1", source.config.port))  # free: the source holds the port on 127.0.0.2 only
        await send(source, mulaw_call(speech))  # to 127.0.0.2
    assert is_the_recording(speech, frames)


def test_who_is_heard_packet_by_packet(caplog: pytest.LogCaptureFixture) -> None:
    """The latch's decisions at given arrival times (no socket): allow list, takeover_s, a new SSRC, the log."""
    source = RtpInput("r1", RtpSource(type="rtp", port=5004, allow=["10.1.2.3", "10.1.2.4"], takeover_s=2.0))
    gateway, standby = "10.1.2.3", "::ffff:10.1.2.4"  # the standby as a socket bound to :: sees it

    def heard(sender: str, ssrc: int, now: float) -> str:
        before = collections.Counter(source.stats.rejected_by)
        source.datagram(rtp_packet(int(now * 50), 0, bytes(160), 0, ssrc=ssrc), sender, now)
        return next(iter(source.stats.rejected_by - before), "heard")

    caplog.set_level(logging.INFO, logger="bridge.sources.rtp")
    assert heard(gateway, 1, now=0.0) == "heard"  # the first sender is latched
    assert heard(standby, 2, now=0.02) == "other_sender"
    assert heard(gateway, 3, now=0.03) == "other_ssrc"  # another stream while the latched one is on the air
    assert heard("10.9.9.9", 1, now=0.04) == "not_allowed"
    # the gateway paused 0.2 s (longer than the jitter depth, shorter than new_stream_after_s): it keeps the channel
    assert heard(gateway, 3, now=0.2) == "other_ssrc"
    assert source.stats.switches == 0
    assert heard(gateway, 3, now=0.5) == "heard"  # the gateway's last stream has ended: its new one (restarted)
    assert heard(gateway, 1, now=0.52) == "other_ssrc"  # ... and the old SSRC is now the other one
    assert heard(standby, 2, now=2.4) == "other_sender"  # the gateway silent 1.9 s: less than takeover_s
    assert heard(standby, 2, now=2.6) == "heard"  # silent 2.1 s: the standby takes over
    assert heard(gateway, 3, now=2.62) == "other_sender"
    assert heard(gateway, 3, now=70.0) == "heard"  # the standby silent long enough in turn: the gateway takes it back
    assert heard(standby, 2, now=70.02) == "other_sender"
    assert source.stats.switches == 3  # SSRC 3, the standby, the gateway again
    logged = [r.getMessage() for r in caplog.records]
    assert [m for m in logged if "refused" in m] == [  # each kind once, then once a minute with the count between
        "channel r1: RTP from 10.1.2.4 SSRC 00000002 refused: latched onto 10.1.2.3 SSRC 00000001",
        "channel r1: RTP SSRC 00000003 from 10.1.2.3 refused: 10.1.2.3 SSRC 00000001 is on the air",
        "channel r1: RTP from 10.9.9.9 refused: not on the channel's allow list",
        "channel r1: RTP from 10.1.2.4 SSRC 00000002 refused: latched onto 10.1.2.3 SSRC 00000003"
        " (2 more since the last such line)",
    ], logged
    assert any("takes over from 10.1.2.3 SSRC 00000003" in m for m in logged)


def test_rtp_config_binds_to_loopback_by_default_and_wants_an_address() -> None:
    config = RtpSource(type="rtp", port=5004, allow=["10.1.2.3", "10.1.3.0/24"])
    assert config.bind == "127.0.0.1" and config.takeover_s == 2.0 and config.new_stream_after_s == 0.3
    assert [str(n) for n in config.allow] == ["10.1.2.3/32", "10.1.3.0/24"]
    with pytest.raises(ValidationError, match="not an IP address"):
        RtpSource(type="rtp", port=5004, bind="gateway.local")


def test_parse_rejects_each_malformation_with_a_reason() -> None:
    packet = rtp_packet(7, 160, b"\xff" * 160, 0)
    assert parse_rtp(packet).payload == b"\xff" * 160
    for bad, reason in [
        (packet[:11], "shorter than the 12-byte"),
        (bytes([0x40]) + packet[1:], "version 1"),
        (bytes([0x8F]) + packet[1:40], "truncated"),
        (bytes([0x90]) + packet[1:14], "header extension"),
        (bytes([0xA0]) + packet[1:-1] + b"\x00", "padding"),
    ]:
        with pytest.raises(MalformedPacket, match=reason):
            parse_rtp(bad)


# --- the jitter buffer alone -------------------------------------------------------------------------------


def test_jitter_buffer_wraps_reorders_and_counts() -> None:
    jb: JitterBuffer[int] = JitterBuffer(depth=0.06)
    assert jb.push(65534, 65534, now=0.0) is None
    assert jb.pop(0.01) == []  # the first packet waits the depth, in case an earlier one is still on its way
    assert [r.item for r in jb.pop(0.06)] == [65534]
    jb.push(0, 0, now=0.07)  # 65535 is missing; 0 follows it across the wrap
    assert jb.pop(0.08) == []
    jb.push(65535, 65535, now=0.09)
    assert [r.item for r in jb.pop(0.09)] == [65535, 0]
    assert jb.push(0, 0, now=0.1) == "late"
    jb.push(2, 2, now=0.1)
    assert jb.push(2, 2, now=0.1) == "duplicate"
    released = jb.pop(0.2)
    assert [(r.item, r.missing, r.fill) for r in released] == [(2, 1, 1)]
    assert (jb.late, jb.duplicate, jb.lost) == (1, 1, 1)


def test_jitter_buffer_long_loss_is_counted_not_filled_and_restart_resyncs() -> None:
    jb: JitterBuffer[int] = JitterBuffer(depth=0.0)
    jb.push(10, 10, now=0.0)
    jb.pop(0.0)
    jb.push(10 + MAX_FILL + 5, 1, now=1.0)
    assert [(r.missing, r.fill) for r in jb.pop(1.0)] == [(MAX_FILL + 4, 0)]
    assert jb.push(20000, 2, now=2.0) is None  # far ahead: a sender restart, not 20,000 lost packets
    assert [(r.item, r.missing) for r in jb.pop(2.0)] == [(2, 0)]
    assert jb.push(5, 3, now=3.0) == "restart"  # far behind: a restart too, not a late packet
    assert [r.item for r in jb.pop(3.0)] == [3]
    assert jb.lost == MAX_FILL + 4


async def test_real_time_stream_is_stamped_continuously_on_the_sender_clock(speech: Path) -> None:
    packets = packetise(ffmpeg_encode(speech, "mulaw", 8000), 160, 160, 0, first_seq=0)[:50]  # 1 s, sent in real time
    source = rtp_source()
    frames: list[Frame] = []

    async def consume() -> None:
        async for frame in source.frames():
            frames.append(frame)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        started = time.time()
        start = loop.time()
        for i, packet in enumerate(packets):
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))  # packet i is sent once it has been said
            if i % 7 == 3:
                await asyncio.sleep(0.015)  # network jitter: this one is late...
            sender.sendto(packet, ("127.0.0.1", source.config.port))
    await asyncio.sleep(0.4)
    consumer.cancel()
    steps = [round(b.ts - a.ts, 3) for a, b in itertools.pairwise(frames)]
    assert set(steps) == {0.02}, collections.Counter(steps)  # idle silence, the talk spurt, idle silence: one timeline
    first_audio = next(f for f in frames if f.pcm != bytes(FRAME_BYTES))
    assert abs(first_audio.ts - started) < 0.05


async def test_packets_sent_while_the_loop_is_busy_wait_in_the_socket_not_lost(speech: Path) -> None:
    """The whole recording (44.1 kHz L16: 214 packets of 1.8 kB) arrives while the loop is blocked: the kernel holds it
    all for the receiver (its default buffer would have dropped most of it)."""
    datagrams = packetise(ffmpeg_encode(speech, "s16be", 44100), 882 * 2, 882, 11, first_seq=1)
    source = rtp_source()
    frames: list[Frame] = []

    async def consume() -> None:
        async for frame in source.frames():
            frames.append(frame)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in datagrams:  # no await: the receiver cannot read until the burst is over
            sender.sendto(datagram, ("127.0.0.1", source.config.port))
    await asyncio.sleep(0.5)
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    assert source.stats.packets == len(datagrams) and source.stats.lost == 0
    corr, _ = envelope_match(decode_file(speech), b"".join(f.pcm for f in frames), max_lag_frames=LEAD_FRAMES)
    assert corr > 0.95, corr


async def test_in_the_service_an_intruder_costs_the_call_nothing_and_shows_on_the_channel(
    tmp_path: Path, calls_audio: Path
) -> None:
    """Issue 12: a second sender interleaved with a real call left 0 utterances, and nothing showed."""
    port = free_udp_port()
    config = {
        "jurisdiction": str(Path(__file__).resolve().parents[2] / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / "data"), "audio_format": "wav"},
        "broker": {"enabled": False},
        "asr": {"engine": "none"},
        "channels": [{"id": "r1", "name": "r1", "source": {"type": "rtp", "port": port}}],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    service = Service(load_config(tmp_path / "config.yaml"))
    run = asyncio.create_task(service.run(serve_http=False))
    call = mulaw_call(calls_audio / "c001.wav")
    noise = np.random.default_rng(12).integers(0, 256, (len(call), 160), dtype=np.uint8)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(1.0)  # the channel opens its socket
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gateway, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:  # fmt: skip
            intruder.bind(("127.0.0.2", 0))
            start = loop.time()
            for i, (packet, n) in enumerate(zip(call, noise, strict=True)):
                await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))  # in real time, as a gateway sends
                gateway.sendto(packet, ("127.0.0.1", port))
                intruder.sendto(rtp_packet(40000 + i, 160 * i, n.tobytes(), 0, ssrc=0x0BADF00D), ("127.0.0.1", port))
        for _ in range(50):
            await asyncio.sleep(0.1)
            state = service.channel_states()[0]
            if state["utterances"]:
                break
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert state["utterances"] == 1
    assert state["rejected"] == len(call) and state["rejected_by"] == {"other_sender": len(call)}
    assert "127.0.0.2" in state["source_error"]
    assert state["stream_switches"] == 0
