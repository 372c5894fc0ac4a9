"""Where each responder has been: every accepted GPS fix kept for a while, for track replay (docs/dispatch.md,
"Patrols, geofences and tracks").

`ResponderBoard` holds only each responder's latest fix (what ranking needs); `TrackStore` keeps the history beside
it, bounded two ways because a location history is personal data and a phone may send a fix a second: fixes older than
`retention_days` are deleted, and so are a responder's oldest beyond `max_fixes` (a phone gone wild fills no disk).
Both are enforced as fixes come in (every PRUNE_EVERY of them) and when the service starts.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bridge.db import migrate
from dispatch.positions import Position

logger = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE position_history (
        seq INTEGER PRIMARY KEY,
        responder_id TEXT NOT NULL,
        ts REAL NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        acc REAL
    );
    CREATE INDEX position_history_responder ON position_history (responder_id, ts);
    CREATE INDEX position_history_ts ON position_history (ts);
    """
]
PRUNE_EVERY = 500  # fixes recorded between two prunings
MAX_TRACK_POINTS = 20_000  # one query's points (a day at one fix every 5 s: 17,280)


@dataclass(slots=True, frozen=True)
class TrackPoint:
    ts: float
    lat: float
    lon: float
    acc: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrackStore:
    """The fixes of every responder, bounded by age and by count per responder."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        retention_days: float = 30.0,
        max_fixes: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        migrate(conn, "dispatch.tracks", MIGRATIONS)
        self._conn = conn
        self.retention_s = retention_days * 86400
        self.max_fixes = max_fixes
        self._clock = clock
        self._since_pruned = 0

    def record(self, position: Position) -> None:
        """Keep one accepted fix (an older one arriving late is kept too: it is where the responder was then)."""
        with self._conn:
            self._conn.execute(
                "INSERT INTO position_history (responder_id, ts, lat, lon, acc) VALUES (?, ?, ?, ?, ?)",
                (position.responder_id, position.ts, position.lat, position.lon, position.acc),
            )
        self._since_pruned += 1
        if self._since_pruned >= PRUNE_EVERY:
            self.prune()

    def prune(self) -> int:
        """Delete what retention and the per-responder bound no longer allow; returns how many fixes went."""
        self._since_pruned = 0
        with self._conn:
            gone = self._conn.execute("DELETE FROM position_history WHERE ts < ?", (self._clock() - self.retention_s,)).rowcount
            crowded = self._conn.execute(
                "SELECT responder_id FROM position_history GROUP BY responder_id HAVING COUNT(*) > ?", (self.max_fixes,)
            ).fetchall()
            for (rid,) in crowded:
                gone += self._conn.execute(
                    "DELETE FROM position_history WHERE responder_id = ? AND seq NOT IN (SELECT seq FROM position_history "
                    "WHERE responder_id = ? ORDER BY ts DESC LIMIT ?)",
                    (rid, rid, self.max_fixes),
                ).rowcount
        if gone:
            logger.info("position history: %d fix(es) past retention or the per-responder bound deleted", gone)
        return gone

    def track(self, responder_id: str, since: float, until: float) -> list[TrackPoint]:
        return read_track(self._conn, responder_id, since, until)


def read_track(conn: sqlite3.Connection, responder_id: str, since: float, until: float) -> list[TrackPoint]:
    """The responder's fixes taken in [since, until], oldest first; the newest MAX_TRACK_POINTS when there are more.
    Any connection to the service's database (the web's own, read-only, in a worker thread)."""
    rows = conn.execute(
        "SELECT ts, lat, lon, acc FROM position_history WHERE responder_id = ? AND ts BETWEEN ? AND ? "
        "ORDER BY ts DESC LIMIT ?",
        (responder_id, since, until, MAX_TRACK_POINTS),
    ).fetchall()
    return [TrackPoint(r["ts"], r["lat"], r["lon"], r["acc"]) for r in reversed(rows)]
