"""Announcements on a channel's transmit path (hardware/announcements.py), on a simulated line and a real WAV-file
sink: keyed once the first phrase is rendered, before the last (real Kokoro voice); one announcement per incident;
waiting ones merged into one transmission; an airtime budget per channel; the busy-channel hold-off kept."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asr.models import TTS, locate
from bridge.sinks import FileSink
from dispatch.announce import Announcement
from dispatch.speech import EspeakVoice, KokoroVoice, Speaker, phrases
from hardware.announcements import Announcements, ChannelAnnouncements
from hardware.config import FileSinkConfig, SimulatedLineConfig, TransmitConfig
from hardware.lines import SimulatedLine
from hardware.transmit import Transmitter


def tone(seconds: float, hz: float) -> bytes:
    t = np.arange(round(seconds * 16000)) / 16000
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


@asynccontextmanager
async def channel(tmp_path: Path, speaker: Speaker | None = None, clock: Any = time.monotonic, speech_ended: Any = None,
                  realtime: bool = False, **settings: Any
                  ) -> AsyncIterator[tuple[ChannelAnnouncements, SimulatedLine, FileSink]]:  # fmt: skip
    """A channel's announcement queue on a simulated line and a WAV-file sink (`realtime`: as long as playing takes)."""
    settings = {"key_up_delay_ms": 0, "tail_ms": 0, "clear_ms": 0} | settings
    config = TransmitConfig(output=FileSinkConfig(type="file", directory=tmp_path / "tx", realtime=realtime), **settings)
    line = SimulatedLine("ch", SimulatedLineConfig(type="simulated"))
    sink = FileSink("ch", config.output)
    async with line:
        tx = Transmitter("ch", line, sink, config, speech_ended=speech_ended)
        await tx.start()
        queue = ChannelAnnouncements(tx, speaker, clock)
        yield queue, line, sink
        await tx.close()


async def played(queue: ChannelAnnouncements, transmissions: int, timeout: float = 30.0) -> None:
    task = asyncio.create_task(queue.run())
    try:
        async with asyncio.timeout(timeout):
            while queue.transmissions + queue.dropped["not_sent"] < transmissions:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()


