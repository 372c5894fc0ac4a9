"""What every route of the web app reaches through `request.app.state.web`: the service and the web's own stores."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from bridge.web.audit import AuditLog
from bridge.web.recordings import Recordings
from bridge.web.search import TranscriptSearch
from bridge.web.sessions import LoginThrottle, SessionStore
from bridge.web.users import UserStore

if TYPE_CHECKING:
    from bridge.archive import Archive
    from bridge.region import Region
    from bridge.service import Service


class ArchiveCheck:
    """The last `jingbao archive verify` report and when it ran, for auditors; one run at a time (it reads every
    file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None

    def last(self, archive: Archive) -> dict[str, Any]:
        return self._last or self.run(archive)

    def run(self, archive: Archive) -> dict[str, Any]:
        with self._lock:
            started = time.time()
            report = archive.verify()
            self._last = {"checked_at": started, "duration_s": round(time.time() - started, 3), "report": report.to_dict()}
            return self._last


@dataclass(slots=True)
class WebContext:
    service: Service
    users: UserStore
    sessions: SessionStore
    throttle: LoginThrottle
    audit: AuditLog
    search: TranscriptSearch  # SQLite's on a box, PostgreSQL's at central
    recordings: Recordings  # what is replayed: the box's archive, or what the edges forwarded to central
    region: Region | None = None  # at central: the stations users are scoped to (bridge/web/scope.py)
    archive_check: ArchiveCheck = field(default_factory=ArchiveCheck)


def web_context(conn: HTTPConnection) -> WebContext:
    """FastAPI dependency (works for requests and WebSockets alike)."""
    return conn.app.state.web


Web = Annotated[WebContext, Depends(web_context)]  # the parameter type routes declare to get the context


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"
