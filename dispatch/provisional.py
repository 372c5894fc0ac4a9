"""Dispatch from the live transcript: when partial transcripts are sure enough to raise an incident before the speaker
lets go of the key, and what the final transcript then makes of that provisional decision.

Pure logic, no I/O. The dispatcher (`dispatch/dispatcher.py`) gives each utterance a `PartialGate`, feeds it the
`Reading` of every partial whose words changed, raises a provisional incident when the gate opens, and `settle`s it
with the final transcript's reading. `bench/provisional.py` replays growing prefixes of the blind sets' sentences
through the same gate and the same `settle`, so the figures in docs/performance.md measure this code.

The gate opens once, when one reading -- a known place and an incident type the classifier is certain of (not
待确认, not routine), urgent enough (`min_priority`) -- is confident enough and has held on `stable_partials`
consecutive changed partials: a word half-heard at the end of a partial (打 before 打架 or 打听, 公园北路 before
公园北路夜市) has not held yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dispatch.config import PartialRules

PRIORITIES = ("none", "low", "medium", "high", "critical")


@dataclass(slots=True, frozen=True)
class Reading:
    """What one transcript (a partial or the final) says: where, what, and how sure of each."""

    type: str  # an incident type, or "none"
    priority: str
    needs_confirmation: bool
    confidence: float  # the classification's
    place_id: str | None
    place_confidence: float = 0.0

    @classmethod
    def of(cls, classification: Any, where: Any | None) -> Reading:
        """From a `dispatch.classify.Classification` and a `dispatch.location.LocationMatch` (or None)."""
        return cls(
            type=classification.type,
            priority=classification.priority,
            needs_confirmation=classification.needs_confirmation,
            confidence=classification.confidence,
            place_id=where.place.id if where is not None else None,
            place_confidence=where.confidence if where is not None else 0.0,
        )

    @property
    def certain(self) -> bool:
        """An incident whose type the classifier is sure of (what a final transcript dispatches without an operator)."""
        return self.type != "none" and not self.needs_confirmation


class Verdict(StrEnum):
    """What the final transcript makes of a provisional incident (the event's `reason`)."""

    CONFIRMED = "final"  # the same place and type: the provisional mark is cleared
    REROUTED = "rerouted"  # another place or type: the incident follows the final, responders re-ranked
    RETRACTED = "retracted"  # routine, or nothing: the incident ends, every alerted phone is told
    REQUEUED = "requeued"  # a report whose type is not certain: alerts withdrawn, it waits in 待确认 for an operator


def settle(provisional: Reading, final: Reading) -> Verdict:
    if final.type == "none":
        return Verdict.RETRACTED
    if final.needs_confirmation:
        return Verdict.REQUEUED
    if (final.place_id, final.type) != (provisional.place_id, provisional.type):
        return Verdict.REROUTED
    return Verdict.CONFIRMED


def transcript_key(transcript: Any) -> tuple[Any, ...]:
    """What a partial says, for telling a changed partial from a repeated one (the engines repeat themselves)."""
    keywords = tuple((k.ref, round(k.start, 2)) for k in getattr(transcript, "keywords", ()))
    return (getattr(transcript, "text", ""), getattr(transcript, "pinyin", ""), keywords)


class PartialGate:
    """One utterance's partials, read one by one; `feed` answers True once, when the provisional incident should be
    raised (its reading is then `fired`). Partials whose words did not change are not read again (`changed`)."""

    __slots__ = ("_held", "_last_key", "_streak", "fired", "rules")

    def __init__(self, rules: PartialRules) -> None:
        self.rules = rules
        self.fired: Reading | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._held: tuple[str | None, str] | None = None  # the (place, type) of the current streak
        self._streak = 0

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

    def feed(self, reading: Reading) -> bool:
        if self.fired is not None:
            return False
        if not self.qualifies(reading):
            self._held, self._streak = None, 0
            return False
        key = (reading.place_id, reading.type)
        self._streak = self._streak + 1 if key == self._held else 1
        self._held = key
        if self._streak < self.rules.stable_partials:
            return False
        self.fired = reading
        return True

    def qualifies(self, reading: Reading) -> bool:
        """Certain of its type, urgent enough, confident of both, at a known place."""
        r = self.rules
        return (
            reading.certain
            and reading.place_id is not None
            and PRIORITIES.index(reading.priority) >= PRIORITIES.index(r.min_priority)
            and reading.confidence >= r.min_confidence
            and reading.place_confidence >= r.min_place_confidence
        )
