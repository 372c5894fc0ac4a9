"""Patrol walks for `make run`'s demo, so that track replay (轨迹回放) and the console's 巡更 panel have something in
them before anyone shares a phone's position.

DEMO DATA, for the demo only: scripts/run-demo.sh runs it before the service, with config/demo.yaml; `jingbao run`
never does, and it refuses any jurisdiction but the demo's. For each round of the config's patrol routes that ended in
the last WINDOW_H hours untouched (no check-in, nothing raised as missed), the route's first patroller walks it: a
made-up fix every FIX_EVERY_S seconds at walking pace from point to point, written to the position history
(dispatch/tracks.py) and put through the patrols' own check-in rule (`PatrolDesk.on_position`: the same radius and
round), except that in the latest such round he skips the last point, which is then raised as missed
(`PatrolDesk.raise_missed`) as the service would have. Running it again walks only the rounds since.

Usage: python -m dispatch.demo_tracks --config config/demo.yaml
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import sqlite3
import sys
import time
from pathlib import Path

from bridge.config import Config, load_config
from bridge.db import connect
from dispatch.demo_history import DEMO_JURISDICTION
from dispatch.gazetteer import Jurisdiction, distance_m, load_jurisdiction
from dispatch.patrols import PatrolDesk, Round, rounds
from dispatch.positions import Position
from dispatch.tracks import TrackStore

logger = logging.getLogger(__name__)

WINDOW_H = 6
FIX_EVERY_S = 20.0
PACE_M_S = 1.1  # a guard walking his round, looking about


def seed(conn: sqlite3.Connection, config: Config, jurisdiction: Jurisdiction, now: float | None = None) -> int:
    """Walk the rounds of the last WINDOW_H hours not walked yet; returns how many fixes were written."""
    now = time.time() if now is None else now
    rules = config.dispatch.patrols
    # the desk's clock starts at the window's start: rounds in it are watched, so the skipped point is raised
    clock = [now - WINDOW_H * 3600]
    desk = PatrolDesk(conn, rules, jurisdiction, clock=lambda: clock[0])
    tracks = TrackStore(conn, retention_days=config.dispatch.tracks.retention_days)
    written = 0
    for route in rules.routes:
        due = [r for r in rounds(route, now - WINDOW_H * 3600, now) if r.end <= now and _untouched(conn, desk, r, now)]
        for k, rnd in enumerate(due):
            points = route.points[:-1] if k == len(due) - 1 else route.points  # the latest: one point skipped
            for fix in _walk(route.patrollers[0], rnd, [(p.lat, p.lon) for p in points]):
                tracks.record(fix)
                desk.on_position(fix)
                written += 1
    clock[0] = now
    desk.raise_missed()
    return written


def _untouched(conn: sqlite3.Connection, desk: PatrolDesk, rnd: Round, now: float) -> bool:
    """Nobody checked a point of the round in, and the service raised none of it as missed."""
    missed = conn.execute("SELECT 1 FROM patrol_missed WHERE route_id = ? AND round_start = ?", (rnd.route.id, rnd.start))
    return not desk.round_view(rnd, now)["checkins"] and missed.fetchone() is None


def _walk(responder_id: str, rnd: Round, stops: list[tuple[float, float]]) -> list[Position]:
    """Fixes along `stops` from a few minutes into the round, FIX_EVERY_S apart, at PACE_M_S, a fix at each stop."""
    fixes, ts = [], rnd.start + 180
    for (a_lat, a_lon), (b_lat, b_lon) in itertools.pairwise(stops):
        steps = max(1, math.ceil(distance_m(a_lat, a_lon, b_lat, b_lon) / (PACE_M_S * FIX_EVERY_S)))
        for s in range(steps):
            f = s / steps
            fixes.append(Position(responder_id, a_lat + (b_lat - a_lat) * f, a_lon + (b_lon - a_lon) * f, ts, 8.0))
            ts += FIX_EVERY_S
    fixes.append(Position(responder_id, *stops[-1], ts, 8.0))
    return fixes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = load_config(args.config)
    if config.jurisdiction.resolve() != DEMO_JURISDICTION:
        logger.error("demo walks go into the demo jurisdiction (%s) only, not %s", DEMO_JURISDICTION, config.jurisdiction)
        return 2
    written = seed(connect(config.storage.database), config, load_jurisdiction(config.jurisdiction))
    if written:
        logger.info("demo patrols: %d made-up fixes of the last %d hours' rounds written", written, WINDOW_H)
    return 0


if __name__ == "__main__":
    sys.exit(main())
