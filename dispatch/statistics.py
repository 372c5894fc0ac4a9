"""Statistics of a station's incidents, responses and radio traffic over a period (警保联动 reports, issue 14 §5).

Read from the tables the service writes, nothing kept of its own: `incidents` and `incident_timeline` (when each stage
of an incident happened, who was alerted and who answered) and the archive's `utterances` (radio traffic per channel
and hour). The jurisdiction says which grid (网格) and which police post or station answers for a place, and which
unit a responder belongs to.

Counted: every incident that was a report. A 待确认 transmission an operator dismissed and a provisional alert the
final transcript retracted were never reports and are left out; a false alarm was reported and is counted (and
counted apart). Days, weeks and hours are the server's local time.

The stages of an incident, each from its timeline (the first time it happened):

    reported   the incident was raised (its created_at: the dispatcher read the report)
    alerted    the first alert went out (alerted, escalated, or an operator's dispatch)
    acked      the first responder answered that he is coming (ack, or on_scene straight away)
    on_scene   the first responder is on scene (his on_scene answer, or an operator setting the status)
    resolved   the incident was set resolved

A stage skipped (an operator setting on_scene without any ack) leaves its intervals out; nothing is guessed.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np

from bridge.db import Connection, Row
from dispatch.gazetteer import Jurisdiction, Place, Responder
from dispatch.incidents import Status

STAGES = ("reported", "alerted", "acked", "on_scene", "resolved")
# the intervals shown as distributions: each stage to the next, and the two a station is judged by
INTERVALS = (("reported", "alerted"), ("alerted", "acked"), ("acked", "on_scene"), ("on_scene", "resolved"),
             ("reported", "on_scene"), ("reported", "resolved"))  # fmt: skip
# histogram bins in seconds; the last bin is everything from its edge up
HISTOGRAM_EDGES_S = (0, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
NOT_REPORTS = frozenset({Status.DISMISSED, Status.RETRACTED})
# timeline entries that send an incident to responders, and where they list them
SENT_KEY = {"alerted": "responders", "escalated": "responders", "reassigned": "to"}
ANSWERS = ("ack", "on_scene")  # an answer saying the responder is coming (a decline is not one)
UNKNOWN = ""  # the key of incidents without a place (and so without a grid)
Period = Literal["day", "week"]


@dataclass(frozen=True, slots=True)
class Filters:
    """Incidents reported in [since, until) (epoch seconds), of a type, at a place (or within it), in a grid, under a
    police post or station; None: any."""

    since: float
    until: float
    type: str | None = None
    place: str | None = None
    grid: str | None = None
    station: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class IncidentRecord:
    """One incident as the statistics read it: where, what, and when each stage happened."""

    id: str
    type: str
    priority: str
    status: str
    created_at: float
    place_id: str | None
    place_name: str | None
    grid: str | None
    station: str
    channel: str
    text: str
    times: dict[str, float] = field(default_factory=dict)  # stage -> when it first happened
    alerted: dict[str, float] = field(default_factory=dict)  # responder -> when he was first alerted
    answers: dict[str, dict[str, float]] = field(default_factory=dict)  # responder -> {answer: when he first gave it}
    notes: list[str] = field(default_factory=list)

    def interval(self, start: str, end: str) -> float | None:
        a, b = self.times.get(start), self.times.get(end)
        return b - a if a is not None and b is not None and b >= a else None


class Statistics:
    """Reads one database; `jurisdiction` maps places to grids and stations and names responders. The central tier's
    (bridge/web/central_stats.py) counts a region's stations: it narrows what the hooks below say (who answers, which
    stations, places, channels and responders there are) and reads the traffic elsewhere."""

    def __init__(self, conn: Connection, jurisdiction: Jurisdiction) -> None:
        self._conn = conn
        self._j = jurisdiction
        posts = [p for p in jurisdiction.places if p.kind == "police_post" and p.grid]
        self._post_of_grid = {p.grid: p.name for p in reversed(posts)}  # the first post listed for a grid

    # --- what answers for a place ---------------------------------------------------------------------------------

    def grid_of(self, place_id: str | None) -> str | None:
        try:
            return self._j.grid_of(place_id) if place_id else None
        except KeyError:  # a place since removed from the jurisdiction
            return None

    def answering(self, grid: str | None, channel: str) -> str:
        """Who an incident counts under as its station: the police post answering for its grid (警务点/警务室), else
        the station itself (派出所). `channel` (its report's) is what the central tier goes by."""
        return self._post_of_grid.get(grid, self._j.station) if grid else self._j.station

    def stations(self) -> list[str]:
        return list(dict.fromkeys([self._j.station, *self._post_of_grid.values()]))

    def heading(self) -> str:
        """Whose statistics these are, for the page's and the monthly report's title."""
        return self._j.station

    def responders(self) -> list[Responder]:
        """Whose participation is counted."""
        return list(self._j.responders)

    # --- incidents ------------------------------------------------------------------------------------------------

    def incidents(self, filters: Filters) -> list[IncidentRecord]:
        """The reports in the period that pass the filters, oldest first, with their stage times."""
        rows = self._conn.execute(
            "SELECT * FROM incidents WHERE created_at >= ? AND created_at < ? ORDER BY created_at, id",
            (filters.since, filters.until),
        ).fetchall()
        records = {}
        for row in rows:
            if row["status"] in NOT_REPORTS:
                continue
            record = self._record(row)
            if self._passes(record, filters):
                records[record.id] = record
        self._read_timelines(records)
        return list(records.values())

    def _record(self, row: Row) -> IncidentRecord:
        grid = self.grid_of(row["place_id"])
        return IncidentRecord(
            id=row["id"], type=row["type"], priority=row["priority"], status=row["status"],
            created_at=row["created_at"], place_id=row["place_id"], place_name=row["place_name"], grid=grid,
            station=self.answering(grid, row["channel"]), channel=row["channel"], text=row["text"],
            times={"reported": row["created_at"]},
        )  # fmt: skip

    def _passes(self, r: IncidentRecord, f: Filters) -> bool:
        if f.type is not None and r.type != f.type:
            return False
        if f.place is not None and f.place not in self._place_and_containers(r.place_id):
            return False
        return (f.grid is None or r.grid == f.grid) and (f.station is None or r.station == f.station)

    def _place_and_containers(self, place_id: str | None) -> list[str]:
        if place_id is None:
            return []
        try:
            return [place_id, *self._j.ancestors(place_id)]
        except KeyError:
            return [place_id]

    def _read_timelines(self, records: dict[str, IncidentRecord]) -> None:
        if not records:
            return
        # the ids in a temporary table, the connection's own on both engines: no limit on how many (as parameters, a
        # year of a city's incidents at central could pass a statement's limit)
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS stats_ids (id TEXT PRIMARY KEY)")
        self._conn.execute("DELETE FROM stats_ids")
        self._conn.executemany("INSERT INTO stats_ids VALUES (?)", [(i,) for i in records])
        rows = self._conn.execute(
            "SELECT incident_id, ts, actor, kind, detail FROM incident_timeline"
            " WHERE incident_id IN (SELECT id FROM stats_ids) ORDER BY seq"
        )
        for row in rows:
            _apply(records[row["incident_id"]], row["ts"], row["actor"], row["kind"], json.loads(row["detail"]))
        self._conn.execute("DELETE FROM stats_ids")

    # --- radio traffic --------------------------------------------------------------------------------------------

    def traffic(self, since: float, until: float) -> dict[str, list[int]]:
        """Utterances started per channel in each hour of the day (local time, 0-23) within [since, until).

        SQLite only, and left so: it reads a box's archive (`utterances`, in the box's own SQLite database, with
        SQLite's strftime for the local hour). Central's statistics never run it: they count the stations' traffic
        in PostgreSQL's node_utterances instead (bridge/web/central_stats.py overrides this method)."""
        rows = self._conn.execute(
            "SELECT channel, CAST(strftime('%H', start_ms / 1000, 'unixepoch', 'localtime') AS INTEGER) AS hour,"
            " count(*) AS n FROM utterances WHERE start_ms >= ? AND start_ms < ? GROUP BY channel, hour",
            (round(since * 1000), round(until * 1000)),
        )
        out: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
        for row in rows:
            out[row["channel"]][row["hour"]] = row["n"]
        return dict(out)

    # --- the whole report -----------------------------------------------------------------------------------------

    def summary(self, filters: Filters, period: Period = "day") -> dict[str, Any]:
        """Everything the statistics page and the monthly report show, as JSON-ready data. `by_period` splits the
    counts per day or week by type (keyed by type), grid and station (keyed by name)."""
        records = self.incidents(filters)
        traffic = self.traffic(filters.since, filters.until)
        grid_name = self._namer([])
        return {
            "since": filters.since,
            "until": filters.until,
            "period": period,
            "filters": filters.to_dict(),
            "totals": _totals(records),
            "by_period": _by_period(records, filters, period, {
                "types": lambda r: r.type, "grids": lambda r: grid_name(r.grid or UNKNOWN), "stations": lambda r: r.station,
            }),
            "by_type": _ranked(Counter(r.type for r in records), lambda k: k),
            "by_place": _ranked(Counter(r.place_id or UNKNOWN for r in records), self._namer(records)),
            "by_grid": _ranked(Counter(r.grid or UNKNOWN for r in records), grid_name),
            "by_station": _ranked(Counter(r.station for r in records), lambda k: k),
            "response": {f"{a}-{b}": distribution([r.interval(a, b) for r in records]) | {"from": a, "to": b}
                         for a, b in INTERVALS},
            "channels": self._channels(records, traffic),
            "hours": {"utterances": [sum(h[i] for h in traffic.values()) for i in range(24)],
                      "incidents": _hours(records)},
            "units": self.participation(records),
        }

    def participation(self, records: list[IncidentRecord]) -> list[dict[str, Any]]:
        """Per responder (警保联动考核): incidents he was alerted to, answered (coming or on scene), reached on scene,
        declined, left unanswered, and how soon he answered (p50 seconds); every responder of the jurisdiction, the
        busiest first."""
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        delays: dict[str, list[float]] = defaultdict(list)
        for r in records:
            for rid, at in r.alerted.items():
                given = r.answers.get(rid, {})
                coming = [ts for answer, ts in given.items() if answer in ANSWERS]
                outcome = "answered" if coming else "declined" if "declined" in given else "unanswered"
                counts[rid].update(["alerted", outcome] + (["on_scene"] if "on_scene" in given else []))
                if coming:
                    delays[rid].append(min(coming) - at)
        rows = [{"id": who.id, "name": who.name, "unit": who.unit, "role": str(who.role),
                 **{k: counts[who.id][k] for k in ("alerted", "answered", "on_scene", "declined", "unanswered")},
                 "answer_p50_s": _percentile(delays[who.id], 50)} for who in self.responders()]  # fmt: skip
        return sorted(rows, key=lambda u: (-u["alerted"], -u["answered"], u["id"]))

    def options(self) -> dict[str, Any]:
        """What the filters can be set to: places, grids (communities) and stations of the jurisdiction."""
        places = self.places()
        return {
            "heading": self.heading(),
            "places": [{"id": p.id, "name": p.name} for p in places],
            "grids": [{"id": p.id, "name": p.name} for p in places if p.kind == "community"],
            "stations": self.stations(),
        }

    def places(self) -> list[Place]:
        """The places the filters offer."""
        return list(self._j.places)

    def _namer(self, records: list[IncidentRecord]) -> Callable[[str], str]:
        """A place's name: the jurisdiction's, else (a place since removed) the name its incidents were given."""
        given = {r.place_id: r.place_name for r in records if r.place_id and r.place_name}

        def name(place_id: str) -> str:
            try:
                return self._j.place(place_id).name if place_id else "地点不明"
            except KeyError:
                return given.get(place_id, place_id)

        return name

    def channels(self) -> dict[str, str]:
        """The channels listed even when silent, id -> name."""
        return {c.id: c.name for c in self._j.channels}

    def _channels(self, records: list[IncidentRecord], traffic: dict[str, list[int]]) -> list[dict[str, Any]]:
        names = self.channels()
        reports = Counter(r.channel for r in records if r.channel)
        ids = dict.fromkeys([*names, *traffic, *reports])
        rows = [{"id": c, "name": names.get(c, c), "utterances": sum(traffic.get(c, ())), "incidents": reports[c]}
                for c in ids]  # fmt: skip
        return sorted(rows, key=lambda c: (-c["utterances"], -c["incidents"], c["id"]))


def _apply(r: IncidentRecord, ts: float, actor: str, kind: str, detail: dict[str, Any]) -> None:
    """One timeline entry's part in the record: a stage reached, a responder alerted or answering, a note."""
    sent = detail.get(SENT_KEY[kind], []) if kind in SENT_KEY else []
    for rid in sent:
        r.alerted.setdefault(rid, ts)
    if sent:
        r.times.setdefault("alerted", ts)
    if kind == "ack":
        answer = detail.get("status", "ack")
        r.answers.setdefault(actor, {}).setdefault(answer, ts)
        if answer in ANSWERS:
            r.times.setdefault("acked", ts)
        if answer == "on_scene":
            r.times.setdefault("on_scene", ts)
    elif kind == "status" and detail.get("to") in ("on_scene", "resolved"):
        r.times.setdefault(detail["to"], ts)
    elif kind == "note":
        r.notes.append(str(detail.get("text", "")))


def distribution(values: list[float | None]) -> dict[str, Any]:
    """n, p50, p90 and mean (seconds; linear interpolation between ranks, numpy's default) and a histogram over
    HISTOGRAM_EDGES_S of the values that are not None."""
    xs = [v for v in values if v is not None]
    counts = [0] * len(HISTOGRAM_EDGES_S)
    for x in xs:
        counts[int(np.searchsorted(HISTOGRAM_EDGES_S, x, side="right")) - 1] += 1
    return {"n": len(xs), "p50": _percentile(xs, 50), "p90": _percentile(xs, 90),
            "mean": round(float(np.mean(xs)), 1) if xs else None,
            "histogram": {"edges_s": list(HISTOGRAM_EDGES_S), "counts": counts}}  # fmt: skip


def _percentile(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None


def _totals(records: list[IncidentRecord]) -> dict[str, int]:
    status = Counter(r.status for r in records)
    closed = status[Status.RESOLVED] + status[Status.FOLLOWED_UP]
    return {"incidents": len(records), "false_alarms": status[Status.CLOSED_FALSE_ALARM], "resolved": closed,
            "open": len(records) - closed - status[Status.CLOSED_FALSE_ALARM],
            "on_scene_reached": sum("on_scene" in r.times for r in records)}  # fmt: skip


def period_start(day: date, period: Period) -> date:
    return day - timedelta(days=day.weekday()) if period == "week" else day


def _by_period(
    records: list[IncidentRecord], f: Filters, period: Period, groups: dict[str, Callable[[IncidentRecord], str]]
) -> dict[str, Any]:
    """Counts per day (or week, from Monday) for every period of the range (those without any too), split by each of
    `groups` (name -> what an incident counts under), the biggest first."""
    first, last = datetime.fromtimestamp(f.since).date(), datetime.fromtimestamp(f.until - 1e-3).date()
    periods = list(dict.fromkeys(period_start(first + timedelta(days=d), period) for d in range((last - first).days + 1)))
    index = {p: i for i, p in enumerate(periods)}
    out: dict[str, Any] = {"periods": [p.isoformat() for p in periods]}
    for group, key in groups.items():
        series: dict[str, list[int]] = defaultdict(lambda: [0] * len(periods))
        for r in records:
            series[key(r)][index[period_start(datetime.fromtimestamp(r.created_at).date(), period)]] += 1
        out[group] = {k: series[k] for k in sorted(series, key=lambda k: -sum(series[k]))}
    return out


def _hours(records: list[IncidentRecord]) -> list[int]:
    hours = [0] * 24
    for r in records:
        hours[datetime.fromtimestamp(r.created_at).hour] += 1
    return hours


def _ranked(counts: Counter[str], name: Any) -> list[dict[str, Any]]:
    return [{"id": k, "name": name(k), "count": n} for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
