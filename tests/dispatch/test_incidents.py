"""The incident lifecycle, timeline and merging, on a real SQLite database (a box) and a real PostgreSQL (central)."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from bridge.db import Connection, connect
from bridge.db_postgres import PostgresConnection
from dispatch.incidents import (
    CLOSED,
    OPEN,
    Incident,
    IncidentError,
    IncidentStore,
    Status,
    can_transition,
    new_incident_id,
)

MEISHIJIE = (34.2702, 108.9843)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(state_db: Connection) -> IncidentStore:
    return IncidentStore(state_db)


def make(store: IncidentStore, type_: str = "fight", at: float | None = None, latlon=MEISHIJIE, uid: str = "u1") -> Incident:
    at = time.time() if at is None else at
    lat, lon = latlon if latlon else (None, None)
    incident = Incident(
        id=new_incident_id(at), type=type_, priority="high", status=Status.REPORTED, created_at=at, updated_at=at,
        place_id="meishijie" if latlon else None, place_name="美食街" if latlon else None, lat=lat, lon=lon,
        text="美食街有人打架", channel="ch-market", utterance_ids=(uid,),
    )  # fmt: skip
    return store.create(incident, actor="dispatcher")


def test_full_lifecycle_is_timestamped_with_who_did_it(store: IncidentStore) -> None:
    incident = make(store)
    steps = [
        (Status.DISPATCHED, "dispatcher"),
        (Status.ACKNOWLEDGED, "g-piju"),
        (Status.ON_SCENE, "g-piju"),
        (Status.RESOLVED, "p-xu-zhen"),
        (Status.FOLLOWED_UP, "operator:wang"),
    ]
    for status, actor in steps:
        before, after = store.transition(incident.id, status, actor=actor)
        assert after.status == status and before.status != status
    timeline = store.timeline(incident.id)
    assert [e.kind for e in timeline] == ["reported"] + ["status"] * 5
    assert [(e.detail["to"], e.actor) for e in timeline[1:]] == [(str(s), a) for s, a in steps]
    assert all(b.ts <= a.ts for b, a in itertools.pairwise(timeline))
    assert store.get(incident.id).status == Status.FOLLOWED_UP


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (Status.REPORTED, Status.DISPATCHED, True),
        (Status.DISPATCHED, Status.ON_SCENE, True),  # "on scene" without an ack first
        (Status.ACKNOWLEDGED, Status.DISPATCHED, False),  # never backwards
        (Status.DISPATCHED, Status.FOLLOWED_UP, False),  # follow-up only after resolution
        (Status.RESOLVED, Status.FOLLOWED_UP, True),
        (Status.ON_SCENE, Status.CLOSED_FALSE_ALARM, True),
        (Status.RESOLVED, Status.CLOSED_FALSE_ALARM, False),
        (Status.CLOSED_FALSE_ALARM, Status.DISPATCHED, False),
        (Status.FOLLOWED_UP, Status.RESOLVED, False),
        # 待确认: confirmed (reported, or straight to dispatched) or dismissed, nothing else; only it is dismissed
        (Status.NEEDS_CONFIRMATION, Status.REPORTED, True),
        (Status.NEEDS_CONFIRMATION, Status.DISPATCHED, True),
        (Status.NEEDS_CONFIRMATION, Status.DISMISSED, True),
        (Status.NEEDS_CONFIRMATION, Status.ON_SCENE, False),
        (Status.NEEDS_CONFIRMATION, Status.RESOLVED, False),
        (Status.NEEDS_CONFIRMATION, Status.CLOSED_FALSE_ALARM, False),
        (Status.REPORTED, Status.NEEDS_CONFIRMATION, False),
        (Status.REPORTED, Status.DISMISSED, False),
        (Status.DISMISSED, Status.REPORTED, False),
        # retracted (a provisional incident the final transcript contradicted): from any open state but 待确认; closed
        (Status.DISPATCHED, Status.RETRACTED, True),
        (Status.ACKNOWLEDGED, Status.RETRACTED, True),
        (Status.NEEDS_CONFIRMATION, Status.RETRACTED, False),
        (Status.RESOLVED, Status.RETRACTED, False),
        (Status.RETRACTED, Status.DISPATCHED, False),
    ],
)
def test_transition_rules(current: Status, new: Status, allowed: bool) -> None:
    assert can_transition(current, new) is allowed


def test_forbidden_transition_and_unknown_incident_raise(store: IncidentStore) -> None:
    incident = make(store)
    store.transition(incident.id, Status.CLOSED_FALSE_ALARM, actor="operator", note="误报")
    with pytest.raises(IncidentError, match="cannot go"):
        store.transition(incident.id, Status.DISPATCHED, actor="dispatcher")
    with pytest.raises(IncidentError, match="unknown incident"):
        store.transition("INC-nope", Status.DISPATCHED, actor="dispatcher")
    assert store.timeline(incident.id)[-1].detail["note"] == "误报"


def test_notes_reassign_and_assign(store: IncidentStore) -> None:
    incident = make(store)
    store.assign(incident.id, ["g-piju", "p-xu-zhen"], actor="dispatcher")
    store.add_note(incident.id, "双方已分开", actor="operator:li")
    _, after = store.reassign(incident.id, ["v-yeshi"], actor="operator:li")
    assert after.assigned == ("v-yeshi",)
    kinds = [(e.kind, e.actor) for e in store.timeline(incident.id)]
    assert kinds == [
        ("reported", "dispatcher"),
        ("alerted", "dispatcher"),
        ("note", "operator:li"),
        ("reassigned", "operator:li"),
    ]
    assert store.timeline(incident.id)[-1].detail == {"from": ["g-piju", "p-xu-zhen"], "to": ["v-yeshi"]}


def test_merge_same_type_nearby_and_recent_only(store: IncidentStore) -> None:
    now = time.time()
    incident = make(store, at=now)
    near = (34.2712, 108.9843)  # ~110 m north
    far = (34.2740, 108.9843)  # ~420 m
    assert store.find_mergeable("fight", *near, now + 60).id == incident.id
    assert store.find_mergeable("fight", *far, now + 60) is None
    assert store.find_mergeable("theft", *near, now + 60) is None
    assert store.find_mergeable("fight", *near, now + 600) is None  # long after: a new event
    assert store.find_mergeable("fight", None, None, now + 60) is None  # unknown place: never merged blindly
    _, merged = store.merge_report(incident.id, "u2", "美食街打起来了", actor="dispatcher")
    assert merged.reports == 2 and merged.utterance_ids == ("u1", "u2")
    store.transition(incident.id, Status.RESOLVED, actor="p-xu-zhen")
    assert store.find_mergeable("fight", *near, now + 60) is None  # a resolved incident is not reopened


def test_an_incident_escalated_long_after_its_last_report_takes_no_new_report(store: IncidentStore) -> None:
    """A fight nobody acknowledged is escalated (changed) again and again, and all at once when the service
    restarts; a report at that place hours after its last one is a new event, not one more report of it."""
    long_ago = time.time() - 3 * 3600
    stale = make(store, at=long_ago)
    store.assign(stale.id, ["g-dongjiao"], actor="dispatcher", kind="escalated")  # changed just now
    assert store.require(stale.id).updated_at > time.time() - 60
    assert store.find_mergeable("fight", *MEISHIJIE, time.time()) is None
    store.merge_report(stale.id, "u2", "美食街又打起来了", actor="dispatcher")  # reported again now: the same event
    assert store.find_mergeable("fight", *MEISHIJIE, time.time()).id == stale.id
    handled = make(store, type_="dispute", at=long_ago, uid="u3")
    store.add_note(handled.id, "保安已在现场劝解", actor="operator:li")  # a person on it just now
    assert store.find_mergeable("dispute", *MEISHIJIE, time.time()).id == handled.id


def test_confirm_gives_a_waiting_incident_its_type_and_logs_who(store: IncidentStore) -> None:
    waiting = store.create(waiting_report(), actor="dispatcher")
    assert waiting.status in OPEN  # a 待确认 incident is still to be handled: listed, merged into, never dropped
    assert store.find_mergeable("other", *MEISHIJIE, waiting.created_at + 60).id == waiting.id
    before, after = store.confirm(waiting.id, "fight", "high", actor="operator:li")
    assert before.status == Status.NEEDS_CONFIRMATION and (before.type, before.priority) == ("other", "medium")
    stored = store.get(waiting.id)
    assert stored == after and (stored.type, stored.priority, stored.status) == ("fight", "high", Status.REPORTED)
    entry = store.timeline(waiting.id)[-1]
    assert (entry.kind, entry.actor) == ("confirmed", "operator:li")
    assert entry.detail == {"type": "fight", "priority": "high", "guessed": "other", "guessed_priority": "medium",
                            "from": "needs_confirmation", "to": "reported"}  # fmt: skip
    with pytest.raises(IncidentError):
        store.confirm(waiting.id, "theft", "medium", actor="operator:li")  # no longer waiting
    assert store.transition(waiting.id, Status.DISPATCHED, actor="dispatcher")[1].status == Status.DISPATCHED  # on as usual


def test_a_dismissed_incident_is_closed(store: IncidentStore) -> None:
    waiting = store.create(waiting_report(), actor="dispatcher")
    _, dismissed = store.transition(waiting.id, Status.DISMISSED, actor="operator:li")
    assert dismissed.status in CLOSED and dismissed.status not in OPEN
    assert store.find_mergeable("other", *MEISHIJIE, waiting.created_at + 60) is None


def waiting_report() -> Incident:
    """A 待确认 report of unknown type at 美食街 (not stored yet)."""
    at = time.time()
    return Incident(id=new_incident_id(at), type="other", priority="medium", status=Status.NEEDS_CONFIRMATION, created_at=at,
                    updated_at=at, place_id="meishijie", place_name="美食街", lat=MEISHIJIE[0], lon=MEISHIJIE[1],
                    text="美食街有情况，请求支援", channel="ch-market", utterance_ids=("u9",))  # fmt: skip


def test_a_provisional_incident_is_found_by_its_utterance_and_amended_in_one_step(store: IncidentStore) -> None:
    at = time.time()
    raised = store.create(Incident(id=new_incident_id(at), type="fight", priority="high", status=Status.DISPATCHED,
                                   created_at=at, updated_at=at, place_id="meishijie", place_name="美食街",
                                   lat=MEISHIJIE[0], lon=MEISHIJIE[1], text="美食街有人打", utterance_ids=("u7",),
                                   assigned=("g-piju",), provisional=True), actor="dispatcher")  # fmt: skip
    make(store, uid="u8")  # not provisional
    assert store.get(raised.id).provisional and store.provisional_for("u7") == raised
    assert store.provisional_for("u8") is None and store.provisional_for("u") is None

    before, after = store.amend(raised.id, actor="dispatcher", kind="rerouted", entry={"why": "final"},
                                provisional=False, place_id=None, place_name=None, lat=None, lon=None, assigned=(),
                                text="有人打架")  # fmt: skip
    assert before == raised and store.get(raised.id) == after and store.provisional_for("u7") is None
    assert (after.place_id, after.assigned, after.text, after.provisional) == (None, (), "有人打架", False)
    assert store.timeline(raised.id)[-1].kind == "rerouted" and store.timeline(raised.id)[-1].detail == {"why": "final"}
    _, retracted = store.amend(raised.id, actor="dispatcher", kind="status", entry={}, status=Status.RETRACTED)
    assert retracted.status in CLOSED and store.get(raised.id).status == Status.RETRACTED


def test_central_lists_a_stations_incidents_by_the_station_its_channels_are_named_under(store: IncidentStore) -> None:
    for channel in ("gongyuan.ch-market", "gong_yuan.ch-market", "gongyuanbei.ch-x", "ch-market"):
        make(store, uid=channel, latlon=None)
        store.amend(store.with_utterance(channel)[0].id, actor="t", kind="note", entry={}, channel=channel)
    assert [i.channel for i in store.list(stations=["gongyuan"])] == ["gongyuan.ch-market"]
    assert {i.channel for i in store.list(stations=["gong_yuan", "gongyuanbei"])} == {"gong_yuan.ch-market", "gongyuanbei.ch-x"}
    assert store.list(stations=[]) == []


def test_unknown_location_is_kept_and_flagged(store: IncidentStore) -> None:
    incident = make(store, latlon=None)
    stored = store.get(incident.id)
    assert stored.location_unknown and stored.to_dict()["location"] == "unknown"
    assert [i.id for i in store.list()] == [incident.id]
    assert store.list(status=Status.RESOLVED) == []


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_cli_list_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest,
                           engine: str) -> None:  # fmt: skip
    """A box's incidents from its SQLite file; central's (storage.database_url) from its PostgreSQL."""
    from bridge.cli import main

    url = request.getfixturevalue("pg_url") if engine == "postgres" else None
    config = tmp_path / "jingbao.yaml"
    config.write_text(
        f"jurisdiction: {REPO / 'config' / 'jurisdiction.yaml'}\n"
        f"storage: {{data_dir: data{f', database_url: {url!r}' if url else ''}}}\n"
        "channels: [{id: ch-market, name: 市场保安, source: {type: pipe}}]\n",
        encoding="utf-8",
    )
    store = IncidentStore(PostgresConnection(url) if url else connect(tmp_path / "data" / "jingbao.db"))
    incident = make(store)
    store.transition(incident.id, Status.DISPATCHED, actor="dispatcher")

    assert main(["incidents", "list", "--json", "--config", str(config)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    listed = json.loads(line)
    assert listed["id"] == incident.id and listed["status"] == "dispatched" and listed["place_name"] == "美食街"

    assert main(["incidents", "show", incident.id, "--json", "--config", str(config)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [e["kind"] for e in shown["timeline"]] == ["reported", "status"]

    assert main(["incidents", "show", incident.id, "--config", str(config)]) == 0
    assert "美食街有人打架" in capsys.readouterr().out
    assert main(["incidents", "show", "INC-missing", "--config", str(config)]) == 1
    assert "no incident" in capsys.readouterr().err
