"""`jingbao run --role recognition`: speech recognition for the central tier on machines of its own (issue 13).

An edge recognises what its channels hear as they hear it. When it cannot keep up (more talking channels than its
cores recognise, a burst) its utterances wait in its archive, while central already holds them with their audio and
no transcript; an edge may also leave recognition out altogether (`asr.engine: none`, a box too small for it). A
recognition worker takes such utterances from central's PostgreSQL, recognises each with the engines a box runs
(the same model, the spotter listening for its config's jurisdiction and lexicon), and publishes the transcript on the
station's topic as the edge would (`<prefix>/nodes/<station>/transcripts`, QoS 1, its login `jingbao broker add-node
recognition`). Central stores and dispatches it as any other (bridge/central.py, bridge/central_dispatch.py); the
edge's own, when it comes later, replaces the stored text and is not dispatched again (`recognised_again`). Its
`dispatched_at_edge` is the edge's (the utterance says whether its edge dispatches itself), so central never
dispatches what the edge will. What such a transcript cannot say is whether the edge's SOS desk would take it (an
emergency phrase): central reads it as a report, and the edge raises its SOS when it recognises it itself.

The queue is central's table itself (CentralStore.claim_for_recognition): a worker claims the oldest utterance held
`after_s` without a transcript with `SELECT ... FOR UPDATE SKIP LOCKED` (two workers never take the same one) and a
lease (`lease_s`). A worker that dies mid-decode (SIGKILL, its machine lost, a hung decoder) holds its claim until
the lease ends, and the next worker to look takes the utterance then; one claimed `max_claims` times with no
transcript arriving (audio that kills the decoder, say) is given up, logged. Why not MQTT 5 shared subscriptions:
the audio is in central's database already, so a job needs no copy of it on the broker, and a table says what is
waiting, who has it and for how long; and a broker keeps a QoS 1 message in flight to a member whose session is
merely away (a worker killed mid-decode) until that member comes back, where a lease hands it on after `lease_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import aiomqtt

from asr.engine import Engine
from bridge.backoff import Backoff
from bridge.central import CentralStore, RecognitionJob, wait_for_database
from bridge.config import Config, ConfigError
from bridge.decode import AudioDecodeError, decode_file
from bridge.logsafe import clip
from bridge.nodes import NodeLink, Publisher, Refused, transcript_payload
from dispatch.from_audio import recognise
from dispatch.topics import TRANSCRIPTS, Topics

logger = logging.getLogger(__name__)

SUMMARY_EVERY_S = 60.0  # a busy worker says what it has done this often, not once per utterance


class RecognitionNode:
    """Claims central's untranscribed utterances, recognises them and publishes their transcripts (`run()` until
    cancelled); `asr.workers` of them at once, sharing the engines (each utterance has its own streams)."""

    def __init__(self, config: Config, engines: Sequence[Engine], *, worker: str | None = None) -> None:
        url = config.storage.database_url
        if url is None:
            raise ConfigError("--role recognition needs storage.database_url: central's PostgreSQL (docs/deployment.md)")
        self._url = url
        self.engines = list(engines)
        self.rules = config.node.recognition
        self.topics = Topics(config.broker.topic_prefix)
        broker = config.node.broker or config.broker
        self.link = NodeLink(broker, broker.client_id if config.node.broker else "recognition")
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.parallel = max(1, config.asr.workers)
        self.recognised = 0  # transcripts the broker took
        self.failed = 0  # utterances whose audio could not be decoded or recognised (claimed again later, up to max_claims)
        self.refused = 0  # transcripts the broker refused (its ACL): claimed again once the lease ends
        self._store: CentralStore | None = None
        self._store_lock = threading.Lock()  # one connection, one thread at a time
        self._backoff = Backoff()

    async def run(self) -> None:
        self._store = await wait_for_database(lambda: CentralStore(self._url), self._backoff)
        logger.info("recognition worker %s: taking utterances held %.0f s without a transcript%s, %d at a time",
                    self.worker, self.rules.after_s,
                    f" (stations {', '.join(self.rules.stations)})" if self.rules.stations else "", self.parallel)  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.link.run(self._session), name="recognition-link")
                tasks.create_task(self._summaries(), name="recognition-summary")
        finally:
            self._store.close()

    async def _session(self, client: aiomqtt.Client) -> None:
        publisher = self.link.publisher(client)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(publisher.until_lost(), name="recognition-link-watch")
                for n in range(self.parallel):
                    tasks.create_task(self._work(publisher), name=f"recognition-{n}")
        except* aiomqtt.MqttError as lost:  # the link reconnects (NodeLink.run); what was claimed returns with its lease
            raise lost.exceptions[0] from None

    async def _work(self, publisher: Publisher) -> None:
        while True:
            job = await wait_for_database(self._claim, self._backoff, self._reconnect)
            if job is None:
                await asyncio.sleep(self.rules.poll_s)
                continue
            payload = await asyncio.to_thread(self._transcript_payload, job)
            if payload is None:
                continue
            try:
                await publisher.publish(self.topics.node(job.station, TRANSCRIPTS), payload)
            except aiomqtt.MqttError:  # the link is down: whoever looks next may take it at once
                await wait_for_database(functools.partial(self._release, job), self._backoff, self._reconnect)
                raise
            except Refused as e:  # its lease ends and it is claimed again, by this worker or another
                self.refused += 1
                logger.error("recognition worker: the broker refused the transcript of %s.%s (%s): may this login "
                             "publish on nodes/+/transcripts? (`jingbao broker add-node recognition`)",
                             clip(job.station), clip(job.utterance_id), e)  # fmt: skip
                continue
            self.recognised += 1

    def _claim(self) -> RecognitionJob | None:
        assert self._store is not None
        with self._store_lock:
            job = self._store.claim_for_recognition(self.worker, self.rules)
        if job is not None and job.claims >= self.rules.max_claims:
            logger.warning("recognition worker: %s.%s claimed for the last time (%d of %d): if no transcript comes of "
                           "it, it is given up", clip(job.station), clip(job.utterance_id), job.claims,
                           self.rules.max_claims)  # fmt: skip
        return job

    def _release(self, job: RecognitionJob) -> None:
        assert self._store is not None
        with self._store_lock:
            self._store.release_recognition(job, self.worker)

    def _reconnect(self) -> None:
        assert self._store is not None
        with self._store_lock:
            self._store.reconnect()

    def _transcript_payload(self, job: RecognitionJob) -> bytes | None:
        """(In a worker thread.) The transcript message of a claimed utterance, as its edge would send it; None when
        its audio cannot be decoded or recognised (logged; it is claimed again once its lease ends)."""
        try:
            pcm = _decode(job.audio, job.format)
            transcript = recognise(pcm, self.engines)
        except AudioDecodeError as e:
            self.failed += 1
            logger.error("recognition worker: %s.%s: %s", clip(job.station), clip(job.utterance_id), clip(str(e)))
            return None
        except Exception:  # an engine's failure on one utterance must not end the worker
            self.failed += 1
            logger.exception("recognition worker: %s.%s could not be recognised", clip(job.station), clip(job.utterance_id))
            return None
        row = {"utterance_id": job.utterance_id, "channel": job.channel, "start_ms": job.start_ms,
               "created_at": time.time()}  # fmt: skip
        return transcript_payload(job.station, row, transcript.to_dict(), dispatched_at_edge=job.dispatched_at_edge)

    async def _summaries(self) -> None:
        said = (0, 0, 0)
        while True:
            await asyncio.sleep(SUMMARY_EVERY_S)
            now = (self.recognised, self.failed, self.refused)
            if now != said:
                logger.info("recognition worker: %d transcripts sent, %d utterances failed, %d refused by the broker",
                            *now)  # fmt: skip
                said = now


def _decode(audio: bytes, fmt: str) -> bytes:
    """An archived utterance's file (opus, flac or wav) -> 16 kHz mono int16 PCM."""
    with tempfile.TemporaryDirectory(prefix="jingbao-asr-") as folder:
        path = Path(folder) / f"utterance.{fmt}"
        path.write_bytes(audio)
        return decode_file(path)


def run_recognition(config: Config) -> None:
    """`jingbao run --role recognition`: build the engines, then work until SIGINT, SIGTERM or SIGHUP."""
    from asr.worker import build_engines
    from dispatch.vocabulary import decoder_words, spotter_keywords

    keywords = spotter_keywords(config.jurisdiction, config.dispatch.lexicon)
    engines = build_engines(config.asr, keywords, decoder_words(config.dispatch.lexicon))
    if not engines:
        raise ConfigError("--role recognition has no speech recognition engine (asr.engine, `jingbao model fetch`)")
    node = RecognitionNode(config, engines)

    async def main() -> None:
        task = asyncio.create_task(node.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.info("recognition worker stopped: %d transcripts sent", node.recognised)

    asyncio.run(main())
