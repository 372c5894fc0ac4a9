"""Central dispatches across stations (issue 13): the dispatcher a single box runs (dispatch/dispatcher.py's
DispatchService), fed at central with every transcript the ingest commits (bridge/central.py), over the region's
stations merged (bridge/region_jurisdiction.py).

- A transcript is dispatched at least once per version, and once only. The ingest hands it over when PostgreSQL took
  it as new (a repeat delivery, or an older version arriving late, changes nothing and is not handed over), after the
  commit, queued so the ingest never waits for the dispatcher. What was handled is recorded per utterance in
  central's PostgreSQL (`central_dispatched`: the newest version, and dispatched or why not), right after the
  dispatcher's own writes; a version recorded is never dispatched again, nor is a newer version of an utterance
  handled already (recognised again at its edge: a box does not dispatch a re-transcription; `recognised_again`,
  recorded and counted). The queue is memory, so at start central
  first reads back from PostgreSQL the transcripts begun within `node.dispatch_max_age_s` whose newest version is not
  recorded, committed by the last run and not dispatched when it ended (SIGKILL, power, a clean stop with a queue),
  and dispatches them, oldest first, before what the ingest hands over meanwhile. A process killed between the
  dispatcher's writes and the record leaves an incident holding the utterance: found so at start, it is recorded
  instead of dispatched again. One the dispatcher failed on is not recorded: tried again at the next start.
- Too late is not dispatched. A transcript whose utterance began more than `node.dispatch_max_age_s` (15 min) ago,
  a backlog after a long outage, pages nobody: it is stored and searchable, logged and counted `stale` (as a box
  does with what it left pending while it was down); unless its partials raised a provisional incident, which its
  final settles whatever its age. The operators' console shows it in its live transcript, heard when it was; it is
  not queued as 待确认, whose one click would page guards for a scene long gone. PostgreSQL coming back after an
  outage needs no reading back: while it is down the ingest commits nothing, so nothing is handed over or lost.
- Its station says where it was heard: the place it names is looked for among that station's places only, and the
  incident belongs to that station. Responders of that station and of the stations bordering it (the region's
  `neighbours`) may be alerted, nearest first as on a box: a guard of the next station's market goes when he is
  nearer. Responders of any other station are never alerted for it, however near their post: a station that does
  not border the scene is not expected to cover it (and a guard's last fix beyond a border says little).
- A transcript from a station the region does not know, or from one without a jurisdiction file at central, is
  refused for dispatch (stored and searchable all the same), counted in `refused` and logged; whatever goes wrong in
  dispatching one is logged and counted, and the next is dispatched. The counts (`counters()`: dispatched, refused
  by reason, recovered at start, repeats) are logged at start and stop, and on central's /metrics (docs/metrics.md).
- A transcript its edge dispatched itself (that edge's `node.dispatch` is `edge` while the region names its
  jurisdiction file here: a configuration mistake, logged once per station) is left to it (refused
  `dispatched_at_edge`): dispatched here too, every responder would be alerted twice.
- A transcript its edge's SOS desk took (a hot microphone's words, an emergency phrase: dispatch/sos.py; the message
  says so, `sos`) is the edge's SOS: central stores it and does not read it as a report (refused `sos`). The SOS
  itself, its alarm and its alerts stay the edge's: its phones, radios and consoles are there.
- Incidents, alerts' outbox, responders' statuses and this record are in central's PostgreSQL (bridge/db.py's
  connect_state), beside its users, sessions and audit log, so that the other central of a pair takes over with
  them (bridge/central_lease.py); alerts go out on central's `broker` section, on the topics a box uses
  (dispatch/topics.py), so the responders' phones get them as from their station's box. Central transmits on no radio
  channel: it speaks no announcement (its edges' lines are theirs). Its provisional alerts (初报) are read from the
  partial transcripts an edge leaving dispatch to central sends live (`submit_partial`; QoS 0, never stored), as a
  box reads its own; the final confirms, amends or retracts them. Its incidents' events go on central's bus, to the
  operators' console it serves (bridge/web/central_console.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from asr.transcript import Transcript
from bridge.backoff import Backoff
from bridge.bus import EventBus
from bridge.central import CentralStore, wait_for_database
from bridge.config import Config, ConfigError
from bridge.db import STORE_RETRY_S, Connection, Migration, StoreUnavailable, connect_state, migrate
from bridge.logsafe import clip
from bridge.nodes import PartialMessage, TranscriptMessage, central_id, station_of
from bridge.region import Region, RegionError
from bridge.region_jurisdiction import RegionJurisdiction, merge_jurisdictions
from dispatch.dispatcher import DispatchService
from dispatch.gazetteer import Jurisdiction, Place
from dispatch.location import PlaceIndex

logger = logging.getLogger(__name__)

PARTIAL_MAX_AGE_S = 10.0  # an edge's partial taken longer ago raises nothing: the final, on its way, decides

MIGRATIONS = [
    Migration(
        sqlite="""
    CREATE TABLE central_dispatched (
        utterance_id TEXT PRIMARY KEY,  -- central's: <station>.<the edge's id>
        version REAL NOT NULL,          -- the newest transcript version of it handled (the edge's created_at)
        outcome TEXT NOT NULL,          -- dispatched, or why not: stale, unknown_station, no_jurisdiction
        at REAL NOT NULL
    );
    CREATE INDEX central_dispatched_at ON central_dispatched (at);
    """,
        # DOUBLE PRECISION: a version is compared with the transcript's own, so it must come back exactly as written
        postgres="""
    CREATE TABLE central_dispatched (
        utterance_id TEXT PRIMARY KEY,      -- central's: <station>.<the edge's id>
        version DOUBLE PRECISION NOT NULL,  -- the newest transcript version of it handled (the edge's created_at)
        outcome TEXT NOT NULL,              -- dispatched, or why not: stale, unknown_station, no_jurisdiction
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX central_dispatched_at ON central_dispatched (at);
    """,
    )
]


class DispatchRecord:
    """What central's dispatcher has handled, per utterance: the newest transcript version and its outcome, in
    central's state database beside the incidents (a row is written right after the dispatcher's own writes)."""

    def __init__(self, conn: Connection) -> None:
        migrate(conn, "central.dispatch", MIGRATIONS)
        self._conn = conn

    def version(self, utterance_id: str) -> float | None:
        """The newest version of the utterance's transcript handled, None when none was."""
        row = self._conn.execute("SELECT version FROM central_dispatched WHERE utterance_id = ?", (utterance_id,)).fetchone()
        return None if row is None else row["version"]

    def record(self, utterance_id: str, version: float, outcome: str) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT INTO central_dispatched (utterance_id, version, outcome, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (utterance_id) DO UPDATE SET version = excluded.version, outcome = excluded.outcome,"
                " at = excluded.at",
                (utterance_id, version, outcome, time.time()),
            )

    def forget_before(self, at: float) -> None:
        """Rows handled before `at`: no transcript that old is dispatched again (it is stale), so its row decides
        nothing any more."""
        with self._conn:
            self._conn.execute("DELETE FROM central_dispatched WHERE at < ?", (at,))


class RegionArea:
    """Central's area (dispatch/area.py): the region's stations merged; a place is found among its channel's
    station's places, and only responders of the place's station and its neighbours may go."""

    def __init__(self, region: Region, merged: RegionJurisdiction) -> None:
        self._jurisdiction = merged.jurisdiction
        self._indexes = {station: PlaceIndex(own) for station, own in merged.stations.items()}
        self._responder_station = merged.responder_station
        self._out_of_reach: dict[str, frozenset[str]] = {}
        for station in merged.stations:
            reach = {station, *region.neighbours(station)}
            self._out_of_reach[station] = frozenset(r for r, s in merged.responder_station.items() if s not in reach)

    @property
    def jurisdiction(self) -> Jurisdiction:
        return self._jurisdiction

    @property
    def indexes(self) -> Sequence[PlaceIndex]:
        return list(self._indexes.values())

    def covers(self, station: str) -> bool:
        return station in self._indexes

    def places(self, channel: str) -> PlaceIndex:
        """`channel` as central names it, `<station>.<channel>`: that station's places (KeyError for another)."""
        return self._indexes[station_of(channel)]

    def out_of_reach(self, place: Place) -> Collection[str]:
        return self._out_of_reach[station_of(place.id)]

    def station_of(self, responder_id: str) -> str | None:
        return self._responder_station.get(responder_id)


@dataclass(frozen=True, slots=True)
class Heard:
    """The utterance a forwarded transcript is of, as the dispatcher needs it (dispatch.dispatcher.UtteranceRef),
    named as central names it."""

    id: str
    channel: str
    start: float
    end: float

    @classmethod
    def of(cls, message: TranscriptMessage) -> Heard:
        start = message.start_ms / 1000
        # the message does not carry the utterance's end (its row does, maybe not here yet): its last word's end is
        # near enough for the incident's time and the merge window
        spoken = max((w.end for w in message.transcript.words), default=0.0)
        return cls(central_id(message.station, message.utterance_id), central_id(message.station, message.channel),
                   start, start + spoken)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HeardPartial(Heard):
    """... of an utterance still being spoken (dispatch.dispatcher.PartialRef): `end` is when the partial was taken."""

    paused: bool = False
    settled: bool = False

    @classmethod
    def of_partial(cls, message: PartialMessage) -> HeardPartial:
        return cls(central_id(message.station, message.utterance_id), central_id(message.station, message.channel),
                   message.start_ms / 1000, message.heard_ms / 1000, message.paused, message.settled)  # fmt: skip


class CentralDispatch:
    """`submit` each committed transcript; `run()` first dispatches what the last run committed and did not, then
    what is submitted (and keeps the dispatcher's broker link and outbox going) until cancelled."""

    def __init__(self, config: Config, region: Region, area: RegionArea, bus: EventBus | None = None) -> None:
        """`bus`: where its incidents' events go (central's operators' console: bridge/web/central_console.py)."""
        self.area = area
        # no transmit path at central: announcements off, rather than queued for nobody
        alerts = config.dispatch.alerts.model_copy(update={"announce": False})
        config = config.model_copy(update={"dispatch": config.dispatch.model_copy(update={"alerts": alerts})})
        self.service = DispatchService(config, area=self.area, bus=bus)
        self.record = DispatchRecord(connect_state(config.storage))  # in PostgreSQL, beside the incidents
        self.prune_every_s = 3600.0  # how often the record forgets what is past node.dispatch_max_age_s (and at start)
        self._region = region
        self._database_url = config.storage.database_url
        self._max_age_s = config.node.dispatch_max_age_s
        self._queue: asyncio.Queue[TranscriptMessage] = asyncio.Queue()
        self.dispatched = 0  # transcripts the dispatcher read
        self.refused: Counter[str] = Counter()  # by reason: stale, not this region's, no jurisdiction here, sos, failed
        self._warned_edge_dispatch: set[str] = set()  # stations logged as dispatching their own transcripts
        self.recovered = 0  # of those handled, how many were read again from PostgreSQL at start
        self.repeats = 0  # handed over, but that version was handled already (read again at start meanwhile)
        self.partials: Counter[str] = Counter()  # the edges' partial transcripts: read, ignored, stale, failed
        self._partials_read: set[asyncio.Task[None]] = set()

    def submit(self, message: TranscriptMessage) -> None:
        """A transcript central has just committed (a new one, or a newer version)."""
        self._queue.put_nowait(message)

    def submit_partial(self, message: PartialMessage) -> None:
        """A partial transcript an edge sent, of an utterance still being spoken: read at once for a provisional
        alert (初报) when its station is central's to dispatch, as a box reads its own; never recorded: the final
        transcript confirms, amends or retracts it, as on a box. One taken over PARTIAL_MAX_AGE_S ago, or of an
        utterance whose final was handled, is ignored."""
        station = message.station
        try:
            handled = self.record.version(central_id(station, message.utterance_id)) is not None
        except sqlite3.Error:  # the store away: a partial is worth nothing then (the final comes, and waits for it)
            self.partials["failed"] += 1
            return
        if not self.area.covers(station) or handled:
            self.partials["ignored"] += 1
            return
        if time.time() - message.heard_ms / 1000 > PARTIAL_MAX_AGE_S:
            self.partials["stale"] += 1
            return
        self.partials["read"] += 1
        reading = asyncio.get_running_loop().create_task(self._read_partial(message), name="central-partial")
        self._partials_read.add(reading)  # held until done: the loop keeps only weak references to tasks
        reading.add_done_callback(self._partials_read.discard)

    async def _read_partial(self, message: PartialMessage) -> None:
        heard = HeardPartial.of_partial(message)
        try:
            await self.service.dispatcher.handle_partial(as_central(message.transcript, message.station), heard)
        except Exception:  # a partial that breaks must not stop the others, nor its utterance's final
            self.partials["failed"] += 1
            logger.exception("partial transcript of %s: reading it failed", clip(heard.id))

    @property
    def queued(self) -> int:
        """Transcripts committed and waiting for the dispatcher."""
        return self._queue.qsize()

    def counters(self) -> dict[str, Any]:
        return {"dispatched": self.dispatched, "refused": dict(self.refused), "recovered": self.recovered,
                "repeats": self.repeats, "partials": dict(self.partials)}  # fmt: skip

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.service.run(), name="central-dispatch-link")
                tasks.create_task(self._dispatch_loop(), name="central-dispatch")
        finally:
            logger.info("central dispatch stops: %s", self.counters())

    async def _dispatch_loop(self) -> None:
        await _until_the_store_answers("reading back what the last run left", self._recover)
        pruned_at = time.monotonic()
        while True:
            message = await self._queue.get()
            await self._dispatch_or_log(message)
            if time.monotonic() - pruned_at > self.prune_every_s:  # a central up for weeks keeps only what still decides
                pruned_at = time.monotonic()
                with contextlib.suppress(sqlite3.Error):  # the store away, say: pruned next time
                    self.record.forget_before(time.time() - self._max_age_s)

    async def _dispatch_or_log(self, message: TranscriptMessage) -> None:
        """`_dispatch`, whatever fails in it logged and counted, not raised: it would end central's task group, its
        ingest and its web app with it. Unrecorded, it is read again at the next start. The store failing (PostgreSQL
        restarting or away: StoreUnavailable) is waited out instead: this transcript and those queued behind it are
        dispatched, in order, once it answers; one the dispatcher had already put in an incident when its store
        failed is recorded as dispatched, not dispatched twice, as at a start (`_recover`). (Left: an incident
        written and its first alerts not, if PostgreSQL went in the ~10 ms between: the operator's console shows it
        unalerted.)"""
        uid = central_id(message.station, message.utterance_id)
        name, tried = clip(uid), False

        async def dispatch() -> None:
            nonlocal tried
            store = self.service.dispatcher.store
            if tried and store.with_utterance(uid) and store.provisional_for(uid) is None:
                logger.info("transcript %s: in an incident before the store failed, recorded as dispatched", name)
                self.record.record(uid, message.version, "dispatched")
                return
            tried = True
            await self._dispatch(message)

        try:
            await _until_the_store_answers(f"dispatching transcript {name}", dispatch)
        except Exception:
            self.refused["failed"] += 1
            logger.exception("transcript %s: dispatching it failed", name)

    async def _recover(self) -> None:
        """Dispatch, oldest first, the transcripts PostgreSQL holds whose newest version this store has not handled:
        committed by the last run and not dispatched when it ended (its queue is memory), so at least once. Those
        begun more than `node.dispatch_max_age_s` ago are left alone, as stale as they would be refused."""
        since = time.time() - self._max_age_s
        self.record.forget_before(since)
        recent = await wait_for_database(lambda: self._transcripts_since(since), Backoff())
        missed = [m for m in recent if not self._handled(m)]
        # An incident holding an utterance never recorded: the last run was killed after the dispatcher's writes and
        # before the record (or before records were kept). Dispatching it again would count it twice, or raise a second
        # incident where there is no place to merge by; it is recorded as dispatched instead. Unless that incident is
        # the provisional one its partials raised: the final settles it (confirms, amends or retracts), as live.
        store = self.service.dispatcher.store
        held = store.utterances_since(since) if missed else set()
        for message in missed:
            utterance_id = central_id(message.station, message.utterance_id)
            if utterance_id in held and self.record.version(utterance_id) is None \
                    and store.provisional_for(utterance_id) is None:
                logger.info("transcript %s: already in an incident, recorded as dispatched", clip(utterance_id))
                self.record.record(utterance_id, message.version, "dispatched")
                continue
            await self._dispatch_or_log(message)
            self.recovered += 1  # once handled: what reads the count may read what it did
        logger.info("central dispatch at start: %d transcript(s) of the last %d min committed and not dispatched by "
                    "the last run, %d of them read again (the others were in an incident already): %s", len(missed),
                    round(self._max_age_s / 60), self.recovered, self.counters())  # fmt: skip

    def _transcripts_since(self, since: float) -> list[TranscriptMessage]:
        assert self._database_url is not None  # the ingest refuses to start without it
        with contextlib.closing(CentralStore(self._database_url)) as store:
            return store.transcripts_since(round(since * 1000))

    def _handled(self, message: TranscriptMessage) -> bool:
        done = self.record.version(central_id(message.station, message.utterance_id))
        return done is not None and done >= message.version

    async def _dispatch(self, message: TranscriptMessage) -> None:
        """Dispatch one transcript version unless it was handled already, and record it as handled; one the
        dispatcher failed on is not recorded, so the next start tries it again."""
        if self._handled(message):
            self.repeats += 1
            return
        utterance_id = central_id(message.station, message.utterance_id)
        if self.record.version(utterance_id) is not None:
            # a newer version of an utterance handled already: recognised again at its edge (`jingbao transcribe
            # --archive`, or an edge killed between storing a transcript and marking it done). A box does not dispatch
            # a re-transcription; read as a new report it would be counted twice or raise a second incident.
            self.refused["recognised_again"] += 1
            logger.info("transcript %s: a newer version of one handled already, not dispatched again", clip(utterance_id))
            self.record.record(utterance_id, message.version, "recognised_again")
            return
        outcome = await self._outcome(message)
        if outcome is not None:
            self.record.record(central_id(message.station, message.utterance_id), message.version, outcome)

    async def _outcome(self, message: TranscriptMessage) -> str | None:
        station = message.station
        name = clip(f"{station}.{message.utterance_id}")
        if not self.area.covers(station):
            known = self._region.station(station) is not None
            reason = "no_jurisdiction" if known else "unknown_station"
            self.refused[reason] += 1
            logger.warning("transcript %s not dispatched: %s", name,
                           "its station has no jurisdiction file in the region file" if known
                           else f"station {clip(station)!r} is not in the region file")  # fmt: skip
            return reason
        if message.dispatched_at_edge:  # node.dispatch: edge there: dispatched again here, it would alert twice
            self.refused["dispatched_at_edge"] += 1
            if station not in self._warned_edge_dispatch:
                self._warned_edge_dispatch.add(station)
                logger.warning("station %s dispatches its own transcripts (its node.dispatch is edge) while the region "
                               "file names its jurisdiction here: central leaves them to it; set node.dispatch: central "
                               "on that edge for central to dispatch them", clip(station))  # fmt: skip
            return "dispatched_at_edge"
        # a hot microphone's words or an emergency phrase: the edge raised the SOS with them; unless the utterance's
        # partials raised a provisional incident here, which its final settles, as the SOS desk leaves it on a box
        store = self.service.dispatcher.store
        if message.sos and store.provisional_for(central_id(station, message.utterance_id)) is None:
            self.refused["sos"] += 1
            logger.info("transcript %s not dispatched: its station's SOS desk took it", name)
            return "sos"
        age = self.service.dispatcher.too_old(central_id(station, message.utterance_id), message.start_ms / 1000,
                                              self._max_age_s)  # fmt: skip
        if age is not None:
            self.refused["stale"] += 1
            logger.warning("transcript %s not dispatched: heard %d min ago, over node.dispatch_max_age_s (%s)", name,
                           round(age / 60), clip(message.transcript.shown))  # fmt: skip
            return "stale"
        heard = Heard.of(message)
        try:
            await self.service.dispatcher.handle(as_central(message.transcript, station), heard)
        except StoreUnavailable:  # waited out by _dispatch_or_log
            raise
        except Exception:  # one transcript the dispatcher fails on must not stop the others'
            self.refused["failed"] += 1
            logger.exception("transcript %s: dispatching it failed", clip(heard.id))
            return None
        self.dispatched += 1
        return "dispatched"


async def _until_the_store_answers(doing: str, work: Callable[[], Awaitable[None]]) -> None:
    """`await work()`, again every STORE_RETRY_S while central's state store cannot be reached (StoreUnavailable:
    PostgreSQL restarting or away); logged once, and when it answers again."""
    failed = False
    while True:
        try:
            await work()
        except StoreUnavailable as e:
            if not failed:
                logger.warning("%s: central's store failed (%s); trying again every %.0f s", doing, clip(str(e)),
                               STORE_RETRY_S)  # fmt: skip
                failed = True
            await asyncio.sleep(STORE_RETRY_S)
            continue
        if failed:
            logger.warning("%s: central's store answers again", doing)
        return


def as_central(transcript: Transcript, station: str) -> Transcript:
    """The transcript with the places its edge's keyword spotter heard named as central names them: the spotter refers
    to its station's own place ids (changledong-sq), central's area to `<station>.<id>`; incident words
    (`incident:<type>`) name no place and stay. Without this a place only the spotter caught would be lost at central."""
    keywords = tuple(k if k.ref.startswith("incident:") else replace(k, ref=central_id(station, k.ref))
                     for k in transcript.keywords)  # fmt: skip
    alternatives = tuple(as_central(a, station) for a in transcript.alternatives)
    return replace(transcript, keywords=keywords, alternatives=alternatives)


def central_area(region: Region | None) -> RegionArea | None:
    """What central dispatches for: the region's stations' jurisdiction files merged, with a place index per station
    (seconds: the standby of a pair builds it before it waits for the lease, bridge/central.py), or None (logged) when
    no station of it names a jurisdiction file: then each edge dispatches its own station. ConfigError when the
    stations' files cannot be merged."""
    try:
        merged = merge_jurisdictions(region) if region is not None else None
    except RegionError as e:
        raise ConfigError(f"node.region: {e}") from e
    if region is None or merged is None:
        logger.info("central dispatches nothing: no station of the region file names a jurisdiction file")
        return None
    logger.info("central dispatches for %s: %s", region.name, ", ".join(merged.stations))
    return RegionArea(region, merged)


def central_dispatch(config: Config, region: Region | None, bus: EventBus | None = None) -> CentralDispatch | None:
    """Central's dispatcher over `region`, or None when it dispatches for no station (central_area). (Seconds: the
    place indexes and the models; build it on the running loop, which its MQTT client needs, before the loop serves
    anything.)"""
    area = central_area(region)
    return None if area is None or region is None else CentralDispatch(config, region, area, bus)
