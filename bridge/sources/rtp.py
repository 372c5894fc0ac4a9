"""RTP over UDP from radio-over-IP gateways: G.711 μ-law (PT 0), A-law (PT 8) or L16, through a jitter buffer.

Every datagram is parsed as RTP (RFC 3550: CSRC list, header extension, padding) and decoded with numpy lookup
tables (the stdlib audioop is deprecated). Whatever cannot be used (short or truncated packets, a wrong version, an
unconfigured payload type) is counted and logged sparingly; nothing a sender does can stop the receiver.

One stream is heard at a time: the receiver latches onto the first sender (its IP address and SSRC) and refuses the
packets of any other while that one is on the air, so a second sender cannot break up a call. The latched address may
start a new stream (a gateway restarted, a new talk spurt under a new SSRC) once its last one has been silent for
`new_stream_after_s` (0.3 s: a gateway pausing for less, e.g. a busy moment, keeps the channel against a second
stream from its own address); another address may take over only if it is on the `allow` list and the latched one
has been silent for `takeover_s`. Refused packets are counted per reason in RtpStats (other_sender, other_ssrc,
not_allowed, malformed), and every change of the stream heard in `switches`.
A sender that forges the gateway's address and keeps a stream going while the gateway is silent still takes the
channel: plain RTP cannot tell them apart (docs/security.md says what can).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal

import numpy as np

from bridge.audio import FRAME_BYTES, FRAME_MS, Frame
from bridge.config import RtpSource
from bridge.sources.base import FrameAssembler, FrameClock, Resampler, SourceStats
from bridge.sources.jitter import JitterBuffer, Released

logger = logging.getLogger(__name__)

STATIC_PAYLOADS = {0: ("pcmu", 8000), 8: ("pcma", 8000), 11: ("l16", 44100)}  # RFC 3551 table 4 (L16 mono)
IDLE_GRACE_S = 0.04  # no packet for the jitter depth and this long: the sender is quiet, silence frames flow
FRAME_S = FRAME_MS / 1000
SILENCE = bytes(FRAME_BYTES)
MAX_CLOCK_SKEW_S = 1.0  # RTP time this far behind arrival (sender clock drift, a long delay): re-anchor
# What the kernel holds for us while the loop is busy: the default (~200 KB) is a few seconds of packets, after which
# it drops them; 4 MB is over a minute of G.711 (the kernel caps it at net.core.rmem_max, 4 MB on Debian 12).
RECEIVE_BUFFER_BYTES = 4 << 20
REFUSAL_LOG_S = 60.0  # a refused sender, a new stream or a restart is logged at once, then at most once a minute per kind

Refusal = Literal["other_sender", "other_ssrc", "not_allowed", "malformed"]
IpAddress = IPv4Address | IPv6Address


class MalformedPacket(ValueError):
    """A datagram that is not a usable RTP packet."""


@dataclass(slots=True, frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """RFC 3550 section 5.1 fixed header, then the CSRC list, the extension and the padding are skipped."""
    if len(data) < 12:
        raise MalformedPacket(f"{len(data)} bytes: shorter than the 12-byte RTP header")
    first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", data)
    if first >> 6 != 2:
        raise MalformedPacket(f"RTP version {first >> 6}, expected 2")
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 16-bit profile id, 16-bit length in 32-bit words
        if len(data) < start + 4:
            raise MalformedPacket("truncated in the header extension")
        start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
    end = len(data)
    if first & 0x20:  # padding: the last byte counts the padding bytes, itself included
        end -= data[-1]
        if data[-1] == 0 or end < start:
            raise MalformedPacket(f"bad padding length {data[-1]}")
    if start > len(data):
        raise MalformedPacket(f"truncated: {len(data)} bytes, header ends at {start}")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, bool(second & 0x80), data[start:end])


def _ulaw_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84 << ((code >> 4) & 0x07)) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa, exponent = code & 0x0F, (code >> 4) & 0x07
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW = _ulaw_table()
ALAW = _alaw_table()


def decode_payload(codec: str, payload: bytes) -> np.ndarray:
    """Payload bytes -> int16 samples at the payload's rate."""
    if codec == "pcmu":
        return ULAW[np.frombuffer(payload, dtype=np.uint8)]
    if codec == "pcma":
        return ALAW[np.frombuffer(payload, dtype=np.uint8)]
    if len(payload) % 2:
        raise MalformedPacket(f"L16 payload of odd length {len(payload)}")
    return np.frombuffer(payload, dtype=">i2").astype(np.int16)


@dataclass
class RtpStats(SourceStats):
    """SourceStats plus the packet counts; `lost` = packets never received, `rejected` = packets refused, in
    `rejected_by` per Refusal: other_sender (from another address while one is latched), other_ssrc (another stream
    from the latched address while its stream is on the air), not_allowed (from an address not on `allow`) and
    malformed (not usable RTP)."""

    packets: int = 0
    late: int = 0
    duplicate: int = 0
    switches: int = 0  # times the stream heard changed (a new SSRC, another address taking over), the first not counted


