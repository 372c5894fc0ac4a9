"""HTTP routes for run-time patching (the console and `jingbao patch` use them); the service mounts the router.

    GET    /api/patches            -> 200 [{"a", "b", "mode", "origin", "forwarded": {"a->b": n, ...},
                                             "echo_dropped": n, "active": bool}, ...]
    POST   /api/patches            {"a": "market", "b": "police", "mode": "utterance" | "live"}
                                   -> 201 the patch; 422 same channel twice / bad body; 404 a channel without a
                                      transmitter; 409 already patched
    DELETE /api/patches/{a}/{b}    -> 200 the removed patch; 404 not patched
    GET    /api/transmitters       -> 200 [{"channel", "transmitting", "current", "queued", "keyed", "counts"}, ...]
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from hardware.config import PatchConfig
from hardware.patch import PatchConflict, PatchError, PatchManager


def patch_router(patches: PatchManager) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["patches"])

    @router.get("/patches")
    async def list_patches() -> list[dict[str, Any]]:
        return patches.list()

    @router.post("/patches", status_code=201)
    async def add_patch(body: PatchConfig) -> dict[str, Any]:
        try:
            return patches.add(body.a, body.b, body.mode).to_dict()
        except PatchConflict as e:
            raise HTTPException(409, str(e)) from e
        except PatchError as e:
            raise HTTPException(404, str(e)) from e

    @router.delete("/patches/{a}/{b}")
    async def remove_patch(a: str, b: str) -> dict[str, Any]:
        try:
            return patches.remove(a, b).to_dict()
        except PatchError as e:
            raise HTTPException(404, str(e)) from e

    @router.get("/transmitters")
    async def transmitters() -> list[dict[str, Any]]:
        return [tx.state() for tx in patches.transmitters.values()]

    return router
