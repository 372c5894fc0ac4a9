"""The whole chain with no human step: a spoken call on a channel ends as an alert on a real MQTT broker.

Real everything: radio-degraded speech replayed into a file channel, the segmenter, the archive, the on-board
Mandarin model, the dispatcher, mosquitto.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import wave
from pathlib import Path

import aiomqtt
import pytest
import yaml

from bridge.config import load_config
from bridge.service import Service
from bridge.web.metrics import ServiceCollector
from tests.conftest import SHERPA_MODEL
from tests.support.broker import Mosquitto, broker_fixture  # noqa: F401 (fixture)
from tests.support.central import edge_config, mqtt_fixture  # noqa: F401 (fixture)
from tests.support.radio import radio_calls_fixture  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent


def make_config(
    tmp_path: Path, wavs: list[Path], *, broker: Mosquitto | None, engine: str = "sherpa", realtime: bool = False
) -> Path:

    audio = tmp_path / "audio"
    audio.mkdir(exist_ok=True)
    for wav in wavs:
        shutil.copy(wav, audio / wav.name)
    config = {
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / "data"), "audio_format": "wav"},
        "broker": broker.service_config() if broker else {"enabled": False},
        "asr": {"engine": engine, "sherpa_model": str(SHERPA_MODEL)},
        "channels": [{"id": "ch-market", "name": "市场保安",
                      "source": {"type": "file", "paths": [str(audio)], "realtime": realtime, "gap": [2, 2]}}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


async def test_a_spoken_call_ends_as_an_alert_on_the_broker(tmp_path, broker, radio_calls):
    call = next(c for c in radio_calls(20) if c.clean.stem == "c001")  # 怡园警务点请注意，美食街有人打架斗殴…
    service = Service(load_config(make_config(tmp_path, [call.radio], broker=broker)))
    alerts: list[dict] = []

    async def listen(ready: asyncio.Event) -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier="e2e-watcher", **broker.login("console")) as client:
            await client.subscribe("jingbao/alerts/#", qos=1)
            ready.set()
            async for message in client.messages:
                alerts.append(json.loads(message.payload))

    ready = asyncio.Event()
    watcher = asyncio.create_task(listen(ready))
    await asyncio.wait_for(ready.wait(), 5)
    run = asyncio.create_task(service.run(serve_http=False))
    for _ in range(300):
        await asyncio.sleep(0.1)
        if alerts:
            break
    await asyncio.sleep(0.5)  # let the rest of the first wave arrive
    run.cancel()
    watcher.cancel()
    ended = await asyncio.gather(run, watcher, return_exceptions=True)

    outbox = service.dispatch.outbox
    assert alerts, (f"no alert reached the broker (outbox: {outbox.delivered} delivered, {len(outbox.pending())} pending;"
                    f" link connected {service.dispatch.link.connected}; service ended with {ended[0]!r})")
    assert {a["type"] for a in alerts} == {"fight"}
    assert {a["place"] for a in alerts} == {"美食街"}
    first = alerts[0]
    assert first["priority"] == "high" and first["audio_url"].startswith("/api/utterances/")
    archived = service.archive.list()
    assert len(archived) == 1 and service.archive.get(archived[0].id).status == "transcribed"
    transcript = service.transcripts.get(archived[0].id)
    assert transcript is not None and "mei3 shi2" in transcript.pinyin


async def test_a_call_is_alerted_from_its_partials_before_its_final(tmp_path, broker, radio_calls):
    """Spoken at the pace of speech, the call's partial transcripts raise the incident and alert the guard while the
    caller is still talking (provisional); the final transcript then confirms it to the same phone."""
    call = next(c for c in radio_calls(20) if c.clean.stem == "c001")  # 怡园警务点请注意，美食街有人打架斗殴，请迅速赶往现场
    service = Service(load_config(make_config(tmp_path, [call.radio], broker=broker, realtime=True)))
    finals = service.bus.subscribe({"transcript"})
    alerts: list[tuple[float, dict]] = []

    async def listen(ready: asyncio.Event) -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier="e2e-live-watcher", **broker.login("console")) as client:
            await client.subscribe("jingbao/alerts/#", qos=1)
            ready.set()
            async for message in client.messages:
                alerts.append((time.monotonic(), json.loads(message.payload) | {"to": str(message.topic), "at": time.time()}))

    ready = asyncio.Event()
    watcher = asyncio.create_task(listen(ready))
    await asyncio.wait_for(ready.wait(), 5)
    run = asyncio.create_task(service.run(serve_http=False))
    final = await asyncio.wait_for(finals.get(), 60)
    final_at = time.monotonic()
    for _ in range(100):  # the final's update to every phone alerted
        if {a["to"] for _, a in alerts if a["kind"] == "update"} == {a["to"] for _, a in alerts}:
            break
        await asyncio.sleep(0.1)
    run.cancel()
    watcher.cancel()
    await asyncio.gather(run, watcher, return_exceptions=True)

    assert alerts, f"no alert (final heard: {final.data.get('pinyin')!r})"
    at, first = alerts[0]
    assert (first["kind"], first["provisional"], first["type"], first["place"]) == ("alert", True, "fight", "美食街")
    assert at < final_at, f"the alert came {at - final_at:.2f} s after the final"
    for phone in {a["to"] for _, a in alerts}:  # each phone: the provisional alert, then the final's confirmation
        told = [(a["kind"], a.get("change"), a["provisional"]) for _, a in alerts if a["to"] == phone]
        assert told == [("alert", None, True), ("update", "final", False)], (phone, told)
    [utterance] = service.archive.list()
    print(f"provisional alert {utterance.end_ms / 1000 - first['at']:.2f} s before the segmenter ended the utterance, "
          f"{final_at - at:.2f} s before the final transcript")


@pytest.mark.parametrize("max_age_s", [None, 0.001], ids=["dispatched", "heard too long ago to dispatch"])
async def test_utterances_left_pending_are_transcribed_after_a_restart(tmp_path, calls_audio, max_age_s, caplog):
    wavs = [calls_audio / "c003.wav", calls_audio / "c009.wav"]
    # First run without recognition (as if ASR were down, or the process died before it ran): all stay pending.
    config = load_config(make_config(tmp_path, wavs, broker=None, engine="none"))
    first = Service(config)
    await first.run(serve_http=False)
    assert len(first.archive.pending()) == 2
    # a file replayed faster than real time is dated ahead of the clock: wait until both were said before now
    await asyncio.sleep(max(0.0, max(u.end_ms / 1000 for u in first.archive.list()) - time.time()))
    first.archive.close()

    # "Restart" with recognition on and no new audio: the backlog is transcribed.
    (tmp_path / "audio").rename(tmp_path / "played")
    (tmp_path / "audio").mkdir()
    with wave.open(str(tmp_path / "audio" / "quiet.wav"), "wb") as quiet:  # a second of nothing said (a file that
        quiet.setnchannels(1)  # gives no audio at all is a fault the channel keeps retrying)
        quiet.setsampwidth(2)
        quiet.setframerate(16000)
        quiet.writeframes(bytes(32000))
    config = load_config(make_config(tmp_path, [], broker=None, engine="sherpa"))
    if max_age_s is not None:  # node.dispatch_max_age_s: pending longer than this, recognised and stored, paging nobody
        config = config.model_copy(update={"node": config.node.model_copy(update={"dispatch_max_age_s": max_age_s})})
    second = Service(config)
    await asyncio.wait_for(second.run(serve_http=False), 120)
    assert second.archive.pending() == []
    texts = [second.transcripts.get(u.id) for u in second.archive.list()]
    assert all(t is not None and t.pinyin for t in texts)
    assert second.dispatch is not None
    raised = {i.type for i in second.dispatch.dispatcher.store.list()}
    refused = [r for r in caplog.records if "over node.dispatch_max_age_s" in r.getMessage()]
    if max_age_s is None:
        assert raised == {"theft", "medical"} and not refused  # the two calls: a stolen scooter, a man collapsed
    else:
        assert not raised and len(refused) == 2
    [stale] = [m for m in ServiceCollector(second).collect() if m.name == "jingbao_dispatch_stale"]
    assert stale.samples[0].value == (0 if max_age_s is None else 2)


@pytest.mark.parametrize("role", ["all", "edge"])
async def test_the_characters_people_read_name_the_place_the_dispatcher_found(tmp_path, calls_audio, role, request):
    # c013, 康复路服装市场二楼有小偷偷手机: the on-board recogniser hears the market's head as "tang2 fu4 lu4" (唐附录);
    # the dispatcher's matcher finds the market all the same, and the characters say so; also on an edge that leaves
    # dispatch to central (its transcripts are what central's console and search show)
    config = load_config(make_config(tmp_path, [calls_audio / "c013.wav"], broker=None))
    if role == "edge":
        node = edge_config(tmp_path, request.getfixturevalue("mqtt")).node.model_copy(update={"dispatch": "central"})
        config = config.model_copy(update={"node": node})
    service = Service(config, role=role)
    shown: list[dict] = []
    watched = service.bus.subscribe({"transcript"})

    async def watch() -> None:
        while True:
            shown.append((await watched.get()).data)

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(service.run(serve_http=False), 120)
    watcher.cancel()
    [utterance] = service.archive.list()
    transcript = service.transcripts.get(utterance.id)
    assert transcript is not None and transcript.readable.startswith("康复路服装市场"), transcript
    assert "kang1 fu4 lu4" not in transcript.pinyin  # the pinyin stays as heard (the searchable layer)
    assert [s["readable"] for s in shown] == [transcript.readable]  # the console is shown the same characters
    incidents = service.dispatch.dispatcher.store.list()
    if role == "edge":
        assert incidents == []  # central dispatches it
        return
    [incident] = incidents
    assert incident.place_id == "kangfulu-fuzhuang" and incident.text == transcript.readable
