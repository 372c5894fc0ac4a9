"""The auditor's side: search, replay, export, the audit log and archive verification. Every search, playback and
export is written to the audit log (who, when, what, from where) before the answer goes out.

    GET  /api/search?q=&channel=&station=&since=&until=&incident_type=&responder=&limit=50&offset=0
         -> {"results": [{"utterance_id", "channel", "start", "start_iso", "engine", "text", "readable" (characters
             for people: the text, or decoded from the pinyin), "pinyin", "keywords", "conf",
             "match": "exact"|"sounds_like"|null, "snippet" (HTML, matches in <mark>), "snippet_field":
             "text"|"readable"|"pinyin", "marks": [[start, end]], "audio_url", "incidents": [...], at central also
             "station", "station_name"}], "more": bool}
         400 a query that cannot be searched                         (operator, auditor, admin)
         station (central only): a station or 分局 id of the region file; 403 outside the user's scope
    GET  /api/search/export.csv  same parameters, up to 10,000 rows -> text/csv   (auditor, admin)
    GET  /api/utterances/{id}        -> {"utterance": {"utterance_id", "station", "channel", "start", "duration_s",
                                        "format", "audio", "audio_missing"}, "transcript": a result row or null}
                                        (operator, auditor, admin)
    GET  /api/utterances/{id}/audio  -> the archived file (at central the forwarded bytes); one byte Range served
                                        (operator, auditor, admin; an officer only the calls of incidents he was
                                        sent to, else 403: `listener`)
         At central both answer 404 for an utterance outside the user's scope, as for one that does not exist.
    GET  /api/stations               -> {"bureaus": [{"id", "name", "stations": [{"id", "name"}]}]}: the region's
                                        分局 and stations within the user's scope (empty on a box)  (operator, auditor)
    GET  /api/audit?limit=&before=&user=&action=  -> [entry, ...] newest first   (auditor, admin)
    GET  /api/audit/verify           -> {"ok", "rows", "head", "problems"}      (auditor, admin)
    GET  /api/archive/verify         -> the last `jingbao archive verify` report and when it ran (runs one if none);
                                        at central each station's chain and audio as central holds them, only the
                                        stations within the user's scope (bridge/central_archive.py)
    POST /api/archive/verify         -> runs it now                              (auditor, admin)

since/until: ISO 8601 (naive = the server's local time) or UTC epoch seconds.

The same routes serve a box's archive (SQLite) and, at the central tier, every station's (PostgreSQL): what differs
is the context's search index and recordings (bridge/web/recordings.py), and there users are scoped to their
stations (bridge/web/scope.py).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, Response

from bridge.web.auth import require
from bridge.web.context import Web, WebContext, client_address
from bridge.web.csvexport import csv_response
from bridge.web.recordings import Recording
from bridge.web.scope import allowed_stations, audit_scope, may_read, station_name, stations_filter
from bridge.web.search import MAX_LIMIT, Filters, SearchPage
from bridge.web.search_text import QueryError
from bridge.web.users import Role, User

router = APIRouter(prefix="/api", tags=["archive"])

AUDIO_TYPES = {"opus": "audio/ogg", "wav": "audio/wav", "flac": "audio/flac"}
_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)
CSV_COLUMNS = ["utterance_id", "start_iso", "station", "channel", "engine", "text", "readable", "pinyin", "keywords", "conf",
               "incident_ids", "incident_types", "audio_url"]  # fmt: skip


def search_filters(
    user: Annotated[User, require()],
    web: Web,
    channel: Annotated[str | None, Query(max_length=130)] = None,  # at central <station>.<channel>
    station: Annotated[str | None, Query(max_length=64, description="a station or 分局 id (central)")] = None,
    since: Annotated[datetime | None, Query(description="results starting at/after this time")] = None,
    until: Annotated[datetime | None, Query(description="results starting before this time")] = None,
    incident_type: Annotated[str | None, Query(max_length=32)] = None,
    responder: Annotated[str | None, Query(max_length=64)] = None,
) -> Filters:
    return Filters(channel, _ms(since), _ms(until), incident_type, responder, stations_filter(web, user, station))


def _ms(t: datetime | None) -> int | None:
    return None if t is None else round(t.timestamp() * 1000)


def _search(web: WebContext, q: str, filters: Filters, limit: int, offset: int) -> SearchPage:
    try:
        page = web.search.search(q, filters, limit=limit, offset=offset)
    except QueryError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from e
    for result in page.results:
        _name_station(web, result)
    return page


def _name_station(web: WebContext, result: dict[str, Any]) -> None:
    """A result's station, at central (where its id is <station>.<id>); None on a box, whose archive is its own."""
    station = result["utterance_id"].partition(".")[0] if web.region is not None else None
    result["station"], result["station_name"] = station, station_name(web, station)


