"""Search, transcript detail, replay and export at the central tier (bridge/web/central_app.py) over every station's
forwarded archive in a real PostgreSQL (the tests' private cluster), read on the read-only role, scoped by the region
file (config/region.yaml): a station's user sees their station, a 分局's its stations, a city-wide user all, and no
query parameter widens that."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from asr.transcript import Transcript
from bridge.archive import ArchivedUtterance
from bridge.archive_verify import GENESIS_HASH, chain_hash
from bridge.central import CentralIngest, CentralStore
from bridge.central_health import CentralHealth, DatabaseProbe
from bridge.config import load_config
from bridge.db import connect_postgres, connect_state
from bridge.nodes import TranscriptMessage, UtteranceMessage
from bridge.pg_roles import TierRoles, setup_roles
from bridge.region import region_of
from bridge.web.central_app import create_central_app
from bridge.web.search_pg import PostgresSearchIndex
from bridge.web.users import UserStore
from tests.support.broker import free_port
from tests.support.postgres import PostgresCluster
from tests.support.wav import wave_bytes
from tests.web.browser import CSP_VIOLATIONS, chromium, log_in
from tests.web.browser import PASSWORD as BROWSER_PASSWORD  # what its log_in types
from tests.web.conftest import page_client
from tests.web.test_user_cli import jingbao

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "central-test-password"
T0 = time.time() - 3600
# (station, utterance id, seconds after T0, transcript, audio inline?) -- 打架 misheard as 打假 at one station
SAID = [
    ("gongyuanbeilu", "u1", 10, "美食街有人打架", True),
    ("gongyuanbeilu", "u2", 20, "高桥大市场门口着火了", True),
    ("changlezhonglu", "u1", 30, "长乐公园有人打架", True),  # the same local id as gongyuanbeilu's: central's differ
    ("beiyuanmen", "u3", 40, "回民街有人打假", False),  # its audio did not come (too big, say)
]
# who logs in, their role and scope (None: the whole region)
USERS = {"city": ("auditor", None), "xincheng": ("auditor", "xincheng"), "gybl": ("auditor", "gongyuanbeilu"),
         "byn": ("operator", "beiyuanmen"), "admin-xc": ("admin", "xincheng")}  # fmt: skip


def audio_of(station: str, uid: str) -> bytes:
    """A real WAV (a browser plays it), a tone of its own per utterance."""
    import numpy as np

    t = np.arange(3200) / 16000
    pcm = (np.sin(2 * np.pi * (300 + 10 * len(station + uid)) * t) * 8000).astype("<i2").tobytes()
    return wave_bytes(pcm)


def store_all(central: CentralStore) -> None:
    """SAID as the edges forward it: each station's rows a hash chain from seq 1, as its archive stored them."""
    last: dict[str, ArchivedUtterance] = {}
    for station, uid, offset, text, inline in SAID:
        audio = audio_of(station, uid)
        start_ms = int((T0 + offset) * 1000)
        before = last.get(station)
        row = ArchivedUtterance(id=uid, channel="ch-market", seq=before.seq + 1 if before else 1, start_ms=start_ms,
                                end_ms=start_ms + 800, duration_ms=800, path=f"{uid}.wav", format="wav",
                                sha256=hashlib.sha256(audio).hexdigest(), peak_dbfs=-3.0, rms_dbfs=-20.0,
                                end_reason="silence", fault="", status="done", created_at=start_ms,
                                prev_hash=before.row_hash if before else GENESIS_HASH, row_hash="")  # fmt: skip
        last[station] = row = replace(row, row_hash=chain_hash(row.chained_content()))
        omitted = "" if inline else "900000 bytes, over the 700000 bytes a message carries"
        inline_audio = base64.b64encode(audio).decode() if inline else None
        central.store(UtteranceMessage(v=1, station=station, utterance=row, audio=inline_audio, audio_omitted=omitted))
        heard = Transcript(text=text, pinyin="", engine="test")
        central.store(TranscriptMessage(v=1, station=station, utterance_id=uid, channel="ch-market", start_ms=start_ms,
                                        version=time.time(), transcript=heard))  # fmt: skip


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresCluster) -> Iterator[tuple[FastAPI, Path]]:
    """Central's web app on a database the ingest (the writer role) filled, reading it as the reader role."""
    tmp = tmp_path_factory.mktemp("central")
    roles = TierRoles(postgres.create_database(), f"cw_{os.getpid()}", f"cr_{os.getpid()}")
    setup_roles(postgres.url(), roles)
    writer, reader = postgres.url(roles.database, roles.writer), postgres.url(roles.database, roles.reader)
    ingest = CentralStore(writer)
    store_all(ingest)
    ingest.close()
    with connect_postgres(writer) as conn:
        PostgresSearchIndex(conn).sync()  # the ingest's indexing
    path = tmp / "central.yaml"
    path.write_text(yaml.safe_dump({
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp / "data"), "database_url": writer, "reader_url": reader},
        "channels": [{"id": "ch", "name": "ch", "source": {"type": "pipe"}}],
        "node": {"region": str(REPO / "config" / "region.yaml")},
    }), encoding="utf-8")  # fmt: skip
    config = load_config(path)
    users = UserStore(connect_state(config.storage))
    for name, (role, scope) in USERS.items():
        users.add(name, role, PASSWORD, scope=scope)
    # nothing of central runs here: its /healthz would say so (tests/bridge/test_central_health.py reads it)
    health = CentralHealth(CentralIngest(config), None, DatabaseProbe(writer))
    app = create_central_app(config, region_of(config), health)
    yield app, path
    app.state.web.search._conn.close()
    app.state.web.recordings._conn.close()
    postgres.drop_database(roles.database)
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        for role in (roles.writer, roles.reader):
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


