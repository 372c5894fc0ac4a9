"""dispatch/statistics.py on a known dataset in the incident store's own tables, on a box's SQLite database and on
central's PostgreSQL: counts by day, week, type, place, grid and station; percentiles and histograms worked out by hand;
filters; participation per responder. And dispatch/demo_history.py: deterministic, marked, closed, idempotent, demo
jurisdiction only."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from bridge.archive import MIGRATIONS as ARCHIVE_MIGRATIONS
from bridge.db import Connection, connect, migrate
from dispatch import demo_history
from dispatch.gazetteer import Jurisdiction
from dispatch.incidents import Incident, IncidentStore, Status
from dispatch.statistics import HISTOGRAM_EDGES_S, Filters, Statistics, distribution

REPO = Path(__file__).resolve().parents[2]
D1, D2, D3 = date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 9)  # a Monday, the Tuesday after, the next Monday


def at(day: date, hour: int) -> float:
    return datetime(day.year, day.month, day.day, hour).timestamp()  # local time, as the statistics count days


class Seeder:
    """Incidents through the real store, their timelines as the dispatcher writes them (with chosen times)."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.store = conn, IncidentStore(conn)

    def incident(self, id_: str, type_: str, place: str | None, when: float, status: Status = Status.DISPATCHED) -> str:
        self.store.create(Incident(id_, type_, "high", status, when, when, place, place, channel="ch-market"),
                          actor="dispatcher")  # fmt: skip
        return id_

    def entry(self, id_: str, ts: float, actor: str, kind: str, **detail: object) -> None:
        with self.conn:
            self.conn.execute("INSERT INTO incident_timeline (incident_id, ts, actor, kind, detail) VALUES (?, ?, ?, ?, ?)",
                              (id_, ts, actor, kind, json.dumps(detail, ensure_ascii=False)))  # fmt: skip

    def alerted(self, id_: str, ts: float, *responders: str) -> None:
        self.entry(id_, ts, "dispatcher", "alerted", responders=list(responders), sent=[{"id": r} for r in responders])


class TrafficElsewhere(Statistics):
    """The state tables on one connection, the radio traffic counted on another (central reads it elsewhere too:
    bridge/web/central_stats.py), here a SQLite archive's."""

    def __init__(self, conn: Connection, jurisdiction: Jurisdiction, archive: Statistics) -> None:
        super().__init__(conn, jurisdiction)
        self._archive = archive

    def traffic(self, since: float, until: float) -> dict[str, list[int]]:
        return self._archive.traffic(since, until)


@pytest.fixture
def stats(state_db: Connection, tmp_path: Path, jurisdiction: Jurisdiction) -> Iterator[Statistics]:
    # a box's archive is in its one SQLite database; the archive's query is SQLite's (Statistics.traffic)
    archive = state_db if isinstance(state_db, sqlite3.Connection) else connect(tmp_path / "archive.sqlite")
    archive.execute("CREATE TABLE utterances (channel TEXT, start_ms INTEGER)")  # the archive's columns the stats read
    s = Seeder(state_db)
    # A: fight at 高桥大市场 (永定社区, 高桥警务点): every stage
    a = s.incident("A", "fight", "gaoqiao-market", t := at(D1, 10), Status.RESOLVED)
    s.alerted(a, t + 2, "g-gaoqiao", "p-xu-zhen")
    s.entry(a, t + 12, "g-gaoqiao", "ack", status="ack")  # alerted -> acked 10 s
    s.entry(a, t + 300, "g-gaoqiao", "ack", status="on_scene")
    s.entry(a, t + 300, "g-gaoqiao", "status", **{"from": "acknowledged", "to": "on_scene"})
    s.entry(a, t + 1400, "operator", "note", text='已处置, "双方" 离开')
    s.entry(a, t + 1500, "operator", "status", **{"from": "on_scene", "to": "resolved"})
    # B: fight at 皮具饰品城, within 高桥大市场; the chief declines
    b = s.incident("B", "fight", "piju-city", t := at(D1, 20))
    s.alerted(b, t + 1, "g-gaoqiao", "p-xu-zhen")
    s.entry(b, t + 21, "g-gaoqiao", "ack", status="ack")  # 20 s
    s.entry(b, t + 30, "p-xu-zhen", "ack", status="declined")
    # C: fight at 美食街 (永定社区); the chief answers, escalated to him
    c = s.incident("C", "fight", "meishijie", t := at(D2, 9))
    s.entry(c, t + 3, "dispatcher", "escalated", responders=["p-xu-zhen"])
    s.entry(c, t + 33, "p-xu-zhen", "ack", status="ack")  # 30 s
    # D: theft at 西光机械厂 (西光社区, 西光警务室), dispatched by an operator
    d = s.incident("D", "theft", "xiguang-jixie", t := at(D2, 14))
    s.entry(d, t + 1, "operator", "reassigned", **{"from": [], "to": ["g-xgjx"]})
    s.entry(d, t + 41, "g-xgjx", "ack", status="ack")  # 40 s
    # E: noise at 长乐公园 (长乐东社区: no police post, so the station itself), a false alarm
    e = s.incident("E", "noise", "changle-gongyuan", t := at(D3, 22), Status.CLOSED_FALSE_ALARM)
    s.alerted(e, t + 2, "w-changle")
    s.entry(e, t + 52, "w-changle", "ack", status="ack")  # 50 s
    # never reports: dismissed, retracted; and one outside the period
    s.incident("F", "fight", "meishijie", at(D1, 11), Status.DISMISSED)
    s.incident("G", "fight", "meishijie", at(D2, 11), Status.RETRACTED)
    s.incident("H", "fight", "meishijie", at(D3 + timedelta(days=1), 1))
    # radio traffic: 3 utterances on ch-market at 10:xx, 1 on ch-police at 20:xx, one the day after the period
    archive.executemany("INSERT INTO utterances VALUES (?, ?)", [("ch-market", int((at(D1, 10) + k) * 1000)) for k in range(3)]
                        + [("ch-police", int(at(D2, 20) * 1000)), ("ch-police", int(at(D3 + timedelta(days=1), 5) * 1000))])
    archive.commit()
    if archive is state_db:
        yield Statistics(state_db, jurisdiction)
    else:
        yield TrafficElsewhere(state_db, jurisdiction, Statistics(archive, jurisdiction))
        archive.close()


