"""Who goes: responders' run-time state (status, last GPS fix) and the ranking of who to alert for a place.

`ResponderBoard` is the small state store the MQTT side updates (OwnTracks positions; statuses from the phones on
`<prefix>/status/<responder_id>`; an acknowledgement makes its sender busy on that incident until the incident ends;
statuses are kept in the database by `StatusStore`, so a restart starts from them and not from what the broker retained);
`recommend` is pure: the k nearest available guards (先期处置) plus police, the chief answering for the place's grid
first, all within a radius, ranked by distance. A fix older than the staleness limit is ignored in favour of the
responder's post, so a phone that went quiet an hour ago does not pull a guard to where he used to be.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bridge.db import Connection, Migration, migrate
from dispatch.config import ResponderRules
from dispatch.gazetteer import Jurisdiction, Place, Responder, distance_m
from dispatch.positions import PayloadError, check_sender, json_object

logger = logging.getLogger(__name__)

Status = Literal["available", "busy", "off_duty"]
STATUSES: tuple[str, ...] = get_args(Status)

MIGRATIONS = [
    Migration(
        sqlite="""
    CREATE TABLE responder_status (
        responder_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        incident_id TEXT,
        updated_at REAL NOT NULL
    );
    """,
        postgres="""
    CREATE TABLE responder_status (
        responder_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        incident_id TEXT,
        updated_at DOUBLE PRECISION NOT NULL
    );
    """,
    )
]


def parse_status(payload: bytes, responder_id: str | None = None) -> Status:
    """`{"status": "available"|"busy"|"off_duty"}` (a phone may write off-duty) -> the status; PayloadError if bad,
    or (`wrong_responder`) if it names a `responder_id` other than the given one (the topic's)."""
    data = json_object(payload)
    if responder_id is not None:
        check_sender(data, responder_id)
    status = data.get("status")
    if isinstance(status, str):
        status = status.replace("-", "_")
    if status not in STATUSES:
        raise PayloadError("bad_type", f"status must be one of {', '.join(STATUSES)}, got {data.get('status')!r}")
    return status  # type: ignore[return-value]


class UnknownResponderError(KeyError):
    """A responder id that is not in the jurisdiction (e.g. from a stray MQTT topic)."""

    def __init__(self, responder_id: str) -> None:
        super().__init__(responder_id)
        self.responder_id = responder_id

    def __str__(self) -> str:
        return f"unknown responder id {self.responder_id!r}"


@dataclass(slots=True, frozen=True)
class Fix:
    lat: float
    lon: float
    ts: float  # unix seconds of the fix (OwnTracks `tst`)
    acc: float | None = None  # metres


@dataclass(slots=True, frozen=True)
class Located:
    lat: float
    lon: float
    source: Literal["gps", "post"]
    ts: float | None = None


StatusChange = Callable[[str, Status, str | None], None]  # (responder id, status, incident it is busy on)


class StatusStore:
    """Each responder's status and engagement in the state database (SQLite, or central's PostgreSQL), written on
    every change."""

    def __init__(self, conn: Connection) -> None:
        migrate(conn, "dispatch.responders", MIGRATIONS)
        self._conn = conn

    def load(self) -> dict[str, tuple[Status, str | None]]:
        rows = self._conn.execute("SELECT responder_id, status, incident_id FROM responder_status")
        return {r["responder_id"]: (r["status"], r["incident_id"]) for r in rows}

    def save(self, responder_id: str, status: Status, incident_id: str | None) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT INTO responder_status (responder_id, status, incident_id, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (responder_id) DO UPDATE SET status = excluded.status, incident_id = excluded.incident_id, "
                "updated_at = excluded.updated_at",
                (responder_id, status, incident_id, time.time()),
            )


class ResponderBoard:
    """Status and last position of every responder of a jurisdiction; safe to update from another thread.
    `on_change` hears every change of status or engagement (StatusStore.save keeps them)."""

    def __init__(
        self, jurisdiction: Jurisdiction, clock: Callable[[], float] = time.time, *, on_change: StatusChange | None = None
    ) -> None:
        self.jurisdiction = jurisdiction
        self.clock = clock
        self._status: dict[str, Status] = {r.id: "available" for r in jurisdiction.responders}
        self._fix: dict[str, Fix] = {}
        self._engaged: dict[str, str] = {}  # responder id -> the incident its acknowledgement made it busy on
        self._lock = threading.Lock()
        self._on_change = on_change

    def restore(self, saved: Mapping[str, tuple[str, str | None]]) -> None:
        """Statuses (and engagements) kept from before a restart; responders no longer in the registry are skipped."""
        with self._lock:
            for rid, (status, incident_id) in saved.items():
                if rid in self._status and status in STATUSES:
                    self._status[rid] = status  # type: ignore[assignment]
                    if incident_id is not None:
                        self._engaged[rid] = incident_id

    def _changed(self, responder_id: str) -> None:
        # called with the lock held, so that changes reach `on_change` in the order they were made
        if self._on_change is not None:
            self._on_change(responder_id, self._status[responder_id], self._engaged.get(responder_id))

    def _check(self, responder_id: str) -> Responder:
        if responder_id not in self._status:
            raise UnknownResponderError(responder_id)
        return self.jurisdiction.responder(responder_id)

    def update_position(self, responder_id: str, lat: float, lon: float, ts: float, acc: float | None = None) -> bool:
        """Record a GPS fix; returns False (and keeps the newer one) when it is older than the fix already held."""
        self._check(responder_id)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not all(map(math.isfinite, (lat, lon, ts))):
            raise ValueError(f"responder {responder_id!r}: impossible position lat={lat} lon={lon} ts={ts}")
        with self._lock:
            held = self._fix.get(responder_id)
            if held is not None and held.ts > ts:
                return False
            self._fix[responder_id] = Fix(lat, lon, ts, acc)
        return True

    def set_status(self, responder_id: str, status: str) -> None:
        """The responder's own word (phone, console): it overrides whatever an acknowledgement had made it."""
        self._check(responder_id)
        if status not in STATUSES:
            raise ValueError(f"responder {responder_id!r}: status must be one of {', '.join(STATUSES)}, not {status!r}")
        with self._lock:
            self._status[responder_id] = status  # type: ignore[assignment]
            self._engaged.pop(responder_id, None)
            self._changed(responder_id)

    def status(self, responder_id: str) -> Status:
        self._check(responder_id)
        return self._status[responder_id]

    def is_available(self, responder_id: str) -> bool:
        """Whether the responder may be offered an incident (ranking, and again at escalation)."""
        return self.status(responder_id) == "available"

    def engage(self, responder_id: str, incident_id: str) -> None:
        """An acknowledgement: the responder is busy on this incident (and not offered for others) until it ends."""
        self._check(responder_id)
        with self._lock:
            self._status[responder_id] = "busy"
            self._engaged[responder_id] = incident_id
            self._changed(responder_id)

    def release(self, incident_id: str, only: Collection[str] | None = None) -> list[str]:
        """The incident ended (or `only` these were stood down from it): whoever is still busy on it is available
        again; returns their ids. Someone who has since acknowledged another incident, or set a status of their own,
        keeps it."""
        with self._lock:
            freed = [rid for rid, engaged in self._engaged.items()
                     if engaged == incident_id and (only is None or rid in only)]  # fmt: skip
            for rid in freed:
                del self._engaged[rid]
                self._status[rid] = "available"
                self._changed(rid)
        return freed

    def engaged_on(self, responder_id: str) -> str | None:
        self._check(responder_id)
        return self._engaged.get(responder_id)

    def locate(self, responder_id: str, max_age_s: float, now: float | None = None) -> Located:
        """The fresh GPS fix, else the responder's post."""
        responder = self._check(responder_id)
        now = self.clock() if now is None else now
        fix = self._fix.get(responder_id)
        if fix is not None and now - fix.ts <= max_age_s:
            return Located(fix.lat, fix.lon, "gps", fix.ts)
        post = self.jurisdiction.place(responder.post)
        return Located(post.lat, post.lon, "post")

    def snapshot(self, max_age_s: float, now: float | None = None) -> list[dict[str, Any]]:
        """Every responder with status and position, for the console."""
        out = []
        for r in self.jurisdiction.responders:
            loc = self.locate(r.id, max_age_s, now)
            out.append({"id": r.id, "name": r.name, "role": r.role, "status": self._status[r.id],
                        "incident_id": self._engaged.get(r.id), "lat": loc.lat, "lon": loc.lon, "position": loc.source,
                        "fix_ts": loc.ts})
        return out


@dataclass(slots=True, frozen=True)
class Recommendation:
    responder: Responder
    distance_m: float
    reason: Literal["guard", "grid_chief", "police"]
    position: Literal["gps", "post"]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.responder.id, "role": self.responder.role, "distance_m": round(self.distance_m),
                "reason": self.reason, "position": self.position}


