"""The console's and the guard page's API over HTTP, against a real Service (real SQLite, archive and dispatcher; no
broker, no speech model): channel activity, operator actions on incidents, a guard's position, the map's tile URL,
and who may open the guard's live feed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from asr.live import RecognisedUtterance
from asr.transcript import Transcript
from bridge.events import Utterance
from bridge.service import Service
from bridge.web.users import UserStore
from dispatch.incidents import Incident
from tests.web.conftest import page_client

GUARD_PASSWORD = "guard-of-the-flower-market"


def archive_at(service: Service, utterance_id: str, channel: str, start: float) -> None:
    service.archive.store(Utterance(utterance_id, channel, start, start + 1.0, bytes(16000 * 2)))


def report(service: Service, utterance_id: str, text: str) -> Incident:
    """What the dispatcher makes of a final transcript of `text` heard on ch-market just now."""
    now = time.time()
    utterance = Utterance(utterance_id, "ch-market", now - 3, now, b"")
    incident = asyncio.run(service.dispatch.dispatcher.handle(Transcript(text, "", engine="vosk", conf=0.9), utterance))
    assert incident is not None, f"no incident from {text!r}"
    return incident


def linked_guard(service: Service, app, name: str, responder_id: str) -> TestClient:
    """A logged-in guard account linked to a responder of the jurisdiction (the demo "guard" here is linked to none)."""
    UserStore(service.db).add(name, "guard", GUARD_PASSWORD, responder_id=responder_id)
    client = page_client(app)
    assert client.post("/api/login", json={"name": name, "password": GUARD_PASSWORD}).status_code == 200
    return client


@pytest.fixture(scope="module")
def guard(service: Service, app) -> TestClient:
    return linked_guard(service, app, "huaniao", "g-huaniao")


# --- activity ---------------------------------------------------------------------------------------------------


def test_activity_counts_utterances_per_channel_per_bucket(service: Service, login: Callable[..., TestClient]) -> None:
    now = time.time()
    starts = {"act-1": ("ch-market", now - 30), "act-2": ("ch-market", now - 200), "act-3": ("ch-market", now - 195),
              "act-4": ("ch-police", now - 400), "act-old": ("ch-market", now - 20 * 60)}  # fmt: skip
    for utterance_id, (channel, start) in starts.items():
        archive_at(service, utterance_id, channel, start)

    activity = login("operator").get("/api/activity", params={"minutes": 10, "bucket_s": 60}).json()
    answered = time.time()  # the server's "now" lies between `now` and this (a minute may turn in between)
    counts, start, bucket_s = activity["counts"], activity["start"], activity["bucket_s"]
    assert bucket_s == 60 and set(counts) == {"ch-market", "ch-police"}
    assert all(len(c) == 10 for c in counts.values())
    assert start <= answered - 9 * 60 and start + 10 * 60 > now  # ten buckets, the last one holding now
    assert sum(counts["ch-market"]) == 3 and sum(counts["ch-police"]) == 1  # the one 20 minutes ago is outside
    for utterance_id, (channel, t) in starts.items():
        if utterance_id != "act-old":
            assert counts[channel][int((t - start) // 60)] >= 1, utterance_id
    assert counts["ch-market"][int((now - 200 - start) // 60)] >= 1 and max(counts["ch-market"]) <= 2


@pytest.mark.parametrize("params", [{"minutes": 0}, {"bucket_s": 5}, {"minutes": 24 * 60 + 1}, {"bucket_s": "x"}])
def test_activity_refuses_nonsense_windows(login: Callable[..., TestClient], params: dict) -> None:
    assert login("operator").get("/api/activity", params=params).status_code == 422


def test_activity_and_console_state_are_for_operators(login: Callable[..., TestClient]) -> None:
    for role in ("guard", "auditor"):
        assert login(role).get("/api/activity").status_code == 403
        assert login(role).get("/api/console/state").status_code == 403


def test_console_state_has_no_tile_url_by_default(login: Callable[..., TestClient]) -> None:
    """Command rooms are often offline: without web.tile_url the map draws the jurisdiction on a plain background."""
    state = login("operator").get("/api/console/state").json()
    assert state["tile_url"] is None
    assert {c["id"] for c in state["channels"]} == {"ch-market", "ch-police"} and state["jurisdiction"]["places"]


# --- operator actions ---------------------------------------------------------------------------------------------


def test_operator_moves_an_incident_through_its_lifecycle(service: Service, login: Callable[..., TestClient]) -> None:
    incident = report(service, "u-act-fight", "美食街有人打架斗殴")
    op = login("operator")
    url = f"/api/incidents/{incident.id}"
    assert op.get(url).json()["status"] == incident.status

    on_scene = op.post(f"{url}/status", json={"status": "on_scene", "note": "民警已到"})
    assert on_scene.status_code == 200 and on_scene.json()["status"] == "on_scene"
    noted = op.post(f"{url}/notes", json={"text": "双方已分开"}).json()
    assert [e["detail"].get("text") for e in noted["timeline"] if e["kind"] == "note"] == ["双方已分开"]
    mine = [(e["kind"], e["detail"].get("to"), e["actor"]) for e in noted["timeline"] if e["actor"] == "operator"]
    assert mine == [("status", "on_scene", "operator"), ("note", None, "operator")]  # who did what, in order

    resolved = op.post(f"{url}/status", json={"status": "resolved"}).json()
    assert resolved["status"] == "resolved"
    assert incident.id not in [i["id"] for i in op.get("/api/incidents", params={"open": "true"}).json()]
    assert op.post(f"{url}/status", json={"status": "closed_false_alarm"}).status_code == 409  # resolved is not false
    assert op.post(f"{url}/status", json={"status": "followed_up"}).json()["status"] == "followed_up"
    assert op.post(f"{url}/status", json={"status": "on_scene"}).status_code == 409  # closed stays closed


def test_operator_redispatches_an_incident(service: Service, login: Callable[..., TestClient]) -> None:
    incident = report(service, "u-act-fire", "西光机械厂着火了")
    op = login("operator")
    chosen = ["g-huaniao", "p-ou-yong"]
    view = op.post(f"/api/incidents/{incident.id}/dispatch", json={"responders": chosen}).json()
    assert view["assigned"] == chosen
    by_id = {r["id"]: r for r in view["responders"]}
    assert by_id["g-huaniao"]["reason"] == "assigned" and by_id["g-huaniao"]["name"] == "万寿路花鸟市场保安"
    assert any(e["kind"] == "reassigned" and e["actor"] == "operator" for e in view["timeline"])
    assert op.post(f"/api/incidents/{incident.id}/dispatch", json={"responders": ["nobody"]}).status_code == 422
    assert op.post(f"/api/incidents/{incident.id}/dispatch", json={"responders": []}).status_code == 422


@pytest.mark.parametrize(("path", "body"), [
    ("status", {"status": "on_scene"}), ("notes", {"text": "x"}), ("dispatch", {"responders": ["g-huaniao"]}),
])  # fmt: skip
def test_actions_on_an_unknown_incident_are_404(login: Callable[..., TestClient], path: str, body: dict) -> None:
    assert login("operator").post(f"/api/incidents/INC-none/{path}", json=body).status_code == 404


@pytest.mark.parametrize("body", [{"status": "dispatched"}, {"status": "bogus"}, {"status": "resolved", "note": "x" * 501}])
def test_an_operator_cannot_set_what_is_not_an_operator_status(
    service: Service, login: Callable[..., TestClient], body: dict
) -> None:
    incident = report(service, f"u-act-{body['status']}-{len(body.get('note', ''))}", "东方仪表厂有人晕倒了")
    assert login("operator").post(f"/api/incidents/{incident.id}/status", json=body).status_code == 422
    assert login("operator").post(f"/api/incidents/{incident.id}/notes", json={"text": ""}).status_code == 422


# --- guards -------------------------------------------------------------------------------------------------------


def test_a_guard_shares_a_position(guard: TestClient, login: Callable[..., TestClient]) -> None:
    fix = {"lat": 34.2761, "lon": 108.9803, "acc": 12.0}
    shared = guard.post("/api/me/position", json=fix)
    assert shared.status_code == 200, shared.text
    assert shared.json() == {"responder": "g-huaniao", "lat": fix["lat"], "lon": fix["lon"], "position": "gps"}
    board = {r["id"]: r for r in login("operator").get("/api/responders").json()}
    assert (board["g-huaniao"]["lat"], board["g-huaniao"]["position"]) == (fix["lat"], "gps")  # the console sees it


def test_a_stale_fix_leaves_the_guard_at_his_post(service: Service, app) -> None:
    wujin = linked_guard(service, app, "wujin", "g-wujin")
    stale = wujin.post("/api/me/position", json={"lat": 34.27, "lon": 108.97, "tst": time.time() - 3600}).json()
    post = service.dispatch.jurisdiction.place(service.dispatch.jurisdiction.responder("g-wujin").post)
    assert stale == {"responder": "g-wujin", "lat": post.lat, "lon": post.lon, "position": "post"}


@pytest.mark.parametrize("body", [{"lat": 91, "lon": 108.9}, {"lat": 34.2, "lon": 181}, {"lat": 34.2},
                                  {"lat": 34.2, "lon": 108.9, "acc": -1}, {"lat": "north", "lon": 108.9}])  # fmt: skip
def test_a_bad_position_is_422(guard: TestClient, body: dict) -> None:
    assert guard.post("/api/me/position", json=body).status_code == 422


def test_position_needs_a_guard_linked_to_a_responder(login: Callable[..., TestClient]) -> None:
    fix = {"lat": 34.2761, "lon": 108.9803}
    assert login("guard").post("/api/me/position", json=fix).status_code == 409  # an account linked to nobody
    assert login("operator").post("/api/me/position", json=fix).status_code == 403
    assert login("auditor").post("/api/me/position", json=fix).status_code == 403


def test_only_guards_and_officers_open_their_live_feed(app, guard: TestClient, login: Callable[..., TestClient]) -> None:
    with guard.websocket_connect("/api/me/live"):
        pass  # a guard is let in (a refusal raises WebSocketDisconnect); keep-alive text is tested in test_websockets
    for client in (login("operator"), login("auditor"), TestClient(app)):
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/api/me/live"):
            pass
        assert refused.value.code == 1008


def test_a_guard_sees_a_provisional_alert_and_then_that_it_was_withdrawn(
    service: Service, guard: TestClient, login: Callable[..., TestClient]
) -> None:
    """Raised from the live transcript while the caller still talks, the alert is marked provisional on the guard's
    page and in the console; the final turns out routine: the incident is retracted, the guard's page says so."""
    said = "万寿路花鸟市场有人拿刀砍人，请求支援"
    market = service.dispatch.jurisdiction.place("wanshoulu-huaniao")
    assert guard.post("/api/me/position", json={"lat": market.lat, "lon": market.lon}).status_code == 200  # on the spot
    assert guard.post("/api/me/status", json={"status": "available"}).status_code == 200
    ref = RecognisedUtterance("u-live-1", "ch-market", time.time(), time.time())

    async def talking() -> None:
        for n in range(1, len(said) + 1):
            await service.dispatch.dispatcher.handle_partial(Transcript(said[:n], "", engine="vosk", partial=True), ref)

    asyncio.run(talking())
    [alert] = [a for a in guard.get("/api/me/alerts").json()["alerts"] if a["utterance_ids"] == ["u-live-1"]]
    assert alert["provisional"] is True and alert["type"] == "weapon" and alert["status"] == "dispatched"
    assert login("operator").get(f"/api/incidents/{alert['id']}").json()["provisional"] is True

    report_end = Utterance("u-live-1", "ch-market", ref.start, time.time(), b"")
    final = Transcript("万寿路花鸟市场一切正常", "", engine="vosk", conf=0.9)
    retracted = asyncio.run(service.dispatch.dispatcher.handle(final, report_end))
    assert retracted.id == alert["id"] and retracted.status == "retracted"

    mine = guard.get("/api/me/alerts").json()
    assert alert["id"] not in [a["id"] for a in mine["alerts"]]
    [withdrawn] = [w for w in mine["withdrawn"] if w["id"] == alert["id"]]
    assert withdrawn["withdrawn"] == "retracted" and withdrawn["status"] == "retracted" and not withdrawn["provisional"]
    view = login("operator").get(f"/api/incidents/{alert['id']}").json()
    assert view["status"] == "retracted" and [e["kind"] for e in view["timeline"]][-2:] == ["withdrawn", "status"]
