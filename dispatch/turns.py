"""A call told in two transmissions, read as one.

Over a radio a call often comes in two parts: the place in one transmission and what happened in the next
(「万寿路花鸟市场」 / 「有人晕倒了，需要救护」), or the report first and the place when the caller remembers it
(「有人晕倒了」 / 「在万寿路花鸟市场门口」). The segmenter also ends an utterance at a pause longer than its hang-over,
cutting a hesitant caller's one transmission in two. Each half read alone is a place with nothing to send anyone to,
and a report with nowhere to send them. The dispatcher remembers each channel's last final for `CARRY_S`, so the
second half can take the place of the first (`Turn.where`) or give its place to the incident the first raised
(`Turn.incident_id`).

Only half a call lends or gives a place: a transmission that says where and nothing else, or that sounds like a
report without saying surely what (a 待确认 entry, which the next transmission's report then confirms). One that
says something routine (「美食街巡逻正常」, 「收到，马上到美食街」) is another conversation, perhaps another guard's
on the same channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatch.classify import Classification
from dispatch.location import LocationMatch

CARRY_S = 8.0  # from the end of one transmission to the start of the next, at most: the same caller going on
# A next transmission's pre-roll may reach back into the hang-over of the one before; one that started earlier than
# that is not the next (a transcript handled late, after a link's catch-up).
OVERLAP_S = 1.0


def says_only_where(c: Classification) -> bool:
    """No incident word and no routine word heard: at most the classifier's guess that it sounds like a report."""
    return not c.terms and (not c.is_incident or (c.needs_confirmation and c.type == "other"))


def half_a_call(c: Classification) -> bool:
    """Says where, not surely what: only a place, or a report whose type is not certain (a 待确认 entry). The next
    transmission may say what happened there, or give its place to the report before it."""
    return says_only_where(c) or c.needs_confirmation


@dataclass(frozen=True, slots=True)
class Turn:
    """One channel's last final transcript, as the next one may need it."""

    utterance_id: str
    end: float
    text: str
    where: LocationMatch | None = None  # the place it named, when it was half a call
    incident_id: str | None = None  # the incident it raised (or joined)
    placeless: bool = False  # ... which no place was known for


class LastTurns:
    """The last turn of each channel, for `carry_s` after its end."""

    def __init__(self, carry_s: float = CARRY_S) -> None:
        self.carry_s = carry_s
        self._last: dict[str, Turn] = {}

    def before(self, channel: str, start: float) -> Turn | None:
        """The turn that ended on `channel` at most `carry_s` before a transmission starting at `start`."""
        turn = self._last.get(channel)
        return turn if turn is not None and -OVERLAP_S <= start - turn.end <= self.carry_s else None

    def remember(self, channel: str, turn: Turn) -> None:
        """`turn` is the channel's last, unless a later one was handled before it (finals can come out of order)."""
        last = self._last.get(channel)
        if last is None or last.end <= turn.end:
            self._last[channel] = turn

    def revise(self, channel: str, turn: Turn) -> None:
        """`turn` read again (heard again, asr/live.py): it replaces the channel's last if that is still its own."""
        last = self._last.get(channel)
        if last is not None and last.utterance_id == turn.utterance_id:
            self._last[channel] = turn

    def forget(self, channel: str) -> None:
        """The two halves were joined: a third transmission does not join them again."""
        self._last.pop(channel, None)
