"""The web app `jingbao run --role central` serves: the auditor's work over every station's archive in PostgreSQL.

The routes are the single box's own (bridge/web/routes_auth.py, routes_archive.py): log in, search with its query
language and ASR-error tolerance (bridge/web/search_pg.py), an utterance's transcript, replay of the audio the edges
forwarded (bridge/web/recordings.py), export, the audit log. What differs is underneath: the search and the audio come
from PostgreSQL on the reader's connection (`storage.reader_url`, bridge/pg_roles.py's read-only role; the ingest
writes and indexes), each result names its station by the region file (`node.region`), and users are scoped to a
station or a 分局 (bridge/web/scope.py). Users, sessions and the audit log are central's own tables, written on the
ingest's login (`storage.database_url`) as its incidents are, so that the other central of a pair serves the same
logins and continues the same audit chain (bridge/central_lease.py).

Of the pages, central serves the login, the auditor's (with its station filter), the operators' console over the
stations of the operator's scope (bridge/web/central_console.py: channels, transcripts, and central's dispatcher's
incidents and responders with the box's own routes, bridge/web/routes_incidents.py) and the statistics of those
stations (the box's page and exports over central's incidents, bridge/web/central_stats.py); not the guard page,
tasks, patrols or SOS, which stay with each station's box: central has no radios of its own.

For supervisors and scrapers, as on a box: `GET /healthz` (no login; 503 while the ingest is not connected to the
broker between nodes or PostgreSQL has not answered lately, `failing` naming each fault: bridge/central_health.py) and
`GET /metrics` (the bearer token of `web.metrics_token_file` only: bridge/web/metrics.py's CentralCollector).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from typing import Any

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bridge.bus import EventBus
from bridge.central_archive import CentralArchive
from bridge.central_health import CentralHealth
from bridge.config import Config, ConfigError
from bridge.db import connect_postgres, connect_state
from bridge.logsafe import clip
from bridge.region import Region
from bridge.web import routes_archive, routes_auth
from bridge.web.app import harden, new_app
from bridge.web.audit import AuditLog
from bridge.web.central_console import CentralReadings, CentralSite, central_console_router
from bridge.web.context import WebContext
from bridge.web.metrics import CentralCollector, metrics_router
from bridge.web.recordings import CentralRecordings
from bridge.web.routes_console import PAGES, pages_router
from bridge.web.routes_incidents import incidents_router
from bridge.web.routes_stats import stats_router
from bridge.web.search_pg import PostgresSearchIndex
from bridge.web.sessions import LoginThrottle, SessionStore
from bridge.web.users import UserStore
from dispatch.dispatcher import DispatchService

logger = logging.getLogger(__name__)


def reader_url(config: Config) -> str:
    """The connection search and replay read on: the read-only role's when configured, else the ingest's own."""
    url = config.storage.reader_url or config.storage.database_url
    if url is None:
        raise ConfigError("--role central needs storage.database_url (PostgreSQL)")
    return url


def create_central_app(
    config: Config, region: Region | None, health: CentralHealth, dispatch: DispatchService | None = None,
    bus: EventBus | None = None,
) -> FastAPI:  # fmt: skip
    """`dispatch`: central's dispatcher, when it has one; `bus`: where the ingest and the dispatcher publish what the
    console shows live."""
    app = new_app()
    search, recordings = _readers(config)
    # central's users, sessions and audit log are in PostgreSQL with its incidents (bridge/db.py's connect_state), so
    # that a second central serves the same logins and one audit trail; on one connection (the adapter runs one
    # statement or transaction at a time), so that after a PostgreSQL restart one request fails, not one per store
    state = connect_state(config.storage)
    site = CentralSite(config, CentralArchive(reader_url(config)), region=region, dispatch=dispatch,
                       transcripts=CentralReadings(reader_url(config)), bus=bus or EventBus())  # fmt: skip
    app.state.web = web = WebContext(
        # the routes included here read only CentralSite's fields
        service=site,  # type: ignore[arg-type]
        users=UserStore(state),
        sessions=SessionStore(state),
        throttle=LoginThrottle(),
        audit=AuditLog(state),
        search=search,
        recordings=recordings,
        region=region,
    )

    async def database_lost(request: Request, error: Exception) -> JSONResponse:
        # A connection PostgreSQL dropped (a restart, a failover) stays broken: answer 503 and open new ones, so the
        # next request is served once the database is back, without restarting central.
        logger.warning("PostgreSQL connection lost (%s: %s); reconnecting", type(error).__name__, clip(str(error)))
        with contextlib.suppress(psycopg.Error):
            web.search, web.recordings = await run_in_threadpool(_readers, config)
        return JSONResponse({"detail": "the central database cannot be reached; try again"}, status_code=503)

    app.add_exception_handler(psycopg.OperationalError, database_lost)
    app.add_exception_handler(psycopg.InterfaceError, database_lost)
    # the state stores' (users, sessions, audit, incidents) errors come as sqlite3's classes (bridge/db_postgres.py)
    app.add_exception_handler(sqlite3.OperationalError, database_lost)
    harden(app, config.web)
    for module in (routes_auth, routes_archive):
        app.include_router(module.router)
    app.include_router(pages_router({name: PAGES[name] for name in ("login", "auditor", "console", "stats")}))
    app.include_router(central_console_router(config.web.tile_url))
    app.include_router(incidents_router())  # 503 without a dispatcher
    app.include_router(stats_router())  # central's incidents, the scope's stations (bridge/web/central_stats.py)
    app.include_router(metrics_router(CentralCollector(health), config.web.read_metrics_token()))  # by token, as a box's

    @app.get("/healthz")
    async def healthz(response: Response) -> dict[str, Any]:
        # no login, as a box's: for supervisors; it reads what the ingest and the probe hold, never the database
        body = health.to_dict()
        if not body["ok"]:
            response.status_code = 503
        return body

    return app


def _readers(config: Config) -> tuple[PostgresSearchIndex, CentralRecordings]:
    """The search and the recordings on the reader's connections, one each (each is used under its own lock)."""
    url = reader_url(config)
    return PostgresSearchIndex(connect_postgres(url), readonly=True), CentralRecordings(connect_postgres(url))
