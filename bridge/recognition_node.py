"""`jingbao run --role recognition`: speech recognition for the central tier on machines of its own (issue 13).

An edge recognises what its channels hear as they hear it. When it cannot keep up (more talking channels than its
cores recognise, a burst) its utterances wait in its archive, while central already holds them with their audio and
no transcript; an edge may also leave recognition out altogether (`asr.engine: none`, a box too small for it). A
recognition worker takes such utterances from central's PostgreSQL, recognises each with the engines a box runs
(the same model, the spotter listening for its config's jurisdiction and lexicon), and publishes the transcript on the
station's topic as the edge would (`<prefix>/nodes/<station>/transcripts`, QoS 1, its login `jingbao broker add-node
recognition-<name>`, one per worker). Central stores and dispatches it as any other (bridge/central.py,
bridge/central_dispatch.py). Its version is the utterance's end on the edge's clock, older than any the edge makes
(an edge recognises after the end), so the edge's own, whenever it comes, replaces the stored text, and is not
dispatched again (`recognised_again`); the worker's coming after the edge's is a repeat. Its
`dispatched_at_edge` is the edge's (the utterance says whether its edge dispatches itself), so central never
dispatches what the edge will. What such a transcript cannot say is whether the edge's SOS desk would take it (an
emergency phrase): central reads it as a report, and the edge raises its SOS when it recognises it itself.

The queue is central's table itself (`RecognitionQueue`): a worker claims the newest utterance held `after_s` without
a transcript (the newest: a report is worth most while it is fresh) with `SELECT ... FOR UPDATE SKIP LOCKED` (two
workers never take the same one) and a lease (`lease_s`), all times on the database's clock (the workers' may
differ). A transcript the broker took holds its utterance `SENT_HOLD_S` more, while central stores it; one the worker
could not publish (its link down, refused) frees it at once, that claim not counted. A worker that dies mid-decode
(SIGKILL, its machine lost, a hung decoder) holds its claim until the lease ends, and the next worker to look takes
the utterance then; one claimed `max_claims` times with no transcript arriving (audio that kills the decoder, say)
is given up, logged. An older edge's utterances (they do not say whether it dispatches itself) are left to it.
Why not MQTT 5 shared subscriptions: the audio is in central's database already, so a job needs no copy of it on the
broker, and a table says what is waiting, who has it and for how long; and a broker keeps a QoS 1 message in flight
to a member whose session is merely away (a worker killed mid-decode) until that member comes back, where a lease
hands it on after `lease_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from asr.engine import Engine
from bridge.backoff import Backoff
from bridge.central import wait_for_database
from bridge.config import Config, ConfigError, RecognitionNodeConfig
from bridge.db import connect_postgres
from bridge.decode import AudioDecodeError, decode_file
from bridge.logsafe import clip
from bridge.nodes import NodeLink, Publisher, Refused, central_id, transcript_payload
from bridge.signals import until_signalled
from dispatch.from_audio import recognise
from dispatch.topics import TRANSCRIPTS, Topics

logger = logging.getLogger(__name__)

SENT_HOLD_S = 600.0  # a transcript the broker took holds its utterance this long while central stores it
REFUSED_PAUSE_S = 30.0  # after the broker refuses a transcript (its ACL, central not subscribed): try again then
SUMMARY_EVERY_S = 60.0  # a busy worker says what it has done this often, not once per utterance
_NOW = "COALESCE(%(now)s, extract(epoch FROM clock_timestamp()))"  # the database's clock, or a test's


@dataclass(frozen=True, slots=True)
class RecognitionJob:
    """An utterance central holds without a transcript, claimed by a recognition worker."""

    station: str
    utterance_id: str  # the edge's id
    channel: str  # the edge's channel id
    start_ms: int
    end_ms: int
    format: str  # the archive's: opus, flac or wav
    audio: bytes
    dispatched_at_edge: bool  # its edge dispatches what it hears: the transcript says so, as the edge's would
    claims: int  # this claim included

    @property
    def id(self) -> str:
        return central_id(self.station, self.utterance_id)


class RecognitionQueue:
    """Central's untranscribed utterances as a worker's queue, on a PostgreSQL connection of its own (used from one
    thread at a time). It migrates nothing: central owns the tables, and a worker needs only SELECT on them and
    UPDATE of the claim's columns (docs/deployment.md)."""

    def __init__(self, url: str, worker: str, rules: RecognitionNodeConfig) -> None:
        self._url = url
        self.worker = worker
        self.rules = rules
        self._conn = connect_postgres(url)

    def reconnect(self) -> None:
        self._conn.close()
        self._conn = connect_postgres(self._url)

    def claim(self, now: float | None = None) -> RecognitionJob | None:
        """The newest utterance (begun within `horizon_s`) held `after_s` or longer with its audio and no transcript,
        claimed for `lease_s`; None: no work. Another worker claiming at once skips the row this one has locked."""
        r = self.rules
        row = self._conn.execute(
            f"UPDATE node_utterances SET asr_worker = %(worker)s, asr_lease_until = {_NOW} + %(lease)s,"
            "   asr_claims = asr_claims + 1"
            " WHERE id = (SELECT u.id FROM node_utterances u"
            "   WHERE NOT u.transcribed AND u.audio IS NOT NULL AND u.dispatched_at_edge IS NOT NULL"
            f"    AND u.start_ms >= ({_NOW} - %(horizon)s) * 1000 AND u.received_at <= {_NOW} - %(after)s"
            f"    AND (u.asr_lease_until IS NULL OR u.asr_lease_until < {_NOW}) AND u.asr_claims < %(max_claims)s"
            "     AND (%(every_station)s OR u.station = ANY(%(stations)s))"
            "   ORDER BY u.start_ms DESC LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING station, utterance_id, channel, start_ms, end_ms, format, audio, dispatched_at_edge, asr_claims",
            {"worker": self.worker, "now": now, "lease": r.lease_s, "horizon": r.horizon_s, "after": r.after_s,
             "max_claims": r.max_claims, "every_station": not r.stations, "stations": r.stations},
        ).fetchone()  # fmt: skip
        if row is None:
            return None
        return RecognitionJob(row["station"], row["utterance_id"], row["channel"], row["start_ms"], row["end_ms"],
                              row["format"], bytes(row["audio"]), row["dispatched_at_edge"], row["asr_claims"])  # fmt: skip

    def sent(self, job: RecognitionJob, now: float | None = None) -> None:
        """The broker took its transcript: held `SENT_HOLD_S` while central stores it (then, if central never did,
        claimed again)."""
        self._conn.execute(f"UPDATE node_utterances SET asr_lease_until = {_NOW} + %(hold)s"
                           " WHERE id = %(id)s AND asr_worker = %(worker)s",
                           {"now": now, "hold": SENT_HOLD_S, "id": job.id, "worker": self.worker})  # fmt: skip

    def release(self, job: RecognitionJob) -> None:
        """This worker cannot finish `job` (its link is down, the broker refused it, it is stopping): free to claim
        again now, and that claim not counted against `max_claims`."""
        self._conn.execute("UPDATE node_utterances SET asr_lease_until = NULL, asr_claims = asr_claims - 1"
                           " WHERE id = %s AND asr_worker = %s AND asr_lease_until IS NOT NULL",
                           (job.id, self.worker))  # fmt: skip

    def close(self) -> None:
        self._conn.close()


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
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}"
        broker = config.node.broker or config.broker
        # its own client id: workers sharing a config must not take each other's session over (a broker set up by
        # `jingbao broker` takes the user name instead: one login per worker, `add-node recognition-<name>`)
        self.link = NodeLink(broker, f"recognition-{self.worker}")
        self.parallel = max(1, config.asr.workers)
        self.recognised = 0  # transcripts the broker took
        self.failed = 0  # utterances whose audio could not be decoded or recognised (claimed again later, up to max_claims)
        self.refused = 0  # transcripts the broker refused (its ACL): claimed again after REFUSED_PAUSE_S
        self._queue: RecognitionQueue | None = None
        self._queue_lock = threading.Lock()  # one connection, one thread at a time
        self._claimed: set[RecognitionJob] = set()  # claimed, not yet published or given back
        self._backoff = Backoff()

    async def run(self) -> None:
        self._queue = await wait_for_database(lambda: RecognitionQueue(self._url, self.worker, self.rules), self._backoff)
        logger.info("recognition worker %s: taking utterances held %.0f s without a transcript%s, %d at a time",
                    self.worker, self.rules.after_s,
                    f" (stations {', '.join(self.rules.stations)})" if self.rules.stations else "", self.parallel)  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.link.run(self._session), name="recognition-link")
                tasks.create_task(self._summaries(), name="recognition-summary")
        finally:
            await asyncio.to_thread(self._close)

    async def _session(self, client: aiomqtt.Client) -> None:
        publisher = self.link.publisher(client)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(publisher.until_lost(), name="recognition-link-watch")
                for n in range(self.parallel):
                    tasks.create_task(self._work(publisher), name=f"recognition-{n}")
        except* aiomqtt.MqttError as lost:  # the link reconnects (NodeLink.run); what it had claimed, it gives back
            await wait_for_database(self._give_back, self._backoff, self._reconnect)
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
            except Refused as e:
                self.refused += 1
                logger.error("recognition worker: the broker refused the transcript of %s (%s): may this login publish "
                             "on nodes/+/transcripts (`jingbao broker add-node recognition-<name>`), and is central "
                             "subscribed? Trying again in %.0f s", clip(job.id), e, REFUSED_PAUSE_S)  # fmt: skip
                await wait_for_database(functools.partial(self._give_back, job), self._backoff, self._reconnect)
                await asyncio.sleep(REFUSED_PAUSE_S)
                continue
            self.recognised += 1
            await wait_for_database(functools.partial(self._sent, job), self._backoff, self._reconnect)

    def _claim(self) -> RecognitionJob | None:
        assert self._queue is not None
        with self._queue_lock:
            job = self._queue.claim()
            if job is not None:
                self._claimed.add(job)
        if job is not None and job.claims >= self.rules.max_claims:
            logger.warning("recognition worker: %s claimed for the last time (%d of %d): if no transcript comes of it, "
                           "it is given up", clip(job.id), job.claims, self.rules.max_claims)  # fmt: skip
        return job

    def _sent(self, job: RecognitionJob) -> None:
        assert self._queue is not None
        with self._queue_lock:
            self._queue.sent(job)
            self._claimed.discard(job)

    def _give_back(self, job: RecognitionJob | None = None) -> None:
        """Release `job`, or (None) every claim this worker holds and has not published."""
        assert self._queue is not None
        with self._queue_lock:
            for claimed in [job] if job is not None else list(self._claimed):
                self._queue.release(claimed)
                self._claimed.discard(claimed)

    def _reconnect(self) -> None:
        assert self._queue is not None
        with self._queue_lock:
            self._queue.reconnect()

    def _close(self) -> None:
        """At a clean stop: what it holds goes back to the queue (a recognition still running in a thread finds the
        connection closed, its result dropped)."""
        assert self._queue is not None
        with contextlib.suppress(Exception):  # the database may be down: the leases end by themselves
            self._give_back()
        with self._queue_lock:
            self._queue.close()

    def _transcript_payload(self, job: RecognitionJob) -> bytes | None:
        """(In a worker thread.) The transcript message of a claimed utterance, as its edge would send it but for its
        version (the utterance's end: older than the edge's own); None when its audio cannot be decoded or
        recognised (logged; it is claimed again once its lease ends)."""
        try:
            pcm = _decode(job.audio, job.format)
            transcript = recognise(pcm, self.engines)
        except Exception as e:  # AudioDecodeError, or an engine's failure: one utterance must not end the worker
            self.failed += 1
            logger.error("recognition worker: %s could not be recognised: %s", clip(job.id), clip(str(e)),
                       exc_info=not isinstance(e, AudioDecodeError))  # fmt: skip
            with self._queue_lock:  # its claim counts, never given back: one that fails every time is given up
                self._claimed.discard(job)
            return None
        row = {"utterance_id": job.utterance_id, "channel": job.channel, "start_ms": job.start_ms,
               "created_at": job.end_ms / 1000}  # fmt: skip
        return transcript_payload(job.station, row, transcript.to_dict(), dispatched_at_edge=job.dispatched_at_edge,
                                  recognised_by=self.worker)  # fmt: skip

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
        await until_signalled(node.run())
        logger.info("recognition worker stopped: %d transcripts sent", node.recognised)

    asyncio.run(main())