async def eventually(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def written(sink: FileSink) -> list[bytes]:
    out = []
    for path in sink.written:
        with wave.open(str(path)) as w:
            out.append(w.readframes(w.getnframes()))
    return out


async def test_an_update_replaces_the_waiting_announcement_of_its_incident(tmp_path: Path) -> None:
    first, update, other = tone(0.3, 440), tone(0.3, 880), tone(0.3, 660)
    async with channel(tmp_path) as (queue, _, sink):
        queue.submit(Announcement("ch", "INC-1", "美食街有人打架", first))
        queue.submit(Announcement("ch", "INC-2", "西光中学有可疑人员", other))
        queue.submit(Announcement("ch", "INC-1", "美食街有人持械", update))
        await played(queue, 1)
    [audio] = written(sink)
    assert first not in audio and audio.index(other) < audio.index(update), "the update, in its place after INC-2"
    assert queue.dropped["replaced"] == 1 and queue.announced == 2


async def test_a_call_made_on_a_partial_is_revised_by_the_final(tmp_path: Path) -> None:
    """Still waiting (the caller keys the channel), a call is replaced by the final's or withdrawn unsaid; once said,
    a confirmation adds nothing, a change is said as a correction."""
    rendered: list[str] = []
    speaker = Speaker(EspeakVoice(), on_rendered=rendered.append)
    talking = [True]
    try:
        async with channel(tmp_path, speaker, speech_ended=lambda: None if talking[0] else time.time()) as (queue, _, _):
            queue.submit(Announcement("ch", "INC-1", "美食街有人打架"))
            queue.submit(Announcement("ch", "INC-1", "美食街有人吵架", if_said="更正，美食街有人吵架"))
            queue.submit(Announcement("ch", "INC-2", "西光中学发现可疑情况"))
            queue.submit(Announcement("ch", "INC-2", "", if_said="西光中学发现可疑情况，警情撤销"))
            talking[0] = False
            await played(queue, 1)
            queue.submit(Announcement("ch", "INC-1", "美食街有人吵架", if_said=""))  # the final confirms it
            queue.submit(Announcement("ch", "INC-1", "长乐公园有人吵架", if_said="更正，长乐公园有人吵架"))
            queue.submit(Announcement("ch", "INC-3", "", if_said="……警情撤销"))  # never called here: nothing to withdraw
            await played(queue, 2)
    finally:
        speaker.close()
    assert rendered == ["美食街有人吵架", "更正", "长乐公园有人吵架"]
    assert queue.dropped == {"replaced": 1, "withdrawn": 1} and queue.announced == 2


async def test_a_call_waiting_for_the_caller_to_let_go_is_still_replaced_by_the_final(tmp_path: Path) -> None:
    """The provisional call for the caller's own channel waits while he talks; the final's revision, arriving before
    he lets go, replaces it: the words of the partial never go on the air."""
    rendered: list[str] = []
    speaker = Speaker(EspeakVoice(), on_rendered=rendered.append)
    talking = [True]
    try:
        async with channel(tmp_path, speaker, speech_ended=lambda: None if talking[0] else time.time()) as (queue, line, _):
            task = asyncio.create_task(played(queue, 1))
            queue.submit(Announcement("ch", "INC-1", "美食街有人打架"))
            await asyncio.sleep(0.3)  # the queue is running, the caller still talks
            assert not line.keyed
            queue.submit(Announcement("ch", "INC-1", "美食街有人吵架", if_said="更正，美食街有人吵架"))
            talking[0] = False
            await task
    finally:
        speaker.close()
    # (its first phrase renders while it waits: the partial's words may be rendered, never said)
    assert rendered[-1] == "美食街有人吵架" and "更正" not in rendered
    assert queue.dropped == {"replaced": 1} and queue.announced == 1 and queue.state()["waiting"] == 0


async def test_a_call_whose_first_phrase_still_renders_is_replaced_by_the_final_not_corrected(
    tmp_path: Path, kokoro: Path
) -> None:
    """On a first start nothing is rendered ahead: the call's first phrase takes the voice a while. The final's
    revision coming meanwhile replaces the call, which was never on the air: no 更正 of words nobody heard."""
    rendered: list[str] = []
    speaker = Speaker(KokoroVoice(kokoro), on_rendered=rendered.append)
    try:
        async with channel(tmp_path, speaker) as (queue, _, sink):
            task = asyncio.create_task(played(queue, 1, timeout=60))
            queue.submit(Announcement("ch", "INC-1", "长乐公园北门有人打架斗殴，请迅速赶往长乐公园北门"))
            await asyncio.sleep(0.05)  # its first phrase rendering (Kokoro takes ~0.5 s for it)
            if rendered:
                pytest.skip("the voice rendered the first phrase within 0.05 s: nothing left to test")
            queue.submit(Announcement("ch", "INC-1", "长乐公园北门有人吵架闹事，请迅速赶往长乐公园北门",
                                      if_said="更正，长乐公园北门有人吵架闹事，请迅速赶往长乐公园北门"))  # fmt: skip
            await task
    finally:
        speaker.close()
    assert queue.state()["waiting"] == 0, "no correction queued after it"
    assert "更正" not in rendered and queue.announced == 1 and queue.dropped == {"replaced": 1}, (rendered, queue.dropped)
    assert rendered[-2:] == ["长乐公园北门有人吵架闹事", "请迅速赶往长乐公园北门"] and len(sink.written) == 1


class GatedVoice:
    """A voice that takes as long to render a phrase as it lasts (so its later phrases will not keep up before they
    render) and holds the phrases named in `held` until `release` is set: a slow voice on a busy box."""

    name = identity = "gated"

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.release = threading.Event()

    def synthesise(self, phrase: str) -> bytes:
        if phrase in self.held:
            self.release.wait(10)
        time.sleep(0.3)
        return tone(0.3, 440)

    def background(self) -> GatedVoice:
        return self

    def interrupt(self) -> None:
        pass


@pytest.mark.parametrize("final", ["another place", "routine"])
async def test_a_call_taken_while_its_later_phrases_render_is_revised_unsaid(tmp_path: Path, final: str) -> None:
    """The call is taken for the air (its first phrase rendered, the channel clear) but not keyed while its later
    phrases render. The final's revision arriving then replaces it, or withdraws it: never a 更正 of words nobody
    heard, and nothing keyed for a withdrawn call."""
    voice = GatedVoice(held={"请迅速赶往现场"})
    rendered: list[str] = []
    speaker = Speaker(voice, on_rendered=rendered.append)
    try:
        async with channel(tmp_path, speaker) as (queue, line, sink):
            task = asyncio.create_task(queue.run())
            queue.submit(Announcement("ch", "INC-1", "美食街有人打架斗殴，请迅速赶往现场"))
            await eventually(lambda: "美食街有人打架斗殴" in rendered and queue.state()["waiting"] == 0)  # taken
            await asyncio.sleep(0.2)
            assert not line.keyed and not sink.written, "not keyed while its last phrase renders"
            if final == "routine":
                queue.submit(Announcement("ch", "INC-1", "", if_said="更正，美食街有人打架斗殴，警情撤销，无需前往"))
            else:
                queue.submit(Announcement("ch", "INC-1", "长乐公园有人打架斗殴，请迅速赶往现场",
                                          if_said="更正，长乐公园有人打架斗殴，请迅速赶往现场"))  # fmt: skip
            voice.release.set()
            if final == "routine":
                await asyncio.sleep(1.0)
            else:
                await eventually(lambda: queue.transmissions == 1)
                await asyncio.sleep(1.0)  # (a correction would follow within this)
            task.cancel()
    finally:
        speaker.close()
    assert not any(phrase.startswith("更正") for phrase in rendered), rendered
    if final == "routine":
        assert queue.transmissions == 0 and not sink.written and queue.dropped == {"withdrawn": 1}
    else:
        assert queue.transmissions == 1 and queue.announced == 1 and queue.dropped == {"replaced": 1}
        assert "长乐公园有人打架斗殴" in rendered and len(written(sink)) == 1


async def test_a_correction_of_what_was_said_is_not_dropped_over_the_budget(tmp_path: Path) -> None:
    speaker = Speaker(EspeakVoice())
    try:
        async with channel(tmp_path, speaker, realtime=True, announce_airtime_s=1.5) as (queue, _, sink):
            queue.submit(Announcement("ch", "INC-1", "…", tone(1.0, 440)))
            await played(queue, 1)
            queue.submit(Announcement("ch", "INC-2", "…", tone(1.0, 660)))  # over the budget: dropped
            queue.submit(Announcement("ch", "INC-1", "…", if_said="更正，长乐公园有人吵架"))  # over it too: said
            await played(queue, 2)
    finally:
        speaker.close()
    assert queue.dropped == {"over_budget": 1} and queue.announced == 2
    assert len(written(sink)[1]) > 16000, "the correction itself went on the air"


async def test_what_is_replaced_or_over_budget_is_never_rendered(tmp_path: Path) -> None:
    rendered: list[str] = []
    speaker = Speaker(EspeakVoice(), on_rendered=rendered.append)  # the fallback voice: real, and fast
    try:
        async with channel(tmp_path, speaker, announce_airtime_s=4.0) as (queue, _, sink):
            queue.submit(Announcement("ch", "INC-1", "美食街有人打架"))
            queue.submit(Announcement("ch", "INC-1", "美食街有人持械，请迅速赶往美食街"))  # its update
            queue.submit(Announcement("ch", "INC-2", "西光中学发现可疑情况，请迅速赶往西光中学"))  # over 4 s with it
            await played(queue, 1)
    finally:
        speaker.close()
    assert rendered == ["美食街有人持械", "请迅速赶往美食街"]
    assert queue.dropped == {"replaced": 1, "over_budget": 1} and len(sink.written) == 1


async def test_announcements_waiting_together_go_out_in_one_transmission(tmp_path: Path) -> None:
    a, b, c = tone(0.3, 440), tone(0.3, 660), tone(0.3, 880)
    async with channel(tmp_path) as (queue, line, sink):
        for i, pcm in enumerate((a, b, c)):
            queue.submit(Announcement("ch", f"INC-{i}", "…", pcm))
        await played(queue, 1)
    [audio] = written(sink)
    assert audio.index(a) < audio.index(b) < audio.index(c)
    assert [w for _, w in line.log].count("key") == 1, "one key-up for all three"
    assert (queue.transmissions, queue.announced, queue.merged) == (1, 3, 2)


async def test_airtime_over_the_channel_budget_is_dropped_counted_and_logged(tmp_path: Path, caplog) -> None:
    now = [1000.0]
    async with channel(tmp_path, clock=lambda: now[0], realtime=True, announce_airtime_s=1.0,
                       announce_window_s=60) as (queue, _, _):  # fmt: skip
        task = asyncio.create_task(queue.run())
        queue.submit(Announcement("ch", "INC-1", "…", tone(0.6, 440)))  # 0.6 s keyed: within 1 s
        await eventually(lambda: queue.transmissions == 1)
        with caplog.at_level(logging.WARNING, logger="hardware.announcements"):
            queue.submit(Announcement("ch", "INC-2", "…", tone(0.6, 660)))  # 0.6 + 0.6 > 1 s in the last minute
            await eventually(lambda: queue.dropped["over_budget"] == 1)
        assert "INC-2 dropped" in caplog.text and "budget" in caplog.text
        now[0] += 61  # the first has left the window
        queue.submit(Announcement("ch", "INC-3", "…", tone(0.6, 880)))
        await eventually(lambda: queue.transmissions == 2)
        task.cancel()
    assert queue.state()["dropped"] == {"over_budget": 1} and queue.announced == 2
    assert 1.2 <= queue.airtime_s < 2.0, "the airtime keyed, as the sink played it"


async def test_announcements_from_the_dispatcher_queue_reach_their_channel_only(tmp_path: Path) -> None:
    async with channel(tmp_path) as (queue, _, sink):
        announcements = Announcements({}, None)
        announcements.channels = {"ch": queue}
        incoming: asyncio.Queue[Announcement] = asyncio.Queue()
        task = asyncio.create_task(announcements.run(incoming))
        incoming.put_nowait(Announcement("elsewhere", "INC-0", "…", tone(0.2, 440)))
        incoming.put_nowait(Announcement("ch", "INC-1", "…", tone(0.2, 660)))
        await eventually(lambda: queue.transmissions == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(sink.written) == 1 and announcements.state("ch")["announced"] == 1


# --- the real voice ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kokoro() -> Path:
    model = locate(TTS)
    if not model.found or model.path is None:
        pytest.fail(f"test material missing: {model.message()}")
    return model.path


async def test_the_channel_is_keyed_before_the_whole_announcement_is_rendered(tmp_path: Path, kokoro: Path) -> None:
    events: list[tuple[float, str]] = []
    speaker = Speaker(KokoroVoice(kokoro), on_rendered=lambda phrase: events.append((time.monotonic(), phrase)))
    # the pace the voice has shown so far: 0.5 s of rendering per s of speech, as on an idle machine; what the test
    # renders hardly moves it, so when the rest "will render in time" does not depend on how busy this machine is
    speaker.render_s, speaker.speech_s = 500.0, 1000.0
    text = "西光中学保安请注意，西光中学东门发现可疑情况，请迅速赶往西光中学"
    try:
        async with channel(tmp_path, speaker) as (queue, line, sink):
            queue.submit(Announcement("ch", "INC-1", text))
            await played(queue, 1, timeout=60)
    finally:
        speaker.close()
    order = [what for _, what in sorted(events + [(t, w) for t, w in line.log])]
    said = [p for p, _ in phrases(text)]
    # keyed once the first phrase is ready and the rest can render in time (the voice's pace), before it all is
    assert order.index(said[0]) < order.index("key") < order.index(said[-1]) < order.index("unkey"), order
    assert [w for w in order if w in said] == said
    [audio] = written(sink)
    assert audio == speaker.render(text), "every phrase played, in order, with its pauses"


async def test_a_busy_channel_is_not_keyed_over_while_the_announcement_renders(tmp_path: Path) -> None:
    talking = [True]
    async with channel(tmp_path, speech_ended=lambda: None if talking[0] else time.time(), clear_ms=200) as (queue, line, sink):
        queue.submit(Announcement("ch", "INC-1", "…", tone(0.2, 440)))
        task = asyncio.create_task(played(queue, 1))
        await asyncio.sleep(0.5)
        assert not line.keyed and not sink.written, "held off while the guard talks"
        talking[0] = False
        await task
    assert queue.transmissions == 1
