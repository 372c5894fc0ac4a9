"""Health and channel state.

    GET /healthz                      -> {"ok", "channels", "running", "faults",       (no login: for supervisors)
                                          "loop_lag_s", "loop_lag_max_s", "loop_stalls"}
    GET /api/channels                 -> [channel state, ...]                          (any logged-in user)
    GET /api/channels/{id}            -> channel state; 404 unknown                    (any logged-in user)
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from bridge.web.auth import require
from bridge.web.context import Web

router = APIRouter(tags=["channels"])


@router.get("/healthz")
async def healthz(web: Web) -> dict[str, Any]:
    channels = web.service.channel_states()
    return {
        "ok": True,
        "channels": len(channels),
        "running": sum(c["running"] for c in channels),
        "faults": sum(c["active_faults"] for c in channels) + len(web.service.archive.faults),
        **web.service.loop_lag.to_dict(),
    }


@router.get("/api/channels", dependencies=[require()])
async def channels(web: Web) -> list[dict[str, Any]]:
    return web.service.channel_states()


@router.get("/api/channels/{channel_id}", dependencies=[require()])
async def channel(channel_id: str, web: Web) -> dict[str, Any]:
    for state in web.service.channel_states():
        if state["id"] == channel_id:
            return state
    raise HTTPException(404, f"no channel {channel_id!r}")
