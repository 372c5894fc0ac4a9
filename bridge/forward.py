"""The edge's store-and-forward link (`jingbao run --role edge`): every archived utterance (its row and audio) and
every transcript goes to the central tier over MQTT, QoS 1, oldest first, and nothing is lost while the link is down.

What is still to send is a queue in the edge's own SQLite, `forward_queue`, filled by triggers on the archive's
`utterances` and `transcripts` tables: the row that queues an utterance commits in the archive's own transaction, so
no utterance can be accepted without being queued, whatever dies when. The forwarder publishes the oldest entries,
a window at a time, each naming its entry; the broker's PUBACK only marks an entry sent (`sent_at`). The entry is
deleted when central says it has committed it (or held it already, or refused it for good): its acknowledgement on
<prefix>/nodes/<station>/stored, which the edge reads on its persistent session. An entry sent and not acknowledged
within `ack_timeout_s` is sent again, oldest first, so what a broker loses after its PUBACK (killed before it saved
its queue, its queue for central overflowing `max_queued_messages`) still arrives; central stores a repeat once
(bridge/nodes.py: every message carries the ids that make a repeat harmless). At most MAX_UNACKED entries are out
unacknowledged at once besides the resends, so an edge whose central is away does not pour its whole backlog into
the broker's queue again and again. While the link is down the queue grows and the rest of the edge goes on as
before; when it returns, the backlog goes out oldest first. What an entry names is read when it is sent, so a
transcript redone meanwhile goes out as its latest version (and twice: central keeps the newer).

How far behind the forwarding is (entries queued, sent and unacknowledged, the oldest entry's age, the last
acknowledgement, resends) is `Forwarder.backlog`, refreshed every second whether or not the link is up, shown by
/healthz and /metrics; the oldest entry older than `behind_after_s` is the fault "forwarding behind" (/healthz 503)
until it is acknowledged.

The queue's migration queues what the archive already holds, so a box that ran alone and becomes an edge sends its
history first. The triggers stay in the database: a box turned back into a single one (`--role all`) keeps queueing
(a row per utterance and transcript), and sends that when it is an edge again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from asr.live import RecognisedUtterance
from asr.store import TranscriptStore
from asr.transcript import Transcript
from bridge.archive import COLUMNS, ArchivedUtterance
from bridge.archive import MIGRATIONS as ARCHIVE_MIGRATIONS
from bridge.backoff import Backoff
from bridge.bus import Subscription
from bridge.config import Config, ConfigError
from bridge.db import connect, migrate
from bridge.logsafe import clip
from bridge.nodes import (
    NodeLink,
    NodeMessageError,
    Publisher,
    Refused,
    StoredMessage,
    TranscriptMessage,
    channel_payload,
    parse,
    partial_payload,
    transcript_payload,
    utterance_payload,
)
from dispatch.topics import CHANNELS, PARTIALS, RECOGNISED, STORED, RecognisedTopic, StoredTopic, Topics

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
    """,
    # when the broker last acknowledged sending the entry (NULL: not sent yet); central's own acknowledgement deletes it
    "ALTER TABLE forward_queue ADD COLUMN sent_at REAL;",
]
# what a refusal means for whoever reads the log (MQTT 5 reason codes)
_REFUSALS = {
    0x10: "nobody subscribes yet: central has never connected to this broker (start it first)",
    0x87: "the broker's ACL forbids it: is node.broker's login node-<node.station>? (jingbao broker add-node)",
}
WINDOW = 32  # messages in flight at once: a link with 50 ms of round trip still sends ~600 a second
MAX_UNACKED = 1000  # entries sent and awaiting central's acknowledgement before new ones wait (resends do not)
STATS_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    kind: str  # "utterances" | "transcripts": the topic's last level
    utterance_id: str
    resend: bool = False  # sent before, and not acknowledged by central in time


