"""The operators' console at the central tier: the box's console page (static/console.html) over every station of the
operator's scope, so that a 分局's command wall shows its stations' channels, transcripts and incidents on one map.

What it reads differs from a box's, what it draws does not:
- Channels are the stations' (`<station>.<channel>`): those their jurisdiction files name and any other an edge has
  forwarded utterances from today, each with today's transmissions and the last one, from PostgreSQL. A channel
  lights up while someone talks on it (its edge says when it keys up and down, bridge/forward.py); central hears
  finished utterances, not live audio: there is no level meter, no listening in and no talking back (the edge's
  console has those, where the radios are).
- The live transcript is each transcript the ingest commits (bridge/central.py publishes it on central's bus), the
  opening view the newest in PostgreSQL; the incidents, responders and the operator's actions are central's
  dispatcher's (bridge/web/routes_incidents.py, the same routes as a box's).
- A station's operator sees their station, a 分局's its stations, a city-wide operator all (bridge/web/scope.py), in
  the opening view and in the live events alike; the page's station filter narrows the wall further.

    GET /api/console/state   operator   as a box's, plus `central: true` and `stations` (those of the user's scope)
    GET /api/channels        operator   the channels' states (the page polls it)
    GET /api/activity        operator   transmissions per channel per bucket (?minutes=60&bucket_s=60)
    WS  /api/events          operator   channel (keyed up or down), utterance, transcript and incident events of the
                                        user's stations
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, Query, WebSocket

from asr.store import transcript_of_row
from asr.transcript import Transcript
from bridge.bus import BusEvent, EventBus
from bridge.central_archive import CentralArchive
from bridge.config import Config
from bridge.db import connect_postgres
from bridge.nodes import station_of
from bridge.region import Region
from bridge.web.auth import require
from bridge.web.context import WebContext, web_context
from bridge.web.routes_console import activity_buckets, pump_bus_events
from bridge.web.routes_incidents import OPERATOR, console_incidents, incident_views, scoped_responders
from bridge.web.scope import allowed_stations, channel_in_scope
from bridge.web.users import User
from dispatch.dispatcher import DispatchService

logger = logging.getLogger(__name__)

LIVE_TOPICS = {"channel", "utterance", "transcript", "incident"}  # what central's bus carries
CONNECT_TIMEOUT_S = 3


class CentralReadings:
    """The console's reads of PostgreSQL (the reader's connection, opened when first needed and again after a loss;
    one query at a time)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def another(self) -> CentralReadings:
        """Readings of the same database on a connection of their own (for a long query: close it after)."""
        return CentralReadings(self._url)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            try:
                if self._conn is None:  # within seconds or not at all: incidents' words are read on the event loop
                    self._conn = connect_postgres(self._url, timeout_s=CONNECT_TIMEOUT_S)
                return self._conn.execute(sql, args).fetchall()
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None  # the next read opens a new one, once PostgreSQL is back
                raise

    def recent(self, limit: int, stations: Collection[str]) -> list[dict[str, Any]]:
        """The stations' newest transcripts, newest first, as a box's console has them."""
        rows = self._query("SELECT * FROM transcripts WHERE split_part(utterance_id, '.', 1) = ANY(%s)"
                           " ORDER BY start_ms DESC LIMIT %s", (list(stations), limit))  # fmt: skip
        return [{"utterance_id": r["utterance_id"], "channel": r["channel"], "start": r["start_ms"] / 1000,
                 **transcript_of_row(r).to_dict()} for r in rows]  # fmt: skip

    def get(self, utterance_id: str) -> Transcript | None:
        """An utterance's transcript (for an incident's words); None when there is none or PostgreSQL is away: the
        incident is shown without its words rather than not at all."""
        return self.get_many([utterance_id]).get(utterance_id)

    def get_many(self, utterance_ids: Collection[str]) -> dict[str, Transcript]:
        """The transcripts of those utterances that have one, in one query (none when PostgreSQL is away)."""
        try:
            rows = self._query("SELECT * FROM transcripts WHERE utterance_id = ANY(%s)", (list(utterance_ids),))
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            logger.warning("incidents' words cannot be read from PostgreSQL now (%s)", type(e).__name__)
            return {}
        return {r["utterance_id"]: transcript_of_row(r) for r in rows}

    def transmissions(self, since_ms: int, stations: Collection[str]) -> list[dict[str, Any]]:
        """Every utterance the stations' edges forwarded since `since_ms`: its channel (central's name), start, duration."""
        rows = self._query(
            "SELECT id, station || '.' || channel AS channel, start_ms, duration_ms FROM node_utterances"
            " WHERE start_ms >= %s AND station = ANY(%s) ORDER BY start_ms", (since_ms, list(stations)),
        )  # fmt: skip
        return [_transmission(r) for r in rows]

    def channel_days(self, since_ms: int, stations: Collection[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """Per channel heard since `since_ms` (central's name): how many utterances, and the latest of them."""
        rows = self._query(
            "SELECT DISTINCT ON (station, channel) id, station || '.' || channel AS channel, start_ms, duration_ms,"
            " count(*) OVER (PARTITION BY station, channel) AS n FROM node_utterances"
            " WHERE start_ms >= %s AND station = ANY(%s) ORDER BY station, channel, start_ms DESC",
            (since_ms, list(stations)),
        )  # fmt: skip
        return {r["channel"]: (r["n"], _transmission(r)) for r in rows}

    def hourly(self, since_ms: int, until_ms: int, stations: Collection[str]) -> list[dict[str, Any]]:
        """Utterances the stations' edges forwarded in [since_ms, until_ms), counted per channel (central's name) and
        hour since the epoch (`hour`): the statistics turn each into an hour of their own clock's day."""
        return self._query(
            "SELECT station || '.' || channel AS channel, start_ms / 3600000 AS hour, count(*) AS n FROM node_utterances"
            " WHERE start_ms >= %s AND start_ms < %s AND station = ANY(%s) GROUP BY 1, 2",
            (since_ms, until_ms, list(stations)),
        )  # fmt: skip


def _transmission(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "channel": row["channel"], "start": row["start_ms"] / 1000, "duration": row["duration_ms"] / 1000}


@dataclass(slots=True)
class CentralSite:
    """What the shared routes read from `web.service` at central: its config, its copy of the stations' archives
    (their chains and audio, verified), its dispatcher (None when no station of the region names a jurisdiction file),
    the transcripts as the console reads them, and the bus the ingest and the dispatcher publish on. An officer may
    replay the calls of central's incidents he was sent to, as on a box (bridge/web/routes_archive.py)."""

    config: Config
    archive: CentralArchive
    region: Region | None = None
    dispatch: DispatchService | None = None
    transcripts: CentralReadings | None = None
    bus: EventBus = field(default_factory=EventBus)

    def stations(self, user: User, web: WebContext) -> list[dict[str, str]]:
        """The stations `user` may see, as the region file names them, in its order."""
        if self.region is None:
            return []
        allowed = allowed_stations(web, user)
        return [{"id": s.id, "name": s.name} for s in self.region.stations if allowed is None or s.id in allowed]

    def channels(self, stations: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Each station's channels (its jurisdiction file's, and any other heard today) with today's transmissions."""
        assert self.transcripts is not None
        midnight = time.mktime((*time.localtime()[:3], 0, 0, 0, 0, 0, -1))
        heard = self.transcripts.channel_days(int(midnight * 1000), [s["id"] for s in stations])
        named = {c.id: c.name for c in self.dispatch.jurisdiction.channels} if self.dispatch is not None else {}
        names = {s["id"]: s["name"] for s in stations}
        states: dict[str, dict[str, Any]] = {}
        for channel in [*named, *heard]:
            station, own = channel.split(".", 1)
            if station in names and channel not in states:
                count, last = heard.get(channel, (0, None))
                states[channel] = {"id": channel, "name": f"{names[station]} · {named.get(channel, own)}",
                                   "station": station, "running": True, "talking": False, "level_dbfs": -120.0,
                                   "utterances": count, "last_utterance": last, "faults": [], "active_faults": 0}  # fmt: skip
        return sorted(states.values(), key=lambda s: (list(names).index(s["station"]), s["id"]))


def central_console_router(tile_url: str | None) -> APIRouter:
    router = APIRouter()

    @router.get("/api/console/state")
    async def console_state(ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> dict[str, Any]:
        site: CentralSite = ctx.service  # type: ignore[assignment]
        assert site.transcripts is not None
        stations = site.stations(user, ctx)
        ids = [s["id"] for s in stations]
        channels = await asyncio.to_thread(site.channels, stations)
        dispatch = site.dispatch
        jurisdiction = None
        if dispatch is not None:
            j = dispatch.jurisdiction
            places = [p.model_dump() for p in j.places if station_of(p.id) in ids]
            jurisdiction = {"name": j.name, "station": "", "center": j.center.model_dump(), "places": places,
                            "channels": [c.model_dump() for c in j.channels if station_of(c.id) in ids]}  # fmt: skip
        return {
            "user": user.to_dict(),
            "central": True,
            "stations": stations,
            "channels": channels,
            "transmitters": [],
            "patches": [],
            "jurisdiction": jurisdiction,
            "responders": scoped_responders(ctx, user) if dispatch is not None else [],
            "incidents": await incident_views(ctx, console_incidents(ctx, user)),
            "transcripts": await asyncio.to_thread(site.transcripts.recent, 30, ids),
            "activity": await asyncio.to_thread(_activity, site, stations, channels, 60, 60),
            "tile_url": tile_url,
        }

    @router.get("/api/channels")
    async def channels(ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> list[dict[str, Any]]:
        site: CentralSite = ctx.service  # type: ignore[assignment]
        return await asyncio.to_thread(site.channels, site.stations(user, ctx))

    @router.get("/api/activity")
    async def activity(
        minutes: int = Query(60, ge=1, le=24 * 60), bucket_s: int = Query(60, ge=10, le=3600),
        ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR),
    ) -> dict[str, Any]:  # fmt: skip
        site: CentralSite = ctx.service  # type: ignore[assignment]
        stations = site.stations(user, ctx)
        channels = await asyncio.to_thread(site.channels, stations)
        return await asyncio.to_thread(_activity, site, stations, channels, minutes, bucket_s)

    @router.websocket("/api/events")
    async def events(ws: WebSocket, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> None:
        def in_scope(event: BusEvent) -> dict[str, Any] | None:
            data = event.data
            channel = data["after"]["channel"] if event.topic == "incident" else data["id"] if event.topic == "channel" \
                else data["channel"]
            return {"topic": event.topic, "data": event.data} if channel_in_scope(ctx, user, channel) else None

        await pump_bus_events(ws, ctx, LIVE_TOPICS, in_scope)

    return router


def _activity(site: CentralSite, stations: list[dict[str, str]], channels: list[dict[str, Any]], minutes: int,
              bucket_s: int) -> dict[str, Any]:  # fmt: skip
    assert site.transcripts is not None
    readings, ids = site.transcripts, [s["id"] for s in stations]

    def starts(since: float) -> list[tuple[str, float]]:
        return [(u["channel"], u["start"]) for u in readings.transmissions(int(since * 1000), ids)]

    return activity_buckets([c["id"] for c in channels], starts, minutes, bucket_s)
