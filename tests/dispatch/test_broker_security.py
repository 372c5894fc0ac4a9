"""The broker locked down as `jingbao broker setup` does it (real mosquitto, the ACL generated from the demo registry)
and what the dispatcher refuses that an ACL cannot judge: issue 12's attacks, each tried and shown to change nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import aiomqtt
import pytest

from bridge.cli import main
from dispatch import alerts
from dispatch.incidents import Status
from dispatch.topics import Topics
from tests.dispatch.rig import eventually, phones, running_dispatcher, say, utterance
from tests.support.broker import JURISDICTION, Mosquitto, broker_fixture, self_signed  # noqa: F401  (`broker`)

FIGHT = "皮具饰品城有人在店里打架"  # nearest guard g-piju (at the place), next g-gaoqiao (~80 m)
TOPICS = Topics()


def fix(tst: float, lat: float = 34.2716, lon: float = 108.9836) -> dict[str, object]:
    return {"_type": "location", "lat": lat, "lon": lon, "tst": tst}


async def test_anonymous_and_wrong_passwords_are_refused(broker: Mosquitto) -> None:
    for login in ({}, {"username": "g-piju", "password": "guessed"}, {"username": "jingbao", "password": ""}):
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.port, identifier="jingbao-test", **login):
                pass
    async with aiomqtt.Client(broker.host, broker.port, **broker.login("g-piju")):
        pass  # the phone's own login works


async def test_a_phone_reads_only_its_own_alerts_and_writes_only_as_itself(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju", "g-gaoqiao"]) as ph:
        spy = ph["g-gaoqiao"]
        for topic in ("jingbao/alerts/#", TOPICS.alert("g-piju"), "jingbao/incidents/#", TOPICS.events, "owntracks/#"):
            await spy.subscribe(topic)
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
        assert incident.assigned == ("g-piju",)
        await eventually(lambda: ph["g-piju"].received, what="the alert to g-piju")
        # his own fix, 150 m off the scene (at it, it would answer on_scene: dispatch/geofence.py): the spy may not read it
        await ph["g-piju"].publish("owntracks/g-piju/phone", fix(time.time(), lat=34.2730))

        # as g-piju: accept his incident, take him off duty, put him 1000 km away
        await spy.publish(TOPICS.ack("g-piju"), {"incident_id": incident.id})
        await spy.publish(TOPICS.status("g-piju"), {"status": "off_duty"})
        await spy.publish("owntracks/g-piju/phone", fix(time.time(), lat=25.0, lon=100.0))
        await spy.publish(TOPICS.alert("g-piju"), {"kind": "retraction", "incident_id": incident.id})
        # the spy's own status last: once the dispatcher has it, the broker has passed on all it was going to
        await spy.publish(TOPICS.status("g-gaoqiao"), {"status": "busy"})
        await eventually(lambda: rig.service.board.status("g-gaoqiao") == "busy", what="the spy's own status")

        assert rig.dispatcher.store.require(incident.id).status == Status.DISPATCHED  # nobody accepted it
        assert rig.service.board.status("g-piju") == "available"
        assert rig.service.board.locate("g-piju", max_age_s=300).lat == pytest.approx(34.2730)
        assert rig.dispatcher.counters()["rejected"] == {}  # none of it reached the dispatcher
        assert spy.received == []  # nothing of g-piju's alert, the incident, the events or his position
        assert [m.get("kind") for m in ph["g-piju"].received] == ["alert"]  # and no forged retraction


async def test_nobody_can_take_over_the_services_session(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        for _ in range(3):  # the client id it is configured with, and the one the broker gives it (its user name)
            for identifier in ("jingbao-test", "jingbao"):
                async with aiomqtt.Client(broker.host, broker.port, identifier=identifier, **broker.login("g-piju")):
                    pass
        await asyncio.sleep(0.3)
        assert rig.link.connected and rig.link.connects == 1


async def test_forged_answers_and_fixes_are_refused_counted_and_change_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju", "g-gaoqiao"]) as ph:
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
        other = ph["g-gaoqiao"]  # on his own topics, which the ACL allows, but not alerted for this incident
        await other.publish(TOPICS.ack("g-gaoqiao"), {"incident_id": incident.id})
        await other.publish(TOPICS.ack("g-gaoqiao"), {"incident_id": incident.id, "status": "declined"})
        await other.publish(TOPICS.status("g-gaoqiao"), {"status": "off_duty", "responder_id": "g-piju"})
        await other.publish(TOPICS.ack("g-gaoqiao"), {"incident_id": incident.id, "responder_id": "g-piju"})
        ten_years = 10 * 365 * 86400
        await other.publish("owntracks/g-gaoqiao/phone", fix(time.time() + ten_years, lat=10.0, lon=10.0))
        await other.publish("owntracks/g-gaoqiao/phone", fix(time.time() - 3600, lat=10.0, lon=10.0))
        await other.publish(TOPICS.status("g-gaoqiao"), {"status": "busy"})  # last: all before it handled
        await eventually(lambda: rig.service.board.status("g-gaoqiao") == "busy", what="the good status")

        assert rig.dispatcher.counters()["rejected"] == {
            "ack_not_alerted": 2, "ack_wrong_responder": 1, "status_wrong_responder": 1,
            "position_future": 1, "position_stale": 1,
        }  # fmt: skip
        after = rig.dispatcher.store.require(incident.id)
        assert after.status == Status.DISPATCHED and after.assigned == ("g-piju",)  # not acknowledged, not escalated
        assert not [e for e in rig.dispatcher.store.timeline(incident.id) if e.kind in ("ack", "escalated")]
        assert rig.service.board.locate("g-gaoqiao", max_age_s=300).source == "post"
        assert rig.service.board.status("g-piju") == "available"


async def test_retained_statuses_change_nothing_after_a_restart(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju"]) as ph:
        phone = ph["g-piju"]
        await phone.publish(TOPICS.status("g-piju"), {"status": "off_duty"}, retain=True)
        await eventually(lambda: rig.service.board.status("g-piju") == "off_duty", what="said live: taken")
        # back on duty, said on the console (the web's path, which the broker never hears): the retained message stays
        await rig.dispatcher.on_message(TOPICS.status("g-piju"), b'{"status": "available"}')
    async with running_dispatcher(broker, tmp_path) as rig:  # the same database: what the service was last told
        await eventually(lambda: rig.dispatcher.rejected["status_retained"], what="the retained status replayed")
        assert rig.service.board.status("g-piju") == "available"


# --- escalation across a restart -------------------------------------------------------------------------------------


def due_at(data_dir: Path, incident_id: str) -> float:
    with sqlite3.connect(data_dir / "jingbao.db") as conn:
        return conn.execute("SELECT due_at FROM alert_watches WHERE incident_id = ?", (incident_id,)).fetchone()[0]


async def test_escalation_overdue_while_the_service_was_down_happens_at_once(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path, ack_timeout=0.5) as rig:
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
    due = due_at(tmp_path, incident.id)
    await asyncio.sleep(max(0.0, due - time.time()) + 0.2)  # down when it fell due
    async with phones(broker, ["g-gaoqiao"]) as ph, running_dispatcher(broker, tmp_path, ack_timeout=30) as rig:
        started = time.time()
        [alert] = await eventually(lambda: ph["g-gaoqiao"].received, what="the escalation to the next nearest")
        assert alert["incident_id"] == incident.id and alert["reason"] == "guard"
        [escalated] = [e for e in rig.dispatcher.store.timeline(incident.id) if e.kind == "escalated"]
        # at once, not after a fresh 30 s timer; its lateness recorded
        assert escalated.ts < started + 5 and escalated.detail["overdue_s"] > 0
        assert escalated.detail["responders"] == ["g-gaoqiao"]


async def test_escalations_overdue_after_a_restart_go_out_one_after_another_the_longest_overdue_first(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    """All at once they held the event loop (31 after a night: 0.46 s, every channel's audio waiting)."""
    reports = ("西光中学门口有人晕倒了", FIGHT, "长乐公园有人在偷自行车")
    async with running_dispatcher(broker, tmp_path, ack_timeout=2) as rig:
        incidents = [await rig.dispatcher.handle(say(text), utterance(f"20260101T08000{i}000-ab1{i}"))
                     for i, text in enumerate(reports)]  # fmt: skip
    assert len({i.id for i in incidents}) == 3
    # fell due in another order than they were raised: the last first, then the first, then the second
    due = max(due_at(tmp_path, i.id) for i in incidents)
    with sqlite3.connect(tmp_path / "jingbao.db") as conn:
        for incident, earlier in zip(incidents, (1.0, 0.5, 1.5), strict=True):
            conn.execute("UPDATE alert_watches SET due_at = ? WHERE incident_id = ?", (due - earlier, incident.id))
    await asyncio.sleep(max(0.0, due - time.time()) + 0.2)
    monkeypatch.setattr(alerts, "OVERDUE_SPACING_S", 0.5)  # wide apart: what is asserted is not the machine's speed
    caplog.set_level("INFO", logger="dispatch.alerts")
    started = time.time()
    async with running_dispatcher(broker, tmp_path, ack_timeout=30) as rig:

        def escalated() -> list[tuple[float, str]]:
            return sorted((e.ts, i.id) for i in incidents for e in rig.dispatcher.store.timeline(i.id)
                          if e.kind == "escalated")  # fmt: skip

        seen = await eventually(lambda: len(escalated()) == 3 and escalated(), what="the three escalations")
    [resumed] = [r.created for r in caplog.records if r.getMessage().startswith("escalation resumed for 3")]
    assert [incident for _, incident in seen] == [incidents[i].id for i in (2, 0, 1)]  # the longest overdue first
    assert max(ts for ts, _ in seen) < started + 5  # at once
    assert all(ts > resumed + k * 0.5 - 0.1 for k, (ts, _) in enumerate(seen))  # one after another


async def test_escalation_not_yet_due_happens_when_it_was_due(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path, ack_timeout=5) as rig:
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
        accepted = await rig.dispatcher.handle(say("西光中学门口有人晕倒了"), utterance("20260101T080001000-ab13"))
        await rig.dispatcher.on_message(TOPICS.ack(accepted.assigned[0]), json.dumps({"incident_id": accepted.id}).encode())
    due = due_at(tmp_path, incident.id)
    async with running_dispatcher(broker, tmp_path, ack_timeout=30) as rig:
        assert time.time() < due, "the service took longer to start than the test's timeout: nothing left to check"
        escalated = await eventually(
            lambda: [e for e in rig.dispatcher.store.timeline(incident.id) if e.kind == "escalated"], timeout=10,
            what="the escalation",
        )  # fmt: skip
        assert due <= escalated[0].ts < due + 1.5  # when it was due, not 30 s after the restart
        assert not [e for e in rig.dispatcher.store.timeline(accepted.id) if e.kind == "escalated"]  # accepted: none


async def test_one_who_accepted_and_then_declines_is_replaced(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, ["g-piju", "g-gaoqiao"]) as ph:
        incident = await rig.dispatcher.handle(say(FIGHT), utterance())
        await ph["g-piju"].publish(TOPICS.ack("g-piju"), {"incident_id": incident.id})
        await eventually(lambda: rig.service.board.status("g-piju") == "busy", what="the acceptance")
        await ph["g-piju"].publish(TOPICS.ack("g-piju"), {"incident_id": incident.id, "status": "declined"})
        [alert] = await eventually(lambda: ph["g-gaoqiao"].received, what="the next nearest alerted")
        assert alert["incident_id"] == incident.id
        assert rig.service.board.status("g-piju") == "available"  # free for other incidents again


# --- TLS -------------------------------------------------------------------------------------------------------------


async def test_the_service_connects_over_tls_and_verifies_the_broker(tmp_path: Path) -> None:
    tls = self_signed(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "mosquitto", jurisdiction=JURISDICTION, tls=tls)
    broker.start()
    try:
        # the service on the TLS listener (its CA from the config), the phone on the plain one: the same broker
        over_tls = broker.service_config() | {"port": broker.tls_port, "tls": {"ca_file": str(tls.ca)}}
        async with running_dispatcher(broker, tmp_path, broker_section=over_tls) as rig, phones(broker, ["g-piju"]) as ph:
            incident = await rig.dispatcher.handle(say(FIGHT), utterance())
            [alert] = await eventually(lambda: ph["g-piju"].received, what="the alert sent over TLS")
            assert alert["incident_id"] == incident.id
        stranger = self_signed(tmp_path / "other-ca")  # a broker certificate our CA did not sign is refused
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.tls_port, tls_params=aiomqtt.TLSParameters(ca_certs=str(stranger.ca)),
                                      **broker.login("console")):  # fmt: skip
                pass
    finally:
        broker.stop()


