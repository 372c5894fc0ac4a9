"""The web app `jingbao run` serves: the API the console, the guard page and the auditor page are built on."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from bridge.db import connect
from bridge.web import routes_archive, routes_auth, routes_channels
from bridge.web.audit import AuditLog
from bridge.web.auth import SESSION_COOKIE, require
from bridge.web.context import WebContext
from bridge.web.metrics import ServiceCollector, metrics_router
from bridge.web.recordings import ArchiveRecordings
from bridge.web.routes_console import console_router
from bridge.web.routes_patrols import patrols_router
from bridge.web.routes_sos import sos_router
from bridge.web.routes_stats import stats_router
from bridge.web.routes_tasks import tasks_router
from bridge.web.routes_tracks import tracks_router
from bridge.web.search import SearchIndex
from bridge.web.security import ClientAddressMiddleware, OriginCheckMiddleware, SecurityHeadersMiddleware
from bridge.web.sessions import LoginThrottle, SessionStore
from bridge.web.users import Role, UserStore

if TYPE_CHECKING:
    from bridge.config import WebConfig
    from bridge.service import Service

MAX_BODY_BYTES = 1 << 20  # logins, incident actions and user records are small; audio comes over WebSockets


def create_app(service: Service) -> FastAPI:
    app = new_app()
    # Each store gets its own connection: an sqlite3 connection carries one transaction at a time, and the stores
    # are used from FastAPI's worker threads concurrently (WAL lets them read while another writes).
    database = service.config.storage.database
    users = UserStore(connect(database))
    app.state.web = WebContext(
        service=service,
        users=users,
        sessions=SessionStore(connect(database)),
        throttle=LoginThrottle(),
        audit=AuditLog(connect(database)),
        search=SearchIndex(connect(database)),
        recordings=ArchiveRecordings(service.archive),
    )
    # transcripts written while no web app ran (a first start on an existing archive) are indexed in the background;
    # a search meanwhile finishes what is left before it runs
    threading.Thread(target=app.state.web.search.sync, name="search-index", daemon=True).start()
    web = service.config.web
    harden(app, web)
    for module in (routes_auth, routes_channels, routes_archive):
        app.include_router(module.router)
    app.include_router(console_router(web.tile_url))  # the pages and what only they need
    app.include_router(sos_router())
    app.include_router(stats_router())  # statistics, exports and the monthly report
    app.include_router(tasks_router())
    app.include_router(tracks_router())  # track replay: positions history, incidents, transmissions
    app.include_router(patrols_router())
    app.include_router(metrics_router(ServiceCollector(service), web.read_metrics_token()))  # for a Prometheus scraper, by token
    # run-time patching (hardware.api), operators only; create_app runs after the radios are opened
    if (patches := getattr(getattr(service, "radios", None), "patches", None)) is not None:
        from hardware.api import patch_router

        app.include_router(patch_router(patches), dependencies=[require(Role.OPERATOR)])

    @app.get("/api/openapi.json", include_in_schema=False, dependencies=[require()])
    def openapi() -> dict[str, Any]:
        return app.openapi()

    return app


def new_app() -> FastAPI:
    # bodies over MAX_BODY_BYTES get 413 from FastAPI itself (declared or counted as they arrive)
    return FastAPI(
        title="jingbao", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None, max_body_size=MAX_BODY_BYTES
    )


def harden(app: FastAPI, web: WebConfig) -> None:
    """The middleware every jingbao app runs behind (a box's and central's alike). The last added runs first: which
    address a request is from, before anything reads it; the security headers, on refusals too; whether another
    site's page sent it (docs/security.md)."""
    app.add_middleware(OriginCheckMiddleware, allowed_origins=web.allowed_origins, session_cookie=SESSION_COOKIE)
    app.add_middleware(SecurityHeadersMiddleware, tile_url=web.tile_url)
    app.add_middleware(ClientAddressMiddleware, trusted_proxies=web.trusted_proxies)