@pytest.fixture(scope="module")
def as_user(central) -> Callable[[str], TestClient]:
    app, _ = central
    clients: dict[str, TestClient] = {}

    def login(name: str) -> TestClient:
        if name not in clients:
            client = page_client(app)
            assert client.post("/api/login", json={"name": name, "password": PASSWORD}).status_code == 200
            clients[name] = client
        return clients[name]

    return login


def found(client: TestClient, q: str = "", **params: str) -> list[tuple[str, str | None]]:
    response = client.get("/api/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return [(r["utterance_id"], r["station_name"]) for r in response.json()["results"]]


def test_a_city_wide_auditor_searches_every_station_each_result_naming_its_station(as_user):
    city = as_user("city")
    # the query language and its tolerance are the box's: 打架 as written first, then 打假 (sounds alike)
    assert found(city, "打架") == [("changlezhonglu.u1", "长乐中路派出所"), ("gongyuanbeilu.u1", "公园北路派出所"),
                                  ("beiyuanmen.u3", "北院门派出所")]  # fmt: skip
    result = city.get("/api/search", params={"q": "打架"}).json()["results"][2]
    assert result["match"] == "sounds_like" and result["station"] == "beiyuanmen"
    assert found(city, "dajia", station="gongyuanbeilu") == [("gongyuanbeilu.u1", "公园北路派出所")]  # pinyin
    assert [u for u, _ in found(city, station="xincheng")] == ["changlezhonglu.u1", "gongyuanbeilu.u2", "gongyuanbeilu.u1"]
    assert city.get("/api/search", params={"station": "nowhere"}).status_code == 400


def test_a_station_user_sees_only_their_station_and_cannot_widen_it(as_user):
    gybl = as_user("gybl")
    assert [u for u, _ in found(gybl)] == ["gongyuanbeilu.u2", "gongyuanbeilu.u1"]
    assert [u for u, _ in found(gybl, "打架")] == ["gongyuanbeilu.u1"]
    for wider in ("changlezhonglu", "xincheng", "beiyuanmen"):  # another station, their own 分局, another 分局
        assert gybl.get("/api/search", params={"q": "打架", "station": wider}).status_code == 403
        assert gybl.get("/api/search/export.csv", params={"station": wider}).status_code == 403
    assert [u for u, _ in found(gybl, station="gongyuanbeilu")] == ["gongyuanbeilu.u2", "gongyuanbeilu.u1"]
    # another station's utterance by its id: as if it did not exist, its transcript and its audio alike
    for other in ("changlezhonglu.u1", "beiyuanmen.u3"):
        assert gybl.get(f"/api/utterances/{other}").status_code == 404
        assert gybl.get(f"/api/utterances/{other}/audio").status_code == 404
    export = gybl.get("/api/search/export.csv")
    lines = export.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("utterance_id,start_iso,station,channel,") and len(lines) == 3
    assert all(",gongyuanbeilu,gongyuanbeilu.ch-market," in line for line in lines[1:])


def test_a_bureau_user_sees_its_stations(as_user):
    assert [u for u, _ in found(as_user("xincheng"), "打架")] == ["changlezhonglu.u1", "gongyuanbeilu.u1"]
    byn = as_user("byn")  # an operator of the other 分局's one station
    assert found(byn, "打架") == [("beiyuanmen.u3", "北院门派出所")]
    assert byn.get("/api/utterances/gongyuanbeilu.u1/audio").status_code == 404


def test_forwarded_audio_is_replayed_and_logged_with_its_station(as_user):
    city = as_user("city")
    played = city.get("/api/utterances/changlezhonglu.u1/audio")
    assert played.status_code == 200 and played.headers["content-type"] == "audio/wav"
    assert played.content == audio_of("changlezhonglu", "u1")
    detail = city.get("/api/utterances/changlezhonglu.u1").json()
    assert detail["utterance"] | {"start": 0} == {
        "utterance_id": "changlezhonglu.u1", "station": "changlezhonglu", "station_name": "长乐中路派出所",
        "channel": "ch-market", "start": 0, "duration_s": 0.8, "format": "wav", "audio": True, "audio_missing": "",
    }  # fmt: skip
    assert detail["transcript"]["text"] == "长乐公园有人打架" and detail["transcript"]["station"] == "changlezhonglu"
    missing = city.get("/api/utterances/beiyuanmen.u3/audio")  # the edge sent it without its audio
    assert missing.status_code == 404 and "did not reach central: 900000 bytes" in missing.json()["detail"]
    assert city.get("/api/utterances/beiyuanmen.u3").json()["utterance"]["audio"] is False
    assert city.get("/api/utterances/nowhere.u1/audio").status_code == 404
    log = city.get("/api/audit", params={"action": "playback", "user": "city"}).json()
    assert [(e["target"], e["detail"]["station"]) for e in log] == [("changlezhonglu.u1", "changlezhonglu")]


def test_forwarded_audio_is_served_in_byte_ranges_as_a_file_is(as_user):
    """A browser seeks in a recording by asking for the bytes from there on: central's in-memory audio answers as
    the box's files do (206 with Content-Range; 416 past the end; a header it does not read gets it whole)."""
    city = as_user("city")  # the same user and recording as above: the audit log tests after this one count them
    audio, url = audio_of("changlezhonglu", "u1"), "/api/utterances/changlezhonglu.u1/audio"
    size = len(audio)
    for asked, (start, end) in {"bytes=0-": (0, size - 1), "bytes=100-199": (100, 199), "bytes=-64": (size - 64, size - 1),
                                "bytes=6000-": (6000, size - 1), "bytes=10-999999": (10, size - 1)}.items():  # fmt: skip
        part = city.get(url, headers={"Range": asked})
        assert part.status_code == 206 and part.headers["content-range"] == f"bytes {start}-{end}/{size}", asked
        assert part.content == audio[start : end + 1] and part.headers["accept-ranges"] == "bytes"
    beyond = city.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
    for unread in ("bytes=0-9,20-29", "lines=1-2", "bytes=abc", "bytes=30-20"):
        whole = city.get(url, headers={"Range": unread})
        assert whole.status_code == 200 and whole.content == audio, unread


def test_central_verifies_each_stations_chain_and_audio_within_the_auditors_scope(central, as_user):
    """What the edges forwarded, hash chains included, checked at central as an edge checks its own archive; an
    auditor sees their stations' reports only. A row or audio altered in central's database shows."""
    checked = as_user("city").get("/api/archive/verify").json()["report"]
    assert checked["ok"] and set(checked["stations"]) == {"gongyuanbeilu", "changlezhonglu", "beiyuanmen"}
    mine = checked["stations"]["gongyuanbeilu"]
    assert (mine["rows"], mine["first_seq"], mine["audio_missing"], mine["problems"]) == (2, 1, 0, [])
    assert checked["stations"]["beiyuanmen"]["audio_missing"] == 1  # not sent: counted, not a problem
    scoped = as_user("gybl").post("/api/archive/verify").json()["report"]
    assert list(scoped["stations"]) == ["gongyuanbeilu"] and scoped["stations"]["gongyuanbeilu"]["head"] == mine["head"]
    assert as_user("byn").get("/api/archive/verify").status_code == 403  # an operator: not an auditor's check

    _, path = central
    with connect_postgres(load_config(path).storage.database_url) as conn:
        conn.execute("UPDATE node_utterances SET rms_dbfs = -30 WHERE id = 'gongyuanbeilu.u2'")
        conn.execute("UPDATE node_utterances SET audio = audio || '\\x00'::bytea WHERE id = 'changlezhonglu.u1'")
        try:
            report = as_user("city").post("/api/archive/verify").json()["report"]
            command = jingbao("archive", "verify", "--central", "--config", str(path))
        finally:
            conn.execute("UPDATE node_utterances SET rms_dbfs = -20 WHERE id = 'gongyuanbeilu.u2'")
            conn.execute("UPDATE node_utterances SET audio = substring(audio from 1 for length(audio) - 1)"
                         " WHERE id = 'changlezhonglu.u1'")
    assert not report["ok"] and report["stations"]["beiyuanmen"]["ok"]
    assert [(p["kind"], p["id"]) for p in report["stations"]["gongyuanbeilu"]["problems"]] == [("row_altered", "u2")]
    assert [(p["kind"], p["id"]) for p in report["stations"]["changlezhonglu"]["problems"]] == [("file_altered", "u1")]
    assert command.returncode == 1, command.stderr  # the auditor's command line: the same walk
    assert "changlezhonglu: file_altered: seq 1 id u1: the audio central holds does not match" in command.stdout
    assert "gongyuanbeilu: 1 problem(s): rows 1..2 (0 without audio)" in command.stdout
    assert as_user("city").post("/api/archive/verify").json()["report"]["ok"]  # put back
    put_back = jingbao("archive", "verify", "--central", "--config", str(path))
    assert put_back.returncode == 0 and "beiyuanmen: OK: rows 1..1 (1 without audio), head " in put_back.stdout
    box = jingbao("archive", "verify", "--central", "--config", str(REPO / "config" / "demo.yaml"))
    assert box.returncode == 2 and "--central needs storage.database_url" in box.stderr


def test_a_scoped_auditor_reads_the_audit_log_of_their_scope(as_user):
    city, gybl = as_user("city"), as_user("gybl")
    assert city.get("/api/utterances/gongyuanbeilu.u2/audio").status_code == 200
    # what earlier tests did too, so that this one holds alone (-k)
    assert city.get("/api/utterances/changlezhonglu.u1/audio").status_code == 200
    assert city.get("/api/search", params={"q": "打架"}).status_code == 200
    assert gybl.get("/api/search", params={"q": "着火"}).status_code == 200

    def log(client: TestClient) -> set[tuple[str, str, str]]:
        return {(e["user_name"], e["action"], e["target"]) for e in client.get("/api/audit", params={"limit": 1000}).json()}

    mine = log(gybl)
    assert ("gybl", "search", "着火") in mine  # their own
    assert ("city", "playback", "gongyuanbeilu.u2") in mine  # who replayed their station's calls
    assert not {e for e in mine if e[0] not in ("gybl", "city")}  # no other scoped user's: none lies within theirs
    assert not {e for e in mine if e[0] == "city" and e[1] != "playback"}  # not city's searches of every station
    assert ("city", "playback", "changlezhonglu.u1") not in mine  # another station's
    assert ("city", "playback", "changlezhonglu.u1") in log(as_user("xincheng"))  # their 分局's
    assert {("gybl", "search", "着火"), ("city", "search", "打架")} <= log(city)  # a city-wide auditor: all of it


def test_the_auditor_page_offers_the_stations_of_the_users_scope(central, as_user):
    app, _ = central
    city, gybl = as_user("city"), as_user("gybl")
    assert city.get("/api/stations").json() == {"bureaus": [
        {"id": "xincheng", "name": "新城分局", "stations": [{"id": "gongyuanbeilu", "name": "公园北路派出所"},
                                                          {"id": "changlezhonglu", "name": "长乐中路派出所"}]},
        {"id": "lianhu", "name": "莲湖分局", "stations": [{"id": "beiyuanmen", "name": "北院门派出所"}]},
    ]}  # fmt: skip
    # only their station, and not their 分局 as a whole (a choice that would be refused)
    assert gybl.get("/api/stations").json() == {
        "bureaus": [{"id": None, "name": "新城分局", "stations": [{"id": "gongyuanbeilu", "name": "公园北路派出所"}]}]
    }
    page = city.get("/auditor")
    assert page.status_code == 200 and 'id="f-station"' in page.text
    assert city.get("/static/auditor.js").status_code == 200
    assert city.get("/stats").status_code == 200  # the statistics of the user's stations (tests/web/test_central_console.py)
    assert page_client(app).get("/api/stations").status_code == 401


def test_an_admin_of_a_bureau_makes_users_within_it_only(as_user):
    admin = as_user("admin-xc")
    new = {"role": "auditor", "password": PASSWORD}
    made = admin.post("/api/users", json=new | {"name": "sun", "scope": "changlezhonglu"})
    assert made.status_code == 201 and made.json()["scope"] == "changlezhonglu"
    for name, scope in (("li", None), ("zhou", "beiyuanmen"), ("wu", "lianhu")):  # the region, another 分局's
        assert admin.post("/api/users", json=new | {"name": name, "scope": scope}).status_code == 403
    assert admin.post("/api/users", json=new | {"name": "wu", "scope": "nowhere"}).status_code == 400
    # an admin passes every role check, not the scope: another 分局's utterance is not theirs
    assert admin.get("/api/utterances/beiyuanmen.u3").status_code == 404


def test_search_and_replay_come_back_by_themselves_after_postgresql_restarts(postgres, as_user):
    city = as_user("city")
    assert city.get("/api/search", params={"q": "打架"}).status_code == 200
    postgres.pause()  # every connection dropped
    try:
        down = city.get("/api/search", params={"q": "打架"})
        assert down.status_code == 503 and "cannot be reached" in down.json()["detail"]
    finally:
        postgres.resume()
    city.get("/api/search", params={"q": "打架"})  # may still meet a connection the restart broke: it opens new ones
    assert len(city.get("/api/search", params={"q": "打架"}).json()["results"]) == 3
    assert city.get("/api/utterances/gongyuanbeilu.u1/audio").status_code == 200


def test_scopes_are_set_with_the_user_command_and_checked_against_the_region(central):
    _, config = central
    added = jingbao("user", "add", "zhao", "--role", "auditor", "--scope", "lianhu", "--password-stdin",
                    "--config", str(config), stdin="long-enough-password\n")  # fmt: skip
    assert added.returncode == 0 and "scope lianhu" in added.stderr
    bad = jingbao("user", "add", "qian", "--role", "auditor", "--scope", "xinchen", "--config", str(config))
    assert bad.returncode == 2 and "'xinchen' is neither a station nor a 分局" in bad.stderr
    assert jingbao("user", "scope", "zhao", "gongyuanbeilu", "--config", str(config)).returncode == 0
    widened = jingbao("user", "scope", "zhao", "--region", "--config", str(config))
    assert widened.returncode == 0 and "the whole region" in widened.stderr
    listed = jingbao("user", "list", "--config", str(config)).stdout
    assert "gybl                 auditor   gongyuanbeilu" in listed and "zhao                 auditor   (region)" in listed


def central_config_file(tmp_path: Path, pg_url: str, port: int) -> Path:
    path = tmp_path / "central.yaml"
    path.write_text(yaml.safe_dump({
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / "data"), "database_url": pg_url},
        "broker": {"enabled": False},
        "channels": [{"id": "ch", "name": "ch", "source": {"type": "pipe"}}],
        "web": {"port": port},
        "node": {"region": str(REPO / "config" / "region.yaml"), "broker": {"port": free_port()}},
    }), encoding="utf-8")  # fmt: skip
    return path