@router.get("/search")
def search(
    request: Request,
    user: Annotated[User, require(Role.OPERATOR, Role.AUDITOR)],
    web: Web,
    filters: Annotated[Filters, Depends(search_filters)],
    q: Annotated[str, Query(max_length=200)] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
) -> dict[str, Any]:
    page = _search(web, q, filters, limit, offset)
    web.audit.append(user=user.name, role=str(user.role), action="search", target=q, client=client_address(request),
                     filters=filters.to_dict(), offset=offset, results=len(page.results))  # fmt: skip
    return {"results": page.results, "more": page.more}


@router.get("/search/export.csv")
def export(
    request: Request,
    user: Annotated[User, require(Role.AUDITOR)],
    web: Web,
    filters: Annotated[Filters, Depends(search_filters)],
    q: Annotated[str, Query(max_length=200)] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
) -> Response:
    page = _search(web, q, filters, limit, 0)
    web.audit.append(user=user.name, role=str(user.role), action="export", target=q, client=client_address(request),
                     filters=filters.to_dict(), rows=len(page.results))  # fmt: skip
    rows = (r | {"keywords": " ".join(r["keywords"]), "incident_ids": " ".join(i["id"] for i in r["incidents"]),
                 "incident_types": " ".join(i["type"] for i in r["incidents"])} for r in page.results)  # fmt: skip
    return csv_response(CSV_COLUMNS, ([row[c] for c in CSV_COLUMNS] for row in rows), "search")


async def listener(
    utterance_id: str, user: Annotated[User, require(Role.OPERATOR, Role.OFFICER, Role.AUDITOR)], web: Web
) -> User:
    """Who may hear an archived utterance: an operator or an auditor any; an officer (民警) the calls of the incidents
    he was sent to, open or closed, so that he hears what he is going to (or went to) in the caller's own voice, and
    not the rest of the radio traffic. (Async: the dispatcher's incident store is read on the event loop.)"""
    if user.role == Role.OFFICER and not _sent_to(web, user, utterance_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "an officer may hear the calls of incidents he was sent to, no others")
    return user


def _sent_to(web: WebContext, user: User, utterance_id: str) -> bool:
    dispatch = web.service.dispatch
    if dispatch is None or not user.responder_id:
        return False
    store = dispatch.dispatcher.store
    return any(user.responder_id in store.ever_sent(incident) for incident in store.with_utterance(utterance_id))


def _recording(web: WebContext, user: User, utterance_id: str) -> Recording:
    """The utterance, when it exists and lies within the user's scope: 404 for one outside it as for one that does
    not exist, so a scoped user cannot even learn which ids another station has."""
    recording = web.recordings.get(utterance_id)
    if recording is None or not may_read(web, user, recording.station):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such utterance")
    return recording


@router.get("/utterances/{utterance_id}")
def utterance(
    utterance_id: str, request: Request, user: Annotated[User, require(Role.OPERATOR, Role.AUDITOR)], web: Web
) -> dict[str, Any]:
    recording = _recording(web, user, utterance_id)
    transcript = web.search.transcript(utterance_id)
    if transcript is not None:
        _name_station(web, transcript)
    web.audit.append(user=user.name, role=str(user.role), action="transcript", target=utterance_id,
                     client=client_address(request), station=recording.station)  # fmt: skip
    return {"utterance": recording.to_dict() | {"station_name": station_name(web, recording.station)},
            "transcript": transcript}  # fmt: skip