@dataclass(slots=True)
class _Latch:
    """The stream being heard: its sender's address and SSRC, and when its last packet arrived (loop time)."""

    address: IpAddress
    ssrc: int
    last: float

    def __str__(self) -> str:
        return f"{self.address} SSRC {self.ssrc:08x}"


class _RateLimitedLog:
    """The first event of a kind is logged at once, later ones at most once per `interval` seconds with a count of
    those not logged in between: a sender flooding the port cannot flood the log."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._logged: dict[str, tuple[float, int]] = {}  # kind -> (when last logged, events since)

    def __call__(self, kind: str, now: float, level: int, message: str, *args: object) -> None:
        if kind in self._logged:
            logged_at, unlogged = self._logged[kind]
            if now - logged_at < self.interval:
                self._logged[kind] = (logged_at, unlogged + 1)
                return
            if unlogged:
                message += f" ({unlogged} more since the last such line)"
        logger.log(level, message, *args)
        self._logged[kind] = (now, 0)


@dataclass(slots=True)
class _Audio:
    samples: np.ndarray
    rate: int
    arrived: float  # wall clock
    timestamp: int  # RTP


class RtpClock:
    """Maps a stream's RTP timestamps (the sender's sample clock) to wall-clock time, anchored at arrival.

    Stamps then follow the sender's clock, not the network's jitter; the anchor moves earlier whenever a packet
    arrives sooner than predicted (the anchor packet had been delayed) and is reset after long skew.
    """

    def __init__(self) -> None:
        self._anchor: tuple[int, float, int] | None = None  # rtp timestamp, wall time of that sample, rate

    def start_of(self, audio: _Audio) -> float:
        arrival_start = audio.arrived - len(audio.samples) / audio.rate
        if self._anchor is not None and self._anchor[2] == audio.rate:
            rtp0, wall0, rate = self._anchor
            diff = (audio.timestamp - rtp0 + 0x80000000) % 0x100000000 - 0x80000000
            start = wall0 + diff / rate
            if 0 <= arrival_start - start <= MAX_CLOCK_SKEW_S:
                return start
        self._anchor = (audio.timestamp, arrival_start, audio.rate)
        return arrival_start


class _Stream:
    """Released packets -> frames: silence for lost packets, resampling, stamps on the sender's clock."""

    def __init__(self, assembler: FrameAssembler) -> None:
        self.assembler = assembler
        self.clock = RtpClock()
        self.resample: Resampler | None = None

    def frames_of(self, released: Released[_Audio]) -> list[Frame]:
        audio = released.item
        if self.resample is None or self.resample.in_rate != audio.rate:
            self.resample = Resampler(audio.rate)
        frames: list[Frame] = []
        if released.fill:
            frames += self.assembler.feed(self.resample(np.zeros(released.fill * len(audio.samples), np.int16)))
        end = self.clock.start_of(audio) + len(audio.samples) / audio.rate
        pcm = self.resample(audio.samples)
        return frames + self.assembler.feed(pcm, arrived=end - self.resample.lag_s)

    def end_of_spurt(self) -> list[Frame]:
        """What the resampler and the assembler still hold, once the sender has gone quiet."""
        if self.resample is None:
            return []
        pcm = self.resample(np.zeros(0, np.int16), last=True)
        self.resample = None
        return self.assembler.feed(pcm) + self.assembler.flush()

    def silence(self, ended: float) -> list[Frame]:
        """A frame of idle silence that ended at wall-clock time `ended`."""
        return self.assembler.feed(SILENCE, arrived=ended)