@dataclass(slots=True)
class Backlog:
    """How far behind the forwarding to central is (what /healthz and /metrics show)."""

    queued: int = 0  # entries central has not acknowledged yet (sent or not)
    unacknowledged: int = 0  # of which the broker took, and central has not acknowledged yet
    oldest_queued_at: float | None = None  # epoch s
    last_ack_at: float | None = None  # epoch s of central's last acknowledgement
    sent: int = 0  # messages the broker took (resends included)
    resent: int = 0  # of which were resends
    acknowledged: int = 0  # entries central acknowledged
    refused: int = 0  # of which central refused for good (logged: not a message it can store)
    acks_rejected: int = 0  # acknowledgements the edge could not read (malformed, or another station's)
    behind_since: float | None = None  # epoch s; the fault "forwarding behind" is active while set

    def oldest_age_s(self, now: float | None = None) -> float:
        return 0.0 if self.oldest_queued_at is None else max(0.0, (now or time.time()) - self.oldest_queued_at)

    def to_dict(self) -> dict[str, float | int | None]:
        return {"queued": self.queued, "unacknowledged": self.unacknowledged, "oldest_age_s": round(self.oldest_age_s(), 1),
                "last_ack_at": self.last_ack_at, "sent": self.sent, "resent": self.resent,
                "acknowledged": self.acknowledged, "refused": self.refused, "acks_rejected": self.acks_rejected,
                "behind_since": self.behind_since}  # fmt: skip


# Would the edge's SOS desk take this transcript (dispatch/sos.py SosDesk.takes)? Said with it to central.
SosTakes = Callable[[Transcript, RecognisedUtterance], bool]
OnRecognised = Callable[[str, Transcript], Awaitable[bool]]  # (utterance id, transcript) -> taken
RECOGNISED_WAITING = 1000  # workers' transcripts received and not yet taken: more are left to this edge's recognition


