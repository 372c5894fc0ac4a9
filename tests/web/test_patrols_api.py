"""Patrols (巡更) against the real service (its own thread and port, real SQLite, a real mosquitto locked down with
the ACL `jingbao broker setup` makes, the guards' phones logged in as themselves): a guard's fixes over OwnTracks and
a code typed on his phone check points in, the point he skipped is raised as missed when its round's window has
passed (on the consoles' live feed and in GET /api/patrols), a guard who walked every point has none, and a restart
neither repeats a missed check-in nor loses one that fell due while it was down. The schedule is a few seconds long."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from bridge.db import connect
from tests.support.broker import JURISDICTION, Mosquitto, free_port
from tests.support.web import as_user
from tests.web.browser import REPO, LiveService, start_live

YESHI = {"guard-yeshi": ("guard", "g-yeshi")}  # the night market's guard, besides the test users
P1, P2, P3 = (34.2705, 108.9902), (34.2715, 108.9902), (34.2715, 108.9914)  # ~110 m apart, north of 花鸟市场
Q1, Q2 = (34.2650, 108.9800), (34.2660, 108.9800)
CODE = "HN-EAST-03"  # posted at P3
WINDOW_S = 6.0
LEAD_S = 6.0  # the first round starts this long after the config is written: the service is up by then


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path_factory.mktemp("patrols-broker"), jurisdiction=JURISDICTION)
    server.start()
    yield server
    server.stop()


def write_config(tmp: Path, broker: Mosquitto, starts: list[float]) -> Path:
    times = [datetime.fromtimestamp(s).strftime("%H:%M:%S") for s in starts]
    route = {"radius_m": 25, "starts": times, "window_min": WINDOW_S / 60}
    config = {
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp / "data"), "audio_format": "wav"},
        "broker": broker.service_config(),
        "asr": {"engine": "none"},
        "web": {"port": free_port()},
        "channels": [{"id": "ch-market", "name": "市场保安", "source": {"type": "web"}}],
        "dispatch": {"alerts": {"announce": False}, "patrols": {"routes": [
            route | {"id": "r-huaniao", "name": "花鸟市场夜巡", "patrollers": ["g-huaniao"], "points": [
                {"name": "南门", "lat": P1[0], "lon": P1[1]}, {"name": "北门", "lat": P2[0], "lon": P2[1]},
                {"name": "东侧仓库", "lat": P3[0], "lon": P3[1], "code": CODE}]},
            route | {"id": "r-yeshi", "name": "夜市巡更", "patrollers": ["g-yeshi"], "points": [
                {"name": "一号口", "lat": Q1[0], "lon": Q1[1]}, {"name": "二号口", "lat": Q2[0], "lon": Q2[1]}]},
        ]}},
    }  # fmt: skip
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path




class PatrolEvents:
    """The console's live feed (WS /api/events as an operator): every `patrol` event, collected by a thread."""

    def __init__(self, live: LiveService) -> None:
        self.received: list[dict[str, Any]] = []
        self._ws = ws_connect(live.url.replace("http", "ws") + "/api/events", additional_headers=as_user(live, "op"))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                event = json.loads(self._ws.recv())
                if event["topic"] == "patrol":
                    self.received.append(event["data"])

    def of(self, kind: str) -> list[tuple[str, str]]:
        return [(e["route_id"], e["point_name"]) for e in self.received if e["kind"] == kind]

    def close(self) -> None:
        self._ws.close()


def phone(broker: Mosquitto, rid: str) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{rid}-phone")
    client.username_pw_set(**broker.login(rid))
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def walk(client: paho.Client, rid: str, *where: tuple[float, float]) -> None:
    for lat, lon in where:
        fix = {"_type": "location", "lat": lat, "lon": lon, "tst": time.time(), "acc": 5}
        client.publish(f"owntracks/{rid}/phone", json.dumps(fix), qos=1).wait_for_publish(5)


def wait_until(at: float) -> None:
    time.sleep(max(0.0, at - time.time()))


