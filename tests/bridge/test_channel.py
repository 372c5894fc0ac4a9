"""The channel's supervisor: whatever ends its source, the channel restarts it and the fault is visible; a channel
that falls behind takes its audio late, never skips it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.archive import Archive, ArchivedUtterance
from bridge.audio import FRAME_BYTES, Frame
from bridge.bus import BusEvent, EventBus, Subscription
from bridge.channel import Channel
from bridge.config import ChannelConfig
from bridge.decode import decode_file, iter_frames
from bridge.events import SegmentEvent, Utterance, UtterancePaused
from bridge.sources import SourceStats
from tests.support.archive import speech_pcm, storage
from tests.support.audio_check import stamp_steps

__all__ = ["speech_pcm"]  # a fixture, imported for pytest


class FailsOnceSource:
    """A real small source: its first open fails with an error no source is meant to raise, then it plays speech."""

    def __init__(self, pcm: bytes) -> None:
        self.pcm = pcm
        self.stats = SourceStats()
        self.opened = 0

    async def frames(self) -> AsyncIterator[Frame]:
        self.opened += 1
        if self.opened == 1:
            raise ZeroDivisionError("integer division or modulo by zero")  # what a 0-channel WAV once raised
        silence = bytes(16000)  # 0.5 s before and after, so the segmenter sees the speech start and end
        for frame in iter_frames(silence + self.pcm + silence, start=time.time()):
            yield frame
            await asyncio.sleep(0)


async def test_an_unexpected_source_error_restarts_the_channel_instead_of_ending_it(tmp_path: Path, speech_pcm: bytes) -> None:
    config = ChannelConfig.model_validate(
        {"id": "ch-x", "name": "x", "source": {"type": "file", "paths": [str(tmp_path)]}}
    )
    source = FailsOnceSource(speech_pcm)
    with Archive(storage(tmp_path / "data")) as archive:
        channel = Channel(config, archive, EventBus(), source=source)
        await asyncio.wait_for(channel.run(), timeout=30)
        rows = archive.list()
    state = channel.state.to_dict()
    assert source.opened == 2 and state["restarts"] == 1
    assert "ZeroDivisionError" in state["faults"][0]["message"]
    assert state["active_faults"] == 0  # cleared once the source worked again
    assert len(rows) == 1 and rows[0].channel == "ch-x"



async def test_a_slow_hook_puts_the_channel_behind_then_it_catches_up_without_losing_a_frame(
    tmp_path: Path, shared_audio: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real-time file channel whose hook takes 1.5 s over the first utterance: meanwhile the source holds the audio;
    the channel then takes it late (a "behind" fault, logged once), catches up (fault cleared), and every frame
    reached the segmenter in order with the stamps it was on the air with."""
    short = shared_audio / "aishellsample_BAC009S0150W0005.wav"  # 1.95 s of speech
    config = ChannelConfig.model_validate({
        "id": "ch-x", "name": "x", "vad": {"stop_window_ms": 400},
        "source": {"type": "file", "paths": [str(short), str(short)], "gap": [1.0, 1.0]},
    })  # fmt: skip
    slowed: list[float] = []

    async def slow_hook(event: SegmentEvent, archived: ArchivedUtterance | None) -> None:
        if isinstance(event, Utterance) and not slowed:
            slowed.append(time.time())
            await asyncio.sleep(1.5)  # e.g. a hand-over to recognition that waits

    bus = EventBus()
    published = bus.subscribe({"channel"})
    with Archive(storage(tmp_path / "data")) as archive:
        channel = Channel(config, archive, bus, on_event=slow_hook)
        taken: list[Frame] = []
        feed = channel.segmenter.feed
        channel.segmenter.feed = lambda frame: taken.append(frame) or feed(frame)  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="bridge.channel"):
            await asyncio.wait_for(channel.run(), timeout=30)
        utterances = len(archive.list())
    states = [e.data for e in drain(published)]

    pcm = decode_file(short)
    pcm += bytes(-len(pcm) % FRAME_BYTES)
    assert b"".join(f.pcm for f in taken) == pcm + bytes(50 * FRAME_BYTES) + pcm, "every frame, in order"
    assert stamp_steps(taken) == {0.02}
    assert slowed and utterances == 2
    [behind] = [s for s in states if any(f["kind"] == "behind" and f["active"] for f in s["faults"])]
    assert 1.0 < behind["behind_s"] < 1.6 and behind["skipped_s"] == 0
    final = channel.state.to_dict()
    assert final["active_faults"] == 0 and final["behind_s"] < 0.5 and final["skipped_s"] == 0
    [fault] = final["faults"]
    assert fault["kind"] == "behind" and fault["message"].startswith("fell 1.") and "none skipped" in fault["message"]
    lines = [r.getMessage() for r in caplog.records if "real time" in r.getMessage()]
    assert len(lines) == 2 and "behind real time" in lines[0] and "caught up" in lines[1], lines


def drain(subscription: Subscription) -> list[BusEvent]:
    events = []
    while not subscription.queue.empty():
        events.append(subscription.queue.get_nowait())
    return events


async def test_a_closed_utterance_says_how_long_the_channel_has_been_quiet(tmp_path: Path, speech_pcm: bytes) -> None:
    """The hang-over that closed an utterance was quiet: the channel says it has been quiet since its last pause
    began (the transmitter counts that towards its clear time), not only since the utterance closed."""
    config = ChannelConfig.model_validate({"id": "ch-x", "name": "x", "source": {"type": "file", "paths": [str(tmp_path)]}})
    seen: list[tuple[SegmentEvent, float]] = []

    async def hook(event: SegmentEvent, archived: ArchivedUtterance | None) -> None:
        if isinstance(event, UtterancePaused | Utterance):
            ended = channel.speech_ended()  # None while the utterance is open (at its pauses)
            seen.append((event, time.time() - ended if ended is not None else 0.0))

    with Archive(storage(tmp_path / "data")) as archive:
        channel = Channel(config, archive, EventBus(), on_event=hook, source=FailsOnceSource(speech_pcm))
        await asyncio.wait_for(channel.run(), timeout=30)
    utterance, quiet = seen[-1]
    last_pause = [e for e, _ in seen if isinstance(e, UtterancePaused)][-1]
    assert isinstance(utterance, Utterance) and utterance.reason == "silence"
    assert quiet >= config.vad.sentence_end_ms / 1000  # at least the pause the segmenter waited for
    assert abs(quiet - (utterance.end - last_pause.speech_end)) < 0.1
