"""Alerts over a real mosquitto: the nearest responder gets it, an offline phone gets it on reconnect, acks stop
escalation, silence escalates, a broker restart loses nothing, and a clean stop sends what was made last."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dispatch.incidents import Status
from dispatch.topics import Topics
from tests.dispatch.rig import Phone, eventually, phones, running_dispatcher, say, utterance
from tests.support.broker import Mosquitto, broker_fixture  # noqa: F401  (the `broker` fixture)

FIGHT = "皮具饰品城有人在店里打架"  # nearest guard g-piju (at the place), next g-gaoqiao (~80 m)
ALERT_FIELDS = {
    "incident_id",
    "type",
    "priority",
    "place",
    "detail",
    "lat",
    "lon",
    "distance_m",
    "text",
    "utterance_id",
    "audio_url",
    "issued_at",
}


async def test_nearest_responder_receives_the_alert(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju", "g-gaoqiao"]) as ph:
        incident = await rig.dispatcher.handle(say(FIGHT), utterance("20260101T080000000-aa01"))
        assert incident is not None and incident.status == Status.DISPATCHED
        [alert] = await eventually(lambda: ph["g-piju"].received, what="alert to g-piju")
        assert alert.keys() >= ALERT_FIELDS
        assert alert["incident_id"] == incident.id and alert["type"] == "fight" and alert["place"] == "皮具饰品城"
        assert alert["text"] == FIGHT and alert["distance_m"] == 0
        assert alert["audio_url"] == "/api/utterances/20260101T080000000-aa01/audio"
        assert alert["issued_at"].endswith("Z")
        assert ph["g-gaoqiao"].received == []
        # the retained incident state is there for a console that connects later
        late = Phone(broker, "console")
        await late.connect(subscribe=False)
        await late.subscribe(Topics().incident(incident.id))
        state = await eventually(lambda: late.received, what="retained incident state")
        assert state[-1]["id"] == incident.id and state[-1]["status"] == "dispatched"
        await late.disconnect()


async def test_offline_responder_receives_the_alert_on_reconnect(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        phone = Phone(broker, "g-piju")
        await phone.connect()  # subscribes once, in a persistent session
        await phone.disconnect()  # the phone goes out of coverage
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
        await eventually(lambda: not rig.outbox.pending(), what="outbox drained")
        assert phone.received == []
        await phone.connect(subscribe=False)  # same client id, no new subscription
        [alert] = await eventually(lambda: phone.received, what="queued alert")
        assert alert["incident_id"] == incident.id
        await phone.disconnect()


async def test_ack_stops_escalation(broker: Mosquitto, tmp_path: Path) -> None:
    async with (
        running_dispatcher(broker, tmp_path, ack_timeout=0.6) as rig,
        phones(broker, ["g-piju", "g-gaoqiao"]) as ph,
    ):
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
        await eventually(lambda: ph["g-piju"].received, what="alert")
        await ph["g-piju"].publish(Topics().ack("g-piju"), {"incident_id": incident.id})
        await eventually(lambda: rig.dispatcher.store.get(incident.id).status == Status.ACKNOWLEDGED, what="acknowledged")
        await ph["g-piju"].publish(Topics().ack("g-piju"), {"incident_id": incident.id, "status": "on_scene"})
        await eventually(lambda: rig.dispatcher.store.get(incident.id).status == Status.ON_SCENE, what="on scene")
        await eventually(lambda: not rig.outbox.pending(), what="outbox drained")
        await asyncio.sleep(1.0)  # well past the ack timeout
        assert rig.dispatcher.alerter.escalations == 0 and ph["g-gaoqiao"].received == []
        kinds = [(e.kind, e.actor) for e in rig.dispatcher.store.timeline(incident.id)]
        assert ("ack", "g-piju") in kinds and ("status", "g-piju") in kinds


async def test_no_ack_escalates_to_the_next_nearest(broker: Mosquitto, tmp_path: Path) -> None:
    async with (
        running_dispatcher(broker, tmp_path, ack_timeout=0.5) as rig,
        phones(broker, ["g-piju", "g-gaoqiao"]) as ph,
    ):
        events = rig.bus.subscribe({"incident"})
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
        [alert] = await eventually(lambda: ph["g-gaoqiao"].received, timeout=3, what="escalated alert")
        assert alert["incident_id"] == incident.id and alert["distance_m"] > 0
        assert len(ph["g-piju"].received) == 1  # the first one is not alerted twice
        entry = next(e for e in rig.dispatcher.store.timeline(incident.id) if e.kind == "escalated")
        assert entry.detail["responders"] == ["g-gaoqiao"] and entry.detail["reason"] == "no_ack"
        reasons = [events.queue.get_nowait().data["reason"] for _ in range(events.queue.qsize())]
        assert reasons[:3] == ["reported", "dispatched", "escalated"]
        # an ack from the escalated responder stops the chain
        await ph["g-gaoqiao"].publish(Topics().ack("g-gaoqiao"), {"incident_id": incident.id})
        await eventually(lambda: rig.dispatcher.store.get(incident.id).status == Status.ACKNOWLEDGED, what="ack")
        escalations = rig.dispatcher.alerter.escalations
        await asyncio.sleep(0.8)
        assert rig.dispatcher.alerter.escalations == escalations


async def test_escalation_skips_whoever_is_no_longer_available(broker: Mosquitto, tmp_path: Path) -> None:
    async with (
        running_dispatcher(broker, tmp_path, ack_timeout=0.5) as rig,
        phones(broker, ["g-piju", "g-gaoqiao"]) as ph,
    ):
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
        await eventually(lambda: ph["g-piju"].received, what="alert")
        # the next nearest goes off duty after the incident was ranked, before the ack timer runs out
        await ph["g-gaoqiao"].publish(Topics().status("g-gaoqiao"), {"status": "off_duty"})
        await eventually(lambda: rig.service.board.status("g-gaoqiao") == "off_duty", what="off duty")
        entry = await eventually(
            lambda: next((e for e in rig.dispatcher.store.timeline(incident.id) if e.kind == "escalated"), None),
            timeout=3,
            what="escalation",
        )
        assert entry.detail["responders"] and "g-gaoqiao" not in entry.detail["responders"]
        await asyncio.sleep(0.2)
        assert ph["g-gaoqiao"].received == []


async def test_broker_restart_loses_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        phone = Phone(broker, "g-piju")
        await phone.connect()
        broker.stop()
        await eventually(lambda: not rig.link.connected, what="link down")
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
        assert any(m.topic == Topics().alert("g-piju") for m in rig.outbox.pending())
        broker.start()
        await eventually(lambda: not rig.outbox.pending(), timeout=10, what="outbox drained after restart")
        await phone.disconnect()
        await phone.connect(subscribe=False)  # the session (and its subscription) survived the restart
        [alert] = await eventually(lambda: phone.received, what="alert after restart")
        assert alert["incident_id"] == incident.id
        assert rig.link.connects >= 2
        await phone.disconnect()


async def test_a_clean_stop_sends_what_was_made_last(broker: Mosquitto, tmp_path: Path) -> None:
    """An alert made as the service stops (an escalation due at that moment) reaches the phone before the link goes,
    not at the next start."""
    async with phones(broker, ["g-piju"]) as ph:
        async with running_dispatcher(broker, tmp_path) as rig:
            rig.outbox.put(Topics().alert("g-piju"), {"incident_id": "INC-last", "type": "fight"})  # then the stop
        [alert] = await eventually(lambda: ph["g-piju"].received, what="the alert made at the stop")
        assert alert["incident_id"] == "INC-last"
