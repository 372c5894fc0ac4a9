"""The operators' console at the central tier (bridge/web/central_console.py): the stations of the operator's scope,
their channels and transcripts from PostgreSQL, central's dispatcher's incidents and responders with the box's own
routes, scoped by the region (tests/support/central.py: station A bordering B, C in another 分局); and
`jingbao run --role central` serving it live in a real browser: a channel lights up while its edge's caller talks,
edges' calls arriving over the real broker show at once, the incident central raises comes up in the queue, and a
station's operator sees only their station's."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiomqtt
import httpx
import yaml
from fastapi.testclient import TestClient
from playwright.sync_api import expect

from bridge.archive import ArchivedUtterance
from bridge.archive_verify import GENESIS_HASH
from bridge.central_health import CentralHealth, DatabaseProbe
from bridge.config import StorageConfig, load_config
from bridge.db import connect_state
from bridge.events import new_utterance_id
from bridge.nodes import channel_payload, utterance_payload
from bridge.region import load_region
from bridge.web.central_app import create_central_app
from bridge.web.users import UserStore
from dispatch.incidents import Incident, Status
from dispatch.topics import CHANNELS, Topics
from tests.support.broker import Mosquitto, free_port
from tests.support.central import (  # noqa: F401 (mqtt: the fixture, used by name)
    B_GUARD,
    C_GUARD,
    FIGHT,
    A,
    B,
    C,
    central_dispatching,
    dispatching_central,
    mqtt_fixture,
    region_file,
    transcript_message,
    until,
)
from tests.web.browser import CSP_VIOLATIONS, PASSWORD, chromium, log_in, screenshot
from tests.web.conftest import page_client

REPO = Path(__file__).resolve().parents[2]
C_THEFT = "北院门小市有人偷钱包"  # not a fight: C's market is ~10 m from A's fight, which it would merge into
# who logs in: an operator of the whole region, of station A, of C's 分局 (lianhu)
OPERATORS = {"op-city": None, "op-a": A, "op-lianhu": "lianhu"}


def utterance_message(station: str, text_id: str, *, heard_ago: float = 5.0) -> tuple[str, bytes, str, int]:
    """An edge's utterance message (no audio inline): topic, payload, its local id and start."""
    start = time.time() - heard_ago
    uid, start_ms = new_utterance_id(start), round(start * 1000)
    row = ArchivedUtterance(id=uid, channel="ch-market", seq=1, start_ms=start_ms, end_ms=start_ms + 2000, duration_ms=2000,
                            path=f"{uid}.wav", format="wav", sha256=hashlib.sha256(text_id.encode()).hexdigest(),
                            peak_dbfs=-3.0, rms_dbfs=-20.0, end_reason="silence", fault="", status="done",
                            created_at=start_ms, prev_hash=GENESIS_HASH, row_hash="0" * 64)  # fmt: skip
    payload = utterance_payload(station, row, None, "", entry=1)
    return Topics().node(station, "utterances"), payload, uid, start_ms


def add_operators(storage: StorageConfig) -> None:
    users = UserStore(connect_state(storage))  # central's PostgreSQL
    for name, scope in OPERATORS.items():
        users.add(name, "operator", PASSWORD, scope=scope)