def test_points_passed_or_scanned_are_checked_in_and_the_skipped_one_is_raised_once(
    tmp_path: Path, broker: Mosquitto
) -> None:
    first = int(time.time() + LEAD_S)
    second = first + 2 * int(WINDOW_S) + 2  # a round that passes while the service is down
    live = start_live(write_config(tmp_path, broker, [first, second]), YESHI)
    events = PatrolEvents(live)
    huaniao, yeshi = phone(broker, "g-huaniao"), phone(broker, "g-yeshi")
    walk(huaniao, "g-huaniao", P1)  # before the round: no check-in
    wait_until(first + 0.2)
    walk(huaniao, "g-huaniao", (P1[0] + 0.00004, P1[1]), (P2[0], P2[1] - 0.00066))  # 5 m from 南门; 61 m from 北门
    walk(yeshi, "g-yeshi", Q1, (Q2[0] - 0.0001, Q2[1]))  # 11 m from 二号口
    live.wait("the fixes' check-ins on the console", lambda: len(events.of("checkin")) == 3, timeout=5)
    guard = as_user(live, "guard-huaniao")
    mine = httpx.get(f"{live.url}/api/me/patrols", headers=guard)
    assert mine.status_code == 200 and CODE not in mine.text  # a code is as good as being there: never shown
    assert [p["has_code"] for p in mine.json()["routes"][0]["points"]] == [False, False, True]
    scanned = httpx.post(f"{live.url}/api/me/patrols/checkin", json={"code": f" {CODE} "}, headers=guard)
    assert scanned.status_code == 200, scanned.text
    assert [(c["point"], c["how"]) for c in scanned.json()["checkins"]] == [(0, "gps"), (2, "code")]
    assert httpx.post(f"{live.url}/api/me/patrols/checkin", json={"code": CODE}, headers=guard).status_code == 200  # again
    live.wait("the check-ins on the console", lambda: len(events.of("checkin")) == 4, timeout=5)
    assert sorted(events.of("checkin")) == [("r-huaniao", "东侧仓库"), ("r-huaniao", "南门"),
                                            ("r-yeshi", "一号口"), ("r-yeshi", "二号口")]  # fmt: skip

    live.wait("the missed check-in", lambda: events.of("missed"), timeout=WINDOW_S + 5)
    time.sleep(1.5)  # another look or two: nothing more
    assert events.of("missed") == [("r-huaniao", "北门")]  # only the point he skipped; 夜市巡更 was walked whole
    view = httpx.get(f"{live.url}/api/patrols", headers=as_user(live, "op")).json()
    assert [(m["route_id"], m["point_name"], m["round_start"]) for m in view["missed"]] == [("r-huaniao", "北门", first)]
    states = {r["id"]: [(x["start"], x["state"]) for x in r["rounds"]] for r in view["routes"]}
    assert states["r-huaniao"][-2:] == [(first, "missed"), (second, "upcoming")]
    assert states["r-yeshi"][-2:] == [(first, "done"), (second, "upcoming")]
    events.close()
    live.stop()

    wait_until(second + WINDOW_S + 0.5)  # the second round passed unwalked while the service was down
    # the same data, a new port (the old may linger)
    live = start_live(write_config(tmp_path, broker, [first, second]), YESHI)
    try:
        def missed() -> list[tuple]:
            with connect(live.config.storage.database) as db:
                return [tuple(r) for r in db.execute("SELECT route_id, round_start, point FROM patrol_missed ORDER BY id")]

        live.wait("the missed of the round it slept through", lambda: len(missed()) == 6, timeout=5)
        assert missed() == [("r-huaniao", first, 1), *((r, second, p) for r, n in (("r-huaniao", 3), ("r-yeshi", 2))
                                                       for p in range(n))]  # fmt: skip
        refused = httpx.post(f"{live.url}/api/me/patrols/checkin", json={"code": CODE}, headers=as_user(live, "guard-huaniao"))
        assert refused.status_code == 409 and "不在巡更时段" in refused.json()["detail"]  # no round open now
    finally:
        huaniao.loop_stop()
        yeshi.loop_stop()
        live.stop()


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[LiveService]:
    live = start_live(write_config(tmp_path_factory.mktemp("patrols-refusals"), broker, [time.time() - 60]), YESHI)
    yield live
    live.stop()


@pytest.mark.parametrize(
    ("user", "method", "path", "body", "status"),
    [
        (None, "GET", "/api/patrols", None, 401),
        ("guard-huaniao", "GET", "/api/patrols", None, 403),
        ("aud", "GET", "/api/patrols", None, 200),
        ("op", "GET", "/api/me/patrols", None, 403),
        ("op", "POST", "/api/me/patrols/checkin", {"code": CODE}, 403),
        ("guard-yeshi", "POST", "/api/me/patrols/checkin", {"code": CODE}, 404),  # another route's point
        ("guard-huaniao", "POST", "/api/me/patrols/checkin", {"code": "HN-EAST-04"}, 404),
        ("guard-huaniao", "POST", "/api/me/patrols/checkin", {"code": "<script>alert(1)</script>'; DROP TABLE x;--"}, 404),
        ("guard-huaniao", "POST", "/api/me/patrols/checkin", {"code": "码" * 201}, 422),
        ("guard-huaniao", "POST", "/api/me/patrols/checkin", {"code": ["HN-EAST-03"]}, 422),
        ("guard-huaniao", "POST", "/api/me/patrols/checkin", {}, 422),
    ],
)
def test_who_may_not_and_what_is_no_code_are_refused(
    refusals: LiveService, user: str | None, method: str, path: str, body: dict | None, status: int
) -> None:
    headers = as_user(refusals, user) if user else {}
    assert httpx.request(method, refusals.url + path, json=body, headers=headers).status_code == status
