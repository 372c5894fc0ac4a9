"""The dispatcher's spoken announcements on each channel's transmit path, with their airtime kept bounded.

While a channel transmits it hears nothing (hardware/receive.py mutes its own echo), so each announcement costs the
channel that much listening. Per channel:
- one announcement per incident: an update of an incident whose announcement is still waiting replaces it;
- a call made on a partial transcript's reading is revised by the final's (dispatch/announce.py, Announcement): until
  the channel is keyed for it (waiting, or taken for a transmission whose later phrases still render), it is replaced
  (or withdrawn unsaid); once on the air, the revision's correction or cancellation follows it (nothing, when the
  final confirmed it);
- the announcements waiting together go out in one transmission (one key-up, one wait for a clear channel);
- an airtime budget (`tx.announce_airtime_s` per rolling `tx.announce_window_s`): an announcement that would exceed
  it is dropped, counted (`dropped["over_budget"]`) and logged; its alerts went to the phones regardless. A correction
  of a call already said is not: what was said wrong on the air is put right on the air.
An announcement is rendered when its transmission is next (of what is replaced, at most its first phrase; of what
is over budget, nothing), and the first one to go is taken for the air only once its first phrase is rendered and
the channel is clear: a phrase not rendered ahead (a first start) takes seconds. The channel is keyed once the rest
will be rendered before it is due (the voice's recent pace against the audio ready), and the later phrases play as
they render (dispatch/speech.py): a keyed channel does not carry silence waiting for a phrase. Until it is keyed, a
call is not said: its final's revision replaces it (no 更正 follows a call that had not gone out).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
from dispatch.announce import Announcement
from dispatch.speech import CHARS_PER_S, PhraseStream, Speaker, SpeechError, silence
from hardware.transmit import Priority, Transmitter

logger = logging.getLogger(__name__)

BETWEEN_S = 0.6  # pause between two announcements merged into one transmission
POLL_S = 0.05  # how often an announcement whose later phrases still render looks again whether it may key up
SAID_KEPT = 500  # incidents whose call a channel remembers having put on the air (what a revision asks)


@dataclass(slots=True)
class _Waiting:
    announcement: Announcement
    audio: PhraseStream | None = None  # rendering once its transmission is next; None: not yet, or it has its own
    correcting: bool = False  # corrects or withdraws a call already said: not dropped over the budget

    def estimate_s(self) -> float:
        pcm = self.announcement.pcm
        return len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH) if pcm is not None else len(self.announcement.text) / CHARS_PER_S

    def stream(self) -> AsyncIterator[bytes]:
        if self.audio is not None:
            return aiter(self.audio)
        return _once(self.announcement.pcm or b"")

    def cancel(self) -> None:
        if self.audio is not None:
            self.audio.cancel()


class ChannelAnnouncements:
    """One channel's waiting announcements, its airtime and its counts; `run()` plays them until cancelled."""

    def __init__(self, transmitter: Transmitter, speaker: Speaker | None, clock: Callable[[], float] = time.monotonic
                 ) -> None:  # fmt: skip
        self.transmitter = transmitter
        self.channel = transmitter.channel
        self._speaker = speaker
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}  # incident id -> its latest announcement, in arrival order
        self._wake = asyncio.Event()
        self._aired: deque[tuple[float, float]] = deque()  # (ended at, seconds keyed) of recent announcements
        self.transmissions = 0
        self.announced = 0  # announcements that went on the air
        self.airtime_s = 0.0
        self.merged = 0  # announcements that shared a transmission with an earlier one
        self.dropped: Counter[str] = Counter()  # replaced | withdrawn | over_budget | unrenderable | not_sent
        self._taking: dict[str, _Waiting] = {}  # taken for the next transmission, the channel not keyed for it yet
        self._said: OrderedDict[str, None] = OrderedDict()  # incidents whose call went on the air, oldest first

    def submit(self, announcement: Announcement) -> None:
        taken = self._taking.pop(announcement.incident_id, None)
        if taken is not None:  # not on the air yet: replaced or withdrawn as a waiting call is (it leaves the batch)
            self._waiting[announcement.incident_id] = taken
        correcting = announcement.if_said is not None and announcement.incident_id in self._said
        if announcement.if_said is not None:
            revised = self._revised(announcement)
            if revised is None:
                return
            announcement = revised
        earlier = self._waiting.pop(announcement.incident_id, None)
        if earlier is not None:  # an update of the incident: only its latest state is worth the airtime
            correcting |= earlier.correcting  # (what it replaces put something said right: so does it)
            earlier.cancel()
            self.dropped["replaced"] += 1
            logger.info("channel %s: announcement for %s replaced by its update", self.channel, announcement.incident_id)
        self._waiting[announcement.incident_id] = _Waiting(announcement, correcting=correcting)
        logger.info("channel %s: announcement for %s queued%s", self.channel, announcement.incident_id,
                    " (it corrects what was said)" if correcting else "")  # fmt: skip
        self._wake.set()

    def _revised(self, revision: Announcement) -> Announcement | None:
        """What a revision of a call comes to on this channel: the call still waiting (or taken, not yet keyed for)
        replaced by its text, or withdrawn; on the air already, followed by what it says then; never made here (dropped over the
        budget, say), made now as any call would be. None: nothing to queue."""
        iid = revision.incident_id
        said = iid in self._said
        text = revision.if_said if said else revision.text
        if iid in self._waiting and not text:
            self._waiting.pop(iid).cancel()
            self.dropped["withdrawn"] += 1
            logger.info("channel %s: announcement for %s withdrawn before it was said", self.channel, iid)
            return None
        if not text:
            return None
        return replace(revision, text=text, if_said=None, pcm=None if said else revision.pcm)  # pcm: `text`'s audio

    def recent_airtime(self) -> float:
        window = self.transmitter.config.announce_window_s
        now = self._clock()
        while self._aired and now - self._aired[0][0] > window:
            self._aired.popleft()
        return sum(seconds for _, seconds in self._aired)

    def state(self) -> dict[str, Any]:
        return {
            "waiting": len(self._waiting),
            "transmissions": self.transmissions,
            "announced": self.announced,
            "merged": self.merged,
            "airtime_s": round(self.airtime_s, 1),
            "recent_airtime_s": round(self.recent_airtime(), 1),
            "dropped": dict(self.dropped),
        }

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._until_ready()
            batch = self._within_budget()
            if not batch:
                continue
            try:
                await self._transmit(batch)
            except Exception:  # a bug here must not stop the service's other tasks: this channel goes on
                logger.exception("channel %s: announcements %s failed", self.channel,
                                 ", ".join(w.announcement.incident_id for w in batch))  # fmt: skip
                self.dropped["not_sent"] += len(batch)
            finally:
                self._taking.clear()

    async def _until_ready(self) -> None:
        """Wait (at most `max_wait_s`) until the channel is clear and the first call to be taken has its first phrase
        rendered, both at once: what waits for a caller to let go, or for the voice, stays waiting, so the final
        transcript's revision of a call made on a partial still replaces it (on the caller's own channel it comes as
        he lets go). The transmitter looks again before it keys."""
        deadline = time.monotonic() + self.transmitter.config.max_wait_s
        while not (self._first_rendered() and self.transmitter.clear_now()) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)

    def _first_rendered(self) -> bool:
        """Whether the first announcement `_within_budget` would take has its first phrase rendered; starts rendering
        it if not (one over the budget is skipped, never rendered). One that cannot be rendered is dropped here."""
        if self._speaker is None:
            return True
        used = self.recent_airtime()
        first = next((w for w in self._waiting.values() if not self._over_budget(used, w.estimate_s(), w)), None)
        if first is None or first.announcement.pcm is not None:
            return True
        if first.audio is None:
            try:
                first.audio = self._speaker.stream(first.announcement.text, first=True)
            except Exception:  # the voice's cache unreadable, say: this call is lost, the channel goes on
                logger.exception("channel %s: announcement for %s cannot be rendered", self.channel,
                                 first.announcement.incident_id)  # fmt: skip
                del self._waiting[first.announcement.incident_id]
                self.dropped["unrenderable"] += 1
                return False
        return first.audio.first_ready()

    def _over_budget(self, used: float, needed: float, waiting: _Waiting) -> bool:
        """Whether `needed` more seconds after `used` exceed the channel's airtime budget for `waiting`: never for a
        correction (wrong words on the air are put right regardless)."""
        return not waiting.correcting and used + needed > self.transmitter.config.announce_airtime_s

    def _within_budget(self) -> list[_Waiting]:
        """Take every waiting announcement, in order, that the channel's airtime budget still allows."""
        budget = self.transmitter.config.announce_airtime_s
        used = self.recent_airtime()
        batch: list[_Waiting] = []
        for waiting in self._waiting.values():
            needed = waiting.estimate_s() + (BETWEEN_S if batch else 0.0)
            if self._over_budget(used, needed, waiting):
                waiting.cancel()
                self.dropped["over_budget"] += 1
                logger.warning("channel %s: announcement for %s dropped: %.0f s of announcements in the last %.0f s "
                               "would exceed the budget of %.0f s (its alerts went out)", self.channel,
                               waiting.announcement.incident_id, used + needed, self.transmitter.config.announce_window_s,
                               budget)  # fmt: skip
                continue
            used += needed
            batch.append(waiting)
            self._taking[waiting.announcement.incident_id] = waiting
        self._waiting.clear()
        return batch

    async def _transmit(self, batch: list[_Waiting]) -> None:
        if self._speaker is not None:  # rendered now, not on arrival: what is replaced or over budget costs nothing
            for i, waiting in enumerate(w for w in batch if w.announcement.pcm is None):
                if waiting.audio is None:  # (the first one's may be rendering already)
                    waiting.audio = self._speaker.stream(waiting.announcement.text, first=i == 0)
        ready = list(batch)
        while ready:  # key up only once there is audio to play: the first phrase of the first one
            first = ready[0]
            try:
                if (audio := first.audio) is not None:
                    await audio.first()
                    lead = self.transmitter.config.key_up_delay_ms / 1000
                    # no silence mid-announcement on the air; meanwhile a revision may still replace the call
                    while self._still_taken(first) and not audio.done() and not audio.keeps_up(lead):
                        await asyncio.sleep(POLL_S)
                if self._still_taken(first):
                    break
                ready.pop(0)  # replaced or withdrawn while its later phrases rendered (submit queued the revision)
            except SpeechError as e:
                self.dropped["unrenderable"] += 1
                unsaid = ready.pop(0).announcement.incident_id
                self._taking.pop(unsaid, None)
                logger.error("channel %s: announcement for %s cannot be spoken: %s", self.channel, unsaid, e)
        ready = [w for w in ready if self._still_taken(w)]
        self._taking.clear()
        if not ready:
            return
        ids = [w.announcement.incident_id for w in ready]
        for iid in ids:  # on the air from here (the transmitter keys once the channel is clear): revisions correct it
            self._said[iid] = None
            self._said.move_to_end(iid)
        while len(self._said) > SAID_KEPT:
            self._said.popitem(last=False)
        logger.info("channel %s: announcement for %s ready", self.channel, "+".join(ids))
        result = await self.transmitter.transmit(_joined(ready, self.channel), Priority.NORMAL, f"announce {'+'.join(ids)}")
        self._aired.append((self._clock(), result.keyed))
        self.airtime_s += result.keyed
        if result.status == "sent":
            self.transmissions += 1
            self.announced += len(ready)
            self.merged += len(ready) - 1
        else:
            self.dropped["not_sent"] += len(ready)
            if result.status in ("busy", "failed"):  # never on the air: nothing to correct later
                for unsaid in ids:
                    self._said.pop(unsaid, None)

    def _still_taken(self, waiting: _Waiting) -> bool:
        return self._taking.get(waiting.announcement.incident_id) is waiting


