"""Channel patching (警保联动): what is received on one channel is transmitted on the other, both ways.

A patch links two channels that each have a transmitter. Modes:
- utterance: each finished utterance received on A is played on B (robust; latency = the utterance's length);
- live: an utterance is streamed to B as the segmenter emits it (latency ≈ pre-roll + key-up delay).

Loop prevention, in two independent layers:
1. the receive glue (hardware.receive) mutes what a channel hears while its transmitter is keyed and during the
   echo guard after, so jingbao's own transmissions never become utterances there;
2. here, an utterance whose speech lies in its own channel's transmit windows is dropped as echo (counted), in
   case a channel runs without that glue or its echo arrives late.
Only utterances received on a channel are forwarded; audio transmitted by a patch is never forwarded again, so
A↔B plus B↔C never relays A's audio to C.

Half-duplex arbitration: a patch carries one direction at a time. Whoever starts first holds the patch until that
transmission ends; the other direction waits (its audio is kept and follows). Each transmitter also holds off
while its own channel is receiving, so a relay never talks over a guard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH
from bridge.events import SegmentEvent, Utterance, UtteranceAudio, UtteranceDiscarded, UtteranceStarted
from hardware.config import PatchConfig
from hardware.transmit import Priority, Transmitter

logger = logging.getLogger(__name__)

ECHO_SHARE = 0.5  # an utterance more than half inside transmit windows is our own echo
ECHO_PROBE_STEP = 0.1  # seconds between the points at which an utterance is checked against transmit windows

PatchMode = Literal["utterance", "live"]


class PatchError(Exception):
    """A patch request that cannot be honoured (unknown channel, no transmitter, not patched)."""


class PatchConflict(PatchError):
    """The two channels are already patched."""


@dataclass(eq=False)
class Patch:
    a: str
    b: str
    mode: PatchMode
    origin: Literal["config", "api"]
    forwarded: dict[str, int] = field(default_factory=dict)  # utterances forwarded, by the channel they came from
    echo_dropped: int = 0
    turn: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # one direction at a time
    tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def other(self, channel: str) -> str:
        return self.b if channel == self.a else self.a

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "mode": self.mode,
            "origin": self.origin,
            "forwarded": {f"{src}->{self.other(src)}": n for src, n in self.forwarded.items()},
            "echo_dropped": self.echo_dropped,
            "active": self.turn.locked(),
        }


def _key(a: str, b: str) -> frozenset[str]:
    return frozenset((a, b))


class PatchManager:
    def __init__(self, transmitters: Mapping[str, Transmitter], patches: Iterable[PatchConfig] = ()) -> None:
        self.transmitters = transmitters
        self._patches: dict[frozenset[str], Patch] = {}
        self._live: dict[tuple[int, str], asyncio.Queue[bytes | None]] = {}  # (patch id, utterance id) -> stream
        for p in patches:
            self.add(p.a, p.b, p.mode, origin="config")

    # --- run-time control (API, CLI) -----------------------------------------------------------------------------

    def add(self, a: str, b: str, mode: PatchMode = "utterance", origin: Literal["config", "api"] = "api") -> Patch:
        if a == b:
            raise PatchError(f"a patch links two different channels, got {a!r} twice")
        for channel in (a, b):
            if channel not in self.transmitters:
                raise PatchError(f"channel {channel!r} has no transmitter (unknown, or no tx section in its config)")
        if _key(a, b) in self._patches:
            raise PatchConflict(f"channels {a!r} and {b!r} are already patched")
        patch = Patch(a, b, mode, origin)
        self._patches[_key(a, b)] = patch
        logger.info("patch %s <-> %s added (%s, from %s)", a, b, mode, origin)
        return patch

    def remove(self, a: str, b: str) -> Patch:
        patch = self._patches.pop(_key(a, b), None)
        if patch is None:
            raise PatchError(f"channels {a!r} and {b!r} are not patched")
        for task in patch.tasks:
            task.cancel()  # a relay in progress is cut; the transmitter unkeys in its finally
        for key in [k for k in self._live if k[0] == id(patch)]:
            del self._live[key]
        logger.info("patch %s <-> %s removed", a, b)
        return patch

    def list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self._patches.values()]

    async def close(self) -> None:
        tasks = [t for p in self._patches.values() for t in p.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the receive side feeds every segmenter event here --------------------------------------------------------

    async def handle(self, event: SegmentEvent) -> None:
        """Route one event of a channel to its patches; returns at once (relays run as their own tasks)."""
        source = event.channel
        for patch in [p for p in self._patches.values() if source in (p.a, p.b)]:
            if patch.mode == "utterance":
                if isinstance(event, Utterance):
                    self._relay_utterance(patch, event)
            else:
                self._relay_live(patch, event)

    def _relay_utterance(self, patch: Patch, utt: Utterance) -> None:
        if self._echo_share(utt.channel, utt.start, utt.end) > ECHO_SHARE:
            self._drop_echo(patch, utt.channel, utt.id)
            return
        self._spawn(patch, utt.channel, utt.pcm, utt.id)

    def _relay_live(self, patch: Patch, event: SegmentEvent) -> None:
        key = (id(patch), getattr(event, "utterance_id", getattr(event, "id", "")))
        if isinstance(event, UtteranceStarted):
            onset = event.start + len(event.pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)  # when speech was confirmed
            if self.transmitters[event.channel].is_echo(onset):
                self._drop_echo(patch, event.channel, event.utterance_id)
                return
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            queue.put_nowait(event.pcm)
            self._live[key] = queue
            self._spawn(patch, event.channel, _drain(queue), event.utterance_id)
        elif (queue := self._live.get(key)) is not None:
            if isinstance(event, UtteranceAudio):
                queue.put_nowait(event.pcm)
            elif isinstance(event, Utterance | UtteranceDiscarded):
                queue.put_nowait(None)
                del self._live[key]

    def _echo_share(self, channel: str, start: float, end: float) -> float:
        tx = self.transmitters[channel]
        probes = max(1, int((end - start) / ECHO_PROBE_STEP))
        return sum(tx.is_echo(start + (i + 0.5) * (end - start) / probes) for i in range(probes)) / probes

    def _drop_echo(self, patch: Patch, channel: str, utterance_id: str) -> None:
        patch.echo_dropped += 1
        logger.info("patch %s <-> %s: %s on %s is our own echo, not relayed", patch.a, patch.b, utterance_id, channel)

    def _spawn(self, patch: Patch, source: str, audio: bytes | AsyncIterator[bytes], utterance_id: str) -> None:
        task = asyncio.create_task(self._forward(patch, source, audio, utterance_id), name=f"patch-{source}-{utterance_id}")
        patch.tasks.add(task)
        task.add_done_callback(patch.tasks.discard)

    async def _forward(self, patch: Patch, source: str, audio: bytes | AsyncIterator[bytes], utterance_id: str) -> None:
        target = patch.other(source)
        label = f"patch {source}->{target} {utterance_id}"
        async with patch.turn:
            result = await self.transmitters[target].transmit(audio, Priority.PATCH, label=label)
        if result.status == "sent":
            patch.forwarded[source] = patch.forwarded.get(source, 0) + 1
        else:
            logger.warning("patch %s->%s: %s not relayed (%s)", source, target, utterance_id, result.error or result.status)


async def _drain(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while (chunk := await queue.get()) is not None:
        yield chunk
