"""What every WebSocket of the pages shares: closing without caring whether the client is still there, and reading
from a client that has nothing to say (the live feeds: /api/events, /api/me/live, a channel's /listen).

A feed's client only ever sends keep-alive text, if anything. Whatever else arrives is answered with a close frame
and a reason, and logged: a binary message closes with 1003 (unsupported data), a text larger than
MAX_FEED_MESSAGE_CHARS with 1009 (too big). A flood of small texts is read and dropped, never queued, so it costs
the server only the reading.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import WebSocket, WebSocketDisconnect, status

logger = logging.getLogger(__name__)

MAX_FEED_MESSAGE_CHARS = 4096  # a keep-alive is a few bytes; a feed's client has nothing longer to say


async def close_quietly(ws: WebSocket, code: int = status.WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
    """Send a close frame, unless the client is already gone (then there is nobody to tell)."""
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.close(code, reason)


async def until_client_leaves(ws: WebSocket) -> None:
    """Read and drop what the client of a live feed sends, until it disconnects or sends something a feed never gets
    (then it is closed with a reason, and the feed's path logged)."""
    feed = ws.url.path
    while True:
        try:
            message = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):  # RuntimeError: the socket was closed from our side meanwhile
            return
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            logger.warning("%s: binary message of %d bytes from %s; closing", feed, len(message["bytes"]), _peer(ws))
            await close_quietly(ws, status.WS_1003_UNSUPPORTED_DATA, "this feed takes no data")
            return
        if len(message.get("text") or "") > MAX_FEED_MESSAGE_CHARS:
            logger.warning("%s: text message of %d characters from %s; closing", feed, len(message["text"]), _peer(ws))
            await close_quietly(ws, status.WS_1009_MESSAGE_TOO_BIG, f"messages of at most {MAX_FEED_MESSAGE_CHARS} characters")
            return


def _peer(ws: WebSocket) -> str:
    return f"{ws.client.host}:{ws.client.port}" if ws.client else "an unknown client"
