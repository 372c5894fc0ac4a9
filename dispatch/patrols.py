"""Patrols (巡更): routes of check-in points walked on a schedule, check-ins, and missed check-ins raised to the
operator (docs/dispatch.md, "Patrols, geofences and tracks").

A route (`dispatch.patrols.routes`) is its points in walking order, who patrols it, and a schedule: each start time
of the day opens a round, and each point must be checked in within `window_min` of the start. A point is checked in
by one of the route's patrollers
- by position: a fix of his (the fix's own time within the round) within the point's radius, heard from the
  dispatcher's position intake like every fix (OwnTracks, or the guard page);
- or by code: the value of the NFC tag or QR code posted at the point, typed or scanned on his phone page
  (`check_in_code`). Codes are never shown to the phones: knowing one would be as good as having been there.
The first check-in of a point in a round stands; points may be walked in any order. When a round's window has passed,
each point nobody checked in is a missed check-in: kept in the database (one per round and point, so a restart
neither loses nor repeats one), logged, and published on the bus (topic "patrol") for the consoles. `run` looks every
second; after a restart it raises what fell due meanwhile, over the last LOOKBACK_S (never a round that was over
before patrols were first watched on this database: on a first start nobody has missed anything yet).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from bridge.db import migrate
from bridge.logsafe import clip
from dispatch.config import PatrolPoint, PatrolRoute, PatrolRules
from dispatch.gazetteer import Jurisdiction, distance_m
from dispatch.positions import Position

logger = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE patrol_checkins (
        route_id TEXT NOT NULL,
        round_start REAL NOT NULL,
        point INTEGER NOT NULL,
        responder_id TEXT NOT NULL,
        ts REAL NOT NULL,
        how TEXT NOT NULL,
        PRIMARY KEY (route_id, round_start, point)
    );
    CREATE TABLE patrol_missed (
        id INTEGER PRIMARY KEY,
        route_id TEXT NOT NULL,
        round_start REAL NOT NULL,
        point INTEGER NOT NULL,
        raised_at REAL NOT NULL,
        UNIQUE (route_id, round_start, point)
    );
    """,
    # when patrols were first watched: rounds over before it are nobody's to have missed (a first start, an upgrade)
    """
    CREATE TABLE patrol_watch (id INTEGER PRIMARY KEY CHECK (id = 1), since REAL NOT NULL);
    """,
]
LOOKBACK_S = 12 * 3600  # rounds that ended this long ago are still settled at start (and shown on the console)
CHECK_EVERY_S = 1.0

How = Literal["gps", "code"]


class PatrolError(ValueError):
    """A check-in refused: `status` is the HTTP answer (404 no such code on his routes, 409 no round open)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True, frozen=True)
class Round:
    route: PatrolRoute
    start: float
    end: float

    def holds(self, ts: float) -> bool:
        return self.start <= ts <= self.end


def rounds(route: PatrolRoute, since: float, until: float) -> list[Round]:
    """The route's rounds that overlap [since, until], in order (each start time of each local day)."""
    window = route.window_min * 60
    first, last = date.fromtimestamp(since - window), date.fromtimestamp(until)
    found = []
    for n in range((last - first).days + 1):
        day = first + timedelta(days=n)
        for start in route.starts:
            h, m, *s = (int(x) for x in start.split(":"))
            at = datetime(day.year, day.month, day.day, h, m, s[0] if s else 0).timestamp()
            if at <= until and at + window >= since:
                found.append(Round(route, at, at + window))
    return sorted(found, key=lambda r: r.start)


