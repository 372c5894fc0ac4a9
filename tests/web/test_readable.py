"""Characters wherever a person reads a transcript of the on-board engine (pinyin only, characters decoded by
asr/hanzi.py): the console's opening state, incidents and the guard's alerts, the auditor's search and its export;
the pinyin stays searchable."""

from __future__ import annotations

import asyncio
import csv
import io
import time

import pytest

from asr.transcript import Keyword, Transcript
from bridge.events import Utterance
from bridge.service import Service
from tests.web.conftest import T0
from tests.web.test_console_api import linked_guard

HEARD = Transcript(text="", pinyin="mei3 shi2 jie1 you3 ren2 chao3 jia4 qing3 bao3 an1 guo4 qu4",
                   readable="美食街有人吵架请保安过去", engine="sherpa", conf=0.8,
                   keywords=(Keyword("美食街", "meishijie", 0.1, 0.9, 1.0),))  # fmt: skip


@pytest.fixture(scope="module")
def decoded(service: Service) -> str:
    service.transcripts.save("u-decoded", "ch-market", T0 + 10, HEARD)
    service.transcripts.save("u-text", "ch-police", T0 + 20, Transcript("东门有人吵架", "dong1 men2 you3 ren2 chao3 jia4",
                                                                      engine="vosk", readable="东门有人吵架"))
    return "u-decoded"


def test_search_finds_decoded_characters_and_shows_them(login, decoded) -> None:
    results = {r["utterance_id"]: r for r in login("auditor").get("/api/search", params={"q": "吵架"}).json()["results"]}
    found = results[decoded]
    assert found["match"] == "exact"  # in the decoded characters, not only as a sound-alike
    assert found["text"] == "" and found["readable"] == "美食街有人吵架请保安过去" and found["pinyin"] == HEARD.pinyin
    assert found["snippet_field"] == "readable" and "有人<mark>吵架</mark>请" in found["snippet"]
    assert results["u-text"]["readable"] == "东门有人吵架" and results["u-text"]["snippet_field"] == "text"


def test_the_pinyin_layer_stays_searchable(login, decoded) -> None:
    found = [r["utterance_id"] for r in login("auditor").get("/api/search", params={"q": "bao an guo qu"}).json()["results"]]
    assert found == [decoded]
    # a word the decoder did not write, found by its sound: 超假 is not written anywhere, 吵架 sounds the same
    sounds = login("auditor").get("/api/search", params={"q": "超假"}).json()["results"]
    assert decoded in [r["utterance_id"] for r in sounds if r["match"] == "sounds_like"]


def test_the_export_has_the_characters(login, decoded) -> None:
    response = login("auditor").get("/api/search/export.csv", params={"q": "美食街"})
    rows = list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"))))
    row = next(r for r in rows if r["utterance_id"] == decoded)
    assert row["readable"] == "美食街有人吵架请保安过去" and row["pinyin"] == HEARD.pinyin and row["text"] == ""


def test_the_console_opens_on_characters(login, decoded) -> None:
    state = login("operator").get("/api/console/state").json()
    said = next(t for t in state["transcripts"] if t["utterance_id"] == decoded)
    assert said["readable"] == "美食街有人吵架请保安过去" and said["pinyin"] == HEARD.pinyin


def test_incidents_and_alerts_read_in_characters(service: Service, app, login) -> None:
    now = time.time()
    utterance = Utterance("u-report", "ch-market", now - 3, now, b"")
    report = Transcript(text="", pinyin="mei3 shi2 jie1 you3 ren2 da3 jia4 qing3 gan3 kuai4 guo4 lai2",
                        readable="美食街有人打架请赶快过来", engine="sherpa", conf=0.8)  # fmt: skip
    incident = asyncio.run(service.dispatch.dispatcher.handle(report, utterance))
    assert incident is not None and incident.type == "fight" and incident.place_id == "meishijie"  # decided on pinyin
    detail = login("operator").get(f"/api/incidents/{incident.id}").json()
    assert detail["text"] == "美食街有人打架请赶快过来" and detail["pinyin"] == report.pinyin
    assert incident.assigned, "nobody alerted"
    guard = linked_guard(service, app, "readable-guard", incident.assigned[0])
    alerts = guard.get("/api/me/alerts").json()["alerts"]
    assert next(a for a in alerts if a["id"] == incident.id)["text"] == "美食街有人打架请赶快过来"
