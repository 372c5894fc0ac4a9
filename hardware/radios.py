"""The service's radio hardware: each channel's control line and transmitter, the patches between channels, and
the spoken announcements the dispatcher queues (hardware/announcements.py). Opened before the channels start, closed
(every PTT unkeyed) whatever way the service ends."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence

from bridge.config import ChannelConfig
from bridge.events import SegmentEvent
from bridge.sinks import SinkError, open_sink
from dispatch.announce import Announcement
from dispatch.speech import Speaker
from hardware.announcements import Announcements
from hardware.config import PatchConfig, SimulatedLineConfig
from hardware.lines import Line, LineError, make_line
from hardware.patch import PatchError, PatchManager
from hardware.transmit import Transmitter

logger = logging.getLogger(__name__)

FaultHook = Callable[[str, str | None], None]  # (channel id, what went wrong or None: the radio is back)


class Radios:
    def __init__(
        self, channels: Sequence[ChannelConfig], patches: Sequence[PatchConfig],
        speech_ended: Callable[[str], float | None],
    ) -> None:  # fmt: skip
        self._channels = [ch for ch in channels if ch.line is not None or ch.tx is not None]
        self._patch_configs = list(patches)
        self._speech_ended = speech_ended  # per channel: when its receiver last heard speech end (Transmitter's)
        self.lines: dict[str, Line] = {}
        self.transmitters: dict[str, Transmitter] = {}
        self.patches = PatchManager({})
        self.announcements = Announcements({}, None)

    async def open(self, on_fault: FaultHook) -> None:
        """Open every line (which unkeys it first: a PTT left keyed by a crash is released) and transmitter.

        A channel whose line or audio output cannot be opened (fob unplugged, no permission, output device missing)
        does not stop the others: the reason goes to `on_fault(channel id, message)` and the log, and the channel
        keeps receiving without it (no COR: the segmenter's VAD decides; without a transmitter it cannot transmit
        or be patched) until the service is restarted. `on_fault` also hears of each failed transmission.
        """
        for ch in self._channels:
            report = functools.partial(on_fault, ch.id)
            try:
                await self._open_channel(ch, report)
            except (LineError, SinkError) as e:
                logger.error("channel %s: %s; the channel runs without it until the service is restarted", ch.id, e)
                report(str(e))
        self.patches = PatchManager(self.transmitters)
        for p in self._patch_configs:
            try:
                self.patches.add(p.a, p.b, p.mode, origin="config")
            except PatchError as e:  # an end whose line or output failed above
                logger.error("patch %s <-> %s not set: %s", p.a, p.b, e)
                for end in (p.a, p.b):
                    if end in self.transmitters:  # the failed end already reports why
                        on_fault(end, f"patch {p.a} <-> {p.b} not set: {e}")

    async def _open_channel(self, ch: ChannelConfig, report: Callable[[str | None], None]) -> None:
        # A channel that transmits but has no control line keys its radio by VOX: a line held in memory.
        line = make_line(ch.id, ch.line or SimulatedLineConfig(type="simulated", cor=False))
        await line.open()
        line.on_fault = report  # lost and back while running
        self.lines[ch.id] = line  # registered at once: closed (unkeyed) with the others even if its output fails
        if ch.tx is not None:
            transmitter = Transmitter(
                ch.id, line, open_sink(ch.id, ch.tx.output), ch.tx,
                speech_ended=lambda cid=ch.id: self._speech_ended(cid),
                on_fault=report,
            )
            await transmitter.start()
            self.transmitters[ch.id] = transmitter
        logger.info("channel %s: line %s open%s", ch.id, type(line).__name__, ", can transmit" if ch.tx else "")

    async def close(self) -> None:
        """Stop relays in progress (each unkeys in its own finally; announcements stop with the service's task
        group), then close every transmitter and line (which unkey again): nothing can key a line after this."""
        await self.patches.close()
        for transmitter in self.transmitters.values():
            with contextlib.suppress(Exception):
                await transmitter.close()
        for line in self.lines.values():
            with contextlib.suppress(Exception):
                await line.close()

    async def on_segment_event(self, event: SegmentEvent) -> None:
        await self.patches.handle(event)

    async def play_announcements(self, queue: asyncio.Queue[Announcement], speaker: Speaker | None) -> None:
        """Speak the dispatcher's announcements on their channels (`speaker`: the voice; None: only announcements
        that bring their own audio are played) until cancelled."""
        self.announcements = Announcements(self.transmitters, speaker)
        await self.announcements.run(queue)
