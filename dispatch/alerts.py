"""Alerting responders, tracking their acknowledgements, and escalating when nobody answers.

The ranking decides who is alerted first and who is held in reserve; this module sends each alert through the
outbox, arms one timer per incident and, when `ack_timeout` passes without an acknowledgement (or someone
declines), alerts the next nearest in reserve. Everything it does lands in the incident's timeline and reaches the
console through `emit(before, after, reason)`.

What escalation needs (who was alerted, the reserve, whether anyone answered, each one's answer, when the timer is
due) is kept in the database (`WatchStore`), so that after a crash or a restart `resume` arms every open incident's timer
again for the time it was due: at once when that passed while the service was down.

An answer counts only from a responder the incident is assigned to (alerted and not stood down), and the same answer
twice changes nothing: a stray or forged ack cannot stop an escalation, and repeated declines cannot start a flood.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from bridge.db import STORE_RETRY_S, Connection, Migration, StoreUnavailable, migrate
from bridge.logsafe import clip
from dispatch.incidents import OPEN, Incident, IncidentError, IncidentStore, Status, iso
from dispatch.outbox import Outbox
from dispatch.positions import PayloadError, check_sender, json_object
from dispatch.topics import Topics

logger = logging.getLogger(__name__)

MIGRATIONS = [
    Migration(
        sqlite="""
    CREATE TABLE alert_watches (
        incident_id TEXT PRIMARY KEY,
        alerted TEXT NOT NULL DEFAULT '[]',
        reserve TEXT NOT NULL DEFAULT '[]',
        responses TEXT NOT NULL DEFAULT '{}',
        acked INTEGER NOT NULL DEFAULT 0,
        due_at REAL
    );
    """,
        postgres="""
    CREATE TABLE alert_watches (
        incident_id TEXT PRIMARY KEY,
        alerted TEXT NOT NULL DEFAULT '[]',
        reserve TEXT NOT NULL DEFAULT '[]',
        responses TEXT NOT NULL DEFAULT '{}',
        acked INTEGER NOT NULL DEFAULT 0,
        due_at DOUBLE PRECISION
    );
    """,
    )
]

Emit = Callable[[Incident, Incident, str], None]  # (before, after, reason) -> tell the consoles

# Escalations that fell due while the service was down are resumed this far apart, the longest overdue first: each
# writes its alerts and timeline (~15 ms), and 31 at once after a night's restart stalled the event loop 0.46 s, every
# channel's audio waiting (the demo, stop 34).
OVERDUE_SPACING_S = 0.05


@dataclass(slots=True, frozen=True)
class Candidate:
    """A responder the ranking chose, nearest first; `reason` says why (nearest guard, grid chief, follow-up...)."""

    responder_id: str
    distance_m: float | None = None
    role: str = ""
    reason: str = "nearest"


class AckStatus(StrEnum):
    ACK = "ack"
    ON_SCENE = "on_scene"
    DECLINED = "declined"


ACK_TO_STATUS = {AckStatus.ACK: Status.ACKNOWLEDGED, AckStatus.ON_SCENE: Status.ON_SCENE}


@dataclass(slots=True, frozen=True)
class Ack:
    responder_id: str
    incident_id: str
    status: AckStatus = AckStatus.ACK


def parse_ack(responder_id: str, payload: bytes) -> Ack:
    """`{"incident_id": "...", "status": "ack"|"on_scene"|"declined"}` (status optional) -> Ack; PayloadError if bad,
    or (`wrong_responder`) if it names a `responder_id` other than the topic's."""
    data = json_object(payload)
    check_sender(data, responder_id)
    incident_id, status = data.get("incident_id"), data.get("status", "ack")
    if not isinstance(incident_id, str) or not incident_id:
        raise PayloadError("bad_type", f"incident_id must be a non-empty string, got {incident_id!r}")
    if status not in AckStatus.__members__.values():
        raise PayloadError("bad_type", f"status must be one of ack/on_scene/declined, got {status!r}")
    return Ack(responder_id, incident_id, AckStatus(status))


