"""The channel's supervisor: whatever ends its source, the channel restarts it and the fault is visible."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from bridge.archive import Archive
from bridge.audio import Frame
from bridge.bus import EventBus
from bridge.channel import Channel
from bridge.config import ChannelConfig
from bridge.decode import iter_frames
from bridge.sources import SourceStats
from tests.support.archive import speech_pcm, storage

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
        for frame in iter_frames(silence + self.pcm + silence, start=1_700_000_000.0):
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

