"""A few days of made-up incident history for `make run`'s demo, so that its statistics page (统计) is not empty.

DEMO DATA, for the demo only: scripts/run-demo.sh runs it before the service, with config/demo.yaml; `jingbao run`
never does, and it refuses any jurisdiction but the demo's. Every incident it writes has an id starting `DEMO-`, the
words （演示历史数据） in its text, `demo: true` in its first timeline entry and the actor `demo-history` for what
the dispatcher would have done.

Each of the `days` days before today gets 7-15 incidents (drawn from a generator seeded by the date, so a day's
history is the same whenever it is made), busier in the evening, at the jurisdiction's places, each with a
timeline as the service writes one: reported, alerted (the place's guard and the grid's chief), answers (some late,
some declined, some never), on scene, resolved with an operator's note; a few false alarms and follow-ups. A day
that already has its demo history is left alone, so running it again adds only the days since. No radio traffic is
made up: the archive is hash-chained evidence and gets no fake utterances; the channels' traffic shown is the
demo's own, from the moment it runs.

Usage: python -m dispatch.demo_history --config config/demo.yaml [--days 6]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sqlite3
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

from bridge.config import load_config
from bridge.db import connect
from dispatch.gazetteer import Jurisdiction, Place, Responder, load_jurisdiction
from dispatch.incidents import Incident, IncidentStore, Status

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEMO_JURISDICTION = REPO / "config" / "jurisdiction.yaml"
MARK = "（演示历史数据）"
ACTOR = "demo-history"
# type -> (priority, weight, how it is reported)
TYPES = {
    "fight": ("high", 14, "{}有人打架"), "theft": ("medium", 12, "{}有人偷东西"), "dispute": ("medium", 14, "{}有人吵架闹事"),
    "noise": ("low", 8, "{}噪音扰民"), "medical": ("high", 8, "{}有人晕倒了"), "suspicious": ("medium", 9, "{}有可疑人员"),
    "traffic": ("medium", 7, "{}发生交通事故"), "missing": ("high", 4, "{}有小孩走失"), "fraud": ("medium", 4, "{}有人诈骗"),
    "gathering": ("high", 3, "{}有人员聚集"), "fire": ("critical", 2, "{}着火了"), "domestic": ("high", 3, "{}有家庭纠纷"),
}  # fmt: skip
# relative weight of each hour of the day: quiet at night, busy at noon and in the evening (the night market)
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 5, 6, 5, 4, 4, 5, 6, 8, 9, 9, 7, 4, 2]
PLACE_KINDS = ("market", "school", "enterprise", "street", "compound", "landmark", "transit")
CHANNEL_OF_KIND = {"market": "ch-market", "compound": "ch-market", "street": "ch-market", "school": "ch-school",
                   "enterprise": "ch-enterprise", "landmark": "ch-volunteer", "transit": "ch-police"}  # fmt: skip
NOTES = ["已到场处置，双方已劝离", "已调解，双方和解", "已移交派出所处理", "现场已恢复正常", "已联系家属接回", "已登记，后续回访"]


def seed(conn: sqlite3.Connection, jurisdiction: Jurisdiction, days: int, today: date | None = None) -> int:
    """Write the demo history of the `days` days before `today` that have none yet; returns how many incidents."""
    store = IncidentStore(conn)
    today = today or date.today()
    written = 0
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        prefix = f"DEMO-{day:%Y%m%d}-"
        if conn.execute("SELECT 1 FROM incidents WHERE id LIKE ? LIMIT 1", (prefix + "%",)).fetchone():
            continue
        rng = random.Random(day.toordinal())
        for n, at in enumerate(sorted(_times(rng, day))):
            _incident(conn, store, jurisdiction, rng, f"{prefix}{n:03d}", at)
            written += 1
    return written


def _times(rng: random.Random, day: date) -> list[float]:
    midnight = datetime(day.year, day.month, day.day).timestamp()
    hours = rng.choices(range(24), weights=HOUR_WEIGHTS, k=rng.randint(7, 15))
    return [midnight + h * 3600 + rng.uniform(0, 3600) for h in hours]


def _incident(conn: sqlite3.Connection, store: IncidentStore, j: Jurisdiction, rng: random.Random, id_: str,
              at: float) -> None:  # fmt: skip
    type_ = rng.choices(list(TYPES), weights=[w for _, w, _ in TYPES.values()])[0]
    priority, _, phrase = TYPES[type_]
    place = rng.choice([p for p in j.places if p.kind in PLACE_KINDS])
    text = phrase.format(place.name) + MARK
    store.create(Incident(id_, type_, priority, Status.REPORTED, at, at, place.id, place.name, lat=place.lat,
                          lon=place.lon, location_confidence=0.9, text=text, channel=CHANNEL_OF_KIND[place.kind]),
                 actor=ACTOR)  # fmt: skip
    conn.execute("UPDATE incident_timeline SET detail = ? WHERE incident_id = ?", (json.dumps({"demo": True}), id_))
    status, alerted = Status.REPORTED, _alerted(j, place)
    entries: list[tuple[float, str, str, dict]] = []

    def move(ts: float, actor: str, to: Status, note: str = "") -> None:
        nonlocal status
        entries.append((ts, actor, "status", {"from": str(status), "to": str(to)} | ({"note": note} if note else {})))
        status = to

    t = at + rng.uniform(0.3, 3.0)  # the dispatcher alerts within seconds of the report
    entries.append((t, "dispatcher", "alerted", {"responders": [r.id for r in alerted], "demo": True}))
    move(t, "dispatcher", Status.DISPATCHED)
    answers = sorted((t + rng.lognormvariate(4.0, 0.7), r, rng.random()) for r in alerted)
    first_on_scene = None
    for when, who, luck in answers:
        if luck < 0.07:
            entries.append((when, who.id, "ack", {"status": "declined"}))
        elif luck < 0.14:
            continue  # never answered
        else:
            entries.append((when, who.id, "ack", {"status": "ack"}))
            if status == Status.DISPATCHED:
                move(when, who.id, Status.ACKNOWLEDGED)
            arrive = when + rng.lognormvariate(5.6, 0.5)  # ~4.5 minutes on the way
            entries.append((arrive, who.id, "ack", {"status": "on_scene"}))
            first_on_scene = min(first_on_scene or arrive, arrive)
    if rng.random() < 0.06:
        move((first_on_scene or t) + rng.uniform(120, 600), "operator", Status.CLOSED_FALSE_ALARM, "核实为误报")
    else:  # nobody answering: the operator sends the patrol by phone and sets on scene himself (no ack recorded)
        first_on_scene = first_on_scene or t + rng.uniform(300, 900)
        move(first_on_scene, "operator", Status.ON_SCENE)
        done = first_on_scene + rng.lognormvariate(7.2, 0.6)  # ~22 minutes on scene
        note = rng.choice(NOTES)
        entries.append((done - 1, "operator", "note", {"text": note}))
        move(done, "operator", Status.RESOLVED, note)
        if type_ in ("dispute", "domestic") and rng.random() < 0.5:
            move(done + rng.uniform(86400 * 0.5, 86400), "operator", Status.FOLLOWED_UP)
    entries.sort(key=lambda e: e[0])
    with conn:
        conn.executemany(
            "INSERT INTO incident_timeline (incident_id, ts, actor, kind, detail) VALUES (?, ?, ?, ?, ?)",
            [(id_, ts, actor, kind, json.dumps(detail, ensure_ascii=False)) for ts, actor, kind, detail in entries],
        )
        conn.execute("UPDATE incidents SET status = ?, updated_at = ?, assigned = ? WHERE id = ?",
                     (str(status), entries[-1][0], json.dumps([r.id for r in alerted]), id_))  # fmt: skip


def _alerted(j: Jurisdiction, place: Place) -> list[Responder]:
    """Who the dispatcher would alert: the guards posted at the place (or at what contains it), else a volunteer or
    grid worker of its grid; and the grid's police chief; with neither, the first patrol officer."""
    here = {place.id, *j.ancestors(place.id)}
    guards = [r for r in j.responders if r.role == "guard" and r.post in here]
    if not guards:
        guards = [r for r in j.responders if r.role in ("volunteer", "grid_worker") and j.grid_of(r.post) == place.grid][:1]
    chief = [r for r in j.responders if r.role == "chief" and j.grid_of(r.post) == place.grid]
    patrol = [r for r in j.responders if r.role == "officer"][:1] if not guards and not chief else []
    return [*guards, *chief[:1], *patrol]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--days", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = load_config(args.config)
    if config.jurisdiction.resolve() != DEMO_JURISDICTION:
        logger.error("demo history goes into the demo jurisdiction (%s) only, not %s", DEMO_JURISDICTION, config.jurisdiction)
        return 2
    conn = connect(config.storage.database)
    written = seed(conn, load_jurisdiction(config.jurisdiction), args.days)
    if written:
        logger.info("demo history: %d made-up incidents of the last %d days written (ids DEMO-…)", written, args.days)
    return 0


if __name__ == "__main__":
    sys.exit(main())