def recommend(
    place: Place,
    board: ResponderBoard,
    rules: ResponderRules | None = None,
    now: float | None = None,
    exclude: Iterable[str] = (),
) -> list[Recommendation]:
    """Responders to alert for an incident at `place`, nearest first. `exclude`: already alerted (escalation)."""
    rules = rules or ResponderRules()
    now = board.clock() if now is None else now
    skip = set(exclude)
    in_reach: list[Recommendation] = []
    for r in board.jurisdiction.responders:
        if r.id in skip or not board.is_available(r.id):
            continue
        loc = board.locate(r.id, rules.position_max_age_s, now)
        d = distance_m(place.lat, place.lon, loc.lat, loc.lon)
        if d <= rules.radius_m:
            in_reach.append(Recommendation(r, d, "guard", loc.source))
    in_reach.sort(key=lambda c: c.distance_m)

    guards = [c for c in in_reach if c.responder.role in rules.guard_roles][: rules.guards]
    police = [c for c in in_reach if c.responder.role in rules.police_roles]
    chosen_police: list[Recommendation] = []
    grid = board.jurisdiction.grid_of(place.id)
    if rules.grid_chief_first and grid and rules.police:
        chiefs = (c for c in police if c.responder.role == "chief" and board.jurisdiction.grid_of(c.responder.post) == grid)
        chief = next(chiefs, None)
        if chief is not None:
            chosen_police.append(_as(chief, "grid_chief"))
    # Then patrol officers, nearest first. Another community's chief answers for his own grid: he is taken only
    # when no officer is in reach (with `grid_chief_first` off, police are simply the nearest of any role).
    if rules.grid_chief_first:
        police.sort(key=lambda c: c.responder.role == "chief")  # stable: nearest first within each group
    for c in police:
        if len(chosen_police) >= rules.police:
            break
        if all(c.responder.id != p.responder.id for p in chosen_police):
            chosen_police.append(_as(c, "police"))
    return sorted(guards + chosen_police, key=lambda c: c.distance_m)


def _as(c: Recommendation, reason: Literal["guard", "grid_chief", "police"]) -> Recommendation:
    return Recommendation(c.responder, c.distance_m, reason, c.position)
