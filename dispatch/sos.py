"""SOS / 一键报警: a guard or officer in danger himself, from the phone page's SOS button or by an emergency phrase
(救命, 紧急求助, 我被打了 ...) on his radio channel.

An SOS is an incident of its own kind, type `sos`, always critical, raised here and never by the classifier. It is not
a type of the lexicon: the type model (dispatch/type_model.npz) was trained on the lexicon's fifteen types, never
outputs another one and overrules the lexicon's words when it reads them otherwise, and adding a type would mean
retraining it. The emergency phrases are matched with the lexicon's own matcher all the same (`SosPhrases`: a
`Lexicon` of these phrases alone, read by `read_transcript` as any transcript is, in characters and in pinyin space,
with its negations: 没喊救命 is no SOS), and longer everyday wordings that contain a phrase shadow it as chatter
shadows incident words (救命稻草, 紧急求助电话, 我被打了一针).

What happens (`SosDesk`):
- the phone page's button (`raise_from_phone`): a critical `sos` incident at the caller's position (the phone's
  fix when it sends one, else his last fresh GPS fix, else his post), named after the nearest place of the
  jurisdiction; the nearest available responders alerted (the caller excepted) with the reserve kept for escalation,
  and the chief of the grid the position lies in always, whatever his status or distance; called on their radio
  channels. The page then opens a hot microphone for `hot_mic_s`: its audio goes the page's push-to-talk way
  (archived, recognised) and each utterance it makes is added to the SOS incident (`take`) instead of being
  dispatched as a report of its own;
- an emergency phrase heard in a final transcript (`take`): the same incident for that channel, at the place the
  transcript names, else at the position of the channel's only unit, else at an unknown place (the operator sends
  someone: the alarm still sounds);
- the same caller (a phone user, or a radio channel) again within `repeat_window_s` of his last SOS, while it is open:
  the same incident, one more press (`sos_repeated` in its timeline, its position updated, the alarm on again), never
  another incident or a second round of alerts;
- a radio keyed and held down for `key_up_s` on a channel with a COR line (`watch_key_ups`; off unless configured):
  the same incident for that channel, placed as a phrase without a place is;
- every console alarms (red banner, repeating tone) until an operator acknowledges the SOS (`acknowledge`); the alarm
  state is kept in the state database (`sos_calls`), so a reload or a restart keeps it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

from asr.transcript import Transcript
from bridge.db import Connection, Migration, migrate
from dispatch.alerts import Candidate
from dispatch.classify import Lexicon, load_lexicon, read_transcript
from dispatch.config import SosRules
from dispatch.gazetteer import Jurisdiction, Place, distance_m
from dispatch.incidents import OPEN, Incident, Status, new_incident_id
from dispatch.location import PlaceIndex, extract_location
from dispatch.responders import ResponderBoard

logger = logging.getLogger(__name__)

SOS = "sos"  # the incident type
PRIORITY = "critical"
NEAR_PLACE_M = 50.0  # a position farther than this from the nearest place is said to be near it (附近约 N 米)


class CarrierLine(Protocol):
    """What the key-up watch reads of a channel's control line (hardware/lines/base.py's Line is one)."""

    @property
    def has_cor(self) -> bool: ...

    @property
    def carrier(self) -> bool | None: ...

    def carrier_since(self, now: float) -> float | None: ...


# How people in danger say it on a radio, each said by the caller himself (我被打了, not 他被打了: a guard reporting
# someone else's fight is an ordinary report). Two-syllable ones need their tones heard (jiu4 ming4); none has five
# syllables or more, since the matcher lets such a word lose one syllable in pinyin (老板被人打了 would be 我被人打了),
# and none reads like an everyday phrase up to one syllable (快救我 ~ 赶快叫我, 救救我 ~ 就叫我).
PHRASES = ["救命", "救命啊", "紧急求助", "紧急求救", "我被打了", "我被砍了", "我被捅了"]
# Everyday wordings that hold a phrase and are no SOS: the longer word wins, as chatter shadows incident words. Most
# of all someone else's cry reported (女的在喊救命: a domestic report, not the guard in danger).
SHADOWS = ["喊救命", "喊救命啊", "喊着救命", "叫救命", "救命稻草", "救命恩人", "救命钱", "救命药", "紧急求助电话",
           "紧急求助按钮", "紧急求助热线", "我被打了一针", "我被打了预防针"]  # fmt: skip
# ... and in characters, a cry reported with quotes or a word between (喊“救命”, 喊了声救命): these cancel a phrase
# up to two characters after them, as a negation does (one-character words are read in characters only).
REPORTED = ["喊", "叫"]

Caller = str  # a responder id (the phone page), or "channel:<id>" (a phrase or a held key-up on a radio channel)


class Dispatching(Protocol):
    """What the SOS desk needs of the dispatcher (dispatch.dispatcher.Dispatcher has it)."""

    store: Any  # IncidentStore
    alerter: Any  # Alerter

    def raise_incident(self, incident: Incident, first: Sequence[Candidate], reserve: Sequence[Candidate], *,
                       actor: str, reason: str) -> Incident: ...  # fmt: skip

    def changed(self, before: Incident | None, after: Incident, reason: str) -> None: ...


Rank = Callable[[Place, Sequence[str]], tuple[list[Candidate], list[Candidate]]]  # (place, exclude) -> (first, reserve)

MIGRATIONS = [
    Migration(
        sqlite="""
    CREATE TABLE sos_calls (
        incident_id TEXT PRIMARY KEY,
        caller TEXT NOT NULL,
        source TEXT NOT NULL,
        raised_at REAL NOT NULL,
        last_at REAL NOT NULL,
        presses INTEGER NOT NULL DEFAULT 1,
        acked_at REAL,
        acked_by TEXT
    );
    CREATE INDEX sos_calls_caller ON sos_calls (caller, last_at);
    """,
        # PostgreSQL came later: its first step is the schema as it stands, the steps after it have nothing to do
        postgres="""
    CREATE TABLE sos_calls (
        incident_id TEXT PRIMARY KEY,
        caller TEXT NOT NULL,
        source TEXT NOT NULL,
        raised_at DOUBLE PRECISION NOT NULL,
        last_at DOUBLE PRECISION NOT NULL,
        presses INTEGER NOT NULL DEFAULT 1,
        acked_at DOUBLE PRECISION,
        acked_by TEXT
    );
    CREATE INDEX sos_calls_caller ON sos_calls (caller, last_at);
    CREATE TABLE sos_hot_mics (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        incident_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        start DOUBLE PRECISION NOT NULL,
        "end" DOUBLE PRECISION  -- NULL: open (or the process ended while it was)
    );
    CREATE INDEX sos_hot_mics_start ON sos_hot_mics (start);
    """,
    ),
    # hot microphones, so that a restart does not forget whose words they were (`SosDesk.takes`: an edge asks again
    # when it forwards a backlog to central)
    Migration(
        sqlite="""
    CREATE TABLE sos_hot_mics (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        start REAL NOT NULL,
        "end" REAL  -- NULL: open (or the process ended while it was)
    );
    CREATE INDEX sos_hot_mics_start ON sos_hot_mics (start);
    """,
        postgres="",
    ),
]


class SosError(ValueError):
    """An SOS that cannot be taken (an unknown responder, an incident that is no SOS of this caller)."""


class SosPhrases:
    """The emergency phrases, found by the lexicon's matcher (characters and pinyin space, negations, shadows)."""

    def __init__(self, extra: Sequence[str] = ()) -> None:
        data = {
            "precedence": [SOS],
            "types": {SOS: {"priority": PRIORITY, "terms": [*PHRASES, *extra]}},
            "reports": [],
            "chatter": SHADOWS,
            "severity": {"critical": [], "high": []},
            "negations": [*(t.word for t in load_lexicon().terms if t.role == "negation"), *REPORTED],
        }
        self._lexicon = Lexicon(data)

    def heard(self, transcript_like: Any) -> tuple[str, ...]:
        """The emergency phrases said (as the lexicon spells them); empty when none was."""
        said = read_transcript(transcript_like, self._lexicon).by_words
        return said.terms if said.type == SOS else ()


