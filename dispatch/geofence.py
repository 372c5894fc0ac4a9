"""Geofences from the positions stream (docs/dispatch.md, "Patrols, geofences and tracks").

- **Leaving the post.** A guard on duty (available: not off duty, not busy, not sent to an open incident) whose fix lies
  farther than `post_radius_m` from his post's place has left his post: raised once per exit (table `post_exits`,
  so a restart does not raise it again), logged and published on the bus (topic "patrol", kind "left_post"); he is
  back when a fix comes within `RETURN_SHARE` of the radius (a little inside it, so a guard standing on the line does
  not flap in and out), kind "returned_post".
- **Arriving at the scene.** A responder sent to an open incident (assigned, not yet on scene) whose fix comes within
  `scene_radius_m` of the incident is on scene: answered through the dispatcher's own answer path, as if his phone
  had sent `on_scene` (`answer`: the timeline's ack, the lifecycle, escalation stopped, the responder engaged), with
  a `geofence` entry beside it in the timeline saying it was his position that answered.
Only a responder's newest fix is judged: a late one says nothing of where he is now.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from bridge.db import migrate
from dispatch.config import GeofenceRules
from dispatch.gazetteer import Jurisdiction, distance_m
from dispatch.incidents import Incident, IncidentStore, Status
from dispatch.positions import Position
from dispatch.responders import ResponderBoard

logger = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE post_exits (
        id INTEGER PRIMARY KEY,
        responder_id TEXT NOT NULL,
        left_at REAL NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        distance_m REAL NOT NULL,
        returned_at REAL
    );
    CREATE INDEX post_exits_open ON post_exits (responder_id, returned_at);
    """
]
RETURN_SHARE = 0.8  # back at the post within this share of the radius
# incidents whose responders may still arrive (on scene: the first is there, others may follow)
ON_THE_WAY = (Status.DISPATCHED, Status.ACKNOWLEDGED, Status.ON_SCENE)
RECENT_S = 12 * 3600  # exits the console is shown

Answer = Callable[[str, str], None]  # (responder id, incident id): record his on_scene answer


class Geofences:
    def __init__(
        self,
        conn: sqlite3.Connection,
        rules: GeofenceRules,
        jurisdiction: Jurisdiction,
        board: ResponderBoard,
        incidents: IncidentStore,
        answer: Answer,
        *,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        migrate(conn, "dispatch.geofence", MIGRATIONS)
        self._conn = conn
        self._rules = rules
        self._jurisdiction = jurisdiction
        self._board = board
        self._incidents = incidents
        self._answer = answer
        self._publish = publish or (lambda topic, data: None)
        self._clock = clock
        self._newest: dict[str, float] = {}  # responder id -> the time of the newest fix judged

    def on_position(self, position: Position) -> None:
        if position.ts < self._newest.get(position.responder_id, 0.0):
            return
        self._newest[position.responder_id] = position.ts
        if self._rules.post_radius_m is not None:
            self._post(position, self._rules.post_radius_m)
        if self._rules.scene_radius_m is not None:
            self._scene(position, self._rules.scene_radius_m)

    # --- the post --------------------------------------------------------------------------------------------------

    def _post(self, p: Position, radius: float) -> None:
        responder = self._jurisdiction.responder(p.responder_id)
        if responder.role != "guard":
            return
        post = self._jurisdiction.place(responder.post)
        away = distance_m(p.lat, p.lon, post.lat, post.lon)
        open_exit = self._conn.execute(
            "SELECT id FROM post_exits WHERE responder_id = ? AND returned_at IS NULL", (p.responder_id,)
        ).fetchone()
        if open_exit is not None:
            if away <= radius * RETURN_SHARE:
                with self._conn:
                    self._conn.execute("UPDATE post_exits SET returned_at = ? WHERE id = ?", (p.ts, open_exit["id"]))
                logger.info("%s is back at his post %s", p.responder_id, post.name)
                self._publish("patrol", self._exit_view(open_exit["id"]) | {"kind": "returned_post"})
            return
        # off duty he may go where he likes; busy, or alerted for an incident and not answered yet, he was sent
        if away > radius and self._board.status(p.responder_id) == "available" and not self._on_the_way(p.responder_id):
            with self._conn:
                exit_id = self._conn.execute(
                    "INSERT INTO post_exits (responder_id, left_at, lat, lon, distance_m) VALUES (?, ?, ?, ?, ?)",
                    (p.responder_id, p.ts, p.lat, p.lon, away),
                ).lastrowid
            logger.warning("%s has left his post %s: %.0f m away", p.responder_id, post.name, away)
            self._publish("patrol", self._exit_view(exit_id) | {"kind": "left_post"})

    def exits(self) -> list[dict[str, Any]]:
        """The exits of the last RECENT_S and those still open, newest first (the console's 离岗 list)."""
        rows = self._conn.execute(
            "SELECT id FROM post_exits WHERE left_at >= ? OR returned_at IS NULL ORDER BY id DESC",
            (self._clock() - RECENT_S,),
        ).fetchall()
        return [self._exit_view(r["id"]) for r in rows]

    def _exit_view(self, exit_id: int) -> dict[str, Any]:
        row = self._conn.execute("SELECT * FROM post_exits WHERE id = ?", (exit_id,)).fetchone()
        try:
            responder = self._jurisdiction.responder(row["responder_id"])
            name, post = responder.name, self._jurisdiction.place(responder.post).name
        except KeyError:  # taken out of the registry since
            name, post = row["responder_id"], ""
        return {"id": row["id"], "responder_id": row["responder_id"], "name": name, "post": post,
                "left_at": row["left_at"], "returned_at": row["returned_at"], "distance_m": round(row["distance_m"]),
                "lat": row["lat"], "lon": row["lon"]}  # fmt: skip

    # --- the scene -------------------------------------------------------------------------------------------------

    def _scene(self, p: Position, radius: float) -> None:
        for incident in self._on_the_way(p.responder_id):
            if incident.lat is None or incident.lon is None:
                continue
            away = distance_m(p.lat, p.lon, incident.lat, incident.lon)
            if away > radius or self._already_there(incident, p.responder_id):
                continue
            logger.info("%s arrived at %s (%.0f m from the scene): on scene", p.responder_id, incident.id, away)
            self._incidents.record(incident.id, "geofence", actor=p.responder_id, status="on_scene", distance_m=round(away))
            self._answer(p.responder_id, incident.id)

    def _on_the_way(self, responder_id: str) -> list[Incident]:
        """The open incidents he is sent to (asked of the database for him alone: this runs for every fix)."""
        rows = self._conn.execute(
            f"SELECT id FROM incidents WHERE status IN ({', '.join('?' * len(ON_THE_WAY))}) "
            "AND EXISTS (SELECT 1 FROM json_each(incidents.assigned) a WHERE a.value = ?)",
            (*map(str, ON_THE_WAY), responder_id),
        ).fetchall()
        return [i for i in (self._incidents.get(r["id"]) for r in rows) if i is not None]

    def _already_there(self, incident: Incident, responder_id: str) -> bool:
        """He answered on_scene already (his phone, or his position before)."""
        return any(e.actor == responder_id and e.kind in ("ack", "geofence") and e.detail.get("status") == "on_scene"
                   for e in self._incidents.timeline(incident.id))  # fmt: skip
