"""The geofences' SQL (dispatch/geofence.py) on a real SQLite database (a box) and a real PostgreSQL (central): a guard's
exits from his post numbered by the database and closed when he is back, and the incidents a responder is sent to
found by his id in their JSON list of assignees, exactly. The whole path (phones' fixes over MQTT, the answer, the
console's feed) is tests/web/test_geofence_api.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bridge.db import Connection
from dispatch.config import GeofenceRules
from dispatch.gazetteer import load_jurisdiction
from dispatch.geofence import Geofences
from dispatch.incidents import Incident, IncidentStore, Status, new_incident_id
from dispatch.positions import Position
from dispatch.responders import ResponderBoard
from tests.support.broker import JURISDICTION

HUANIAO_POST = (34.2705, 108.9902)  # g-huaniao's post, 万寿路花鸟市场
AWAY = (34.2705 + 0.0045, 108.9902)  # some 500 m north of it
MEISHI = (34.2702, 108.9843)  # 美食街


class Fences:
    """Geofences on `conn` with what they raised and answered kept for the test."""

    def __init__(self, conn: Connection, **rules: float | None) -> None:
        self.events: list[dict[str, Any]] = []
        self.answers: list[tuple[str, str]] = []
        self.incidents = IncidentStore(conn)
        jurisdiction = load_jurisdiction(JURISDICTION)
        self.fences = Geofences(conn, GeofenceRules(**rules), jurisdiction, ResponderBoard(jurisdiction), self.incidents,
                                lambda rid, incident_id: self.answers.append((rid, incident_id)),
                                publish=lambda topic, data: self.events.append(data))  # fmt: skip
        self.ts = time.time()
        self.made = 0

    def fix(self, rid: str, where: tuple[float, float]) -> None:
        self.ts += 1
        self.fences.on_position(Position(rid, *where, self.ts, 5.0))

    def incident(self, status: Status, assigned: tuple[str, ...]) -> Incident:
        at = time.time()
        self.made += 1  # in the id: two made in one second may draw the same random part
        incident = Incident(id=f"{new_incident_id(at)}-{self.made}", type="fight", priority="high", status=status,
                            created_at=at, updated_at=at, place_id="meishijie", place_name="美食街", lat=MEISHI[0],
                            lon=MEISHI[1], text="美食街有人打架", channel="ch-market", assigned=assigned)  # fmt: skip
        return self.incidents.create(incident, actor="dispatcher")


def test_each_exit_from_the_post_is_numbered_and_closed_when_he_is_back(state_db: Connection) -> None:
    f = Fences(state_db, post_radius_m=300, scene_radius_m=None)
    f.fix("g-huaniao", HUANIAO_POST)
    f.fix("g-huaniao", AWAY)
    f.fix("g-huaniao", AWAY)  # still away: the same exit
    f.fix("g-huaniao", HUANIAO_POST)
    f.fix("g-huaniao", AWAY)
    assert [e["kind"] for e in f.events] == ["left_post", "returned_post", "left_post"]
    first, back, second = f.events
    assert first["id"] == back["id"] < second["id"]
    assert first["returned_at"] is None and back["returned_at"] == first["left_at"] + 2
    assert 450 < first["distance_m"] < 550 and (first["lat"], first["lon"]) == AWAY
    exits = f.fences.exits()
    assert [(e["id"], e["returned_at"] is None) for e in exits] == [(second["id"], True), (first["id"], False)]
    assert exits[1]["name"] == "万寿路花鸟市场保安"


def test_a_responder_is_answered_on_scene_only_for_the_incidents_he_is_sent_to(state_db: Connection) -> None:
    f = Fences(state_db, post_radius_m=None, scene_radius_m=50)
    sent = f.incident(Status.DISPATCHED, ("g-1", "o-2"))
    f.incident(Status.REPORTED, ("g-1",))  # not dispatched yet: nobody is on the way
    f.incident(Status.ACKNOWLEDGED, ("g-10",))  # another whose id begins like his
    for rid in ("g_1", "G-1", "g-"):  # a LIKE wildcard, SQLite's LIKE ignoring case, a part of an id: none is g-1
        f.fix(rid, MEISHI)
    assert f.answers == []
    f.fix("g-1", (MEISHI[0] + 0.001, MEISHI[1]))  # some 110 m off: not there yet
    f.fix("g-1", MEISHI)
    f.fix("g-1", MEISHI)  # there already: answered once
    f.fix("o-2", MEISHI)
    assert f.answers == [("g-1", sent.id), ("o-2", sent.id)]
    on_scene = [e for e in f.incidents.timeline(sent.id) if e.kind == "geofence"]
    assert [(e.actor, e.detail["status"]) for e in on_scene] == [("g-1", "on_scene"), ("o-2", "on_scene")]


@pytest.mark.parametrize("rid", ["g-1", "保安-1", "g!_%\\1"])  # JSON writes the second with \u escapes, the third's \ as \\
def test_a_responders_id_is_found_as_the_incident_store_writes_it(state_db: Connection, rid: str) -> None:
    f = Fences(state_db, post_radius_m=None, scene_radius_m=50)
    sent = f.incident(Status.ON_SCENE, (rid,))  # one is there: others may still arrive
    f.fix(rid, MEISHI)
    assert f.answers == [(rid, sent.id)]
