"""A final heard once (recognition was behind) is dispatched at once; heard again later with the alternative hearings
(asr/live.py), it settles what the one hearing raised: re-routed, or the missed report raised, or nothing said when
the hearings agree. Incidents the utterance only added to, or an operator acted on, are left alone. The real
dispatcher, real mosquitto, real SQLite."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from asr.live import RecognisedUtterance
from asr.transcript import Transcript
from dispatch.incidents import Status
from dispatch.topics import Topics
from tests.dispatch.rig import Rig, eventually, phones, running_dispatcher, say
from tests.support.broker import Mosquitto, broker_fixture  # noqa: F401  (the `broker` fixture)

FIGHT = "美食街有人打架，请求支援"
NEAREST = "g-piju"  # the nearest guard to 美食街 (the rig alerts one guard, no police)
ELSEWHERE, ITS_GUARD = "长乐公园有人打架", "g-dongjiao"
SETTLED = 0.3  # s: a message would have reached a phone within this


def heard(main: str, *others: str) -> Transcript:
    """A final whose main hearing says `main` and whose alternative hearings say `others`."""
    return Transcript(text=main, pinyin="", engine="test", alternatives=tuple(say(t) for t in others))


async def final(rig: Rig, transcript: Transcript, uid: str = "u-1", after: float = 0.0) -> Any:
    """`after`: it began that long after now (the transmission after one that ended now)."""
    start = time.time() - 3 + after
    return await rig.dispatcher.handle(transcript, RecognisedUtterance(uid, "ch-market", start, start + 3))


async def again(rig: Rig, transcript: Transcript, uid: str = "u-1") -> Any:
    now = time.time()
    return await rig.dispatcher.reconsider(transcript, RecognisedUtterance(uid, "ch-market", now - 4, now - 1))


async def test_two_hearings_naming_another_place_reroute_the_alert(broker: Mosquitto, tmp_path: Path) -> None:
    transmit: asyncio.Queue = asyncio.Queue()
    async with running_dispatcher(broker, tmp_path, transmit=transmit) as rig, \
            phones(broker, [NEAREST, ITS_GUARD]) as ph:  # fmt: skip
        raised = await final(rig, heard(FIGHT))
        await eventually(lambda: ph[NEAREST].received, what="the alert heard once")
        call = await asyncio.wait_for(transmit.get(), 10)
        assert "美食街" in call.text and call.if_said is None

        moved = await again(rig, heard(FIGHT, ELSEWHERE, ELSEWHERE))

        assert moved.id == raised.id and len(rig.dispatcher.store.list()) == 1
        assert (moved.place_name, moved.type, moved.assigned) == ("长乐公园", "fight", (ITS_GUARD,))
        [alert] = await eventually(lambda: ph[ITS_GUARD].received, what="the alert to the other place's guard")
        assert (alert["kind"], alert["place"]) == ("alert", "长乐公园")
        await eventually(lambda: len(ph[NEAREST].received) == 2, what="the stand-down")
        assert (ph[NEAREST].received[1]["kind"], ph[NEAREST].received[1]["change"]) == ("retraction", "rerouted")
        assert rig.dispatcher.counters()["heard_again"] == {"rerouted": 1}
        # on the radio: the call made on the one hearing is corrected where it was said, or withdrawn
        revisions = [transmit.get_nowait() for _ in range(transmit.qsize())]
        on_its_channel = [r for r in revisions if r.channel == call.channel]
        assert on_its_channel and all(r.if_said is not None for r in on_its_channel)
        assert any("长乐公园" in r.text for r in revisions)


async def test_a_report_whose_partials_alert_the_one_hearing_withdrew_is_raised_again(
    broker: Mosquitto, tmp_path: Path
) -> None:  # fmt: skip
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        start = time.time()
        for i in range(1, len(FIGHT) + 1):  # the partials raise it, the final heard once says it was nothing
            partial = Transcript(text=FIGHT[:i], pinyin="", engine="test", partial=True)
            await rig.dispatcher.handle_partial(partial, RecognisedUtterance("u-1", "ch-market", start, time.time()))
        [provisional] = rig.dispatcher.store.list()
        await final(rig, heard("美食街一切正常"))
        assert rig.dispatcher.store.require(provisional.id).status == Status.RETRACTED

        raised = await again(rig, heard("美食街一切正常", FIGHT, FIGHT))

        assert raised is not None and raised.id != provisional.id and raised.status == Status.DISPATCHED
        await eventually(lambda: [m for m in ph[NEAREST].received if m["incident_id"] == raised.id], what="the alert")


async def test_a_report_the_one_hearing_missed_is_raised(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        assert await final(rig, heard("美食街一切正常")) is None

        raised = await again(rig, heard("美食街一切正常", FIGHT, FIGHT))

        assert raised is not None and (raised.place_name, raised.type) == ("美食街", "fight")
        assert raised.utterance_ids == ("u-1",) and raised.status == Status.DISPATCHED
        [alert] = await eventually(lambda: ph[NEAREST].received, what="the alert")
        assert alert["incident_id"] == raised.id
        assert rig.dispatcher.counters()["heard_again"] == {"raised": 1}


async def test_hearings_that_agree_or_are_less_sure_change_nothing_and_tell_nobody(
    broker: Mosquitto, tmp_path: Path
) -> None:  # fmt: skip
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]) as ph:
        raised = await final(rig, heard(FIGHT))
        await eventually(lambda: ph[NEAREST].received, what="the alert")
        timeline = rig.dispatcher.store.timeline(raised.id)

        assert await again(rig, heard(FIGHT, FIGHT, "美食街有人打架")) is None
        assert await again(rig, heard("长乐公园一切正常"), uid="u-2") is None  # routine stays routine
        assert await again(rig, heard(FIGHT, "有人打架，请求支援", "有人打架，请求支援")) is None  # the place is the one's
        assert rig.dispatcher.counters()["heard_again"] == {"unchanged": 3}
        # the other two hear it as routine: less sure than the one, its alert stands, nobody is stood down
        assert await again(rig, heard(FIGHT, "美食街一切正常", "美食街一切正常")) is None

        await asyncio.sleep(SETTLED)
        assert len(ph[NEAREST].received) == 1 and rig.dispatcher.store.timeline(raised.id) == timeline
        assert len(rig.dispatcher.store.list()) == 1
        assert rig.dispatcher.counters()["heard_again"] == {"unchanged": 3, "kept": 1}


async def test_an_incident_something_else_shaped_since_is_left_alone(
    broker: Mosquitto, tmp_path: Path
) -> None:  # fmt: skip
    async with running_dispatcher(broker, tmp_path) as rig, phones(broker, [NEAREST]):
        first = await final(rig, heard(FIGHT))
        merged = await final(rig, heard(FIGHT), uid="u-2")  # the same fight, reported again: merged into it
        assert merged.id == first.id
        assert await again(rig, heard(FIGHT, ELSEWHERE, ELSEWHERE), uid="u-2") is None

        unsure = await final(rig, heard("长乐公园有情况，请求支援"), uid="u-3")  # 待确认
        assert unsure.status == Status.NEEDS_CONFIRMATION
        rig.dispatcher.confirm(unsure.id, "dispute", actor="operator-1")
        assert await again(rig, heard("长乐公园有情况，请求支援", FIGHT, FIGHT), uid="u-3") is None

        # placed by the next transmission on its channel: that said where
        placeless = await final(rig, heard("有人打架，请求支援"), uid="u-4")
        assert placeless.place_id is None
        placed = await final(rig, heard("在长乐公园"), uid="u-5", after=3.5)
        assert placed.id == placeless.id and placed.place_name == "长乐公园"
        assert await again(rig, heard("有人打架，请求支援", "美食街有人打架", "美食街有人打架"), uid="u-4") is None

        # acknowledged by a responder on his way
        acked = await final(rig, heard("夜市有人吵架"), uid="u-6")
        responder = acked.assigned[0]
        await rig.dispatcher.on_message(Topics().ack(responder), json.dumps({"incident_id": acked.id}).encode())
        assert await again(rig, heard("夜市有人吵架", ELSEWHERE, ELSEWHERE), uid="u-6") is None

        assert rig.dispatcher.store.require(first.id).place_name == "美食街"
        assert rig.dispatcher.store.require(unsure.id).type == "dispute"
        assert rig.dispatcher.store.require(placeless.id).place_name == "长乐公园"
        assert rig.dispatcher.store.require(acked.id).type == "dispute"
        assert rig.dispatcher.counters()["heard_again"] == {"left": 4}