async def _joined(batch: list[_Waiting], channel: str) -> AsyncIterator[bytes]:
    """The announcements one after the other, a pause between; one that fails to render mid-way ends the rest of
    itself only (said in the log), the next one still plays."""
    for i, waiting in enumerate(batch):
        if i:
            yield silence(BETWEEN_S)
        try:
            async for chunk in waiting.stream():
                yield chunk
        except SpeechError as e:
            logger.error("channel %s: announcement for %s cut short: %s", channel, waiting.announcement.incident_id, e)


async def _once(pcm: bytes) -> AsyncIterator[bytes]:
    yield pcm


class Announcements:
    """Every transmitting channel's announcements, fed from the dispatcher's queue."""

    def __init__(self, transmitters: dict[str, Transmitter], speaker: Speaker | None) -> None:
        self.channels = {cid: ChannelAnnouncements(tx, speaker) for cid, tx in transmitters.items()}

    async def run(self, queue: asyncio.Queue[Announcement]) -> None:
        async with asyncio.TaskGroup() as tasks:
            for channel in self.channels.values():
                tasks.create_task(channel.run(), name=f"announce:{channel.channel}")
            while True:
                announcement = await queue.get()
                channel = self.channels.get(announcement.channel)
                if channel is None:
                    logger.debug("channel %s cannot transmit: announcement for %s not played", announcement.channel,
                                 announcement.incident_id)  # fmt: skip
                    continue
                channel.submit(announcement)

    def state(self, channel_id: str) -> dict[str, Any] | None:
        channel = self.channels.get(channel_id)
        return channel.state() if channel is not None else None
