"""Who gets alerted and what the dispatcher does with bad MQTT input (real broker, real database); what escalation keeps
across a restart, on SQLite (a box) and PostgreSQL (central)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bridge.db import Connection
from dispatch.alerts import Ack, AckStatus, Candidate, WatchStore, _Watch, parse_ack
from dispatch.incidents import Status
from dispatch.positions import PayloadError
from dispatch.topics import Topics
from tests.dispatch.rig import Phone, eventually, phones, running_dispatcher, say, utterance
from tests.support.broker import Mosquitto, broker_fixture  # noqa: F401  (the `broker` fixture)


def fix_now(lat: float, lon: float) -> bytes:
    return json.dumps({"_type": "location", "lat": lat, "lon": lon, "tst": time.time()}).encode()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"incident_id": "INC-1"}', Ack("g-piju", "INC-1", AckStatus.ACK)),
        (b'{"incident_id": "INC-1", "status": "declined"}', Ack("g-piju", "INC-1", AckStatus.DECLINED)),
        (b"{oops", "bad_json"),
        (b'"INC-1"', "bad_shape"),
        (b'{"incident_id": 7}', "bad_type"),
        (b'{"incident_id": "INC-1", "status": "maybe"}', "bad_type"),
    ],
)
def test_parse_ack(payload: bytes, expected: Ack | str) -> None:
    if isinstance(expected, Ack):
        assert parse_ack("g-piju", payload) == expected
    else:
        with pytest.raises(PayloadError) as e:
            parse_ack("g-piju", payload)
        assert e.value.reason == expected


def test_the_watches_are_kept_written_over_and_dropped(state_db: Connection) -> None:
    store = WatchStore(state_db)
    guard, chief = Candidate("g-piju", 12.5, "guard", "nearest"), Candidate("p-xu-zhen", None, "chief", "grid_chief_follow_up")
    due = time.time() + 60
    store.save("INC-1", _Watch(reserve=[chief], alerted={guard.responder_id: guard}, due_at=due))
    store.save("INC-2", _Watch(reserve=[]))
    store.save("INC-1", _Watch(reserve=[], alerted={guard.responder_id: guard, chief.responder_id: chief},
                               responses={"g-piju": "declined", "p-xu-zhen": "ack"}, acked=True))  # fmt: skip
    kept = WatchStore(state_db).load()  # as the next start reads them
    assert kept == {
        "INC-1": _Watch(reserve=[], alerted={"g-piju": guard, "p-xu-zhen": chief},
                        responses={"g-piju": "declined", "p-xu-zhen": "ack"}, acked=True, due_at=None),
        "INC-2": _Watch(reserve=[]),
    }  # fmt: skip
    store.save("INC-2", _Watch(reserve=[guard], due_at=due))
    store.delete("INC-1")
    assert store.load() == {"INC-2": _Watch(reserve=[guard], due_at=due)}  # a float due time comes back exactly


async def test_malformed_mqtt_input_is_counted_and_harmless(broker: Mosquitto, tmp_path: Path) -> None:
    topics = Topics()
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju"]) as ph:
        incident = await rig.dispatcher.handle(say("皮具饰品城有人在店里打架"), utterance())
        phone = ph["g-piju"]
        await phone.publish(topics.ack("g-piju"), b"\x00not json")
        await phone.publish(topics.ack("g-piju"), {"incident_id": ["INC"]})
        await phone.publish(topics.ack("g-piju"), {"incident_id": "INC-does-not-exist"})
        await phone.publish("owntracks/g-piju/phone", b"{broken")
        await phone.publish("owntracks/g-piju/phone", {"_type": "location", "lat": "north", "lon": 108.98, "tst": 1})
        # topics no phone may write on our broker (its ACL drops them): what the dispatcher does on a broker without it
        await rig.dispatcher.on_message(topics.ack("stranger"), json.dumps({"incident_id": incident.id}).encode())
        await rig.dispatcher.on_message("owntracks/nobody/phone", fix_now(34.27, 108.98))
        # a good fix last: once it is in, everything before it (same client, QoS 1, in order) has been handled
        # 150 m off the scene (his fix at it would answer on_scene for him: dispatch/geofence.py)
        await phone.publish("owntracks/g-piju/phone", fix_now(34.2730, 108.9836))
        await eventually(lambda: rig.dispatcher.positions.accepted, what="the good position")
        assert rig.dispatcher.counters()["rejected"] == {
            "ack_bad_json": 1,
            "ack_bad_type": 1,
            "ack_unknown_responder": 1,
            "ack_unknown_incident": 1,
            "position_bad_json": 1,
            "position_bad_type": 1,
            "position_unknown_responder": 1,
        }
        assert rig.service.board.locate("g-piju", max_age_s=1e10).source == "gps"
        assert rig.dispatcher.store.get(incident.id).status == Status.DISPATCHED  # no stray ack moved it
        assert rig.link.connected


async def test_dispute_is_also_pushed_to_the_grid_chief(broker: Mosquitto, tmp_path: Path) -> None:
    # 美食街 lies in 永定社区, whose chief is p-xu-zhen
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["p-xu-zhen"]) as ph:
        incident = await rig.dispatcher.handle(say("美食街两家摊主因为占道发生纠纷"), utterance())
        assert incident is not None and incident.type == "dispute"
        assert "p-xu-zhen" in incident.assigned
        [alert] = await eventually(lambda: ph["p-xu-zhen"].received, what="alert to the grid chief")
        assert alert["incident_id"] == incident.id and alert["reason"] == "grid_chief_follow_up"


async def test_second_report_merges_and_chatter_raises_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju"]) as ph:
        first = await rig.dispatcher.handle(say("皮具饰品城有人在店里打架"), utterance("u-1"))
        second = await rig.dispatcher.handle(say("高桥大市场那边打架了，快来人"), utterance("u-2"))  # ~80 m away
        assert second.id == first.id and second.reports == 2 and second.utterance_ids == ("u-1", "u-2")
        assert await rig.dispatcher.handle(say("收到，一切正常"), utterance("u-3")) is None
        await eventually(lambda: not rig.outbox.pending(), what="outbox drained")
        await eventually(lambda: ph["g-piju"].received, what="alert delivered")  # PUBACK can beat delivery
        await asyncio.sleep(0.3)  # a second (wrong) alert would arrive within this
        assert len(ph["g-piju"].received) == 1  # one alert per incident, not per report
        assert len(rig.dispatcher.store.list()) == 1


async def test_unknown_place_keeps_the_incident_for_the_operator(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        events = rig.bus.subscribe({"incident"})
        incident = await rig.dispatcher.handle(say("这边有人打架，快来人"), utterance())
        assert incident is not None and incident.location_unknown and incident.status == Status.REPORTED
        event = (await events.get()).data
        assert event["type"] == "new" and event["after"]["location"] == "unknown"
        assert rig.dispatcher.alerter.sent == 0


async def test_operator_actions_emit_events_and_end(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["v-yeshi"]) as ph:
        incident = await rig.dispatcher.handle(say("皮具饰品城有人在店里打架"), utterance())
        events = rig.bus.subscribe({"incident"})
        rig.dispatcher.add_note(incident.id, "监控已调取", actor="operator:li")
        rig.dispatcher.reassign(incident.id, ["v-yeshi"], actor="operator:li")
        [alert] = await eventually(lambda: ph["v-yeshi"].received, what="alert to the newly assigned")
        assert alert["incident_id"] == incident.id
        rig.dispatcher.set_status(incident.id, Status.CLOSED_FALSE_ALARM, actor="operator:li", note="误报")
        seen = [events.queue.get_nowait().data for _ in range(events.queue.qsize())]
        assert [(e["type"], e["reason"]) for e in seen] == [
            ("update", "note"),
            ("update", "reassigned"),
            ("end", "closed_false_alarm"),
        ]
        console = Phone(broker, "console")
        await console.connect(subscribe=False)
        await console.subscribe(Topics().incident(incident.id))  # the retained state is the latest
        state = await eventually(lambda: console.received, what="retained incident state")
        assert state[-1]["status"] == "closed_false_alarm"
        await console.disconnect()


async def test_status_from_the_phone_and_busy_while_on_an_incident(broker: Mosquitto, tmp_path: Path) -> None:
    topics = Topics()
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju", "g-gaoqiao"]) as ph:
        board = rig.service.board
        await ph["g-piju"].publish(topics.status("g-piju"), {"status": "off-duty"})  # a phone may spell it so
        await eventually(lambda: board.status("g-piju") == "off_duty", what="status from the phone")
        skipped = await rig.dispatcher.handle(say("皮具饰品城有人在店里打架"), utterance("u-1"))
        assert skipped.assigned == ("g-gaoqiao",)  # the nearest guard is off duty: the next nearest goes

        await ph["g-piju"].publish(topics.status("g-piju"), {"status": "available"})
        await eventually(lambda: board.status("g-piju") == "available", what="back on duty")
        theft = await rig.dispatcher.handle(say("皮具饰品城有人偷东西"), utterance("u-2"))
        assert theft.assigned == ("g-piju",)
        await ph["g-piju"].publish(topics.ack("g-piju"), {"incident_id": theft.id})
        await eventually(lambda: board.engaged_on("g-piju") == theft.id, what="busy on the acknowledged incident")
        assert board.status("g-piju") == "busy"
        fire = await rig.dispatcher.handle(say("皮具饰品城冒烟了，好像着火了"), utterance("u-3"))
        assert fire.type == "fire" and "g-piju" not in fire.assigned  # busy: not offered for another incident

        rig.dispatcher.set_status(skipped.id, Status.RESOLVED, actor="operator:li")
        assert board.status("g-piju") == "busy"  # another incident's end does not free him
        rig.dispatcher.set_status(theft.id, Status.RESOLVED, actor="operator:li")
        assert board.status("g-piju") == "available" and board.engaged_on("g-piju") is None
        assert {r["id"]: r["status"] for r in board.snapshot(max_age_s=300)}["g-piju"] == "available"


async def test_malformed_status_is_counted_and_harmless(broker: Mosquitto, tmp_path: Path) -> None:
    topics = Topics()
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju"]) as ph:
        phone = ph["g-piju"]
        await phone.publish(topics.status("g-piju"), b"busy")
        await phone.publish(topics.status("g-piju"), b'["busy"]')
        await phone.publish(topics.status("g-piju"), {"status": "asleep"})
        await phone.publish(topics.status("g-piju"), {"status": 1})
        await rig.dispatcher.on_message(topics.status("stranger"), b'{"status": "busy"}')  # (no phone may, on our broker)
        await phone.publish(topics.status("g-piju"), {"status": "busy"})  # a good one last: all before it handled
        await eventually(lambda: rig.service.board.status("g-piju") == "busy", what="the good status")
        assert rig.dispatcher.counters()["rejected"] == {
            "status_bad_json": 1,
            "status_bad_shape": 1,
            "status_bad_type": 2,
            "status_unknown_responder": 1,
        }
        assert rig.link.connected


async def test_huge_and_deeply_nested_payloads_are_counted_rejections(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topics = Topics()
    huge = json.dumps({"status": "x" * 2_000_000}).encode()
    nested = b"[" * 10_000  # under the size cap (50,000 are over it): the parser gives up (RecursionError)
    field = json.dumps({"status": "y" * 10_000}).encode()  # under the size cap: parsed, its field refused
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju"]) as ph:
        phone = ph["g-piju"]
        for topic in (topics.ack("g-piju"), topics.status("g-piju"), "owntracks/g-piju/phone"):
            for payload in (nested, b"[" * 50_000, huge):
                await phone.publish(topic, payload)
        await phone.publish(topics.status("g-piju"), field)
        await phone.publish(topics.status("g-piju"), {"status": "busy"})  # a good one last: all before it handled
        await eventually(lambda: rig.service.board.status("g-piju") == "busy", what="the good status")
        assert rig.dispatcher.counters()["rejected"] == {
            "ack_bad_json": 1, "ack_too_large": 2,
            "status_bad_json": 1, "status_too_large": 2, "status_bad_type": 1,
            "position_bad_json": 1, "position_too_large": 2,
        }  # fmt: skip
        assert rig.link.connected
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("dispatch")]
    assert any("yyyy" in line for line in lines)
    assert max(len(line) for line in lines) < 600
