"""What the console, guard and auditor pages need beyond the core web API (login, search, replay): the
pages themselves, incidents with their responders and timeline, operator actions, channel activity, and the guard's
own alerts, acknowledgements and position. The audio WebSockets (listen, talk back, push-to-talk) are in
`routes_audio`.

    GET  /  /login  /console  /guard  /auditor  /stats  the pages (static HTML; the data behind them checks roles)
    GET  /static/{path}                               their scripts, styles and the vendored Leaflet
    GET  /api/console/state            operator      channels, jurisdiction, responders, incidents (every open one and
                                                     the 30 latest), recent transcripts, activity, map tile URL:
                                                     everything a console draws at load
    WS   /api/events                   operator      {"topic", "data"} for every live bus event: channel, level,
                                                     utterance, partial, transcript, incident, fault, task, patrol
    ...                                operator      the incidents and responders: bridge/web/routes_incidents.py
    GET  /api/activity                 operator      utterances per channel per bucket (?minutes=60&bucket_s=60)
    GET  /api/me/alerts                guard|officer the open incidents the logged-in responder was alerted to, and
                                                     the responder's status (and the incident it is busy on);
                                                     `withdrawn`: those it was stood down from in the last 10 minutes
                                                     (a provisional alert the final transcript retracted or re-routed)
    WS   /api/me/live                  guard|officer {"topic": "alert", "data": view} when one of those changes (or the
                                                     responder is stood down from one)
    POST /api/me/ack                   guard|officer {"incident_id", "status": ack|on_scene|declined}: the MQTT ack path,
                                                     for an incident the responder is alerted to (else 403); the
                                                     same answer again changes nothing
    POST /api/me/position              guard|officer {"lat", "lon", "acc"?, "tst"?}: the OwnTracks path
    POST /api/me/status                guard|officer {"status": available|busy|off_duty}: the MQTT status path

"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from bridge.bus import BusEvent
from bridge.web.auth import require
from bridge.web.context import WebContext, web_context
from bridge.web.routes_audio import audio_router
from bridge.web.routes_incidents import (
    OPERATOR,
    RESPONDER_MAX_AGE_S,
    ResponderStatusBody,
    console_incidents,
    find_incident,
    incident_view,
    incident_views,
    incidents_router,
    list_incidents,
    responder_id_of,
    responder_row,
    set_responder_status_as_phone,
)
from bridge.web.sockets import until_client_leaves
from bridge.web.users import Role, User
from dispatch.incidents import OPEN
from dispatch.positions import PayloadError, parse_location

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"login": "login.html", "console": "console.html", "guard": "guard.html", "auditor": "auditor.html",
         "stats": "stats.html"}
LIVE_TOPICS = {"channel", "level", "utterance", "partial", "transcript", "incident", "fault", "task", "patrol"}
RESPONDER = (Role.GUARD, Role.OFFICER)
WITHDRAWN_SHOWN_S = 600.0  # a guard's page shows an alert it was stood down from for this long


class AckBody(BaseModel):
    incident_id: str = Field(min_length=1, max_length=100)
    status: str = Field("ack", pattern="^(ack|on_scene|declined)$")


class PositionBody(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    acc: float | None = Field(None, ge=0)
    tst: float | None = Field(None, gt=0, description="When the fix was taken (epoch s); now if absent.")


def pages_router(pages: Mapping[str, str] = PAGES) -> APIRouter:
    """The pages (`/<name>`, `/` to the login page) and their static files; `pages`: which of them a service serves
    (the central tier: the login and auditor pages only)."""
    router = APIRouter()
    static = StaticFiles(directory=STATIC)

    @router.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/login")

    for name, filename in pages.items():
        router.add_api_route(f"/{name}", _page(STATIC / filename), include_in_schema=False)

    @router.get("/static/{path:path}", include_in_schema=False)
    async def static_file(path: str, request: Request) -> Response:
        return await static.get_response(path, request.scope)  # refuses paths outside the folder

    return router


def console_router(tile_url: str | None = None) -> APIRouter:
    """`tile_url`: a Leaflet tile URL template for the console map; None draws the jurisdiction on a plain background."""
    router = APIRouter()
    router.include_router(pages_router())
    router.include_router(incidents_router())

    # --- operator -----------------------------------------------------------------------------------------------

    @router.get("/api/console/state")
    async def console_state(ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> dict[str, Any]:
        service = ctx.service
        dispatch = service.dispatch
        jurisdiction = dispatch.jurisdiction if dispatch is not None else None
        return {
            "user": user.to_dict(),
            "channels": service.channel_states(),
            "transmitters": sorted(service.transmitters),
            "patches": service.radios.patches.list(),
            "jurisdiction": jurisdiction.model_dump(include={"name", "station", "center", "channels", "places"})
            if jurisdiction else None,
            "responders": dispatch.board.snapshot(RESPONDER_MAX_AGE_S) if dispatch is not None else [],
            "incidents": await incident_views(ctx, console_incidents(ctx, user)),
            "transcripts": await asyncio.to_thread(service.transcripts.recent, 30),
            "activity": await asyncio.to_thread(activity, ctx, 60, 60),
            "tile_url": tile_url,
        }

    @router.websocket("/api/events")
    async def events(ws: WebSocket, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> None:
        await pump_bus_events(ws, ctx, LIVE_TOPICS, lambda event: {"topic": event.topic, "data": event.data})

    @router.get("/api/activity")
    async def channel_activity(
        minutes: int = Query(60, ge=1, le=24 * 60), bucket_s: int = Query(60, ge=10, le=3600),
        ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR),
    ) -> dict[str, Any]:  # fmt: skip
        return await asyncio.to_thread(activity, ctx, minutes, bucket_s)

    # --- guards and officers --------------------------------------------------------------------------------------

    @router.get("/api/me/alerts")
    async def my_alerts(ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> dict[str, Any]:
        rid = responder_id_of(ctx, user)
        mine = [incident_view(ctx, i) for i in list_incidents(ctx, open_only=True, limit=200) if rid in i.assigned]
        responder = ctx.service.dispatch.jurisdiction.responder(rid).model_dump() | responder_row(ctx, rid)
        return {"responder": responder, "alerts": mine, "withdrawn": _withdrawn(ctx, rid)}

    @router.websocket("/api/me/live")
    async def my_live(ws: WebSocket, ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> None:
        rid = user.responder_id

        def mine(event: BusEvent) -> dict[str, Any] | None:
            after, before = event.data["after"], event.data["before"] or {"assigned": []}
            if rid not in after["assigned"] and rid not in before["assigned"]:  # neither alerted nor stood down
                return None
            return {"topic": "alert", "data": incident_view(ctx, find_incident(ctx, after["id"]))}

        await pump_bus_events(ws, ctx, {"incident"}, mine)

    @router.post("/api/me/ack")
    async def ack(body: AckBody, ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> dict[str, Any]:
        rid = responder_id_of(ctx, user)
        dispatcher = ctx.service.dispatch.dispatcher
        # refused before the ack path counts it: 404, and 403 for an incident this responder was not alerted to
        # (or was stood down from), whose details and lifecycle are not theirs
        if rid not in find_incident(ctx, body.incident_id).assigned:
            raise HTTPException(403, f"{rid} was not alerted for incident {body.incident_id}")
        # exactly what a phone's MQTT ack does: same topic parsing, payload checks, lifecycle and timeline (the same
        # answer twice changes nothing)
        await dispatcher.on_message(dispatcher.topics.ack(rid), json.dumps(body.model_dump()).encode())
        return incident_view(ctx, find_incident(ctx, body.incident_id))

    @router.post("/api/me/position")
    async def position(body: PositionBody, ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> dict:
        rid = responder_id_of(ctx, user)
        payload = json.dumps({"_type": "location", "lat": body.lat, "lon": body.lon, "acc": body.acc,
                              "tst": body.tst or time.time()}).encode()
        try:
            parse_location(payload)
        except PayloadError as e:
            raise HTTPException(422, str(e)) from e
        await ctx.service.dispatch.dispatcher.on_message(f"owntracks/{rid}/web", payload)  # as OwnTracks would publish
        located = ctx.service.dispatch.board.locate(rid, RESPONDER_MAX_AGE_S)
        return {"responder": rid, "lat": located.lat, "lon": located.lon, "position": located.source}

    @router.post("/api/me/status")
    async def my_status(
        body: ResponderStatusBody, ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)
    ) -> dict[str, Any]:
        return await set_responder_status_as_phone(ctx, responder_id_of(ctx, user), body.status)

    router.include_router(audio_router())
    return router


# --- helpers ------------------------------------------------------------------------------------------------------


async def pump_bus_events(
    ws: WebSocket, ctx: WebContext, topics: set[str], render: Callable[[BusEvent], dict[str, Any] | None]
) -> None:
    """Send rendered bus events to the client until it goes away; what the client sends is read only to notice that
    (and a client that sends what a feed never takes is closed)."""
    await ws.accept()
    sub = ctx.service.bus.subscribe(topics, maxsize=500)

    async def send() -> None:
        while True:
            message = render(await sub.get())
            if message is not None:
                await ws.send_text(json.dumps(message, ensure_ascii=False, default=str))

    tasks = [asyncio.create_task(send()), asyncio.create_task(until_client_leaves(ws))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ctx.service.bus.unsubscribe(sub)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task  # a send to a client already gone ends here, quietly


def _page(path: Path) -> Callable[[], Awaitable[FileResponse]]:
    async def page() -> FileResponse:
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    return page


def _withdrawn(ctx: WebContext, responder_id: str) -> list[dict[str, Any]]:
    """Incidents the responder was alerted to and then stood down from (a retraction sent to the phone) in the last
    WITHDRAWN_SHOWN_S, newest first: the view with `withdrawn` = why (retracted, rerouted, requeued, merged)."""
    store, since = ctx.service.dispatch.dispatcher.store, time.time() - WITHDRAWN_SHOWN_S
    out = []
    for incident in store.list(limit=200):
        if incident.updated_at < since or (incident.status in OPEN and responder_id in incident.assigned):
            continue
        change = next((e.detail.get("change") for e in reversed(store.timeline(incident.id))
                       if e.kind == "withdrawn" and responder_id in e.detail.get("responders", ())), None)  # fmt: skip
        if change is not None:
            out.append(incident_view(ctx, incident) | {"withdrawn": change})
    return out


def activity(ctx: WebContext, minutes: int, bucket_s: int) -> dict[str, Any]:
    """The box's channels' utterances, as `activity_buckets` counts them."""

    def starts(since: float) -> list[tuple[str, float]]:
        return [(u.channel, u.start_ms / 1000) for u in ctx.service.archive.list(since=since, limit=100_000)]

    return activity_buckets([ch.config.id for ch in ctx.service.channels], starts, minutes, bucket_s)


def activity_buckets(channels: list[str], starts: Callable[[float], list[tuple[str, float]]], minutes: int,
                     bucket_s: int) -> dict[str, Any]:  # fmt: skip
    """Utterances started per channel in each `bucket_s` bucket of the last `minutes` (oldest bucket first);
    `starts(since)`: (channel, start) of each utterance begun since then."""
    now = time.time()
    buckets = max(1, minutes * 60 // bucket_s)
    start = (now // bucket_s + 1) * bucket_s - buckets * bucket_s
    counts = {channel: [0] * buckets for channel in channels}
    for channel, began in starts(start):
        i = int((began - start) // bucket_s)
        if channel in counts and 0 <= i < buckets:
            counts[channel][i] += 1
    return {"start": start, "bucket_s": bucket_s, "counts": counts}
