"""A guard's answer from the guard page (`POST /api/me/ack`), over HTTP against a real Service (as in test_console_api):
only for an incident the guard was alerted to, and the same answer twice is one answer. A module of its own: the
acknowledgements here make guards busy, which would change who the other modules' incidents alert."""

from __future__ import annotations

from bridge.service import Service
from tests.web.test_console_api import linked_guard, report


def answers(service: Service, incident_id: str) -> list[tuple[str, str]]:
    timeline = service.dispatch.dispatcher.store.timeline(incident_id)
    return [(e.kind, e.detail.get("status") or e.detail.get("responders")) for e in timeline
            if e.kind in ("ack", "escalated")]  # fmt: skip


def test_a_guard_not_alerted_for_an_incident_cannot_act_on_it(service: Service, app) -> None:
    incident = report(service, "u-ack-stranger", "幸福路五金市场有人偷东西")
    stranger = linked_guard(service, app, "dongjiao", "g-dongjiao")
    assert "g-dongjiao" not in incident.assigned
    rejected = dict(service.dispatch.dispatcher.counters()["rejected"])
    for status in ("on_scene", "ack", "declined"):
        refused = stranger.post("/api/me/ack", json={"incident_id": incident.id, "status": status})
        assert refused.status_code == 403, refused.text
        assert "timeline" not in refused.text and incident.text not in refused.text  # none of its details
    after = service.dispatch.dispatcher.store.require(incident.id)
    assert (after.status, after.assigned) == (incident.status, incident.assigned)
    assert answers(service, incident.id) == []
    assert service.dispatch.dispatcher.counters()["rejected"] == rejected  # refused before the dispatcher saw it
    assert stranger.post("/api/me/ack", json={"incident_id": "INC-none"}).status_code == 404


def test_the_same_answer_twice_is_one_answer(service: Service, app) -> None:
    incident = report(service, "u-ack-twice", "韩森寨家具市场有人打架")
    jiaju = linked_guard(service, app, "jiaju", "g-jiaju")
    assert "g-jiaju" in incident.assigned
    decline = {"incident_id": incident.id, "status": "declined"}
    assert jiaju.post("/api/me/ack", json=decline).status_code == 200
    escalated = answers(service, incident.id)
    assert escalated[-1][0] == "escalated"  # a decline hastens escalation...
    for _ in range(3):  # ... once: repeated, it would alert the whole reserve, one tap each
        assert jiaju.post("/api/me/ack", json=decline).status_code == 200
    assert answers(service, incident.id) == escalated
    for _ in range(3):  # he changed his mind: a new answer, taken once
        accepted = jiaju.post("/api/me/ack", json={"incident_id": incident.id})
        assert accepted.status_code == 200 and accepted.json()["status"] == "acknowledged"
    on_scene = jiaju.post("/api/me/ack", json={"incident_id": incident.id, "status": "on_scene"})
    assert on_scene.status_code == 200 and on_scene.json()["status"] == "on_scene"
    assert [a for a in answers(service, incident.id) if a[0] == "ack"] == [
        ("ack", "declined"), ("ack", "ack"), ("ack", "on_scene")]  # fmt: skip
