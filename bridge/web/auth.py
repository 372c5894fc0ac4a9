"""Who is asking, and may they: the one dependency every endpoint and WebSocket declares.

    @router.get("/api/search")
    def search(user: Annotated[User, require(Role.AUDITOR)], ...): ...

    @router.get("/api/audit", dependencies=[require(Role.AUDITOR)])   # when the handler needs no User

    @router.websocket("/api/live")
    async def live(ws: WebSocket, user: Annotated[User, require(Role.OPERATOR)]): ...

The session token comes from the HttpOnly cookie a browser got at login (sent automatically, also on WebSocket
handshakes to the same origin) or from an `Authorization: Bearer <token>` header (API clients, tests). Admins pass
every role check. An HTTP request without a valid session gets 401, with the wrong role 403; a WebSocket handshake is
closed with 1008 (policy violation) before it is accepted, for either reason. Requests from another site's page never
get this far (`bridge.web.security.OriginCheckMiddleware`).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException, WebSocketException, status
from starlette.requests import HTTPConnection

from bridge.web.context import web_context
from bridge.web.users import Role, User

SESSION_COOKIE = "jingbao_session"


def session_token(conn: HTTPConnection) -> str | None:
    scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return conn.cookies.get(SESSION_COOKIE) or None


def require(*roles: Role) -> Any:
    """A dependency giving the logged-in User when they hold one of `roles` (any logged-in user when none given)."""
    allowed = frozenset(roles)

    def check(conn: HTTPConnection) -> User:
        websocket = conn.scope["type"] == "websocket"
        token = session_token(conn)
        user = web_context(conn).sessions.user(token) if token else None
        if user is None:
            if websocket:
                raise WebSocketException(status.WS_1008_POLICY_VIOLATION, "not logged in")
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not logged in", headers={"WWW-Authenticate": "Bearer"})
        if allowed and user.role not in allowed and user.role != Role.ADMIN:
            detail = f"role {user.role} may not do this (needs {' or '.join(sorted(allowed))})"
            if websocket:
                raise WebSocketException(status.WS_1008_POLICY_VIOLATION, detail)
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail)
        return user

    return Depends(check)