async def test_an_operator_sees_and_acts_on_the_incidents_channels_and_calls_of_their_scope(tmp_path, mqtt, pg_url):
    config = dispatching_central(tmp_path, mqtt, pg_url)
    add_operators(config.storage)
    async with central_dispatching(config) as (ingest, dispatch), \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edges") as edges:  # fmt: skip
        for station, text, entry, ago in ((A, FIGHT, 1, 20.0), (C, C_THEFT, 2, 10.0)):  # C's the newer call
            topic, payload, _, _ = utterance_message(station, text, heard_ago=ago)
            await edges.publish(topic, payload, qos=1)
            await edges.publish(*transcript_message(station, text, entry=entry, heard_ago=ago), qos=1)
        await until("both calls dispatched", lambda: dispatch.dispatched == 2)
        await until("both utterances stored", lambda: ingest.stored["utterances"] == 2)
        region = load_region(config.node.region)
        app = create_central_app(config, region, CentralHealth(ingest, dispatch, DatabaseProbe(pg_url)), dispatch.service)
        clients = {}
        for name in OPERATORS:
            clients[name] = page_client(app)
            assert clients[name].post("/api/login", json={"name": name, "password": PASSWORD}).status_code == 200
        city, op_a, op_c = clients["op-city"], clients["op-a"], clients["op-lianhu"]
        everything = await asyncio.to_thread(city.get, "/api/console/state")
        state_a = await asyncio.to_thread(op_a.get, "/api/console/state")
        state_c = await asyncio.to_thread(op_c.get, "/api/console/state")

    everything, state_a, state_c = everything.json(), state_a.json(), state_c.json()
    assert everything["central"] is True and everything["transmitters"] == [] and everything["patches"] == []
    assert [s["id"] for s in everything["stations"]] == [A, "changlezhonglu", "xiaozhai", C]
    by_place = {i["place_id"]: i for i in everything["incidents"]}
    a_fight, c_theft = by_place[f"{A}.hansenzhai-gongjiaozhan"], by_place[f"{C}.xiaoshi"]
    assert a_fight["responders"][0]["id"] == B_GUARD and c_theft["responders"][0]["id"] == C_GUARD
    # channels from the jurisdiction files (A, B, C: named by station) and what the edges forwarded today
    channels = {c["id"]: c for c in everything["channels"]}
    assert {f"{A}.ch-market", f"{A}.ch-police", f"{B}.ch-market", f"{C}.ch-market"} <= set(channels)
    assert {c.split(".")[0] for c in channels} == {A, B, C}  # xiaozhai has no jurisdiction file here, nor a call today
    assert channels[f"{A}.ch-market"]["name"] == "公园北路派出所 · 市场保安"
    assert (channels[f"{A}.ch-market"]["utterances"], channels[f"{B}.ch-market"]["utterances"]) == (1, 0)
    assert [t["text"] for t in everything["transcripts"]] == [C_THEFT, FIGHT]  # newest first
    assert sum(sum(counts) for counts in everything["activity"]["counts"].values()) == 2

    # station A's operator: their station only, in every part of the view
    assert [s["id"] for s in state_a["stations"]] == [A]
    assert [i["id"] for i in state_a["incidents"]] == [a_fight["id"]]
    assert {c["id"].split(".")[0] for c in state_a["channels"]} == {A}
    assert [t["text"] for t in state_a["transcripts"]] == [FIGHT]
    assert {p["id"].split(".")[0] for p in state_a["jurisdiction"]["places"]} == {A}
    assert B_GUARD not in {r["id"] for r in state_a["responders"]}  # B's guard is B's, though he went to A's fight
    # the lianhu 分局's operator: C, whose incident they confirm-queue, act on and see; not A's
    assert [i["id"] for i in state_c["incidents"]] == [c_theft["id"]]
    assert op_c.get(f"/api/incidents/{a_fight['id']}").status_code == 404
    assert op_c.post(f"/api/incidents/{a_fight['id']}/notes", json={"text": "不是我们的"}).status_code == 404
    assert op_c.post(f"/api/responders/{B_GUARD}/status", json={"status": "busy"}).status_code == 404
    # nor send another station's responder to their own incident
    assert op_c.post(f"/api/incidents/{c_theft['id']}/dispatch", json={"responders": [B_GUARD]}).status_code == 404
    noted = op_c.post(f"/api/incidents/{c_theft['id']}/notes", json={"text": "已联系小市保安"})
    assert noted.status_code == 200 and noted.json()["timeline"][-1]["actor"] == "op-lianhu"
    assert [r["id"] for r in op_c.get("/api/responders").json()] == [C_GUARD]
    assert {i["id"] for i in city.get("/api/incidents").json()} == {a_fight["id"], c_theft["id"]}
    _statistics_are_the_scopes(city, op_a, op_c)
    # however many newer incidents the other stations have, a station's open ones stay on its operator's console
    store = dispatch.service.dispatcher.store
    for i in range(600):
        store.create(Incident(id=f"INC-A-{i}", type="noise", priority="low", status=Status.RESOLVED, created_at=time.time(),
                              updated_at=time.time(), channel=f"{A}.ch-market"), actor="test")  # fmt: skip
    assert [i["id"] for i in op_c.get("/api/console/state").json()["incidents"]] == [c_theft["id"]]
    # the pages, and what stays with each station's box
    assert city.get("/console").status_code == 200 and city.get("/stats").status_code == 200
    assert city.get("/api/tasks").status_code == 404 and city.get("/api/sos").status_code == 404


