"""Dispatch from the live transcript: when partial transcripts are sure enough to raise an incident before the speaker
lets go of the key, and what the final transcript then makes of that provisional decision.

Pure logic, no I/O. The dispatcher (`dispatch/dispatcher.py`) gives each utterance a `PartialGate`, feeds it the
`Reading` of every partial whose words changed, raises a provisional incident when the gate opens, and `settle`s it
with the final transcript's reading. `bench/provisional.py` replays growing prefixes of the blind sets' sentences
through the same gate and the same `settle`, so the figures in docs/performance.md measure this code.

The gate opens once, when one reading -- a known place and an incident type the classifier is certain of (not
待确认, not routine), urgent enough and confident enough -- has held:
- on `stable_partials` consecutive changed partials, and over `stable_units` syllables (characters) since that place
  and type were first read (surely or not): a word half-heard at the end of a partial (打 before 打架 or 打听, 公园北路
  before 公园北路夜市) has not held yet;
- past the end of the clause it was first read in (`after_pause`): a pause after that partial, and that many syllables
  after the pause without the reading changing. What a caller says next to an incident word most often
  turns it (…打起来了，已经劝开了; …冒烟，是烧烤摊的), and a clause is where a speaker stops to breathe.
A pause is a gap of `PAUSE_S` between two recognised words, or a punctuation mark in a transcript written with them.

At a pause in the speech itself (the segmenter heard `sentence_end_ms` of silence: `feed(..., paused=True)`), the
partial holds all that was said, its last word heard whole, and the clause is over, so nothing needs to hold: a
reading that qualifies (with `pause_min_confidence`) opens the gate at once. Any other report (its type unsure, its place
unknown, or not confident or urgent enough to alert on a partial) is raised as a provisional 待确认 entry, nobody
alerted: the operator sees it ~1 s before the hang-over ends the utterance. A pause may be a breath inside the call,
so no looser rule alerts anyone there. A qualifying reading later in the same utterance still opens the gate, and the
entry is then dispatched; so does a final certain of its type. When the pause goes on (`settled`: the segmenter's
`long_pause_ms`, 0.5 s, still ~0.5 s before the hang-over ends), it is most likely the end of the call (a pause
inside a call seldom lasts that long: 2 of the 53 real recordings and 4 of the 30 demo calls have one,
docs/performance.md), so the same reading alerts if its final would dispatch it (`as_final`: a type the classifier
is certain of, at a known place however sure), and a 待确认 entry raised at the pause is dispatched. A caller who goes
on after it has the alert settled by the final like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dispatch.config import PartialRules

PRIORITIES = ("none", "low", "medium", "high", "critical")
# A gap this long between two recognised syllables is a pause. The on-board engine ends a syllable at the next one's
# start, or 0.25 s after its own last unit (asr.pinyin.LAST_SYLLABLE_TAIL): within a phrase the gap is 0, and on
# the spoken calls a comma leaves 0.15-0.55 s.
PAUSE_S = 0.1


@dataclass(slots=True, frozen=True)
class Reading:
    """What one transcript (a partial or the final) says: where, what, how sure of each; and how much of it was heard
    (`units`: syllables or characters) with the pauses in it (`pauses`: a pause follows unit k, 0-based)."""

    type: str  # an incident type, or "none"
    priority: str
    needs_confirmation: bool
    confidence: float  # the classification's
    place_id: str | None
    place_confidence: float = 0.0
    units: int = 0
    pauses: tuple[int, ...] = ()

    @classmethod
    def of(cls, classification: Any, where: Any | None, transcript: Any = None) -> Reading:
        """From a `dispatch.classify.Classification`, a `dispatch.location.LocationMatch` (or None), and the
        transcript they were read from (for its length and pauses)."""
        units, pauses = heard(transcript) if transcript is not None else (0, ())
        return cls(
            type=classification.type,
            priority=classification.priority,
            needs_confirmation=classification.needs_confirmation,
            confidence=classification.confidence,
            place_id=where.place.id if where is not None else None,
            place_confidence=where.confidence if where is not None else 0.0,
            units=units,
            pauses=pauses,
        )

    @property
    def certain(self) -> bool:
        """An incident whose type the classifier is sure of (what a final transcript dispatches without an operator)."""
        return self.type != "none" and not self.needs_confirmation


def heard(transcript: Any) -> tuple[int, tuple[int, ...]]:
    """(units, pauses) of a transcript: its recognised words with their timing when it has them (a pause where the
    gap reaches PAUSE_S), else its characters (a pause at a punctuation mark), else its pinyin syllables (no pause
    known). A pause is known only once a word follows it."""
    words = getattr(transcript, "words", None) or (transcript.get("words") if isinstance(transcript, dict) else None)
    if words:
        ends = [(_get(w, "start"), _get(w, "end")) for w in words]
        return len(ends), tuple(k for k in range(len(ends) - 1) if ends[k + 1][0] - ends[k][1] >= PAUSE_S)
    text = _get(transcript, "text") if not isinstance(transcript, str) else transcript
    if text:
        spoken = [i for i, c in enumerate(text) if c.isalnum()]
        pauses = tuple(k for k in range(len(spoken) - 1) if any(not c.isalnum() and not c.isspace()
                                                                 for c in text[spoken[k] + 1 : spoken[k + 1]]))  # fmt: skip
        return len(spoken), pauses
    return len((_get(transcript, "pinyin") or "").split()), ()


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


class Verdict(StrEnum):
    """What the final transcript makes of a provisional incident (the event's `reason`)."""

    CONFIRMED = "final"  # the same place and type (or, for a 待确认 entry, unsure still): the provisional mark is cleared
    DISPATCHED = "dispatched"  # a 待确认 entry whose final is certain of its type: dispatched as that type
    REROUTED = "rerouted"  # another place or type: the incident follows the final, responders re-ranked
    RETRACTED = "retracted"  # routine, or nothing: the incident ends, every alerted phone is told
    REQUEUED = "requeued"  # a report whose type is not certain: alerts withdrawn, it waits in 待确认 for an operator


def settle(provisional: Reading, final: Reading) -> Verdict:
    if final.type == "none":
        return Verdict.RETRACTED
    if provisional.needs_confirmation:  # a 待确认 entry raised at a pause: the final's reading replaces its guess
        return Verdict.CONFIRMED if final.needs_confirmation else Verdict.DISPATCHED
    if final.needs_confirmation:
        return Verdict.REQUEUED
    if (final.place_id, final.type) != (provisional.place_id, provisional.type):
        return Verdict.REROUTED
    return Verdict.CONFIRMED


def transcript_key(transcript: Any) -> tuple[Any, ...]:
    """What a partial says, for telling a changed partial from a repeated one (the engines repeat themselves)."""
    keywords = tuple((k.ref, round(k.start, 2)) for k in getattr(transcript, "keywords", ()))
    return (getattr(transcript, "text", ""), getattr(transcript, "pinyin", ""), keywords)


class Raise(StrEnum):
    """What a partial's reading raises."""

    ALERT = "alert"  # a provisional incident, its responders alerted (the reading is then `PartialGate.fired`)
    QUEUE = "queue"  # a provisional 待确认 entry, nobody alerted (`PartialGate.queued`)


class PartialGate:
    """One utterance's partials, read one by one; `feed` answers what to raise, when anything: an alert once, and
    before it at most one 待确认 entry at a pause. Partials whose words did not change are not read again
    (`changed`)."""

    __slots__ = ("_anchor", "_last_key", "_since", "_streak", "fired", "queued", "rules")

    def __init__(self, rules: PartialRules) -> None:
        self.rules = rules
        self.fired: Reading | None = None
        self.queued: Reading | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._anchor: tuple[str, str] | None = None  # the (place, type) read on the latest partials, sure or not
        self._since = 0  # units heard when it first appeared
        self._streak = 0  # consecutive partials that read it surely (qualifies)

    def changed(self, transcript: Any) -> bool:
        """True (and remembered) when this partial says something the previous one did not."""
        key = transcript_key(transcript)
        if key == self._last_key:
            return False
        self._last_key = key
        return True

    @property
    def open(self) -> bool:
        return self.fired is not None

    def feed(self, reading: Reading, paused: bool = False, settled: bool = False) -> Raise | None:
        """`paused`: the partial was taken at a pause in the speech; it holds everything said until then. `settled`:
        ... and the pause went on (`vad.long_pause_ms`): most likely nothing more will be said."""
        if self.fired is not None:
            return None
        if settled:  # the pause's partial again (its gate counts were kept when it was read at the pause)
            return None if reading.type == "none" else self._at_pause(reading, settled=True)
        if reading.type == "none" or reading.place_id is None:
            self._anchor, self._streak = None, 0
        else:
            key = (reading.place_id, reading.type)
            if key != self._anchor:  # where this place and type were first read (the incident word, maybe unsure yet)
                self._anchor, self._since, self._streak = key, reading.units, 0
            self._streak = self._streak + 1 if self.qualifies(reading) else 0
        if reading.type == "none":
            return None
        if paused:
            return self._at_pause(reading, settled=False)
        if self._anchor is None or not self.held(reading):
            return None
        self.fired = reading
        return Raise.ALERT

    def _at_pause(self, reading: Reading, settled: bool) -> Raise | None:
        """The clause is over and its last word heard whole (silence follows it), so nothing needs to hold: a reading
        sure enough for a pause (`pause_min_confidence`; once the pause has gone on, what the final would dispatch)
        alerts. Any other report is queued."""
        if self.qualifies(reading, self.rules.pause_min_confidence) or (settled and self.as_final(reading)):
            self.fired = reading
            return Raise.ALERT
        if self.queued is None:
            self.queued = reading
            return Raise.QUEUE
        return None

    def held(self, reading: Reading) -> bool:
        """Has it been read surely on enough partials, over enough syllables since it first appeared, and past the
        end of the clause it appeared in?"""
        r = self.rules
        if self._streak < r.stable_partials or reading.units - self._since + 1 < r.stable_units:
            return False
        if r.after_pause == 0:
            return True
        pause = next((k for k in reading.pauses if k >= self._since - 1), None)  # at or after where it appeared
        return pause is not None and reading.units - (pause + 1) >= r.after_pause

    def as_final(self, reading: Reading) -> bool:
        """Would its final dispatch it: a type the classifier is certain of, at a known place however sure (a place
        only called, where someone fled), urgent enough for these rules?"""
        return reading.certain and reading.place_id is not None and self._urgent(reading)

    def _urgent(self, reading: Reading) -> bool:
        return PRIORITIES.index(reading.priority) >= PRIORITIES.index(self.rules.min_priority)

    def qualifies(self, reading: Reading, min_confidence: float | None = None) -> bool:
        """Certain of its type, urgent enough, confident of both (the type `min_confidence`, by default the rules'),
        at a known place."""
        r = self.rules
        return (
            reading.certain
            and reading.place_id is not None
            and self._urgent(reading)
            and reading.confidence >= (r.min_confidence if min_confidence is None else min_confidence)
            and reading.place_confidence >= r.min_place_confidence
        )
