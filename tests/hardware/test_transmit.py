"""The transmit path on a simulated line and a real WAV-file sink: timing of key-up / audio / tail / unkey from
recorded timestamps, the time-out timer, busy-channel hold-off, priority, and PTT released on every failure.
Bounds are loose on purpose (a loaded 2-core machine): lower bounds are exact, upper bounds allow +150 ms."""

from __future__ import annotations

import asyncio
import time
import wave

import pytest

from bridge.sinks import FileSink
from hardware.config import Cm108LineConfig, FileSinkConfig, SimulatedLineConfig, TransmitConfig
from hardware.lines import SimulatedLine, make_line
from hardware.transmit import Priority, Transmitter, silence
from tests.hardware.fakes import FakeHidraw, TimedSink

SLACK = 0.15


def _tx(tmp_path, **settings) -> tuple[Transmitter, SimulatedLine, TimedSink]:
    config = TransmitConfig(output=FileSinkConfig(type="file", directory=tmp_path / "tx"), **settings)
    line = SimulatedLine("ch", SimulatedLineConfig(type="simulated"))
    sink = TimedSink(FileSink("ch", config.output))
    return Transmitter("ch", line, sink, config), line, sink


def _at(line: SimulatedLine, what: str, nth: int = 0) -> float:
    return [t for t, w in line.log if w == what][nth]


async def test_key_up_delay_audio_tail_unkey_timing(tmp_path):
    tx, line, sink = _tx(tmp_path, key_up_delay_ms=200, tail_ms=300)
    async with line:
        await tx.start()
        result = await tx.transmit(silence(1.0), label="announcement")
    assert result.status == "sent"
    key, unkey = _at(line, "key"), _at(line, "unkey")
    begin, end = sink.at("begin"), sink.at("end")
    assert 0.2 <= begin - key <= 0.2 + SLACK
    assert 1.0 - 0.01 <= end - begin <= 1.0 + SLACK
    assert 0.3 <= unkey - end <= 0.3 + SLACK
    assert abs(result.keyed - (unkey - key)) < 0.05
    with wave.open(sink.inner.written[0]) as wav:
        assert wav.getnframes() == 16000 and wav.getframerate() == 16000
    assert not line.keyed and not tx.transmitting


async def test_time_out_timer_unkeys_a_stuck_transmission(tmp_path):
    tx, line, sink = _tx(tmp_path, key_up_delay_ms=0, tail_ms=0, tot_s=0.5)
    async with line:
        await tx.start()
        result = await tx.transmit(silence(5.0))
    assert result.status == "timeout" and "time-out" in (result.error or "")
    assert 0.5 <= _at(line, "unkey") - _at(line, "key") <= 0.5 + SLACK
    assert sink.log[-1][1] == "stopped" and not line.keyed and tx.counts["timeout"] == 1


async def test_busy_channel_holds_off_until_clear(tmp_path):
    tx, line, _ = _tx(tmp_path, key_up_delay_ms=0, tail_ms=0, clear_ms=300)
    async with line:
        await tx.start()
        line.set_carrier(True)  # a guard is talking
        task = asyncio.create_task(tx.transmit(silence(0.1)))
        await asyncio.sleep(0.4)
        assert not line.keyed and not task.done()
        dropped = time.monotonic()
        line.set_carrier(False)
        result = await task
    assert result.status == "sent"
    assert 0.3 <= _at(line, "key") - dropped <= 0.3 + SLACK
    assert result.waited >= 0.7


async def test_a_channel_that_never_clears_drops_normal_traffic(tmp_path):
    tx, line, _ = _tx(tmp_path, max_wait_s=0.3)
    async with line:
        await tx.start()
        line.set_carrier(True)
        result = await tx.transmit(silence(0.1))
    assert result.status == "busy" and result.keyed == 0
    assert "key" not in [w for _, w in line.log]


async def test_segmenter_speech_counts_as_busy_too(tmp_path):
    speaking = True
    tx, line, _ = _tx(tmp_path, max_wait_s=0.3, clear_ms=100)
    tx.speech_ended = lambda: None if speaking else float("-inf")
    async with line:
        await tx.start()
        assert (await tx.transmit(silence(0.1))).status == "busy"
        speaking = False
        assert (await tx.transmit(silence(0.1))).status == "sent"


async def test_quiet_counts_from_the_end_of_the_speech_the_receiver_heard(tmp_path):
    """The segmenter closes an utterance after a hang-over of silence: that silence counts towards clear_ms, so a
    channel whose caller stopped long enough ago is keyed at once; one whose caller just stopped still waits."""
    ended: list[float | None] = [float("-inf")]  # never heard anyone
    tx, line, _ = _tx(tmp_path, key_up_delay_ms=0, tail_ms=0, clear_ms=500)
    tx.speech_ended = lambda: ended[0]
    async with line:
        await tx.start()
        assert (await tx.transmit(silence(0.1))).status == "sent"
        for quiet_s, wait_s in ((0.6, 0.0), (0.0, 0.5)):
            ended[0] = None  # someone talks (the transmitter sees it), then his utterance closes
            task = asyncio.create_task(tx.transmit(silence(0.05)))
            await asyncio.sleep(0.1)
            assert not task.done()
            ended[0], closed = time.time() - quiet_s, time.monotonic()
            assert (await task).status == "sent"
            assert wait_s - 0.05 <= _at(line, "key", -1) - closed <= wait_s + SLACK, (quiet_s, wait_s)


async def test_command_priority_overrides_a_busy_channel(tmp_path):
    tx, line, _ = _tx(tmp_path, key_up_delay_ms=0, tail_ms=0)
    async with line:
        await tx.start()
        line.set_carrier(True)
        started = time.monotonic()
        result = await tx.transmit(silence(0.1), priority=Priority.COMMAND, label="command room")
    assert result.status == "sent"
    assert _at(line, "key") - started < 0.1


