"""Spoken announcements: the sentence, and real espeak-ng audio in jingbao's format on the transmit queue."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np

from bridge.audio import SAMPLE_RATE, levels_dbfs
from dispatch.announce import Announcer, announcement_text
from tests.dispatch.rig import running_dispatcher, say, utterance
from tests.support.broker import Mosquitto, broker_fixture  # noqa: F401  (the `broker` fixture)


def test_the_sentence() -> None:
    assert announcement_text("怡园警务点", "美食街", "fight") == "怡园警务点请注意，美食街有人打架斗殴，请迅速赶往现场"
    assert announcement_text("高桥警务点", None, "fire") == "高桥警务点请注意，地点待确认，发生火情，请迅速赶往现场"
    assert "发生警情" in announcement_text("派出所", "长乐公园", "something-new")


async def test_rendered_to_16k_wav_and_queued(tmp_path: Path) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    announcer = Announcer(tmp_path, queue)
    text = announcement_text("怡园警务点", "美食街", "fight")
    made = await announcer.announce("ch-police", "INC-1", text)
    assert made is not None and queue.get_nowait() is made and announcer.rendered == 1
    with wave.open(str(made.wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        assert w.readframes(w.getnframes()) == made.pcm
    assert 2.0 < made.duration < 15.0
    peak, rms = levels_dbfs(made.pcm)
    assert peak > -20 and rms > -40  # speech, not silence
    assert np.frombuffer(made.pcm, "<i2").std() > 100


async def test_failure_is_counted_not_raised(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    announcer = Announcer(blocked)
    assert await announcer.announce("ch-police", "INC-2", "测试") is None
    assert announcer.failed == 1 and announcer.queue.empty()


async def test_dispatcher_queues_a_call_on_the_alerted_guards_channel(broker: Mosquitto, tmp_path: Path) -> None:
    transmit: asyncio.Queue = asyncio.Queue()
    async with running_dispatcher(broker, tmp_path, transmit=transmit) as rig:
        incident = await rig.dispatcher.handle(say("美食街有人打架，快来人"), utterance())
        made = await asyncio.wait_for(transmit.get(), 10)
    # the nearest guard to 美食街 is 皮具饰品城's, on the market channel; it is called by its post
    assert incident is not None and incident.assigned == ("g-piju",)
    assert made.channel == "ch-market" and made.incident_id == incident.id
    assert made.text == "皮具饰品城请注意，美食街有人打架斗殴，请迅速赶往现场"