def period(**filters: str) -> Filters:
    return Filters(at(D1, 0), at(D3 + timedelta(days=1), 0), **filters)


def test_counts_by_day_and_type_leave_out_what_was_never_a_report(stats: Statistics) -> None:
    s = stats.summary(period())
    assert s["totals"] == {"incidents": 5, "false_alarms": 1, "resolved": 1, "open": 3, "on_scene_reached": 1}
    by = s["by_period"]
    assert by["periods"][0] == "2026-03-02" and by["periods"][-1] == "2026-03-09" and len(by["periods"]) == 8
    assert by["types"]["fight"] == [2, 1, 0, 0, 0, 0, 0, 0]
    assert by["types"]["theft"] == [0, 1, 0, 0, 0, 0, 0, 0]
    assert by["types"]["noise"] == [0, 0, 0, 0, 0, 0, 0, 1]
    assert [(r["id"], r["count"]) for r in s["by_type"]] == [("fight", 3), ("noise", 1), ("theft", 1)]


def test_counts_by_week_start_on_monday(stats: Statistics) -> None:
    by = stats.summary(period(), "week")["by_period"]
    assert by["periods"] == ["2026-03-02", "2026-03-09"]
    assert by["types"] == {"fight": [3, 0], "noise": [0, 1], "theft": [1, 0]}
    assert by["grids"] == {"永定社区": [3, 0], "西光社区": [1, 0], "长乐东社区": [0, 1]}
    assert by["stations"] == {"高桥警务点": [3, 0], "西光警务室": [1, 0], "公园北路派出所": [0, 1]}


def test_place_grid_and_station(stats: Statistics) -> None:
    s = stats.summary(period())
    assert {r["name"]: r["count"] for r in s["by_grid"]} == {"永定社区": 3, "西光社区": 1, "长乐东社区": 1}
    assert {r["id"]: r["count"] for r in s["by_station"]} == {"高桥警务点": 3, "西光警务室": 1, "公园北路派出所": 1}
    assert s["by_place"][0]["count"] == 1 and len(s["by_place"]) == 5


def test_response_time_percentiles_worked_out_by_hand(stats: Statistics) -> None:
    response = stats.summary(period())["response"]
    ack = response["alerted-acked"]  # 10, 20, 30, 40, 50 s
    assert ack["n"] == 5 and ack["p50"] == 30.0 and ack["mean"] == 30.0
    assert ack["p90"] == 46.0  # rank 0.9 * 4 = 3.6: 40 + 0.6 * (50 - 40)
    assert ack["histogram"]["counts"][:3] == [0, 2, 3]  # [0, 10): none; [10, 30): 10, 20; [30, 60): 30, 40, 50
    assert response["reported-alerted"]["n"] == 5 and response["reported-alerted"]["p50"] == 2.0  # 2, 1, 3, 1, 2
    assert response["reported-on_scene"] | {"histogram": None} == {
        "n": 1, "p50": 300.0, "p90": 300.0, "mean": 300.0, "histogram": None, "from": "reported", "to": "on_scene"}
    assert response["on_scene-resolved"]["p50"] == 1200.0
    assert response["acked-on_scene"]["p50"] == 288.0


def test_distribution_bins_and_empty() -> None:
    d = distribution([0.0, 9.99, 10.0, 7200.0, 99999.0, None])
    assert d["n"] == 5 and d["histogram"]["counts"] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert len(d["histogram"]["edges_s"]) == len(HISTOGRAM_EDGES_S)
    assert distribution([None]) | {"histogram": None} == {"n": 0, "p50": None, "p90": None, "mean": None, "histogram": None}


