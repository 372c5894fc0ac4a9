"""Responder status (available / busy / off_duty) set from the web, over HTTP against a real Service (as in
test_console_api): a guard or officer sets their own on the guard page, an operator anyone's on the console. Both go
the way of the MQTT status message; the ranking then passes over an off-duty guard. A module of its own: the
statuses set here would change who the other modules' incidents alert."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from bridge.service import Service
from dispatch.responders import recommend
from tests.web.test_console_api import linked_guard, report


@pytest.fixture(scope="module")
def guard(service: Service, app) -> TestClient:
    return linked_guard(service, app, "huaniao", "g-huaniao")


def ranked_for(service: Service, place_id: str) -> list[str]:
    place = service.dispatch.jurisdiction.place(place_id)
    return [r.responder.id for r in recommend(place, service.dispatch.board, service.config.dispatch.responders)]


def test_a_guard_goes_off_duty_and_is_no_longer_alerted(
    service: Service, guard: TestClient, login: Callable[..., TestClient]
) -> None:
    assert "g-huaniao" in ranked_for(service, "wanshoulu-huaniao")  # the guard of the place, nearest of all

    off = guard.post("/api/me/status", json={"status": "off_duty"})
    assert off.status_code == 200, off.text
    assert (off.json()["id"], off.json()["status"], off.json()["incident_id"]) == ("g-huaniao", "off_duty", None)
    assert guard.get("/api/me/alerts").json()["responder"]["status"] == "off_duty"  # what the guard page shows
    board = {r["id"]: r for r in login("operator").get("/api/responders").json()}
    assert board["g-huaniao"]["status"] == "off_duty"  # and the console

    assert "g-huaniao" not in ranked_for(service, "wanshoulu-huaniao")
    incident = report(service, "u-status-offduty", "万寿路花鸟市场有人晕倒了")
    assert incident.place_name == "万寿路花鸟市场" and incident.assigned and "g-huaniao" not in incident.assigned

    assert guard.post("/api/me/status", json={"status": "available"}).json()["status"] == "available"
    assert "g-huaniao" in ranked_for(service, "wanshoulu-huaniao")


def test_after_an_ack_the_guard_sees_the_incident_he_is_busy_on(service: Service, app) -> None:
    wujin = linked_guard(service, app, "wujin", "g-wujin")
    incident = report(service, "u-status-ack", "幸福路五金市场有人偷东西")
    assert "g-wujin" in incident.assigned
    assert wujin.post("/api/me/ack", json={"incident_id": incident.id}).status_code == 200

    me = wujin.get("/api/me/alerts").json()["responder"]
    assert (me["status"], me["incident_id"]) == ("busy", incident.id)
    assert wujin.post("/api/me/status", json={"status": "available"}).json()["incident_id"] is None  # his word wins


def test_an_operator_sets_a_responders_status_and_it_is_logged(
    service: Service, login: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bridge.web.routes_incidents"):
        set_ = login("operator").post("/api/responders/g-jiaju/status", json={"status": "off_duty"})
    assert set_.status_code == 200, set_.text
    assert set_.json()["status"] == "off_duty" and service.dispatch.board.status("g-jiaju") == "off_duty"
    assert "operator operator set responder g-jiaju from available to off_duty" in caplog.messages

    with caplog.at_level(logging.INFO, logger="bridge.web.routes_incidents"):
        assert login("admin").post("/api/responders/g-jiaju/status", json={"status": "busy"}).status_code == 200
    assert "admin admin set responder g-jiaju from off_duty to busy" in caplog.messages
    assert login("operator").post("/api/responders/g-jiaju/status", json={"status": "available"}).status_code == 200


def test_status_roles_are_refused(service: Service, guard: TestClient, login: Callable[..., TestClient]) -> None:
    body = {"status": "off_duty"}
    assert guard.post("/api/responders/g-wujin/status", json=body).status_code == 403  # not another responder's
    assert guard.post("/api/responders/g-huaniao/status", json=body).status_code == 403  # nor his own, that way
    assert login("auditor").post("/api/responders/g-wujin/status", json=body).status_code == 403
    assert login("auditor").post("/api/me/status", json=body).status_code == 403
    assert login("operator").post("/api/me/status", json=body).status_code == 403  # an operator is no responder
    assert login("guard").post("/api/me/status", json=body).status_code == 409  # an account linked to nobody
    assert service.dispatch.board.status("g-wujin") == service.dispatch.board.status("g-huaniao") == "available"


@pytest.mark.parametrize("body", [{"status": "bogus"}, {"status": ""}, {}, {"status": 3}, {"status": "x" * 21}])
def test_a_bad_status_is_422_and_changes_nothing(
    service: Service, guard: TestClient, login: Callable[..., TestClient], body: dict
) -> None:
    assert guard.post("/api/me/status", json=body).status_code == 422
    assert login("operator").post("/api/responders/g-wujin/status", json=body).status_code == 422
    assert service.dispatch.board.status("g-huaniao") == service.dispatch.board.status("g-wujin") == "available"


def test_an_unknown_responder_is_404(login: Callable[..., TestClient]) -> None:
    assert login("operator").post("/api/responders/nobody/status", json={"status": "busy"}).status_code == 404
