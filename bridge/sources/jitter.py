"""A re-ordering jitter buffer for RTP packets: pure logic (no I/O, no clock of its own), tested packet by packet.

The consumer is a segmenter and an archive, not a loudspeaker, so packets in order are released at once (no playout
delay); only a hole in the sequence holds the packets behind it, for at most `depth` seconds, after which the missing
packets are declared lost. A lost packet becomes silence, not a repeat of the previous one: the archive is evidence
and must not contain audio nobody said, and a repeated 20 ms of voice would also stretch what the VAD hears as speech.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")

MAX_MISORDER = 100  # a packet this far behind the stream is a sender restart, not a late packet (RFC 3550 A.1)
MAX_DROPOUT = 3000  # a jump this far ahead is a sender restart too: re-synchronise instead of counting it lost
MAX_FILL = 50  # longer losses are counted but not filled with silence (the stamps after them show the gap anyway)


@dataclass(slots=True)
class Released(Generic[Item]):
    """A packet leaving the buffer; `missing` packets before it were lost (`fill` of them should become silence)."""

    item: Item
    missing: int = 0
    fill: int = 0


class JitterBuffer(Generic[Item]):
    def __init__(self, depth: float) -> None:
        self.depth = depth
        self.late = 0
        self.duplicate = 0
        self.lost = 0
        self._held: dict[int, tuple[Item, float]] = {}
        self._highest: int | None = None  # highest extended sequence number seen
        self._next: int | None = None  # extended sequence number expected next

    def push(self, seq: int, item: Item, now: float) -> str | None:
        """Hold a packet (16-bit sequence number); returns "late", "duplicate" or "restart" when not simply held."""
        ext = self._extend(seq)
        if self._next is not None and ext < self._next:
            if self._next - ext <= MAX_MISORDER:
                self.late += 1
                return "late"
            self.reset()  # whatever the old stream still had held behind a hole is dropped with it
            ext = self._extend(seq)
            self._held[ext] = (item, now)
            return "restart"
        if ext in self._held:
            self.duplicate += 1
            return "duplicate"
        self._held[ext] = (item, now)
        return None

    def pop(self, now: float) -> list[Released[Item]]:
        """Packets ready at `now`: the next in sequence, or anything held behind a hole for `depth` seconds."""
        out: list[Released[Item]] = []
        while self._held:
            first = min(self._held)
            arrived = self._held[first][1]
            if first != self._next and now - arrived < self.depth:
                break
            out.append(self._release(first))
        return out

    def next_deadline(self) -> float | None:
        """When `pop` will next have something to release (None: nothing held)."""
        if not self._held:
            return None
        first = min(self._held)
        return self._held[first][1] if first == self._next else self._held[first][1] + self.depth

    def reset(self) -> None:
        self._held.clear()
        self._highest = self._next = None

    def _release(self, seq: int) -> Released[Item]:
        item, _ = self._held.pop(seq)
        missing = 0 if self._next is None or seq - self._next > MAX_DROPOUT else seq - self._next
        self.lost += missing
        self._next = seq + 1
        return Released(item, missing, missing if missing <= MAX_FILL else 0)

    def _extend(self, seq: int) -> int:
        """16-bit sequence number -> extended one, taking the wrap-around nearest to the highest seen."""
        if self._highest is None:
            self._highest = seq + 0x10000  # room below for packets that arrive before the first one seen
            return self._highest
        delta = ((seq - self._highest) + 0x8000) % 0x10000 - 0x8000
        ext = self._highest + delta
        self._highest = max(self._highest, ext)
        return ext
