"""Spoken announcements for the radio: 「怡园警务点、美食街保安请注意，美食街有人打架斗殴，请迅速赶往美食街」.

The dispatcher says what to announce on which channel (`Announcer.announce`: the units alerted there by name, the
place with its detail, what happened, and the place again); the channel's transmit side (hardware/announcements.py)
renders it with the announcements' voice (dispatch/speech.py) while it waits for its turn, and plays it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dispatch.gazetteer import Jurisdiction, Responder
from dispatch.speech import phrases

logger = logging.getLogger(__name__)

# What happened, as a dispatcher says it on the air; keyed by incident type. Worded so the project's own recogniser
# and classifier hear the type right through a noisy radio: candidate wordings were rendered for 4 places, made radio
# copies at 10 dB and heard back (as bench/announce.py does); 发生盗窃, 发生纠纷, 有人持械, 有人走失 came out wrong for
# most places, the wordings kept here right for all four (有人诈骗: three).
SPOKEN_TYPE = {
    "fight": "有人打架斗殴",
    "theft": "有东西被偷了",
    "robbery": "有人抢东西",
    "weapon": "有人拿刀伤人",
    "fire": "发生火情",
    "medical": "有人受伤，需要急救",
    "missing": "有人迷路了",
    "suspicious": "发现可疑情况",
    "dispute": "有人吵架闹事",
    "domestic": "发生家庭纠纷",
    "gathering": "有人聚集",
    "traffic": "发生交通事故",
    "noise": "有人噪音扰民",
    "fraud": "有人诈骗",
    # an SOS (dispatch/sos.py): a colleague in danger. Not worded as one of its phrases (紧急求助, 救命), which a radio
    # on another channel could carry back to the recogniser as a new SOS
    "sos": "有人紧急呼救",
}
UNKNOWN_TYPE = "发生警情"
ATTENTION = "请注意"
UNKNOWN_PLACE = "地点待确认"
TO_THE_SCENE = "请迅速赶往现场"
CORRECTION = "更正"  # opens a call made again because the final transcript changed what was said on a partial's
# how a call said on a partial's reading is withdrawn, by what the final made of it
CANCELLED = "警情撤销，无需前往"  # no such report (routine, or nothing)
NOT_NEEDED = "无需前往"  # the report is elsewhere or of another kind, and these units are not needed for it
ON_HOLD = "暂缓前往，等待指挥室确认"  # what it is or where is not sure: the command room decides


def spoken_type(incident_type: str) -> str:
    """What happened, as said on the air (发生警情 for a type without its own words: `other`, an operator's own)."""
    return SPOKEN_TYPE.get(incident_type, UNKNOWN_TYPE)


def announcement_text(units: Sequence[str], place: str | None, incident_type: str, detail: str = "") -> str:
    """「<unit>、<unit>请注意，<place><what happened>，请迅速赶往<place><detail>」: the place is said twice, the way a
    dispatcher repeats what matters, and where exactly to go (东门, 3号楼) with the second; an unknown place is said to
    be unconfirmed. Each part between commas is a phrase rendered on its own (dispatch/speech.py); all but a closing
    with a detail are rendered ahead (`fixed_phrases`, `place_phrases`), and that one renders while the phrases before
    it play. What happened is said with its place: said alone after a pause, the recogniser heard 21 of the 27 demo
    places' types right at 10 dB, against 24 of 27 said this way (bench/announce.py)."""
    what = spoken_type(incident_type)
    called = "、".join(units) + ATTENTION
    if not place:
        return f"{called}，{UNKNOWN_PLACE}，{what}，{TO_THE_SCENE}"
    return f"{called}，{place}{what}，请迅速赶往{place}{detail}"


def correction_text(text: str) -> str:
    """A call said again after the final transcript changed it: 「更正，<the call as it now stands>」."""
    return f"{CORRECTION}，{text}"


def withdrawal_text(units: Sequence[str], place: str | None, incident_type: str, closing: str) -> str:
    """A call withdrawn, naming what was said: 「<unit>请注意，<place><what happened>，<closing>」 (CANCELLED,
    NOT_NEEDED, ON_HOLD)."""
    return f"{'、'.join(units)}{ATTENTION}，{place or UNKNOWN_PLACE}{spoken_type(incident_type)}，{closing}"


def spoken_unit(responder: Responder) -> str:
    """How a responder is called on the air: guards by their team's name (皮具饰品城保安), police by their unit
    (怡园社区警长); both end in a role word, which tells the recogniser's place finder they are called, not the scene."""
    if responder.role in ("chief", "officer") and responder.unit:
        return responder.unit
    return responder.name


def announcements_for(
    jurisdiction: Jurisdiction, responder_ids: Iterable[str], place: str | None, incident_type: str, detail: str = ""
) -> dict[str, str]:
    """channel -> what to say on it: one announcement per radio channel, addressed to every unit alerted on it."""
    return {channel: announcement_text(called, place, incident_type, detail)
            for channel, called in units_by_channel(jurisdiction, responder_ids).items()}  # fmt: skip


def units_by_channel(jurisdiction: Jurisdiction, responder_ids: Iterable[str]) -> dict[str, list[str]]:
    """channel -> the units of those responders listening on it, as they are called on the air."""
    units: dict[str, list[str]] = {}
    for rid in responder_ids:
        responder = jurisdiction.responder(rid)
        called = units.setdefault(responder.channel, [])
        if (unit := spoken_unit(responder)) not in called:
            called.append(unit)
    return units


def fixed_phrases(jurisdiction: Jurisdiction, channels: Iterable[str]) -> list[str]:
    """The phrases announcements on `channels` open and close with, to render ahead: each unit listening there called
    alone (「皮具饰品城保安请注意」) and first in a list (「皮具饰品城保安、…」: the phrase before the 、), and every place's
    closing 「请迅速赶往<place>」. (The place with what happened there is rendered when it is announced, then kept.)"""
    wanted = set(channels)
    units = dict.fromkeys(spoken_unit(r) for r in jurisdiction.responders if r.channel in wanted)
    if not units:
        return []  # nobody listens there: nothing is announced on these channels
    called = [phrase for unit in units for phrase in (unit + ATTENTION, unit)]
    revised = [CORRECTION, *dict.fromkeys(phrase for closing in (CANCELLED, NOT_NEEDED, ON_HOLD)
                                          for phrase, _ in phrases(closing))]  # fmt: skip
    return called + revised + [f"请迅速赶往{p.name}" for p in jurisdiction.places]


def place_phrases(jurisdiction: Jurisdiction) -> list[str]:
    """Every phrase naming a place with what happened there (「美食街有人打架斗殴」), to render ahead in the background
    after `fixed_phrases`: each place x each incident type's words, the most urgent types first (their announcements
    matter most, and a first start renders for ~20-40 min), then what an announcement without a known place says.
    A place's detail is said in the closing phrase (「请迅速赶往美食街东门」), rendered when it is announced."""
    wanted = [t for t in SPOKEN_TYPE if t != "sos"]
    wanted.sort(key=lambda t: _URGENCY.index(_type_priority(t)))  # stable: the table's order within a priority
    words = [SPOKEN_TYPE["sos"], *(SPOKEN_TYPE[t] for t in wanted), UNKNOWN_TYPE]
    out: dict[str, None] = {}
    for what in words:
        for place in jurisdiction.places:
            out.update((phrase, None) for phrase, _ in phrases(place.name + what))  # 有人受伤，需要急救: two phrases
    for what in words:
        out.update((phrase, None) for phrase, _ in phrases(f"{UNKNOWN_PLACE}，{what}，{TO_THE_SCENE}"))
    return list(out)


_URGENCY = ("critical", "high", "medium", "low")


def _type_priority(incident_type: str) -> str:
    from dispatch.classify import load_lexicon

    return load_lexicon().default_priority.get(incident_type, "low")


@dataclass(slots=True, frozen=True)
class Announcement:
    """What to say on a channel about an incident. A revision (`if_said` not None) is the final transcript's word on
    a call made on a partial's reading: the call still waiting is replaced by `text` ("": withdrawn unsaid); one
    already on the air is followed by `if_said` ("": nothing more to say)."""

    channel: str
    incident_id: str
    text: str
    pcm: bytes | None = field(default=None, repr=False)  # audio made already (16 kHz mono int16): played as given
    created: float = field(default_factory=time.monotonic)
    if_said: str | None = None


class Announcer:
    """The dispatcher's side: queues what to say on which channel; never waits (the queue is bounded)."""

    def __init__(self, queue: asyncio.Queue[Announcement] | None = None) -> None:
        self.queue: asyncio.Queue[Announcement] = queue if queue is not None else asyncio.Queue(maxsize=100)
        self.queued = 0
        self.failed = 0

    def announce(self, channel: str, incident_id: str, text: str, *, if_said: str | None = None) -> Announcement | None:
        """Queue a call (`if_said`: a revision of one made on a partial's reading, see Announcement)."""
        announcement = Announcement(channel, incident_id, text, if_said=if_said)
        try:
            self.queue.put_nowait(announcement)
        except asyncio.QueueFull:
            self.failed += 1
            logger.error("transmit queue full: announcement for %s on %s dropped", incident_id, channel)
            return None
        self.queued += 1
        return announcement
