"""Pipe source: raw PCM of every format from a file, a FIFO and real standard input; and the web push source."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.audio import FRAME_BYTES, SAMPLE_RATE
from bridge.config import PipeSource, WebSource
from bridge.decode import decode_file
from bridge.sources import PipeInput, PushSource, SourceError, open_source
from bridge.sources.base import BACKLOG_S
from bridge.sources.pipe import to_int16
from tests.conftest import REPO
from tests.support.audio_check import collect, envelope_match, stamp_steps

SPEECH = "aishell1_BAC009S0724W0121.wav"

# sample_format -> sox encoding options for the same raw layout
SOX_RAW = {
    "s16le": ["-e", "signed-integer", "-b", "16"],
    "u8": ["-e", "unsigned-integer", "-b", "8"],
    "s24le": ["-e", "signed-integer", "-b", "24"],
    "f32le": ["-e", "floating-point", "-b", "32"],
}


@pytest.fixture(scope="module")
def speech(shared_audio: Path) -> Path:
    return shared_audio / SPEECH


def raw_pcm(src: Path, dst: Path, sample_format: str, rate: int, channels: int) -> Path:
    """The recording as headerless PCM; in stereo the second channel is silent, so using it instead would show."""
    remix = ["remix", "1", "0"] if channels == 2 else []
    subprocess.run(
        ["sox", str(src), "-t", "raw", "-L", *SOX_RAW[sample_format], "-r", str(rate), "-c", str(channels), str(dst), *remix,
         "rate", str(rate)],
        check=True, capture_output=True,
    )
    return dst


@pytest.mark.parametrize(
    ("sample_format", "rate", "channels"),
    [("s16le", 16000, 1), ("u8", 8000, 1), ("s24le", 48000, 2), ("f32le", 44100, 1), ("s16le", 8000, 2)],
)
async def test_raw_formats_from_a_file(speech: Path, tmp_path: Path, sample_format: str, rate: int, channels: int) -> None:
    raw = raw_pcm(speech, tmp_path / "in.raw", sample_format, rate, channels)
    source = open_source("p1", PipeSource(type="pipe", path=str(raw), rate=rate, sample_format=sample_format, channels=channels))
    frames = await collect(source)
    reference = decode_file(speech)
    assert all(len(f.pcm) == FRAME_BYTES for f in frames)
    assert abs(len(frames) * FRAME_BYTES - len(reference)) <= 2 * FRAME_BYTES
    corr, _ = envelope_match(reference, b"".join(f.pcm for f in frames), max_lag_frames=2)
    assert corr > 0.95, corr
    assert stamp_steps(frames) == {0.02}
    assert source.stats.frames == len(frames)


def test_sample_conversions_are_exact_at_the_extremes() -> None:
    assert to_int16(bytes([0, 128, 255]), "u8", 1).tolist() == [-32768, 0, 32512]
    s24 = np.array([-(2**23), -1, 0, 2**23 - 1], dtype="<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    assert to_int16(s24, "s24le", 1).tolist() == [-32768, -1, 0, 32767]
    f32 = np.array([-2.0, -1.0, 0.0, 0.5, np.nan, np.inf], dtype="<f4").tobytes()
    assert to_int16(f32, "f32le", 1).tolist() == [-32767, -32767, 0, 16383, 0, 32767]
    assert to_int16(np.array([1, 2, 3, 4, 5, 6], dtype="<i2").tobytes(), "s16le", 3).tolist() == [1, 4]


async def test_fifo_is_read_without_blocking_the_loop(speech: Path, tmp_path: Path) -> None:
    pcm = decode_file(speech)
    fifo = tmp_path / "radio.fifo"
    os.mkfifo(fifo)
    source = PipeInput("p1", PipeSource(type="pipe", path=str(fifo)))
    got: list[bytes] = []
    ticks = 0

    async def consume() -> None:
        async for frame in source.frames():
            got.append(frame.pcm)

    async def tick() -> None:  # the loop stays free while the source waits for a writer and for data
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    consumer, ticker = asyncio.create_task(consume()), asyncio.create_task(tick())
    await asyncio.sleep(0.2)
    writer = await asyncio.to_thread(open, fifo, "wb")
    for offset in range(0, len(pcm), 6400):  # 0.2 s chunks, a little faster than real time
        await asyncio.to_thread(writer.write, pcm[offset : offset + 6400])
        await asyncio.to_thread(writer.flush)
        await asyncio.sleep(0.02)
    writer.close()
    await asyncio.sleep(0.3)
    consumer.cancel()
    ticker.cancel()
    assert ticks > 20
    assert b"".join(got) == pcm[: len(got) * FRAME_BYTES]
    assert len(got) >= len(pcm) // FRAME_BYTES - 1  # all but a held partial frame: the FIFO stays open for the next writer


async def test_a_channel_that_stops_reading_does_not_make_the_writer_wait(speech: Path, tmp_path: Path) -> None:
    """The capture tool feeding a FIFO must never block (it would overrun its own device): while the consumer takes
    nothing for 1.5 s, all 4.3 s of audio written meanwhile are read and held for it, then taken in order."""
    pcm = decode_file(speech)
    fifo = tmp_path / "radio.fifo"
    os.mkfifo(fifo)
    source = PipeInput("p1", PipeSource(type="pipe", path=str(fifo)))
    frames = source.frames()
    first = asyncio.create_task(anext(frames))  # the source opens the FIFO; a writer's open waits for that
    writer = await asyncio.to_thread(open, fifo, "wb", buffering=0)
    writer.write(pcm[:FRAME_BYTES])
    got = [(await first).pcm]

    def write_the_rest() -> float:
        writer.write(pcm[FRAME_BYTES:])  # 136 kB: twice a pipe's kernel buffer
        return time.monotonic()

    started = time.monotonic()
    written = asyncio.create_task(asyncio.to_thread(write_the_rest))
    await asyncio.sleep(1.5)  # the consumer is busy elsewhere; the loop is not
    assert written.done() and (await written) - started < 1.0, "the writer was never held up"
    while len(got) < len(pcm) // FRAME_BYTES:
        got.append((await asyncio.wait_for(anext(frames), 5)).pcm)
    writer.close()
    await frames.aclose()
    assert b"".join(got) == pcm[: len(got) * FRAME_BYTES]


async def test_audio_that_piled_up_while_the_loop_was_stalled_keeps_its_place_in_time(tmp_path: Path) -> None:
    """A writer feeding a FIFO in real time while the channel takes nothing for 0.3 s, then the service's loop stalls
    for 1 s (a busy process): the audio waiting when it wakes is stamped where it was spoken, the frames stay 20 ms
    apart. Stamped when taken rather than when received, a piece was stamped as if just spoken, the clock jumped by
    the wait, and the segmenter cut the call there (end reason eof: bench/faults.py's kill run split a call in three
    after a 1.7 s stall)."""
    fifo = tmp_path / "radio.fifo"
    os.mkfifo(fifo)
    source = PipeInput("p1", PipeSource(type="pipe", path=str(fifo)))
    frames = source.frames()
    first = asyncio.create_task(anext(frames))  # the source opens the FIFO; a writer's open waits for that
    writer = await asyncio.to_thread(open, fifo, "wb", buffering=0)
    stop = threading.Event()

    def talk() -> None:  # a sound card's periods: 20 ms of audio when it is due
        start = time.monotonic()
        for n in itertools.count():
            if stop.is_set():
                return
            writer.write(bytes(FRAME_BYTES))
            time.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    got = [await first]
    try:
        while len(got) < 25:
            got.append(await asyncio.wait_for(anext(frames), 2))
        await asyncio.sleep(0.3)  # the channel is busy elsewhere: the source holds 0.3 s it has received
        time.sleep(1.0)  # then the loop stalls: nothing is received, the writer goes on
        while len(got) < 25 + 65 + 25:
            got.append(await asyncio.wait_for(anext(frames), 2))
    finally:
        stop.set()
        talker.join(2)
        writer.close()
        await frames.aclose()
    assert stamp_steps(got) == {0.02}
    assert abs(got[-1].ts - (time.time() - 0.02)) < 0.3, "the stamps are still those of real time"


async def test_standard_input_of_a_real_process(speech: Path, tmp_path: Path) -> None:
    raw = raw_pcm(speech, tmp_path / "in.raw", "s16le", 8000, 1)
    script = (
        "import asyncio, json\n"
        "from bridge.config import PipeSource\n"
        "from bridge.sources import PipeInput\n"
        "async def main():\n"
        "    src = PipeInput('stdin', PipeSource(type='pipe', path='-', rate=8000))\n"
        "    n = 0\n"
        "    async for f in src.frames():\n"
        "        n += len(f.pcm) == 640\n"
        "    print(json.dumps({'frames': n}))\n"
        "asyncio.run(main())\n"
    )
    with raw.open("rb") as stdin_pipe_source:
        feeder = subprocess.Popen(["cat"], stdin=stdin_pipe_source, stdout=subprocess.PIPE)  # a pipe, not a file
        result = subprocess.run([sys.executable, "-c", script], stdin=feeder.stdout, capture_output=True, text=True,
                                cwd=REPO, timeout=60)
        feeder.wait()
    assert result.returncode == 0, result.stderr
    expected = len(decode_file(speech)) / FRAME_BYTES
    assert abs(json.loads(result.stdout)["frames"] - expected) <= 2


async def test_missing_path_is_a_clear_source_error(tmp_path: Path) -> None:
    source = PipeInput("p1", PipeSource(type="pipe", path=str(tmp_path / "nope.raw")))
    with pytest.raises(SourceError, match=r"cannot open .*nope\.raw: No such file"):
        await collect(source)
    assert source.stats.errors == 1


async def test_trailing_partial_sample_is_dropped(tmp_path: Path) -> None:
    raw = tmp_path / "odd.raw"
    raw.write_bytes(np.full(SAMPLE_RATE // 10, 1000, dtype="<i2").tobytes() + b"\x01")  # 0.1 s and half a sample
    frames = await collect(PipeInput("p1", PipeSource(type="pipe", path=str(raw))))
    assert len(frames) == 5
    assert set(np.frombuffer(b"".join(f.pcm for f in frames), dtype="<i2").tolist()) == {1000}


# --- the web push source -----------------------------------------------------------------------------------


def collecting(source: PushSource) -> tuple[list, asyncio.Task[None]]:
    """The frames `source` yields, appended to the list as they come, until the task is cancelled."""
    frames: list = []

    async def consume() -> None:
        async for frame in source.frames():
            frames.append(frame)

    return frames, asyncio.create_task(consume())


async def test_push_yields_pushed_audio_stamped_at_arrival(speech: Path) -> None:
    pcm = decode_file(speech)[: 16000 * 2]  # 1 s
    source = open_source("w1", WebSource(type="web"))
    assert isinstance(source, PushSource)
    frames, consumer = collecting(source)
    first_push = time.time()
    assert source.push(pcm)
    await asyncio.sleep(0.5)  # a pause between two presses of hold-to-talk
    second_push = time.time()
    assert source.push(pcm[:6500])  # pushes need not be frame-aligned: the last partial frame is padded and sent
    await asyncio.sleep(0.3)
    consumer.cancel()
    assert b"".join(f.pcm for f in frames[:50]) == pcm
    assert len(frames) == 61
    assert frames[60].pcm == pcm[6400:6500] + bytes(540)
    assert abs(frames[0].ts - (first_push - 1.0)) < 0.05  # stamped as audio that ended when it arrived
    assert stamp_steps(frames[:50]) == {0.02}
    assert abs(frames[50].ts - (second_push - 6500 / 32000)) < 0.05  # re-anchored after the pause, not counted on


async def test_a_press_delayed_on_its_way_is_counted_on_not_cut_in_two(speech: Path) -> None:
    """A phone's network hiccup or a stalled server delivers the rest of a press late: it is still the same recording,
    stamped on from its start, so the segmenter sees no pause in it (a CI run split 万寿路花鸟市场 | 有人晕倒了 so)."""
    pcm = decode_file(speech)[: 16000 * 2]
    source = open_source("w1", WebSource(type="web"))
    assert isinstance(source, PushSource)
    frames, consumer = collecting(source)
    assert source.push(pcm[:16000])
    await asyncio.sleep(0.8)  # the press's second half held up on the way
    assert source.push(pcm[16000:], contiguous=True)
    await asyncio.sleep(0.5)  # a pause, then a new press
    second_press = time.time()
    assert source.push(pcm[:6400])
    await asyncio.sleep(0.2)
    consumer.cancel()
    assert b"".join(f.pcm for f in frames[:50]) == pcm
    assert stamp_steps(frames[:50]) == {0.02}, "one press, one count: no gap where its audio was late"
    assert abs(frames[50].ts - (second_press - 0.2)) < 0.05, "a new press is stamped by its arrival"


async def test_push_refuses_floods_and_malformed_audio() -> None:
    now = [100.0]
    source = PushSource("w1", WebSource(type="web", max_buffer_s=1.0), clock=lambda: now[0])
    second = bytes(2 * SAMPLE_RATE)
    assert source.push(second)  # one second ahead of the clock: the most allowed
    assert not source.push(bytes(640))  # faster than real time
    assert "faster than real time" in str(source.stats.last_error)
    assert not source.push(b"\x00\x01\x02")  # odd length
    assert source.stats.rejected == 2
    assert source.stats.last_error is not None and "odd length 3" in source.stats.last_error
    frames = await collect(source, limit=50)
    assert len(frames) == 50
    assert not source.push(second), "reading fast does not let a client run further ahead of the clock"
    for _ in range(int(BACKLOG_S)):  # the channel stops reading: two minutes are held for it, second by second
        now[0] += 1.0
        assert source.push(second)
    assert source.stats.skipped_s == 0
    now[0] += 1.0
    assert not source.push(second), "nobody read for two minutes: the channel's buffer is full"
    assert "buffer full (120 s)" in str(source.stats.last_error)
    assert source.stats.skipped_s == 1.0, "what had to be refused is counted as skipped audio"
    assert source.push(bytes(640), paced=False) is False  # the server's own audio is not paced, but still bounded