def _statistics_are_the_scopes(city: TestClient, op_a: TestClient, op_c: TestClient) -> None:
    """The statistics page's data at central (bridge/web/central_stats.py): central's incidents counted under the
    station whose channel reported them, the traffic from PostgreSQL, each operator's own stations only."""
    whole = city.get("/api/stats").json()
    assert whole["options"]["heading"] == "测试市局"
    assert whole["options"]["stations"] == ["公园北路派出所", "长乐中路派出所", "小寨派出所", "北院门派出所"]
    assert whole["totals"]["incidents"] == 2
    assert {s["name"]: s["count"] for s in whole["by_station"]} == {"公园北路派出所": 1, "北院门派出所": 1}
    channels = {c["id"]: c for c in whole["channels"]}
    assert channels[f"{A}.ch-market"]["name"] == "公园北路派出所 · 市场保安"
    assert (channels[f"{A}.ch-market"]["utterances"], channels[f"{C}.ch-market"]["utterances"]) == (1, 1)
    assert sum(whole["hours"]["utterances"]) == 2 == sum(whole["hours"]["incidents"])
    assert city.get("/api/stats", params={"station": "北院门派出所"}).json()["totals"]["incidents"] == 1

    own = op_a.get("/api/stats").json()
    assert own["options"]["heading"] == "公园北路派出所" and own["options"]["stations"] == ["公园北路派出所"]
    assert own["totals"]["incidents"] == 1 and [s["name"] for s in own["by_station"]] == ["公园北路派出所"]
    assert {c["id"].split(".")[0] for c in own["channels"]} == {A} and sum(own["hours"]["utterances"]) == 1
    assert {p["id"].split(".")[0] for p in own["options"]["places"]} == {A}
    assert B_GUARD not in {u["id"] for u in own["units"]}  # he went to A's fight, but he is B's
    rows = op_a.get("/api/stats/incidents.csv").text.strip().splitlines()
    assert len(rows) == 2 and "韩森寨公交站" in rows[1]
    lianhu = op_c.get("/api/stats/report", params={"month": time.strftime("%Y-%m")})
    assert lianhu.status_code == 200 and "莲湖分局" in lianhu.text and "公园北路派出所" not in lianhu.text
    assert [u["id"] for u in op_c.get("/api/stats").json()["units"]] == [C_GUARD]


