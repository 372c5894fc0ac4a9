"""Statistics and reports (统计): what the statistics page draws, its CSV exports and the monthly report.

    GET /stats                           the page (static; its data below checks the role)
    GET /api/stats                       operator|auditor  dispatch.statistics' summary for a period and filters,
                                                           with the filters' options
    GET /api/stats/incidents.csv         operator|auditor  one row per incident: where, what, each stage's time and
                                                           the intervals between them, notes
    GET /api/stats/units.csv             operator|auditor  per responder participation (警保联动考核)
    GET /api/stats/report?month=YYYY-MM  operator|auditor  the monthly report, printable HTML
    GET /api/stats/report.pdf?month=     operator|auditor  the same, printed to PDF by Chromium (bridge/web/report.py)

Period and filters: from, to (dates, both included, the server's local time; default the last 7 days), period
(day|week), type, place (a place or anything within it), grid, station. The exports and reports are written to the
audit log (action export) as the search export is; looking at the page is not.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from bridge.db import Connection, connect_state
from bridge.web.auth import require
from bridge.web.central_console import CentralSite
from bridge.web.central_stats import CentralStatistics
from bridge.web.context import Web, WebContext, client_address
from bridge.web.csvexport import csv_response
from bridge.web.report import PdfError, html_to_pdf, render_html
from bridge.web.scope import allowed_stations, scope_name
from bridge.web.users import Role, User
from dispatch.gazetteer import load_jurisdiction
from dispatch.statistics import INTERVALS, STAGES, Filters, Period, Statistics

MAX_DAYS = 366
READERS = (Role.OPERATOR, Role.AUDITOR)
INCIDENT_COLUMNS = ["id", "reported_at", "type", "priority", "status", "place_id", "place_name", "grid", "station",
                    "channel", "text", *(f"{s}_at" for s in STAGES[1:]), *(f"{a}_to_{b}_s" for a, b in INTERVALS),
                    "responders_alerted", "notes"]  # fmt: skip
UNIT_COLUMNS = ["id", "name", "unit", "role", "alerted", "answered", "on_scene", "declined", "unanswered", "answer_p50_s"]

Reader = Annotated[User, require(*READERS)]
Month = Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]


def stats_filters(
    since_day: Annotated[date | None, Query(alias="from")] = None,
    until_day: Annotated[date | None, Query(alias="to")] = None,
    type: Annotated[str | None, Query(max_length=40)] = None,
    place: Annotated[str | None, Query(max_length=100)] = None,
    grid: Annotated[str | None, Query(max_length=100)] = None,
    station: Annotated[str | None, Query(max_length=100)] = None,
) -> Filters:
    last = until_day or date.today()
    first = since_day or last - timedelta(days=6)
    if first > last:
        raise HTTPException(422, f"from ({first}) is after to ({last})")
    if (last - first).days >= MAX_DAYS:
        raise HTTPException(422, f"a period of at most {MAX_DAYS} days")
    return Filters(_midnight(first), _midnight(last + timedelta(days=1)), type or None, place or None, grid or None,
                   station or None)  # fmt: skip


def month_filters(month: Month) -> Filters:
    first = date.fromisoformat(f"{month}-01")
    following = (first + timedelta(days=32)).replace(day=1)
    return Filters(_midnight(first), _midnight(following))


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day).timestamp()  # local midnight


def stats_router() -> APIRouter:
    router = APIRouter()
    printing = asyncio.Lock()  # one Chromium at a time: a few hundred MB each, on a box that also recognises speech

    @router.get("/api/stats")
    async def summary(web: Web, user: Reader, filters: Annotated[Filters, Depends(stats_filters)],
                      period: Period = "day") -> dict[str, Any]:  # fmt: skip
        return await asyncio.to_thread(_read, web, user, lambda s: s.summary(filters, period) | {"options": s.options()})

    @router.get("/api/stats/incidents.csv")
    async def incidents_csv(request: Request, web: Web, user: Reader,
                            filters: Annotated[Filters, Depends(stats_filters)]) -> Response:  # fmt: skip
        records = await asyncio.to_thread(_read, web, user, lambda s: s.incidents(filters))
        _audit(web, user, request, "stats/incidents.csv", filters, len(records))
        rows = ([r.id, _iso(r.created_at), r.type, r.priority, r.status, r.place_id, r.place_name, r.grid, r.station,
                 r.channel, r.text, *(_iso(r.times.get(s)) for s in STAGES[1:]),
                 *(_seconds(r.interval(a, b)) for a, b in INTERVALS), " ".join(r.alerted), " | ".join(r.notes)]
                for r in records)  # fmt: skip
        return csv_response(INCIDENT_COLUMNS, rows, "incidents")

    @router.get("/api/stats/units.csv")
    async def units_csv(request: Request, web: Web, user: Reader,
                        filters: Annotated[Filters, Depends(stats_filters)]) -> Response:  # fmt: skip
        units = await asyncio.to_thread(_read, web, user, lambda s: s.participation(s.incidents(filters)))
        _audit(web, user, request, "stats/units.csv", filters, len(units))
        return csv_response(UNIT_COLUMNS, ([u[c] for c in UNIT_COLUMNS] for u in units), "units")

    @router.get("/api/stats/report", response_class=HTMLResponse)
    async def report(request: Request, web: Web, user: Reader, month: Month,
                     filters: Filters = Depends(month_filters)) -> HTMLResponse:  # fmt: skip
        html = await _report_html(web, user, filters, month, "/static/")
        _audit(web, user, request, f"stats/report {month}", filters, 1)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @router.get("/api/stats/report.pdf")
    async def report_pdf(request: Request, web: Web, user: Reader, month: Month,
                         filters: Filters = Depends(month_filters)) -> Response:  # fmt: skip
        try:
            async with printing:
                pdf = await html_to_pdf(await _report_html(web, user, filters, month, ""))
        except PdfError as e:
            raise HTTPException(503, str(e)) from e
        _audit(web, user, request, f"stats/report.pdf {month}", filters, 1)
        return Response(pdf, media_type="application/pdf", headers={
            "Content-Disposition": f'attachment; filename="jingbao-report-{month}.pdf"', "Cache-Control": "no-store"})

    return router


async def _report_html(web: WebContext, user: User, filters: Filters, month: str, static: str) -> str:
    summary, heading = await asyncio.to_thread(_read, web, user, lambda s: (s.summary(filters, "week"), s.heading()))
    year, mon = month.split("-")
    return render_html(summary, title=f"{year}年{int(mon)}月 警保联动工作月报", station=heading, static=static)


def _read(web: WebContext, user: User, what: Any) -> Any:
    """`what(Statistics)`, the user's, on connections of its own (a worker thread's), closed after: at central a
    year's traffic query must not hold the connection the console reads incidents' words on."""
    with contextlib.closing(connect_state(web.service.config.storage)) as conn, contextlib.ExitStack() as more:
        return what(_statistics(web, user, conn, more))


def _statistics(web: WebContext, user: User, conn: Connection, more: contextlib.ExitStack) -> Statistics:
    """A box's statistics; at central (a region), those of the stations of the user's scope."""
    dispatch = web.service.dispatch
    if web.region is None:
        return Statistics(conn, dispatch.jurisdiction if dispatch is not None else load_jurisdiction(
            web.service.config.jurisdiction))  # fmt: skip
    site = web.service
    if not isinstance(site, CentralSite) or site.dispatch is None or site.transcripts is None:
        raise HTTPException(503, "central has no dispatcher: no station of the region names a jurisdiction file")
    readings = more.enter_context(contextlib.closing(site.transcripts.another()))
    return CentralStatistics(conn, site.dispatch.jurisdiction, region=web.region, readings=readings,
                             within=allowed_stations(web, user), heading=scope_name(web, user),
                             station_of_responder=site.dispatch.area.station_of)  # fmt: skip


def _audit(web: WebContext, user: User, request: Request, target: str, filters: Filters, rows: int) -> None:
    web.audit.append(user=user.name, role=str(user.role), action="export", target=target,
                     client=client_address(request), filters=filters.to_dict(), rows=rows)  # fmt: skip


def _iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"
