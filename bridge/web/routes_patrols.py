"""Patrols (巡更, dispatch/patrols.py) on the web.

    GET  /api/patrols                 operator|auditor  every route: points, patrollers, the rounds of the last 12 h
                                                        and the next, each with its check-ins; the missed check-ins;
                                                        `left_post`: guards who left their post (dispatch/geofence.py)
    GET  /api/me/patrols              guard|officer     his routes, each with the round open now (else the next)
    POST /api/me/patrols/checkin      guard|officer     {"code"}: the NFC tag's or QR code's value at a point of his
                                                        route, while a round is open -> that round; 404 no point of
                                                        his has it, 409 no round open
Check-ins by position need no route: every fix goes through the dispatcher's intake.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from bridge.web.auth import require
from bridge.web.context import Web, WebContext
from bridge.web.routes_incidents import responder_id_of
from bridge.web.users import Role, User
from dispatch.patrols import PatrolDesk, PatrolError

Reader = Annotated[User, require(Role.OPERATOR, Role.AUDITOR)]
Patroller = Annotated[User, require(Role.GUARD, Role.OFFICER)]


class CodeBody(BaseModel):
    code: str = Field(min_length=1, max_length=200)  # longer than any code a route may carry: refused as unknown


def patrols_router() -> APIRouter:
    router = APIRouter()

    @router.get("/api/patrols")
    async def patrols(web: Web, user: Reader) -> dict[str, Any]:
        return _desk(web).view() | {"left_post": web.service.dispatch.geofences.exits()}

    @router.get("/api/me/patrols")
    async def my_patrols(web: Web, user: Patroller) -> dict[str, Any]:
        return {"routes": _desk(web).mine(responder_id_of(web, user))}

    @router.post("/api/me/patrols/checkin")
    async def check_in(body: CodeBody, web: Web, user: Patroller) -> dict[str, Any]:
        desk, rid = _desk(web), responder_id_of(web, user)
        try:
            return desk.check_in_code(rid, body.code.strip())
        except PatrolError as e:
            raise HTTPException(e.status, str(e)) from e

    return router


def _desk(web: WebContext) -> PatrolDesk:
    if web.service.dispatch is None:
        raise HTTPException(503, "dispatch is off: no patrols")
    return web.service.dispatch.patrols