async def test_queue_serves_higher_priority_first(tmp_path):
    tx, line, _ = _tx(tmp_path, key_up_delay_ms=0, tail_ms=0, clear_ms=0)
    order: list[str] = []

    async def send(label: str, priority: Priority) -> None:
        await tx.transmit(silence(0.2), priority=priority, label=label)
        order.append(label)

    async with line:
        await tx.start()
        first = asyncio.create_task(send("first", Priority.NORMAL))
        await asyncio.sleep(0.05)
        patch = asyncio.create_task(send("patch", Priority.PATCH))
        await asyncio.sleep(0.01)
        command = asyncio.create_task(send("command", Priority.COMMAND))
        await asyncio.sleep(0.01)
        assert tx.queued == 2
        await asyncio.gather(first, patch, command)
    assert order == ["first", "command", "patch"]
    keys, unkeys = [t for t, w in line.log if w == "key"], [t for t, w in line.log if w == "unkey"]
    assert all(unkeys[i] <= keys[i + 1] for i in range(2))  # never two transmissions at once


async def test_failure_and_cancellation_release_ptt(tmp_path):
    tx, line, _ = _tx(tmp_path, key_up_delay_ms=0, tail_ms=0)

    async def broken_stream():
        yield silence(0.1)
        raise RuntimeError("producer crashed")

    async with line:
        await tx.start()
        with pytest.raises(RuntimeError):
            await tx.transmit(broken_stream())
        assert not line.keyed
        task = asyncio.create_task(tx.transmit(silence(5.0)))
        await asyncio.sleep(0.2)
        assert line.keyed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not line.keyed
        assert (await tx.transmit(silence(0.05))).status == "sent"  # the turn was released too


async def test_echo_windows(tmp_path):
    tx, line, _ = _tx(tmp_path, key_up_delay_ms=0, tail_ms=0, echo_guard_ms=300)
    async with line:
        await tx.start()
        before = time.time()
        task = asyncio.create_task(tx.transmit(silence(0.3)))
        await asyncio.sleep(0.1)
        assert tx.transmitting and tx.is_echo(time.time())
        await task
        unkeyed = time.time()
    assert not tx.is_echo(before - 0.01)
    assert tx.is_echo(unkeyed + 0.25)
    assert not tx.is_echo(unkeyed + 0.35)


async def test_closing_refuses_what_is_still_queued(tmp_path):
    tx, line, _sink = _tx(tmp_path, key_up_delay_ms=0, tail_ms=0)
    async with line:
        await tx.start()
        first = asyncio.create_task(tx.transmit(silence(0.3), label="first"))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(tx.transmit(silence(0.3), label="queued"))
        await asyncio.sleep(0.05)
        await tx.close()  # the service stopping while one transmission plays and another waits
        results = await asyncio.gather(first, queued)
    assert results[1].status == "failed" and results[1].error == "transmitter closed" and results[1].keyed == 0
    assert [w for _, w in line.log] == ["key", "unkey"], "nothing keyed the line after close"


@pytest.mark.parametrize("unplugged", ["before key-up", "while keyed"])
async def test_an_unplugged_fob_fails_the_transmission_and_the_channel_is_not_left_deaf(tmp_path, unplugged):
    # A real CM108 line on a pty posing as its hidraw device, found through a symlink as udev names a fob. Closing
    # the pty makes every write to the open device fail (EIO) and removing the link makes it vanish, as unplugging
    # a USB fob does; a new pty behind the link is the fob plugged back in.
    device = tmp_path / "radio-fob"
    fake = FakeHidraw.create()
    device.symlink_to(fake.path)
    config = TransmitConfig(output=FileSinkConfig(type="file", directory=tmp_path / "tx"), key_up_delay_ms=0,
                            tail_ms=0, echo_guard_ms=200)
    line = make_line("ch", Cm108LineConfig(type="cm108", device=str(device), cor=None))
    faults: list[str] = []
    tx = Transmitter("ch", line, FileSink("ch", config.output), config, on_fault=faults.append)
    line_faults: list[str | None] = []
    line.on_fault = line_faults.append  # what the channel card is told (Radios sets this hook)

    def unplug() -> None:
        fake.close()
        device.unlink()

    async with line:
        await tx.start()
        if unplugged == "before key-up":
            unplug()
            result = await tx.transmit(silence(0.3), label="announce inc-1")
        else:
            task = asyncio.create_task(tx.transmit(silence(0.3), label="announce inc-1"))
            await asyncio.sleep(0.1)
            assert tx.transmitting
            unplug()
            result = await task
        ended = time.time()
        assert result.status == "failed" and "does not exist (fob unplugged?" in (result.error or "")
        assert not tx.transmitting and not line.keyed, "the transmitter knows it is off the air"
        assert not tx.is_echo(ended + 0.25), "what the channel receives after the echo guard is heard again"
        assert tx.counts["failed"] == 1
        assert faults == [f"announce inc-1 failed: {result.error}"]
        assert tx.state()["current"] is None
        assert line_faults and "does not exist" in (line_faults[-1] or ""), "unplugged: the line is faulty"

        fake = FakeHidraw.create()  # plugged back in
        device.symlink_to(fake.path)
        try:
            assert (await tx.transmit(silence(0.1))).status == "sent"
            assert fake.output_reports() == [bytes.fromhex("0000040400"), bytes.fromhex("0000000400")]
            assert line_faults[-1] is None and line.fault is None, "the device is back: the line's fault is over"
            await tx.close()
        finally:
            fake.close()
