"""SOS / 一键报警 over HTTP against the real service (its own thread and port, real SQLite, real mosquitto): a guard's
SOS alerts the nearest responders and the grid's chief on the broker, a second press is the same incident, the
console's alarm lasts until an operator acknowledges it, and whoever may not raise or acknowledge one is refused.
No speech recognition here (asr: none): what the hot microphone's utterances become is given as transcripts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from asr.transcript import Transcript
from bridge.db import connect
from bridge.events import Utterance, new_utterance_id
from dispatch.sos import SosDesk
from tests.support.web import as_user, wait_for
from tests.web.browser import PASSWORD, LiveService, live_service

HUANIAO = (34.2705, 108.9902)  # 万寿路花鸟市场, in 永定社区's grid (its chief: p-xu-zhen)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with live_service(tmp_path_factory.mktemp("sos"), [
        *({"id": ch, "name": ch, "source": {"type": "web"}} for ch in ("ch-market", "ch-police")),
        # a radio whose receiver's COR is wired in (the simulated line: this machine has no radio)
        {"id": "ch-volunteer", "name": "义警巡逻", "source": {"type": "web"}, "line": {"type": "simulated", "cor": True}},
    ], dispatch={"sos": {"key_up_s": 4}}) as service:
        yield service


@pytest.fixture(scope="module")
def alerts(live: LiveService) -> Iterator[list[tuple[str, dict]]]:
    """Every message on a responder's alert topic, as the phones get them: (responder id, payload)."""
    received: list[tuple[str, dict]] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sos-test-phones")
    client.on_message = lambda c, u, m: received.append((m.topic.rsplit("/", 1)[1], json.loads(m.payload)))
    client.connect(live.config.broker.host, live.config.broker.port)
    client.subscribe("jingbao/alerts/#", qos=1)
    client.loop_start()
    yield received
    client.loop_stop()
    client.disconnect()


def test_a_guards_sos_alerts_the_nearest_and_the_grid_chief_and_a_second_press_is_the_same(
    live: LiveService, alerts: list
) -> None:
    guard = as_user(live, "guard-huaniao")
    # the caller is the session's: a responder named in the body is not believed
    raised = httpx.post(f"{live.url}/api/me/sos", json={"lat": HUANIAO[0], "lon": HUANIAO[1], "acc": 12,
                                                        "responder_id": "g-yeshi"}, headers=guard)  # fmt: skip
    assert raised.status_code == 200, raised.text
    incident, hot_mic_s = raised.json()["incident"], raised.json()["hot_mic_s"]
    assert hot_mic_s == 10
    assert (incident["type"], incident["priority"], incident["status"]) == ("sos", "critical", "dispatched")
    assert incident["place_name"] == "万寿路花鸟市场" and (incident["lat"], incident["lon"]) == HUANIAO
    assigned = set(incident["assigned"])
    assert "p-xu-zhen" in assigned  # the chief answering for 永定社区, where it is
    assert "g-huaniao" not in assigned  # not the caller himself
    assert {"g-dfyb", "g-dfyey"} <= assigned  # the two nearest guards (东方仪表厂 320 m, 东方幼儿园 400 m away)
    sent = wait_for("the alerts on the broker", lambda: {rid for rid, a in alerts
                                                         if a["incident_id"] == incident["id"] and a["kind"] == "alert"}
                    == assigned)  # fmt: skip
    assert sent
    assert all(a["type"] == "sos" and a["priority"] == "critical" for _, a in alerts if a["incident_id"] == incident["id"])

    # pressed again (a panicking guard, a pocket): the same incident, one more press, nobody alerted twice
    again = httpx.post(f"{live.url}/api/me/sos", json={}, headers=guard)
    assert again.status_code == 200, again.text
    assert again.json()["incident"]["id"] == incident["id"]
    time.sleep(0.5)
    first_alerts = [rid for rid, a in alerts if a["incident_id"] == incident["id"] and a["kind"] == "alert"]
    assert sorted(first_alerts) == sorted(assigned)
    store = live.service.dispatch.dispatcher.store
    sos_incidents = [i for i in live.call(store.list) if i.type == "sos"]
    assert [i.id for i in sos_incidents] == [incident["id"]]
    assert [e.detail["presses"] for e in live.call(store.timeline, incident["id"]) if e.kind == "sos_repeated"] == [2]

    # the consoles' alarm: until an operator acknowledges it, even across reloads (it is kept in the database)
    operator = as_user(live, "op")
    alarm = httpx.get(f"{live.url}/api/sos", headers=operator).json()["alarms"]
    assert [(a["incident_id"], a["caller_name"], a["presses"]) for a in alarm] == [(incident["id"], "万寿路花鸟市场保安", 2)]
    assert httpx.post(f"{live.url}/api/sos/{incident['id']}/ack", headers=as_user(live, "guard-huaniao")).status_code == 403
    acked = httpx.post(f"{live.url}/api/sos/{incident['id']}/ack", headers=operator)
    assert acked.status_code == 200 and acked.json()["acked_by"] == "op"
    assert httpx.get(f"{live.url}/api/sos", headers=operator).json()["alarms"] == []
    assert httpx.post(f"{live.url}/api/sos/{incident['id']}/ack", headers=operator).status_code == 200  # again: the same
    with connect(live.config.storage.database) as db:
        audited = [(r["user_name"], r["action"], r["target"]) for r in
                   db.execute("SELECT * FROM audit_log WHERE action IN ('sos', 'sos_ack') ORDER BY seq")]  # fmt: skip
    assert audited == [("guard-huaniao", "sos", incident["id"])] * 2 + [("op", "sos_ack", incident["id"])] * 2

    # once it is over, the next SOS is a new one
    assert httpx.post(f"{live.url}/api/incidents/{incident['id']}/status", json={"status": "resolved"},
                      headers=operator).status_code == 200  # fmt: skip
    later = httpx.post(f"{live.url}/api/me/sos", json={}, headers=guard)
    assert later.status_code == 200 and later.json()["incident"]["id"] != incident["id"]
    assert httpx.post(f"{live.url}/api/sos/{later.json()['incident']['id']}/ack", headers=operator).status_code == 200