class RtpInput:
    """A channel received as RTP over UDP (config type "rtp")."""

    def __init__(self, channel_id: str, config: RtpSource) -> None:
        self.channel_id = channel_id
        self.config = config
        self.stats = RtpStats()
        self._buffer: JitterBuffer[_Audio] = JitterBuffer(config.jitter_ms / 1000)
        self._log = _RateLimitedLog(REFUSAL_LOG_S)
        self._wake = asyncio.Event()
        self._latch: _Latch | None = None
        self._failure: str | None = None
        self._new_stream_after = max(config.new_stream_after_s, self._buffer.depth + IDLE_GRACE_S)

    async def frames(self) -> AsyncIterator[Frame]:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._buffer.reset()
        self._latch, self._failure = None, None
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(self), local_addr=(cfg.bind, cfg.port))
        except OSError as e:
            raise self.stats.fail(f"cannot listen on UDP {cfg.bind}:{cfg.port}: {e.strerror or e}") from e
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        logger.info("channel %s: listening for RTP on UDP %s:%d (receive buffer %d KB)", self.channel_id, cfg.bind, cfg.port,
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 1024)  # fmt: skip
        stream = _Stream(FrameAssembler(FrameClock(max_lead=0.2), self.stats))
        idle_after = self._buffer.depth + IDLE_GRACE_S
        last_audio = silence_due = loop.time()
        try:
            while True:
                self._wake.clear()
                now = loop.time()
                for released in self._buffer.pop(now):
                    self.stats.lost = self._buffer.lost
                    last_audio = silence_due = now
                    for frame in stream.frames_of(released):
                        yield frame
                if self._failure:
                    raise self.stats.fail(self._failure)
                if self._wake.is_set():
                    continue
                deadline = self._buffer.next_deadline()
                if deadline is None and now - last_audio >= idle_after:
                    # nothing on the air: keep silence flowing in real time, as a receiver's audio output would
                    for frame in stream.end_of_spurt():
                        yield frame
                    wall_offset = time.time() - loop.time()
                    while silence_due + FRAME_S <= now:
                        silence_due += FRAME_S
                        for frame in stream.silence(ended=silence_due + wall_offset):
                            yield frame
                    deadline = silence_due + FRAME_S
                elif deadline is None:
                    deadline = last_audio + idle_after
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):  # not wait_for: it can swallow a cancellation (3.11)
                        await self._wake.wait()
        finally:
            transport.close()

    def datagram(self, data: bytes, sender: str, now: float) -> None:
        """One datagram from `sender` (an IP address): parsed, decoded and held in the jitter buffer, or refused."""
        self.stats.packets += 1
        address = _plain_address(sender)
        if self.config.allow and not any(address in network for network in self.config.allow):
            self._refuse("not_allowed", now, f"RTP from {address} refused: not on the channel's allow list")
            return
        try:
            packet = parse_rtp(data)
            codec, rate = self._codec(packet.payload_type)
            samples = decode_payload(codec, packet.payload)
            if not samples.size:
                raise MalformedPacket("empty payload")
        except MalformedPacket as e:
            self._refuse("malformed", now, f"malformed RTP packet from {address}: {e}")
            return
        if not self._admit(address, packet.ssrc, now):
            return
        outcome = self._buffer.push(packet.sequence, _Audio(samples, rate, time.time(), packet.timestamp), now)
        self.stats.late, self.stats.duplicate = self._buffer.late, self._buffer.duplicate
        if outcome == "restart":
            self._log("restart", now, logging.INFO, "channel %s: RTP sequence restarted at %d", self.channel_id, packet.sequence)
        self._wake.set()

    def _admit(self, address: IpAddress, ssrc: int, now: float) -> bool:
        """Whether a packet of stream (address, ssrc) is heard; latches onto it if it may replace the latched one."""
        latch = self._latch
        if latch is None:
            self._log("latch", now, logging.INFO, "channel %s: RTP from %s SSRC %08x latched", self.channel_id, address, ssrc)
        elif (latch.address, latch.ssrc) == (address, ssrc):
            latch.last = now
            return True
        elif latch.address == address:
            if now - latch.last < self._new_stream_after:  # its stream may still be on the air: this is another
                self._refuse("other_ssrc", now, f"RTP SSRC {ssrc:08x} from {address} refused: {latch} is on the air")
                return False
            self._log("new_ssrc", now, logging.INFO, "channel %s: RTP from %s: new stream SSRC %08x (was %08x)",
                      self.channel_id, address, ssrc, latch.ssrc)  # fmt: skip
        elif not self.config.allow or now - latch.last < self.config.takeover_s:
            self._refuse("other_sender", now, f"RTP from {address} SSRC {ssrc:08x} refused: latched onto {latch}")
            return False
        else:
            self._log("takeover", now, logging.INFO, "channel %s: RTP from %s SSRC %08x takes over from %s (silent %.1f s)",
                      self.channel_id, address, ssrc, latch, now - latch.last)  # fmt: skip
        if latch is not None:
            self.stats.switches += 1
        self._buffer.reset()  # whatever the old stream still had held behind a hole is not this one's
        self._latch = _Latch(address, ssrc, now)
        return True

    def _refuse(self, reason: Refusal, now: float, message: str) -> None:
        self.stats.reject(message, kind=reason)
        self._log(reason, now, logging.WARNING, "channel %s: %s", self.channel_id, message)

    def _codec(self, payload_type: int) -> tuple[str, int]:
        if payload_type in STATIC_PAYLOADS:
            return STATIC_PAYLOADS[payload_type]
        if self.config.codec is None:
            raise MalformedPacket(f"payload type {payload_type} is dynamic and no codec is configured")
        return self.config.codec, self.config.rate

    def socket_failed(self, message: str) -> None:
        self._failure = message
        self._wake.set()


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, source: RtpInput) -> None:
        self.source = source
        self.loop = asyncio.get_running_loop()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.source.datagram(data, addr[0], self.loop.time())

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (a port unreachable echoed back) say nothing about our socket's health
        logger.debug("channel %s: UDP error ignored: %s", self.source.channel_id, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.source.socket_failed(f"UDP socket lost: {exc}")


def _plain_address(sender: str) -> IpAddress:
    """The sender's IP address; an IPv4 sender seen by a socket bound to an IPv6 address as the IPv4 address itself."""
    address = ip_address(sender)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