def alert_payload(incident: Incident, candidate: Candidate, *, place_name: str | None, issued_at: float) -> dict[str, Any]:
    """The JSON a responder's phone receives on `<prefix>/alerts/<responder_id>` (`kind` "alert"; `provisional`: raised
    from the live transcript while the caller still talks, an update or a retraction follows with the final)."""
    utterance_id = incident.utterance_ids[-1] if incident.utterance_ids else None
    return {
        "kind": "alert",
        "provisional": incident.provisional,
        "incident_id": incident.id,
        "type": incident.type,
        "priority": incident.priority,
        "place": place_name,
        "detail": incident.detail,
        "lat": incident.lat,
        "lon": incident.lon,
        "distance_m": None if candidate.distance_m is None else round(candidate.distance_m),
        "text": incident.text or incident.pinyin,
        "utterance_id": utterance_id,
        "audio_url": f"/api/utterances/{utterance_id}/audio" if utterance_id else None,
        "issued_at": iso(issued_at),
        "reason": candidate.reason,
    }


def update_payload(incident: Incident, candidate: Candidate, *, change: str, issued_at: float) -> dict[str, Any]:
    """Sent on the same topic to a responder already alerted when the incident's final transcript is in: `change`
    "final" (what the provisional alert said holds) or "rerouted" (another place or type: the fields say which); or
    when its place is said in the next transmission (dispatch/turns.py), "placed"."""
    return alert_payload(incident, candidate, place_name=incident.place_name, issued_at=issued_at) | {
        "kind": "update", "change": change}  # fmt: skip


def retraction_payload(incident: Incident, *, change: str, issued_at: float) -> dict[str, Any]:
    """Sent on the same topic to a responder who should no longer go: `change` "retracted" (the final transcript was
    no report), "rerouted" (others are nearer the corrected place, or it is another kind of incident), "requeued"
    (its type is not certain: an operator decides first), "merged" (another incident already covers it)."""
    return {"kind": "retraction", "change": change, "incident_id": incident.id, "type": incident.type,
            "place": incident.place_name, "text": incident.text or incident.pinyin, "issued_at": iso(issued_at)}  # fmt: skip


@dataclass(slots=True)
class _Watch:
    """Per incident: who has been alerted, who is held in reserve, each one's last answer, whether anyone accepted,
    when escalation is due (None: no timer), and the timer itself (not kept: `resume` makes it again)."""

    reserve: list[Candidate]
    alerted: dict[str, Candidate] = field(default_factory=dict)
    responses: dict[str, str] = field(default_factory=dict)
    acked: bool = False
    due_at: float | None = None
    timer: asyncio.Task[None] | None = None


class WatchStore:
    """The watches in the state database (SQLite, or central's PostgreSQL), one row per dispatched incident, written
    whenever one changes."""

    def __init__(self, conn: Connection) -> None:
        migrate(conn, "dispatch.alerts", MIGRATIONS)
        self._conn = conn

    def load(self) -> dict[str, _Watch]:
        watches = {}
        for row in self._conn.execute("SELECT * FROM alert_watches"):
            alerted = [Candidate(**c) for c in json.loads(row["alerted"])]
            watches[row["incident_id"]] = _Watch(
                reserve=[Candidate(**c) for c in json.loads(row["reserve"])],
                alerted={c.responder_id: c for c in alerted},
                responses=json.loads(row["responses"]),
                acked=bool(row["acked"]),
                due_at=row["due_at"],
            )
        return watches

    def save(self, incident_id: str, watch: _Watch) -> None:
        row = (json.dumps([asdict(c) for c in watch.alerted.values()], ensure_ascii=False),
               json.dumps([asdict(c) for c in watch.reserve], ensure_ascii=False),
               json.dumps(watch.responses), int(watch.acked), watch.due_at)  # fmt: skip
        with self._conn:
            self._conn.execute(
                "INSERT INTO alert_watches (incident_id, alerted, reserve, responses, acked, due_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (incident_id) DO UPDATE SET alerted = excluded.alerted, reserve = excluded.reserve, "
                "responses = excluded.responses, acked = excluded.acked, due_at = excluded.due_at",
                (incident_id, *row),
            )

    def delete(self, incident_id: str) -> None:
        with self._conn:
            self._conn.execute("DELETE FROM alert_watches WHERE incident_id = ?", (incident_id,))


