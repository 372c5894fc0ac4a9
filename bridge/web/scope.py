"""Which stations a request may read at the central tier: the user's scope (a station, a 分局, or the whole region;
bridge/web/users.py) narrowed by what the request asks for (`station=`), never widened by it.

On a box without a region (a single station's, or an edge) there is one station's archive and nothing to narrow:
every user reads it, and a `station` filter is refused as meaningless.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException, status

from bridge.nodes import station_of
from bridge.region import RegionError
from bridge.web.context import WebContext
from bridge.web.users import User

logger = logging.getLogger(__name__)


def allowed_stations(web: WebContext, user: User) -> frozenset[str] | None:
    """The stations `user` may read; None: all of them (no region here, or a city-wide user)."""
    if web.region is None or user.scope is None:
        return None
    try:
        return web.region.stations_in(user.scope)
    except RegionError:  # the region file no longer has it: nothing, until an admin gives the user a scope it has
        logger.warning("user %s has scope %r, which the region file does not name: they see nothing", user.name, user.scope)
        return frozenset()


def stations_filter(web: WebContext, user: User, asked: str | None) -> tuple[str, ...] | None:
    """The search's `stations` filter: the stations `asked` covers (a station or a 分局 id), which must lie within
    the user's scope (403 otherwise); without `asked`, the user's scope. None: no filter."""
    allowed = allowed_stations(web, user)
    if asked is None:
        return None if allowed is None else tuple(sorted(allowed))
    if web.region is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "this service has no region file: filtering by station is the "
                            "central tier's")  # fmt: skip
    try:
        wanted = web.region.stations_in(asked)
    except RegionError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e
    if allowed is not None and not wanted <= allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{asked!r} is outside your scope ({user.scope})")
    return tuple(sorted(wanted))


def within_scope(web: WebContext, admin: User, scope: str | None) -> None:
    """A new user's scope must name part of the region (400), and lie within the scope of the admin making them
    (403): an admin of a station cannot make a city-wide user, who would see what they may not."""
    if scope is not None and web.region is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "this service has no region file: scopes are the central tier's")
    if web.region is None:
        return
    try:
        wanted = web.region.stations_in(scope)
    except RegionError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e
    allowed = allowed_stations(web, admin)
    if allowed is not None and (scope is None or not wanted <= allowed):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"a user beyond your scope ({admin.scope})")


def channel_in_scope(web: WebContext, user: User, channel: str | None) -> bool:
    """Whether `user` may see what was heard on `channel` (central names it `<station>.<channel>`; an incident's
    channel is its report's); None asks whether the user sees every station."""
    allowed = allowed_stations(web, user)
    return allowed is None or (channel is not None and station_of(channel) in allowed)


def responder_in_scope(web: WebContext, user: User, responder_id: str) -> bool:
    """Whether `user` may see and set `responder_id` (central: a responder of a station in their scope, as the
    region's jurisdiction files say)."""
    allowed = allowed_stations(web, user)
    if allowed is None:
        return True
    dispatch = web.service.dispatch
    return dispatch is not None and dispatch.area.station_of(responder_id) in allowed


def may_read(web: WebContext, user: User, station: str | None) -> bool:
    """Whether `user` may read an utterance of `station` (None: a box's own)."""
    allowed = allowed_stations(web, user)
    return allowed is None or station in allowed


def audit_scope(web: WebContext, auditor: User) -> tuple[list[str], frozenset[str]] | None:
    """What of the audit log a scoped auditor reads: the entries of the users within their scope (themselves
    included), and everyone's about their stations' utterances (who replayed them); None: all of it. The log's
    other entries name other stations' ids and queries."""
    allowed = allowed_stations(web, auditor)
    if allowed is None:
        return None
    assert web.region is not None  # allowed_stations is None without one
    region = web.region

    def within(user: User) -> bool:
        try:
            return user.scope is not None and region.stations_in(user.scope) <= allowed
        except RegionError:
            return False

    return [u.name for u in web.users.list() if within(u)], allowed


def station_name(web: WebContext, station: str | None) -> str | None:
    found = web.region.station(station) if web.region is not None and station is not None else None
    return found.name if found is not None else None


def scope_name(web: WebContext, user: User) -> str:
    """What the user's scope is called: their station's or 分局's name, or the region's for a city-wide user."""
    assert web.region is not None
    if user.scope is None:
        return web.region.name
    bureau = next((b for b in web.region.bureaus if b.id == user.scope), None)
    return bureau.name if bureau is not None else station_name(web, user.scope) or user.scope
