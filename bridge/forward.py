"""The edge's store-and-forward link (`jingbao run --role edge`): every archived utterance (its row and audio) and
every transcript goes to the central tier over MQTT, QoS 1, oldest first, and nothing is lost while the link is down.

What is still to send is a queue in the edge's own SQLite, `forward_queue`, filled by triggers on the archive's
`utterances` and `transcripts` tables: the row that queues an utterance commits in the archive's own transaction, so
no utterance can be accepted without being queued, whatever dies when. The forwarder publishes the oldest entries,
a window at a time, and deletes each once the broker has acknowledged it (PUBACK); a kill -9 between the two sends
it again, which central stores once (bridge/nodes.py: every message carries the ids that make a repeat harmless).
While the link is down the queue grows and the rest of the edge goes on as before; when it returns, the backlog goes
out oldest first. What an entry names is read when it is sent, so a transcript redone meanwhile goes out as its
latest version (and twice: central keeps the newer).

The queue's migration queues what the archive already holds, so a box that ran alone and becomes an edge sends its
history first. The triggers stay in the database: a box turned back into a single one (`--role all`) keeps queueing
(a row per utterance and transcript), and sends that when it is an edge again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from asr.store import TranscriptStore
from bridge.archive import COLUMNS, ArchivedUtterance
from bridge.archive import MIGRATIONS as ARCHIVE_MIGRATIONS
from bridge.backoff import Backoff
from bridge.config import Config, ConfigError
from bridge.db import connect, migrate
from bridge.logsafe import clip
from bridge.nodes import NodeLink, Publisher, Refused, transcript_payload, utterance_payload
from dispatch.topics import Topics

logger = logging.getLogger(__name__)

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # epoch seconds in SQLite 3.40 (no unixepoch('subsec'))
MIGRATIONS = [
    f"""
    CREATE TABLE forward_queue (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('utterances', 'transcripts')),
        utterance_id TEXT NOT NULL,
        queued_at REAL NOT NULL
    );
    CREATE TRIGGER forward_utterance AFTER INSERT ON utterances BEGIN
        INSERT INTO forward_queue (kind, utterance_id, queued_at) VALUES ('utterances', NEW.id, {_NOW});
    END;
    CREATE TRIGGER forward_transcript AFTER INSERT ON transcripts BEGIN
        INSERT INTO forward_queue (kind, utterance_id, queued_at) VALUES ('transcripts', NEW.utterance_id, {_NOW});
    END;
    CREATE TRIGGER forward_transcript_again AFTER UPDATE ON transcripts BEGIN
        INSERT INTO forward_queue (kind, utterance_id, queued_at) VALUES ('transcripts', NEW.utterance_id, {_NOW});
    END;
    INSERT INTO forward_queue (kind, utterance_id, queued_at)
        SELECT kind, id, {_NOW} FROM (
            SELECT 'utterances' AS kind, id, start_ms, seq AS n, 0 AS after FROM utterances
            UNION ALL SELECT 'transcripts', utterance_id, start_ms, 0, 1 FROM transcripts
        ) ORDER BY start_ms, after, n;
    """
]
# what a refusal means for whoever reads the log (MQTT 5 reason codes)
_REFUSALS = {
    0x10: "nobody subscribes yet: central has never connected to this broker (start it first)",
    0x87: "the broker's ACL forbids it: is node.broker's login node-<node.station>? (jingbao broker add-node)",
}
WINDOW = 32  # messages in flight at once: a link with 50 ms of round trip still sends ~600 a second


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    kind: str  # "utterances" | "transcripts": the topic's last level
    utterance_id: str


class ForwardQueue:
    """The durable queue of what central has not acknowledged yet (its own SQLite connection; used from one thread
    at a time: the forwarder's calls go through asyncio.to_thread one after the other)."""

    def __init__(self, database: Path, data_dir: Path) -> None:
        self._conn = connect(database)
        self._data_dir = data_dir
        # the tables the triggers watch, made here too when the archive or the recogniser has not made them yet
        migrate(self._conn, "archive", ARCHIVE_MIGRATIONS)
        self._transcripts = TranscriptStore(self._conn)
        migrate(self._conn, "forward", MIGRATIONS)

    def oldest(self, limit: int) -> list[Entry]:
        rows = self._conn.execute("SELECT seq, kind, utterance_id FROM forward_queue ORDER BY seq LIMIT ?", (limit,))
        return [Entry(r["seq"], r["kind"], r["utterance_id"]) for r in rows]

    def done(self, seqs: list[int]) -> None:
        with self._conn:
            self._conn.executemany("DELETE FROM forward_queue WHERE seq = ?", [(s,) for s in seqs])

    def waiting(self) -> tuple[int, float | None]:
        """How many entries wait, and since when the oldest has (epoch s; None when none waits)."""
        row = self._conn.execute("SELECT count(*) AS n, min(queued_at) AS oldest FROM forward_queue").fetchone()
        return row["n"], row["oldest"]

    def payload(self, station: str, entry: Entry) -> bytes | None:
        """The message for an entry, read now (None: its row is gone, e.g. a transcript deleted; nothing to send)."""
        if entry.kind == "utterances":
            row = self._conn.execute("SELECT * FROM utterances WHERE id = ?", (entry.utterance_id,)).fetchone()
            if row is None:
                return None
            utterance = ArchivedUtterance(**{c: row[c] for c in COLUMNS})
            try:
                audio, omitted = (self._data_dir / utterance.path).read_bytes(), ""
            except OSError as e:  # its file gone or unreadable: the row still goes, saying so (`archive verify` too)
                audio, omitted = None, f"the edge cannot read its file: {e.strerror}"
            return utterance_payload(station, utterance, audio, omitted)
        row = self._conn.execute(
            "SELECT utterance_id, channel, start_ms, created_at FROM transcripts WHERE utterance_id = ?",
            (entry.utterance_id,),
        ).fetchone()
        transcript = self._transcripts.get(entry.utterance_id)
        if row is None or transcript is None:
            return None
        return transcript_payload(station, dict(row), transcript.to_dict())

    def close(self) -> None:
        self._conn.close()


class Forwarder:
    """Publishes the queue to central, oldest first, for as long as it runs (`run()`, cancelled to stop)."""

    def __init__(self, config: Config, *, poll_s: float = 0.25) -> None:
        station = config.node.station
        if station is None:
            raise ConfigError("--role edge needs node.station: this station's id between nodes (docs/deployment.md)")
        self.station = station
        self.topics = Topics(config.broker.topic_prefix)
        broker = config.node.broker or config.broker
        self.link = NodeLink(broker, broker.client_id if config.node.broker else f"node-{station}")
        self.queue = ForwardQueue(config.storage.database, config.storage.data_dir)
        self._poll_s = poll_s
        self._refusals = Backoff(maximum=10.0)
        self.sent = 0  # messages the broker acknowledged
        self.skipped = 0  # entries whose row was gone when their turn came

    async def run(self) -> None:
        try:
            await self.link.run(self._send_all)
        finally:
            self.queue.close()

    async def _send_all(self, client: aiomqtt.Client) -> None:
        publisher = self.link.publisher(client)
        waiting, oldest = await asyncio.to_thread(self.queue.waiting)
        if oldest is not None:  # after an outage: how far behind central is
            logger.info("forwarding to central: %d message(s) waiting, the oldest queued %.0f s ago", waiting,
                        time.time() - oldest)  # fmt: skip
        while True:
            entries = await asyncio.to_thread(self.queue.oldest, WINDOW)
            if not entries:
                await asyncio.sleep(self._poll_s)  # the triggers cannot wake us; a read of an empty queue is cheap
                continue
            refused = await self._send_window(publisher, entries)
            if refused is None:
                self._refusals.reset()
                continue
            delay = self._refusals.next_delay()
            logger.log(logging.ERROR if refused.reason.is_failure else logging.WARNING,
                       "central has not taken what this edge sends (%s: %s); trying again in %.1f s", refused,
                       _REFUSALS.get(refused.reason.value, "see the broker's log"), delay)  # fmt: skip
            await asyncio.sleep(delay)

    async def _send_window(self, publisher: Publisher, entries: list[Entry]) -> Refused | None:
        """Publish `entries` at once and mark done those the broker took (and those with nothing to send); the rest
        stay queued. Returns the broker's refusal if it refused one; a lost connection raises, and the link
        reconnects."""
        payloads = await asyncio.to_thread(lambda: [self.queue.payload(self.station, e) for e in entries])
        sending = [(e, p) for e, p in zip(entries, payloads, strict=True) if p is not None]
        done = [e.seq for e, p in zip(entries, payloads, strict=True) if p is None]
        self.skipped += len(done)
        results = await asyncio.gather(
            *(publisher.publish(self.topics.node(self.station, e.kind), p) for e, p in sending), return_exceptions=True
        )
        taken = [e.seq for (e, _), r in zip(sending, results, strict=True) if r is None]
        self.sent += len(taken)
        await asyncio.to_thread(self.queue.done, done + taken)
        refusals = [r for r in results if isinstance(r, Refused)]
        lost = next((r for r in results if isinstance(r, BaseException) and not isinstance(r, Refused)), None)
        if lost is not None:
            raise lost if isinstance(lost, aiomqtt.MqttError) else aiomqtt.MqttError(f"publishing failed: {clip(repr(lost))}")
        return refusals[0] if refusals else None
