"""SOS / 一键报警 over the web (dispatch/sos.py): raised from the guard page, alarmed on the console until acknowledged.

    POST /api/me/sos                guard|officer  {"lat"?, "lon"?, "acc"?}: the logged-in responder's SOS (the caller is
                                                   the session's, never the body's), at the phone's position when it
                                                   sends one, else his last known; again within the window: the same
                                                   incident. Returns the incident and how long the page's hot
                                                   microphone stays open (WS /api/ptt?channel=..&sos=<incident id>)
    GET  /api/sos                   operator       the SOS alarms no operator has acknowledged, the latest first
    POST /api/sos/{incident_id}/ack operator       the alarm stops on every console (until the caller presses again)

Raising and acknowledging are written to the audit log (`sos`, `sos_ack`) with who and from where.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field, model_validator

from bridge.web.auth import require
from bridge.web.context import WebContext, client_address, web_context
from bridge.web.routes_incidents import dispatch_of, incident_view, responder_id_of
from bridge.web.users import Role, User
from dispatch.sos import SosCall, SosError


class SosBody(BaseModel):
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    acc: float | None = Field(None, ge=0, description="The fix's accuracy in metres.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> SosBody:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither (the last known position is used)")
        return self


def sos_router() -> APIRouter:
    router = APIRouter()

    @router.post("/api/me/sos")
    async def raise_sos(
        request: Request, body: SosBody | None = None, ctx: WebContext = Depends(web_context),
        user: User = require(Role.GUARD, Role.OFFICER),
    ) -> dict[str, Any]:  # fmt: skip
        body = body or SosBody()
        desk = dispatch_of(ctx).sos
        rid = responder_id_of(ctx, user)
        incident = desk.raise_from_phone(rid, body.lat, body.lon, body.acc)
        position = "phone" if body.lat is not None else "last known"
        ctx.audit.append(user=user.name, role=str(user.role), action="sos", target=incident.id,
                         client=client_address(request), responder=rid, position=position)  # fmt: skip
        return {"incident": incident_view(ctx, incident), "hot_mic_s": desk.rules.hot_mic_s}

    @router.get("/api/sos")
    async def alarms(ctx: WebContext = Depends(web_context), user: User = require(Role.OPERATOR)) -> dict[str, Any]:
        desk = dispatch_of(ctx).sos
        return {"alarms": [_alarm_view(ctx, call) for call in desk.alarms()]}

    @router.post("/api/sos/{incident_id}/ack")
    async def acknowledge(
        incident_id: str, request: Request, ctx: WebContext = Depends(web_context), user: User = require(Role.OPERATOR)
    ) -> dict[str, Any]:
        try:
            call = dispatch_of(ctx).sos.acknowledge(incident_id, actor=user.name)
        except SosError as e:
            raise HTTPException(404, str(e)) from e
        ctx.audit.append(user=user.name, role=str(user.role), action="sos_ack", target=incident_id,
                         client=client_address(request))  # fmt: skip
        return _alarm_view(ctx, call)

    return router


def _alarm_view(ctx: WebContext, call: SosCall) -> dict[str, Any]:
    """The SOS as the console's alarm shows it: the call (who, how, how many presses) and its incident's view."""
    desk, store = ctx.service.dispatch.sos, ctx.service.dispatch.dispatcher.store
    incident = store.require(call.incident_id)
    return call.to_dict() | {"caller_name": desk.caller_name(call), "incident": incident_view(ctx, incident)}
