"""Dispatch from the live transcript: partials that name a place and a certain incident, and hold, raise it at once
(provisional); the utterance's final confirms, re-routes, requeues or retracts it, and every phone alerted is told.
The gate alone on plain readings; the dispatcher with the real classifier, real mosquitto and real SQLite."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from asr.live import RecognisedUtterance
from asr.transcript import Transcript
from dispatch.classify import classify
from dispatch.config import PartialRules
from dispatch.incidents import Status
from dispatch.provisional import PartialGate, Raise, Reading, Verdict, settle
from dispatch.topics import Topics
from tests.dispatch.chatter import ROUTINE_CHATTER
from tests.dispatch.rig import Phone, Rig, eventually, phones, running_dispatcher, say
from tests.support.broker import Mosquitto, broker_fixture  # noqa: F401  (the `broker` fixture)

FIGHT = "美食街有人打架，请求支援"
NEAREST = "g-piju"  # the nearest guard to 美食街 (the rig alerts one guard, no police)
ELSEWHERE, ITS_GUARD = "长乐公园有人打架", "g-dongjiao"  # another place, far enough for another guard
UNSURE = "美食街有情况，请求支援"  # something happened at 美食街, but what? (待确认)
FAIRLY_SURE = "美食街两个人吵起来动手了"  # a fight, certain, but less confident than a pause in the call asks for
SETTLED = 0.3  # s: a message would have reached a phone within this


def partial(text: str) -> Transcript:
    return Transcript(text=text, pinyin="", engine="test", partial=True)


async def talk(rig: Rig, text: str, uid: str = "u-1", channel: str = "ch-market") -> None:
    """The recogniser's partials while `text` is spoken: one more character each time (a punctuation mark rides
    with the character before it), each read before the next arrives."""
    start = time.time()
    for i, c in enumerate(text):
        if c.isalnum():
            await rig.dispatcher.handle_partial(partial(text[: i + 1]), RecognisedUtterance(uid, channel, start, time.time()))


async def final(rig: Rig, text: str, uid: str = "u-1", channel: str = "ch-market") -> Any:
    now = time.time()
    return await rig.dispatcher.handle(say(text), RecognisedUtterance(uid, channel, now - 3, now))


def kinds(phone: Phone) -> list[tuple[str, Any]]:
    return [(m["kind"], m.get("change", m.get("provisional"))) for m in phone.received]


def test_the_phrases_mean_what_these_tests_need() -> None:
    assert classify(FIGHT).type == classify(ELSEWHERE).type == "fight" and not classify(FIGHT).needs_confirmation
    assert classify("美食街一切正常").type == "none"
    assert classify("美食街有人吵架").type == "dispute"
    assert classify(UNSURE).needs_confirmation  # report words, no type word
    fairly_sure = classify(FAIRLY_SURE)
    assert fairly_sure.type == "fight" and not fairly_sure.needs_confirmation and fairly_sure.confidence < 0.9


# --- the gate and the verdict, on plain readings -------------------------------------------------------------------

FIGHT_HERE = Reading("fight", "high", False, 1.0, "meishijie", 0.95)
RULES = PartialRules(stable_partials=2, stable_units=5, after_pause=3, min_confidence=0.9, min_place_confidence=0.7,
                     min_priority="high")  # fmt: skip


def heard_as(units: int, reading: Reading = FIGHT_HERE, pauses: tuple[int, ...] = (6,), **changes: Any) -> Reading:
    """`reading` on a partial of `units` syllables; by default 美食街有人打架 | 请求支援…: a pause after the 7th."""
    return replace(reading, units=units, pauses=tuple(p for p in pauses if p < units - 1), **changes)


def test_the_gate_opens_once_a_certain_reading_has_held_past_the_end_of_its_clause() -> None:
    gate = PartialGate(RULES)
    said = [heard_as(5, type="none", place_id="meishijie"),  # 美食街有人
            heard_as(6, needs_confirmation=True),  # 美食街有人打: a fight? not sure yet
            heard_as(7), heard_as(8), heard_as(9),  # 美食街有人打架 | 请 求: the clause has ended, 2 syllables after
            heard_as(10)]  # 支: three syllables after the pause, five since 打  # fmt: skip
    assert [bool(gate.feed(r)) for r in said] == [False] * 5 + [True] and gate.fired == said[-1]
    assert not gate.feed(heard_as(11))  # once


def test_without_a_pause_after_it_the_final_decides() -> None:
    gate = PartialGate(RULES)
    assert not any(gate.feed(heard_as(n, pauses=())) for n in range(6, 30))
    gate = PartialGate(RULES)  # a pause before the incident was first read is not the end of its clause
    assert not any(gate.feed(heard_as(n, pauses=(3,))) for n in range(6, 30))
    counting = PartialGate(RULES.model_copy(update={"after_pause": 0}))  # no pause needed: held is enough
    assert [bool(counting.feed(heard_as(n, pauses=()))) for n in range(7, 12)] == [False] * 4 + [True]


def test_two_sure_readings_in_a_row_are_needed_and_a_change_starts_again() -> None:
    gate = PartialGate(RULES)
    unsure = [heard_as(n, needs_confirmation=True) for n in range(6, 14)]
    assert not any(gate.feed(r) for r in unsure)
    assert not gate.feed(heard_as(14)) and gate.feed(heard_as(15))
    elsewhere = replace(FIGHT_HERE, place_id="changle-gongyuan")
    said = [heard_as(7), heard_as(8), heard_as(9, elsewhere), heard_as(10, elsewhere), heard_as(11, elsewhere),
            heard_as(12, elsewhere)]  # fmt: skip
    again = PartialGate(RULES)
    assert not any(again.feed(r) for r in said)  # first read at 9 syllables: the pause after the 7th came before it


@pytest.mark.parametrize(
    "reading",
    [
        Reading("fight", "high", True, 1.0, "meishijie", 0.95),  # 待确认: only a final may queue it
        Reading("none", "none", False, 1.0, "meishijie", 0.95),  # routine
        Reading("fight", "high", False, 1.0, None),  # no known place
        Reading("fight", "high", False, 0.6, "meishijie", 0.95),  # not confident of the type
        Reading("fight", "high", False, 1.0, "paichusuo", 0.475),  # a place only being called
        Reading("dispute", "medium", False, 1.0, "meishijie", 0.95),  # not urgent enough for these rules
    ],
)
def test_the_gate_never_opens_on_an_unsure_reading(reading: Reading) -> None:
    gate = PartialGate(RULES)
    assert not any(gate.feed(heard_as(n, reading)) for n in range(7, 30))


def test_at_a_pause_in_the_speech_a_certain_reading_fires_at_once() -> None:
    gate = PartialGate(RULES)
    assert gate.feed(heard_as(7, pauses=()), paused=True) == Raise.ALERT  # no need to hold over more syllables
    assert gate.fired == heard_as(7, pauses=()) and gate.feed(heard_as(8), paused=True) is None  # once


@pytest.mark.parametrize(
    "reading",
    [
        Reading("fight", "high", True, 1.0, "meishijie", 0.95),  # 待确认
        Reading("fight", "high", False, 1.0, None),  # no known place
        Reading("fight", "high", False, 0.6, "meishijie", 0.95),  # not confident enough to alert on a partial
        Reading("dispute", "medium", False, 1.0, "meishijie", 0.95),  # not urgent enough for these rules
    ],
)
def test_at_a_pause_any_other_report_is_queued_once_and_a_later_qualifying_reading_still_alerts(reading: Reading) -> None:
    gate = PartialGate(RULES)
    assert gate.feed(heard_as(7, reading)) is None  # not at a pause
    assert gate.feed(heard_as(7, reading), paused=True) == Raise.QUEUE and gate.fired is None
    assert gate.queued == heard_as(7, reading)
    assert gate.feed(heard_as(9, reading), paused=True) is None  # queued once
    assert gate.feed(heard_as(11)) is None
    assert gate.feed(heard_as(12), paused=True) == Raise.ALERT and gate.fired == heard_as(12)


def test_at_a_pause_a_less_confident_reading_alerts_down_to_pause_min_confidence() -> None:
    rules = RULES.model_copy(update={"pause_min_confidence": 0.8})
    sure_enough, gate = heard_as(7, confidence=0.85), PartialGate(rules)
    assert gate.feed(sure_enough) is None  # mid-speech, 0.9 is needed
    assert gate.feed(sure_enough, paused=True) == Raise.ALERT
    assert PartialGate(rules).feed(heard_as(7, confidence=0.75), paused=True) == Raise.QUEUE


@pytest.mark.parametrize(
    "changes", [{"confidence": 0.6}, {"place_confidence": 0.45}, {"confidence": 0.56, "place_confidence": 0.6}]
)
def test_at_a_pause_that_went_on_what_the_final_would_dispatch_alerts(changes: dict[str, Any]) -> None:
    fairly_sure, gate = heard_as(7, **changes), PartialGate(RULES.model_copy(update={"pause_min_confidence": 0.8}))
    assert gate.feed(fairly_sure, paused=True) == Raise.QUEUE  # a breath inside the call, maybe
    assert gate.feed(fairly_sure, paused=True, settled=True) == Raise.ALERT and gate.fired == fairly_sure


@pytest.mark.parametrize(
    "reading",
    [
        Reading("fight", "high", True, 0.6, "meishijie", 0.95),  # 待确认 stays for the operator, however long the pause
        Reading("fight", "high", False, 1.0, None),  # no known place: nobody to send
        Reading("dispute", "medium", False, 1.0, "meishijie", 0.95),  # not urgent enough for these rules
    ],
)
def test_at_a_pause_that_went_on_nothing_else_alerts(reading: Reading) -> None:
    gate = PartialGate(RULES)
    assert gate.feed(heard_as(7, reading), paused=True) == Raise.QUEUE
    assert gate.feed(heard_as(7, reading), paused=True, settled=True) is None and gate.fired is None


def test_at_a_pause_routine_raises_nothing() -> None:
    gate = PartialGate(RULES)
    assert gate.feed(heard_as(7, type="none"), paused=True) is None and gate.queued is None


def test_repeated_partials_are_not_read_again() -> None:
    gate = PartialGate(PartialRules())
    assert gate.changed(partial("美食街有人"))
    assert not gate.changed(partial("美食街有人"))
    assert gate.changed(partial("美食街有人打"))


def test_what_the_final_makes_of_it() -> None:
    assert settle(FIGHT_HERE, FIGHT_HERE) == Verdict.CONFIRMED
    assert settle(FIGHT_HERE, Reading("fight", "critical", False, 0.95, "meishijie", 0.6)) == Verdict.CONFIRMED
    assert settle(FIGHT_HERE, Reading("fight", "high", False, 1.0, "changle-gongyuan", 0.95)) == Verdict.REROUTED
    assert settle(FIGHT_HERE, Reading("dispute", "medium", False, 1.0, "meishijie", 0.95)) == Verdict.REROUTED
    assert settle(FIGHT_HERE, Reading("fight", "high", False, 1.0, None)) == Verdict.REROUTED
    assert settle(FIGHT_HERE, Reading("other", "medium", True, 0.5, "meishijie", 0.95)) == Verdict.REQUEUED
    assert settle(FIGHT_HERE, Reading("none", "none", False, 0.9, None)) == Verdict.RETRACTED
    queued = Reading("other", "medium", True, 0.5, "meishijie", 0.95)  # a 待确认 entry raised at a pause
    assert settle(queued, Reading("other", "medium", True, 0.5, "changle-gongyuan", 0.95)) == Verdict.CONFIRMED
    assert settle(queued, FIGHT_HERE) == Verdict.DISPATCHED
    assert settle(queued, Reading("none", "none", False, 0.9, None)) == Verdict.RETRACTED


# --- the dispatcher ----------------------------------------------------------------------------------------------


async def test_partials_raise_a_provisional_incident_and_alert_before_the_final(broker: Mosquitto, tmp_path: Path) -> None:
    transmit: asyncio.Queue = asyncio.Queue()
    async with running_dispatcher(broker, tmp_path, transmit=transmit) as rig, phones(broker, [NEAREST]) as ph:
        console = Phone(broker, "console")
        await console.connect(subscribe=False)
        await console.subscribe(Topics().events)
        events = rig.bus.subscribe({"incident"})

        await talk(rig, FIGHT)  # the final has not come

        [incident] = rig.dispatcher.store.list()
        assert incident.provisional and incident.type == "fight" and incident.place_name == "美食街"
        assert incident.status == Status.DISPATCHED and incident.assigned == (NEAREST,)
        assert incident.utterance_ids == ("u-1",) and incident.text.startswith("美食街有人打架")
        [alert] = await eventually(lambda: ph[NEAREST].received, what="the provisional alert")
        assert alert["kind"] == "alert" and alert["provisional"] is True and alert["incident_id"] == incident.id
        assert alert["type"] == "fight" and alert["place"] == "美食街"
        first = (await events.get()).data
        assert (first["type"], first["reason"]) == ("new", "provisional") and first["after"]["provisional"] is True
        published = await eventually(lambda: console.received, what="the event on <prefix>/events")
        assert published[0]["reason"] == "provisional" and published[0]["after"]["provisional"] is True
        call = await asyncio.wait_for(transmit.get(), 10)  # the spoken call too, as the phones are alerted
        assert (call.incident_id, call.if_said) == (incident.id, None) and "美食街有人打架斗殴" in call.text
        assert rig.dispatcher.counters()["provisional"] == {"raised": 1}
        await console.disconnect()


async def test_the_final_confirming_it_clears_the_mark_without_a_second_incident_or_alert(
    broker: Mosquitto, tmp_path: Path
) -> None:
    transmit: asyncio.Queue = asyncio.Queue()
    async with running_dispatcher(broker, tmp_path, transmit=transmit) as rig, phones(broker, [NEAREST]) as ph:
        await talk(rig, FIGHT)
        [raised] = rig.dispatcher.store.list()
        events = rig.bus.subscribe({"incident"})

        settled = await final(rig, FIGHT + "，有人受伤")

        assert settled.id == raised.id and not settled.provisional and len(rig.dispatcher.store.list()) == 1
        assert settled.status == Status.DISPATCHED and settled.text == FIGHT + "，有人受伤"  # the final's words
        event = (await events.get()).data
        assert (event["type"], event["reason"]) == ("update", "final") and event["after"]["provisional"] is False
        await eventually(lambda: len(ph[NEAREST].received) == 2, what="the update after the alert")
        await asyncio.sleep(SETTLED)
        assert kinds(ph[NEAREST]) == [("alert", True), ("update", "final")]  # one alert, then what became of it
        assert ph[NEAREST].received[1]["provisional"] is False and ph[NEAREST].received[1]["incident_id"] == raised.id
        call, revision = [await asyncio.wait_for(transmit.get(), 10) for _ in range(2)]
        assert call.incident_id == revision.incident_id == raised.id and call.if_said is None
        assert revision.if_said == "" and revision.channel == call.channel  # said already: nothing to add
        assert transmit.empty()
        timeline = [e.kind for e in rig.dispatcher.store.timeline(raised.id)]
        assert timeline[:2] == ["reported", "alerted"] and "final" in timeline
        assert rig.dispatcher.alerter.sent == 1


async def test_after_a_restart_the_final_revises_the_call_made_before_it(broker: Mosquitto, tmp_path: Path) -> None:
    """The service stops between the provisional call and the final: the final, handled by the next run, knows the
    call was made (it is rebuilt from the incident) and does not say it a second time."""
    before: asyncio.Queue = asyncio.Queue()
    async with running_dispatcher(broker, tmp_path, transmit=before) as rig:
        await talk(rig, FIGHT)
        [raised] = rig.dispatcher.store.list()
    call = before.get_nowait()
    after: asyncio.Queue = asyncio.Queue()
    async with running_dispatcher(broker, tmp_path, transmit=after) as rig:
        settled = await final(rig, FIGHT + "，有人受伤")
        assert settled.id == raised.id and not settled.provisional
        revision = after.get_nowait()
        assert (revision.channel, revision.if_said) == (call.channel, "")  # said already: nothing to add
        assert after.empty()


async def test_a_final_heard_too_long_ago_to_dispatch_still_settles_what_its_partials_raised(
    broker: Mosquitto, tmp_path: Path
) -> None:  # fmt: skip
    """A final recognised long after the call (the service killed before it, restarted an hour later) pages nobody
    new (node.dispatch_max_age_s, bridge/service.py), but the provisional incident its partials raised still waits
    for it: the phones alerted on it are owed the confirmation or the retraction."""
    hour_ago = time.time() - 3600
    async with running_dispatcher(broker, tmp_path) as rig:
        await talk(rig, FIGHT)
        assert rig.dispatcher.too_old("u-1", hour_ago, 900) is None  # awaited whatever its age
        assert 3599 < (rig.dispatcher.too_old("u-2", hour_ago, 900) or 0) < 3700  # nothing awaits this one
        assert rig.dispatcher.too_old("u-2", time.time() - 60, 900) is None  # a minute: not too old
        await final(rig, "收到")  # settled (retracted): nothing awaits it any more
        assert rig.dispatcher.too_old("u-1", hour_ago, 900) is not None


async def test_a_final_naming_another_place_reroutes_it(broker: Mosquitto, tmp_path: Path) -> None:
    transmit: asyncio.Queue = asyncio.Queue()
    async with running_dispatcher(broker, tmp_path, transmit=transmit) as rig, phones(broker, [NEAREST, ITS_GUARD]) as ph:
        await talk(rig, FIGHT)
        [raised] = rig.dispatcher.store.list()
        await eventually(lambda: ph[NEAREST].received, what="the provisional alert")
        events = rig.bus.subscribe({"incident"})

        moved = await final(rig, ELSEWHERE)

        assert moved.id == raised.id and len(rig.dispatcher.store.list()) == 1 and not moved.provisional
        assert (moved.place_id, moved.place_name, moved.type) == ("changle-gongyuan", "长乐公园", "fight")
        assert moved.assigned == (ITS_GUARD,) and moved.status == Status.DISPATCHED
        event = (await events.get()).data
        assert (event["type"], event["reason"]) == ("update", "rerouted")
        assert event["before"]["place_name"] == "美食街" and event["after"]["place_name"] == "长乐公园"
        [alert] = await eventually(lambda: ph[ITS_GUARD].received, what="the alert to the new nearest guard")
        assert (alert["kind"], alert["provisional"], alert["place"]) == ("alert", False, "长乐公园")
        await eventually(lambda: len(ph[NEAREST].received) == 2, what="the retraction")
        stood_down = ph[NEAREST].received[1]
        assert (stood_down["kind"], stood_down["change"], stood_down["incident_id"]) == ("retraction", "rerouted", raised.id)
        assert stood_down["place"] == "美食街"  # what that phone was sent to
        kinds_ = [e.kind for e in rig.dispatcher.store.timeline(raised.id)]
        assert "withdrawn" in kinds_ and "rerouted" in kinds_
        # on the radio: the call made on the partial is revised; once said, corrected or withdrawn on the air
        said = [transmit.get_nowait() for _ in range(transmit.qsize())]
        call, revisions = said[0], said[1:]
        assert call.if_said is None and "美食街" in call.text
        on_its_channel = [r for r in revisions if r.channel == call.channel]
        assert on_its_channel and all(r.if_said is not None for r in on_its_channel)
        assert all((r.if_said.startswith("更正，") and "长乐公园" in r.text) or r.if_said.endswith("警情撤销，无需前往")
                   for r in on_its_channel)  # fmt: skip
        assert any("长乐公园" in r.text for r in revisions)  # the new nearest guard's call, wherever he listens


async def test_a_final_naming_the_place_of_an_open_incident_of_its_type_is_merged_into_it(
    broker: Mosquitto, tmp_path: Path
) -> None:  # fmt: skip
    """The provisional alert went to 美食街; the final says 长乐公园, where the same fight is open already: the report
    joins that incident, and the provisional one is retracted as merged into it (its phone stood down)."""
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST, ITS_GUARD]) as ph:
        open_one = await final(rig, ELSEWHERE, uid="u-0", channel="ch-school")
        await talk(rig, FIGHT)
        raised = next(i for i in rig.dispatcher.store.list() if i.id != open_one.id)
        await eventually(lambda: ph[NEAREST].received, what="the provisional alert")
        events = rig.bus.subscribe({"incident"})

        merged = await final(rig, ELSEWHERE)

        assert merged.id == open_one.id and merged.reports == 2
        retracted = rig.dispatcher.store.require(raised.id)
        assert retracted.status == Status.RETRACTED
        detail = rig.dispatcher.store.timeline(raised.id)[-1].detail
        assert (detail["merged_into"], detail["to"], detail["final"]) == (open_one.id, "retracted", ELSEWHERE)
        assert detail["verdict"] == "rerouted" and retracted.text == ELSEWHERE  # the final it was settled by, said
        reasons = [(await events.get()).data["reason"] for _ in range(2)]
        assert reasons == ["merged_elsewhere", "merged"]
        await eventually(lambda: len(ph[NEAREST].received) == 2, what="the retraction")
        assert (ph[NEAREST].received[1]["kind"], ph[NEAREST].received[1]["change"]) == ("retraction", "merged")


async def test_a_responder_who_acknowledged_and_is_stood_down_is_free_again(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST, ITS_GUARD]) as ph:
        await talk(rig, FIGHT)
        [raised] = rig.dispatcher.store.list()
        await ph[NEAREST].publish(Topics().ack(NEAREST), {"incident_id": raised.id})  # on his way already
        await eventually(lambda: rig.service.board.status(NEAREST) == "busy", what="the ack")
        await final(rig, ELSEWHERE)
        assert rig.service.board.status(NEAREST) == "available" and rig.service.board.engaged_on(NEAREST) is None


async def test_a_final_of_another_type_reroutes_it_to_whom_that_type_needs(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        await talk(rig, FIGHT)
        moved = await final(rig, "美食街有人吵架")  # a dispute: the grid's chief follows it up too

        assert (moved.type, moved.place_name, moved.priority) == ("dispute", "美食街", "medium")
        chief = next(r for r in moved.assigned if r != NEAREST)
        assert moved.assigned[0] == NEAREST and rig.dispatcher.jurisdiction.responder(chief).role == "chief"
        await eventually(lambda: len(ph[NEAREST].received) == 2, what="the update")
        update = ph[NEAREST].received[1]
        assert (update["kind"], update["change"], update["type"]) == ("update", "rerouted", "dispute")


async def test_a_routine_final_retracts_it_and_tells_every_phone_alerted(broker: Mosquitto, tmp_path: Path) -> None:
    """Two guards alerted, and escalation armed (a third would be alerted after an ack timeout of silence): the
    retraction reaches every phone alerted, and nobody is alerted for the incident after it."""
    transmit: asyncio.Queue = asyncio.Queue()
    async with (
        running_dispatcher(broker, tmp_path, guards=2, ack_timeout=1.0, transmit=transmit) as rig,
        phones(broker, [NEAREST, "g-gaoqiao", "v-yeshi", "g-yeshi", "g-huaniao"]) as ph,
    ):
        await talk(rig, FIGHT)
        [raised] = rig.dispatcher.store.list()
        assert len(raised.assigned) == 2
        await eventually(lambda: all(ph[r].received for r in raised.assigned), what="both provisional alerts")
        events = rig.bus.subscribe({"incident"})

        retracted = await final(rig, "美食街一切正常")

        alerted = set(rig.dispatcher.store.timeline(raised.id)[-2].detail["responders"])  # whoever was alerted by now
        assert alerted >= set(raised.assigned) and alerted <= set(ph)
        sent = rig.dispatcher.alerter.sent
        assert retracted.id == raised.id and retracted.status == Status.RETRACTED and not retracted.provisional
        assert retracted.text == "美食街一切正常" and retracted.assigned == ()
        event = (await events.get()).data
        assert (event["type"], event["reason"]) == ("end", "retracted") and event["after"]["status"] == "retracted"
        for rid in alerted:
            await eventually(lambda rid=rid: ph[rid].received[-1]["kind"] == "retraction", what=f"the retraction to {rid}")
            told = ph[rid].received[-1]
            assert (told["change"], told["incident_id"]) == ("retracted", raised.id)
        await asyncio.sleep(2.2)  # two ack timeouts: nobody else is alerted for a retracted incident
        assert rig.dispatcher.alerter.sent == sent and rig.dispatcher.alerter.withdrawn == len(alerted)
        assert all(p.received[-1]["kind"] == "retraction" for p in ph.values() if p.received)
        assert rig.dispatcher.counters()["provisional"] == {"raised": 1, "retracted": 1}
        said = [transmit.get_nowait() for _ in range(transmit.qsize())]
        calls, withdrawals = [a for a in said if a.if_said is None], [a for a in said if a.if_said is not None]
        assert calls and {a.channel for a in withdrawals} == {a.channel for a in calls}  # every channel called
        assert all(a.text == "" and a.if_said.endswith("美食街有人打架斗殴，警情撤销，无需前往") for a in withdrawals)


async def test_an_utterance_that_ends_as_nothing_retracts_it(broker: Mosquitto, tmp_path: Path) -> None:
    """A discarded utterance, or one whose final heard nothing: the recognition hands over an empty final."""
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        await talk(rig, FIGHT)
        now = time.time()
        ended = await rig.dispatcher.handle(Transcript("", ""), RecognisedUtterance("u-1", "ch-market", now - 2, now))
        assert ended is not None and ended.status == Status.RETRACTED
        await eventually(lambda: len(ph[NEAREST].received) == 2, what="the retraction")
        assert kinds(ph[NEAREST]) == [("alert", True), ("retraction", "retracted")]


async def test_a_final_unsure_of_the_type_puts_it_back_to_the_operator(broker: Mosquitto, tmp_path: Path) -> None:
    transmit: asyncio.Queue = asyncio.Queue()
    async with running_dispatcher(broker, tmp_path, transmit=transmit) as rig, phones(broker, [NEAREST]) as ph:
        await talk(rig, FIGHT)
        waiting = await final(rig, UNSURE)  # the recogniser revised its guess: the type word was not heard

        assert waiting.status == Status.NEEDS_CONFIRMATION and waiting.assigned == () and not waiting.provisional
        await eventually(lambda: len(ph[NEAREST].received) == 2, what="the stand-down")
        assert kinds(ph[NEAREST]) == [("alert", True), ("retraction", "requeued")]
        call, held = [transmit.get_nowait() for _ in range(transmit.qsize())]  # on the air: the call, then held
        assert call.if_said is None and held.channel == call.channel and held.text == ""
        assert held.if_said.startswith("更正，") and held.if_said.endswith("美食街有人打架斗殴，暂缓前往，等待指挥室确认")

        confirmed = rig.dispatcher.confirm(waiting.id, "fight", actor="operator:li")  # the operator hears it: a fight
        assert confirmed.status == Status.DISPATCHED and confirmed.assigned == (NEAREST,)
        await eventually(lambda: len(ph[NEAREST].received) == 3, what="the alert after confirmation")
        assert kinds(ph[NEAREST])[2] == ("alert", False)
        assert transmit.get_nowait().if_said is None  # the operator's dispatch: a call as any


async def test_chatter_partials_never_raise_anything(broker: Mosquitto, tmp_path: Path) -> None:
    lines = [*ROUTINE_CHATTER, "美食街一切正常", "美食街巡逻完毕，没有发现异常", "长乐公园门口交接班了"]
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        for i, text in enumerate(lines):
            if text.isascii():  # pinyin lines: a partial per syllable
                words = text.split()
                for n in range(1, len(words) + 1):
                    ref = RecognisedUtterance(f"u-{i}", "ch-market", time.time(), time.time())
                    await rig.dispatcher.handle_partial(Transcript("", " ".join(words[:n]), partial=True), ref)
            else:
                await talk(rig, text, uid=f"u-{i}")
        assert rig.dispatcher.store.list() == [] and rig.dispatcher.alerter.sent == 0
        await asyncio.sleep(SETTLED)
        assert ph[NEAREST].received == []


async def test_an_unsure_report_never_fires_from_partials_only_its_final_queues_it(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        await talk(rig, UNSURE)
        assert rig.dispatcher.store.list() == []
        queued = await final(rig, UNSURE)
        assert queued.status == Status.NEEDS_CONFIRMATION and [i.id for i in rig.dispatcher.store.list()] == [queued.id]
        await asyncio.sleep(SETTLED)
        assert ph[NEAREST].received == []


async def pause(rig: Rig, text: str, uid: str = "u-1", settled: bool = False) -> None:
    """The partial the recogniser gives when the segmenter hears the speaker pause after `text` (`settled`: handed
    over again, the pause having gone on)."""
    start = time.time()
    ref = RecognisedUtterance(uid, "ch-market", start, start, paused=True, settled=settled)
    await rig.dispatcher.handle_partial(partial(text), ref)


async def test_a_pause_after_a_report_alerts_at_once(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        await rig.dispatcher.handle_partial(partial(FIGHT), RecognisedUtterance("u-1", "ch-market", 0, 0))
        assert rig.dispatcher.store.list() == []  # one partial alone has not held
        await pause(rig, FIGHT)
        (raised,) = rig.dispatcher.store.list()
        assert raised.provisional and raised.type == "fight" and raised.assigned == (NEAREST,)
        settled = await final(rig, FIGHT)
        assert settled.id == raised.id and not settled.provisional
        await eventually(lambda: len(ph[NEAREST].received) == 2, what="the update")
        assert kinds(ph[NEAREST]) == [("alert", True), ("update", "final")]


async def test_an_unsure_report_at_a_pause_waits_for_the_operator_and_a_certain_final_dispatches_it(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        await pause(rig, UNSURE)
        (queued,) = rig.dispatcher.store.list()
        assert queued.status == Status.NEEDS_CONFIRMATION and queued.provisional and queued.assigned == ()
        await asyncio.sleep(SETTLED)
        assert ph[NEAREST].received == []  # nobody goes on a guess
        dispatched = await final(rig, UNSURE + "，有人打架")  # the speaker went on: a fight
        assert dispatched.id == queued.id and dispatched.status == Status.DISPATCHED and not dispatched.provisional
        assert dispatched.type == "fight" and dispatched.assigned == (NEAREST,) and len(rig.dispatcher.store.list()) == 1
        await eventually(lambda: len(ph[NEAREST].received) == 1, what="the alert")
        assert kinds(ph[NEAREST]) == [("alert", False)]


async def test_an_unsure_report_at_a_pause_is_dispatched_by_a_later_certain_partial(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]):
        await pause(rig, UNSURE)
        await talk(rig, UNSURE + "，有人打架")
        await pause(rig, UNSURE + "，有人打架")
        (incident,) = rig.dispatcher.store.list()
        assert incident.status == Status.DISPATCHED and incident.type == "fight" and incident.provisional
        settled = await final(rig, UNSURE + "，有人打架")
        assert settled.id == incident.id and not settled.provisional and settled.assigned == (NEAREST,)


async def test_a_pause_that_goes_on_dispatches_what_it_queued_as_surely_as_the_final(
    broker: Mosquitto, tmp_path: Path
) -> None:
    rules = {"partials": {"pause_min_confidence": 0.9}}
    async with running_dispatcher(broker, tmp_path, dispatch=rules) as rig, phones(broker, [NEAREST]) as ph:
        await pause(rig, FAIRLY_SURE)
        (queued,) = rig.dispatcher.store.list()
        assert queued.status == Status.NEEDS_CONFIRMATION and queued.assigned == ()  # maybe a breath: nobody yet
        await pause(rig, FAIRLY_SURE, settled=True)
        (alerted,) = rig.dispatcher.store.list()
        assert alerted.id == queued.id and alerted.status == Status.DISPATCHED and alerted.provisional
        assert alerted.type == "fight" and alerted.assigned == (NEAREST,)
        await eventually(lambda: len(ph[NEAREST].received) == 1, what="the alert")
        confirmed = await final(rig, FAIRLY_SURE)
        assert confirmed.id == queued.id and not confirmed.provisional and len(rig.dispatcher.store.list()) == 1


@pytest.mark.parametrize("ending", ["美食街一切正常", ""])
async def test_an_unsure_report_at_a_pause_that_ends_as_routine_is_retracted(
    broker: Mosquitto, tmp_path: Path, ending: str
) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        await pause(rig, UNSURE)
        retracted = await final(rig, ending)
        assert retracted.status == Status.RETRACTED and rig.dispatcher.store.list(status=Status.NEEDS_CONFIRMATION) == []


async def test_chatter_at_a_pause_raises_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        for i, text in enumerate([*ROUTINE_CHATTER, "美食街一切正常", "美食街巡逻完毕，没有发现异常"]):
            if not text.isascii():
                await pause(rig, text, uid=f"u-{i}")
        assert rig.dispatcher.store.list() == []


async def test_one_utterance_never_raises_two_incidents(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        await talk(rig, FIGHT, uid="u-1")
        await talk(rig, FIGHT + "，人很多", uid="u-1")  # the recogniser revised itself: still the one utterance
        settled = await final(rig, FIGHT, uid="u-1")
        await talk(rig, FIGHT + "，快来人", uid="u-1")  # a partial arriving late, after the final: nothing
        assert [i.id for i in rig.dispatcher.store.list()] == [settled.id] and settled.reports == 1

        # another guard reports the same fight on another channel: its partials raise nothing, its final merges
        await talk(rig, "美食街那边打架了，快来人", uid="u-2", channel="ch-other")
        assert [i.id for i in rig.dispatcher.store.list()] == [settled.id]
        merged = await final(rig, "美食街那边打架了，快来人", uid="u-2", channel="ch-other")
        assert merged.id == settled.id and merged.reports == 2 and merged.utterance_ids == ("u-1", "u-2")
        await asyncio.sleep(SETTLED)
        assert [k for k, _ in kinds(ph[NEAREST])] == ["alert", "update"]


async def test_partials_are_read_only_when_their_words_change(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        read: list[str] = []
        read_report_ = rig.dispatcher._read_report
        rig.dispatcher._read_report = lambda t, channel: read.append(t.text) or read_report_(t, channel)  # type: ignore[method-assign]
        ref = RecognisedUtterance("u-1", "ch-market", time.time(), time.time())
        for text in ["美食街", "美食街", "美食街有人", "美食街有人", "美食街有人"]:
            await rig.dispatcher.handle_partial(partial(text), ref)
        assert read == ["美食街", "美食街有人"]


async def test_partials_waiting_while_one_is_read_are_skipped_for_the_newest(broker: Mosquitto, tmp_path: Path) -> None:
    """Under load the reader falls behind: only the newest partial of an utterance is read next."""
    async with running_dispatcher(broker, tmp_path) as rig:
        read: list[str] = []
        read_report_ = rig.dispatcher._read_report

        def slow(t: Transcript, channel: str) -> Any:
            time.sleep(0.05)  # in the reader thread: the loop goes on taking partials
            read.append(t.text)
            return read_report_(t, channel)

        rig.dispatcher._read_report = slow  # type: ignore[method-assign]
        ref = RecognisedUtterance("u-1", "ch-market", time.time(), time.time())
        texts = [FIGHT[: n + 1] for n in range(len(FIGHT))]
        handed = []
        for t in texts:  # a partial every 10 ms, as the recognition hands them over: without waiting
            handed.append(asyncio.create_task(rig.dispatcher.handle_partial(partial(t), ref)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*handed)
        assert read[0] == texts[0] and read[-1] == texts[-1] and len(read) < len(texts) / 2


async def test_provisional_alerts_can_be_turned_off(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path, dispatch={"provisional": False}) as rig:
        await talk(rig, FIGHT)
        assert rig.dispatcher.store.list() == []
        incident = await final(rig, FIGHT)
        assert incident is not None and not incident.provisional and incident.status == Status.DISPATCHED
