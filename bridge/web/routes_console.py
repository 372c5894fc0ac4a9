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
    GET  /api/incidents                operator      recent incidents (?open=true: only those still open), as views
    GET  /api/incidents/{id}           operator      one incident view: incident + responders (distance, ack) + timeline
    POST /api/incidents/{id}/status    operator      {"status": on_scene|resolved|followed_up|closed_false_alarm, "note"}
    POST /api/incidents/{id}/notes     operator      {"text"}
    POST /api/incidents/{id}/dispatch  operator      {"responders": [id, ...]}  dispatch / re-dispatch (alerts them)
    POST /api/incidents/{id}/confirm   operator      {"type", "priority"?}: a 待确认 incident takes that type (priority by
                                                     default the type's) and is dispatched as a certain report is
    POST /api/incidents/{id}/dismiss   operator      {"reason"?}: a 待确认 incident is not a report: closed, `dismissed`
                                                     (both: the same request again changes nothing; 409 when the
                                                     incident is not awaiting confirmation, 422 for an unknown type)
    GET  /api/responders               operator      every responder: role, status, position (GPS fix or post)
    POST /api/responders/{id}/status   operator      {"status": available|busy|off_duty}: the MQTT status path (logged
                                                     with the operator's name)
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

Incident views are read on the event loop thread, which is the one the dispatcher's SQLite connection belongs to.
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
from bridge.web.sockets import until_client_leaves
from bridge.web.users import Role, User
from dispatch.config import Priority
from dispatch.incidents import OPEN, Incident, IncidentError, Status
from dispatch.positions import PayloadError, parse_location
from dispatch.responders import parse_status

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"login": "login.html", "console": "console.html", "guard": "guard.html", "auditor": "auditor.html",
         "stats": "stats.html"}
LIVE_TOPICS = {"channel", "level", "utterance", "partial", "transcript", "incident", "fault", "task", "patrol"}
RESPONDER_MAX_AGE_S = 900.0  # a phone fix older than this is shown at the responder's post instead
CONSOLE_RECENT = 30  # incidents the console loads at start besides every open one
CONSOLE_OPEN_MAX = 200
OPERATOR = (Role.OPERATOR,)
RESPONDER = (Role.GUARD, Role.OFFICER)
OPERATOR_STATUSES = {Status.ON_SCENE, Status.RESOLVED, Status.FOLLOWED_UP, Status.CLOSED_FALSE_ALARM}
WITHDRAWN_SHOWN_S = 600.0  # a guard's page shows an alert it was stood down from for this long


class StatusBody(BaseModel):
    status: Status
    note: str = Field("", max_length=500)


class NoteBody(BaseModel):
    text: str = Field(min_length=1, max_length=1000)


class DispatchBody(BaseModel):
    responders: list[str] = Field(min_length=1, max_length=50)


class ConfirmBody(BaseModel):
    type: str = Field(min_length=1, max_length=40, description="An incident type of the lexicon (fight, theft, ...).")
    priority: Priority | None = Field(None, description="The type's default priority when absent.")


class DismissBody(BaseModel):
    reason: str = Field("", max_length=500)


class AckBody(BaseModel):
    incident_id: str = Field(min_length=1, max_length=100)
    status: str = Field("ack", pattern="^(ack|on_scene|declined)$")


class ResponderStatusBody(BaseModel):
    status: str = Field(max_length=20, description="available, busy or off_duty (checked as the MQTT status is).")


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
            "incidents": [incident_view(ctx, i) for i in _console_incidents(ctx)],
            "transcripts": await asyncio.to_thread(service.transcripts.recent, 30),
            "activity": await asyncio.to_thread(activity, ctx, 60, 60),
            "tile_url": tile_url,
        }

    @router.websocket("/api/events")
    async def events(ws: WebSocket, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> None:
        await _pump(ws, ctx, LIVE_TOPICS, lambda event: {"topic": event.topic, "data": event.data})

    @router.get("/api/incidents")
    async def incidents(
        open: bool = False, limit: int = Query(50, ge=1, le=500),
        ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR),
    ) -> list[dict[str, Any]]:  # fmt: skip
        return [incident_view(ctx, i) for i in _incidents(ctx, open_only=open, limit=limit)]

    @router.get("/api/incidents/{incident_id}")
    async def incident(incident_id: str, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> dict:
        return incident_view(ctx, _incident(ctx, incident_id))

    @router.post("/api/incidents/{incident_id}/status")
    async def set_status(
        incident_id: str, body: StatusBody, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        if body.status not in OPERATOR_STATUSES:
            raise HTTPException(422, f"an operator sets on_scene, resolved, followed_up or closed_false_alarm, not {body.status}")
        return _act(ctx, incident_id, lambda d: d.set_status(incident_id, body.status, actor=user.name, note=body.note))

    @router.post("/api/incidents/{incident_id}/notes")
    async def add_note(
        incident_id: str, body: NoteBody, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        return _act(ctx, incident_id, lambda d: d.add_note(incident_id, body.text, actor=user.name))

    @router.post("/api/incidents/{incident_id}/dispatch")
    async def redispatch(
        incident_id: str, body: DispatchBody, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        return _act(ctx, incident_id, lambda d: d.reassign(incident_id, body.responders, actor=user.name))

    @router.post("/api/incidents/{incident_id}/confirm")
    async def confirm(
        incident_id: str, body: ConfirmBody, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        return _act(ctx, incident_id, lambda d: d.confirm(incident_id, body.type, body.priority, actor=user.name))

    @router.post("/api/incidents/{incident_id}/dismiss")
    async def dismiss(
        incident_id: str, body: DismissBody | None = None, ctx: WebContext = Depends(web_context),
        user: User = require(*OPERATOR),
    ) -> dict[str, Any]:  # fmt: skip
        reason = body.reason if body else ""
        return _act(ctx, incident_id, lambda d: d.dismiss(incident_id, actor=user.name, reason=reason))

    @router.get("/api/responders")
    async def responders(ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> list[dict[str, Any]]:
        return _dispatch(ctx).board.snapshot(RESPONDER_MAX_AGE_S)

    @router.post("/api/responders/{responder_id}/status")
    async def set_responder_status(
        responder_id: str, body: ResponderStatusBody, ctx: WebContext = Depends(web_context),
        user: User = require(*OPERATOR),
    ) -> dict[str, Any]:  # fmt: skip
        try:
            before = _dispatch(ctx).board.status(responder_id)
        except KeyError as e:
            raise HTTPException(404, str(e)) from e
        row = await _set_responder_status(ctx, responder_id, body.status)
        logger.info("%s %s set responder %s from %s to %s", user.role, user.name, responder_id, before, row["status"])
        return row

    @router.get("/api/activity")
    async def channel_activity(
        minutes: int = Query(60, ge=1, le=24 * 60), bucket_s: int = Query(60, ge=10, le=3600),
        ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR),
    ) -> dict[str, Any]:  # fmt: skip
        return await asyncio.to_thread(activity, ctx, minutes, bucket_s)

    # --- guards and officers --------------------------------------------------------------------------------------

    @router.get("/api/me/alerts")
    async def my_alerts(ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> dict[str, Any]:
        rid = _responder_id(ctx, user)
        mine = [incident_view(ctx, i) for i in _incidents(ctx, open_only=True, limit=200) if rid in i.assigned]
        responder = ctx.service.dispatch.jurisdiction.responder(rid).model_dump() | _responder_row(ctx, rid)
        return {"responder": responder, "alerts": mine, "withdrawn": _withdrawn(ctx, rid)}

    @router.websocket("/api/me/live")
    async def my_live(ws: WebSocket, ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> None:
        rid = user.responder_id

        def mine(event: BusEvent) -> dict[str, Any] | None:
            after, before = event.data["after"], event.data["before"] or {"assigned": []}
            if rid not in after["assigned"] and rid not in before["assigned"]:  # neither alerted nor stood down
                return None
            return {"topic": "alert", "data": incident_view(ctx, _incident(ctx, after["id"]))}

        await _pump(ws, ctx, {"incident"}, mine)

    @router.post("/api/me/ack")
    async def ack(body: AckBody, ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> dict[str, Any]:
        rid = _responder_id(ctx, user)
        dispatcher = ctx.service.dispatch.dispatcher
        # refused before the ack path counts it: 404, and 403 for an incident this responder was not alerted to
        # (or was stood down from), whose details and lifecycle are not theirs
        if rid not in _incident(ctx, body.incident_id).assigned:
            raise HTTPException(403, f"{rid} was not alerted for incident {body.incident_id}")
        # exactly what a phone's MQTT ack does: same topic parsing, payload checks, lifecycle and timeline (the same
        # answer twice changes nothing)
        await dispatcher.on_message(dispatcher.topics.ack(rid), json.dumps(body.model_dump()).encode())
        return incident_view(ctx, _incident(ctx, body.incident_id))

    @router.post("/api/me/position")
    async def position(body: PositionBody, ctx: WebContext = Depends(web_context), user: User = require(*RESPONDER)) -> dict:
        rid = _responder_id(ctx, user)
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
        return await _set_responder_status(ctx, _responder_id(ctx, user), body.status)

    router.include_router(audio_router())
    return router


# --- helpers ------------------------------------------------------------------------------------------------------


async def _pump(
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


def _dispatch(ctx: WebContext) -> Any:
    if ctx.service.dispatch is None:
        raise HTTPException(503, "dispatch is disabled in this service's configuration")
    return ctx.service.dispatch


def _incidents(ctx: WebContext, *, open_only: bool, limit: int) -> list[Incident]:
    if ctx.service.dispatch is None:
        return []
    recent = ctx.service.dispatch.dispatcher.store.list(limit=limit if not open_only else max(limit, 500))
    return [i for i in recent if i.status in OPEN][:limit] if open_only else recent


def _console_incidents(ctx: WebContext) -> list[Incident]:
    """Every open incident (however old: nobody has closed it) and the most recent closed ones, newest first."""
    recent = _incidents(ctx, open_only=False, limit=CONSOLE_RECENT)
    still_open = _incidents(ctx, open_only=True, limit=CONSOLE_OPEN_MAX)
    merged = {i.id: i for i in [*still_open, *recent]}
    return sorted(merged.values(), key=lambda i: i.created_at, reverse=True)


def _incident(ctx: WebContext, incident_id: str) -> Incident:
    incident = _dispatch(ctx).dispatcher.store.get(incident_id)
    if incident is None:
        raise HTTPException(404, f"no incident {incident_id!r}")
    return incident


def _act(ctx: WebContext, incident_id: str, action: Callable[[Any], Incident]) -> dict[str, Any]:
    dispatcher = _dispatch(ctx).dispatcher
    _incident(ctx, incident_id)
    try:
        incident = action(dispatcher)
    except IncidentError as e:
        raise HTTPException(409, str(e)) from e
    except KeyError as e:  # an unknown responder id or incident type
        raise HTTPException(422, str(e.args[0])) from e
    return incident_view(ctx, incident)


def _responder_id(ctx: WebContext, user: User) -> str:
    _dispatch(ctx)
    if not user.responder_id:
        raise HTTPException(409, f"user {user.name} is not linked to a responder (jingbao user add --responder ID)")
    try:
        ctx.service.dispatch.jurisdiction.responder(user.responder_id)
    except KeyError as e:
        raise HTTPException(409, str(e.args[0])) from e
    return user.responder_id


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


def _responder_row(ctx: WebContext, responder_id: str) -> dict[str, Any]:
    """The responder as the console's list has it: name, role, status, the incident it is busy on, position."""
    return next(r for r in ctx.service.dispatch.board.snapshot(RESPONDER_MAX_AGE_S) if r["id"] == responder_id)


async def _set_responder_status(ctx: WebContext, responder_id: str, status: str) -> dict[str, Any]:
    """Exactly what a phone's `<prefix>/status/<responder_id>` message does (same payload checks, same board update,
    same log line); 422 for a status that path would reject. Returns the responder's row as it is now."""
    payload = json.dumps({"status": status}).encode()
    try:
        parse_status(payload)
    except PayloadError as e:
        raise HTTPException(422, str(e)) from e
    dispatcher = ctx.service.dispatch.dispatcher
    await dispatcher.on_message(dispatcher.topics.status(responder_id), payload)
    return _responder_row(ctx, responder_id)


def incident_view(ctx: WebContext, incident: Incident) -> dict[str, Any]:
    """The incident as the pages show it: its fields, the words of its latest report, who was alerted (name, distance,
    why, ack state), its timeline."""
    dispatch = ctx.service.dispatch
    timeline = dispatch.dispatcher.store.timeline(incident.id)
    responders: dict[str, dict[str, Any]] = {}
    for entry in timeline:
        if entry.kind in ("alerted", "escalated"):
            for sent in entry.detail.get("sent", []):
                responders.setdefault(sent["id"], {"id": sent["id"], "distance_m": sent.get("distance_m"),
                                                   "reason": sent.get("reason", entry.kind), "alerted_at": entry.ts})
        elif entry.kind == "reassigned":
            for rid in entry.detail.get("to", []):
                responders.setdefault(rid, {"id": rid, "distance_m": None, "reason": "assigned", "alerted_at": entry.ts})
        elif entry.kind == "ack" and entry.actor in responders:
            responders[entry.actor]["ack"] = entry.detail.get("status")
    for rid, r in responders.items():
        with contextlib.suppress(KeyError):
            who = dispatch.jurisdiction.responder(rid)
            r.update(name=who.name, role=who.role, channel=who.channel)
        r.setdefault("ack", None)
        r["assigned"] = rid in incident.assigned
        if r["distance_m"] is not None:
            r["distance_m"] = round(r["distance_m"])
    return incident.to_dict() | _words_said(ctx, incident) | {"responders": list(responders.values()),
                                                             "timeline": [e.to_dict() for e in timeline]}


def _words_said(ctx: WebContext, incident: Incident) -> dict[str, Any]:
    """The timed syllables and spotted keywords of the incident's latest report, so that a pinyin-only transcript
    is shown with its keywords as Chinese names (as in the transcript feed); nothing when it was not transcribed."""
    if not incident.utterance_ids:
        return {}
    transcript = ctx.service.transcripts.get(incident.utterance_ids[-1])
    if transcript is None:
        return {}
    said = transcript.to_dict()
    return {"words": said["words"], "keywords": said["keywords"]}


def activity(ctx: WebContext, minutes: int, bucket_s: int) -> dict[str, Any]:
    """Utterances started per channel in each `bucket_s` bucket of the last `minutes` (oldest bucket first)."""
    now = time.time()
    buckets = max(1, minutes * 60 // bucket_s)
    start = (now // bucket_s + 1) * bucket_s - buckets * bucket_s
    counts = {ch.config.id: [0] * buckets for ch in ctx.service.channels}
    for utt in ctx.service.archive.list(since=start, limit=100_000):
        i = int((utt.start_ms / 1000 - start) // bucket_s)
        if utt.channel in counts and 0 <= i < buckets:
            counts[utt.channel][i] += 1
    return {"start": start, "bucket_s": bucket_s, "counts": counts}
