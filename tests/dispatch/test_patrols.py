"""Patrol schedules and routes as configured (dispatch/patrols.py, dispatch/config.py): the rounds of a day, a round
running past midnight, and the config refusing what cannot be a route; check-ins and missed check-ins kept once each,
on a real SQLite database (a box) and a real PostgreSQL (central)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import pytest
from pydantic import ValidationError

from bridge.db import Connection
from dispatch.config import PatrolRoute, PatrolRules
from dispatch.gazetteer import load_jurisdiction
from dispatch.patrols import PatrolDesk, PatrolError, rounds
from dispatch.positions import Position
from tests.support.broker import JURISDICTION

POINT = {"name": "东门", "lat": 34.27, "lon": 108.99}


def route(**changes: object) -> PatrolRoute:
    return PatrolRoute(**({"id": "r", "name": "夜巡", "patrollers": ["g-huaniao"], "points": [POINT],
                           "starts": ["08:00", "23:50"], "window_min": 30} | changes))  # fmt: skip


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()  # local time, as the schedule is


def test_a_day_has_a_round_per_start_and_one_runs_past_midnight() -> None:
    found = rounds(route(), at("2026-12-05T00:00"), at("2026-12-05T23:59"))
    assert [(r.start, r.end) for r in found] == [
        (at("2026-12-04T23:50"), at("2026-12-05T00:20")),  # yesterday's, still open after midnight
        (at("2026-12-05T08:00"), at("2026-12-05T08:30")),
        (at("2026-12-05T23:50"), at("2026-12-06T00:20")),
    ]
    assert [r.start for r in rounds(route(), at("2026-12-05T08:10"), at("2026-12-05T08:10"))] == [at("2026-12-05T08:00")]
    assert rounds(route(), at("2026-12-05T09:00"), at("2026-12-05T09:00")) == []
    assert rounds(route(starts=["08:00:30"]), at("2026-12-05T08:00:31"), at("2026-12-05T08:00:31"))[0].start == at(
        "2026-12-05T08:00:30")


@pytest.mark.parametrize(
    "changes",
    [{"starts": ["8:00"]}, {"starts": ["24:00"]}, {"starts": []}, {"points": []}, {"patrollers": []},
     {"points": [POINT | {"code": "AB12"}, POINT | {"code": "AB12"}]}, {"points": [POINT | {"code": "a b"}]},
     {"id": "r/../x"}, {"window_min": 0}],
)  # fmt: skip
def test_what_cannot_be_a_route_is_refused(changes: dict) -> None:
    with pytest.raises(ValidationError):
        route(**changes)


def test_a_patroller_not_in_the_jurisdiction_is_named() -> None:
    rules = PatrolRules(routes=[route(patrollers=["g-huaniao", "g-nobody"])])
    with pytest.raises(ValueError, match="patrol route r: patroller 'g-nobody'"):
        PatrolDesk(sqlite3.connect(":memory:"), rules, load_jurisdiction(JURISDICTION))


def test_missed_check_ins_are_raised_once_and_never_for_rounds_before_patrols_were_watched(state_db: Connection) -> None:
    now = [at("2026-12-05T08:40")]  # the service first starts after the 07:00 round, during the 08:00 one
    events: list[dict] = []
    rules = PatrolRules(routes=[route(starts=["07:00", "08:00", "09:00"], window_min=50)])
    desk = PatrolDesk(state_db, rules, load_jurisdiction(JURISDICTION),
                      publish=lambda topic, data: events.append(data), clock=lambda: now[0])  # fmt: skip
    now[0] = at("2026-12-05T09:51")
    raised = [(m["point_name"], m["round_start"]) for m in desk.raise_missed()]
    assert raised == [("东门", at("2026-12-05T08:00")), ("东门", at("2026-12-05T09:00"))]
    assert desk.raise_missed() == [] and len(events) == 2
    again = PatrolDesk(state_db, rules, load_jurisdiction(JURISDICTION), clock=lambda: now[0])  # the state a restart finds
    assert again.raise_missed() == []  # a restart: the first watch's date is kept, 08:00 and 09:00 were raised already
    assert [m["round_start"] for m in again.view()["missed"]] == [at("2026-12-05T09:00"), at("2026-12-05T08:00")]


def test_the_first_check_in_of_a_point_stands(state_db: Connection) -> None:
    now = [at("2026-12-05T08:05")]
    events: list[dict] = []
    points = [POINT, {"name": "西门", "lat": 34.28, "lon": 108.98, "code": "WEST01"}]
    rules = PatrolRules(routes=[route(points=points, starts=["08:00"], window_min=30)])
    desk = PatrolDesk(state_db, rules, load_jurisdiction(JURISDICTION),
                      publish=lambda topic, data: events.append(data), clock=lambda: now[0])  # fmt: skip
    desk.on_position(Position("g-huaniao", POINT["lat"], POINT["lon"], at("2026-12-05T08:03")))
    desk.on_position(Position("g-huaniao", POINT["lat"], POINT["lon"], at("2026-12-05T08:04")))  # again: nothing new
    rnd = desk.check_in_code("g-huaniao", "WEST01")
    assert desk.check_in_code("g-huaniao", "WEST01") == rnd
    assert [(c["point"], c["ts"], c["how"]) for c in rnd["checkins"]] == [(0, at("2026-12-05T08:03"), "gps"), (1, now[0], "code")]
    assert [(e["kind"], e["point"]) for e in events] == [("checkin", 0), ("checkin", 1)]
    now[0] = at("2026-12-05T08:31")
    walked = rounds(rules.routes[0], at("2026-12-05T08:05"), at("2026-12-05T08:05"))[0]
    assert desk.raise_missed() == [] and desk.round_view(walked, now[0])["state"] == "done"
    with pytest.raises(PatrolError) as refused:
        desk.check_in_code("g-huaniao", "WEST01")  # the round is over
    assert refused.value.status == 409
