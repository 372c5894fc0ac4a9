"""Health and channel state.

    GET /healthz                      -> {"ok", "channels", "running", "faults",       (no login: for supervisors)
                                          "failing", "loop_lag_s", "loop_lag_max_s",
                                          "loop_stalls", "forwarding" (an edge's),
                                          "announce_phrases" (when announcing)}; 503
                                          while a fault is active
    GET /api/channels                 -> [channel state, ...]                          (any logged-in user)
    GET /api/channels/{id}            -> channel state; 404 unknown                    (any logged-in user)

`/healthz` is for a supervisor (systemd, a monitoring poller): `ok` is true, and the status 200, only while no fault
is active, on any channel (its source, radio line, archive writes, encoder, or lag behind real time) or in the
archive; otherwise the status is 503 and `failing` names each active fault (`faults` counts them). A fault ends when
its cause is gone (the source re-opened, the disk has room again), and so does the 503. The loop lag figures are
measurements, not faults; so is `announce_phrases` (`ready`, `total`, `failed`): how many of the phrases spoken
announcements are made of are rendered ahead (dispatch/speech.py), while the service renders the rest in the
background (an announcement needing one that is not renders it when it is announced, ~1-5 s later on the air).

On an edge (`--role edge`), `forwarding` is its backlog towards central (bridge/forward.Backlog: entries `queued`
and `unacknowledged` by central, `oldest_age_s`, `last_ack_at`, `sent`, `resent`, `acknowledged`, `refused`,
`acks_rejected`, `behind_since`; absent on a single box), and the fault "forwarding behind" (component "forward") is
active while the oldest entry central has not acknowledged is older than the forwarder's `behind_after_s`.

A channel's state counts what its source refused since the start: `rejected` (malformed RTP packets, files that
would not decode, pushed audio refused), `rejected_by` (the same by kind: "malformed", "undecodable", "unreadable",
"too_fast", "buffer_full"), `source_error`, the latest refusal or loss of its input (clipped to 200 characters), and
`stream_switches`, how often an RTP channel's stream changed (a new SSRC, another sender; null for other sources).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from bridge.web.auth import require
from bridge.web.context import Web

router = APIRouter(tags=["channels"])


@router.get("/healthz")
async def healthz(web: Web, response: Response) -> dict[str, Any]:
    channels = web.service.channel_states()
    failing = [
        {"component": "channel", "channel": c["id"], "kind": f["kind"], "message": f["message"], "since": f["at"]}
        for c in channels
        for f in c["faults"]
        if f["active"]
    ]
    failing += [
        {"component": "archive", "channel": f.channel, "kind": f.kind, "message": f"utterance {f.utterance_id}: {f.message}",
         "since": f.ts}
        for f in web.service.archive.active_faults
    ]  # fmt: skip
    dispatch = web.service.dispatch
    if dispatch is not None and dispatch.link is not None and (alerts := dispatch.link.fault()) is not None:
        failing.append(alerts)
    forwarder = web.service.forwarder
    if forwarder is not None and forwarder.behind:
        backlog = forwarder.backlog
        failing.append({"component": "forward", "channel": None, "kind": "forwarding_behind",
                        "message": f"forwarding behind: {backlog.queued} message(s) central has not acknowledged, the oldest"
                                   f" queued {backlog.oldest_age_s():.0f} s ago",
                        "since": backlog.behind_since})  # fmt: skip
    if failing:
        response.status_code = 503
    return {
        "ok": not failing,
        "channels": len(channels),
        "running": sum(c["running"] for c in channels),
        "faults": len(failing),
        "failing": failing,
        **web.service.loop_lag.to_dict(),
        **({} if forwarder is None else {"forwarding": forwarder.backlog.to_dict()}),
        **({} if (speaker := getattr(web.service, "speaker", None)) is None else {"announce_phrases": speaker.prepared()}),
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
