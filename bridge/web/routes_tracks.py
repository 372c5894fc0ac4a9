"""Track replay (轨迹回放): where a responder went over a time range, beside what happened then.

    GET /api/tracks/{responder_id}?from=&to=   operator|auditor  -> {"responder", "from", "to", "points": [{ts, lat,
        lon, acc}], "truncated", "incidents": [...], "transmissions": [...]}

from/to: ISO 8601 (naive = the server's local time) or UTC epoch seconds; default the last hour; at most
MAX_RANGE_DAYS apart. `incidents`: those open at some moment of the range (reported before its end, last changed
after its start), each with `assigned` (whether this responder was sent to it). `transmissions`: the transcribed
utterances of the range on the responder's own radio channel and on the channels of those incidents, oldest first,
each with its `audio_url` (the archive's route: operators and auditors hear every utterance). A location history is
personal data (docs/security.md, "who may see tracks"): every track looked at is written to the audit log (`track`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from bridge.db import connect
from bridge.web.auth import require
from bridge.web.context import Web, WebContext, client_address
from bridge.web.search import Filters
from bridge.web.users import Role, User
from dispatch.incidents import IncidentStore
from dispatch.tracks import MAX_TRACK_POINTS, read_track

MAX_RANGE_DAYS = 7
MAX_INCIDENTS = 200
MAX_TRANSMISSIONS = 500  # per channel

Reader = Annotated[User, require(Role.OPERATOR, Role.AUDITOR)]


def tracks_router() -> APIRouter:
    router = APIRouter()

    @router.get("/api/tracks/{responder_id}")
    async def track(
        responder_id: str,
        request: Request,
        web: Web,
        user: Reader,
        since: Annotated[datetime | None, Query(alias="from")] = None,
        until: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> dict[str, Any]:
        dispatch = web.service.dispatch
        if dispatch is None:
            raise HTTPException(503, "dispatch is off: no positions are kept")
        try:
            responder = dispatch.jurisdiction.responder(responder_id)
        except KeyError:
            raise HTTPException(404, "no such responder") from None
        end = until.timestamp() if until is not None else time.time()
        start = since.timestamp() if since is not None else end - 3600
        if start >= end:
            raise HTTPException(422, "from must be before to")
        if end - start > MAX_RANGE_DAYS * 86400:
            raise HTTPException(422, f"a range of at most {MAX_RANGE_DAYS} days")
        replay = await asyncio.to_thread(_replay, web, responder_id, responder.channel, start, end)
        web.audit.append(user=user.name, role=str(user.role), action="track", target=responder_id,
                         client=client_address(request), **{"from": start, "to": end}, points=len(replay["points"]))  # fmt: skip
        return {"responder": responder.model_dump(), "from": start, "to": end, **replay}

    return router


def _replay(web: WebContext, responder_id: str, channel: str, start: float, end: float) -> dict[str, Any]:
    """The track, the incidents and the transmissions of [start, end], read on a connection of this thread's."""
    conn = connect(web.service.config.storage.database, readonly=True)
    try:
        points = read_track(conn, responder_id, start, end)
        rows = conn.execute(
            "SELECT id FROM incidents WHERE created_at <= ? AND updated_at >= ? ORDER BY created_at LIMIT ?",
            (end, start, MAX_INCIDENTS),
        ).fetchall()
        store = IncidentStore(conn, readonly=True)
        incidents = [i for i in (store.get(r["id"]) for r in rows) if i is not None]
    finally:
        conn.close()
    channels = sorted({channel, *(i.channel for i in incidents if i.channel)})
    transmissions = [
        r
        for c in channels
        for r in web.search.search("", Filters(c, round(start * 1000), round(end * 1000)), limit=MAX_TRANSMISSIONS).results
    ]
    transmissions.sort(key=lambda r: r["start"])
    return {
        "points": [p.to_dict() for p in points],
        "truncated": len(points) >= MAX_TRACK_POINTS,
        "incidents": [i.to_dict() | {"assigned_here": responder_id in i.assigned} for i in incidents],
        "channels": channels,
        "transmissions": transmissions,
    }
