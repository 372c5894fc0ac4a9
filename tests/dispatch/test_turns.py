"""A call told in two transmissions on one channel is read as one: the place in one and the report in the next, or
the report first and its place after it. Routine lines, other channels and transmissions too far apart stay apart.
Real classifier and place matcher, real mosquitto, real SQLite."""

from __future__ import annotations

import time
from pathlib import Path

from asr.live import RecognisedUtterance
from asr.transcript import Transcript
from bridge.events import Utterance
from dispatch.incidents import Status
from dispatch.turns import CARRY_S, LastTurns, Turn
from tests.dispatch.rig import eventually, running_dispatcher, say
from tests.support.broker import Mosquitto, broker_fixture  # noqa: F401  (the `broker` fixture)

PLACE = "万寿路花鸟市场"
REPORT = "有人晕倒了，需要救护"


def spoken(uid: str, start: float, seconds: float = 2.0, channel: str = "ch-market") -> Utterance:
    return Utterance(id=uid, channel=channel, start=start, end=start + seconds, pcm=b"")


class Transmissions:
    """Transmissions one after another on each channel, each 2 s long and 0.5 s after the one before."""

    def __init__(self) -> None:
        self.next_start: dict[str, float] = {}

    def __call__(self, uid: str, channel: str = "ch-market") -> Utterance:
        said = spoken(uid, self.next_start.get(channel, time.time() - 30), channel=channel)
        self.next_start[channel] = said.end + 0.5
        return said