class ForwardQueue:
    """The durable queue of what central has not acknowledged yet, on its own SQLite connection. The forwarder calls
    it through asyncio.to_thread from two tasks at once (sending, and taking central's acknowledgements), so a lock
    keeps each call whole: one connection's transactions must not interleave."""

    def __init__(self, database: Path, data_dir: Path) -> None:
        self._lock = threading.Lock()
        self._conn = connect(database)
        self._data_dir = data_dir
        # the tables the triggers watch, made here too when the archive or the recogniser has not made them yet
        migrate(self._conn, "archive", ARCHIVE_MIGRATIONS)
        self._transcripts = TranscriptStore(self._conn)
        migrate(self._conn, "forward", MIGRATIONS)

    def due(self, limit: int, resend_before: float) -> list[Entry]:
        """The oldest entries to send: those not sent yet (unless MAX_UNACKED are out unacknowledged) and those sent
        before `resend_before` that central has not acknowledged."""
        with self._lock:
            out = self._conn.execute("SELECT count(*) FROM forward_queue WHERE sent_at >= ?", (resend_before,)).fetchone()[0]
            rows = self._conn.execute(
                "SELECT seq, kind, utterance_id, sent_at FROM forward_queue WHERE sent_at < ? OR (? AND sent_at IS NULL)"
                " ORDER BY seq LIMIT ?",
                (resend_before, out < MAX_UNACKED, limit),
            )
            return [Entry(r["seq"], r["kind"], r["utterance_id"], r["sent_at"] is not None) for r in rows]

    def sent(self, seqs: list[int], at: float) -> None:
        with self._lock, self._conn:
            self._conn.executemany("UPDATE forward_queue SET sent_at = ? WHERE seq = ?", [(at, s) for s in seqs])

    def done(self, seqs: list[int]) -> None:
        with self._lock, self._conn:
            self._conn.executemany("DELETE FROM forward_queue WHERE seq = ?", [(s,) for s in seqs])

    def waiting(self) -> tuple[int, int, float | None]:
        """How many entries wait, how many of them were sent, and since when the oldest has waited (epoch s; None when
        none waits)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) AS n, count(sent_at) AS sent, min(queued_at) AS oldest FROM forward_queue"
            ).fetchone()
            return row["n"], row["sent"], row["oldest"]

    def payload(
        self, station: str, entry: Entry, sos_takes: SosTakes | None = None, dispatched_at_edge: bool = False
    ) -> bytes | None:
        """The message for an entry, read now (None: its row is gone, e.g. a transcript deleted; nothing to send)."""
        with self._lock:
            if entry.kind == "utterances":
                row = self._conn.execute("SELECT * FROM utterances WHERE id = ?", (entry.utterance_id,)).fetchone()
                if row is None:
                    return None
                utterance = ArchivedUtterance(**{c: row[c] for c in COLUMNS})
                try:
                    audio, omitted = (self._data_dir / utterance.path).read_bytes(), ""
                except OSError as e:  # its file gone or unreadable: the row still goes, saying so (`archive verify` too)
                    audio, omitted = None, f"the edge cannot read its file: {e.strerror}"
                return utterance_payload(station, utterance, audio, omitted, entry=entry.seq,
                                         dispatched_at_edge=dispatched_at_edge)  # fmt: skip
            row = self._conn.execute(
                "SELECT t.utterance_id, t.channel, t.start_ms, t.created_at, u.end_ms FROM transcripts t"
                " LEFT JOIN utterances u ON u.id = t.utterance_id WHERE t.utterance_id = ?",
                (entry.utterance_id,),
            ).fetchone()
            transcript = self._transcripts.get(entry.utterance_id)
            if row is None or transcript is None:
                return None
            end_ms = row["end_ms"] if row["end_ms"] is not None else row["start_ms"]
            heard = RecognisedUtterance(row["utterance_id"], row["channel"], row["start_ms"] / 1000, end_ms / 1000)
            try:
                sos = sos_takes is not None and sos_takes(transcript, heard)
            except Exception:  # forwarding goes on: central then reads it as a report, as it did before edges said
                logger.exception("transcript %s: could not tell whether the SOS desk took it", clip(entry.utterance_id))
                sos = False
            return transcript_payload(station, dict(row), transcript.to_dict(), entry=entry.seq, sos=sos,
                                      dispatched_at_edge=dispatched_at_edge)  # fmt: skip

    def close(self) -> None:
        """Under the lock: a call still running in a worker thread (the task that awaited it cancelled at shutdown)
        finishes first. sqlite3 closing a connection another thread is using can crash the process (SIGSEGV)."""
        with self._lock:
            self._conn.close()


class Forwarder:
    """Publishes the queue to central, oldest first, and forgets what central acknowledges, for as long as it runs
    (`run()`, cancelled to stop). `ack_timeout_s`: how long an entry sent waits for central's acknowledgement before
    it is sent again; `behind_after_s`: how old the oldest entry may grow before "forwarding behind" is a fault;
    `wake`: the service's bus, subscribed to what fills the queue (an utterance archived, a transcript stored), so
    that it is sent at once rather than at the next poll (every `poll_s`: the queue is filled by SQLite triggers,
    which cannot wake anyone, also by other processes such as `jingbao transcribe --archive`); `sos_takes`: the
    edge's SOS desk, asked of each transcript sent whether it takes it (said to central, whose dispatcher then
    leaves it alone: the SOS is the edge's); `dispatched_at_edge`: this edge dispatches its transcripts itself
    (node.dispatch: edge), said with each so that central does not too; `channels`: the bus's channel states, of which
    each channel keying up or down is sent to central's console at once (QoS 0, dropped with the link down);
    `on_recognised`: given each transcript a recognition worker made of one of this edge's utterances, as central
    passes it on (bridge/recognition_node.py), so that the edge need not recognise it itself."""

    def __init__(
        self, config: Config, *, poll_s: float = 0.25, ack_timeout_s: float = 30.0, behind_after_s: float = 300.0,
        wake: Subscription | None = None, sos_takes: SosTakes | None = None, dispatched_at_edge: bool = False,
        channels: Subscription | None = None, on_recognised: OnRecognised | None = None,
    ) -> None:
        station = config.node.station
        if station is None:
            raise ConfigError("--role edge needs node.station: this station's id between nodes (docs/deployment.md)")
        self.station = station
        self.topics = Topics(config.broker.topic_prefix)
        broker = config.node.broker or config.broker
        self.link = NodeLink(broker, broker.client_id if config.node.broker else f"node-{station}")
        self.queue = ForwardQueue(config.storage.database, config.storage.data_dir)
        self._stats = ForwardQueue(config.storage.database, config.storage.data_dir)  # read by the watch, in its thread
        self._poll_s = poll_s
        self._wake = wake
        self._channels = channels
        self._sos_takes = sos_takes
        self._dispatched_at_edge = dispatched_at_edge
        self._on_recognised = on_recognised
        # taken off the link at once and handed over one by one by a task of their own: handing one over stores and
        # dispatches it, which must not hold up central's acknowledgements read on the same connection
        self._recognised: asyncio.Queue[TranscriptMessage] = asyncio.Queue(maxsize=RECOGNISED_WAITING)
        self.recognised_elsewhere = 0  # utterances a worker's transcript spared this edge's recognition
        self._ack_timeout_s = ack_timeout_s
        self._behind_after_s = behind_after_s
        self._refusals = Backoff(maximum=10.0)
        self.backlog = Backlog()
        self.skipped = 0  # entries whose row was gone when their turn came
        # what is sent live, not queued (partial transcripts, channels keying up and down): sent, or dropped with the
        # link down
        self.live: Counter[str] = Counter()
        self._publisher: Publisher | None = None  # the session's, while there is one

    @property
    def sent(self) -> int:
        """Messages the broker acknowledged (resends included)."""
        return self.backlog.sent

    @property
    def connected(self) -> bool:
        """Whether what is sent live now goes out (a session is up)."""
        return self._publisher is not None

    @property
    def behind(self) -> bool:
        """The fault "forwarding behind": the oldest entry central has not acknowledged is older than behind_after_s."""
        return self.backlog.behind_since is not None

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._watch(), name="forward-watch")
                if self._channels is not None:
                    tasks.create_task(self._send_channels(self._channels), name="forward-channels")
                if self._on_recognised is not None:
                    tasks.create_task(self._hand_recognised(self._on_recognised), name="forward-recognised")
                await self.link.run(self._session)
        finally:
            self.queue.close()
            self._stats.close()

    async def _watch(self) -> None:
        """Refresh the backlog's figures from the queue, link up or down, and raise or clear "forwarding behind"."""
        while True:
            b = self.backlog
            b.queued, b.unacknowledged, b.oldest_queued_at = await asyncio.to_thread(self._stats.waiting)
            age = b.oldest_age_s()
            if age > self._behind_after_s and b.behind_since is None:
                b.behind_since = time.time()
                logger.warning("forwarding behind: %d message(s) central has not acknowledged, the oldest queued %.0f s"
                               " ago (link %s)", b.queued, age, self.link.address)  # fmt: skip
            elif age <= self._behind_after_s and b.behind_since is not None:
                logger.info("forwarding caught up (%d message(s) waiting) after %.0f s behind", b.queued,
                            time.time() - b.behind_since)  # fmt: skip
                b.behind_since = None
            if self._wake is not None and self._wake.queue.qsize() > WINDOW:
                self._drain_wake()  # nobody is sending (the link is down): wake-ups pile up, and mean nothing
            await asyncio.sleep(STATS_EVERY_S)

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection: central's acknowledgements read while the queue is sent. Either failing (a lost
        connection) ends both, and the link reconnects."""
        granted = await client.subscribe(self.topics.node_stored(self.station), qos=1)
        if any(getattr(code, "is_failure", False) for code in granted or ()):
            logger.error("the broker refuses this edge central's acknowledgements (%s): is node.broker's login node-%s?"
                         " (jingbao broker add-node); all it sends will be sent again", granted, self.station)  # fmt: skip
        if self._on_recognised is not None:
            granted = await client.subscribe(self.topics.node_recognised(self.station), qos=1)
            if any(getattr(code, "is_failure", False) for code in granted or ()):
                logger.error("the broker refuses this edge the transcripts central's recognition workers made of its "
                             "utterances (%s): regenerate the broker's ACL (jingbao broker setup); it recognises them "
                             "itself meanwhile", granted)  # fmt: skip
        self._publisher = publisher = self.link.publisher(client)
        tasks = [asyncio.create_task(self._read_acks(client)), asyncio.create_task(self._send_all(publisher))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise aiomqtt.MqttError("the node link's messages ended")  # neither returns while the connection lasts
        finally:
            self._publisher = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def send_partial(self, transcript: Transcript, utterance: RecognisedUtterance) -> None:
        """A partial transcript of an utterance still being spoken, for central's provisional alerts (this edge
        leaves dispatch to central): sent at once with QoS 0, not queued. With the link down it is dropped: the
        final transcript, queued as ever, decides then."""
        payload = partial_payload(self.station, utterance.id, utterance.channel, utterance.start, utterance.end,
                                  utterance.paused, transcript.to_dict(), settled=utterance.settled)  # fmt: skip
        self._send_live(PARTIALS, payload)

    async def _send_channels(self, states: Subscription) -> None:
        """Each channel keying up or down (its `talking` changing), to central at once; nothing else of its state."""
        talking: dict[str, bool] = {}
        while True:
            state = (await states.queue.get()).data
            if talking.get(state["id"]) == state["talking"]:
                continue
            talking[state["id"]] = state["talking"]
            self._send_live(CHANNELS, channel_payload(self.station, state["id"], state["talking"], time.time()))

    def _send_live(self, kind: str, payload: bytes) -> None:
        """Publish a live message (LIVE_NODE_KINDS) at once, QoS 0, or drop it with the link down; counted either way."""
        publisher = self._publisher
        sent = publisher is not None and publisher.publish_at_most_once(self.topics.node(self.station, kind), payload)
        self.live[f"{kind} {'sent' if sent else 'dropped'}"] += 1

    async def _read_acks(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic, payload = str(message.topic), message.payload if isinstance(message.payload, bytes) else b""
            if self.topics.parse(topic) == RecognisedTopic(self.station):
                await self._take_recognised(payload)
            else:
                await self._take_ack(topic, payload)

    async def _take_recognised(self, payload: bytes) -> None:
        """A recognition worker's transcript of one of this edge's utterances, queued for `_hand_recognised`. One that
        cannot be read, or finds the queue full, is logged and left: the utterance is recognised here as before."""
        try:
            message = parse(RECOGNISED, self.station, payload)
        except NodeMessageError as e:
            logger.warning("a recognised transcript from central rejected: %s", clip(str(e)))
            return
        if not isinstance(message, TranscriptMessage) or self._on_recognised is None:
            return  # (a subscription left from a session before: nothing here takes them now)
        try:
            self._recognised.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("transcript of %s from a recognition worker dropped: %d waiting to be taken already",
                           clip(message.utterance_id), RECOGNISED_WAITING)  # fmt: skip

    async def _hand_recognised(self, on_recognised: OnRecognised) -> None:
        """Hand each worker's transcript to the box (stored, dispatched, marked transcribed: LiveRecognition), taken
        only for an utterance still pending here; whatever fails is logged and the next one handed over."""
        while True:
            message = await self._recognised.get()
            try:
                if await on_recognised(message.utterance_id, message.transcript):
                    self.recognised_elsewhere += 1
            except Exception:  # best effort: the utterance stays pending and is recognised here
                logger.exception("the transcript of %s from a recognition worker could not be taken",
                                 clip(message.utterance_id))  # fmt: skip

    async def _take_ack(self, topic: str, payload: bytes) -> None:
        """Forget the entries central acknowledges; an acknowledgement that cannot be read is counted and logged."""
        if self.topics.parse(topic) != StoredTopic(self.station):
            return self._reject_ack(f"a message on {topic}, not this station's acknowledgements")
        try:
            message = parse(STORED, self.station, payload)
        except NodeMessageError as e:
            return self._reject_ack(str(e))
        assert isinstance(message, StoredMessage)
        await asyncio.to_thread(self.queue.done, [a.entry for a in message.entries])
        refused = [a for a in message.entries if a.outcome == "rejected"]
        for a in refused:
            logger.error("central refused %s %s (entry %d) for good: see its log", a.kind, clip(a.utterance_id), a.entry)
        b = self.backlog
        b.acknowledged += len(message.entries)
        b.refused += len(refused)
        b.last_ack_at = time.time()

    def _reject_ack(self, reason: str) -> None:
        self.backlog.acks_rejected += 1
        logger.warning("acknowledgement from central rejected (%d so far): %s", self.backlog.acks_rejected, clip(reason))

    async def _send_all(self, publisher: Publisher) -> None:
        waiting, _, oldest = await asyncio.to_thread(self.queue.waiting)
        if oldest is not None:  # after an outage: how far behind central is
            logger.info("forwarding to central: %d message(s) waiting, the oldest queued %.0f s ago", waiting,
                        time.time() - oldest)  # fmt: skip
        while True:
            entries = await asyncio.to_thread(self.queue.due, WINDOW, time.time() - self._ack_timeout_s)
            if not entries:
                await self._idle()
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

    async def _idle(self) -> None:
        """Until the bus says something was archived or transcribed, or `poll_s` has passed (a read of an empty queue
        is cheap); what piled up on the bus meanwhile is one wake-up."""
        if self._wake is None:
            await asyncio.sleep(self._poll_s)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.get(), self._poll_s)
        self._drain_wake()

    def _drain_wake(self) -> None:
        """Forget the wake-ups piled up while sending (or while the link is down: `_watch` drains them then, so that
        the bus never counts this subscriber as a slow one)."""
        while self._wake is not None and not self._wake.queue.empty():
            self._wake.queue.get_nowait()

    async def _send_window(self, publisher: Publisher, entries: list[Entry]) -> Refused | None:
        """Publish `entries` at once, mark sent those the broker took and done those with nothing to send; the rest
        stay due. Returns the broker's refusal if it refused one; a lost connection raises, and the link
        reconnects."""
        payloads = await asyncio.to_thread(
            lambda: [self.queue.payload(self.station, e, self._sos_takes, self._dispatched_at_edge) for e in entries]
        )
        sending = [(e, p) for e, p in zip(entries, payloads, strict=True) if p is not None]
        done = [e.seq for e, p in zip(entries, payloads, strict=True) if p is None]
        self.skipped += len(done)
        results = await asyncio.gather(
            *(publisher.publish(self.topics.node(self.station, e.kind), p) for e, p in sending), return_exceptions=True
        )
        taken = [e for (e, _), r in zip(sending, results, strict=True) if r is None]
        self.backlog.sent += len(taken)
        self.backlog.resent += sum(e.resend for e in taken)
        await asyncio.to_thread(self.queue.sent, [e.seq for e in taken], time.time())
        await asyncio.to_thread(self.queue.done, done)
        refusals = [r for r in results if isinstance(r, Refused)]
        lost = next((r for r in results if isinstance(r, BaseException) and not isinstance(r, Refused)), None)
        if lost is not None:
            raise lost if isinstance(lost, aiomqtt.MqttError) else aiomqtt.MqttError(f"publishing failed: {clip(repr(lost))}")
        return refusals[0] if refusals else None
