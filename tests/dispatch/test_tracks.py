"""The position history kept for track replay (dispatch/tracks.py), in a real SQLite database (a box) and a real
PostgreSQL (central): what is read back, and the two bounds (retention, fixes per responder) that keep a location
history from growing without end."""

from __future__ import annotations

from bridge.db import Connection
from dispatch.positions import Position
from dispatch.tracks import TrackStore

NOW = 1_780_000_000.0


def store(conn: Connection, **kwargs: float) -> TrackStore:
    return TrackStore(conn, clock=lambda: NOW, **kwargs)


def test_a_track_is_the_responders_fixes_of_the_range_oldest_first(state_db: Connection) -> None:
    tracks = store(state_db)
    for ts in (NOW - 30, NOW - 10, NOW - 20):  # one arrives late: it is where he was then, kept in its place
        tracks.record(Position("g-huaniao", 34.27, 108.99 + (NOW - ts) / 1e4, ts, 8.0))
    tracks.record(Position("g-yeshi", 34.0, 108.0, NOW - 15))
    tracks.record(Position("g-huaniao", 34.0, 108.0, NOW - 100))  # before the range
    track = tracks.track("g-huaniao", NOW - 60, NOW)
    assert [(p.ts, round(p.lon, 6)) for p in track] == [(NOW - 30, 108.993), (NOW - 20, 108.992), (NOW - 10, 108.991)]
    assert track[0].acc == 8.0
    assert tracks.track("g-nobody", NOW - 60, NOW) == []


def test_fixes_past_retention_and_beyond_the_per_responder_bound_are_deleted(state_db: Connection) -> None:
    tracks = store(state_db, retention_days=1, max_fixes=100)
    tracks.record(Position("g-huaniao", 34.0, 108.0, NOW - 2 * 86400))  # two days old
    for k in range(150):
        tracks.record(Position("g-yeshi", 34.0, 108.0, NOW - 1000 + k))
    tracks.record(Position("g-huaniao", 34.0, 108.0, NOW - 5))
    assert tracks.prune() == 1 + 50
    assert [p.ts for p in tracks.track("g-huaniao", 0, NOW)] == [NOW - 5]
    kept = tracks.track("g-yeshi", 0, NOW)
    assert len(kept) == 100 and kept[0].ts == NOW - 1000 + 50  # the newest 100


def test_the_bounds_are_kept_as_fixes_come_in(state_db: Connection) -> None:
    tracks = store(state_db, max_fixes=100)
    for k in range(600):  # past PRUNE_EVERY (500): pruned once on the way, without anyone asking
        tracks.record(Position("g-yeshi", 34.0, 108.0, NOW - 1000 + k))
    assert len(tracks.track("g-yeshi", 0, NOW)) == 200  # 100 after the pruning at the 500th, then 100 more