# --- jingbao broker: the commands a site runs --------------------------------------------------------------------------


def test_setup_writes_private_files_and_keeps_passwords(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(f"jurisdiction: {JURISDICTION}\nstorage: {{data_dir: {tmp_path / 'data'}}}\n"
                      "broker: {username: jingbao, password_file: data/mosquitto/jingbao.password}\n"
                      "channels: [{id: ch-market, name: m, source: {type: pipe}}]\n", encoding="utf-8")  # fmt: skip
    directory = tmp_path / "data" / "mosquitto"
    assert main(["broker", "setup", "--config", str(config)]) == 0
    secret = (directory / "jingbao.password").read_text()
    assert {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()} == {
        "passwd": 0o600, "acl": 0o600, "jingbao.password": 0o600, "console.password": 0o600}  # fmt: skip
    acl = (directory / "acl").read_text()
    assert "user g-piju\ntopic read jingbao/alerts/g-piju\ntopic write jingbao/acks/g-piju\n" in acl
    assert main(["broker", "setup", "--config", str(config)]) == 0
    assert (directory / "jingbao.password").read_text() == secret  # a second run changes no password
    assert main(["broker", "setup", "--config", str(config), "--rotate"]) == 0
    assert (directory / "jingbao.password").read_text() != secret


async def test_a_new_phone_password_works_and_the_old_one_no_longer_does(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(f"jurisdiction: {JURISDICTION}\nstorage: {{data_dir: {tmp_path}}}\n"
                      "channels: [{id: ch-market, name: m, source: {type: pipe}}]\n", encoding="utf-8")  # fmt: skip
    old = broker.login("g-piju")
    args = ["--config", str(config), "--dir", str(broker.workdir)]
    async with phones(broker, ["g-piju"]) as lost:  # connected with the password about to be replaced
        assert main(["broker", "add-device", "g-piju", "--json", *args]) == 0
        login = json.loads(capsys.readouterr().out)
        assert (login["username"], login["subscribe"]) == ("g-piju", TOPICS.alert("g-piju"))
        # the broker reloads on SIGHUP and drops the session whose password no longer holds
        await eventually(lambda: not lost["g-piju"].connected, what="the old session cut")
    async with aiomqtt.Client(broker.host, broker.port, username="g-piju", password=login["password"]):
        pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(broker.host, broker.port, **old):
            pass
    assert main(["broker", "remove-device", "g-piju", *args]) == 0
    await asyncio.sleep(0.3)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(broker.host, broker.port, username="g-piju", password=login["password"]):
            pass
    assert main(["broker", "add-device", "nobody", *args]) == 1
