"""The central tier's ingest (`jingbao run --role central`): every station's utterances and transcripts, as the edges
forward them (bridge/forward.py), stored in PostgreSQL (`storage.database_url`) and indexed for one search over all
stations (bridge/web/search_pg.PostgresSearchIndex).

Central subscribes to <prefix>/nodes/+/utterances and .../transcripts with QoS 1 on a persistent MQTT 5 session, so
the broker keeps what arrives while central is away; and to the live .../partials (when it dispatches) and
.../channels (for its console) with QoS 0: the broker keeps none of those for later, when they mean nothing. The
messages that have arrived together (STORE_BATCH at most) are stored in one transaction, one durable commit for all:
a busy central's rate is not one commit per message (a message PostgreSQL refuses makes its batch go in one message
at a time, the others stored). A message is acknowledged (PUBACK) only once it is committed: if PostgreSQL is down,
central waits for it holding that message (retried with back-off, nothing acknowledged meanwhile), and a crash before
the commit leaves the message with the broker, which sends it again.

Repeats are stored once: an utterance is keyed by its station and id (`INSERT ... ON CONFLICT DO NOTHING`), a
transcript replaces the stored one only when its version is newer. A station's ids are qualified with it
(bridge.nodes.central_id: `<station>.<id>`, channels too), since two stations' ids can coincide. A payload that is
not a node message this version can store (bad JSON, a field of the wrong type, audio not matching its sha256, a
station publishing under another's topic, text PostgreSQL refuses) is a counted rejection, logged clipped and
acknowledged, so it is not sent again; it never stops the ingest.

End to end, central also tells each edge what it holds: once a message is committed (or was already stored, or is
refused for good), the queue entry it names goes into a batch for its station, published QoS 1 on
<prefix>/nodes/<station>/stored (bridge/nodes.py's StoredMessage) every ACK_BATCH entries or ACK_DELAY_S. The edge
forgets an entry only then (bridge/forward.py), so what a broker loses (killed before it saved its queue, or its
queue for central overflowing) is sent again by the edge. An acknowledgement lost on the way costs only a resend,
stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import aiomqtt

from asr.store import transcript_of_row
from bridge.backoff import Backoff
from bridge.bus import EventBus
from bridge.config import Config, ConfigError, StorageConfig
from bridge.db import Migration, connect, connect_postgres, migrate
from bridge.logsafe import clip
from bridge.nodes import VERSION as NODE_VERSION
from bridge.nodes import (
    Acked,
    ChannelMessage,
    NodeLink,
    NodeMessage,
    NodeMessageError,
    PartialMessage,
    Publisher,
    Refused,
    TranscriptMessage,
    UtteranceMessage,
    ack,
    central_id,
    entry_of,
    parse,
    stored_payload,
    valid_station,
)
from bridge.signals import until_signalled
from bridge.web.server import HttpServer, bind, close, http_server
from dispatch.incidents import CLOSED
from dispatch.topics import CHANNELS, NODE_KINDS, PARTIALS, NodeTopic, Topics

if TYPE_CHECKING:
    from bridge.central_dispatch import CentralDispatch
    from bridge.central_health import CentralHealth
    from bridge.region import Region
    from bridge.web.search_pg import PostgresSearchIndex

logger = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS = [
    Migration(
        sqlite="",  # the central tier runs on PostgreSQL only
        postgres="""
        CREATE TABLE node_utterances (
            id TEXT PRIMARY KEY,            -- <station>.<the edge's utterance id>
            station TEXT NOT NULL,
            utterance_id TEXT NOT NULL,
            channel TEXT NOT NULL,          -- the edge's channel id
            seq BIGINT NOT NULL,            -- the edge archive's row, hash chain included, as the edge stored it
            start_ms BIGINT NOT NULL,
            end_ms BIGINT NOT NULL,
            duration_ms BIGINT NOT NULL,
            path TEXT NOT NULL,
            format TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            peak_dbfs DOUBLE PRECISION NOT NULL,
            rms_dbfs DOUBLE PRECISION NOT NULL,
            end_reason TEXT NOT NULL,
            fault TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            prev_hash TEXT NOT NULL,
            row_hash TEXT NOT NULL,
            audio BYTEA,                    -- NULL when it did not come (audio_omitted says why)
            audio_omitted TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX node_utterances_station_seq ON node_utterances (station, seq);
        CREATE INDEX node_utterances_start ON node_utterances (start_ms);
        """,
    ),
    # the recent transcripts, oldest first, which the dispatcher reads again at start (CentralStore.transcripts_since)
    Migration(sqlite="", postgres="CREATE INDEX transcripts_start ON transcripts (start_ms);"),
    # the edge's SOS desk took it (TranscriptMessage.sos): the dispatcher leaves it alone, at start too
    Migration(sqlite="", postgres="ALTER TABLE transcripts ADD COLUMN sos BOOLEAN NOT NULL DEFAULT false;"),
    # its edge dispatched it (TranscriptMessage.dispatched_at_edge): the dispatcher leaves it alone, at start too
    Migration(sqlite="", postgres="ALTER TABLE transcripts ADD COLUMN dispatched_at_edge BOOLEAN NOT NULL DEFAULT false;"),
    # the recognition role's queue (bridge/recognition_node.py): whether the utterance's edge dispatches itself (NULL
    # from an older edge), whether central holds a transcript of it (kept by the ingest: the queue's index covers the
    # untranscribed ones only), and the claim on it of the worker recognising it, until when, how many claims so far
    Migration(sqlite="", postgres="""
        ALTER TABLE node_utterances ADD COLUMN dispatched_at_edge BOOLEAN;
        ALTER TABLE node_utterances ADD COLUMN transcribed BOOLEAN NOT NULL DEFAULT false;
        UPDATE node_utterances u SET transcribed = true WHERE EXISTS (SELECT 1 FROM transcripts t WHERE t.utterance_id = u.id);
        CREATE INDEX node_utterances_untranscribed ON node_utterances (start_ms) WHERE NOT transcribed AND audio IS NOT NULL;
        ALTER TABLE node_utterances ADD COLUMN asr_worker TEXT;
        ALTER TABLE node_utterances ADD COLUMN asr_lease_until DOUBLE PRECISION;
        ALTER TABLE node_utterances ADD COLUMN asr_claims INTEGER NOT NULL DEFAULT 0;
        """),
]
CHANNEL_STATE_MAX_AGE_S = 5.0  # an edge's channel keyed up or down longer ago is not shown: it says nothing now
STORE_BATCH = 64  # messages that arrived together stored in one transaction at most (one durable commit for all)
ACK_BATCH = 32  # entries acknowledged to an edge in one message at most...
ACK_DELAY_S = 0.5  # ...and at the latest this long after the first of them was stored
RECOGNISED_KEPT = 10_000  # workers' transcripts waiting to be passed on to their edges; the oldest dropped beyond
# the edge's archive row as central stores it, besides its id and channel (bridge/central_archive.py walks its chain)
UTTERANCE_COLUMNS = ("seq", "start_ms", "end_ms", "duration_ms", "path", "format", "sha256", "peak_dbfs", "rms_dbfs",
                     "end_reason", "fault", "created_at", "prev_hash", "row_hash")  # fmt: skip


class CentralStore:
    """The central tier's tables on one PostgreSQL connection (used from one thread at a time)."""

    def __init__(self, url: str) -> None:
        from bridge.web.search_pg import PostgresSearchIndex

        self._url = url
        self._conn = connect_postgres(url)
        PostgresSearchIndex(self._conn)  # migrates the transcripts table and its search index (central's index it)
        migrate(self._conn, "central", MIGRATIONS)

    def reconnect(self) -> None:
        self._conn.close()
        self._conn = connect_postgres(self._url)

    def store_all(self, messages: list[UtteranceMessage | TranscriptMessage]) -> list[bool]:
        """Store the messages in one transaction (one durable commit; all or none), each one's `store` outcome."""
        with self._conn.transaction():
            return [self.store(message) for message in messages]

    def store(self, message: UtteranceMessage | TranscriptMessage) -> bool:
        """Store one message; False when it was a repeat (or an older transcript version) and nothing changed."""
        if isinstance(message, UtteranceMessage):
            return self._store_utterance(message)
        return self._store_transcript(message)

    def _store_utterance(self, m: UtteranceMessage) -> bool:
        row = m.utterance
        uid = central_id(m.station, row.id)
        values = [uid, m.station, row.id, row.channel, *(getattr(row, c) for c in UTTERANCE_COLUMNS), m.audio_bytes(),
                  m.audio_omitted, time.time(), m.dispatched_at_edge, uid]  # fmt: skip
        columns = ("id", "station", "utterance_id", "channel", *UTTERANCE_COLUMNS, "audio", "audio_omitted", "received_at",
                   "dispatched_at_edge")  # fmt: skip
        cur = self._conn.execute(  # (its transcript may have come first: a resend overtaking the original)
            f"INSERT INTO node_utterances ({', '.join(columns)}, transcribed) VALUES ({', '.join(['%s'] * len(columns))},"
            " EXISTS (SELECT 1 FROM transcripts WHERE utterance_id = %s)) ON CONFLICT (id) DO NOTHING",
            values,
        )  # fmt: skip
        return cur.rowcount == 1

    def _store_transcript(self, m: TranscriptMessage) -> bool:
        t = m.transcript.to_dict()
        cur = self._conn.execute(
            "INSERT INTO transcripts (utterance_id, channel, start_ms, engine, text, pinyin, words, keywords, conf,"
            " created_at, readable, alternatives, sos, dispatched_at_edge)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (utterance_id) DO UPDATE SET engine = excluded.engine, text = excluded.text,"
            " pinyin = excluded.pinyin, words = excluded.words, keywords = excluded.keywords, conf = excluded.conf,"
            " created_at = excluded.created_at, readable = excluded.readable, alternatives = excluded.alternatives,"
            " sos = excluded.sos, dispatched_at_edge = excluded.dispatched_at_edge"
            " WHERE transcripts.created_at < excluded.created_at",  # only a newer version replaces it
            (central_id(m.station, m.utterance_id), central_id(m.station, m.channel), m.start_ms, t["engine"], t["text"],
             t["pinyin"], json.dumps(t["words"], ensure_ascii=False), json.dumps(t["keywords"], ensure_ascii=False),
             t["conf"], m.version, t["readable"], json.dumps(t["alternatives"], ensure_ascii=False), m.sos,
             m.dispatched_at_edge),
        )  # fmt: skip
        if cur.rowcount == 1:
            self._conn.execute("UPDATE node_utterances SET transcribed = true WHERE id = %s AND NOT transcribed",
                               (central_id(m.station, m.utterance_id),))  # fmt: skip
        return cur.rowcount == 1

    def transcripts_since(self, start_ms: int) -> list[TranscriptMessage]:
        """The transcripts of utterances begun at `start_ms` or later, oldest first, each as the message that brought
        the version stored (the newest): what central's dispatcher reads again at start (bridge/central_dispatch.py)."""
        rows = self._conn.execute(
            "SELECT * FROM transcripts WHERE start_ms >= %s ORDER BY start_ms, utterance_id", (start_ms,)
        ).fetchall()
        return [_transcript_message(row) for row in rows]

    def close(self) -> None:
        self._conn.close()


def _transcript_message(row: dict[str, Any]) -> TranscriptMessage:
    """A transcripts row as the message it was stored from (central's ids unqualified again; no queue entry)."""
    station, utterance_id = row["utterance_id"].split(".", 1)  # a station id has no "." (bridge.config.STATION_ID)
    channel = row["channel"].split(".", 1)[1]
    return TranscriptMessage(v=NODE_VERSION, station=station, utterance_id=utterance_id, channel=channel,
                             start_ms=row["start_ms"], version=row["created_at"], transcript=transcript_of_row(row),
                             sos=row["sos"], dispatched_at_edge=row["dispatched_at_edge"])  # fmt: skip


def _kind(message: UtteranceMessage | TranscriptMessage) -> str:
    return "utterances" if isinstance(message, UtteranceMessage) else "transcripts"  # its topic's (NODE_KINDS)


def _utterance_id(message: UtteranceMessage | TranscriptMessage) -> str:
    return message.utterance.id if isinstance(message, UtteranceMessage) else message.utterance_id


def _live_event(message: UtteranceMessage | TranscriptMessage) -> tuple[str, dict[str, Any]]:
    """The bus event of a message stored, shaped as a box's channel and recogniser publish theirs."""
    if isinstance(message, UtteranceMessage):
        row, station = message.utterance, message.station
        return "utterance", {"channel": central_id(station, row.channel), "id": central_id(station, row.id),
                             "start": row.start_ms / 1000, "end": row.end_ms / 1000,
                             "duration": row.duration_ms / 1000, "reason": row.end_reason}  # fmt: skip
    station = message.station
    return "transcript", {"channel": central_id(station, message.channel), "start": message.start_ms / 1000,
                          "utterance_id": central_id(station, message.utterance_id), **message.transcript.to_dict()}  # fmt: skip


class CentralIngest:
    """Subscribes to every station's node topics and stores what comes (`run()` until cancelled)."""

    def __init__(
        self, config: Config, *, backoff: Backoff | None = None,
        on_transcript: Callable[[TranscriptMessage], None] | None = None, bus: EventBus | None = None,
        on_partial: Callable[[PartialMessage], None] | None = None,
    ) -> None:  # fmt: skip
        """`on_transcript`: told of each transcript once committed, when it was new (or a newer version), never of a
        repeat: central's dispatcher (bridge/central_dispatch.py) takes it from there. `bus`: each utterance and
        transcript committed as new is published on it ("utterance", "transcript"), and each channel an edge says
        keyed up or down ("channel": id and talking), named as central names them, as a box's channels publish
        theirs: the operators' console shows them live (bridge/web/central_console.py).
        `on_partial`: told of each partial transcript an edge sends (subscribed with QoS 0, never stored): central's
        provisional alerts."""
        url = config.storage.database_url
        if url is None:
            raise ConfigError("--role central needs storage.database_url: the PostgreSQL store (docs/deployment.md)")
        self.topics = Topics(config.broker.topic_prefix)
        broker = config.node.broker or config.broker
        self.link = NodeLink(broker, broker.client_id if config.node.broker else "central")
        self._url = url
        self._backoff = backoff or Backoff()
        self._on_transcript = on_transcript
        self._on_partial = on_partial
        self._bus = bus
        self.store: CentralStore | None = None
        self.search: PostgresSearchIndex | None = None  # its own connection: its transactions are not the store's
        self.stored: Counter[str] = Counter()  # per kind ("utterances", "transcripts"): rows written
        self.repeats: Counter[str] = Counter()  # per kind: messages already stored (or an older transcript)
        self.rejected: Counter[str] = Counter()  # per station ("?" for an unusable topic)
        self.acks_sent = 0  # acknowledgement messages the broker took
        self.commits = 0  # transactions that stored messages (those that arrived together go in one)
        # how far behind it is: of the latest message stored, when, and how long after its utterance began
        self.last_stored_at: float | None = None
        self.stored_lag_s: float | None = None
        self._acks: dict[str, list[Acked]] = {}  # per station: entries stored and not acknowledged to it yet
        self._acks_due = asyncio.Event()  # a batch is full: send now rather than at the next ACK_DELAY_S
        # a recognition worker's transcripts stored, to pass on to their edges (station, payload), sent with the acks
        self._recognised: deque[tuple[str, bytes]] = deque(maxlen=RECOGNISED_KEPT)
        self._index_wanted = asyncio.Event()
        self.subscribed = asyncio.Event()  # set once the broker keeps a session for central: from then on nothing is missed
        self.migrated = asyncio.Event()  # set once the tables exist: from then on the web app can read them

    async def run(self) -> None:
        self.store = await self._wait_for_database(lambda: CentralStore(self._url))
        self.migrated.set()
        self._index_wanted.set()  # whatever the last run stored and had not indexed yet
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._index_loop(), name="central-index")
                tasks.create_task(self.link.run(self._receive, manual_ack=True), name="central-ingest")
        finally:
            self.store.close()

    async def _receive(self, client: aiomqtt.Client) -> None:
        for topic in self.topics.node_subscriptions:
            await client.subscribe(topic, qos=1)
        # QoS 0: the broker keeps none for later, when they mean nothing
        if self._on_partial is not None:
            await client.subscribe(self.topics.node_live(PARTIALS), qos=0)
        if self._bus is not None:
            await client.subscribe(self.topics.node_live(CHANNELS), qos=0)
        self.subscribed.set()
        sender = asyncio.create_task(self._send_acks(self.link.publisher(client)), name="central-acks")
        try:
            async for message in client.messages:
                # with it, whatever else has arrived meanwhile: stored in one transaction, one durable commit
                received = [message]
                while len(received) < STORE_BATCH and len(client.messages) > 0:
                    received.append(await anext(client.messages))
                await self._take([(str(m.topic), m.payload if isinstance(m.payload, bytes) else b"") for m in received])
                for m in received:
                    ack(client, m)
                if sender.done():  # it failed: the connection is lost (or worse), which it raises
                    sender.result()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await sender

    async def _take(self, received: list[tuple[str, bytes]]) -> None:
        """Store the received messages (topic, payload) in one transaction, waiting for PostgreSQL as long as it takes,
        or count a message's rejection; either way the entry each names is acknowledged to its edge."""
        messages: list[UtteranceMessage | TranscriptMessage] = []
        for topic, payload in received:
            message = self._parsed(topic, payload)
            if isinstance(message, PartialMessage):
                if self._on_partial is not None:
                    self._on_partial(message)
            elif isinstance(message, ChannelMessage):
                # as a box's channel says it: the console lights the channel up (unless it is old news, held up behind
                # PostgreSQL, say)
                if self._bus is not None and time.time() - message.at_ms / 1000 < CHANNEL_STATE_MAX_AGE_S:
                    self._bus.publish("channel", {"id": central_id(message.station, message.channel),
                                                  "talking": message.talking})  # fmt: skip
            elif message is not None:
                messages.append(message)
        if messages:
            await self._store_all(messages)

    def _parsed(self, topic: str, payload: bytes) -> NodeMessage | None:
        """The message, or None when it is rejected (counted, logged, and its entry acknowledged as such)."""
        parsed = self.topics.parse(topic)
        if not isinstance(parsed, NodeTopic) or not valid_station(parsed.station):  # counted apart: "?"
            self._reject("?", f"a message on {topic}, not a node topic")
            return None
        try:
            message = parse(parsed.kind, parsed.station, payload)
            assert isinstance(message, NodeMessage)  # not a StoredTopic
        except NodeMessageError as e:
            # a station's own topic (the broker's ACL vouches for it): tell its edge, so it does not resend it forever
            if parsed.kind in NODE_KINDS:  # a live message (partials, channels) names no entry: nothing to tell
                self._acknowledge(parsed.station, parsed.kind, entry_of(payload), "", "rejected")
            self._reject(parsed.station, f"{parsed.kind}: {e}")
            return None
        return message

    async def _store_all(self, messages: list[UtteranceMessage | TranscriptMessage]) -> None:
        import psycopg

        try:
            outcomes = await self._wait_for_database(lambda: self._store(messages), self._reconnect_store)
        except (psycopg.DataError, psycopg.IntegrityError) as e:  # e.g. a NUL in a text, a number out of range
            if len(messages) > 1:  # one of them can never go in: each in a transaction of its own, the others stored
                for message in messages:
                    await self._store_all([message])
                return
            message = messages[0]
            self._acknowledge(message.station, _kind(message), message.entry, _utterance_id(message), "rejected")
            return self._reject(message.station, f"{_kind(message)}: PostgreSQL refused it: {e}")
        self.commits += 1
        for message, stored in zip(messages, outcomes, strict=True):
            self._took(message, stored)

    def _took(self, message: UtteranceMessage | TranscriptMessage, stored: bool) -> None:
        """After the commit: count it, acknowledge it to its edge and, when new, show and dispatch it."""
        kind = _kind(message)
        (self.stored if stored else self.repeats)[kind] += 1
        if stored:
            start_ms = message.utterance.start_ms if isinstance(message, UtteranceMessage) else message.start_ms
            self.last_stored_at = time.time()
            self.stored_lag_s = self.last_stored_at - start_ms / 1000
        self._acknowledge(message.station, kind, message.entry, _utterance_id(message), "stored" if stored else "repeat")
        if stored and self._bus is not None:
            self._bus.publish(*_live_event(message))
        if isinstance(message, TranscriptMessage) and stored:
            self._index_wanted.set()
            if message.recognised_by:  # its edge need not recognise it too (bridge/forward.py takes it)
                self._recognised.append((message.station, message.model_dump_json().encode()))
            if self._on_transcript is not None:
                self._on_transcript(message)

    def _acknowledge(self, station: str, kind: str, entry: int | None, utterance_id: str, outcome: str) -> None:
        """Batch the acknowledgement of one entry to `station`'s edge (a message naming no entry has no edge waiting
        for it: an edge from before end-to-end acks, or a hand-made one)."""
        if entry is None:
            return
        batch = self._acks.setdefault(station, [])
        batch.append(Acked(entry=entry, kind=kind, utterance_id=utterance_id, outcome=outcome))
        if len(batch) >= ACK_BATCH:
            self._acks_due.set()

    async def _send_acks(self, publisher: Publisher) -> None:
        """Publish the batched acknowledgements, each station's in one message, every ACK_DELAY_S or as soon as a
        batch is full. Raises aiomqtt.MqttError when the connection is lost; what it held is acknowledged again
        when its edge resends it."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acks_due.wait(), ACK_DELAY_S)
            self._acks_due.clear()
            batches, self._acks = self._acks, {}
            for station, entries in batches.items():
                for start in range(0, len(entries), ACK_BATCH):
                    payload = stored_payload(station, entries[start : start + ACK_BATCH])
                    try:
                        await publisher.publish(self.topics.node_stored(station), payload)
                        self.acks_sent += 1
                    except Refused as e:  # no edge subscribed (yet), or the ACL: it resends, and is acknowledged then
                        level = logging.ERROR if e.reason.is_failure else logging.DEBUG
                        logger.log(level, "acknowledgement to %s not taken: %s", station, e)
            while self._recognised:  # best effort: an edge not told recognises the utterance itself, as before
                batch = [self._recognised.popleft() for _ in range(min(ACK_BATCH, len(self._recognised)))]
                outcomes = await asyncio.gather(*(publisher.publish(self.topics.node_recognised(station), payload)
                                                  for station, payload in batch), return_exceptions=True)  # fmt: skip
                for (station, _), outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, BaseException) and not isinstance(outcome, Refused):
                        raise outcome  # the connection is lost: what was not passed on is recognised at its edge
                    if isinstance(outcome, Refused) and outcome.reason.is_failure:  # (no subscriber: an older edge)
                        logger.error("a recognised transcript for %s not taken: %s (regenerate the broker's ACL: "
                                     "jingbao broker setup)", station, outcome)  # fmt: skip

    def _store(self, messages: list[UtteranceMessage | TranscriptMessage]) -> list[bool]:
        assert self.store is not None
        return self.store.store_all(messages)

    def _reconnect_store(self) -> None:
        assert self.store is not None
        self.store.reconnect()

    def _index(self) -> int:
        """Index the transcripts stored since the last call (connecting first when the last connection was lost)."""
        from bridge.web.search_pg import PostgresSearchIndex

        if self.search is None:
            self.search = PostgresSearchIndex(connect_postgres(self._url))
        return self.search.sync()

    def _forget_search(self) -> None:
        self.search = None  # a lost connection: the next _index() opens a new one

    async def _index_loop(self) -> None:
        while True:
            await self._index_wanted.wait()
            self._index_wanted.clear()
            await self._wait_for_database(self._index, self._forget_search)

    async def _wait_for_database(self, work: Callable[[], T], reconnect: Callable[[], None] | None = None) -> T:
        """(wait_for_database:) a message is not acknowledged until it is stored, so nothing accepted is lost to a
        fault on this side."""
        return await wait_for_database(work, self._backoff, reconnect)

    def _reject(self, station: str, reason: str) -> None:
        self.rejected[station] += 1
        logger.warning("node message rejected (%d from %s so far): %s", self.rejected[station], clip(station), clip(reason))


async def wait_for_database(work: Callable[[], T], backoff: Backoff, reconnect: Callable[[], None] | None = None) -> T:
    """`work` in a thread, again and again with back-off while PostgreSQL cannot take it (`reconnect` after each
    failure: a connection that failed once stays broken). Only a DataError or IntegrityError (what `work` holds can
    never go in) is raised; whatever else fails is logged and retried, as long as it takes."""
    import psycopg

    while True:
        try:
            result = await asyncio.to_thread(work)
            backoff.reset()
            return result
        except (psycopg.DataError, psycopg.IntegrityError):
            raise
        except psycopg.Error as e:
            delay = backoff.next_delay()
            level = logging.WARNING if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError) else logging.ERROR
            logger.log(level, "PostgreSQL cannot take it (%s: %s); trying again in %.1f s", type(e).__name__,
                       clip(str(e)), delay)  # fmt: skip
            await asyncio.sleep(delay)
            if reconnect is not None:
                with contextlib.suppress(psycopg.Error):
                    await asyncio.to_thread(reconnect)


def run_central(config: Config, region: Region | None = None) -> int:
    """`jingbao run --role central`: the ingest, the dispatcher over the region's stations (when any names a
    jurisdiction file: bridge/central_dispatch.py), and once the ingest's tables exist the web app over them (search,
    replay, audit: bridge/web/central_app.py), until SIGINT, SIGTERM or SIGHUP; first the lease, when the other central
    of a pair holds it. Returns the exit status: 0, or LEASE_LOST_EXIT (bridge/central_lease.py)."""
    from bridge.central_dispatch import CentralDispatch, central_area
    from bridge.central_health import CentralHealth, DatabaseProbe
    from bridge.central_lease import LEASE_LOST_EXIT, CentralLease, LeaseLost

    url = config.storage.database_url
    if url is None:
        raise ConfigError("--role central needs storage.database_url: the PostgreSQL store (docs/deployment.md)")
    refuse_sqlite_state(config.storage)
    area = central_area(region)  # before the lease: the standby of a pair takes over with its place indexes built
    lease = CentralLease(url)  # one central of a pair runs, the other stands by (bridge/central_lease.py)
    lost: list[LeaseLost] = []

    async def serve() -> None:
        await lease.acquire()
        try:
            await run(lease)
        finally:
            lease.release()

    async def run(lease: CentralLease) -> None:
        sockets = bind(config.web)  # a port taken: ConfigError now, before anything runs, not from the task group
        try:
            await serve_on(lease, sockets)
        finally:
            close(sockets)  # never served, if central stopped first; uvicorn closed them otherwise

    async def serve_on(lease: CentralLease, sockets: list[socket.socket]) -> None:
        # built on the loop (its MQTT client needs it) before anything else runs there, as a box builds its dispatcher
        bus = EventBus()  # what the operators' console shows live: the ingest's utterances and transcripts, incidents
        dispatch = CentralDispatch(config, region, area, bus) if area is not None and region is not None else None
        reads_partials = dispatch is not None and config.dispatch.provisional
        ingest = CentralIngest(config, on_transcript=dispatch.submit if dispatch is not None else None, bus=bus,
                               on_partial=dispatch.submit_partial if reads_partials else None)  # fmt: skip
        health = CentralHealth(ingest, dispatch, DatabaseProbe(url), lease)
        # LeaseLost stops everything, the dispatcher without draining its outbox: the other central sends it now
        on_lost = dispatch.service.forgo_drain if dispatch is not None else None
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(lease.hold(on_lost), name="central-lease")
            tasks.create_task(ingest.run(), name="central")
            tasks.create_task(health.database.run(), name="central-database-probe")
            if dispatch is not None:
                tasks.create_task(dispatch.run(), name="central-dispatch")
            await ingest.migrated.wait()
            server = await asyncio.to_thread(_http_server, config, region, health, dispatch, bus, sockets)
            tasks.create_task(server.serve(), name="central-http")
            logger.info("central serves search and replay on http://%s:%d", config.web.host, config.web.port)

    async def main() -> None:
        try:
            await until_signalled(serve())
        except* LeaseLost as group:
            lost.extend(e for e in group.exceptions if isinstance(e, LeaseLost))
        logger.info("central ingest stopped")

    asyncio.run(main())
    if lost:
        logger.error("central stopped: %s", lost[0])
        return LEASE_LOST_EXIT
    return 0


def refuse_sqlite_state(storage: StorageConfig) -> None:
    """ConfigError when `storage.database` (data_dir's SQLite) holds the state central kept there before it moved to
    PostgreSQL: started beside it, central would drop its users, open incidents and waiting alerts without a word,
    and read the last minutes' transcripts back as never dispatched (alerting them again)."""
    if not storage.database.exists():
        return
    held = {}
    closed = tuple(map(str, CLOSED))
    counts = {"users": ("SELECT count(*) FROM users", ()),
              "open incidents": (f"SELECT count(*) FROM incidents WHERE status NOT IN ({', '.join('?' * len(closed))})",
                                 closed),
              "alerts not sent": ("SELECT count(*) FROM outbox WHERE delivered_at IS NULL", ())}  # fmt: skip
    try:
        with contextlib.closing(connect(storage.database, readonly=True)) as conn:
            for what, (query, params) in counts.items():
                with contextlib.suppress(sqlite3.OperationalError):  # no such table: nothing of it kept there
                    if n := conn.execute(query, params).fetchone()[0]:
                        held[what] = n
    except sqlite3.DatabaseError as e:  # not a database: nothing central can read there, nor should it guess
        raise ConfigError(f"{storage.database}: {e}; central's state is in PostgreSQL: move the file away") from e
    if held:
        raise ConfigError(
            f"{storage.database} holds central's state from before it moved to PostgreSQL "
            f"({', '.join(f'{n} {t}' for t, n in held.items())}), which is not carried over: add the users again "
            "(jingbao user add ... --config <this config>: they go to PostgreSQL now), settle what is open, then move "
            "the file away and start central again (docs/deployment.md, \"A central pair\")")


def _http_server(
    config: Config, region: Region | None, health: CentralHealth, dispatch: CentralDispatch | None, bus: EventBus,
    sockets: list[socket.socket],
) -> HttpServer:  # fmt: skip
    """(In a worker thread: building the app opens its stores.) As a box's (bridge/web/server.py)."""
    from bridge.web.central_app import create_central_app

    return http_server(create_central_app(config, region, health, dispatch.service if dispatch is not None else None,
                                          bus), sockets)  # fmt: skip