@dataclass(slots=True, frozen=True)
class SosCall:
    """An SOS raised: who, how, when last, how many times; acknowledged by an operator or not."""

    incident_id: str
    caller: Caller
    source: Literal["phone", "radio"]
    raised_at: float
    last_at: float
    presses: int = 1
    acked_at: float | None = None
    acked_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _HotMic:
    incident_id: str
    channel: str
    start: float
    end: float | None = None  # None: still open
    id: int = 0  # its sos_hot_mics row


class SosStore:
    def __init__(self, conn: Connection) -> None:
        migrate(conn, "dispatch.sos", MIGRATIONS)
        self._conn = conn

    def get(self, incident_id: str) -> SosCall | None:
        row = self._conn.execute("SELECT * FROM sos_calls WHERE incident_id = ?", (incident_id,)).fetchone()
        return SosCall(**dict(row)) if row else None

    def latest(self, caller: Caller, since: float) -> SosCall | None:
        row = self._conn.execute("SELECT * FROM sos_calls WHERE caller = ? AND last_at >= ? ORDER BY last_at DESC LIMIT 1",
                                 (caller, since)).fetchone()  # fmt: skip
        return SosCall(**dict(row)) if row else None

    def unacknowledged(self) -> list[SosCall]:
        rows = self._conn.execute("SELECT * FROM sos_calls WHERE acked_at IS NULL ORDER BY last_at DESC")
        return [SosCall(**dict(r)) for r in rows]

    def save(self, call: SosCall) -> None:
        """Insert the call, or overwrite every column of the one with its incident id."""
        d = call.to_dict()
        updates = ", ".join(f"{column} = excluded.{column}" for column in d if column != "incident_id")
        with self._conn:
            self._conn.execute(f"INSERT INTO sos_calls ({', '.join(d)}) VALUES ({', '.join('?' * len(d))}) "
                               f"ON CONFLICT (incident_id) DO UPDATE SET {updates}", tuple(d.values()))  # fmt: skip

    def hot_mic_opened(self, mic: _HotMic) -> int:
        with self._conn:
            return self._conn.execute("INSERT INTO sos_hot_mics (incident_id, channel, start) VALUES (?, ?, ?) RETURNING id",
                                      (mic.incident_id, mic.channel, mic.start)).fetchone()[0]  # fmt: skip

    def hot_mic_closed(self, mic: _HotMic) -> None:
        with self._conn:
            self._conn.execute('UPDATE sos_hot_mics SET "end" = ? WHERE id = ?', (mic.end, mic.id))

    def hot_mics(self, since: float, longest_s: float) -> list[_HotMic]:
        """The hot microphones open at `since` or later, oldest first, forgetting older ones. One still open is of a
        process that ended while it was (the phone's connection went with it): it is taken as open `longest_s`."""
        with self._conn:
            self._conn.execute('DELETE FROM sos_hot_mics WHERE coalesce("end", start + ?) < ?', (longest_s, since))
        rows = self._conn.execute('SELECT * FROM sos_hot_mics ORDER BY start').fetchall()
        return [_HotMic(r["incident_id"], r["channel"], r["start"], r["end"] if r["end"] is not None
                        else r["start"] + longest_s, r["id"]) for r in rows]  # fmt: skip


