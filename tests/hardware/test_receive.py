"""Receive glue: carrier stamped from the line at each frame's time, a VOX rise dated back, our own echo muted; and
the VOX detector's attack and hang, frame by frame."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from bridge.audio import FRAME_BYTES, FRAME_SAMPLES, Frame
from bridge.sinks import FileSink
from hardware.config import FileSinkConfig, SimulatedLineConfig, TransmitConfig, VoxLineConfig
from hardware.lines import SimulatedLine, VoxDetector, make_line
from hardware.receive import CarrierDelay, ReceiveStats, receive
from hardware.transmit import Transmitter, silence

T0 = 1_700_000_000.0
LOUD = (np.sin(np.arange(FRAME_SAMPLES) * 0.3) * 8000).astype("<i2").tobytes()  # about -15 dBFS
QUIET = bytes(FRAME_BYTES)


def _frames(pattern: str, start: float = T0) -> list[Frame]:
    """'L' a loud frame, '.' a silent one; 20 ms apart from `start`."""
    return [Frame(LOUD if c == "L" else QUIET, start + i * 0.02) for i, c in enumerate(pattern)]


async def _aiter(items):
    for item in items:
        yield item


async def _collect(agen) -> list[Frame]:
    return [f async for f in agen]


async def test_carrier_is_stamped_at_each_frames_time_without_delay():
    line = SimulatedLine("ch", SimulatedLineConfig(type="simulated"))
    async with line:
        line.set_carrier(True, T0 + 0.2)  # carrier from frame 10 ...
        line.set_carrier(False, T0 + 1.0)  # ... to frame 49
        frames = _aiter(_frames("L" * 60))
        first = await anext(receive(frames, line))
        assert first.ts == T0, "a COR line delays nothing: each frame comes out as it goes in"
        out = [first, *await _collect(receive(frames, line))]
    carrier = [f.carrier for f in out]
    assert len(out) == 60 and [f.ts for f in out] == [f.ts for f in _frames("L" * 60)]
    assert carrier == [False] * 10 + [True] * 40 + [False] * 10


def test_delay_passes_frames_unchanged_without_a_change():
    delay = CarrierDelay(60, lambda ts: T0 - 5)
    frames = [Frame(QUIET, T0 + i * 0.02, True) for i in range(10)]
    out = [g for f in frames for g in delay.feed(f)] + delay.flush()
    assert out == frames


def test_a_rise_dated_back_restamps_only_the_frames_it_covers_within_the_hindsight():
    stats = ReceiveStats()
    rose_at = T0 + 0.1  # frame 5; the line declared it at frame 8
    delay = CarrierDelay(hindsight_ms=100, carrier_since=lambda ts: rose_at, stats=stats)
    frames = [Frame(LOUD, T0 + i * 0.02, i >= 8) for i in range(12)]
    out = [g for f in frames for g in delay.feed(f)] + delay.flush()
    assert [f.carrier for f in out] == [False] * 5 + [True] * 7
    assert stats.rise_restored == 3


async def test_frames_received_while_transmitting_are_muted(tmp_path):
    output = FileSinkConfig(type="file", directory=tmp_path)
    config = TransmitConfig(output=output, key_up_delay_ms=0, tail_ms=0, echo_guard_ms=200)
    line = SimulatedLine("ch", SimulatedLineConfig(type="simulated"))
    tx = Transmitter("ch", line, FileSink("ch", config.output), config)
    async with line:
        await tx.start()
        await tx.transmit(silence(0.3))
        window_start, window_end = tx._windows[-1]
        line.set_carrier(True, window_start)  # the radio's receiver picked up our own transmission
        line.set_carrier(False, window_end + 0.1)
        frames = _frames("L" * 60, start=window_start - 0.2)  # 200 ms before, the keyed time, then after
        stats = ReceiveStats()
        out = await _collect(receive(_aiter(frames), line, tx, stats=stats))
    guard_end = window_end + 0.2
    muted = {f.ts: f.pcm == QUIET for f in out}
    assert not any(m for ts, m in muted.items() if ts < window_start), "audio before keying passes"
    assert all(m for ts, m in muted.items() if window_start <= ts <= guard_end), "audio while keyed + guard is muted"
    assert not any(m for ts, m in muted.items() if ts > guard_end), "audio after the echo guard passes"
    assert sum(ts > guard_end for ts in muted) >= 5
    assert all(not f.carrier for f in out), "our own echo never counts as carrier"
    assert stats.muted == sum(muted.values())


def test_vox_attack_and_hang_frame_by_frame():
    vox = VoxDetector(threshold_dbfs=-40, attack_ms=60, hang_ms=200)
    states = [vox.feed(f.pcm) for f in _frames("LL." + "LLL" + "....." + "." * 6 + "L" * 3)]
    # two loud frames are not enough; the third of a run raises it; 10 quiet frames (200 ms) drop it
    assert states[:3] == [False, False, False]
    assert states[3:6] == [False, False, True]
    assert states[6:15] == [True] * 9
    assert states[15] is False
    assert states[16:] == [False, False, False, True]


async def test_vox_line_drives_carrier_and_segment_stamps():
    line = make_line("ch", VoxLineConfig(type="vox", attack_ms=40, hang_ms=100, squelch_tail_ms=0))
    async with line:
        assert not line.has_ptt and line.carrier is False
        out = await _collect(receive(_aiter(_frames("." * 5 + "L" * 20 + "." * 10)), line))
        line.key()  # no PTT output: keying is only recorded (the radio keys on its own VOX)
        assert line.keyed
    carrier = [f.carrier for f in out]
    # decided at the end of the attack run (frame 6) but dated back to its first frame: carrier from frame 5, so the
    # start of the signal is not clipped by the attack time; down 5 frames (the hang) after the end
    assert carrier[:5] == [False] * 5 and carrier[5:25] == [True] * 20
    assert carrier[25:30] == [True] * 5 and carrier[30] is False


async def test_line_events_report_changes():
    line = SimulatedLine("ch", SimulatedLineConfig(type="simulated"))
    async with line:
        events = []

        async def watch():
            async for e in line.events():
                events.append((e.kind, e.state))
                if len(events) == 3:
                    return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0)
        line.set_carrier(True)
        line.key()
        line.set_carrier(False)
        await asyncio.wait_for(task, 1)
    assert events == [("carrier", True), ("ptt", True), ("carrier", False)]


async def test_audio_muted_while_transmitting_is_counted_and_logged_at_most_once_a_minute(tmp_path, caplog):
    output = FileSinkConfig(type="file", directory=tmp_path)
    config = TransmitConfig(output=output, key_up_delay_ms=0, tail_ms=0, echo_guard_ms=0)
    line = SimulatedLine("ch", SimulatedLineConfig(type="simulated"))
    tx = Transmitter("ch", line, FileSink("ch", config.output), config)
    stats = ReceiveStats()
    async with line:
        await tx.start()
        for _ in range(2):
            await tx.transmit(silence(0.2))
            start, _ = tx._windows[-1]
            frames = _frames("L" * 30, start=start - 0.1)  # 100 ms before, the keyed time, then after
            with caplog.at_level(logging.WARNING, logger="hardware.receive"):
                await _collect(receive(_aiter(frames), line, tx, stats=stats))
    muted = [line for line in caplog.messages if "muted while transmitting" in line]
    assert stats.muted >= 2 * 10 and stats.muted_s == stats.muted * 0.02
    assert len(muted) == 1, "the second spell, within the minute, is not logged again"
    assert muted[0].startswith("channel ch: ")
