"""The service `jingbao run` starts: every channel's receive chain as its own task, recognition, dispatch and the
HTTP API, all on one event loop (recognition itself runs in worker threads)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from asr.engine import Engine
from asr.live import LiveRecognition, RecognisedUtterance
from asr.store import TranscriptStore
from asr.transcript import Transcript
from bridge.archive import Archive, ArchivedUtterance
from bridge.bus import EventBus
from bridge.channel import Channel
from bridge.config import Config
from bridge.db import connect
from bridge.logsafe import clip
from bridge.looplag import LoopLagMonitor
from bridge.signals import until_signalled
from bridge.web import create_app
from bridge.web.server import HttpServer, bind, close, http_server
from dispatch.speech import Speaker
from hardware.radios import Radios

logger = logging.getLogger(__name__)


class Service:
    def __init__(self, config: Config, *, role: str = "all") -> None:
        """`role` "all" is the single box; "edge" adds the forwarder to the central tier (bridge/forward.py)."""
        self.config = config
        # an edge with node.dispatch "central" hands its transcripts to central's dispatcher only: raising incidents
        # here too would alert every responder twice (its dispatcher still serves SOS, tasks, patrols and the console)
        self.dispatches_heard = not (role == "edge" and config.node.dispatch == "central")
        self.bus = EventBus()
        self.loop_lag = LoopLagMonitor()
        self.archive = Archive(config.storage)
        self.archive.set_aside_unfinished_writes()  # a write the last run was killed in: before any channel opens
        self.db = connect(config.storage.database)
        self.transcripts = TranscriptStore(connect(config.storage.database))
        self.announcements: asyncio.Queue = asyncio.Queue(maxsize=100)  # spoken dispatch -> transmit paths
        self.dispatch = self._build_dispatch()
        self.recognition: LiveRecognition | None = None  # built in run(): the pool needs the running loop
        self.stale_finals = 0  # finals not dispatched: heard over node.dispatch_max_age_s ago (/metrics)
        self.speaker: Speaker | None = None  # the announcements' voice, loaded in run() once the transmitters are open
        self.channels = [Channel(ch, self.archive, self.bus, self._on_segment_event) for ch in config.channels if ch.enabled]
        self.radios = Radios([ch.config for ch in self.channels], config.patches, self._speech_ended)
        self.forwarder = self._build_forwarder() if role == "edge" else None

    def channel_states(self) -> list[dict[str, Any]]:
        """Each channel's state, with what its source refused, the audio it did not receive while transmitting and its
        announcements, its recognition lag and the event loop's lag (one loop serves every channel)."""
        states = [
            ch.state.to_dict() | ch.rejections() | ch.muting() | self.loop_lag.to_dict()
            | {"announcements": self.radios.announcements.state(ch.config.id)}
            for ch in self.channels
        ]  # fmt: skip
        if self.recognition is not None:
            lag = self.recognition.lag()
            for state in states:
                state["asr"] = lag.for_channel(state["id"])
        return states

    async def run(self, serve_http: bool = True) -> None:
        logger.info("starting %d channels; archive in %s", len(self.channels), self.config.storage.data_dir)
        # the console's port first: taken (another jingbao?), the start ends here, before a model loads or a channel opens
        sockets = await asyncio.to_thread(bind, self.config.web) if serve_http else []
        # watching from the very start: a stall while recognition and the radios come up delays the first requests too
        loop_lag = asyncio.create_task(self.loop_lag.run(), name="loop-lag")
        try:
            # what the last stop could not write (its disk full) comes back first: it is older than anything new
            await asyncio.to_thread(self.archive.import_spilled)
            loop = asyncio.get_running_loop()
            self.archive.on_written = lambda row: loop.call_soon_threadsafe(self._archived_late, row)
            self.recognition = await self._build_recognition()
            await self.radios.open(on_fault=self._radio_fault)  # a line that fails to open is that channel's fault
            for ch in self.channels:
                ch.line = self.radios.lines.get(ch.config.id)
                ch.transmitter = self.radios.transmitters.get(ch.config.id)
            self.speaker = await asyncio.to_thread(self._build_speaker)
            http = await asyncio.to_thread(self._http_server, sockets) if serve_http else None
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.radios.play_announcements(self.announcements, self.speaker), name="announcements")
                if self.recognition is not None:
                    tasks.create_task(self.recognition.run_backlog(), name="asr-backlog")
                if self.dispatch is not None:
                    tasks.create_task(self.dispatch.run(), name="dispatch")
                    tasks.create_task(self.dispatch.sos.watch_key_ups(self.radios.lines), name="sos-key-ups")
                    tasks.create_task(self.dispatch.tasks.run(), name="task-reminders")
                    tasks.create_task(self.dispatch.patrols.run(), name="patrols")  # missed check-ins
                if self.forwarder is not None:
                    tasks.create_task(self.forwarder.run(), name="forward")
                channel_tasks = [tasks.create_task(ch.run(), name=f"channel:{ch.config.id}") for ch in self.channels]
                if http is not None:
                    tasks.create_task(http.serve(), name="http")
                await asyncio.gather(*channel_tasks)
                if not serve_http:  # nothing else to wait for: the channels' inputs have ended
                    await self._drain()
                    raise _Done
        except* _Done:
            pass
        finally:
            close(sockets)  # never served, if the start failed; uvicorn closed them otherwise
            self.archive.on_written = None  # the channels are gone; the archive may outlive the loop (its close())
            loop_lag.cancel()
            await self.radios.close()  # every PTT unkeyed, whatever ended the service
            if self.speaker is not None:
                await asyncio.to_thread(self.speaker.close)  # waits for the phrase being rendered
            if self.recognition is not None:
                await self.recognition.close()
                self.recognition.pool.close()

    async def _drain(self, timeout: float = 60.0) -> None:
        """When inputs end (e.g. in tests): wait until the utterances already archived have been recognised and the
        alerts they raised have reached the broker, so ending the service does not cut a dispatch short."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not await self._drained():
            await asyncio.sleep(0.2)

    async def _drained(self) -> bool:
        recognition = self.recognition
        if recognition is not None and (recognition.pool.stats().open_streams or await asyncio.to_thread(self.archive.pending)):
            return False
        link = self.dispatch.link if self.dispatch is not None else None
        if link is not None and link.connected:
            return not self.dispatch.outbox.pending(1)  # the outbox connection belongs to this thread
        return True

    @property
    def transmitters(self) -> dict[str, Any]:
        return self.radios.transmitters

    def _radio_fault(self, channel_id: str, message: str | None) -> None:
        """A channel's radio line or audio output failed (at start-up, while running, or a transmission): shown on
        that channel's state, /healthz and the console, the way a lost source is; None: the line is back."""
        for ch in self.channels:
            if ch.config.id == channel_id:
                if message is None:
                    ch.state.clear_faults("radio")
                else:
                    ch.state.fault(f"radio: {message}", "radio")
                    self.bus.publish("fault", {"channel": channel_id, "message": message})
                self.bus.publish("channel", ch.state.to_dict())

    def _archived_late(self, row: ArchivedUtterance) -> None:
        """A held utterance is written at last (the disk has room again): its channel's fault may end."""
        for ch in self.channels:
            if ch.config.id == row.channel:
                ch.archived_late(row)

    def _speech_ended(self, channel_id: str) -> float | None:
        channel = next((ch for ch in self.channels if ch.config.id == channel_id), None)
        return channel.speech_ended() if channel is not None else float("-inf")

    async def _on_segment_event(self, event: Any, archived: Any) -> None:
        if self.recognition is not None:
            await self.recognition.on_event(event, archived)
        await self.radios.on_segment_event(event)

    async def _on_transcript(self, transcript: Transcript, utterance: RecognisedUtterance) -> None:
        # an SOS (an emergency phrase, a phone's hot microphone) takes the utterance before the dispatcher reads it;
        # the SOS stays the edge's even when central dispatches: its radios, key-ups and hot microphones are here
        if self.dispatch is None or self.dispatch.sos.take(transcript, utterance) is not None \
                or not self.dispatches_heard:
            return
        # recognised long after it was said (left pending while the service was down, or far behind): as at central,
        # stored and searchable, on the console, paging nobody
        age = self.dispatch.dispatcher.too_old(utterance.id, utterance.start, self.config.node.dispatch_max_age_s)
        if age is not None:
            self.stale_finals += 1
            logger.warning("channel %s: %s not dispatched: heard %d min ago, over node.dispatch_max_age_s (%s)",
                           utterance.channel, utterance.id, round(age / 60), clip(transcript.shown))  # fmt: skip
            return
        await self.dispatch.dispatcher.handle(transcript, utterance)

    async def _on_heard_again(self, transcript: Transcript, utterance: RecognisedUtterance) -> None:
        """A final heard once, heard again with the alternative hearings: this box's dispatcher reconsiders what it
        made of it (an SOS's words stay the SOS's; a final too old to dispatch stays undispatched)."""
        if self.dispatch is None or self.dispatch.sos.takes(transcript, utterance):
            return
        if self.dispatch.dispatcher.too_old(utterance.id, utterance.start, self.config.node.dispatch_max_age_s) is None:
            await self.dispatch.dispatcher.reconsider(transcript, utterance)

    async def _on_partial(self, transcript: Transcript, utterance: RecognisedUtterance) -> None:
        # a hot microphone's words are the SOS's (an edge's, wherever dispatch is): no provisional alert of their own
        if self.dispatch is not None and self.dispatch.sos.holds(utterance):
            return
        if self.dispatches_heard:
            if self.dispatch is not None:
                await self.dispatch.dispatcher.handle_partial(transcript, utterance)
        elif self.forwarder is not None:  # node.dispatch: central: its provisional alerts are central's
            self.forwarder.send_partial(transcript, utterance)

    async def _build_recognition(self) -> LiveRecognition | None:
        if self.config.asr.engine == "none":
            logger.info("speech recognition is off (asr.engine: none)")
            return None
        from asr.worker import RecognitionPool, character_writer
        from dispatch.area import place_namer

        engines = await asyncio.to_thread(self._build_engines)
        if not engines:
            return None
        pool = RecognitionPool(engines, self.config.asr.workers, self.config.asr.queue_size, self.config.asr.admit_lag_s)
        logger.info("speech recognition: %s with %d workers", pool.name, pool.workers)
        # the partials go to this box's dispatcher, or to central's when this edge leaves dispatch to it
        read_by = self.dispatch if self.dispatches_heard else self.forwarder
        on_partial = self._on_partial if self.config.dispatch.provisional and read_by is not None else None
        # the places the dispatcher finds in a final, named in the characters people read (the on-board engine's);
        # also on an edge leaving dispatch to central: its dispatcher reads the station's jurisdiction file, as
        # central's does, and the characters are for reading only (central dispatches from the pinyin as heard)
        writer = character_writer(engines)
        named = writer is not None and self.dispatch is not None
        write_places = place_namer(self.dispatch.area, writer) if named else None
        # heard once while recognition was behind, a final is heard again when it has time to spare; where central
        # dispatches, it has the final as this box heard it
        on_heard_again = self._on_heard_again if self.dispatches_heard and self.dispatch is not None else None
        return LiveRecognition(pool, self.archive, self.transcripts, self.bus, self._on_transcript, on_partial,
                               write_places, on_heard_again)

    def _build_engines(self) -> list[Engine]:
        """(In a worker thread: the keyword and word lists take a few tenths of a second, the models about a second,
        the hanzi decoder's index ~15 s on a first start; none of it may hold up the event loop.)"""
        from asr.worker import build_engines
        from dispatch.vocabulary import decoder_words, spotter_keywords

        keywords = spotter_keywords(self.config.jurisdiction, self.config.dispatch.lexicon)
        return build_engines(self.config.asr, keywords, decoder_words(self.config.dispatch.lexicon))

    def _build_dispatch(self) -> Any:
        if not self.config.dispatch.enabled:
            return None
        from dispatch.dispatcher import DispatchService

        return DispatchService(self.config, bus=self.bus, transmit=self.announcements)

    def _build_forwarder(self) -> Any:
        from bridge.forward import Forwarder

        node = self.config.node
        return Forwarder(self.config, ack_timeout_s=node.ack_timeout_s, behind_after_s=node.behind_after_s,
                         wake=self.bus.subscribe({"utterance", "transcript"}),
                         sos_takes=self.dispatch.sos.takes if self.dispatch is not None else None,
                         dispatched_at_edge=self.dispatch is not None and self.dispatches_heard,
                         channels=self.bus.subscribe({"channel"}),
                         # a box that recognises nothing keeps no transcript: central's are not its to take
                         on_recognised=self._recognised_elsewhere if self.config.asr.engine != "none" else None)

    async def _recognised_elsewhere(self, utterance_id: str, transcript: Transcript) -> bool:
        """A recognition worker's transcript of an utterance of this edge, passed on by central: taken as if recognised
        here while the utterance still waits for recognition here (a box without recognition keeps none)."""
        return self.recognition is not None and await self.recognition.recognised_elsewhere(utterance_id, transcript)

    def _build_speaker(self) -> Speaker | None:
        """The announcements' voice (in a worker thread: loading the model takes ~1 s), when the dispatcher announces
        and a channel can transmit. Every phrase announcements are made of but a place's detail is rendered ahead in
        the background (at the lowest CPU priority, paused while an announcement renders), kept on disk: first how
        they open and close, then each place with what happened there (the most urgent types first)."""
        if self.dispatch is None or not self.config.dispatch.alerts.announce or not self.radios.transmitters:
            return None
        from asr.models import TTS, locate
        from dispatch.announce import fixed_phrases, place_phrases
        from dispatch.speech import Speaker, load_voice

        alerts = self.config.dispatch.alerts
        model = locate(TTS, alerts.announce_model)
        if not model.found:
            logger.warning("announcements are spoken by espeak-ng, which recognisers and many listeners do not "
                           "understand: %s", model.message())  # fmt: skip
        # renderings kept in the data folder: what is rendered ahead is rendered on the first start only
        speaker = Speaker(load_voice(model.path, alerts.announce_voice), keep=self.config.storage.data_dir / "voice-cache")
        logger.info("announcements: voice %s%s", speaker.name, f" from {model.path} ({model.source})" if model.found else "")
        jurisdiction = self.dispatch.jurisdiction
        if opening := fixed_phrases(jurisdiction, self.radios.transmitters):  # empty: nobody listens where we transmit
            speaker.prepare([*opening, *place_phrases(jurisdiction)])
        return speaker

    def _http_server(self, sockets: list[socket.socket]) -> HttpServer:
        """(In a worker thread, before the channels open: building the app opens the stores, and the server's config
        imports uvicorn's protocol modules, a tenth of a second or more that would otherwise stall the loop as the
        channels start.)"""
        return http_server(create_app(self), sockets)


class _Done(Exception):
    """Ends the task group once every input has ended and its utterances are recognised."""


def run_service(config: Config, role: str = "all") -> None:
    """Run until SIGINT, SIGTERM or SIGHUP; each ends the service cleanly (lines unkeyed, recognition stopped)."""

    async def main() -> None:
        service = Service(config, role=role)
        await until_signalled(service.run())
        closed = sum(ch.closed_at_shutdown for ch in service.channels)
        logger.info("stopping: %d utterance(s) being spoken were closed with end reason shutdown", closed)
        # utterances held back by a full disk get a last write attempt; any still held are logged at CRITICAL
        await asyncio.to_thread(service.archive.close)
        logger.info("service stopped")

    asyncio.run(main())
