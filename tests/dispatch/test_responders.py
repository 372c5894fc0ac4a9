"""Who is alerted: nearest available guards, the grid's chief first, radius, stale fixes, unknown ids; statuses kept on
SQLite (a box) and PostgreSQL (central)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.db import Connection, connect
from dispatch.config import ResponderRules
from dispatch.gazetteer import Jurisdiction, distance_m
from dispatch.positions import PayloadError
from dispatch.responders import STATUSES, ResponderBoard, StatusStore, UnknownResponderError, parse_status, recommend

NOW = 1_700_000_000.0


@pytest.fixture
def board(jurisdiction: Jurisdiction) -> ResponderBoard:
    return ResponderBoard(jurisdiction, clock=lambda: NOW)


def ids(recs) -> list[str]:
    return [r.responder.id for r in recs]


def test_nearest_guards_and_grid_chief(jurisdiction: Jurisdiction, board: ResponderBoard) -> None:
    recs = recommend(jurisdiction.place("piju-city"), board)
    assert ids(recs) == ["g-piju", "g-gaoqiao", "p-xu-zhen"]  # guards on the spot, then 永定社区's chief
    assert [r.reason for r in recs] == ["guard", "guard", "grid_chief"]
    assert [r.distance_m for r in recs] == sorted(r.distance_m for r in recs)
    assert recs[0].distance_m == 0 and recs[0].position == "post"
    assert recs[0].to_dict() == {"id": "g-piju", "role": "guard", "distance_m": 0, "reason": "guard", "position": "post"}


def test_busy_and_off_duty_are_skipped(jurisdiction: Jurisdiction, board: ResponderBoard) -> None:
    board.set_status("g-piju", "busy")
    board.set_status("p-xu-zhen", "off_duty")
    recs = recommend(jurisdiction.place("piju-city"), board)
    assert "g-piju" not in ids(recs) and "p-xu-zhen" not in ids(recs)
    assert [r.responder.id for r in recs if r.reason == "guard"] == ["g-gaoqiao", "g-dfyey"]
    police = [r for r in recs if r.reason == "police"]
    assert [r.responder.id for r in police] == ["p-patrol-2"]  # no chief free: the nearest patrol instead
    board.set_status("g-piju", "available")
    assert "g-piju" in ids(recommend(jurisdiction.place("piju-city"), board))


def test_grid_chief_unavailable_patrol_before_another_communitys_chief(
    jurisdiction: Jurisdiction, board: ResponderBoard
) -> None:
    # 西光中学 (西光社区): 公园北路社区's chief (787 m) is nearer than patrol 1 (909 m), but answers for his own grid
    school = jurisdiction.place("xiguang-zhongxue")
    rules = ResponderRules(guards=0, police=1)
    assert [(r.responder.id, r.reason) for r in recommend(school, board, rules)] == [("p-li-xuyang", "grid_chief")]
    board.set_status("p-li-xuyang", "busy")
    assert ids(recommend(school, board, rules)) == ["p-patrol-1"]
    two = recommend(school, board, ResponderRules(guards=0, police=2))
    assert sorted(ids(two)) == ["p-patrol-1", "p-patrol-2"]  # both patrols before any other chief
    board.set_status("p-patrol-1", "off_duty")
    board.set_status("p-patrol-2", "busy")
    assert ids(recommend(school, board, rules)) == ["p-zhan-zhengyou"]  # no officer free: the nearest chief after all
    nearest_any = recommend(school, board, ResponderRules(guards=0, police=1, grid_chief_first=False))
    assert ids(nearest_any) == ["p-zhan-zhengyou"]


def test_fresh_fix_is_used_stale_fix_falls_back_to_post(jurisdiction: Jurisdiction, board: ResponderBoard) -> None:
    place = jurisdiction.place("xiguang-zhongxue")
    far = jurisdiction.place("hansenzhai-jiaju")
    rules = ResponderRules(guards=1, police=0, position_max_age_s=300)
    assert ids(recommend(place, board, rules)) == ["g-xgzx"]
    board.update_position("g-xgzx", far.lat, far.lon, ts=NOW - 10, acc=5)  # the school's guard walked away
    assert ids(recommend(place, board, rules)) != ["g-xgzx"]
    board.update_position("g-jiaju", place.lat, place.lon, ts=NOW - 60)  # the furniture market's guard is here
    recs = recommend(place, board, rules)
    assert (ids(recs), recs[0].position, round(recs[0].distance_m)) == (["g-jiaju"], "gps", 0)
    assert ids(recommend(place, board, rules, now=NOW + 600)) == ["g-xgzx"]  # both fixes stale: back to posts
    assert not board.update_position("g-jiaju", far.lat, far.lon, ts=NOW - 3600)  # an older fix does not win


def test_radius(jurisdiction: Jurisdiction, board: ResponderBoard) -> None:
    place = jurisdiction.place("meishijie")
    tight = recommend(place, board, ResponderRules(radius_m=250, guards=5))
    assert tight and all(r.distance_m <= 250 for r in tight)
    assert len(tight) < len(recommend(place, board, ResponderRules(radius_m=5000, guards=5)))
    assert recommend(place, board, ResponderRules(radius_m=1)) == []


def test_rules_guard_count_roles_and_exclusions(jurisdiction: Jurisdiction, board: ResponderBoard) -> None:
    place = jurisdiction.place("meishijie")
    assert len([r for r in recommend(place, board, ResponderRules(guards=4)) if r.reason == "guard"]) == 4
    with_volunteers = recommend(place, board, ResponderRules(guards=1, police=0, guard_roles=["guard", "volunteer"]))
    assert ids(with_volunteers) == ["v-yeshi"]  # the night-market patrol is posted on 美食街
    first = recommend(place, board, ResponderRules(guards=1, police=1))
    again = recommend(place, board, ResponderRules(guards=1, police=1), exclude=ids(first))  # escalation: next nearest
    assert not set(ids(first)) & set(ids(again)) and len(again) == 2
    two_police = recommend(place, board, ResponderRules(guards=0, police=2))
    assert [r.reason for r in two_police].count("grid_chief") == 1 and len(two_police) == 2


def test_place_without_grid_gets_nearest_police(jurisdiction: Jurisdiction, board: ResponderBoard) -> None:
    station = jurisdiction.place("paichusuo")
    police = [r for r in recommend(station, board) if r.reason != "guard"]
    assert ids(police) == ["p-patrol-1"] and police[0].distance_m == pytest.approx(0, abs=1)


def test_unknown_ids_and_bad_values_are_clear_errors(board: ResponderBoard) -> None:
    with pytest.raises(UnknownResponderError, match="unknown responder id 'ghost'") as e:
        board.update_position("ghost", 34.0, 108.0, NOW)
    assert isinstance(e.value, KeyError)
    with pytest.raises(KeyError):
        board.set_status("ghost", "busy")
    with pytest.raises(ValueError, match="status must be one of"):
        board.set_status("g-piju", "asleep")
    with pytest.raises(ValueError, match="impossible position"):
        board.update_position("g-piju", 134.0, 108.0, NOW)


def test_snapshot_for_the_console(jurisdiction: Jurisdiction, board: ResponderBoard) -> None:
    board.update_position("g-piju", 34.2717, 108.9837, NOW - 5, acc=8)
    snap = {r["id"]: r for r in board.snapshot(max_age_s=300)}
    assert len(snap) == len(jurisdiction.responders)
    assert snap["g-piju"]["position"] == "gps" and snap["g-gaoqiao"]["position"] == "post"
    assert distance_m(snap["g-piju"]["lat"], snap["g-piju"]["lon"], 34.2717, 108.9837) == 0


def test_acknowledgement_makes_busy_until_the_incident_ends(jurisdiction: Jurisdiction, board: ResponderBoard) -> None:
    place = jurisdiction.place("piju-city")
    board.engage("g-piju", "INC-1")
    assert board.status("g-piju") == "busy" and board.engaged_on("g-piju") == "INC-1"
    assert "g-piju" not in ids(recommend(place, board))
    board.engage("g-gaoqiao", "INC-1")
    board.engage("g-gaoqiao", "INC-2")  # acknowledged another incident since
    board.engage("g-dfyey", "INC-1")
    board.set_status("g-dfyey", "off_duty")  # his own word wins over the acknowledgement
    assert board.release("INC-1") == ["g-piju"]
    assert [board.status(r) for r in ("g-piju", "g-gaoqiao", "g-dfyey")] == ["available", "busy", "off_duty"]
    assert board.release("INC-9") == []
    with pytest.raises(UnknownResponderError):
        board.engage("ghost", "INC-1")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"status": "busy"}', "busy"),
        (b'{"status": "off-duty"}', "off_duty"),
        (b'{"status": "off_duty", "note": "sick"}', "off_duty"),
        (b"busy", "bad_json"),
        (b'"busy"', "bad_shape"),
        (b'{"status": "asleep"}', "bad_type"),
        (b"{}", "bad_type"),
    ],
)
def test_parse_status(payload: bytes, expected: str) -> None:
    if expected in STATUSES:
        assert parse_status(payload) == expected
    else:
        with pytest.raises(PayloadError) as e:
            parse_status(payload)
        assert e.value.reason == expected


def test_statuses_and_engagements_outlive_a_restart(jurisdiction: Jurisdiction, tmp_path: Path) -> None:
    store = StatusStore(connect(tmp_path / "j.db"))
    board = ResponderBoard(jurisdiction, on_change=store.save)
    board.set_status("g-piju", "off_duty")
    board.engage("g-gaoqiao", "INC-1")
    board.engage("g-yeshi", "INC-2")
    board.release("INC-2")
    again = ResponderBoard(jurisdiction)
    again.restore(StatusStore(connect(tmp_path / "j.db")).load() | {"someone-gone": ("busy", None)})
    assert [again.status(r) for r in ("g-piju", "g-gaoqiao", "g-yeshi", "g-dongjiao")] == [
        "off_duty", "busy", "available", "available"]  # fmt: skip
    assert again.engaged_on("g-gaoqiao") == "INC-1" and again.release("INC-1") == ["g-gaoqiao"]


def test_the_store_keeps_each_responders_latest_status_and_engagement(state_db: Connection) -> None:
    store = StatusStore(state_db)
    assert store.load() == {}
    store.save("g-piju", "busy", "INC-1")
    store.save("g-gaoqiao", "off_duty", None)
    store.save("g-piju", "available", None)  # the newer word replaces the row, its engagement included
    store.save("g-gaoqiao", "busy", "INC-2")
    expected = {"g-piju": ("available", None), "g-gaoqiao": ("busy", "INC-2")}
    assert store.load() == expected
    assert StatusStore(state_db).load() == expected  # the next start's store: its schema is there already
