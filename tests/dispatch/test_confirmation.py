"""Never silent about a report: a transmission that sounds like a report but whose type is not certain becomes a 待确认
incident that alerts nobody until an operator confirms its type (then it is dispatched as a certain report is) or
dismisses it. Real classifier, real mosquitto, real SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dispatch.classify import classify
from dispatch.dispatcher import UnknownTypeError
from dispatch.incidents import IncidentError, Status
from dispatch.topics import Topics
from tests.dispatch.rig import Phone, eventually, phones, running_dispatcher, say, utterance
from tests.support.broker import Mosquitto, broker_fixture  # noqa: F401  (the `broker` fixture)

UNSURE = "美食街有情况，请求支援"  # report words, no type word: something happened at 美食街, but what?
REPO = Path(__file__).resolve().parents[2]
NEAREST = "g-piju"  # the nearest guard to 美食街 (the rig alerts one guard, no police)


def test_the_phrases_mean_what_these_tests_need() -> None:
    unsure = classify(UNSURE)
    assert unsure.needs_confirmation and unsure.type == "other"
    assert not classify("美食街有人打架").needs_confirmation
    assert classify("收到，一切正常").type == "none"


def test_naming_a_known_place_makes_a_report_like_line_go_to_the_operator() -> None:
    """The on-board recogniser's pinyin of 韩森寨公交站那儿有人打架, its tones lost (da4 jia1 also reads 大家): the model
    is not sure it is a report at all. Naming a known place tips it to the operator's queue; the same words with no
    place stay silent, and routine lines naming a place stay routine."""
    from dispatch.classify import load_lexicon, read_report
    from dispatch.gazetteer import load_jurisdiction
    from dispatch.location import PlaceIndex

    index, lexicon = PlaceIndex(load_jurisdiction(REPO / "config" / "jurisdiction.yaml")), load_lexicon()
    at_place, heard = read_report("han2 sun3 zhai1 gong3 jiao3 zhan1 na4 er2 you4 ren2 da4 jia1", lexicon, index)
    assert at_place.needs_confirmation and heard.scene().place.id == "hansenzhai-gongjiaozhan"
    assert read_report("na4 er2 you4 ren2 da4 jia1", lexicon, index)[0].type == "none"
    patrolled = "han2 sun3 zhai1 gong3 jiao3 zhan1 xun2 luo2 yi1 qie4 zheng4 chang2"
    for routine in (patrolled, "美食街巡逻一切正常", "韩森寨公交站收到"):
        assert read_report(routine, lexicon, index)[0].type == "none", routine


async def test_an_unsure_report_waits_for_the_operator_and_alerts_nobody(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        console = Phone(broker, "console")
        await console.connect(subscribe=False)
        await console.subscribe(Topics().events)
        events = rig.bus.subscribe({"incident"})
        incident = await rig.dispatcher.handle(say(UNSURE), utterance("u-unsure"))

        assert incident is not None and incident.status == Status.NEEDS_CONFIRMATION
        assert incident.type == "other" and incident.place_name == "美食街"  # the best guess, located as usual
        assert incident.text == UNSURE and incident.utterance_ids == ("u-unsure",) and incident.assigned == ()
        event = (await events.get()).data
        assert (event["type"], event["reason"]) == ("new", "needs_confirmation")
        assert event["after"]["status"] == "needs_confirmation"
        [published] = await eventually(lambda: console.received, what="the event on <prefix>/events")
        assert published["after"]["id"] == incident.id and published["reason"] == "needs_confirmation"

        await eventually(lambda: not rig.outbox.pending(), what="outbox drained")
        await asyncio.sleep(0.3)  # an alert would have arrived within this
        assert ph[NEAREST].received == [] and rig.dispatcher.alerter.sent == 0
        assert [e.kind for e in rig.dispatcher.store.timeline(incident.id)] == ["reported"]
        with pytest.raises(IncidentError):  # nobody is sent before its type is confirmed
            rig.dispatcher.reassign(incident.id, [NEAREST], actor="operator:li")
        await console.disconnect()


async def test_confirming_dispatches_it_as_a_certain_report(broker: Mosquitto, tmp_path: Path) -> None:
    transmit: asyncio.Queue = asyncio.Queue()
    async with (
        running_dispatcher(broker, tmp_path, ack_timeout=0.5, transmit=transmit) as rig,
        phones(broker, [NEAREST]) as ph,
    ):
        pending = await rig.dispatcher.handle(say(UNSURE), utterance())
        events = rig.bus.subscribe({"incident"})

        confirmed = rig.dispatcher.confirm(pending.id, "fight", actor="operator:li")

        # the type's default priority (the lexicon's), the ranked responders alerted
        assert (confirmed.type, confirmed.priority, confirmed.status) == ("fight", "high", Status.DISPATCHED)
        assert confirmed.assigned == (NEAREST,)
        [alert] = await eventually(lambda: ph[NEAREST].received, what="the alert after confirmation")
        assert alert["incident_id"] == pending.id and alert["type"] == "fight" and alert["priority"] == "high"
        assert alert["text"] == UNSURE
        made = await asyncio.wait_for(transmit.get(), 10)  # the spoken call, as for a certain report
        assert made.incident_id == pending.id and made.text == "皮具饰品城保安请注意，美食街有人打架斗殴，请迅速赶往美食街"
        seen = [(e.data["type"], e.data["reason"]) for e in [await events.get(), await events.get()]]
        assert seen == [("update", "confirmed"), ("update", "dispatched")]

        # and escalation watches it: nobody acknowledges, the next nearest is alerted
        escalated = await eventually(
            lambda: len(rig.dispatcher.store.get(pending.id).assigned) > 1, timeout=10, what="escalation"
        )
        assert escalated
        kinds = [(e.kind, e.actor) for e in rig.dispatcher.store.timeline(pending.id)]
        assert kinds[:3] == [("reported", "dispatcher"), ("confirmed", "operator:li"), ("alerted", "dispatcher")]
        assert ("escalated", "dispatcher") in kinds
        [entry] = [e for e in rig.dispatcher.store.timeline(pending.id) if e.kind == "confirmed"]
        assert entry.detail == {"type": "fight", "priority": "high", "guessed": "other", "guessed_priority": "medium",
                                "from": "needs_confirmation", "to": "reported"}  # fmt: skip


async def test_confirmation_is_idempotent_and_refused_when_not_awaited(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        pending = await rig.dispatcher.handle(say(UNSURE), utterance())
        first = rig.dispatcher.confirm(pending.id, "theft", "high", actor="operator:li")
        assert (first.type, first.priority) == ("theft", "high")
        again = rig.dispatcher.confirm(pending.id, "theft", actor="operator:wang")  # a second click: nothing more
        assert again == rig.dispatcher.store.get(pending.id) and again.status == Status.DISPATCHED
        with pytest.raises(IncidentError):
            rig.dispatcher.confirm(pending.id, "fire", actor="operator:wang")  # no longer awaiting confirmation
        with pytest.raises(IncidentError):
            rig.dispatcher.dismiss(pending.id, actor="operator:wang")
        with pytest.raises(UnknownTypeError):
            rig.dispatcher.confirm(pending.id, "alien", actor="operator:wang")
        with pytest.raises(UnknownTypeError):
            rig.dispatcher.confirm(pending.id, "none", actor="operator:wang")  # "none" is not a type to confirm
        certain = await rig.dispatcher.handle(say("长乐公园有人打架"), utterance("u-2"))
        with pytest.raises(IncidentError):
            rig.dispatcher.confirm(certain.id, "fight", actor="operator:li")  # it never awaited confirmation

        await eventually(lambda: len(ph[NEAREST].received) >= 1, what="the alert")
        await asyncio.sleep(0.3)
        assert len(ph[NEAREST].received) == 1  # one alert for the confirmed incident, not one per click
        assert [e.kind for e in rig.dispatcher.store.timeline(pending.id)].count("confirmed") == 1


async def test_dismissing_closes_it_and_alerts_nobody(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        pending = await rig.dispatcher.handle(say(UNSURE), utterance())
        events = rig.bus.subscribe({"incident"})
        dismissed = rig.dispatcher.dismiss(pending.id, actor="operator:li", reason="演练")
        assert dismissed.status == Status.DISMISSED and dismissed.assigned == ()
        event = (await events.get()).data
        assert (event["type"], event["reason"], event["after"]["status"]) == ("end", "dismissed", "dismissed")
        assert rig.dispatcher.dismiss(pending.id, actor="operator:wang") == dismissed  # again: nothing changes
        with pytest.raises(IncidentError):
            rig.dispatcher.confirm(pending.id, "fight", actor="operator:wang")
        [entry] = [e for e in rig.dispatcher.store.timeline(pending.id) if e.kind == "status"]
        assert (entry.actor, entry.detail) == ("operator:li", {"from": "needs_confirmation", "to": "dismissed", "note": "演练"})
        await eventually(lambda: not rig.outbox.pending(), what="outbox drained")
        await asyncio.sleep(0.3)
        assert ph[NEAREST].received == [] and rig.dispatcher.alerter.sent == 0


async def test_a_certain_report_is_dispatched_at_once_and_chatter_raises_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        events = rig.bus.subscribe({"incident"})
        assert await rig.dispatcher.handle(say("收到，一切正常"), utterance("u-0")) is None
        assert rig.dispatcher.store.list() == [] and events.queue.empty()
        fight = await rig.dispatcher.handle(say("美食街有人打架"), utterance("u-1"))
        assert fight.status == Status.DISPATCHED and fight.assigned == (NEAREST,)
        [alert] = await eventually(lambda: ph[NEAREST].received, what="the alert")
        assert alert["incident_id"] == fight.id


async def test_later_reports_merge_and_a_certain_one_confirms_it(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        pending = await rig.dispatcher.handle(say(UNSURE), utterance("u-1"))
        again = await rig.dispatcher.handle(say("美食街有人报警，请赶往现场"), utterance("u-2"))  # unsure too
        assert again.id == pending.id and again.reports == 2 and again.status == Status.NEEDS_CONFIRMATION
        await asyncio.sleep(0.3)
        assert ph[NEAREST].received == []
        # a report that names the type (`other`: 砸车, damage) settles it: the dispatcher confirms and dispatches
        settled = await rig.dispatcher.handle(say("美食街那边有人砸车了"), utterance("u-3"))
        assert settled.id == pending.id and settled.reports == 3 and settled.status == Status.DISPATCHED
        assert (settled.type, settled.priority) == ("other", "medium")
        [alert] = await eventually(lambda: ph[NEAREST].received, what="the alert")
        assert alert["incident_id"] == pending.id
        kinds = [(e.kind, e.actor) for e in rig.dispatcher.store.timeline(pending.id)]
        assert kinds[:5] == [("reported", "dispatcher"), ("merged", "dispatcher"), ("merged", "dispatcher"),
                             ("confirmed", "dispatcher"), ("alerted", "dispatcher")]  # fmt: skip


async def test_an_unconfirmed_report_is_flagged_and_stays_in_the_queue(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path, confirm_timeout=0.3) as rig:
        events = rig.bus.subscribe({"incident"})
        pending = await rig.dispatcher.handle(say(UNSURE), utterance())
        assert (await events.get()).data["reason"] == "needs_confirmation"
        event = (await asyncio.wait_for(events.get(), 5)).data
        assert (event["type"], event["reason"], event["after"]["status"]) == ("update", "unconfirmed", "needs_confirmation")
        [flag] = [e for e in rig.dispatcher.store.timeline(pending.id) if e.kind == "unconfirmed"]
        assert flag.actor == "dispatcher" and flag.detail["waited_s"] >= 0
        assert rig.dispatcher.store.get(pending.id).status == Status.NEEDS_CONFIRMATION  # not dropped, not closed
        assert rig.dispatcher.confirm(pending.id, "medical", actor="operator:li").status == Status.DISPATCHED


async def test_after_a_restart_waiting_reports_are_watched_again(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        pending = await rig.dispatcher.handle(say(UNSURE), utterance())
    async with running_dispatcher(broker, tmp_path, confirm_timeout=0.2) as rig:  # its time has passed meanwhile
        flagged = await eventually(
            lambda: [e for e in rig.dispatcher.store.timeline(pending.id) if e.kind == "unconfirmed"], what="the flag"
        )
        assert len(flagged) == 1 and rig.dispatcher.store.get(pending.id).status == Status.NEEDS_CONFIRMATION
    async with running_dispatcher(broker, tmp_path, confirm_timeout=0.2) as rig:  # flagged once, not at every start
        await asyncio.sleep(0.5)
        assert [e.kind for e in rig.dispatcher.store.timeline(pending.id)].count("unconfirmed") == 1