def test_who_may_raise_and_acknowledge_an_sos(live: LiveService) -> None:
    base = live.url
    assert httpx.post(f"{base}/api/me/sos", json={}).status_code == 401  # not logged in
    for name in ("op", "aud"):  # an operator or an auditor is no responder in the field
        assert httpx.post(f"{base}/api/me/sos", json={}, headers=as_user(live, name)).status_code == 403
    assert httpx.get(f"{base}/api/sos", headers=as_user(live, "guard-huaniao")).status_code == 403
    assert httpx.post(f"{base}/api/sos/INC-none/ack", headers=as_user(live, "op")).status_code == 404
    patrol = as_user(live, "patrol")
    for bad in ({"lat": 34.27}, {"lat": 134.0, "lon": 108.99}, {"lat": "north", "lon": 108.99}):  # only half a position,
        assert httpx.post(f"{base}/api/me/sos", json=bad, headers=patrol).status_code == 422, bad  # none, or no number
    assert httpx.post(f"{base}/api/me/sos", content=b"{not json", headers=patrol | {"Content-Type": "application/json"}
                      ).status_code == 422  # fmt: skip
    assert [i for i in live.call(live.service.dispatch.dispatcher.store.list) if "p-patrol-1" in i.text] == []


def test_the_hot_microphone_is_the_callers_and_what_it_hears_joins_the_sos(live: LiveService) -> None:
    officer = as_user(live, "patrol")  # p-patrol-1, posted at the station (no position sent: his post is used)
    raised = httpx.post(f"{live.url}/api/me/sos", headers=officer)
    assert raised.status_code == 200, raised.text
    incident = raised.json()["incident"]
    assert incident["place_name"] == "公园北路派出所"
    ws = live.url.replace("http", "ws")
    with pytest.raises(InvalidStatus):  # someone else's SOS is not his to open a microphone for
        ws_connect(f"{ws}/api/ptt?channel=ch-market&sos={incident['id']}",
                   additional_headers=as_user(live, "guard-huaniao"), open_timeout=5).close()  # fmt: skip
    with ws_connect(f"{ws}/api/ptt?channel=ch-market&sos={incident['id']}", additional_headers=officer,
                    open_timeout=5) as mic:  # fmt: skip
        assert json.loads(mic.recv(timeout=5))["type"] == "ready"
        mic.send(bytes(3200))
        start = time.time()
        mic.send("end")
    # the hot microphone's utterance, recognised: added to the SOS, not dispatched as a fight of its own
    said = Transcript("我在派出所门口被人打了", "", engine="vosk", conf=0.8)
    heard = Utterance(new_utterance_id(start), "ch-market", start, time.time() + 2, b"")
    assert live.service.dispatch.sos.takes(said, heard)  # what an edge tells central with it (no report there either)
    # and after a restart (a desk on the same database): an edge forwarding its backlog then still says so
    dispatch = live.service.dispatch
    again = SosDesk(dispatcher=dispatch.dispatcher, jurisdiction=dispatch.jurisdiction, board=dispatch.board,
                    rank=lambda place, exclude: ([], []), places=lambda channel: dispatch.area.places(channel),
                    conn=connect(live.service.config.storage.database), rules=dispatch.sos.rules)  # fmt: skip
    assert again.takes(said, heard) and not again.takes(said, Utterance("u-later", "ch-market", start + 60, start + 62, b""))
    asyncio.run_coroutine_threadsafe(live.service._on_transcript(said, heard), live.loop).result(10)
    store = live.service.dispatch.dispatcher.store
    after = live.call(store.require, incident["id"])
    assert heard.id in after.utterance_ids and after.text == "我在派出所门口被人打了"
    assert [i.id for i in live.call(store.with_utterance, heard.id)] == [incident["id"]]
    assert "sos_hot_mic" in [e.kind for e in live.call(store.timeline, incident["id"])]


