"""The HTTP API the console builds on: health, channel state, utterances and their audio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException

if TYPE_CHECKING:
    from bridge.service import Service


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="jingbao", version="0.1.0")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        channels = service.channel_states()
        return {
            "ok": True,
            "channels": len(channels),
            "running": sum(c["running"] for c in channels),
            "faults": sum(c["active_faults"] for c in channels) + len(service.archive.faults),
        }

    @app.get("/api/channels")
    async def channels() -> list[dict[str, Any]]:
        return service.channel_states()

    @app.get("/api/channels/{channel_id}")
    async def channel(channel_id: str) -> dict[str, Any]:
        for state in service.channel_states():
            if state["id"] == channel_id:
                return state
        raise HTTPException(404, f"no channel {channel_id!r}")

    return app
