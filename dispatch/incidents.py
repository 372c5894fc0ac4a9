"""The incident: its record in SQLite, its lifecycle (发现 -> 调处 -> 跟踪 -> 联动 -> 回访) and its timeline.

A report whose type the classifier is not sure of starts as 待确认 (`needs_confirmation`): nobody is alerted until an
operator confirms its type (-> reported, then dispatched as any other) or dismisses it (-> `dismissed`, closed).
One raised from the live (partial) transcript while the speaker still talks is `provisional` until its final
transcript confirms it (the flag cleared), amends it (another place or type) or contradicts it (-> `retracted`, closed).

Every change is a row in `incident_timeline` (when, who, what), so the timeline is the incident's history and the
`incidents` row is only its current state.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bridge.db import migrate
from dispatch.gazetteer import distance_m

MIGRATIONS = [
    """
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        priority TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        place_id TEXT,
        place_name TEXT,
        detail TEXT NOT NULL DEFAULT '',
        lat REAL,
        lon REAL,
        location_confidence REAL NOT NULL DEFAULT 0,
        text TEXT NOT NULL DEFAULT '',
        pinyin TEXT NOT NULL DEFAULT '',
        channel TEXT NOT NULL DEFAULT '',
        utterance_ids TEXT NOT NULL DEFAULT '[]',
        assigned TEXT NOT NULL DEFAULT '[]',
        reports INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX incidents_created ON incidents (created_at);
    CREATE TABLE incident_timeline (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        ts REAL NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, seq);
    """,
    # raised from the live (partial) transcript; cleared when the final transcript confirms or amends it
    """
    ALTER TABLE incidents ADD COLUMN provisional INTEGER NOT NULL DEFAULT 0;
    """,
]


class Status(StrEnum):
    NEEDS_CONFIRMATION = "needs_confirmation"  # 待确认: sounds like a report, type not certain; nobody alerted yet
    REPORTED = "reported"  # 发现
    DISPATCHED = "dispatched"  # alerts sent
    ACKNOWLEDGED = "acknowledged"  # a responder confirmed
    ON_SCENE = "on_scene"  # 调处
    RESOLVED = "resolved"
    FOLLOWED_UP = "followed_up"  # 回访
    CLOSED_FALSE_ALARM = "closed_false_alarm"
    DISMISSED = "dismissed"  # 已忽略: an operator judged a 待确认 transmission not to be a report
    RETRACTED = "retracted"  # 已撤销: raised from the live transcript, contradicted by the final one (routine, nothing)


FLOW = (Status.REPORTED, Status.DISPATCHED, Status.ACKNOWLEDGED, Status.ON_SCENE, Status.RESOLVED, Status.FOLLOWED_UP)
CLOSED = frozenset({Status.FOLLOWED_UP, Status.CLOSED_FALSE_ALARM, Status.DISMISSED, Status.RETRACTED})
# still needs someone: on the way or on scene, or (待确认) an operator to say what it is
OPEN = frozenset(FLOW) - {Status.RESOLVED, Status.FOLLOWED_UP} | {Status.NEEDS_CONFIRMATION}
CONFIRMED = (Status.REPORTED, Status.DISPATCHED)  # where a 待确认 incident goes when its type is confirmed


def can_transition(current: Status, new: Status) -> bool:
    """Forward only along FLOW (steps may be skipped: a guard may report "on scene" without acking first), except
    that follow-up comes only after resolution and a false alarm can be closed at any point before it. A 待确认
    incident only leaves its state by being confirmed (reported, dispatched) or dismissed, and only it is dismissed.
    Only the dispatcher retracts (an incident raised from the live transcript that the final one contradicts), from
    any open state but 待确认."""
    if current in CLOSED or new == current:
        return False
    if current == Status.NEEDS_CONFIRMATION:
        return new in (*CONFIRMED, Status.DISMISSED)
    if new in (Status.NEEDS_CONFIRMATION, Status.DISMISSED):
        return False
    if new == Status.RETRACTED:
        return current in OPEN
    if new == Status.CLOSED_FALSE_ALARM:
        return current != Status.RESOLVED
    if new == Status.FOLLOWED_UP:
        return current == Status.RESOLVED
    return FLOW.index(new) > FLOW.index(current)


class IncidentError(ValueError):
    """Unknown incident, or a transition the lifecycle does not allow."""


@dataclass(slots=True, frozen=True)
class Incident:
    id: str
    type: str
    priority: str
    status: Status
    created_at: float
    updated_at: float
    place_id: str | None = None
    place_name: str | None = None
    detail: str = ""
    lat: float | None = None
    lon: float | None = None
    location_confidence: float = 0.0
    text: str = ""
    pinyin: str = ""
    channel: str = ""
    utterance_ids: tuple[str, ...] = ()
    assigned: tuple[str, ...] = ()
    reports: int = 1
    provisional: bool = False  # raised from the live transcript, the final transcript not in yet

    @property
    def location_unknown(self) -> bool:
        return self.place_id is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        d["utterance_ids"] = list(self.utterance_ids)
        d["assigned"] = list(self.assigned)
        d["location"] = "unknown" if self.location_unknown else "known"
        return d


@dataclass(slots=True, frozen=True)
class TimelineEntry:
    seq: int
    ts: float
    actor: str
    kind: str  # reported | confirmed | status | alerted | escalated | ack | note | reassigned | merged | unanswered |
    # final | rerouted | withdrawn | requeued | ...
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_incident_id(at: float) -> str:
    return f"INC-{datetime.fromtimestamp(at, UTC).strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class IncidentStore:
    def __init__(self, conn: sqlite3.Connection, *, readonly: bool = False) -> None:
        """`readonly`: a reader (the CLI) on a database the service owns; the tables must already exist."""
        if not readonly:
            migrate(conn, "dispatch.incidents", MIGRATIONS)
        self._conn = conn

    # --- reading -------------------------------------------------------------------------------------------

    def get(self, incident_id: str) -> Incident | None:
        row = self._conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return _incident(row) if row else None

    def require(self, incident_id: str) -> Incident:
        incident = self.get(incident_id)
        if incident is None:
            raise IncidentError(f"unknown incident {incident_id!r}")
        return incident

    def list(self, *, status: Status | None = None, limit: int = 100, stations: Collection[str] | None = None,
             open_only: bool = False) -> list[Incident]:  # fmt: skip
        """Newest first. `stations`: only those heard on their channels (the central tier names a channel
        `<station>.<channel>`); `open_only`: only those still open."""
        where, args = ["1"], []
        if status:
            where.append("status = ?")
            args.append(str(status))
        if open_only:
            where.append(f"status IN ({', '.join('?' * len(OPEN))})")
            args += map(str, OPEN)
        if stations is not None:
            where.append(f"substr(channel, 1, instr(channel, '.') - 1) IN ({', '.join('?' * len(stations))})")
            args += stations
        rows = self._conn.execute(f"SELECT * FROM incidents WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ?",
                                  (*args, limit))  # fmt: skip
        return [_incident(r) for r in rows]

    def count_open(self) -> dict[Status, int]:
        """How many incidents are in each open status (every one of OPEN, 0 for those none are in)."""
        marks = ", ".join("?" * len(OPEN))
        rows = self._conn.execute(f"SELECT status, count(*) FROM incidents WHERE status IN ({marks}) GROUP BY status",
                                  tuple(map(str, OPEN))).fetchall()  # fmt: skip
        return {status: 0 for status in OPEN} | {Status(r[0]): r[1] for r in rows}

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        rows = self._conn.execute(
            "SELECT seq, ts, actor, kind, detail FROM incident_timeline WHERE incident_id = ? ORDER BY seq", (incident_id,)
        )
        return [TimelineEntry(r["seq"], r["ts"], r["actor"], r["kind"], json.loads(r["detail"])) for r in rows]

    def find_mergeable(
        self, type_: str, lat: float | None, lon: float | None, at: float, *, radius_m: float = 200.0,
        window_s: float = 300.0, exclude: str | None = None,
    ) -> Incident | None:  # fmt: skip
        """An open incident of the same type within `radius_m` reported in the last `window_s`: the same event
        (`exclude`: an incident that does not count, the one being amended)."""
        if lat is None or lon is None:
            return None
        rows = self._conn.execute(
            "SELECT * FROM incidents WHERE type = ? AND updated_at >= ? AND lat IS NOT NULL ORDER BY created_at DESC",
            (type_, at - window_s),
        )
        for row in rows:
            incident = _incident(row)
            if incident.id == exclude:
                continue
            if incident.status in OPEN and distance_m(lat, lon, incident.lat or 0.0, incident.lon or 0.0) <= radius_m:
                return incident
        return None

    def with_utterance(self, utterance_id: str) -> list[Incident]:
        """The incidents this utterance reported or was merged into as a further report, newest first."""
        rows = self._conn.execute(
            "SELECT * FROM incidents WHERE utterance_ids LIKE ? ORDER BY created_at DESC", (f'%"{utterance_id}"%',)
        )
        return [i for i in map(_incident, rows) if utterance_id in i.utterance_ids]

    def utterances_since(self, at: float) -> set[str]:
        """Every utterance some incident updated at `at` or later reported or was merged into (an incident is updated
        whenever a report is added, so one holding an utterance heard since `at` is among them)."""
        rows = self._conn.execute("SELECT utterance_ids FROM incidents WHERE updated_at >= ?", (at,))
        return {uid for row in rows for uid in json.loads(row["utterance_ids"])}

    def ever_sent(self, incident: Incident) -> set[str]:
        """Every responder the incident was ever sent to: assigned now, alerted, escalated to or dispatched by an
        operator, even if stood down since (they were told of it)."""
        sent = set(incident.assigned)
        for entry in self.timeline(incident.id):
            if entry.kind in ("alerted", "escalated"):
                sent.update(entry.detail.get("responders", ()))
            elif entry.kind == "reassigned":
                sent.update(entry.detail.get("to", ()))
        return sent

    def provisional_for(self, utterance_id: str) -> Incident | None:
        """The provisional incident this utterance's partial transcript raised and its final has not settled yet."""
        rows = self._conn.execute(
            "SELECT * FROM incidents WHERE provisional = 1 AND utterance_ids LIKE ? ORDER BY created_at DESC",
            (f'%"{utterance_id}"%',),
        )
        return next((i for i in map(_incident, rows) if utterance_id in i.utterance_ids), None)

    # --- changing ------------------------------------------------------------------------------------------

    def create(self, incident: Incident, *, actor: str) -> Incident:
        d = incident.to_dict()
        d.pop("location")
        d["utterance_ids"] = json.dumps(d["utterance_ids"])
        d["assigned"] = json.dumps(d["assigned"])
        with self._conn:
            self._conn.execute(f"INSERT INTO incidents ({', '.join(d)}) VALUES ({', '.join('?' * len(d))})", tuple(d.values()))
            self._log(incident.id, incident.created_at, actor, "reported", {"utterance_ids": list(incident.utterance_ids)})
        return incident

    def transition(
        self, incident_id: str, status: Status, *, actor: str, note: str = "", at: float | None = None
    ) -> tuple[Incident, Incident]:
        """Move to `status` (IncidentError if the lifecycle forbids it); returns (before, after)."""
        before = self.require(incident_id)
        if not can_transition(before.status, status):
            raise IncidentError(f"{incident_id}: cannot go from {before.status} to {status}")
        at = time.time() if at is None else at
        after = replace(before, status=status, updated_at=at)
        detail = {"from": str(before.status), "to": str(status)} | ({"note": note} if note else {})
        self._save(after, actor, "status", detail)
        return before, after

    def confirm(self, incident_id: str, type_: str, priority: str, *, actor: str) -> tuple[Incident, Incident]:
        """A 待确认 incident takes the type (and priority) an operator gives it and becomes `reported`, ready to be
        dispatched; IncidentError if it is not awaiting confirmation. Returns (before, after)."""
        before = self.require(incident_id)
        if before.status != Status.NEEDS_CONFIRMATION:
            raise IncidentError(f"{incident_id} is not awaiting confirmation (it is {before.status})")
        after = replace(before, type=type_, priority=priority, status=Status.REPORTED, updated_at=time.time())
        detail = {"type": type_, "priority": priority, "guessed": before.type, "guessed_priority": before.priority,
                  "from": str(before.status), "to": str(after.status)}  # fmt: skip
        with self._conn:
            self._conn.execute(
                "UPDATE incidents SET type = ?, priority = ?, status = ?, updated_at = ? WHERE id = ?",
                (type_, priority, str(after.status), after.updated_at, incident_id),
            )
            self._log(incident_id, after.updated_at, actor, "confirmed", detail)
        return before, after

    def add_note(self, incident_id: str, text: str, *, actor: str) -> Incident:
        incident = replace(self.require(incident_id), updated_at=time.time())
        self._save(incident, actor, "note", {"text": text})
        return incident

    def assign(
        self, incident_id: str, responder_ids: list[str], *, actor: str, kind: str = "alerted", **detail: Any
    ) -> tuple[Incident, Incident]:
        """Add responders to the incident (an alert sent, an escalation); returns (before, after)."""
        before = self.require(incident_id)
        added = [r for r in responder_ids if r not in before.assigned]
        after = replace(before, assigned=before.assigned + tuple(added), updated_at=time.time())
        self._save(after, actor, kind, {"responders": responder_ids, **detail})
        return before, after

    def reassign(self, incident_id: str, responder_ids: list[str], *, actor: str) -> tuple[Incident, Incident]:
        """An operator replaces who is assigned."""
        before = self.require(incident_id)
        after = replace(before, assigned=tuple(dict.fromkeys(responder_ids)), updated_at=time.time())
        self._save(after, actor, "reassigned", {"from": list(before.assigned), "to": list(after.assigned)})
        return before, after

    def merge_report(self, incident_id: str, utterance_id: str, text: str, *, actor: str) -> tuple[Incident, Incident]:
        """A second report of the same event: counted and linked, not a new incident."""
        before = self.require(incident_id)
        after = replace(
            before, utterance_ids=(*before.utterance_ids, utterance_id), reports=before.reports + 1, updated_at=time.time()
        )
        self._save(after, actor, "merged", {"utterance_id": utterance_id, "text": text})
        return before, after

    def amend(
        self, incident_id: str, *, actor: str, kind: str, entry: dict[str, Any], **changes: Any
    ) -> tuple[Incident, Incident]:
        """The dispatcher corrects an incident it raised from the live transcript once the final one is in: any of
        its fields (place, type, priority, text, status, assigned, provisional...) in one row update and one
        timeline entry of `kind` saying `entry`. No lifecycle check: the caller decides. Returns (before, after)."""
        before = self.require(incident_id)
        after = replace(before, **changes, updated_at=time.time())
        row = {k: v for k, v in after.to_dict().items() if k in changes or k == "updated_at"}
        for k in ("utterance_ids", "assigned"):
            if k in row:
                row[k] = json.dumps(row[k])
        with self._conn:
            self._conn.execute(
                f"UPDATE incidents SET {', '.join(f'{k} = ?' for k in row)} WHERE id = ?", (*row.values(), incident_id)
            )
            self._log(incident_id, after.updated_at, actor, kind, entry)
        return before, after

    def record(self, incident_id: str, kind: str, *, actor: str, **detail: Any) -> None:
        """A timeline entry that changes nothing else (an ack from someone, an unanswered escalation)."""
        self.require(incident_id)
        with self._conn:
            self._log(incident_id, time.time(), actor, kind, detail)

    def _save(self, incident: Incident, actor: str, kind: str, detail: dict[str, Any]) -> None:
        with self._conn:
            self._conn.execute(
                "UPDATE incidents SET status = ?, updated_at = ?, assigned = ?, utterance_ids = ?, reports = ? WHERE id = ?",
                (
                    str(incident.status),
                    incident.updated_at,
                    json.dumps(list(incident.assigned)),
                    json.dumps(list(incident.utterance_ids)),
                    incident.reports,
                    incident.id,
                ),
            )
            self._log(incident.id, incident.updated_at, actor, kind, detail)

    def _log(self, incident_id: str, ts: float, actor: str, kind: str, detail: dict[str, Any]) -> None:
        self._conn.execute(
            "INSERT INTO incident_timeline (incident_id, ts, actor, kind, detail) VALUES (?, ?, ?, ?, ?)",
            (incident_id, ts, actor, kind, json.dumps(detail, ensure_ascii=False)),
        )


def _incident(row: sqlite3.Row) -> Incident:
    d = dict(row)
    d["status"] = Status(d["status"])
    d["utterance_ids"] = tuple(json.loads(d["utterance_ids"]))
    d["assigned"] = tuple(json.loads(d["assigned"]))
    d["provisional"] = bool(d["provisional"])
    return Incident(**d)