class PatrolDesk:
    def __init__(
        self,
        conn: sqlite3.Connection,
        rules: PatrolRules,
        jurisdiction: Jurisdiction,
        *,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """ValueError naming the route when a patroller is not in the jurisdiction."""
        for route in rules.routes:
            for rid in route.patrollers:
                try:
                    jurisdiction.responder(rid)
                except KeyError:
                    raise ValueError(f"patrol route {route.id}: patroller {rid!r} is not in the jurisdiction") from None
        if len({r.id for r in rules.routes}) != len(rules.routes):
            raise ValueError("two patrol routes have the same id")
        migrate(conn, "dispatch.patrols", MIGRATIONS)
        self._conn = conn
        self.routes = {r.id: r for r in rules.routes}
        self._jurisdiction = jurisdiction
        self._publish = publish or (lambda topic, data: None)
        self._clock = clock
        with conn:
            conn.execute("INSERT OR IGNORE INTO patrol_watch (id, since) VALUES (1, ?)", (clock(),))
        self._since = conn.execute("SELECT since FROM patrol_watch").fetchone()[0]

    # --- check-ins ---------------------------------------------------------------------------------------------

    def on_position(self, position: Position) -> None:
        """A patroller's fix within a point's radius, taken during a round, checks that point in."""
        for route in self._routes_of(position.responder_id):
            for rnd in rounds(route, position.ts, position.ts):
                for index, point in enumerate(route.points):
                    if distance_m(position.lat, position.lon, point.lat, point.lon) <= _radius(route, point):
                        self._check_in(rnd, index, position.responder_id, position.ts, "gps")

    def check_in_code(self, responder_id: str, code: str) -> dict[str, Any]:
        """The code posted at a point of one of his routes, during a round of it: checked in (again: the first
        stands); PatrolError 404 when no point of his carries it, 409 when no round of that route is open now."""
        now = self._clock()
        for route in self._routes_of(responder_id):
            for index, point in enumerate(route.points):
                if point.code is not None and point.code == code:
                    open_now = [r for r in rounds(route, now, now) if r.holds(now)]
                    if not open_now:
                        raise PatrolError(409, f"{route.name}：现在不在巡更时段内")
                    self._check_in(open_now[0], index, responder_id, now, "code")
                    return self.round_view(open_now[0], now)
        logger.warning("patrol check-in by %s refused: no point of his routes has the code %s", responder_id, clip(repr(code)))
        raise PatrolError(404, "这个编码不是你巡更路线上的点")

    def _check_in(self, rnd: Round, index: int, responder_id: str, ts: float, how: How) -> None:
        with self._conn:
            added = self._conn.execute(
                "INSERT OR IGNORE INTO patrol_checkins (route_id, round_start, point, responder_id, ts, how) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (rnd.route.id, rnd.start, index, responder_id, ts, how),
            ).rowcount
        if added:
            point = rnd.route.points[index]
            logger.info("patrol %s: %s checked in at %s (%s)", rnd.route.id, responder_id, point.name, how)
            self._publish("patrol", {"kind": "checkin", "route_id": rnd.route.id, "route_name": rnd.route.name,
                                     "round_start": rnd.start, "point": index, "point_name": point.name,
                                     "responder_id": responder_id, "ts": ts, "how": how})  # fmt: skip

    # --- missed check-ins ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Raise missed check-ins as rounds end, until cancelled; a failure is logged and the watch goes on."""
        while True:
            try:
                self.raise_missed()
            except Exception:
                logger.exception("patrols: raising missed check-ins failed; trying again")
            await asyncio.sleep(CHECK_EVERY_S)

    def raise_missed(self) -> list[dict[str, Any]]:
        """Every point of a round that ended (within LOOKBACK_S) with nobody checking it in, raised once; returns
        those raised now."""
        now = self._clock()
        raised = []
        for route in self.routes.values():
            for rnd in rounds(route, max(now - LOOKBACK_S, self._since), now):
                if rnd.end > now or rnd.end < self._since:
                    continue
                checked = self._checked(rnd)
                for index in range(len(route.points)):
                    if index in checked:
                        continue
                    with self._conn:
                        added = self._conn.execute(
                            "INSERT OR IGNORE INTO patrol_missed (route_id, round_start, point, raised_at) VALUES (?, ?, ?, ?)",
                            (route.id, rnd.start, index, now),
                        ).rowcount
                    if added:
                        missed = self._missed_view(route, rnd.start, index, now)
                        started = datetime.fromtimestamp(rnd.start).strftime("%H:%M:%S")
                        logger.warning("patrol %s: %s not checked in, round of %s", route.id, route.points[index].name, started)
                        self._publish("patrol", {"kind": "missed", **missed})
                        raised.append(missed)
        return raised

    # --- views ---------------------------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """For the console: each route with its rounds of the last LOOKBACK_S and the next one, and the missed
        check-ins of that time, newest first."""
        now = self._clock()
        routes = []
        for route in self.routes.values():
            shown = [r for r in rounds(route, now - LOOKBACK_S, now + 86400) if r.start <= now]
            upcoming = [r for r in rounds(route, now, now + 86400) if r.start > now][:1]
            routes.append({"id": route.id, "name": route.name, "window_min": route.window_min, "starts": route.starts,
                           "patrollers": [self._who(rid) for rid in route.patrollers],
                           "points": [_point(route, p) for p in route.points],
                           "rounds": [self.round_view(r, now) for r in shown + upcoming]})  # fmt: skip
        rows = self._conn.execute(
            "SELECT route_id, round_start, point, raised_at FROM patrol_missed WHERE raised_at >= ? ORDER BY id DESC",
            (now - LOOKBACK_S,),
        ).fetchall()
        # a route taken out of the config (or shortened) since: its old entries are not shown
        known = [r for r in rows if r["route_id"] in self.routes and r["point"] < len(self.routes[r["route_id"]].points)]
        missed = [self._missed_view(self.routes[r["route_id"]], r["round_start"], r["point"], r["raised_at"]) for r in known]
        return {"routes": routes, "missed": missed}

    def mine(self, responder_id: str) -> list[dict[str, Any]]:
        """For a patroller's phone: his routes, each with the round open now (else the next), codes left out."""
        now = self._clock()
        out = []
        for route in self._routes_of(responder_id):
            current = [r for r in rounds(route, now, now + 86400) if r.end >= now][:1]
            out.append({"id": route.id, "name": route.name, "points": [_point(route, p) for p in route.points],
                        "round": self.round_view(current[0], now) if current else None})  # fmt: skip
        return out

    def round_view(self, rnd: Round, now: float) -> dict[str, Any]:
        checked = self._checked(rnd)
        if now < rnd.start or now <= rnd.end:
            state = "upcoming" if now < rnd.start else "open"
        else:
            state = "done" if len(checked) == len(rnd.route.points) else "missed"
        return {"route_id": rnd.route.id, "start": rnd.start, "end": rnd.end, "state": state,
                "checkins": [{"point": i, "responder": self._who(c["responder_id"]), "ts": c["ts"], "how": c["how"]}
                             for i, c in sorted(checked.items())]}  # fmt: skip

    def _checked(self, rnd: Round) -> dict[int, sqlite3.Row]:
        rows = self._conn.execute(
            "SELECT point, responder_id, ts, how FROM patrol_checkins WHERE route_id = ? AND round_start = ?",
            (rnd.route.id, rnd.start),
        ).fetchall()
        return {r["point"]: r for r in rows}

    def _missed_view(self, route: PatrolRoute, round_start: float, index: int, raised_at: float) -> dict[str, Any]:
        return {"route_id": route.id, "route_name": route.name, "round_start": round_start,
                "round_end": round_start + route.window_min * 60, "point": index, "point_name": route.points[index].name,
                "lat": route.points[index].lat, "lon": route.points[index].lon, "raised_at": raised_at,
                "patrollers": [self._who(rid) for rid in route.patrollers]}  # fmt: skip

    def _routes_of(self, responder_id: str) -> list[PatrolRoute]:
        return [r for r in self.routes.values() if responder_id in r.patrollers]

    def _who(self, responder_id: str) -> dict[str, str]:
        try:
            return {"id": responder_id, "name": self._jurisdiction.responder(responder_id).name}
        except KeyError:  # checked in under an id since taken out of the registry
            return {"id": responder_id, "name": responder_id}


def _radius(route: PatrolRoute, point: PatrolPoint) -> float:
    return point.radius_m if point.radius_m is not None else route.radius_m


def _point(route: PatrolRoute, point: PatrolPoint) -> dict[str, Any]:
    return {"name": point.name, "lat": point.lat, "lon": point.lon, "radius_m": _radius(route, point),
            "has_code": point.code is not None}  # fmt: skip
