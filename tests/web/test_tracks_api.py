"""Track replay over HTTP against the real service (its own thread and port, real SQLite, real mosquitto): a guard's
fixes, sent by his phone over OwnTracks and from the guard page, come back as his track for a time range, beside the
incidents of that time and the transmissions heard then, each playable; who may not see a track is refused, and
every track looked at is in the audit log. No speech recognition (asr: none): the transmission's words are given."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import paho.mqtt.client as paho
import pytest

from asr.transcript import Transcript
from bridge.db import connect
from tests.support.archive import make_utterance, speech_pcm
from tests.support.web import as_user
from tests.web.browser import LiveService, live_service

__all__ = ["speech_pcm"]  # a fixture, imported for pytest
MEISHI = (34.2702, 108.9843)  # 美食街


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    channels = [{"id": ch, "name": ch, "source": {"type": "web"}} for ch in ("ch-market", "ch-police")]
    with live_service(tmp_path_factory.mktemp("tracks"), channels) as service:
        yield service


def publish(live: LiveService, messages: list[tuple[str, bytes]]) -> None:
    """Publish as phones do (QoS 1), and wait until each is sent."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="tracks-test-phone")
    client.connect(live.config.broker.host, live.config.broker.port)
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def fix(lat: float, lon: float, tst: float) -> bytes:
    return json.dumps({"_type": "location", "lat": lat, "lon": lon, "tst": tst, "acc": 10}).encode()


def test_a_guards_track_comes_back_with_the_incidents_and_transmissions_of_its_time(
    live: LiveService, speech_pcm: bytes
) -> None:
    now = time.time()
    publish(live, [
        ("owntracks/g-huaniao/phone", fix(34.2700, 108.9900, now - 40)),
        ("owntracks/g-huaniao/phone", fix(34.2690, 108.9920, now - 30)),
        ("owntracks/g-huaniao/phone", b'{"_type": "location", "lat": "north"}'),  # refused, counted, nothing breaks
        ("owntracks/g-nobody/phone", fix(34.0, 108.0, now - 30)),  # no such responder
        ("owntracks/g-yeshi/phone", fix(34.2600, 108.9800, now - 25)),  # another guard's
    ])  # fmt: skip
    guard = as_user(live, "guard-huaniao")
    sent = httpx.post(f"{live.url}/api/me/position", json={"lat": MEISHI[0], "lon": MEISHI[1], "tst": now - 20},
                      headers=guard)  # fmt: skip
    assert sent.status_code == 200, sent.text
    counters = live.wait("the phones' fixes taken", lambda: (c := live.service.dispatch.dispatcher.counters())
                         ["positions_accepted"] == 4 and c, timeout=10)  # fmt: skip
    assert counters["rejected"]["position_bad_type"] == 1 and counters["rejected"]["position_unknown_responder"] == 1

    # a call on the market channel (his radio's), archived and transcribed: it raises a fight at 美食街
    heard = make_utterance(speech_pcm, "ch-market", start=now - 15)
    said = Transcript("美食街有人打架", "", engine="vosk", conf=0.9)
    live.call(live.service.archive.store, heard)
    live.call(live.service.transcripts.save, heard.id, heard.channel, heard.start, said)
    asyncio.run_coroutine_threadsafe(live.service._on_transcript(said, heard), live.loop).result(10)
    # and one on the police channel, which is neither his nor the incident's
    other = make_utterance(speech_pcm, "ch-police", start=now - 12)
    live.call(live.service.archive.store, other)
    live.call(live.service.transcripts.save, other.id, other.channel, other.start, Transcript("收到", "", engine="vosk"))

    operator = as_user(live, "op")
    track = httpx.get(f"{live.url}/api/tracks/g-huaniao", params={"from": now - 60, "to": now + 1}, headers=operator)
    assert track.status_code == 200, track.text
    body = track.json()
    assert body["responder"]["name"] == "万寿路花鸟市场保安"
    assert [(p["lat"], p["lon"]) for p in body["points"]] == [(34.27, 108.99), (34.269, 108.992), MEISHI]
    assert body["points"][0]["ts"] == pytest.approx(now - 40) and body["truncated"] is False
    fights = [i for i in body["incidents"] if i["type"] == "fight"]
    assert len(fights) == 1 and fights[0]["place_name"] == "美食街" and fights[0]["utterance_ids"] == [heard.id]
    assert [t["utterance_id"] for t in body["transmissions"]] == [heard.id]  # his channel's, not the police's
    assert body["transmissions"][0]["readable"] == "美食街有人打架"
    audio = httpx.get(live.url + body["transmissions"][0]["audio_url"], headers=operator)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"

    # a range without his fixes; another guard's track has only his own
    earlier = httpx.get(f"{live.url}/api/tracks/g-huaniao", params={"from": now - 3600, "to": now - 60}, headers=operator)
    assert earlier.json()["points"] == []
    other_track = httpx.get(f"{live.url}/api/tracks/g-yeshi", params={"from": now - 60, "to": now + 1}, headers=operator)
    assert [(p["lat"], p["lon"]) for p in other_track.json()["points"]] == [(34.26, 108.98)]

    # an auditor may see it too; every look is written down
    auditor = httpx.get(f"{live.url}/api/tracks/g-huaniao", params={"from": now - 60, "to": now + 1},
                        headers=as_user(live, "aud"))  # fmt: skip
    assert auditor.status_code == 200 and len(auditor.json()["points"]) == 3
    with connect(live.config.storage.database) as db:
        audited = [(r["user_name"], r["target"], json.loads(r["detail"])["points"]) for r in
                   db.execute("SELECT * FROM audit_log WHERE action = 'track' ORDER BY seq")]  # fmt: skip
    assert audited == [("op", "g-huaniao", 3), ("op", "g-huaniao", 0), ("op", "g-yeshi", 1), ("aud", "g-huaniao", 3)]


@pytest.mark.parametrize(
    ("user", "path", "params", "status"),
    [
        (None, "/api/tracks/g-huaniao", {}, 401),
        ("guard-huaniao", "/api/tracks/g-huaniao", {}, 403),  # not even his own: it is the room's
        ("patrol", "/api/tracks/g-huaniao", {}, 403),
        ("op", "/api/tracks/g-nobody", {}, 404),
        ("op", "/api/tracks/g-huaniao", {"from": 2000, "to": 1000}, 422),
        ("op", "/api/tracks/g-huaniao", {"from": 0, "to": 8 * 86400}, 422),
        ("op", "/api/tracks/g-huaniao", {"from": "yesterday"}, 422),
    ],
)
def test_who_may_not_see_a_track_or_asks_for_what_is_not_there_is_refused(
    live: LiveService, user: str | None, path: str, params: dict, status: int
) -> None:
    headers = as_user(live, user) if user else {}
    assert httpx.get(live.url + path, params=params, headers=headers).status_code == status