@pytest.mark.parametrize(("filters", "ids"), [
    ({"type": "theft"}, {"D"}),
    ({"place": "gaoqiao-market"}, {"A", "B"}),  # 皮具饰品城 is within it
    ({"place": "piju-city"}, {"B"}),
    ({"grid": "yongding-sq"}, {"A", "B", "C"}),
    ({"station": "公园北路派出所"}, {"E"}),
    ({"grid": "yongding-sq", "type": "theft"}, set()),
])  # fmt: skip
def test_filters(stats: Statistics, filters: dict, ids: set[str]) -> None:
    assert {r.id for r in stats.incidents(period(**filters))} == ids
    assert stats.summary(period(**filters))["totals"]["incidents"] == len(ids)


def test_participation_per_responder(stats: Statistics) -> None:
    units = {u["id"]: u for u in stats.summary(period())["units"]}
    assert units["g-gaoqiao"] | {"name": None} == {
        "id": "g-gaoqiao", "name": None, "unit": "高桥大市场", "role": "guard", "alerted": 2, "answered": 2,
        "on_scene": 1, "declined": 0, "unanswered": 0, "answer_p50_s": 15.0}  # fmt: skip
    chief = units["p-xu-zhen"]
    assert (chief["alerted"], chief["answered"], chief["declined"], chief["unanswered"]) == (3, 1, 1, 1)
    assert units["g-xgjx"]["alerted"] == 1 and units["g-xgjx"]["answer_p50_s"] == 40.0  # an operator's dispatch
    assert units["g-jiaju"]["alerted"] == 0  # every responder is listed, those never alerted too
    assert list(units)[:2] == ["p-xu-zhen", "g-gaoqiao"]  # the busiest first


def test_channels_and_hours_count_utterances_in_the_period(stats: Statistics) -> None:
    s = stats.summary(period())
    channels = {c["id"]: (c["utterances"], c["incidents"]) for c in s["channels"]}
    assert channels["ch-market"] == (3, 5) and channels["ch-police"] == (1, 0)
    assert s["channels"][0]["id"] == "ch-market"
    assert s["hours"]["utterances"][10] == 3 and s["hours"]["utterances"][20] == 1 and sum(s["hours"]["utterances"]) == 4
    assert s["hours"]["incidents"][10] == 1 and s["hours"]["incidents"][22] == 1


def test_incident_records_carry_notes_and_stage_times(stats: Statistics) -> None:
    a = next(r for r in stats.incidents(period()) if r.id == "A")
    assert a.notes == ['已处置, "双方" 离开']
    assert list(a.times) == ["reported", "alerted", "acked", "on_scene", "resolved"]
    assert a.interval("reported", "resolved") == 1500


# --- the demo's history -------------------------------------------------------------------------------------------


def test_demo_history_is_deterministic_marked_closed_and_written_once(tmp_path: Path, jurisdiction: Jurisdiction) -> None:
    today = date(2026, 3, 10)
    one, two = connect(tmp_path / "one.sqlite"), connect(tmp_path / "two.sqlite")
    migrate(one, "archive", ARCHIVE_MIGRATIONS)  # the radio traffic's table, which the history leaves empty
    written = demo_history.seed(one, jurisdiction, 3, today)
    assert 3 * 7 <= written <= 3 * 15
    assert demo_history.seed(two, jurisdiction, 3, today) == written
    rows = [tuple(r) for r in one.execute("SELECT id, type, place_id, created_at, status FROM incidents ORDER BY id")]
    assert rows == [tuple(r) for r in two.execute("SELECT id, type, place_id, created_at, status FROM incidents ORDER BY id")]
    assert demo_history.seed(one, jurisdiction, 3, today) == 0  # those days have theirs
    assert demo_history.seed(one, jurisdiction, 3, today + timedelta(days=1)) > 0  # the new day only
    incidents = IncidentStore(one).list(limit=1000)
    assert all(i.id.startswith("DEMO-") and i.text.endswith(demo_history.MARK) for i in incidents)
    assert all(i.status in (Status.RESOLVED, Status.FOLLOWED_UP, Status.CLOSED_FALSE_ALARM) for i in incidents)
    days = {d for (d,) in one.execute("SELECT substr(id, 6, 8) FROM incidents")}
    assert days == {"20260307", "20260308", "20260309", "20260310"}
    stats = Statistics(one, jurisdiction).summary(Filters(at(date(2026, 3, 7), 0), at(today, 0)))
    assert stats["totals"]["incidents"] == written
    assert all(stats["response"][k]["n"] > 0 for k in stats["response"])  # every stage has figures to draw
    assert sum(u["alerted"] for u in stats["units"]) > written


def test_demo_history_refuses_any_jurisdiction_but_the_demos(tmp_path: Path) -> None:
    other = tmp_path / "jurisdiction.yaml"
    other.write_text((REPO / "config" / "jurisdiction.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    config = tmp_path / "config.yaml"
    channel = {"id": "ch", "name": "ch", "source": {"type": "web"}}
    config.write_text(yaml.safe_dump({"jurisdiction": str(other), "storage": {"data_dir": str(tmp_path / "data")},
                                      "channels": [channel]}), encoding="utf-8")  # fmt: skip
    assert demo_history.main(["--config", str(config)]) == 2
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").glob("*.sqlite*"))
