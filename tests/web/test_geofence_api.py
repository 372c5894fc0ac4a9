"""Geofences against the real service (its own thread and port, real SQLite, real mosquitto, fixes published as the
phones' OwnTracks does): a guard on duty leaving his post is raised once per exit and is back when he returns, an
off-duty one is not watched; a responder sent to an incident whose fix reaches the scene is on scene, through the
same answer path as his phone's on_scene, once. No speech recognition (asr: none): the report is given as words."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest

from asr.transcript import Transcript
from bridge.bus import Subscription
from bridge.events import Utterance, new_utterance_id
from dispatch.gazetteer import distance_m, load_jurisdiction
from tests.support.broker import JURISDICTION
from tests.support.web import as_user
from tests.web.browser import LiveService, live_service

HUANIAO_POST = (34.2705, 108.9902)  # g-huaniao's post, 万寿路花鸟市场
MEISHI = (34.2702, 108.9843)  # 美食街


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    geofences = {"post_radius_m": 300, "scene_radius_m": 50}
    with live_service(tmp_path_factory.mktemp("geofence"), dispatch={"geofences": geofences}) as service:
        yield service


@pytest.fixture
def events(live: LiveService) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The bus's `patrol` events (the console's live feed carries them) from now on."""
    sub: Subscription = live.call(live.service.bus.subscribe, {"patrol"})
    seen: list[dict[str, Any]] = []

    def drain() -> list[dict[str, Any]]:
        while not sub.queue.empty():
            seen.append(sub.queue.get_nowait().data)
        return seen

    yield drain
    live.call(live.service.bus.unsubscribe, sub)


def send_fixes(live: LiveService, rid: str, *where: tuple[float, float]) -> None:
    """Publish fixes as his phone does, and wait until the service has taken them."""
    before = live.call(lambda: live.service.dispatch.dispatcher.positions.accepted)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{rid}-phone")
    client.connect(live.config.broker.host, live.config.broker.port)
    client.loop_start()
    for lat, lon in where:
        fix = {"_type": "location", "lat": lat, "lon": lon, "tst": time.time(), "acc": 5}
        client.publish(f"owntracks/{rid}/phone", json.dumps(fix), qos=1).wait_for_publish(5)
        time.sleep(0.01)  # each its own tst order
    live.wait("the fixes taken", lambda: live.service.dispatch.dispatcher.positions.accepted >= before + len(where), 5)
    client.loop_stop()
    client.disconnect()


def north_of(point: tuple[float, float], metres: float) -> tuple[float, float]:
    return point[0] + metres / 111_195, point[1]


def test_a_guard_leaving_his_post_is_raised_once_per_exit_and_an_off_duty_one_not_at_all(
    live: LiveService, events: Callable[[], list[dict[str, Any]]]
) -> None:
    send_fixes(live, "g-huaniao", north_of(HUANIAO_POST, 50), north_of(HUANIAO_POST, 400), north_of(HUANIAO_POST, 600))
    live.wait("the exit raised", lambda: [e["kind"] for e in events()] == ["left_post"], 5)
    left = events()[0]
    assert (left["responder_id"], left["post"], left["distance_m"]) == ("g-huaniao", "万寿路花鸟市场", 400)
    send_fixes(live, "g-huaniao", north_of(HUANIAO_POST, 280))  # inside the radius, but on its edge: not back yet
    send_fixes(live, "g-huaniao", north_of(HUANIAO_POST, 100), north_of(HUANIAO_POST, 500))  # back, and off again
    live.wait("back and off again", lambda: [e["kind"] for e in events()] == ["left_post", "returned_post", "left_post"], 5)
    exits = httpx.get(f"{live.url}/api/patrols", headers=as_user(live, "op")).json()["left_post"]
    assert [(x["responder_id"], x["distance_m"], x["returned_at"] is None) for x in exits] == [
        ("g-huaniao", 500, True), ("g-huaniao", 400, False)]  # fmt: skip
    send_fixes(live, "g-huaniao", HUANIAO_POST)  # back for the next test

    off = httpx.post(f"{live.url}/api/me/status", json={"status": "off_duty"}, headers=as_user(live, "guard-huaniao"))
    assert off.status_code == 200, off.text
    send_fixes(live, "g-huaniao", north_of(HUANIAO_POST, 900))  # off duty: his own time
    time.sleep(0.3)
    assert [e["kind"] for e in events()][-1] == "returned_post"
    httpx.post(f"{live.url}/api/me/status", json={"status": "available"}, headers=as_user(live, "guard-huaniao"))
    send_fixes(live, "g-huaniao", HUANIAO_POST)


def test_a_responder_sent_to_an_incident_is_on_scene_when_his_fix_reaches_it(
    live: LiveService, events: Callable[[], list[dict[str, Any]]]
) -> None:
    start = time.time()
    said = Transcript("美食街有人打架", "", engine="vosk", conf=0.9)
    heard = Utterance(new_utterance_id(start), "ch-market", start - 2, start, b"")
    asyncio.run_coroutine_threadsafe(live.service._on_transcript(said, heard), live.loop).result(10)
    store = live.service.dispatch.dispatcher.store
    incident = live.wait("the fight dispatched", lambda: next((i for i in store.list() if i.type == "fight"), None), 5)
    # the operator sends 花鸟市场's guard too: his post is 560 m away, so his walk there leaves it (and is not raised:
    # he was sent)
    sent = "g-huaniao"
    assert sent not in incident.assigned
    dispatched = httpx.post(f"{live.url}/api/incidents/{incident.id}/dispatch", json={"responders": [sent]},
                            headers=as_user(live, "op"))  # fmt: skip
    assert dispatched.status_code == 200, dispatched.text
    jurisdiction = load_jurisdiction(JURISDICTION)
    bystander = next(r.id for r in jurisdiction.responders if r.id not in (*incident.assigned, sent) and r.role == "guard")

    send_fixes(live, sent, north_of(MEISHI, 200), north_of(MEISHI, 70))  # on the way, 400-500 m from his post
    send_fixes(live, bystander, north_of(MEISHI, 10))  # at the scene, but nobody sent him
    time.sleep(0.3)
    assert live.call(store.require, incident.id).status == "dispatched"
    send_fixes(live, sent, north_of(MEISHI, 30), north_of(MEISHI, 20))  # there
    after = live.wait("on scene", lambda: (i := store.require(incident.id)).status == "on_scene" and i, 5)
    timeline = [(e.kind, e.actor, e.detail.get("status")) for e in live.call(store.timeline, after.id)]
    assert timeline.count(("geofence", sent, "on_scene")) == 1 and timeline.count(("ack", sent, "on_scene")) == 1
    assert [e.detail["distance_m"] for e in live.call(store.timeline, after.id) if e.kind == "geofence"] == [
        round(distance_m(*north_of(MEISHI, 30), *MEISHI))]  # fmt: skip
    assert live.call(live.service.dispatch.board.engaged_on, sent) == incident.id  # busy there, as after his own answer
    assert [e for e in events() if e["kind"] == "left_post" and e["responder_id"] == sent] == []  # he was sent
