"""The incidents and responders an operator works with, on a box and at the central tier alike: the incident queue
with its responders and timeline, the operator's actions on an incident, and the responders' board.

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

At central an operator scoped to a station or a 分局 (bridge/web/scope.py) sees and acts on the incidents heard on
their stations' channels and the responders of their stations only: another station's incident is 404 to them, as
is another station's responder. On a box (no region) every operator sees everything.

Incident views are read on the event loop thread, which is the one the dispatcher's SQLite connection belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from asr.transcript import Transcript
from bridge.web.auth import require
from bridge.web.context import WebContext, web_context
from bridge.web.scope import allowed_stations, channel_in_scope, responder_in_scope
from bridge.web.users import Role, User
from dispatch.config import Priority
from dispatch.incidents import Incident, IncidentError, Status
from dispatch.positions import PayloadError
from dispatch.responders import parse_status

logger = logging.getLogger(__name__)

RESPONDER_MAX_AGE_S = 900.0  # a phone fix older than this is shown at the responder's post instead
CONSOLE_RECENT = 30  # incidents the console loads at start besides every open one
CONSOLE_OPEN_MAX = 200
OPERATOR = (Role.OPERATOR,)
OPERATOR_STATUSES = {Status.ON_SCENE, Status.RESOLVED, Status.FOLLOWED_UP, Status.CLOSED_FALSE_ALARM}


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


class ResponderStatusBody(BaseModel):
    status: str = Field(max_length=20, description="available, busy or off_duty (checked as the MQTT status is).")


def incidents_router() -> APIRouter:
    router = APIRouter()

    @router.get("/api/incidents")
    async def incidents(
        open: bool = False, limit: int = Query(50, ge=1, le=500),
        ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR),
    ) -> list[dict[str, Any]]:  # fmt: skip
        return await incident_views(ctx, list_incidents(ctx, open_only=open, limit=limit, user=user))

    @router.get("/api/incidents/{incident_id}")
    async def incident(incident_id: str, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> dict:
        return incident_view(ctx, find_incident(ctx, incident_id, user))

    @router.post("/api/incidents/{incident_id}/status")
    async def set_status(
        incident_id: str, body: StatusBody, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        if body.status not in OPERATOR_STATUSES:
            raise HTTPException(422, f"an operator sets on_scene, resolved, followed_up or closed_false_alarm, not {body.status}")
        return _act(ctx, incident_id, user, lambda d: d.set_status(incident_id, body.status, actor=user.name, note=body.note))

    @router.post("/api/incidents/{incident_id}/notes")
    async def add_note(
        incident_id: str, body: NoteBody, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        return _act(ctx, incident_id, user, lambda d: d.add_note(incident_id, body.text, actor=user.name))

    @router.post("/api/incidents/{incident_id}/dispatch")
    async def redispatch(
        incident_id: str, body: DispatchBody, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        outside = [rid for rid in body.responders if not responder_in_scope(ctx, user, rid)]
        if outside:  # at central: a responder of a station beyond the operator's scope is not theirs to send
            raise HTTPException(404, f"no responder {outside[0]!r} in your scope ({user.scope})")
        return _act(ctx, incident_id, user, lambda d: d.reassign(incident_id, body.responders, actor=user.name))

    @router.post("/api/incidents/{incident_id}/confirm")
    async def confirm(
        incident_id: str, body: ConfirmBody, ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)
    ) -> dict[str, Any]:
        return _act(ctx, incident_id, user, lambda d: d.confirm(incident_id, body.type, body.priority, actor=user.name))

    @router.post("/api/incidents/{incident_id}/dismiss")
    async def dismiss(
        incident_id: str, body: DismissBody | None = None, ctx: WebContext = Depends(web_context),
        user: User = require(*OPERATOR),
    ) -> dict[str, Any]:  # fmt: skip
        reason = body.reason if body else ""
        return _act(ctx, incident_id, user, lambda d: d.dismiss(incident_id, actor=user.name, reason=reason))

    @router.get("/api/responders")
    async def responders(ctx: WebContext = Depends(web_context), user: User = require(*OPERATOR)) -> list[dict[str, Any]]:
        return scoped_responders(ctx, user)

    @router.post("/api/responders/{responder_id}/status")
    async def set_responder_status(
        responder_id: str, body: ResponderStatusBody, ctx: WebContext = Depends(web_context),
        user: User = require(*OPERATOR),
    ) -> dict[str, Any]:  # fmt: skip
        try:
            before = dispatch_of(ctx).board.status(responder_id)
        except KeyError as e:
            raise HTTPException(404, str(e)) from e
        if not responder_in_scope(ctx, user, responder_id):
            raise HTTPException(404, f"no responder {responder_id!r} in your scope ({user.scope})")
        row = await set_responder_status_as_phone(ctx, responder_id, body.status)
        logger.info("%s %s set responder %s from %s to %s", user.role, user.name, responder_id, before, row["status"])
        return row

    return router


# --- helpers ------------------------------------------------------------------------------------------------------


def dispatch_of(ctx: WebContext) -> Any:
    if ctx.service.dispatch is None:
        raise HTTPException(503, "dispatch is disabled in this service's configuration")
    return ctx.service.dispatch


def scoped_responders(ctx: WebContext, user: User) -> list[dict[str, Any]]:
    """The responders' board as the console shows it, those of the user's scope only (at central)."""
    return [r for r in dispatch_of(ctx).board.snapshot(RESPONDER_MAX_AGE_S) if responder_in_scope(ctx, user, r["id"])]


def list_incidents(ctx: WebContext, *, open_only: bool, limit: int, user: User | None = None) -> list[Incident]:
    """The newest incidents (`open_only`: those still open), `user`'s only when given (at central: of the stations
    in their scope)."""
    if ctx.service.dispatch is None:
        return []
    allowed = allowed_stations(ctx, user) if user is not None else None
    return ctx.service.dispatch.dispatcher.store.list(limit=limit, open_only=open_only, stations=allowed)


def console_incidents(ctx: WebContext, user: User) -> list[Incident]:
    """Every open incident (however old: nobody has closed it) and the most recent closed ones, newest first."""
    recent = list_incidents(ctx, open_only=False, limit=CONSOLE_RECENT, user=user)
    still_open = list_incidents(ctx, open_only=True, limit=CONSOLE_OPEN_MAX, user=user)
    merged = {i.id: i for i in [*still_open, *recent]}
    return sorted(merged.values(), key=lambda i: i.created_at, reverse=True)


def find_incident(ctx: WebContext, incident_id: str, user: User | None = None) -> Incident:
    """The incident (404 when there is none, or, `user` given, when it is not of a station in their scope)."""
    incident = dispatch_of(ctx).dispatcher.store.get(incident_id)
    if incident is None or (user is not None and not channel_in_scope(ctx, user, incident.channel)):
        raise HTTPException(404, f"no incident {incident_id!r}")
    return incident


def _act(ctx: WebContext, incident_id: str, user: User, action: Callable[[Any], Incident]) -> dict[str, Any]:
    dispatcher = dispatch_of(ctx).dispatcher
    find_incident(ctx, incident_id, user)
    try:
        incident = action(dispatcher)
    except IncidentError as e:
        raise HTTPException(409, str(e)) from e
    except KeyError as e:  # an unknown responder id or incident type
        raise HTTPException(422, str(e.args[0])) from e
    return incident_view(ctx, incident)


def responder_id_of(ctx: WebContext, user: User) -> str:
    dispatch_of(ctx)
    if not user.responder_id:
        raise HTTPException(409, f"user {user.name} is not linked to a responder (jingbao user add --responder ID)")
    try:
        ctx.service.dispatch.jurisdiction.responder(user.responder_id)
    except KeyError as e:
        raise HTTPException(409, str(e.args[0])) from e
    return user.responder_id


def responder_row(ctx: WebContext, responder_id: str) -> dict[str, Any]:
    """The responder as the console's list has it: name, role, status, the incident it is busy on, position."""
    return next(r for r in ctx.service.dispatch.board.snapshot(RESPONDER_MAX_AGE_S) if r["id"] == responder_id)