@router.get("/utterances/{utterance_id}/audio")
def audio(utterance_id: str, request: Request, user: Annotated[User, Depends(listener)], web: Web) -> Response:
    recording = _recording(web, user, utterance_id)
    if recording.missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, recording.missing)
    byte_range = request.headers.get("range", "")
    if not byte_range or byte_range.replace(" ", "").startswith("bytes=0-"):  # one entry per playback, not per chunk
        web.audit.append(user=user.name, role=str(user.role), action="playback", target=utterance_id,
                         client=client_address(request), channel=recording.channel,
                         **({"station": recording.station} if recording.station else {}))  # fmt: skip
    media_type = AUDIO_TYPES.get(recording.format, "application/octet-stream")
    if recording.path is not None:
        return FileResponse(recording.path, media_type=media_type)  # Range handled by Starlette
    return _bytes_response(recording.data or b"", media_type, byte_range)


def _bytes_response(data: bytes, media_type: str, byte_range: str) -> Response:
    """Audio held in memory (central's forwarded bytes) with one byte range served as a file's would be: a browser
    seeks in a recording by asking for the bytes from there on. A header this does not read (several ranges, another
    unit, bad syntax) gets the whole recording, which RFC 9110 allows; a range beyond the end gets 416."""
    size, whole = len(data), {"accept-ranges": "bytes"}
    match = _SINGLE_RANGE.fullmatch(byte_range.replace(" ", ""))
    first, last = match.groups() if match else ("", "")
    if first == last == "" or (first and last and int(last) < int(first)):  # no range, or not a valid one
        return Response(data, media_type=media_type, headers=whole)
    if first == "":  # bytes=-N: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return Response(status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE, headers={"content-range": f"bytes */{size}"})
    return Response(data[start : end + 1], status_code=status.HTTP_206_PARTIAL_CONTENT, media_type=media_type,
                    headers=whole | {"content-range": f"bytes {start}-{end}/{size}"})  # fmt: skip


@router.get("/stations")
def stations(user: Annotated[User, require(Role.OPERATOR, Role.AUDITOR)], web: Web) -> dict[str, Any]:
    """What the auditor page's station filter offers: only what the user may choose."""
    if web.region is None:
        return {"bureaus": []}
    allowed = allowed_stations(web, user)
    bureaus = []
    for bureau in web.region.bureaus:
        mine = [{"id": s.id, "name": s.name} for s in bureau.stations if allowed is None or s.id in allowed]
        if mine:
            whole = len(mine) == len(bureau.stations)  # a 分局 is a choice only when all of it is the user's
            bureaus.append({"id": bureau.id if whole else None, "name": bureau.name, "stations": mine})
    return {"bureaus": bureaus}


@router.get("/audit")
def audit_log(
    web: Web,
    auditor: Annotated[User, require(Role.AUDITOR)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, description="only entries with seq below this (paging back)")] = None,
    user: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
) -> list[dict[str, Any]]:
    entries = web.audit.list(limit=limit, before_seq=before, user=user, action=action, within=audit_scope(web, auditor))
    return [e.to_dict() for e in entries]


@router.get("/audit/verify", dependencies=[require(Role.AUDITOR)])
def audit_verify(web: Web) -> dict[str, Any]:
    return web.audit.verify()


@router.get("/archive/verify")
def archive_verify(web: Web, auditor: Annotated[User, require(Role.AUDITOR)]) -> dict[str, Any]:
    return _within_scope(web.archive_check.last(web.service.archive), allowed_stations(web, auditor))


@router.post("/archive/verify")
def archive_verify_now(web: Web, auditor: Annotated[User, require(Role.AUDITOR)]) -> dict[str, Any]:
    return _within_scope(web.archive_check.run(web.service.archive), allowed_stations(web, auditor))


def _within_scope(checked: dict[str, Any], allowed: frozenset[str] | None) -> dict[str, Any]:
    """At central the report holds every station's chain (bridge/central_archive.py): a scoped auditor gets their
    stations' only, as with search."""
    stations = checked["report"].get("stations")
    if allowed is None or stations is None:
        return checked
    mine = {station: check for station, check in stations.items() if station in allowed}
    return checked | {"report": {"ok": all(check["ok"] for check in mine.values()), "stations": mine}}
