"""The demo's patrol walks (dispatch/demo_tracks.py) in real SQLite: the demo route's rounds of the last hours walked
through the patrols' own check-in rule, the latest with its last point skipped and raised as missed, a track to
replay, nothing walked twice, and nothing written for any jurisdiction but the demo's."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import yaml

from bridge.config import load_config
from bridge.db import connect
from dispatch import demo_tracks
from dispatch.gazetteer import load_jurisdiction
from dispatch.patrols import PatrolDesk
from dispatch.tracks import read_track
from tests.support.broker import JURISDICTION

REPO = Path(__file__).resolve().parents[2]


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_the_demo_guard_walks_the_last_rounds_and_skips_a_point_in_the_latest(tmp_path: Path) -> None:
    config, jurisdiction = load_config(REPO / "config" / "demo.yaml"), load_jurisdiction(JURISDICTION)
    conn = connect(tmp_path / "db")
    now = at("2026-12-05T12:30")  # the rounds of 06:00, 08:00 and 10:00 are over (12:00's still open)
    assert demo_tracks.seed(conn, config, jurisdiction, now=now) > 20
    desk = PatrolDesk(conn, config.dispatch.patrols, jurisdiction, clock=lambda: now)
    view = desk.view()
    rounds = {r["start"]: r for r in view["routes"][0]["rounds"]}
    assert [c["point"] for c in rounds[at("2026-12-05T08:00")]["checkins"]] == [0, 1, 2, 3]
    assert rounds[at("2026-12-05T08:00")]["state"] == "done"
    assert [c["point"] for c in rounds[at("2026-12-05T10:00")]["checkins"]] == [0, 1, 2]
    assert [(m["point_name"], m["round_start"]) for m in view["missed"]] == [("东门", at("2026-12-05T10:00"))]
    track = read_track(conn, "g-gaoqiao", at("2026-12-05T08:00"), at("2026-12-05T09:00"))
    assert (track[0].lat, track[0].lon) == (34.2708, 108.9824) and len(track) > 10  # from 高桥警务点, on foot
    assert demo_tracks.seed(conn, config, jurisdiction, now=now) == 0  # walked already


def test_it_refuses_any_jurisdiction_but_the_demos(tmp_path: Path) -> None:
    other = tmp_path / "jurisdiction.yaml"
    other.write_text(JURISDICTION.read_text(encoding="utf-8"), encoding="utf-8")
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text(encoding="utf-8"))
    config |= {"jurisdiction": str(other), "storage": {"data_dir": str(tmp_path / "data")}}
    config.pop("broker")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert demo_tracks.main(["--config", str(path)]) == 2
    assert not (tmp_path / "data").exists()