def test_an_emergency_phrase_on_the_radio_raises_an_sos_and_routine_lines_do_not(live: LiveService, alerts: list) -> None:
    store = live.service.dispatch.dispatcher.store

    def hear(said: str) -> str:
        now = time.time()
        heard = Utterance(new_utterance_id(now), "ch-police", now - 2, now, b"")
        asyncio.run_coroutine_threadsafe(live.service._on_transcript(Transcript(said, "", engine="vosk", conf=0.8), heard),
                                         live.loop).result(10)  # fmt: skip
        return heard.id

    for routine in ("收到，明白", "各单位注意，今晚八点开始夜间巡逻", "请大家记住紧急求助电话"):  # (the last, a notice
        assert "sos" not in [i.type for i in live.call(store.with_utterance, hear(routine))]  # with 求助: 待确认 at most)
    uid = hear("救命，我在长乐公园被人打了")
    [incident] = live.call(store.with_utterance, uid)  # one incident: the SOS, not a fight besides
    assert (incident.type, incident.priority, incident.place_name) == ("sos", "critical", "长乐公园")
    assert "p-zhao-jing" in incident.assigned  # the chief of 长乐东社区
    wait_for("its alerts", lambda: [a for _, a in alerts if a["incident_id"] == incident.id])
    again = hear("紧急求助，紧急求助")  # the same channel again: the same SOS
    assert [i.id for i in live.call(store.with_utterance, again)] == [incident.id]
    operator = as_user(live, "op")
    assert incident.id in [a["incident_id"] for a in httpx.get(f"{live.url}/api/sos", headers=operator).json()["alarms"]]
    assert httpx.post(f"{live.url}/api/sos/{incident.id}/ack", headers=operator).status_code == 200


def test_a_guard_not_linked_to_a_responder_is_told_so(live: LiveService, tmp_path: Path) -> None:
    from bridge.web.users import UserStore

    live.call(UserStore(connect(live.config.storage.database)).add, "guard-unlinked", "guard", PASSWORD)
    refused = httpx.post(f"{live.url}/api/me/sos", json={}, headers=as_user(live, "guard-unlinked"))
    assert refused.status_code == 409 and "not linked" in refused.json()["detail"]


def test_a_radio_keyed_and_held_down_raises_an_sos_for_its_channel(live: LiveService) -> None:
    """The radio code (dispatch.sos.key_up_s, 4 s here): a carrier held that long on a COR line; shorter key-ups,
    calls, raise nothing."""
    store = live.service.dispatch.dispatcher.store
    line = live.service.radios.lines["ch-volunteer"]

    def key_ups() -> list:
        return [i for i in live.call(store.list) if i.type == "sos" and i.channel == "ch-volunteer"]

    live.call(line.set_carrier, True)  # a call of 2 s
    time.sleep(2)
    live.call(line.set_carrier, False)
    time.sleep(1)
    assert key_ups() == []
    live.call(line.set_carrier, True, time.time() - 3.5)  # keyed 3.5 s ago, and held
    incident = wait_for("the key-up's SOS", key_ups)[0]
    assert incident.priority == "critical" and "义警巡逻" in incident.text
    assert incident.place_id is None  # four units share the channel: which one is not known; the operator sends someone
    time.sleep(1.5)  # still held: one SOS per key-up
    assert [e.kind for e in live.call(store.timeline, incident.id)].count("sos") == 1
    live.call(line.set_carrier, False)
    live.call(line.set_carrier, True, time.time() - 5)  # keyed and held again: one more press of the same SOS
    wait_for("the second press", lambda: "sos_repeated" in [e.kind for e in live.call(store.timeline, incident.id)])
    live.call(line.set_carrier, False)
    assert [i.id for i in key_ups()] == [incident.id]
    operator = as_user(live, "op")
    alarm = [a for a in httpx.get(f"{live.url}/api/sos", headers=operator).json()["alarms"] if a["incident_id"] == incident.id]
    assert [(a["caller_name"], a["source"], a["presses"]) for a in alarm] == [("义警巡逻", "radio", 2)]
    assert httpx.post(f"{live.url}/api/sos/{incident.id}/ack", headers=operator).status_code == 200
