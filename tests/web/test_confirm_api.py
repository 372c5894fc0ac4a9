"""The operator's confirmation path over HTTP (real Service, SQLite and dispatcher; no broker): a 待确认 incident is
confirmed with a type (then dispatched) or dismissed, by operators only, logged with the operator's name; repeats
change nothing, other states are refused with 409, unknown types with 422."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from asr.transcript import Transcript
from bridge.events import Utterance
from bridge.service import Service

UNSURE = "美食街有情况，请求支援"  # report words only: the type is not certain


def heard(service: Service, utterance_id: str, text: str) -> dict:
    """The incident the dispatcher makes of `text` heard on ch-market just now, as the console's view."""
    now = time.time()
    utterance = Utterance(utterance_id, "ch-market", now - 3, now, b"")
    incident = asyncio.run(service.dispatch.dispatcher.handle(Transcript(text, "", engine="vosk", conf=0.9), utterance))
    assert incident is not None, f"no incident from {text!r}"
    return incident.to_dict()


def mine(view: dict, user: str) -> list[tuple[str, dict]]:
    return [(e["kind"], e["detail"]) for e in view["timeline"] if e["actor"] == user]


def test_an_unsure_report_is_listed_as_awaiting_confirmation(service: Service, login: Callable[..., TestClient]) -> None:
    pending = heard(service, "u-cf-listed", UNSURE)
    op = login("operator")
    assert pending["status"] == "needs_confirmation" and pending["assigned"] == []
    view = op.get(f"/api/incidents/{pending['id']}").json()
    assert (view["status"], view["type"], view["place_name"], view["text"]) == ("needs_confirmation", "other", "美食街", UNSURE)
    assert view["utterance_ids"] == ["u-cf-listed"] and view["responders"] == []
    assert pending["id"] in [i["id"] for i in op.get("/api/incidents", params={"open": "true"}).json()]
    assert pending["id"] in [i["id"] for i in op.get("/api/console/state").json()["incidents"]]
    # nobody is sent before its type is confirmed
    assert op.post(f"/api/incidents/{pending['id']}/dispatch", json={"responders": ["g-piju"]}).status_code == 409


def test_operator_confirms_a_type_and_it_is_dispatched(service: Service, login: Callable[..., TestClient]) -> None:
    pending = heard(service, "u-cf-confirm", "兴庆公园有情况，请求支援")
    op, url = login("operator"), f"/api/incidents/{pending['id']}"
    response = op.post(f"{url}/confirm", json={"type": "fight"})
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["type"], view["priority"], view["status"]) == ("fight", "high", "dispatched")  # fight's default: high
    assert view["assigned"] and {r["id"] for r in view["responders"]} == set(view["assigned"])
    assert mine(view, "operator") == [("confirmed", {"type": "fight", "priority": "high", "guessed": "other",
                                                     "guessed_priority": "medium", "from": "needs_confirmation",
                                                     "to": "reported"})]  # fmt: skip
    assert [e["kind"] for e in view["timeline"]] == ["reported", "confirmed", "alerted", "status"]

    again = op.post(f"{url}/confirm", json={"type": "fight"})  # a double click: the same answer, nothing more
    assert again.status_code == 200 and again.json()["timeline"] == view["timeline"]
    assert op.post(f"{url}/confirm", json={"type": "theft"}).status_code == 409  # no longer awaiting confirmation
    assert op.post(f"{url}/dismiss").status_code == 409
    assert op.get(url).json()["timeline"] == view["timeline"]


def test_operator_confirms_with_a_priority(service: Service, login: Callable[..., TestClient]) -> None:
    pending = heard(service, "u-cf-priority", "长乐公园有人报警，请赶往现场")
    view = login("operator").post(f"/api/incidents/{pending['id']}/confirm", json={"type": "medical", "priority": "critical"})
    assert view.status_code == 200 and (view.json()["type"], view.json()["priority"]) == ("medical", "critical")


def test_operator_dismisses_an_unsure_report(service: Service, login: Callable[..., TestClient]) -> None:
    pending = heard(service, "u-cf-dismiss", "东方花园有情况，请求支援")
    op, url = login("operator"), f"/api/incidents/{pending['id']}"
    view = op.post(f"{url}/dismiss", json={"reason": "演练通话"}).json()
    assert view["status"] == "dismissed" and view["assigned"] == []
    assert mine(view, "operator") == [("status", {"from": "needs_confirmation", "to": "dismissed", "note": "演练通话"})]
    assert pending["id"] not in [i["id"] for i in op.get("/api/incidents", params={"open": "true"}).json()]
    assert op.post(f"{url}/dismiss").json()["timeline"] == view["timeline"]  # again: nothing changes
    assert op.post(f"{url}/confirm", json={"type": "fight"}).status_code == 409


def test_refusals(service: Service, login: Callable[..., TestClient]) -> None:
    pending = heard(service, "u-cf-refused", "西光中学有情况，请求支援")
    certain = heard(service, "u-cf-certain", "长乐坊菜市场有人打架")
    op, url = login("operator"), f"/api/incidents/{pending['id']}"
    for body in ({"type": "alien"}, {"type": "none"}, {"type": ""}, {}, {"type": "fight", "priority": "urgent"}):
        assert op.post(f"{url}/confirm", json=body).status_code == 422, body
    assert op.post(f"{url}/dismiss", json={"reason": "x" * 501}).status_code == 422
    assert op.get(url).json()["status"] == "needs_confirmation"  # nothing of that touched it
    assert op.post(f"/api/incidents/{certain['id']}/confirm", json={"type": "fight"}).status_code == 409  # never unsure
    assert op.post(f"/api/incidents/{certain['id']}/dismiss").status_code == 409
    assert op.post("/api/incidents/INC-nothing/confirm", json={"type": "fight"}).status_code == 404
    assert op.post("/api/incidents/INC-nothing/dismiss").status_code == 404


@pytest.mark.parametrize("action", [("confirm", {"type": "fight"}), ("dismiss", {})])
def test_only_operators_confirm_or_dismiss(
    service: Service, login: Callable[..., TestClient], app, action: tuple[str, dict]
) -> None:
    place = {"confirm": "金花苑小区", "dismiss": "秦川电子厂"}[action[0]]
    pending = heard(service, f"u-cf-roles-{action[0]}", f"{place}有情况，请求支援")
    path, body = f"/api/incidents/{pending['id']}/{action[0]}", action[1]
    assert TestClient(app).post(path, json=body).status_code == 401
    for role in ("guard", "auditor"):
        assert login(role).post(path, json=body).status_code == 403
    assert login("operator").get(f"/api/incidents/{pending['id']}").json()["status"] == "needs_confirmation"
    assert login("admin").post(path, json=body).status_code == 200  # admins pass every role check
