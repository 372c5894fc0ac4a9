"""Central dispatches across stations (issue 13): the dispatcher a single box runs (dispatch/dispatcher.py's
DispatchService), fed at central with every transcript the ingest commits (bridge/central.py), over the region's
stations merged (bridge/region_jurisdiction.py).

- A transcript is dispatched once per version: the ingest hands it over only when PostgreSQL took it as new (a repeat
  delivery, or an older version arriving late, changes nothing and is not handed over), after the commit. It is
  queued, so the ingest never waits for the dispatcher. A transcript committed and not dispatched yet when central
  stops is not dispatched later: its redelivery is a repeat (at most once, not at least once, for the dispatch).
- Its station says where it was heard: the place it names is looked for among that station's places only, and the
  incident belongs to that station. Responders of that station and of the stations bordering it (the region's
  `neighbours`) may be alerted, nearest first as on a box: a guard of the next station's market goes when he is
  nearer. Responders of any other station are never alerted for it, however near their post: a station that does
  not border the scene is not expected to cover it (and a guard's last fix beyond a border says little).
- A transcript from a station the region does not know, or from one without a jurisdiction file at central, is
  refused for dispatch (stored and searchable all the same), counted in `refused` and logged; whatever goes wrong in
  dispatching one is logged and counted, and the next is dispatched.
- Incidents, alerts' outbox and responders' statuses are central's own SQLite (`storage.database` in its data_dir,
  beside its users and sessions); alerts go out on central's `broker` section, on the topics a box uses
  (dispatch/topics.py), so the responders' phones get them as from their station's box. Central transmits on no radio
  channel: it speaks no announcement (its edges' lines are theirs), and it sees finals only (no provisional alerts).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from bridge.config import Config, ConfigError
from bridge.logsafe import clip
from bridge.nodes import TranscriptMessage, central_id
from bridge.region import Region, RegionError
from bridge.region_jurisdiction import RegionJurisdiction, merge_jurisdictions
from dispatch.dispatcher import DispatchService
from dispatch.gazetteer import Jurisdiction, Place
from dispatch.location import PlaceIndex

logger = logging.getLogger(__name__)


class RegionArea:
    """Central's area (dispatch/area.py): the region's stations merged; a place is found among its channel's
    station's places, and only responders of the place's station and its neighbours may go."""

    def __init__(self, region: Region, merged: RegionJurisdiction) -> None:
        self._jurisdiction = merged.jurisdiction
        self._indexes = {station: PlaceIndex(own) for station, own in merged.stations.items()}
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
        return self._indexes[_station_of(channel)]

    def out_of_reach(self, place: Place) -> Collection[str]:
        return self._out_of_reach[_station_of(place.id)]


def _station_of(central_name: str) -> str:
    return central_name.split(".", 1)[0]  # a station id has no "." (bridge.config.STATION_ID)


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


class CentralDispatch:
    """`submit` each committed transcript; `run()` dispatches them (and keeps the dispatcher's broker link and outbox
    going) until cancelled."""

    def __init__(self, config: Config, region: Region, merged: RegionJurisdiction) -> None:
        self.area = RegionArea(region, merged)
        # no transmit path at central: announcements off, rather than queued for nobody
        alerts = config.dispatch.alerts.model_copy(update={"announce": False})
        config = config.model_copy(update={"dispatch": config.dispatch.model_copy(update={"alerts": alerts})})
        self.service = DispatchService(config, area=self.area)
        self._region = region
        self._queue: asyncio.Queue[TranscriptMessage] = asyncio.Queue()
        self.dispatched = 0  # transcripts the dispatcher read
        self.refused: Counter[str] = Counter()  # by reason: not this region's, no jurisdiction here, failed

    def submit(self, message: TranscriptMessage) -> None:
        """A transcript central has just committed (a new one, or a newer version)."""
        self._queue.put_nowait(message)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.service.run(), name="central-dispatch-link")
            tasks.create_task(self._dispatch_loop(), name="central-dispatch")

    async def _dispatch_loop(self) -> None:
        while True:
            message = await self._queue.get()
            await self._dispatch(message)

    async def _dispatch(self, message: TranscriptMessage) -> None:
        station = message.station
        if not self.area.covers(station):
            known = self._region.station(station) is not None
            reason = "no_jurisdiction" if known else "unknown_station"
            self.refused[reason] += 1
            logger.warning("transcript %s not dispatched: %s", clip(f"{station}.{message.utterance_id}"),
                           "its station has no jurisdiction file in the region file" if known
                           else f"station {clip(station)!r} is not in the region file")  # fmt: skip
            return
        heard = Heard.of(message)
        try:
            await self.service.dispatcher.handle(message.transcript, heard)
        except Exception:  # one transcript the dispatcher fails on must not stop the others'
            self.refused["failed"] += 1
            logger.exception("transcript %s: dispatching it failed", clip(heard.id))
            return
        self.dispatched += 1


def central_dispatch(config: Config, region: Region | None) -> CentralDispatch | None:
    """Central's dispatcher over `region`, or None (logged) when no station of it names a jurisdiction file: then each
    edge dispatches its own station. ConfigError when the stations' files cannot be merged. (Seconds: the place indexes
    and the models; build it on the running loop, which its MQTT client needs, before the loop serves anything.)"""
    try:
        merged = merge_jurisdictions(region) if region is not None else None
    except RegionError as e:
        raise ConfigError(f"node.region: {e}") from e
    if region is None or merged is None:
        logger.info("central dispatches nothing: no station of the region file names a jurisdiction file")
        return None
    logger.info("central dispatches for %s: %s", region.name, ", ".join(merged.stations))
    return CentralDispatch(config, region, merged)