async def set_responder_status_as_phone(ctx: WebContext, responder_id: str, status: str) -> dict[str, Any]:
    """Exactly what a phone's `<prefix>/status/<responder_id>` message does (same payload checks, same board update,
    same log line); 422 for a status that path would reject. Returns the responder's row as it is now."""
    payload = json.dumps({"status": status}).encode()
    try:
        parse_status(payload)
    except PayloadError as e:
        raise HTTPException(422, str(e)) from e
    dispatcher = ctx.service.dispatch.dispatcher
    await dispatcher.on_message(dispatcher.topics.status(responder_id), payload)
    return responder_row(ctx, responder_id)


async def incident_views(ctx: WebContext, incidents: list[Incident]) -> list[dict[str, Any]]:
    """`incident_view` of each, their reports' words read in one query off the event loop (at central from
    PostgreSQL, which may take a while)."""
    latest = [i.utterance_ids[-1] for i in incidents if i.utterance_ids]
    words = await asyncio.to_thread(ctx.service.transcripts.get_many, latest) if latest else {}
    return [incident_view(ctx, i, words) for i in incidents]


def incident_view(ctx: WebContext, incident: Incident, words: Mapping[str, Transcript] | None = None) -> dict[str, Any]:
    """The incident as the pages show it: its fields, the words of its latest report (from `words` when given, else
    read), who was alerted (name, distance, why, ack state), its timeline."""
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
    return incident.to_dict() | _words_said(ctx, incident, words) | {"responders": list(responders.values()),
                                                             "timeline": [e.to_dict() for e in timeline]}


def _words_said(ctx: WebContext, incident: Incident, words: Mapping[str, Transcript] | None) -> dict[str, Any]:
    """The timed syllables and spotted keywords of the incident's latest report, so that a pinyin-only transcript
    is shown with its keywords as Chinese names (as in the transcript feed); nothing when it was not transcribed."""
    if not incident.utterance_ids:
        return {}
    latest = incident.utterance_ids[-1]
    transcript = words.get(latest) if words is not None else ctx.service.transcripts.get(latest)
    if transcript is None:
        return {}
    said = transcript.to_dict()
    return {"words": said["words"], "keywords": said["keywords"]}