async def test_the_place_said_first_goes_with_the_report_said_next(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        heard = Transmissions()
        assert await rig.dispatcher.handle(say(PLACE), heard("u-place")) is None  # a place alone raises nothing
        incident = await rig.dispatcher.handle(say(REPORT), heard("u-report"))
        assert incident is not None and (incident.type, incident.place_name) == ("medical", PLACE)
        assert incident.utterance_ids == ("u-place", "u-report"), "both transmissions are the call, both replayed"
        assert incident.text == f"{PLACE} / {REPORT}"
        assert incident.assigned, "sent to the place's nearest guard, not left to the operator"
        third = await rig.dispatcher.handle(say("有人打架"), heard("u-third"))
        assert third is not None and third.place_name is None, "a place joins one report, not every one after it"


async def test_a_report_s_place_said_in_the_next_transmission_places_it_and_alerts(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        heard = Transmissions()
        placeless = await rig.dispatcher.handle(say(REPORT), heard("u-report"))
        assert placeless is not None and placeless.place_id is None and placeless.assigned == ()
        placed = await rig.dispatcher.handle(say(f"在{PLACE}门口"), heard("u-place"))
        assert placed is not None and placed.id == placeless.id, "no second incident"
        assert placed.place_name == PLACE and placed.utterance_ids == ("u-report", "u-place")
        assert placed.assigned and placed.status == Status.DISPATCHED
        kinds = [e.kind for e in rig.dispatcher.store.timeline(placed.id)]
        assert kinds[:3] == ["reported", "placed", "alerted"], kinds
        await eventually(lambda: not rig.outbox.pending(), what="the alert sent")


async def test_a_place_s_queued_entry_is_confirmed_by_the_report_that_follows(broker: Mosquitto, tmp_path: Path) -> None:
    """就在美食街门口 sounds like the start of a report at a known place: a 待确认 entry. The next transmission says
    what happened there: that entry is it, confirmed and dispatched, not a second incident."""
    async with running_dispatcher(broker, tmp_path) as rig:
        heard = Transmissions()
        queued = await rig.dispatcher.handle(say("就在美食街门口"), heard("u-place"))
        assert queued is not None and queued.status == Status.NEEDS_CONFIRMATION and queued.place_name == "美食街"
        fight = await rig.dispatcher.handle(say("有两个人打起来了"), heard("u-report"))
        assert fight is not None and fight.id == queued.id
        assert (fight.type, fight.status) == ("fight", Status.DISPATCHED) and fight.utterance_ids == ("u-place", "u-report")
        assert len(rig.dispatcher.store.list(limit=10)) == 1


async def test_routine_lines_other_channels_and_late_transmissions_lend_no_place(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        handle = rig.dispatcher.handle
        now = time.time()
        await handle(say("美食街巡逻正常"), spoken("u-routine", now - 60))  # another conversation, perhaps another guard's
        assert (await handle(say(REPORT), spoken("u-1", now - 57))).place_id is None
        await handle(say(PLACE), spoken("u-elsewhere", now - 45, channel="ch-school"))
        assert (await handle(say("有人打架"), spoken("u-2", now - 43))).place_id is None
        await handle(say(PLACE), spoken("u-place", now - 30))  # 11 s after u-2: not its place either
        late = await handle(say("有人偷东西"), spoken("u-3", now - 28 + CARRY_S + 0.5))
        assert late is not None and late.place_id is None, "the next transmission came too long after"
        await handle(say(PLACE), spoken("u-place-2", now - 5))
        earlier = await handle(say("有人偷东西"), spoken("u-4", now - 20))  # spoken before it, handled late (a catch-up)
        assert earlier is not None and earlier.place_id is None, "not the next transmission: it was said before"
        placeless = [i for i in rig.dispatcher.store.list(limit=10) if i.place_id is None]
        assert len(placeless) == 4 and all(i.assigned == () for i in placeless)


async def test_a_place_where_someone_fled_gives_way_to_the_scene_said_before(broker: Mosquitto, tmp_path: Path) -> None:
    """Said in one transmission, the scene outweighs the place the robber ran to (dispatch/location.py); said in the
    transmission before, it does too."""
    async with running_dispatcher(broker, tmp_path) as rig:
        heard = Transmissions()
        await rig.dispatcher.handle(say("美食街东头，"), heard("u-place"))
        robbery = await rig.dispatcher.handle(say("一个男的抢了手机，往西光广场方向跑了"), heard("u-report"))
        assert robbery is not None and (robbery.type, robbery.place_name) == ("robbery", "美食街")


async def test_an_unsure_half_and_a_sure_half_make_one_dispatched_incident(broker: Mosquitto, tmp_path: Path) -> None:
    """A first half that sounds like a report at a place (a 待确认 guess) is confirmed by the sure report after it; a
    sure report without a place is placed by an unsure half that names one after it."""
    async with running_dispatcher(broker, tmp_path) as rig:
        heard = Transmissions()
        queued = await rig.dispatcher.handle(say("韩森路天桥上有两个人把一个小伙子堵住了，"), heard("u-1", "ch-a"))
        assert queued is not None and queued.status == Status.NEEDS_CONFIRMATION
        robbery = await rig.dispatcher.handle(say("在抢他手机。"), heard("u-2", "ch-a"))
        assert robbery is not None and robbery.id == queued.id and robbery.status == Status.DISPATCHED
        assert (robbery.type, robbery.place_name) == ("robbery", "韩森路")

        noise = await rig.dispatcher.handle(say("有家店门口装了个大喇叭一直喊，"), heard("u-3", "ch-b"))
        assert noise is not None and noise.place_id is None
        placed = await rig.dispatcher.handle(say("金花北路上，居民投诉了。"), heard("u-4", "ch-b"))
        assert placed is not None and placed.id == noise.id
        assert (placed.type, placed.place_name, placed.status) == ("noise", "金花北路", Status.DISPATCHED)
        assert len(rig.dispatcher.store.list(limit=10)) == 2


async def test_a_report_queued_from_its_partials_still_takes_the_place_said_before(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Live, a report without a place raises a 待确认 entry at the caller's pause, before its final: the call it
    completes takes it in (retracted, merged into the call's incident), not left beside it place-less."""
    async with running_dispatcher(broker, tmp_path) as rig:
        heard = Transmissions()
        await rig.dispatcher.handle(say(PLACE), heard("u-place"))
        said = heard("u-report")
        paused = RecognisedUtterance(said.id, said.channel, said.start, said.end - 1, paused=True)
        await rig.dispatcher.handle_partial(Transcript(text=REPORT, pinyin="", engine="test", partial=True), paused)
        [queued] = rig.dispatcher.store.list(limit=10)
        assert queued.status == Status.NEEDS_CONFIRMATION and queued.place_id is None
        incident = await rig.dispatcher.handle(say(REPORT), said)
        assert incident is not None and (incident.type, incident.place_name) == ("medical", PLACE) and incident.assigned
        retracted = rig.dispatcher.store.require(queued.id)
        assert retracted.status == Status.RETRACTED and retracted.id != incident.id
        assert rig.dispatcher.store.timeline(queued.id)[-1].detail["merged_into"] == incident.id


async def test_a_pause_that_goes_on_leaves_a_call_the_transmission_before_began_to_its_final(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The report names only the unit it calls (长乐公园保安), its scene said in the transmission before: what the
    pause's reading would alert (the unit's place) waits, however long the pause, and the final joins the two."""
    called = "长乐公园保安请注意，有人打架"
    async with running_dispatcher(broker, tmp_path) as rig:
        heard = Transmissions()
        await rig.dispatcher.handle(say("美食街东头，"), heard("u-place"))
        said = heard("u-report")
        partial = Transcript(text=called, pinyin="", engine="test", partial=True)
        for settled in (False, True):
            ref = RecognisedUtterance(said.id, said.channel, said.start, said.end - 1, paused=True, settled=settled)
            await rig.dispatcher.handle_partial(partial, ref)
        [queued] = rig.dispatcher.store.list(limit=10)
        assert queued.status == Status.NEEDS_CONFIRMATION and not queued.assigned
        incident = await rig.dispatcher.handle(say(called), said)
        assert incident is not None and (incident.type, incident.place_name) == ("fight", "美食街") and incident.assigned


def test_a_final_handled_late_does_not_take_the_place_of_the_channel_s_last_turn() -> None:
    turns = LastTurns()
    turns.remember("ch", Turn("u-2", end=110.0, text="收到"))
    turns.remember("ch", Turn("u-1", end=100.0, text=PLACE))  # said before u-2, its final handled after it
    assert (turn := turns.before("ch", 111.0)) is not None and turn.utterance_id == "u-2"


async def test_responders_an_operator_sent_to_a_place_less_report_are_told_its_place(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with running_dispatcher(broker, tmp_path) as rig:
        heard = Transmissions()
        placeless = await rig.dispatcher.handle(say(REPORT), heard("u-report"))
        assert placeless is not None
        rig.dispatcher.reassign(placeless.id, ["g-piju"], actor="operator:li")  # 派警 before anyone knew where
        placed = await rig.dispatcher.handle(say(PLACE), heard("u-place"))
        assert placed is not None and placed.id == placeless.id and placed.place_name == PLACE
        updated = rig.dispatcher.store.timeline(placed.id)[-1]
        assert (updated.kind, updated.detail["change"], updated.detail["responders"]) == ("updated", "placed", ["g-piju"])