def test_jingbao_run_role_central_shows_the_edges_calls_and_central_incidents_live(tmp_path, pg_url):
    """The command itself, the real broker between the nodes and a real browser: a city-wide operator and C's 分局's
    operator have the console open; an edge of station A forwards a fight; the city-wide console shows the call in
    its live transcript and on A's channel, and the incident central raises in the queue; C's operator sees none of
    it, and their station filter is theirs alone."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    port = free_port()
    path = tmp_path / "central.yaml"
    path.write_text(yaml.safe_dump({
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / "data"), "database_url": pg_url},
        "broker": {"enabled": True, "host": broker.host, "port": broker.port, "client_id": "central-dispatch"},
        "channels": [{"id": "ch", "name": "ch", "source": {"type": "pipe"}}],
        "web": {"port": port},
        "node": {"region": str(region_file(tmp_path)), "broker": {"host": broker.host, "port": broker.port}},
    }, allow_unicode=True), encoding="utf-8")  # fmt: skip
    add_operators(load_config(path).storage)
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--role", "central", "--config", str(path)],
                               cwd=REPO, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (health := _health(base)) or health["failing"]:
            assert time.monotonic() < deadline and process.poll() is None, f"central not up within 60 s: {health}"
            time.sleep(0.2)
        CSP_VIOLATIONS.clear()
        with chromium() as browser:
            city, lianhu = browser.new_page(viewport={"width": 1600, "height": 1000}), browser.new_page()
            log_in(city, base, "op-city", "/console")
            log_in(lianhu, base, "op-lianhu", "/console")
            expect(city.locator("#station-filter option")).to_have_count(5)  # 全部 and the region's four stations
            expect(lianhu.locator("#station-filter option")).to_have_text(["全部派出所（1）", "北院门派出所"])
            for page in (city, lianhu):
                expect(page.locator("#conn")).to_have_text("实时连接")
                expect(page.locator("#tasks-toggle")).to_be_hidden()  # a station's own, on its box
            # the edge's guard keys up: his channel lights up on the wall while he talks
            card = city.locator(f"[id='ch-{A}.ch-market']")
            _publish_from_a_thread(broker, (Topics().node(A, CHANNELS), channel_payload(A, "ch-market", True, time.time())))
            expect(card).to_have_class(re.compile(r"\btalking\b"))
            expect(lianhu.locator(".channel.talking")).to_have_count(0)
            topic, payload, _, _ = utterance_message(A, FIGHT, heard_ago=3)
            t_topic, t_payload = transcript_message(A, FIGHT, entry=2, heard_ago=3)
            _publish_from_a_thread(broker, (topic, payload), (t_topic, t_payload))
            expect(card).not_to_have_class(re.compile(r"\btalking\b"))  # his utterance is in: he has let go
            line = city.locator(f"#feed .line[data-channel='{A}.ch-market']")
            expect(line).to_contain_text("韩森寨公交站有人打架", timeout=15_000)
            expect(city.locator(f"[id='ch-{A}.ch-market'] .state")).to_have_text("1 次通话")
            incident = city.locator("#incidents .incident").first
            expect(incident).to_contain_text("韩森寨公交站", timeout=15_000)
            city.wait_for_timeout(500)
            screenshot(city, "central-console")
            # the station filter: C's wall has neither A's call nor A's incident
            city.select_option("#station-filter", C)
            expect(city.locator(f"[id='ch-{A}.ch-market']")).to_have_count(0)
            expect(city.locator(f"[id='ch-{C}.ch-market']")).to_be_visible()
            expect(line).to_be_hidden()
            expect(city.locator("#incidents .incident")).to_have_count(0)
            # C's operator was never sent any of it
            expect(lianhu.locator("#feed .line")).to_have_count(0)
            expect(lianhu.locator("#incidents .incident")).to_have_count(0)
            # the statistics of the operator's stations, from the console's link
            city.click("#stats-link")
            expect(city.locator("#station")).to_have_text("测试市局")
            expect(city.locator("#f-station option")).to_have_count(5)  # 全部 and the region's four stations
            expect(city.locator("#totals")).to_contain_text("1")
            city.wait_for_timeout(500)
            screenshot(city, "central-stats")
        assert not CSP_VIOLATIONS, "\n".join(CSP_VIOLATIONS)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        broker.stop()
    assert process.returncode == 0, err


def _publish_from_a_thread(broker: Mosquitto, *messages: tuple[str, bytes]) -> None:
    """As an edge publishes them, from a loop of its own (Playwright's runs in the test's thread)."""
    edge = threading.Thread(target=asyncio.run, args=(_publish(broker, *messages),))
    edge.start()
    edge.join(10)


async def _publish(broker: Mosquitto, *messages: tuple[str, bytes]) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="edge-a") as edge:
        for topic, payload in messages:
            await edge.publish(topic, payload, qos=1)


def _health(base: str) -> dict | None:
    try:
        return httpx.get(f"{base}/healthz").json()
    except httpx.TransportError:
        return None
