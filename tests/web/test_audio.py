"""Playback of archived audio: content type, ranges, no way out of the archive, and which calls an officer hears."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bridge.web.users import UserStore
from tests.web.conftest import archive_utterance, page_client
from tests.web.test_console_api import report

OFFICER_PASSWORD = "patrol-officer-password"


@pytest.fixture(scope="module")
def archived(service):
    return archive_utterance(service, "u-audio-1", "ch-market", 100)


def test_the_archived_file_is_streamed_with_its_type_and_ranges(login, archived):
    client = login("auditor")
    whole = client.get("/api/utterances/u-audio-1/audio")
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
    assert whole.content == archived.read_bytes() and whole.content[:4] == b"RIFF"
    part = client.get("/api/utterances/u-audio-1/audio", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == archived.read_bytes()[100:200]
    assert login("operator").get("/api/utterances/u-audio-1/audio").status_code == 200


def officer(service, app, name: str, responder_id: str) -> TestClient:
    """A logged-in officer account speaking for a police responder of the jurisdiction."""
    UserStore(service.db).add(name, "officer", OFFICER_PASSWORD, responder_id=responder_id)
    client = page_client(app)
    assert client.post("/api/login", json={"name": name, "password": OFFICER_PASSWORD}).status_code == 200
    return client


def test_an_officer_hears_the_calls_of_incidents_he_was_sent_to_and_no_others(service, app, login):
    archive_utterance(service, "u-fight-call", "ch-market", 500)
    archive_utterance(service, "u-routine", "ch-market", 520)  # radio traffic that reported nothing
    incident = report(service, "u-fight-call", "美食街有人打架斗殴")
    assert not {"p-patrol-1", "p-patrol-2"} & set(incident.assigned)  # the dispatcher alerted others
    patrol1, patrol2 = officer(service, app, "patrol1", "p-patrol-1"), officer(service, app, "patrol2", "p-patrol-2")
    call = "/api/utterances/u-fight-call/audio"

    dispatch = f"/api/incidents/{incident.id}/dispatch"
    assert login("operator").post(dispatch, json={"responders": ["p-patrol-1"]}).status_code == 200
    assert patrol1.get(call).status_code == 200  # sent to it: he hears the caller
    assert patrol2.get(call).status_code == 403  # not sent to it
    assert patrol1.get("/api/utterances/u-routine/audio").status_code == 403  # no incident's call at all
    assert login("officer").get(call).status_code == 403  # an officer account speaking for no responder

    assert login("operator").post(dispatch, json={"responders": ["p-patrol-2"]}).status_code == 200
    assert patrol2.get(call).status_code == 200
    assert patrol1.get(call).status_code == 200  # stood down, but he was told of it and may have gone there
    playbacks = login("auditor").get("/api/audit", params={"action": "playback", "user": "patrol1"}).json()
    assert [e["target"] for e in playbacks] == ["u-fight-call", "u-fight-call"]  # what was refused is not a playback


TRAVERSALS = [
    "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%252F..%252Fetc%252Fpasswd",
    "....//....//etc/passwd", "..\\..\\etc\\passwd", "%2Fetc%2Fpasswd", "/etc/passwd", "..", ".", "%00", "u-audio-1%00.wav",
    "u-audio-1/../../../../etc/passwd", "archive%2F..%2F..%2Fjingbao.db", "jingbao.db", "~root", "%c0%ae%c0%ae%c0%af",
]  # fmt: skip


@pytest.mark.parametrize("evil", TRAVERSALS)
def test_path_traversal_finds_nothing(login, archived, evil):
    response = login("auditor").get(f"/api/utterances/{evil}/audio")
    assert response.status_code in (404, 400, 405), response.status_code
    assert b"root:" not in response.content and b"SQLite format" not in response.content


def test_unknown_id_is_404(login):
    assert login("auditor").get("/api/utterances/u-never/audio").status_code == 404


def test_a_tampered_row_pointing_outside_the_data_directory_is_not_served(service, login, tmp_path):
    archive_utterance(service, "u-tampered", "ch-market", 200)
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF secret")
    conn = service.archive._conn  # the archive's own connection: what a tamperer with database access would edit
    with conn:
        conn.execute("UPDATE utterances SET path = ? WHERE id = 'u-tampered'", (f"../../../../../../{secret}",))
    response = login("auditor").get("/api/utterances/u-tampered/audio")
    assert response.status_code == 404 and b"secret" not in response.content


def test_a_box_without_a_region_refuses_the_station_filter_and_details_its_own_utterances(login, service):
    """(The central tier's side: tests/web/test_central_search.py.)"""
    auditor = login("auditor")
    refused = auditor.get("/api/search", params={"station": "gongyuanbeilu"})
    assert refused.status_code == 400 and "central" in refused.json()["detail"]
    assert auditor.get("/api/stations").json() == {"bureaus": []}  # the auditor page shows no station filter
    archive_utterance(service, "u-box-1", "ch-market", 100)
    detail = auditor.get("/api/utterances/u-box-1").json()
    assert detail["utterance"]["station"] is None and detail["utterance"]["audio"] is True
    assert auditor.get("/api/utterances/u-box-1/audio").content[:4] == b"RIFF"
    assert auditor.get("/api/utterances/..%2Fjingbao.db/audio").status_code == 404

