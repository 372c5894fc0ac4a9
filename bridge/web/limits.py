"""Request bodies larger than the API ever needs are refused with 413 before they are read into memory."""

from __future__ import annotations

from fastapi import HTTPException, status
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20  # logins, incident actions and user records are small; audio comes over WebSockets


class BodySizeLimit:
    """ASGI middleware: a declared Content-Length over the limit is answered at once; a body without one (chunked)
    is counted as it arrives and the request fails with 413 as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await PlainTextResponse(f"request body over {self.max_bytes} bytes", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)(
                scope, receive, send
            )
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from body reading, so this becomes a clean 413 response
                    raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)