HOT_MIC_GRACE_S = 1.0  # an utterance this close to a hot microphone's press belongs to it (pre-roll, hang-over)
# A closed hot microphone is remembered this long: an edge asks about its utterances again when it forwards them to
# central (`takes`), which a link down may delay up to central's node.dispatch_max_age_s (15 min) and more
HOT_MIC_KEPT_S = 3600.0
KEY_UP_POLL_S = 0.5  # how often the COR lines are looked at for a key-up held too long


class SosDesk:
    def __init__(
        self, *, dispatcher: Dispatching, jurisdiction: Jurisdiction, board: ResponderBoard, rank: Rank,
        places: Callable[[str], PlaceIndex], conn: Connection, rules: SosRules | None = None,
        position_max_age_s: float = 300.0,
    ) -> None:  # fmt: skip
        """`rank(place, exclude)`: the responders to alert first and those in reserve (nearest first), leaving out
        `exclude`; `places(channel)`: where the place a transcript heard on the channel names is looked up."""
        self.rules = rules or SosRules()
        self.phrases = SosPhrases(self.rules.extra_phrases)
        self.calls = SosStore(conn)
        self._dispatcher = dispatcher
        self._jurisdiction = jurisdiction
        self._board = board
        self._rank = rank
        self._places = places
        self._position_max_age_s = position_max_age_s
        # those of the last HOT_MIC_KEPT_S, a restart included
        self._hot_mics = self.calls.hot_mics(time.time() - HOT_MIC_KEPT_S, self.rules.hot_mic_s)

    # --- raising --------------------------------------------------------------------------------------------------

    def raise_from_phone(self, responder_id: str, lat: float | None = None, lon: float | None = None,
                         acc: float | None = None) -> Incident:  # fmt: skip
        """The SOS button of `responder_id`'s phone page, with the phone's position when it has one. SosError for a
        responder the jurisdiction does not know."""
        try:
            responder = self._jurisdiction.responder(responder_id)
        except KeyError as e:
            raise SosError(str(e.args[0])) from None
        if lat is not None and lon is not None:
            position = (lat, lon, "phone")
        else:
            located = self._board.locate(responder_id, self._position_max_age_s)
            position = (located.lat, located.lon, located.source)
        entry = {"responder": responder_id, "position": position[2]} | ({"acc": round(acc)} if acc is not None else {})
        return self._raise(responder_id, "phone", self._near(position[0], position[1]), position[:2],
                           channel=responder.channel, text=f"{responder.name}按下一键报警", entry=entry)  # fmt: skip

    def take(self, transcript: Transcript, utterance: Any) -> Incident | None:
        """A final transcript, before the dispatcher reads it: the SOS incident it was added to (an utterance of a
        hot microphone, or an emergency phrase on its channel), or None when it is no SOS (the dispatcher's then).
        An utterance whose partials already raised a provisional incident is left to the dispatcher to settle; its
        emergency phrase still raises the SOS."""
        mic = self._hot_mic(utterance)
        if mic is not None:
            return self._add_words(mic.incident_id, transcript, utterance)
        said = self._emergency_phrases(transcript)
        if not said:
            return None
        where = extract_location(transcript, self._places(utterance.channel))
        if where is not None:
            place, position = (where.place, 0.0), (where.place.lat, where.place.lon)
        else:
            place, position = self._channel_place(utterance.channel)
        incident = self._raise(f"channel:{utterance.channel}", "radio", place, position, channel=utterance.channel,
                               text=transcript.readable or transcript.text, pinyin=transcript.pinyin,
                               utterance_id=utterance.id, entry={"said": list(said)})  # fmt: skip
        return None if self._dispatcher.store.provisional_for(utterance.id) is not None else incident

    def takes(self, transcript: Transcript, utterance: Any) -> bool:
        """Would `take` take this final transcript (a hot microphone's, or an emergency phrase)? What an edge tells the
        central tier with each transcript it forwards, so that central's dispatcher leaves the SOS's words to it
        (bridge/central_dispatch.py). Decided by the transcript and the hot microphones alone, as `take` decides."""
        return self._hot_mic(utterance) is not None or bool(self._emergency_phrases(transcript))

    def _emergency_phrases(self, transcript: Transcript) -> tuple[str, ...]:
        if not self.rules.radio_phrases or transcript.empty:
            return ()
        return self.phrases.heard(transcript)

    async def watch_key_ups(self, lines: Mapping[str, CarrierLine]) -> None:
        """(With `key_up_s` set) a carrier held that long on a channel's COR line raises an SOS for the channel, once
        per key-up, while it is still held. Runs until cancelled; a failure to raise one is logged, never ends it."""
        held_for = self.rules.key_up_s
        watched = {channel: line for channel, line in lines.items() if line.has_cor}
        if held_for is None or not watched:
            return
        raised: dict[str, float] = {}  # channel -> when the key-up that raised its SOS began
        while True:
            await asyncio.sleep(KEY_UP_POLL_S)
            now = time.time()
            for channel, line in watched.items():
                rose = line.carrier_since(now) if line.carrier else None
                if rose is None or now - rose < held_for or raised.get(channel) == rose:
                    continue
                raised[channel] = rose
                try:
                    self.raise_from_key_up(channel, now - rose)
                except Exception:  # the other channels are still watched
                    logger.exception("channel %s: raising the SOS of a key-up held %.0f s failed", channel, now - rose)

    def raise_from_key_up(self, channel: str, held_s: float) -> Incident:
        """A radio on `channel` keyed and held down `held_s` (the code of a guard who cannot speak)."""
        place, position = self._channel_place(channel)
        return self._raise(f"channel:{channel}", "radio", place, position, channel=channel,
                           text=f"{self._channel_name(channel)}长按发射{held_s:.0f}秒（紧急信号）",
                           entry={"key_up_s": round(held_s, 1)})  # fmt: skip

    def holds(self, utterance: Any) -> bool:
        """Is this utterance (still being spoken) one of a hot microphone's? Its partials raise nothing then."""
        return self._hot_mic(utterance) is not None

    # --- the phone's hot microphone -------------------------------------------------------------------------------

    def open_hot_mic(self, incident_id: str, responder_id: str, channel: str) -> object:
        """The phone page opens its hot microphone on `channel` after `responder_id`'s SOS `incident_id`; SosError
        unless that SOS is his and open. Returns the handle `close_hot_mic` takes."""
        call = self.calls.get(incident_id)
        incident = self._dispatcher.store.get(incident_id)
        if call is None or call.caller != responder_id or incident is None or incident.status not in OPEN:
            raise SosError(f"{incident_id!r} is no open SOS of {responder_id}")
        mic = _HotMic(incident_id, channel, time.time())
        mic.id = self.calls.hot_mic_opened(mic)
        self._hot_mics = [m for m in self._hot_mics if m.end is None or m.end > time.time() - HOT_MIC_KEPT_S] + [mic]
        self._dispatcher.store.record(incident_id, "sos_hot_mic", actor=responder_id, channel=channel)
        return mic

    def close_hot_mic(self, handle: object) -> None:
        assert isinstance(handle, _HotMic)
        handle.end = time.time()
        self.calls.hot_mic_closed(handle)

    # --- the consoles' alarm --------------------------------------------------------------------------------------

    def alarms(self) -> list[SosCall]:
        """The SOS calls no operator has acknowledged yet, the latest first."""
        return self.calls.unacknowledged()

    def acknowledge(self, incident_id: str, *, actor: str) -> SosCall:
        """An operator has seen the SOS: every console's alarm for it stops (until the caller presses again).
        Acknowledging it again changes nothing; SosError for an incident that is no SOS."""
        call = self.calls.get(incident_id)
        if call is None:
            raise SosError(f"{incident_id!r} is no SOS")
        if call.acked_at is not None:
            return call
        call = replace(call, acked_at=time.time(), acked_by=actor)
        self.calls.save(call)
        store = self._dispatcher.store
        store.record(incident_id, "sos_acknowledged", actor=actor)
        incident = store.require(incident_id)
        self._dispatcher.changed(incident, incident, "sos_acknowledged")
        logger.info("SOS %s acknowledged by %s", incident_id, actor)
        return call

    def caller_name(self, call: SosCall) -> str:
        """Who called, as the console says it: the responder's name, or the radio channel's."""
        if call.source == "radio":
            return self._channel_name(call.caller.removeprefix("channel:"))
        try:
            return self._jurisdiction.responder(call.caller).name
        except KeyError:
            return call.caller

    # --- helpers --------------------------------------------------------------------------------------------------

    def _raise(
        self, caller: Caller, source: Literal["phone", "radio"], place: tuple[Place, float] | None,
        position: tuple[float, float] | None, *, channel: str, text: str, entry: dict[str, Any], pinyin: str = "",
        utterance_id: str | None = None,
    ) -> Incident:  # fmt: skip
        """A new SOS incident for `caller`, or one more press of the open one he raised within the window."""
        now = time.time()
        store = self._dispatcher.store
        last = self.calls.latest(caller, now - self.rules.repeat_window_s)
        open_one = store.get(last.incident_id) if last is not None else None
        if last is not None and open_one is not None and open_one.status in OPEN:
            return self._repeat(last, open_one, place, position, text, pinyin, utterance_id, entry)
        incident = Incident(
            id=new_incident_id(now), type=SOS, priority=PRIORITY, status=Status.REPORTED, created_at=now,
            updated_at=now, text=text, pinyin=pinyin, channel=channel,
            utterance_ids=(utterance_id,) if utterance_id else (), **_where(place, position),
        )  # fmt: skip
        first, reserve = self._responders(incident, place, caller)
        self.calls.save(SosCall(incident.id, caller, source, now, now))
        incident = self._dispatcher.raise_incident(incident, first, reserve, actor=caller, reason="sos")
        store.record(incident.id, "sos", actor=caller, source=source, **entry)
        alerted = ", ".join(c.responder_id for c in first) or "nobody"
        logger.warning("SOS %s from %s (%s) at %s: alerting %s", incident.id, caller, source,
                       incident.place_name or "an unknown place", alerted)  # fmt: skip
        return incident

    def _repeat(
        self, call: SosCall, incident: Incident, place: tuple[Place, float] | None, position: tuple[float, float] | None,
        text: str, pinyin: str, utterance_id: str | None, entry: dict[str, Any],
    ) -> Incident:  # fmt: skip
        """The same caller again: one more press of his SOS, its position the newest known, the alarm on again."""
        store = self._dispatcher.store
        self.calls.save(replace(call, last_at=time.time(), presses=call.presses + 1, acked_at=None, acked_by=None))
        changes: dict[str, Any] = _where(place, position) if position is not None else {}
        if utterance_id:
            changes |= {"utterance_ids": (*incident.utterance_ids, utterance_id), "reports": incident.reports + 1,
                        "text": text, "pinyin": pinyin}  # fmt: skip
        before, after = store.amend(incident.id, actor=call.caller, kind="sos_repeated",
                                    entry=entry | {"presses": call.presses + 1}, **changes)  # fmt: skip
        if before.place_id is None and after.place_id is not None:  # first known where it is: now someone can go
            first, reserve = self._responders(after, place, call.caller)
            after = self._dispatcher.alerter.dispatch(after, first, reserve)
        elif after.assigned:
            after = self._dispatcher.alerter.update(after, list(after.assigned), change="sos_repeated")
        self._dispatcher.changed(before, store.require(incident.id), "sos_repeated")
        logger.warning("SOS %s: %s again (%d times)", incident.id, call.caller, call.presses + 1)
        return store.require(incident.id)

    def _add_words(self, incident_id: str, transcript: Transcript, utterance: Any) -> Incident:
        """An utterance of the hot microphone: one more report of the SOS, its words the incident's words."""
        store = self._dispatcher.store
        incident = store.require(incident_id)
        said = transcript.readable or transcript.text
        changes: dict[str, Any] = {"utterance_ids": (*incident.utterance_ids, utterance.id), "reports": incident.reports + 1}
        if said or transcript.pinyin:
            changes |= {"text": said, "pinyin": transcript.pinyin}
        before, after = store.amend(incident_id, actor="dispatcher", kind="merged",
                                    entry={"utterance_id": utterance.id, "text": transcript.shown}, **changes)  # fmt: skip
        if said and after.assigned:
            self._dispatcher.alerter.update(after, list(after.assigned), change="sos_words")
        self._dispatcher.changed(before, after, "merged")
        logger.info("SOS %s: the hot microphone's utterance %s added (%s)", incident_id, utterance.id, transcript.shown)
        return after

    def _responders(self, incident: Incident, place: tuple[Place, float] | None, caller: Caller
                    ) -> tuple[list[Candidate], list[Candidate]]:  # fmt: skip
        """Who goes: the nearest (the caller left out), and the chief answering for the grid, always."""
        if place is None or incident.lat is None or incident.lon is None:
            return [], []
        at = place[0].model_copy(update={"lat": incident.lat, "lon": incident.lon})  # its grid, ranked from the position
        first, reserve = self._rank(at, [caller])
        grid = self._jurisdiction.grid_of(at.id)
        chosen = {c.responder_id for c in first}
        for r in self._jurisdiction.responders:
            if r.role == "chief" and grid is not None and self._jurisdiction.grid_of(r.post) == grid \
                    and r.id not in chosen and r.id != caller:
                located = self._board.locate(r.id, self._position_max_age_s)
                first.append(Candidate(r.id, distance_m(at.lat, at.lon, located.lat, located.lon), r.role, "grid_chief"))
        alerted = {c.responder_id for c in first}
        return first, [c for c in reserve if c.responder_id not in alerted]

    def _near(self, lat: float, lon: float) -> tuple[Place, float]:
        """The place of the jurisdiction nearest the position (a community only when nothing else is), and how far."""
        places = [p for p in self._jurisdiction.places if p.kind != "community"] or list(self._jurisdiction.places)
        nearest = min(places, key=lambda p: distance_m(lat, lon, p.lat, p.lon))
        return nearest, distance_m(lat, lon, nearest.lat, nearest.lon)

    def _channel_place(self, channel: str) -> tuple[tuple[Place, float] | None, tuple[float, float] | None]:
        """Where a radio SOS naming no place is: at the one responder listening on the channel, when only one does;
        else unknown (a channel shared by many units says nothing of which one called)."""
        on_it = [r.id for r in self._jurisdiction.responders if r.channel == channel]
        if len(on_it) != 1:
            return None, None
        located = self._board.locate(on_it[0], self._position_max_age_s)
        return self._near(located.lat, located.lon), (located.lat, located.lon)

    def _channel_name(self, channel: str) -> str:
        return next((c.name for c in self._jurisdiction.channels if c.id == channel), channel)

    def _hot_mic(self, utterance: Any) -> _HotMic | None:
        for mic in reversed(self._hot_mics):
            end = mic.end if mic.end is not None else float("inf")
            if mic.channel == utterance.channel and utterance.start <= end + HOT_MIC_GRACE_S \
                    and utterance.end >= mic.start - HOT_MIC_GRACE_S:
                return mic
        return None


def _where(place: tuple[Place, float] | None, position: tuple[float, float] | None) -> dict[str, Any]:
    """The incident's place columns: the place (with 附近约 N 米 when the position is not at it), the position."""
    if place is None:
        return {"place_id": None, "place_name": None, "detail": "", "lat": None, "lon": None, "location_confidence": 0.0}
    where, off_m = place
    lat, lon = position if position is not None else (where.lat, where.lon)
    detail = f"附近约{round(off_m)}米" if off_m > NEAR_PLACE_M else ""
    return {"place_id": where.id, "place_name": where.name, "detail": detail, "lat": lat, "lon": lon,
            "location_confidence": 1.0}  # fmt: skip
