"""Sound-card source through the real PyAudio path: a private PulseAudio null sink, played into with paplay."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from bridge.audio import FRAME_BYTES, Frame
from bridge.config import SoundCardSource
from bridge.decode import decode_file
from bridge.sources import SoundCardInput, SourceError, open_source
from tests.support.audio_check import collect, envelope_match
from tests.support.pulse import PulseServer, pulse, pulse_server  # noqa: F401 (fixtures)

SPEECH = "aishell1_BAC009S0724W0121.wav"  # 4.28 s


@pytest.fixture(scope="module")
def speech(shared_audio: Path) -> Path:
    return shared_audio / SPEECH


class Capture:
    """A source consumed in the background, its frames kept."""

    def __init__(self, source: SoundCardInput) -> None:
        self.source = source
        self.frames: list[Frame] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for frame in self.source.frames():
            self.frames.append(frame)

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.task.done():
                self.task.result()  # raises what ended it
                pytest.fail("the source ended")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g} s ({len(self.frames)} frames)")
            await asyncio.sleep(0.05)

    async def stop(self) -> bytes:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return b"".join(f.pcm for f in self.frames)


def soundcard(device: str | int = "pulse", channel: int = 0) -> SoundCardInput:
    source = open_source("card", SoundCardSource(type="soundcard", device=device, channel=channel))
    assert isinstance(source, SoundCardInput)
    return source


async def play(pulse: PulseServer, path: Path) -> None:  # noqa: F811 (the fixture's type)
    player = pulse.play(path)
    _, stderr = await asyncio.to_thread(player.communicate, timeout=30)
    assert player.returncode == 0, stderr


async def test_captures_what_is_played_into_the_sink(pulse: PulseServer, speech: Path) -> None:  # noqa: F811
    capture = Capture(soundcard("pulse"))
    await capture.wait_for(lambda: len(capture.frames) >= 5, timeout=8)  # PortAudio open, first buffers in
    started = time.time()
    await play(pulse, speech)
    await asyncio.sleep(0.5)
    captured = await capture.stop()
    frames = capture.frames
    assert all(len(f.pcm) == FRAME_BYTES for f in frames)
    reference = decode_file(speech)
    corr, lag = envelope_match(reference, captured, max_lag_frames=len(frames) - len(reference) // FRAME_BYTES)
    assert corr > 0.8, corr
    assert started - 0.1 < frames[lag].ts < started + 0.5  # the speech is stamped when it was played
    steps = np.diff([f.ts for f in frames])
    assert np.mean(np.abs(steps - 0.02) < 1e-3) > 0.95  # counted on the sample clock
    assert capture.source.stats.frames == len(frames)


async def test_one_channel_of_a_stereo_device(pulse: PulseServer, speech: Path, tmp_path: Path) -> None:  # noqa: F811
    left_only = tmp_path / "left.wav"
    subprocess.run(["sox", str(speech), str(left_only), "remix", "1", "0"], check=True)
    left, right = Capture(soundcard("pulse", channel=0)), Capture(soundcard("pulse", channel=1))
    await left.wait_for(lambda: len(left.frames) >= 5, timeout=8)
    await right.wait_for(lambda: len(right.frames) >= 5, timeout=8)
    await play(pulse, left_only)
    await asyncio.sleep(0.3)
    left_pcm, right_pcm = await left.stop(), await right.stop()
    corr, _ = envelope_match(decode_file(speech), left_pcm, max_lag_frames=len(left_pcm) // FRAME_BYTES - 220)
    assert corr > 0.8
    left_peak = int(np.max(np.abs(np.frombuffer(left_pcm, dtype="<i2"))))
    # PulseAudio's resampling and stream volume cost up to ~6 dB here; what matters is speech on the left, none on the right
    assert left_peak > 0.3 * int(np.max(np.abs(np.frombuffer(decode_file(speech), dtype="<i2"))))
    assert int(np.max(np.abs(np.frombuffer(right_pcm, dtype="<i2")))) < 0.02 * left_peak  # the silent channel


async def test_vanished_device_is_a_source_error_and_comes_back(pulse: PulseServer) -> None:  # noqa: F811
    source = soundcard("default")
    frames = source.frames()
    await asyncio.wait_for(anext(frames), 8)
    pulse.unload_sink()  # unplugged
    with pytest.raises(SourceError, match="lost"):
        await asyncio.wait_for(_drain(frames), 10)
    assert source.stats.errors == 1
    with pytest.raises(SourceError):  # still gone: re-opening fails cleanly
        await asyncio.wait_for(collect(source, limit=5), 10)
    assert source.stats.errors == 2
    pulse.load_sink()  # plugged in again
    again = await asyncio.wait_for(collect(source, limit=10), 10)
    assert len(again) == 10


async def test_no_such_device_names_the_inputs_there_are(pulse: PulseServer) -> None:  # noqa: F811
    with pytest.raises(SourceError, match=r"no input device matching 'USB Audio' \(inputs: .*'pulse'"):
        await collect(soundcard("USB Audio"), limit=1)
    with pytest.raises(SourceError, match="cannot open sound card 99"):
        await collect(soundcard(99), limit=1)


async def _drain(frames: AsyncIterator[Frame]) -> None:
    async for _ in frames:
        pass


async def test_portaudio_failing_to_initialise_is_a_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_portaudio() -> None:  # the hardware edge: what PyAudio raises when Pa_Initialize fails
        raise OSError(-9999, "Unanticipated host error")

    monkeypatch.setattr("bridge.sources.soundcard.pyaudio.PyAudio", no_portaudio)
    source = soundcard("default")
    with pytest.raises(SourceError, match=r"cannot initialise PortAudio for sound card 'default'.*Unanticipated host error"):
        await collect(source, limit=1)
    assert source.stats.errors == 1


async def test_a_stalled_loop_is_not_a_lost_device(pulse: PulseServer) -> None:  # noqa: F811
    """The loop blocked longer than the stall timeout (2 s) while the source waits for audio: the audio did arrive
    (PortAudio's thread delivered it), so the device is not declared lost, and none of it is missing."""
    capture = Capture(soundcard("pulse"))
    await capture.wait_for(lambda: len(capture.frames) >= 5, timeout=8)
    time.sleep(2.5)  # blocking the loop, as a slow call on it would
    await capture.wait_for(lambda: capture.frames[-1].ts > time.time() - 0.5, timeout=5)  # caught up
    await capture.stop()
    assert capture.source.stats.errors == 0 and capture.source.stats.skipped_s == 0
    steps = np.diff([f.ts for f in capture.frames])
    assert steps.max() < 0.1, "no hole in the audio where the loop was stalled"


async def test_a_channel_minutes_behind_loses_only_the_overflow_and_counts_it(
    pulse: PulseServer, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setattr("bridge.sources.soundcard.QUEUE_BUFFERS", 50)  # 1 s instead of minutes, to overflow quickly
    source = soundcard("pulse")
    frames = source.frames()
    await asyncio.wait_for(anext(frames), 8)
    await asyncio.sleep(2.0)  # the channel takes nothing for 2 s: 1 s of it cannot be held
    for _ in range(60):
        await anext(frames)
    await frames.aclose()
    assert 0.8 <= source.stats.skipped_s <= 1.2, source.stats.skipped_s
    assert source.stats.errors == 0 and "1 s of audio waiting" in str(source.stats.last_error)
