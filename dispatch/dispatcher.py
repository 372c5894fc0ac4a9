"""The dispatcher: a transcript in, an incident out, and the right people alerted.

    classify -> (none: stop) -> locate -> merge with a recent report of the same event, or create -> rank the
    responders -> alert the first ones through the outbox (reserve kept for escalation) -> events for the consoles

Never silent about a report: when the classification `needs_confirmation` (it sounds like a report, its type is not
certain) the incident is created as 待确认 (`needs_confirmation`) and nobody is alerted; an operator confirms its type
(`confirm`: then it is ranked, alerted and announced exactly as a certain report is) or dismisses it (`dismiss`). One
not acted on within `confirm_timeout` is flagged `unconfirmed` (timeline, warning, event) and stays in the queue.

From the live transcript (`handle_partial`, when `partials` rules are given): each utterance's changed partials are
read off the event loop (one worker thread; a partial superseded while another is read is skipped) and fed to its
`PartialGate` (dispatch/provisional.py); when one place and one certain type have held long enough, the incident is
raised at once, marked `provisional`, and its responders alerted and called on their channels (the final revises the
spoken call: `_revise`). The utterance's final transcript then settles it instead of
making another incident: the same place and type clear the mark (reason `final`, the alerted phones updated); another
place or type re-routes it (`rerouted`: re-ranked, retractions to those no longer right, alerts to the new ones); a
report of uncertain type puts it back to 待确认 (`requeued`, the phones stood down); routine or nothing retracts it
(`retracted`, closed, every alerted phone told). A partial that finds an open incident it would merge with raises
nothing: the final merges as always.

A partial taken at a pause in the speech (`utterance.paused`: the segmenter's `sentence_end_ms` of silence, long
before its hang-over ends the utterance) opens the gate on a certain reading at once; a report whose type is not
certain is raised then as a provisional 待确认 entry (nobody alerted), which a later certain partial or a certain
final dispatches (`dispatched`), an unsure final keeps for the operator, and a routine one retracts. If the pause
goes on (`utterance.settled`: the segmenter's `long_pause_ms`, still ~0.5 s before the hang-over ends), the same
partial is read again, and what its final would dispatch is alerted (`PartialGate.as_final`).

Incoming MQTT (acks, responders' status, OwnTracks positions) arrives through `on_message`; an acknowledgement makes
its sender busy on that incident on the responder board, and the incident's end frees them. What the broker's ACL
cannot judge is judged here and refused, counted in `rejected`: an answer from a responder not alerted for the
incident, a fix dated too far ahead or too long ago, a payload naming another responder than its topic, and any ack
or status the broker kept retained (replayed at every connect, it would undo what was said since: statuses are kept
in the database instead). Every change to an incident is emitted as `{type: new|update|end, before, after, reason}`:
on the in-process bus (topic "incident"), on `<prefix>/events`, and as the retained state on `<prefix>/incidents/<id>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from asr.transcript import Transcript
from bridge.bus import EventBus
from bridge.config import Config
from bridge.db import connect_state
from bridge.logsafe import clip
from dispatch.alerts import AckStatus, Alerter, Candidate, WatchStore, parse_ack
from dispatch.announce import (
    CANCELLED,
    NOT_NEEDED,
    ON_HOLD,
    Announcement,
    Announcer,
    announcements_for,
    correction_text,
    units_by_channel,
    withdrawal_text,
)
from dispatch.area import Area, JurisdictionArea
from dispatch.classify import Classification, Lexicon, load_lexicon, read_report
from dispatch.config import PartialRules
from dispatch.gazetteer import Jurisdiction, Place, load_jurisdiction
from dispatch.geofence import Geofences
from dispatch.incidents import OPEN, Incident, IncidentError, IncidentStore, Status, new_incident_id
from dispatch.location import LocationMatch, PlaceIndex, PlacesHeard
from dispatch.mqtt import MqttLink, tls_context
from dispatch.outbox import Outbox
from dispatch.patrols import PatrolDesk
from dispatch.positions import PayloadError, Position, PositionIntake
from dispatch.provisional import PartialGate, Raise, Reading, Verdict, settle
from dispatch.responders import Recommendation, ResponderBoard, StatusStore, parse_status, recommend
from dispatch.sos import SOS, SosDesk
from dispatch.tasks import TaskDesk
from dispatch.topics import AckTopic, OwnTracksTopic, StatusTopic, Topics
from dispatch.tracks import TrackStore
from dispatch.turns import LastTurns, Turn, half_a_call, says_only_where

logger = logging.getLogger(__name__)

# (a transcript, the channel it was heard on) -> type ("none": routine traffic), priority, needs_confirmation; and
# the places heard (`.scene()`: where)
ReadReport = Callable[[Transcript, str], tuple[Classification, PlacesHeard]]
# (place, incident type) -> (alert now, reserve for escalation), each nearest first
Rank = Callable[[Place, str], tuple[Sequence[Candidate], Sequence[Candidate]]]


class UtteranceRef(Protocol):
    """What the dispatcher needs of an utterance (bridge.events.Utterance has it)."""

    id: str
    channel: str
    start: float
    end: float


class PartialRef(UtteranceRef, Protocol):
    """... of an utterance still being spoken (asr.live.RecognisedUtterance has it): `paused` says the speaker had
    paused when the partial was taken, `settled` that the pause went on (most likely the end of the transmission)."""

    paused: bool
    settled: bool


def audio_url(utterance_id: str) -> str:
    return f"/api/utterances/{utterance_id}/audio"


class UnknownTypeError(KeyError):
    """An incident type the lexicon does not know (an operator's confirmation naming it is refused)."""


FINISHED_KEPT = 1000  # ids of utterances whose final was handled, so that a late partial of one raises nothing
LIVE_MAX_AGE_S = 600.0  # an utterance still without its final after this long is forgotten (its gate, not its incident)
DRAIN_S = 3.0  # at a clean stop, the outbox's last messages get this long to reach a connected broker


@dataclass(frozen=True, slots=True)
class _Spoken:
    """The call made on a partial's reading, what the final transcript may have to correct or withdraw: rebuilt from
    the provisional incident (`Dispatcher._spoken_call`), so a restart between the call and the final loses nothing."""

    place: str | None
    type: str
    texts: dict[str, str]  # channel -> the call made on it
    units: dict[str, list[str]]  # channel -> the units called on it


@dataclass(slots=True, eq=False)
class _Live:
    """One utterance being spoken: its gate, the newest partial not read yet, and the task reading them."""

    gate: PartialGate
    since: float = field(default_factory=time.monotonic)
    latest: tuple[Transcript, UtteranceRef] | None = None
    reader: asyncio.Task[None] | None = None
    done: bool = False  # the final is in: nothing more is raised from partials


class Dispatcher:
    def __init__(
        self,
        *,
        jurisdiction: Jurisdiction,
        store: IncidentStore,
        outbox: Outbox,
        read_report: ReadReport,
        rank: Rank,
        board: ResponderBoard,
        watches: WatchStore,
        topics: Topics | None = None,
        bus: EventBus | None = None,
        announcer: Announcer | None = None,
        ack_timeout: float = 60.0,
        merge_radius_m: float = 200.0,
        merge_window_s: float = 300.0,
        devices: Mapping[str, str] | None = None,
        default_priority: Mapping[str, str] | None = None,
        confirm_timeout: float = 120.0,
        partials: PartialRules | None = None,
        position_max_age_s: float = 300.0,
        position_max_ahead_s: float = 120.0,
    ) -> None:
        """`default_priority`: incident type -> its priority when an operator confirms it without one (the lexicon's
        `default_priority`); its keys are the types a confirmation may name. `partials`: the rules for raising
        provisional incidents from partial transcripts; None: only final transcripts are dispatched. `watches`: where
        escalation is kept across restarts. A phone's fix is taken only when dated between `position_max_age_s`
        before now and `position_max_ahead_s` after."""
        self.jurisdiction = jurisdiction
        self.store = store
        self.topics = topics or Topics()
        self._outbox = outbox
        self._read_report = read_report
        self._rank = rank
        self._bus = bus
        self._announcer = announcer
        self._board = board
        self._merge_radius_m = merge_radius_m
        self._merge_window_s = merge_window_s
        self._default_priority = dict(default_priority or {})
        self._confirm_timeout = confirm_timeout
        self._confirm_timers: dict[str, asyncio.Task[None]] = {}
        responder_ids = [r.id for r in jurisdiction.responders]
        self.alerter = Alerter(
            store,
            outbox,
            self.topics,
            self._emit,
            watches,
            ack_timeout=ack_timeout,
            responder_ids=responder_ids,
            is_available=board.is_available,
        )
        # who else hears each accepted fix besides the board: the track history, patrols, geofences
        self.position_listeners: list[Callable[[Position], None]] = []
        self.positions = PositionIntake(
            responder_ids, self._on_position, devices,
            max_age_s=position_max_age_s, max_ahead_s=position_max_ahead_s, clock=board.clock,
        )  # fmt: skip
        self.rejected: Counter[str] = Counter()  # MQTT messages we could not use, by reason
        self._partials = partials
        self._live: dict[str, _Live] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="partials") if partials is not None else None
        self._final_reader = ThreadPoolExecutor(1, thread_name_prefix="finals")  # apart: partials must not delay a final
        self._late_reader = ThreadPoolExecutor(1, thread_name_prefix="reheard")  # apart: nor may a final heard again
        self.provisional: Counter[str] = Counter()  # raised, and how their finals settled them (by Verdict)
        self.heard_again: Counter[str] = Counter()  # finals heard again (`reconsider`): what their hearings changed
        self._turns = LastTurns()  # each channel's last final: a call told in two transmissions is read as one

    # --- the pipeline ----------------------------------------------------------------------------------------

    def too_old(self, utterance_id: str, start: float, max_age_s: float) -> float | None:
        """How long ago the utterance began, when that is over `max_age_s` (node.dispatch_max_age_s: a guard paged
        now for what was said long ago would go to a scene long gone) and no provisional incident of its partials
        awaits its final: that final settles it whatever its age (a retraction, or the word the phones alerted on
        its partials wait for). None when its final may be dispatched."""
        age = time.time() - start
        if age <= max_age_s or self.store.provisional_for(utterance_id) is not None:
            return None
        return age

    async def handle(self, transcript: Transcript, utterance: UtteranceRef) -> Incident | None:
        """One final transcript -> the incident it reports (new or merged), or None for routine chatter. When the
        utterance's partials raised a provisional incident, this settles it (confirmed, re-routed, requeued or
        retracted; an empty transcript retracts it) and returns it."""
        if transcript.partial:
            return None
        await self._finish_live(utterance.id)
        c, where = await self._read_final(transcript, utterance.channel)
        provisional = self.store.provisional_for(utterance.id)
        earlier = self._turns.before(utterance.channel, utterance.start)
        joined = None
        # a 待确认 entry its partials raised at a pause (a report without a place is one) alerted nobody: the call
        # it completes takes it in; one that alerted is settled by its own final
        if earlier is not None and (provisional is None or provisional.status == Status.NEEDS_CONFIRMATION):
            joined = self._join(earlier, transcript, utterance, c, where)
        if joined is not None:
            incident = joined
            if provisional is not None and provisional.id != joined.id:
                self._retract_into(provisional, joined.id, transcript)
        elif provisional is not None:
            incident = self._settle(provisional, transcript, utterance, c, where, tally=self.provisional)
        else:
            incident = self._report(transcript, utterance, c, where)
        if joined is not None:
            self._turns.forget(utterance.channel)
        else:
            self._turns.remember(utterance.channel, _turn(transcript, utterance, c, where, incident))
        return incident

    async def reconsider(self, transcript: Transcript, utterance: UtteranceRef) -> Incident | None:
        """The final of an utterance heard once (recognition was behind), heard again with the alternative hearings
        after it was dispatched (asr/live.py). What the hearings read together raises the report the one hearing
        missed, and where they are sure of it, settles what the one hearing raised as a final settles a provisional
        incident: a 待确认 entry dispatched, an alert re-routed to another place or type (the radio call made for it
        corrected). Less sure than the one hearing (a type uncertain, routine, or no place where it heard one), they
        withdraw nothing: its alert stands, the responders already on their way. Agreeing, they change nothing and
        tell nobody. An incident anything else has shaped since (another report merged into it, the next
        transmission's place or words, an acknowledgement, a responder on scene, an operator) is left as it is.
        Returns the incident it changed or raised."""
        if transcript.partial or transcript.empty:
            return None
        # (a retracted incident of its own partials does not count: the one hearing withdrew it, the hearings may not)
        held = [i for i in self.store.with_utterance(utterance.id)
                if i.status != Status.RETRACTED or i.utterance_ids != (utterance.id,)]  # fmt: skip
        if held and not self._only_its_own(held[0], utterance.id):
            self.heard_again["left"] += 1
            return None
        c, where = await self._read_final(transcript, utterance.channel, self._late_reader)
        if not held:
            if not c.is_incident:
                self.heard_again["unchanged"] += 1
                return None
            self.heard_again["raised"] += 1
            logger.info("utterance %s on %s heard again: a report (%s at %s) the one hearing missed", utterance.id,
                        utterance.channel, c.type, where.place.name if where else "no known place")  # fmt: skip
            raised = self._report(transcript, utterance, c, where)
            self._turns.revise(utterance.channel, _turn(transcript, utterance, c, where, raised))
            return raised
        incident = held[0]
        if not self._only_its_own(incident, utterance.id):  # (changed while the hearings were read)
            self.heard_again["left"] += 1
            return None
        if not c.is_incident or c.needs_confirmation or (where is None and incident.place_id is not None):
            self.heard_again["kept"] += 1
            return None
        if (c.type, where.place.id if where else None) == (incident.type, incident.place_id) \
                and incident.status != Status.NEEDS_CONFIRMATION:
            self.heard_again["unchanged"] += 1
            return None
        logger.info("utterance %s on %s heard again: it settles incident %s", utterance.id, utterance.channel,
                    incident.id)  # fmt: skip
        settled = self._settle(incident, transcript, utterance, c, where, tally=self.heard_again)
        self._turns.revise(utterance.channel, _turn(transcript, utterance, c, where, settled))
        return settled

    def _only_its_own(self, incident: Incident, utterance_id: str) -> bool:
        """Is `incident` open and still what this utterance alone made of it: no other report in it, nobody but the
        dispatcher (no responder's acknowledgement or arrival, no operator) has acted on it?"""
        return incident.utterance_ids == (utterance_id,) and incident.status in OPEN \
            and all(e.actor == "dispatcher" for e in self.store.timeline(incident.id))

    def _report(
        self, transcript: Transcript, utterance: UtteranceRef, c: Classification, where: LocationMatch | None,
        *, told_before: Turn | None = None,
    ) -> Incident | None:  # fmt: skip
        """A final transcript read as `c` at `where` -> a new incident, a further report of an open one, or None.
        `told_before`: the transmission that named the place (`where` is its place)."""
        if not c.is_incident:
            logger.debug("utterance %s on %s: routine traffic, no incident", utterance.id, utterance.channel)
            return None
        place = where.place if where else None
        same = self.store.find_mergeable(
            c.type, place and place.lat, place and place.lon, utterance.end,
            radius_m=self._merge_radius_m, window_s=self._merge_window_s,
        )  # fmt: skip
        if same is not None:
            before, after = self.store.merge_report(
                same.id, utterance.id, transcript.shown, actor="dispatcher"
            )
            self._emit(before, after, "merged")
            logger.info("utterance %s on %s: another report of incident %s", utterance.id, utterance.channel, same.id)
            if after.status == Status.NEEDS_CONFIRMATION and not c.needs_confirmation:
                logger.info("incident %s: a later report is certain of its type, %s", same.id, c.type)
                return self.confirm(same.id, c.type, c.priority, actor="dispatcher")
            return after
        incident = _new_incident(c.type, c.priority, where, transcript, utterance)
        if told_before is not None:  # both transmissions are the call: both replayed, both read
            incident = replace(incident, utterance_ids=(told_before.utterance_id, utterance.id),
                               text=f"{told_before.text} / {incident.text}")  # fmt: skip
        if c.needs_confirmation:
            incident = self.store.create(replace(incident, status=Status.NEEDS_CONFIRMATION), actor="dispatcher")
            self._emit(None, incident, "needs_confirmation")
            logger.info("incident %s: sounds like a report (%s?) at %s, from %s on %s; awaiting an operator's "
                        "confirmation, nobody alerted", incident.id, c.type, place.name if place else "an unknown place",
                        utterance.id, utterance.channel)  # fmt: skip
            self._await_confirmation(incident.id, self._confirm_timeout)
            return incident
        incident = self.store.create(incident, actor="dispatcher")
        self._emit(None, incident, "reported")
        logger.info("incident %s: %s (%s) from %s on %s", incident.id, c.type, c.priority, utterance.id, utterance.channel)
        return self._alert_first(incident)

    def _join(
        self, earlier: Turn, transcript: Transcript, utterance: UtteranceRef, c: Classification,
        where: LocationMatch | None,
    ) -> Incident | None:  # fmt: skip
        """The second half of a call told in two transmissions (dispatch/turns.py), or None when it is not one."""
        if half_a_call(c) and where is not None and earlier.placeless and earlier.incident_id:
            return self._place(earlier.incident_id, where, transcript, utterance)
        if not c.is_incident or says_only_where(c) or earlier.where is None:
            return None
        if where is not None and not (where.aside and not earlier.where.aside):
            return None  # the report names its own scene
        queued = self.store.get(earlier.incident_id) if earlier.incident_id else None
        if queued is not None and queued.status in OPEN:  # the place's own entry (待确认, or confirmed meanwhile)
            before, after = self.store.merge_report(queued.id, utterance.id, transcript.shown, actor="dispatcher")
            self._emit(before, after, "merged")
            if after.status != Status.NEEDS_CONFIRMATION or c.needs_confirmation:
                return after
            logger.info("incident %s: the next transmission %s says what it is, %s", queued.id, utterance.id, c.type)
            return self.confirm(queued.id, c.type, c.priority, actor="dispatcher")
        return self._report(transcript, utterance, c, earlier.where, told_before=earlier)

    def _place(
        self, incident_id: str, where: LocationMatch, transcript: Transcript, utterance: UtteranceRef
    ) -> Incident | None:
        """A place-less incident's place, said in the next transmission: placed and alerted, or, when another report
        of it at that place is open, merged into that one. None when it was placed or closed meanwhile."""
        incident = self.store.get(incident_id)
        if incident is None or incident.status not in OPEN or incident.place_id is not None:
            return None  # an operator placed or closed it meanwhile
        entry = {"utterance_id": utterance.id, "text": transcript.shown, "place": where.place.name}
        _, after = self.store.amend(incident.id, actor="dispatcher", kind="placed", entry=entry,
                                    utterance_ids=(*incident.utterance_ids, utterance.id),
                                    **_place_fields(where))  # fmt: skip
        self._emit(incident, after, "placed")
        logger.info("incident %s: its place, %s, said in the next transmission %s", incident.id, where.place.name,
                    utterance.id)  # fmt: skip
        same = self.store.find_mergeable(
            after.type, after.lat, after.lon, utterance.end, radius_m=self._merge_radius_m,
            window_s=self._merge_window_s, exclude=after.id,
        )  # fmt: skip
        if same is not None and not after.assigned:  # already reported there: one incident, alerted once
            self._retract_into(after, same.id, transcript)
            for uid in after.utterance_ids:
                before, merged = self.store.merge_report(same.id, uid, transcript.shown, actor="dispatcher")
                self._emit(before, merged, "merged")
            return self.store.require(same.id)
        if after.status == Status.REPORTED:
            return self._alert_first(after)
        return self.alerter.update(after, after.assigned, change="placed")  # those an operator sent: where, now

    def _retract_into(
        self, incident: Incident, into: str, transcript: Transcript, entry: dict[str, Any] | None = None, **said: str
    ) -> None:  # fmt: skip
        """`incident` is part of incident `into`: retracted, saying so (its alerts, if any, withdrawn by the caller).
        `entry`: more for its timeline; `said`: the final's text and pinyin, when it was this incident's own."""
        self._stop_waiting(incident.id)
        retracted = {"from": str(incident.status), "to": "retracted", "merged_into": into, "final": transcript.shown}
        _, after = self.store.amend(incident.id, actor="dispatcher", kind="status", provisional=False,
                                    status=Status.RETRACTED, entry=retracted | (entry or {}), **said)  # fmt: skip
        self._emit(incident, after, "merged_elsewhere")

    async def handle_partial(self, transcript: Transcript, utterance: PartialRef) -> None:
        """A partial transcript of an utterance still being spoken (`utterance.end`: when it was heard). Read off
        the loop when its words changed or the speaker paused; returns once it (or a newer partial of the utterance)
        has been read, or at once when there is nothing to do. Raises the provisional incident when the utterance's
        gate opens."""
        if self._partials is None or transcript.empty or utterance.id in self._finished:
            return
        live = self._live.get(utterance.id)
        if live is None:
            self._forget_stale()
            live = self._live[utterance.id] = _Live(PartialGate(self._partials))
        if live.done or live.gate.open or (not live.gate.changed(transcript) and not utterance.paused):
            return
        live.latest = (transcript, utterance)
        if live.reader is None or live.reader.done():
            live.reader = asyncio.get_running_loop().create_task(self._read_partials(live), name=f"partials-{utterance.id}")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(live.reader)

    async def _read_partials(self, live: _Live) -> None:
        loop = asyncio.get_running_loop()
        while live.latest is not None and not live.done and not live.gate.open:
            transcript, utterance = live.latest
            live.latest = None
            try:  # (a settled pause's partial is read again: once an utterance at most, a few ms off the loop)
                c, where = await loop.run_in_executor(self._reader, self._read, transcript, utterance.channel)
            except Exception:  # a partial that breaks the reading must not stop the utterance's final
                logger.exception("utterance %s on %s: reading a partial transcript failed", utterance.id, utterance.channel)
                continue
            if live.done:  # the final arrived while this was read: it decides
                return
            # a report the channel's transmission before gives its scene is left to the final, which joins the two
            # (dispatch/turns.py): the pause alone would alert the unit it calls
            settled = utterance.settled and not self._may_join(utterance, where)
            raised = live.gate.feed(Reading.of(c, where, transcript), paused=utterance.paused, settled=settled)
            if raised is not None:
                self._raise_provisional(raised, c, where, transcript, utterance)

    def _may_join(self, utterance: UtteranceRef, where: LocationMatch | None) -> bool:
        """Would the final of a report read at `where` take its scene from the channel's transmission before it, as
        `_join` does: that one said only where, and this one names no scene of its own (none, or only aside)?"""
        earlier = self._turns.before(utterance.channel, utterance.start)
        if earlier is None or earlier.where is None:
            return False
        return where is None or (where.aside and not earlier.where.aside)

    async def _read_final(
        self, transcript: Transcript, channel: str, reader: ThreadPoolExecutor | None = None
    ) -> tuple[Classification, LocationMatch | None]:  # fmt: skip
        """A final transcript read off the loop, in turn (a tenth of a second of pure Python each: a wave of finals,
        when many channels end their calls together, read on the loop would hold up every channel's audio), by the
        finals' reader unless another is given."""
        if transcript.empty:
            return _NOTHING, None
        return await asyncio.get_running_loop().run_in_executor(
            reader or self._final_reader, self._read, transcript, channel, True
        )

    def _read(
        self, transcript: Transcript, channel: str, final: bool = False
    ) -> tuple[Classification, LocationMatch | None]:
        """(in a reader thread) The classification, and the place only when there is an incident (most partials
        are read before any incident word is said), or when a final says only where (half of a call told in two
        transmissions: dispatch/turns.py)."""
        c, places = self._read_report(transcript, channel)
        return c, places.scene() if c.is_incident or (final and says_only_where(c)) else None

    def _raise_provisional(
        self, raised: Raise, c: Classification, where: LocationMatch | None, transcript: Transcript,
        utterance: UtteranceRef,
    ) -> None:  # fmt: skip
        queued = self.store.provisional_for(utterance.id)
        if queued is not None:  # its 待确认 entry raised at an earlier pause: now certain, it is dispatched
            if queued.status == Status.NEEDS_CONFIRMATION:  # (unless an operator acted on it first: theirs stands)
                self._dispatch_queued(queued, c, where, transcript, kind="certain",
                                      entry={"type": c.type, "said": transcript.shown})  # fmt: skip
            return
        place = where.place if where else None
        same = self.store.find_mergeable(
            c.type, place and place.lat, place and place.lon, utterance.end,
            radius_m=self._merge_radius_m, window_s=self._merge_window_s,
        )  # fmt: skip
        if same is not None:  # already known and handled: the final merges into it as any later report does
            logger.info("utterance %s on %s: still talking about incident %s", utterance.id, utterance.channel, same.id)
            return
        incident = replace(_new_incident(c.type, c.priority, where, transcript, utterance), provisional=True)
        if raised == Raise.QUEUE:
            incident = self.store.create(replace(incident, status=Status.NEEDS_CONFIRMATION), actor="dispatcher")
            self.provisional["queued"] += 1
            self._emit(None, incident, "needs_confirmation")
            logger.info("incident %s: sounds like a report (%s?) at %s, from the live transcript of %s on %s; awaiting an "
                        "operator's confirmation (provisional)", incident.id, c.type,
                        incident.place_name or "an unknown place", utterance.id, utterance.channel)  # fmt: skip
            self._await_confirmation(incident.id, self._confirm_timeout)
            return
        incident = self.store.create(incident, actor="dispatcher")
        self.provisional["raised"] += 1
        self._emit(None, incident, "provisional")
        logger.info("incident %s: %s (%s) at %s from the live transcript of %s on %s (provisional)", incident.id, c.type,
                    c.priority, incident.place_name, utterance.id, utterance.channel)  # fmt: skip
        self._alert_first(incident)

    async def _finish_live(self, utterance_id: str) -> None:
        """The utterance's final is in: no partial of it raises anything any more (one being read is waited for)."""
        self._finished[utterance_id] = None
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)
        live = self._live.pop(utterance_id, None)
        if live is None:
            return
        live.done = True
        if live.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(live.reader)

    def _forget_stale(self) -> None:
        """Gates of utterances whose final never came (recognition failed: the backlog settles their incident)."""
        now = time.monotonic()
        for uid in [uid for uid, live in self._live.items() if now - live.since > LIVE_MAX_AGE_S]:
            self._live.pop(uid).done = True

    def _dispatch_queued(
        self, incident: Incident, c: Classification, where: LocationMatch | None, transcript: Transcript, *,
        kind: str, entry: dict[str, Any], **changes: Any,
    ) -> Incident:  # fmt: skip
        """A 待确认 entry raised from this utterance is now certain (a later partial, or its final): it takes the
        place and words read with that certainty (a timeline entry of `kind`, with `changes`) and is dispatched as
        that type, as an operator's confirmation would."""
        said = {"text": transcript.readable or transcript.text, "pinyin": transcript.pinyin}
        self.store.amend(incident.id, actor="dispatcher", kind=kind, entry=entry, **changes, **_place_fields(where),
                         **said)  # fmt: skip
        return self.confirm(incident.id, c.type, c.priority, actor="dispatcher")

    def _settle(
        self, incident: Incident, transcript: Transcript, utterance: UtteranceRef, c: Classification,
        where: LocationMatch | None, *, tally: Counter[str],
    ) -> Incident:  # fmt: skip
        """The final transcript of the utterance that raised `incident` from its partials (read as `c` at `where`)
        decides what it was (the verdict counted in `tally`)."""
        verdict = settle(_reading_of(incident), Reading.of(c, where))
        tally[str(verdict)] += 1
        logger.info("incident %s: the final transcript of %s: %s (%s at %s)", incident.id, utterance.id, verdict, c.type,
                    where.place.name if where else "no known place")  # fmt: skip
        said = {"text": transcript.readable or transcript.text, "pinyin": transcript.pinyin}
        entry = {"verdict": str(verdict), "partial": incident.text, "final": transcript.shown}
        spoken = self._spoken_call(incident)
        if incident.status not in OPEN:  # an operator closed it meanwhile: the final is recorded, nothing else
            _, after = self.store.amend(incident.id, actor="dispatcher", kind="final", entry=entry, provisional=False)
            return after
        alerted = list(dict.fromkeys([*incident.assigned, *self.alerter.alerted(incident.id)]))
        if verdict == Verdict.DISPATCHED:
            return self._dispatch_queued(incident, c, where, transcript, kind="final", entry=entry, provisional=False)
        if verdict == Verdict.CONFIRMED:
            _, after = self.store.amend(incident.id, actor="dispatcher", kind="final", entry=entry, provisional=False,
                                        type=c.type, priority=c.priority, **_place_fields(where), **said)  # fmt: skip
            self.alerter.update(after, alerted, change="final")
            self._revise(after, [Candidate(rid) for rid in alerted], spoken, changed=False, closing=NOT_NEEDED)
        elif verdict == Verdict.REROUTED:
            return self._reroute(incident, c, where, said, entry, alerted, transcript, utterance, spoken)
        elif verdict == Verdict.REQUEUED:  # a report, its type not certain: nobody goes on a guess, an operator decides
            self.alerter.withdraw(incident, alerted, change="requeued")
            self.alerter.forget(incident.id)
            self._board.release(incident.id)
            self._revise(incident, [], spoken, changed=True, closing=ON_HOLD)
            _, after = self.store.amend(incident.id, actor="dispatcher", kind="requeued", entry=entry, provisional=False,
                                        type=c.type, priority=c.priority, status=Status.NEEDS_CONFIRMATION,
                                        **_place_fields(where), **said)  # fmt: skip
            self._await_confirmation(after.id, self._confirm_timeout)
        else:  # routine, or nothing at all: it was no report
            self._revise(incident, [], spoken, changed=True, closing=CANCELLED)
            self.alerter.withdraw(incident, alerted, change="retracted")
            self.alerter.forget(incident.id)
            self._stop_waiting(incident.id)
            _, after = self.store.amend(incident.id, actor="dispatcher", kind="status", provisional=False,
                                        status=Status.RETRACTED, entry={"from": str(incident.status), "to": "retracted"}
                                        | entry, **said)  # fmt: skip
        after = self.store.require(incident.id)
        self._emit(incident, after, str(verdict))
        return after

    def _reroute(
        self, incident: Incident, c: Classification, where: LocationMatch | None, said: dict[str, str],
        entry: dict[str, Any], alerted: list[str], transcript: Transcript, utterance: UtteranceRef,
        spoken: _Spoken | None,
    ) -> Incident:  # fmt: skip
        """The final names another place or type: the incident follows it. Re-ranked for the new place and type:
        those no longer right are stood down, those still right told what changed, the new ones alerted. Another
        open incident it now merges with takes the report instead (this one is retracted, `merged`)."""
        place = where.place if where else None
        same = self.store.find_mergeable(
            c.type, place and place.lat, place and place.lon, time.time(),
            radius_m=self._merge_radius_m, window_s=self._merge_window_s, exclude=incident.id,
        )  # fmt: skip
        if same is not None:  # the units going to the other incident go to the same scene: nothing said on the air
            self._revise(incident, [], spoken, changed=True, closing="")
            self.alerter.withdraw(incident, alerted, change="merged")
            self.alerter.forget(incident.id)
            self._retract_into(incident, same.id, transcript, entry, **said)
            before, merged = self.store.merge_report(same.id, utterance.id, transcript.shown, actor="dispatcher")
            self._emit(before, merged, "merged")
            if merged.status == Status.NEEDS_CONFIRMATION:
                return self.confirm(same.id, c.type, c.priority, actor="dispatcher")
            return merged
        first: list[Candidate] = []
        reserve: Sequence[Candidate] = ()
        if place is not None:
            ranked, reserve = self._rank(place, c.type)
            first = [*ranked, *self._follow_up(place, c.type, ranked)]
        chosen = {x.responder_id for x in first}
        # stood down from what they were told (the retraction names the incident as it was alerted)
        gone = [r for r in alerted if r not in chosen]
        stood_down = self.alerter.withdraw(incident, gone, change="rerouted")
        self._board.release(incident.id, only=gone)  # one who acknowledged it is free for other incidents again
        moved = {"from": {"place": incident.place_name, "type": incident.type},
                 "to": {"place": place.name if place else None, "type": c.type}}  # fmt: skip
        _, after = self.store.amend(incident.id, actor="dispatcher", kind="rerouted", entry=entry | moved,
                                    provisional=False, type=c.type, priority=c.priority, assigned=stood_down.assigned,
                                    **_place_fields(where), **said)  # fmt: skip
        self.alerter.update(after, [r for r in alerted if r in chosen], change="rerouted")
        if not chosen and not after.assigned and after.status != Status.REPORTED:  # nobody goes now: for 派警
            _, after = self.store.amend(after.id, actor="dispatcher", kind="status", status=Status.REPORTED,
                                        entry={"from": str(after.status), "to": "reported"})  # fmt: skip
        if place is None:
            self.alerter.forget(after.id)
            logger.warning("incident %s: the final names no known place, left to the operator", after.id)
        else:
            logger.info("incident %s: re-routed to %s (%s) at %s; alerting %s", after.id, c.type, c.priority, place.name,
                        ", ".join(x.responder_id for x in first) or "nobody")  # fmt: skip
            after = self.alerter.dispatch(after, first, reserve, fresh=True)
        self._revise(after, first, spoken, changed=True, closing=NOT_NEEDED if first else ON_HOLD)
        after = self.store.require(incident.id)
        self._emit(incident, after, "rerouted")
        return after

    async def on_message(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        """MQTT handler (MqttLink's): acks, status and positions; anything unusable is logged and counted, never raised.
        `retained`: the broker kept it from before we subscribed (a fix is judged by its own date instead)."""
        match self.topics.parse(topic):
            case AckTopic() | StatusTopic() as kind if retained:
                what = "ack" if isinstance(kind, AckTopic) else "status"
                self.rejected[f"{what}_retained"] += 1
                logger.warning("retained %s on %s ignored: only what a phone says while we listen counts", what, clip(topic))
            case AckTopic(responder_id):
                try:
                    ack = parse_ack(responder_id, payload)
                except PayloadError as e:
                    self.rejected[f"ack_{e.reason}"] += 1
                    logger.warning("ack on %s rejected (%s): %s", clip(topic), e.reason, clip(e))
                    return
                incident = self.alerter.handle_ack(ack)
                if incident is None or incident.status not in OPEN:
                    return
                if ack.status == AckStatus.DECLINED:  # one who accepted and then declines is free again
                    self._board.release(incident.id, only=[responder_id])
                else:
                    self._board.engage(responder_id, incident.id)  # busy there: not offered for other incidents
            case StatusTopic(responder_id):
                self._set_responder_status(topic, responder_id, payload)
            case OwnTracksTopic() as owntracks:
                self.positions.handle(owntracks, payload)
            case _:
                self.rejected["unexpected_topic"] += 1
                logger.warning("message on unexpected topic %s ignored", clip(topic))

    def _on_position(self, position: Position) -> None:
        self._board.update_position(position.responder_id, position.lat, position.lon, position.ts, position.acc)
        for listener in self.position_listeners:
            try:
                listener(position)
            except Exception:  # the fix is taken; one listener failing (a full disk) must not stop the others
                logger.exception("position of %s: %r failed", position.responder_id, listener)

    def _set_responder_status(self, topic: str, responder_id: str, payload: bytes) -> None:
        try:
            status = parse_status(payload, responder_id)
        except PayloadError as e:
            self.rejected[f"status_{e.reason}"] += 1
            logger.warning("status on %s rejected (%s): %s", clip(topic), e.reason, clip(e))
            return
        try:
            self._board.set_status(responder_id, status)
        except KeyError:
            self.rejected["status_unknown_responder"] += 1
            logger.warning("status on %s rejected: unknown responder %s", clip(topic), clip(repr(responder_id)))
            return
        logger.info("responder %s is %s", responder_id, status)

    def counters(self) -> dict[str, Any]:
        """Figures for the console and the logs: what was sent, escalated, accepted, and rejected by reason."""
        return {
            "alerts_sent": self.alerter.sent,
            "escalations": self.alerter.escalations,
            "provisional": dict(self.provisional),  # raised from partials, then final / rerouted / requeued / retracted
            "heard_again": dict(self.heard_again),  # finals heard once, heard again: unchanged / raised / kept / left /
            # the verdicts of those they settled (dispatched, rerouted)
            "retractions_sent": self.alerter.withdrawn,
            "positions_accepted": self.positions.accepted,
            "positions_ignored": self.positions.ignored,
            "rejected": dict(
                self.rejected
                + Counter({f"ack_{k}": v for k, v in self.alerter.rejected.items()})
                + Counter({f"position_{k}": v for k, v in self.positions.rejected.items()})
            ),
            "outbox_delivered": self._outbox.delivered,
            "outbox_pending": len(self._outbox.pending()),
        }

    # --- operator actions (the console) ---------------------------------------------------------------------

    def set_status(self, incident_id: str, status: Status, *, actor: str, note: str = "") -> Incident:
        """resolve, follow up, close as false alarm...; IncidentError if the lifecycle forbids it."""
        before, after = self.store.transition(incident_id, status, actor=actor, note=note)
        self._emit(before, after, str(status))
        return after

    def add_note(self, incident_id: str, text: str, *, actor: str) -> Incident:
        before = self.store.require(incident_id)
        after = self.store.add_note(incident_id, text, actor=actor)
        self._emit(before, after, "note")
        return after

    def reassign(self, incident_id: str, responder_ids: list[str], *, actor: str) -> Incident:
        """The operator chooses who goes; the newly assigned are alerted (and escalation watches them)."""
        if self.store.require(incident_id).status == Status.NEEDS_CONFIRMATION:
            raise IncidentError(f"{incident_id} is awaiting confirmation: confirm its type (or dismiss it) first")
        for rid in responder_ids:
            self.jurisdiction.responder(rid)  # KeyError naming an unknown id
        before, after = self.store.reassign(incident_id, responder_ids, actor=actor)
        self._emit(before, after, "reassigned")
        fresh = [Candidate(rid, reason="assigned") for rid in responder_ids if rid not in before.assigned]
        return self.alerter.dispatch(after, fresh)

    # --- incidents raised outside the transcript path (an SOS: dispatch/sos.py) --------------------------------

    def raise_incident(
        self, incident: Incident, first: Sequence[Candidate], reserve: Sequence[Candidate], *, actor: str, reason: str
    ) -> Incident:
        """An incident raised by other means than a report heard: stored, told to the consoles (`reason`), `first`
        alerted with `reserve` kept for escalation and called on their channels; nobody to alert: the operator's."""
        incident = self.store.create(incident, actor=actor)
        self._emit(None, incident, reason)
        if not first:
            return incident
        incident = self.alerter.dispatch(incident, first, reserve)
        self._announce(incident, first)
        return incident

    def changed(self, before: Incident | None, after: Incident, reason: str) -> None:
        """Tell the consoles of a change made to an incident outside the dispatcher (bus, events, retained state)."""
        self._emit(before, after, reason)

    @property
    def incident_types(self) -> list[str]:
        """The types a confirmation may name."""
        return list(self._default_priority)

    def confirm(self, incident_id: str, incident_type: str, priority: str | None = None, *, actor: str) -> Incident:
        """A 待确认 incident is what `actor` says it is: it takes that type (and priority, by default the type's
        default) and is dispatched exactly as a certain report would have been (ranked responders alerted, spoken
        call, escalation). Repeating the same confirmation changes nothing; IncidentError if the incident is not
        awaiting confirmation otherwise; UnknownTypeError for a type the lexicon does not know."""
        if incident_type not in self._default_priority:
            raise UnknownTypeError(f"unknown incident type {incident_type!r} (one of {', '.join(self._default_priority)})")
        current = self.store.require(incident_id)
        if current.status != Status.NEEDS_CONFIRMATION and self._confirmed_as(incident_id, incident_type, priority):
            return current  # the same confirmation again (a second click, another operator): already done
        priority = priority or self._default_priority[incident_type]
        before, incident = self.store.confirm(incident_id, incident_type, priority, actor=actor)
        self._stop_waiting(incident_id)
        self._emit(before, incident, "confirmed")
        logger.info("incident %s: confirmed as %s (%s) by %s (guessed %s)", incident_id, incident_type, priority, actor,
                    before.type)  # fmt: skip
        return self._alert_first(incident)

    def dismiss(self, incident_id: str, *, actor: str, reason: str = "") -> Incident:
        """A 待确认 incident is not a report after all: closed as `dismissed`, nobody alerted. Dismissing it again
        changes nothing; IncidentError if it is not awaiting confirmation otherwise."""
        current = self.store.require(incident_id)
        if current.status == Status.DISMISSED:
            return current
        if current.status != Status.NEEDS_CONFIRMATION:
            raise IncidentError(f"{incident_id} is not awaiting confirmation (it is {current.status})")
        after = self.set_status(incident_id, Status.DISMISSED, actor=actor, note=reason)
        self._stop_waiting(incident_id)
        logger.info("incident %s: dismissed by %s%s", incident_id, actor, f" ({reason})" if reason else "")
        return after

    def watch_unconfirmed(self) -> None:
        """After a restart: every 待确认 incident still in the store is watched again (flagged at once when its time
        has passed and it was not flagged yet). Needs the running loop."""
        for incident in self.store.list(status=Status.NEEDS_CONFIRMATION, limit=10_000):
            if not any(e.kind == "unconfirmed" for e in self.store.timeline(incident.id)):
                self._await_confirmation(incident.id, incident.created_at + self._confirm_timeout - time.time())

    async def close(self) -> None:
        await self.alerter.close()
        if self._reader is not None:
            self._reader.shutdown(wait=False, cancel_futures=True)
        self._final_reader.shutdown(wait=False, cancel_futures=True)
        self._late_reader.shutdown(wait=False, cancel_futures=True)
        for timer in self._confirm_timers.values():
            timer.cancel()

    # --- helpers --------------------------------------------------------------------------------------------

    def _alert_first(self, incident: Incident) -> Incident:
        """Rank the responders for a reported incident, alert the first ones (reserve kept for escalation), announce
        it on their channels; an incident whose place is unknown is left to the operator."""
        try:
            place = self.jurisdiction.place(incident.place_id) if incident.place_id else None
        except KeyError:  # a place the jurisdiction no longer has (it changed since the report): as unknown
            place = None
        if place is None:
            logger.warning("incident %s: location unknown, left to the operator", incident.id)
            return incident
        first, reserve = self._rank(place, incident.type)
        first = [*first, *self._follow_up(place, incident.type, first)]
        logger.info("incident %s: %s (%s) at %s; alerting %s", incident.id, incident.type, incident.priority, place.name,
                    ", ".join(c.responder_id for c in first) or "nobody")  # fmt: skip
        incident = self.alerter.dispatch(incident, first, reserve)
        self._announce(incident, first)
        return incident

    def _confirmed_as(self, incident_id: str, incident_type: str, priority: str | None) -> bool:
        """Was it confirmed as this type (and this priority, when one is given)?"""
        last = next((e.detail for e in reversed(self.store.timeline(incident_id)) if e.kind == "confirmed"), None)
        return last is not None and last["type"] == incident_type and priority in (None, last["priority"])

    def _await_confirmation(self, incident_id: str, delay: float) -> None:
        timer = asyncio.get_running_loop().create_task(self._unconfirmed_after(incident_id, max(0.0, delay)),
                                                       name=f"confirm-timer-{incident_id}")  # fmt: skip
        self._confirm_timers[incident_id] = timer

    def _stop_waiting(self, incident_id: str) -> None:
        timer = self._confirm_timers.pop(incident_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def _unconfirmed_after(self, incident_id: str, delay: float) -> None:
        """Nobody confirmed or dismissed it in time: said in its timeline, the log and to the consoles (which alarm);
        it stays 待确认 in the queue, never dropped."""
        await asyncio.sleep(delay)
        self._confirm_timers.pop(incident_id, None)
        incident = self.store.get(incident_id)
        if incident is None or incident.status != Status.NEEDS_CONFIRMATION:
            return
        waited = round(time.time() - incident.created_at)
        self.store.record(incident_id, "unconfirmed", actor="dispatcher", waited_s=waited)
        logger.warning("incident %s: awaiting an operator's confirmation for %d s (%s? at %s); still in the queue",
                       incident_id, waited, incident.type, incident.place_name or "an unknown place")  # fmt: skip
        self._emit(incident, incident, "unconfirmed")

    def _follow_up(self, place: Place, incident_type: str, first: Sequence[Candidate]) -> list[Candidate]:
        """Disputes (纠纷) also go to the police chief answering for the place's grid, for follow-up (回访)."""
        if incident_type != "dispute":
            return []
        grid = self.jurisdiction.grid_of(place.id)
        chosen = {c.responder_id for c in first}
        return [
            Candidate(r.id, role=r.role, reason="grid_chief_follow_up")
            for r in self.jurisdiction.responders
            if r.role == "chief" and grid is not None and self.jurisdiction.grid_of(r.post) == grid and r.id not in chosen
        ]

    def _announce(self, incident: Incident, alerted: Sequence[Candidate]) -> None:
        """One spoken call per radio channel, addressed to every unit alerted on it, by name."""
        if self._announcer is None:
            return
        for channel, text in self._calls(incident, [c.responder_id for c in alerted]).items():
            self._announcer.announce(channel, incident.id, text)

    def _calls(self, incident: Incident, responder_ids: Sequence[str]) -> dict[str, str]:
        """channel -> the call made there for `incident` to those responders (dispatch.announce)."""
        return announcements_for(self.jurisdiction, responder_ids, incident.place_name, incident.type, incident.detail)

    def _spoken_call(self, incident: Incident) -> _Spoken | None:
        """The call made when `incident` was alerted on a reading a final now settles (a partial's, or a final's heard
        once), to its assigned units; None when none was (no radios, a 待确认 entry nobody was alerted for, nobody to
        alert)."""
        if self._announcer is None or incident.status == Status.NEEDS_CONFIRMATION or not incident.assigned:
            return None
        ids = list(incident.assigned)
        return _Spoken(incident.place_name, incident.type, self._calls(incident, ids), units_by_channel(self.jurisdiction, ids))

    def _revise(self, incident: Incident, alerted: Sequence[Candidate], spoken: _Spoken | None, *, changed: bool,
                closing: str) -> None:  # fmt: skip
        """The final transcript's word on the call `spoken` on a partial's reading: each call still waiting for the
        air is replaced by the final's (or withdrawn unsaid); one said is followed by 「更正，<the call now>」 when
        `changed` changed its words, else by nothing; a channel called then but not now hears it withdrawn with
        `closing` (CANCELLED, NOT_NEEDED, ON_HOLD; "": nothing said), a channel called only now a call. Without such a
        call the call is made now (a report its final decided)."""
        if spoken is None or self._announcer is None:
            self._announce(incident, alerted)
            return
        now = self._calls(incident, [c.responder_id for c in alerted])
        for channel, text in now.items():
            before = spoken.texts.get(channel)
            revised = None if before is None else correction_text(text) if changed and text != before else ""
            self._announcer.announce(channel, incident.id, text, if_said=revised)
        for channel, units in spoken.units.items():
            if channel not in now:
                withdrawn = correction_text(withdrawal_text(units, spoken.place, spoken.type, closing)) if closing else ""
                self._announcer.announce(channel, incident.id, "", if_said=withdrawn)

    def _emit(self, before: Incident | None, after: Incident, reason: str) -> None:
        kind = "new" if before is None else ("update" if after.status in OPEN else "end")
        if kind == "end" and (freed := self._board.release(after.id)):
            logger.info("incident %s ended (%s): %s available again", after.id, after.status, ", ".join(freed))
        event = {
            "type": kind,
            "reason": reason,
            "before": before.to_dict() if before else None,
            "after": after.to_dict(),
        }
        if self._bus is not None:
            self._bus.publish("incident", event)
        self._outbox.put(self.topics.events, event)
        self._outbox.put(self.topics.incident(after.id), after.to_dict(), retain=True)


_NOTHING = Classification("none", "none", (), 1.0)  # what an empty final transcript says


def _turn(
    transcript: Transcript, utterance: UtteranceRef, c: Classification, where: LocationMatch | None,
    incident: Incident | None,
) -> Turn:  # fmt: skip
    """A final as the channel's next transmission may need it (dispatch/turns.py)."""
    return Turn(utterance.id, utterance.end, transcript.shown, where if half_a_call(c) else None,
                incident.id if incident else None, placeless=incident is not None and incident.place_id is None)


def _reading_of(incident: Incident) -> Reading:
    """What an incident says, as the reading that raised it (a 待确认 entry: unsure of its type)."""
    return Reading(incident.type, incident.priority, incident.status == Status.NEEDS_CONFIRMATION, 1.0, incident.place_id)


def _place_fields(where: LocationMatch | None) -> dict[str, Any]:
    """The incident's place columns from a match (all empty when no known place was named)."""
    place = where.place if where else None
    return {
        "place_id": place.id if place else None,
        "place_name": place.name if place else None,
        "detail": (where.detail or "") if where else "",
        "lat": place.lat if place else None,
        "lon": place.lon if place else None,
        "location_confidence": where.confidence if where else 0.0,
    }


def _new_incident(
    incident_type: str, priority: str, where: LocationMatch | None, transcript: Transcript, utterance: UtteranceRef
) -> Incident:
    place = where.place if where else None
    return Incident(
        id=new_incident_id(utterance.end),
        type=incident_type,
        priority=priority,
        status=Status.REPORTED,
        created_at=utterance.end,
        updated_at=utterance.end,
        place_id=place.id if place else None,
        place_name=place.name if place else None,
        detail=(where.detail or "") if where else "",
        lat=place.lat if place else None,
        lon=place.lon if place else None,
        location_confidence=where.confidence if where else 0.0,
        text=transcript.readable or transcript.text,  # characters people read (decoded from pinyin for the on-board engine)
        pinyin=transcript.pinyin,
        channel=utterance.channel,
        utterance_ids=(utterance.id,),
    )


class DispatchService:
    """The dispatcher with its MQTT link, outbox and responder board, built from the one config.

    The service starts it with `asyncio.create_task(dispatch.run())` and feeds `await dispatch.dispatcher.handle(...)`
    with every final transcript (and `handle_partial(...)` with the partials of those still being spoken); `transmit`
    receives the spoken announcements for the channels' transmit paths. `area`: what it answers for, by default the
    config's jurisdiction (central passes the region's stations merged: bridge/central_dispatch.py).
    """

    def __init__(
        self, config: Config, *, bus: EventBus | None = None, transmit: asyncio.Queue[Announcement] | None = None,
        area: Area | None = None,
    ) -> None:  # fmt: skip
        rules = config.dispatch
        self.area = area or JurisdictionArea(load_jurisdiction(config.jurisdiction))
        self.jurisdiction = self.area.jurisdiction
        self._conn = connect_state(config.storage)  # SQLite on a box; PostgreSQL at central (bridge/db.py)
        statuses = StatusStore(self._conn)  # what each responder last said (or an ack made them), across restarts
        self.board = ResponderBoard(self.jurisdiction, on_change=statuses.save)
        self.board.restore(statuses.load())
        topics = Topics(config.broker.topic_prefix)
        self.link: MqttLink | None = None
        publish, ready = _nowhere, None
        if config.broker.enabled:
            b = config.broker
            tls = tls_context(b.tls.ca_file, b.tls.cert_file, b.tls.key_file) if b.tls is not None else None
            self.link = MqttLink(
                b.host,
                b.port,
                client_id=b.client_id,
                topics=topics,
                handler=self._on_message,
                username=b.username,
                password=b.read_password(),
                tls=tls,
            )
            publish, ready = self.link.publish, self.link.wait_connected
        self.outbox = Outbox(self._conn, publish, ready=ready)
        self._drain_at_stop = True
        lexicon, places = load_lexicon(rules.lexicon), self.area.places
        homes = self.jurisdiction.channel_posts
        for index in self.area.indexes:
            _warm_up(lexicon, index)
        announcer = Announcer(transmit) if rules.alerts.announce else None
        self.dispatcher = Dispatcher(
            jurisdiction=self.jurisdiction,
            store=IncidentStore(self._conn),
            outbox=self.outbox,
            read_report=lambda t, channel: read_report(t, lexicon, places(channel), homes.get(channel, frozenset())),
            rank=self._rank,
            board=self.board,
            watches=WatchStore(self._conn),
            topics=topics,
            bus=bus,
            announcer=announcer,
            ack_timeout=rules.alerts.ack_timeout_s,
            merge_radius_m=rules.alerts.merge_radius_m,
            merge_window_s=rules.alerts.merge_window_s,
            devices=rules.alerts.devices,
            default_priority=lexicon.default_priority,
            confirm_timeout=rules.alerts.confirm_timeout_s,
            partials=rules.partials if rules.provisional else None,
            position_max_age_s=rules.responders.position_max_age_s,
            position_max_ahead_s=rules.responders.position_max_ahead_s,
        )
        self._rules = rules.responders
        self.sos = SosDesk(dispatcher=self.dispatcher, jurisdiction=self.jurisdiction, board=self.board,
                           rank=lambda place, exclude: self._rank(place, SOS, exclude), places=places, conn=self._conn,
                           rules=rules.sos, position_max_age_s=rules.responders.position_max_age_s)  # fmt: skip
        # every accepted fix kept for track replay, within the retention (dispatch/tracks.py)
        self.tracks = TrackStore(self._conn, retention_days=rules.tracks.retention_days, max_fixes=rules.tracks.max_fixes)
        self.tracks.prune()
        self.dispatcher.position_listeners.append(self.tracks.record)
        # patrols (dispatch/patrols.py): check-ins from every fix; the service raises the missed ones (`run`)
        self.patrols = PatrolDesk(self._conn, rules.patrols, self.jurisdiction,
                                  publish=bus.publish if bus is not None else None)  # fmt: skip
        self.dispatcher.position_listeners.append(self.patrols.on_position)
        # geofences (dispatch/geofence.py): a guard leaving his post; a responder's fix at the scene answers on_scene
        self.geofences = Geofences(self._conn, rules.geofences, self.jurisdiction, self.board, self.dispatcher.store,
                                   self._arrived, publish=bus.publish if bus is not None else None)  # fmt: skip
        self.dispatcher.position_listeners.append(self.geofences.on_position)
        self._answers: set[asyncio.Task[None]] = set()
        # tasks with sign-off (dispatch/tasks.py): the alerts' outbox and the announcer; the service runs its reminders (`run`)
        self.tasks = TaskDesk(conn=self._conn, jurisdiction=self.jurisdiction, outbox=self.outbox, topics=topics,
                              announcer=announcer, publish=bus.publish if bus is not None else None,
                              record_on_incident=self.dispatcher.store.record)  # fmt: skip

    async def run(self) -> None:
        """Keep the MQTT link up and the outbox draining until cancelled."""
        self.dispatcher.watch_unconfirmed()
        self.dispatcher.alerter.resume()
        if self.link is None:
            logger.warning("broker disabled: alerts are kept in the outbox, not sent")
            await asyncio.Event().wait()
        link = asyncio.create_task(self.link.run(), name="mqtt-link")
        sender = asyncio.create_task(self.outbox.run(), name="outbox")
        try:
            done, _ = await asyncio.wait((link, sender), return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # what ended it
        except asyncio.CancelledError:
            await self.dispatcher.close()  # nothing new is made (alert timers stopped) ...
            await self._drain()  # ... and what was made last goes out while the link is still up
            raise
        finally:
            link.cancel()
            sender.cancel()
            await asyncio.gather(link, sender, return_exceptions=True)
            await self.dispatcher.close()

    def forgo_drain(self) -> None:
        """At the next stop, leave the outbox as it is: another process sends it now (central's pair, its lease lost)."""
        self._drain_at_stop = False

    async def _drain(self) -> None:
        """A clean stop: the messages made last (an escalation due as the service stops, an incident's latest state)
        are sent while the broker is connected, for at most DRAIN_S; what is left waits in the outbox for the next
        start. Without it they all waited for the next start, phones included."""
        assert self.link is not None
        if not self._drain_at_stop:
            return
        deadline = time.monotonic() + DRAIN_S
        try:
            while self.outbox.count_pending() and self.link.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if left := self.outbox.count_pending():
                logger.warning("stopping with %d message(s) not sent to the broker: they go at the next start", left)
        except sqlite3.Error as e:  # the store gone (central's PostgreSQL away): what waits goes at the next start
            logger.warning("stopping without draining the outbox: its store failed (%s)", e)

    def _rank(
        self, place: Place, incident_type: str, exclude: Sequence[str] = ()
    ) -> tuple[list[Candidate], list[Candidate]]:
        """The configured choice now; everyone else in reach, nearest first, in reserve for escalation (`exclude`:
        never either, e.g. the guard who raised an SOS; nor those out of the area's reach of the place)."""
        exclude = [*exclude, *self.area.out_of_reach(place)]
        first = [_candidate(r) for r in recommend(place, self.board, self._rules, exclude=exclude)]
        everyone = self._rules.model_copy(update={"guards": 1000, "police": 1000})
        reserve = [_candidate(r) for r in recommend(place, self.board, everyone,
                                                    exclude=[*exclude, *(c.responder_id for c in first)])]  # fmt: skip
        return first, reserve

    async def _on_message(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        await self.dispatcher.on_message(topic, payload, retained=retained)

    def _arrived(self, responder_id: str, incident_id: str) -> None:
        """His position put him at the scene: answered on_scene on the path his phone's answer takes (run next on
        the loop: this is called while the dispatcher handles his fix)."""
        payload = json.dumps({"incident_id": incident_id, "status": "on_scene"}).encode()
        answer = self.dispatcher.on_message(self.dispatcher.topics.ack(responder_id), payload)
        task = asyncio.get_running_loop().create_task(answer)
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)


def _candidate(r: Recommendation) -> Candidate:
    return Candidate(r.responder.id, r.distance_m, r.responder.role, r.reason)


def _warm_up(lexicon: Lexicon, index: PlaceIndex) -> None:
    """Classify and locate one report, as text and as the recogniser's pinyin: what they load on first use (the type
    model, the thesaurus, jieba's word cutter: ~0.2 s, more on a busy machine) is loaded as the service is built,
    before any channel opens, instead of delaying the first reports."""
    for transcript in ({"text": "美食街有人打架"}, {"pinyin": "mei3 shi2 jie1 you3 ren2 da3 jia4"}):
        read_report(transcript, lexicon, index)[1].scene()


async def _nowhere(topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
    raise ConnectionError("broker disabled")
