"""Log in, log out, who am I, and user management for admins.

    POST /api/login    {"name", "password"} as JSON or an HTML form
                       -> 200 {"user": {...}, "token": "..."} (token only for JSON requests: API clients send it as
                          `Authorization: Bearer`), and the HttpOnly session cookie either way;
                          401 wrong name or password; 429 + Retry-After while this address must wait before
                          trying this name again (failures in a row back off), or before trying any name (too
                          many failures from it): bridge.web.sessions.LoginThrottle
    POST /api/logout   -> 204, session revoked and cookie cleared
    GET  /api/me       -> {"name", "role", "responder_id", "created_at"}            (any logged-in user)
    GET  /api/users    -> [user, ...]                                               (admin)
    POST /api/users    {"name", "role", "password", "responder_id"?, "scope"?} -> 201 user   (admin; at central an
                       admin scoped to a station or 分局 makes users within that scope only, else 403)
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bridge.web.auth import SESSION_COOKIE, require, session_token
from bridge.web.context import Web, WebContext, client_address
from bridge.web.scope import within_scope
from bridge.web.users import Role, User, UserError, UserExists

router = APIRouter(prefix="/api", tags=["auth"])


class Credentials(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class NewUser(BaseModel):
    name: str = Field(max_length=64)
    role: Role
    password: str = Field(max_length=256)
    responder_id: str | None = Field(None, max_length=64)
    scope: str | None = Field(None, max_length=64, description="a station or 分局 id of central's region file")


@router.post("/login")
async def login(request: Request, response: Response, web: Web) -> dict[str, Any]:
    is_json = request.headers.get("content-type", "").startswith("application/json")
    credentials = await _credentials(request, is_json)
    client = client_address(request)
    if wait_s := web.throttle.attempt(credentials.name, client):
        retry_after = math.ceil(wait_s)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed logins; try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    # argon2 takes tens of milliseconds of CPU on purpose: off the event loop
    user = await run_in_threadpool(web.users.authenticate, credentials.name, credentials.password)
    if user is None:
        web.audit.append(user=credentials.name, role="", action="login_failed", target=credentials.name, client=client)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
    web.throttle.succeeded(credentials.name, client)
    token = web.sessions.create(user, client)
    web.audit.append(user=user.name, role=str(user.role), action="login", target=user.name, client=client)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(web.sessions.ttl_s), path="/", **_cookie_flags(web))
    return {"user": user.to_dict()} | ({"token": token} if is_json else {})


async def _credentials(request: Request, is_json: bool) -> Credentials:
    body = await request.body()
    try:
        # an HTML form is parsed here rather than pulling in python-multipart for two fields
        data = json.loads(body) if is_json else {k: v[0] for k, v in parse_qs(body.decode("utf-8"), max_num_fields=10).items()}
        return Credentials.model_validate(data)
    except (ValueError, UnicodeDecodeError) as e:  # pydantic's ValidationError is a ValueError
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "expected name and password (JSON or form)") from e


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, response: Response, web: Web) -> None:
    if token := session_token(request):
        if user := web.sessions.user(token):
            web.audit.append(user=user.name, role=str(user.role), action="logout", target=user.name,
                             client=client_address(request))  # fmt: skip
        web.sessions.revoke(token)
    response.delete_cookie(SESSION_COOKIE, path="/", **_cookie_flags(web))


def _cookie_flags(web: WebContext) -> dict[str, Any]:
    """HttpOnly: no script reads the session. SameSite=Strict: no other site's page or link sends it; every page
    fetches what it shows from this origin, so a page opened from a link elsewhere still gets it for those fetches.
    Secure (web.secure_cookies): over HTTPS only."""
    return {"httponly": True, "samesite": "strict", "secure": web.service.config.web.secure_cookies}


@router.get("/me")
def me(user: Annotated[User, require()]) -> dict[str, Any]:
    return user.to_dict()


@router.get("/users", dependencies=[require(Role.ADMIN)])
def list_users(web: Web) -> list[dict[str, Any]]:
    return [u.to_dict() for u in web.users.list()]


@router.post("/users", status_code=status.HTTP_201_CREATED)
def add_user(body: NewUser, web: Web, admin: Annotated[User, require(Role.ADMIN)]) -> dict[str, Any]:
    within_scope(web, admin, body.scope)
    try:
        user = web.users.add(body.name, body.role, body.password, responder_id=body.responder_id, scope=body.scope)
        return user.to_dict()
    except UserExists as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from e
    except UserError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e