class Alerter:
    def __init__(
        self,
        store: IncidentStore,
        outbox: Outbox,
        topics: Topics,
        emit: Emit,
        watches: WatchStore,
        *,
        ack_timeout: float = 60.0,
        responder_ids: Collection[str] = (),
        is_available: Callable[[str], bool] = lambda responder_id: True,
    ) -> None:
        """`is_available` is asked again at escalation time: the reserve was ranked when the incident came in, and
        someone may since have gone busy on another incident or off duty. The watches kept in `watches` are loaded;
        `resume` arms their timers."""
        self._store = store
        self._outbox = outbox
        self._topics = topics
        self._emit = emit
        self._ack_timeout = ack_timeout
        self._responder_ids = frozenset(responder_ids)
        self._is_available = is_available
        self._kept = watches
        self._watches: dict[str, _Watch] = watches.load()
        self.sent = 0
        self.escalations = 0
        self.withdrawn = 0  # retractions sent (a provisional alert the final transcript undid)
        self.rejected: Counter[str] = Counter()

    def dispatch(
        self, incident: Incident, first: Sequence[Candidate], reserve: Sequence[Candidate] = (), *, fresh: bool = False
    ) -> Incident:
        """Alert `first`, keep `reserve` for escalation, arm the ack timer; returns the incident as dispatched.
        `fresh`: the incident moved (another place or type), the earlier reserve no longer applies."""
        watch = self._watches.setdefault(incident.id, _Watch(reserve=[]))
        if fresh:
            watch.reserve.clear()
        known = set(watch.alerted) | {c.responder_id for c in (*watch.reserve, *first)}
        watch.reserve.extend(c for c in reserve if c.responder_id not in known)
        incident = self._send(incident, [c for c in first if c.responder_id not in watch.alerted], kind="alerted")
        if incident.status == Status.REPORTED and watch.alerted:
            before, incident = self._store.transition(incident.id, Status.DISPATCHED, actor="dispatcher")
            self._emit(before, incident, "dispatched")
        if not watch.acked:
            self._arm(incident.id, self._ack_timeout)
        self._kept.save(incident.id, watch)
        return incident

    def update(self, incident: Incident, responder_ids: Sequence[str], *, change: str) -> Incident:
        """Tell responders already alerted what the final transcript made of the alert (`update_payload`)."""
        if not responder_ids:
            return incident
        watch = self._watches.get(incident.id)
        now = time.time()
        for rid in responder_ids:
            candidate = (watch.alerted.get(rid) if watch else None) or Candidate(rid)
            self._outbox.put(self._topics.alert(rid), update_payload(incident, candidate, change=change, issued_at=now))
        self._store.record(incident.id, "updated", actor="dispatcher", responders=list(responder_ids), change=change)
        return incident

    def withdraw(self, incident: Incident, responder_ids: Sequence[str], *, change: str) -> Incident:
        """Stand responders down: a retraction on each one's alert topic (`retraction_payload`); they leave the
        incident's assigned and its watch (nobody escalates on their behalf; with nobody left, the ack timer stops)."""
        if not responder_ids:
            return incident
        now = time.time()
        for rid in responder_ids:
            self._outbox.put(self._topics.alert(rid), retraction_payload(incident, change=change, issued_at=now))
            self.withdrawn += 1
        watch = self._watches.get(incident.id)
        if watch is not None:
            for rid in responder_ids:
                watch.alerted.pop(rid, None)
            if not watch.alerted:
                self._stop(watch)
            self._kept.save(incident.id, watch)
        remaining = tuple(r for r in incident.assigned if r not in responder_ids)
        _, after = self._store.amend(incident.id, actor="dispatcher", kind="withdrawn", assigned=remaining,
                                     entry={"responders": list(responder_ids), "change": change})  # fmt: skip
        return after

    def forget(self, incident_id: str) -> None:
        """The incident is no longer dispatched (retracted, or back to 待确认): no timer, no reserve, nobody counted
        as alerted (a later confirmation alerts afresh)."""
        watch = self._watches.pop(incident_id, None)
        if watch is not None:
            self._disarm(watch)
            self._kept.delete(incident_id)

    def resume(self) -> int:
        """After a restart: every open, dispatched incident nobody has accepted gets its timer again, due when it
        was due (when that passed while the service was down: at once, one every OVERDUE_SPACING_S, the longest
        overdue first); the watches of incidents that have ended are dropped. Returns how many timers were armed.
        Needs the running loop."""
        now, armed, overdue = time.time(), 0, 0
        for incident_id, watch in sorted(self._watches.items(), key=lambda item: item[1].due_at or now):
            incident = self._store.get(incident_id)
            if incident is None or incident.status not in OPEN or incident.status == Status.NEEDS_CONFIRMATION:
                self.forget(incident_id)
            elif watch.due_at is not None and not watch.acked:
                late = now - watch.due_at
                delay = -late if late <= 0 else overdue * OVERDUE_SPACING_S
                self._arm(incident_id, delay, due_at=watch.due_at, overdue_s=round(late, 1) if late > 0 else None)
                armed += 1
                overdue += late > 0
        if armed:
            logger.info("escalation resumed for %d incident(s), %d of them overdue", armed, overdue)
        return armed

    def alerted(self, incident_id: str) -> list[str]:
        watch = self._watches.get(incident_id)
        return list(watch.alerted) if watch else []

    def handle_ack(self, ack: Ack) -> Incident | None:
        """An answer from a responder: recorded, moves the lifecycle on, stops (or, declined, hastens) escalation.
        Returns the incident; None when nothing changed: refused (counted in `rejected`: an unknown responder or
        incident, or a responder the incident is not assigned to) or the responder's last answer again."""
        if self._responder_ids and ack.responder_id not in self._responder_ids:
            return self._reject("unknown_responder", ack)
        incident = self._store.get(ack.incident_id)
        if incident is None:
            return self._reject("unknown_incident", ack)
        if ack.responder_id not in incident.assigned:
            return self._reject("not_alerted", ack)
        watch = self._watches.setdefault(incident.id, _Watch(reserve=[]))
        if watch.responses.get(ack.responder_id) == ack.status:
            logger.info("%s of %s for %s again: already taken", ack.status, ack.responder_id, incident.id)
            return None
        watch.responses[ack.responder_id] = str(ack.status)
        self._store.record(incident.id, "ack", actor=ack.responder_id, status=str(ack.status))
        if ack.status == AckStatus.DECLINED:
            watch.alerted.pop(ack.responder_id, None)
            # one who accepted and now declines: unless someone else still stands by an acceptance, nobody is going
            watch.acked = any(answer != AckStatus.DECLINED for answer in watch.responses.values())
            self._kept.save(incident.id, watch)
            if not watch.acked:
                self._escalate(incident.id, reason="declined")
            return self._store.get(incident.id)
        watch.acked = True
        self._stop(watch)
        self._kept.save(incident.id, watch)
        try:
            before, after = self._store.transition(incident.id, ACK_TO_STATUS[ack.status], actor=ack.responder_id)
        except IncidentError:
            return incident  # a late or repeated ack: recorded, the lifecycle has already moved past it
        self._emit(before, after, str(ack.status))
        return after

    async def close(self) -> None:
        """Stop every timer (service shutdown)."""
        for watch in self._watches.values():
            self._disarm(watch)

    def _send(self, incident: Incident, candidates: Sequence[Candidate], *, kind: str, **detail: Any) -> Incident:
        if not candidates:
            return incident
        watch = self._watches[incident.id]
        now = time.time()
        for c in candidates:
            self._outbox.put(
                self._topics.alert(c.responder_id), alert_payload(incident, c, place_name=incident.place_name, issued_at=now)
            )
            watch.alerted[c.responder_id] = c
            self.sent += 1
        sent = [{"id": c.responder_id, "distance_m": c.distance_m, "reason": c.reason} for c in candidates]
        before, after = self._store.assign(
            incident.id, [c.responder_id for c in candidates], actor="dispatcher", kind=kind, sent=sent, **detail
        )
        if kind != "alerted":
            self._emit(before, after, kind)
        return after

    def _arm(self, incident_id: str, delay: float, *, due_at: float | None = None, overdue_s: float | None = None) -> None:
        """(Re)start the incident's timer: escalation in `delay` seconds (`due_at`: the time it was due, kept;
        `overdue_s`: how long past it a restart came, said in the escalation's timeline entry)."""
        watch = self._watches[incident_id]
        self._disarm(watch)
        watch.due_at = time.time() + delay if due_at is None else due_at
        detail = {} if overdue_s is None else {"overdue_s": overdue_s}
        watch.timer = asyncio.get_running_loop().create_task(self._expire(incident_id, delay, detail),
                                                             name=f"ack-timer-{incident_id}")  # fmt: skip

    @staticmethod
    def _disarm(watch: _Watch) -> None:
        """Cancel the timer task only: what is kept still says when escalation is due (shutdown keeps it so)."""
        if watch.timer is not None and watch.timer is not asyncio.current_task():
            watch.timer.cancel()
        watch.timer = None

    def _stop(self, watch: _Watch) -> None:
        """No escalation any more: someone accepted, or nobody is left to alert or to wait for."""
        self._disarm(watch)
        watch.due_at = None

    async def _expire(self, incident_id: str, delay: float, detail: dict[str, Any]) -> None:
        await asyncio.sleep(delay)
        while True:
            try:
                self._escalate(incident_id, reason="no_ack", **detail)
                return
            except StoreUnavailable as e:  # central's PostgreSQL restarting or away: due all the same
                logger.warning("incident %s: escalation due, but the store failed (%s); trying again in %.0f s",
                               incident_id, e, STORE_RETRY_S)  # fmt: skip
                await asyncio.sleep(STORE_RETRY_S)

    def _escalate(self, incident_id: str, *, reason: str, **detail: Any) -> None:
        watch = self._watches[incident_id]
        incident = self._store.get(incident_id)
        if incident is None or incident.status not in OPEN or incident.status == Status.NEEDS_CONFIRMATION:
            return
        while watch.reserve and not self._is_available(watch.reserve[0].responder_id):
            skipped = watch.reserve.pop(0)
            logger.info("incident %s: %s skipped at escalation (no longer available)", incident_id, skipped.responder_id)
        if not watch.reserve:
            logger.warning("incident %s: nobody acknowledged and nobody is left to alert", incident_id)
            self._store.record(incident_id, "unanswered", actor="dispatcher", reason=reason, **detail)
            self._emit(incident, incident, "unanswered")
            self._stop(watch)
            self._kept.save(incident_id, watch)
            return
        # taken off the reserve once sent: a store failing midway tries him again, not the next (failing between his
        # alert's outbox write and the assignment, it alerts him twice, by two outbox messages)
        nxt = watch.reserve[0]
        logger.info("incident %s: %s, escalating to %s", incident_id, reason, nxt.responder_id)
        self._send(incident, [nxt], kind="escalated", reason=reason, after_s=self._ack_timeout, **detail)
        watch.reserve.pop(0)
        self.escalations += 1
        self._arm(incident_id, self._ack_timeout)
        self._kept.save(incident_id, watch)

    def _reject(self, reason: str, ack: Ack) -> None:
        self.rejected[reason] += 1
        logger.warning("ack from %s for %s rejected: %s", ack.responder_id, clip(ack.incident_id), reason)
        return None