def test_jingbao_run_role_central_on_a_port_already_taken_says_so_and_ends(tmp_path, pg_url):
    """uvicorn would end the process from inside its loop, the ingest and the dispatcher stopping half-way."""
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--role", "central", "--config",
                               str(central_config_file(tmp_path, pg_url, port))], cwd=REPO, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and f"web: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr


def test_jingbao_run_role_central_serves_the_auditor_page_over_the_stations(tmp_path, pg_url):
    """The command itself, and the auditor page in a real browser: the ingest migrates, then the web app answers (no
    broker here: the ingest keeps trying to reach it meanwhile, which holds up neither, and /healthz says so); a
    station's auditor finds and plays their station's call, offered no other station; SIGTERM ends both."""
    ingest = CentralStore(pg_url)  # what the edges forwarded before this start
    store_all(ingest)
    ingest.close()
    port = free_port()
    path = central_config_file(tmp_path, pg_url, port)
    UserStore(connect_state(load_config(path).storage)).add("aud", "auditor", BROWSER_PASSWORD, scope="gongyuanbeilu")
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--role", "central", "--config", str(path)],
                               cwd=REPO, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _answers(base):
            assert time.monotonic() < deadline and process.poll() is None, "central did not serve within 30 s"
            time.sleep(0.1)
        # the process's own /healthz: PostgreSQL answers (its probe's first round may be under way), no broker does
        while (health := httpx.get(f"{base}/healthz")).json()["faults"] != 1:
            assert time.monotonic() < deadline + 5, health.json()
            time.sleep(0.1)
        assert health.status_code == 503 and health.json()["failing"][0]["kind"] == "broker_disconnected"
        CSP_VIOLATIONS.clear()
        with chromium() as browser:
            page = browser.new_page()
            log_in(page, base, "aud", "/auditor")
            expect(page.locator("#station-filter")).to_be_visible()
            expect(page.locator("#f-station option")).to_have_text(["全部", "公园北路派出所"])
            # central's copy of their station's archive, verified (2 rows of its chain)
            expect(page.locator("#archive-verify")).to_contain_text("✔ 档案完整")
            expect(page.locator("#archive-verify")).to_contain_text("2 条录音 · 1 个派出所")
            page.fill("#q", "打架")
            page.click("#search button[type=submit]")
            row = page.locator("tr[data-utterance='gongyuanbeilu.u1']")
            expect(row).to_contain_text("公园北路派出所")
            expect(page.locator("#results tr")).to_have_count(1)  # not changlezhonglu's, nor beiyuanmen's 打假
            row.locator("button.play").click()
            expect(row.locator("button.play")).to_have_text("■ 停止", timeout=10_000)  # forwarded audio, playing
        assert not CSP_VIOLATIONS, "\n".join(CSP_VIOLATIONS)  # central's pages run under the box's policy
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "central serves search and replay" in err


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/login").status_code == 200
    except httpx.TransportError:
        return False
