"""Statistics over HTTP against a real Service (real SQLite, archive and dispatcher; no broker, no speech model): an
incident taken through every stage by the dispatcher, a responder's answers and an operator shows in the figures;
who may read and export them; the CSV exports (BOM, hostile place names and notes); the monthly report as HTML and
as a PDF printed by Chromium, read back with poppler's pdftotext."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import date

import pytest
from fastapi.testclient import TestClient

from asr.transcript import Transcript
from bridge.events import Utterance
from bridge.service import Service
from dispatch.incidents import Incident, Status

MONTH = date.today().strftime("%Y-%m")
HOSTILE_PLACE = '=HYPERLINK("http://evil.example","点我"),<script>alert(1)</script>'
HOSTILE_NOTE = '-2+3,"已处置"\n第二行'
ROUTES = ["/api/stats", "/api/stats/incidents.csv", "/api/stats/units.csv", f"/api/stats/report?month={MONTH}",
          f"/api/stats/report.pdf?month={MONTH}"]  # fmt: skip


@pytest.fixture(scope="module")
def handled(service: Service, login: Callable[..., TestClient]) -> dict:
    """A fight reported on ch-market now, answered by its first responder (ack, then on scene) over the phones' ack
    path, resolved by an operator; and an incident at a place with a hostile name, with a hostile note."""
    now = time.time()
    for k in range(3):
        service.archive.store(Utterance(f"u-stats-{k}", "ch-market", now - 60 + k, now - 59 + k, bytes(16000 * 2)))
    dispatcher = service.dispatch.dispatcher
    fight = asyncio.run(dispatcher.handle(Transcript("美食街有人打架斗殴", "", engine="vosk", conf=0.9),
                                          Utterance("u-stats-fight", "ch-market", now - 3, now, b"")))  # fmt: skip
    assert fight is not None and fight.assigned
    rid = fight.assigned[0]
    for answer in ("ack", "on_scene"):
        payload = json.dumps({"incident_id": fight.id, "status": answer}).encode()
        asyncio.run(dispatcher.on_message(dispatcher.topics.ack(rid), payload))
    op = login("operator")
    assert op.post(f"/api/incidents/{fight.id}/status", json={"status": "resolved"}).status_code == 200
    # a place since removed from the jurisdiction: its name is the one the incident was given
    hostile = dispatcher.store.create(Incident("INC-HOSTILE", "theft", "medium", Status.REPORTED, now, now, "old-gate",
                                               HOSTILE_PLACE, text="有人偷东西\n\"快来\""), actor="dispatcher")  # fmt: skip
    assert op.post(f"/api/incidents/{hostile.id}/notes", json={"text": HOSTILE_NOTE}).status_code == 200
    return {"fight": fight.id, "responder": rid, "hostile": hostile.id}


@pytest.mark.parametrize("route", ROUTES)
def test_guards_officers_and_strangers_are_refused(app, login: Callable[..., TestClient], route: str) -> None:
    assert TestClient(app).get(route).status_code == 401
    assert login("guard").get(route).status_code == 403
    assert login("officer").get(route).status_code == 403


def test_the_figures_follow_an_incident_through_every_stage(handled: dict, login: Callable[..., TestClient]) -> None:
    for role in ("operator", "auditor"):
        stats = login(role).get("/api/stats").json()
        assert stats["totals"]["incidents"] == 2
        assert {r["id"]: r["count"] for r in stats["by_type"]} == {"fight": 1, "theft": 1}
        response = stats["response"]
        for stage in ("reported-alerted", "alerted-acked", "acked-on_scene", "on_scene-resolved", "reported-resolved"):
            assert response[stage]["n"] == 1, stage
            assert 0 <= response[stage]["p50"] < 30, stage
        unit = next(u for u in stats["units"] if u["id"] == handled["responder"])
        assert (unit["alerted"], unit["answered"], unit["on_scene"]) == (1, 1, 1)
        market = next(c for c in stats["channels"] if c["id"] == "ch-market")
        assert market["utterances"] >= 3 and market["incidents"] == 1
        assert stats["by_period"]["periods"][-1] == date.today().isoformat()
        assert {"places", "grids", "stations"} <= set(stats["options"])


@pytest.mark.parametrize(("params", "incidents"), [({"type": "theft"}, 1), ({"grid": "yongding-sq"}, 1),
                                                   ({"station": "公园北路派出所"}, 1), ({"place": "gaoqiao-market"}, 0)])
def test_filters(handled: dict, login: Callable[..., TestClient], params: dict, incidents: int) -> None:
    assert login("operator").get("/api/stats", params=params).json()["totals"]["incidents"] == incidents


@pytest.mark.parametrize("params", [{"from": "2026-03-09", "to": "2026-03-01"}, {"from": "2020-01-01", "to": "2026-01-01"},
                                    {"period": "year"}, {"from": "yesterday"}])  # fmt: skip
def test_nonsense_periods_are_422(login: Callable[..., TestClient], params: dict) -> None:
    assert login("operator").get("/api/stats", params=params).status_code == 422


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "../x"])
def test_a_bad_month_is_422(login: Callable[..., TestClient], month: str) -> None:
    assert login("auditor").get("/api/stats/report", params={"month": month}).status_code == 422


def read_csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(b"\xef\xbb\xbf")  # the BOM: Excel reads the Chinese as UTF-8
    assert "attachment" in response.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))


def test_incidents_csv_keeps_hostile_text_whole_and_inert(handled: dict, login: Callable[..., TestClient]) -> None:
    rows = {r["id"]: r for r in read_csv(login("auditor").get("/api/stats/incidents.csv"))}
    hostile = rows[handled["hostile"]]
    assert hostile["place_name"] == "'" + HOSTILE_PLACE  # a formula no more, every character kept
    assert hostile["notes"] == "'" + HOSTILE_NOTE  # commas, quotes and the line break survive the round trip
    assert hostile["text"] == '有人偷东西\n"快来"'
    assert hostile["station"] == "公园北路派出所" and hostile["grid"] == ""  # no grid known: the station itself
    fight = rows[handled["fight"]]
    assert fight["place_name"] == "美食街" and fight["type"] == "fight" and fight["status"] == "resolved"
    assert all(fight[f"{s}_at"] for s in ("alerted", "acked", "on_scene", "resolved"))
    assert float(fight["reported_to_resolved_s"]) >= float(fight["reported_to_on_scene_s"]) >= 0
    assert handled["responder"] in fight["responders_alerted"].split()


def test_units_csv_and_the_exports_are_audited(handled: dict, login: Callable[..., TestClient]) -> None:
    units = {r["id"]: r for r in read_csv(login("operator").get("/api/stats/units.csv", params={"type": "fight"}))}
    assert units[handled["responder"]]["on_scene"] == "1" and units["g-jiaju"]["alerted"] == "0"
    audit = login("auditor").get("/api/audit", params={"action": "export"}).json()
    assert any(e["target"] == "stats/units.csv" and e["user_name"] == "operator" for e in audit), audit[:3]


def test_report_html_escapes_what_the_database_holds(handled: dict, login: Callable[..., TestClient]) -> None:
    page = login("operator").get("/api/stats/report", params={"month": MONTH})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "公园北路派出所" in page.text and "警保联动工作月报" in page.text and "美食街" in page.text
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text
    assert '<link rel="stylesheet" href="/static/report.css">' in page.text
    data = page.text.split('<script type="application/json" id="report-data">')[1].split("</script>")[0]
    assert json.loads(data)["types"] == [{"name": "打架斗殴", "count": 1}, {"name": "盗窃", "count": 1}]


def test_report_pdf_is_printed_with_its_text(handled: dict, login: Callable[..., TestClient], tmp_path) -> None:
    for tool in ("pdfinfo", "pdftotext", "pdfimages"):
        assert shutil.which(tool), f"{tool} missing: scripts/setup.sh installs poppler-utils"
    response = login("auditor").get("/api/stats/report.pdf", params={"month": MONTH})
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-") and b"%%EOF" in response.content[-64:]
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(response.content)
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    assert pages >= 1 and "(A4)" in info
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert f"{int(MONTH[5:])}月 警保联动工作月报" in text
    assert "美食街" in text and "打架斗殴" in text and "警保联动考核" in text
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert sum(" image " in line for line in images.splitlines()) >= 3  # the three charts, drawn before printing
