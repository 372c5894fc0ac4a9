"""What central's `GET /healthz` and `GET /metrics` read (bridge/web/central_app.py, bridge/web/metrics.py): whether
the ingest's link to the broker between nodes is up, whether PostgreSQL answers, whether the dispatcher's link to the
phones' broker is, and the ingest's and dispatcher's counts.

PostgreSQL is asked by a probe of its own (`SELECT 1` every PROBE_INTERVAL_S on its own connection) rather than at
each request: an idle central meets no outage otherwise (the ingest touches PostgreSQL only when a message comes),
and a health check must answer at once, not wait on the database it reports on. It counts as up while its latest
probe succeeded and is not older than `stale_after_s` (a probe hanging on a dead network link is no answer either).
Which central of a pair this is, and since when, is `lease` (bridge/central_lease.py): a fault while it takes the
lease back after its connection failed. (A standby serves no /healthz: the pair's address answers from the active.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from bridge.logsafe import clip

if TYPE_CHECKING:
    from bridge.central import CentralIngest
    from bridge.central_dispatch import CentralDispatch
    from bridge.central_lease import CentralLease

logger = logging.getLogger(__name__)

PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 5  # connect_timeout and statement_timeout; libpq takes whole seconds, 2 at least


class DatabaseProbe:
    """`run()` asks PostgreSQL `SELECT 1` every `interval_s` until cancelled; `up` says whether it answered lately."""

    def __init__(self, url: str, *, interval_s: float = PROBE_INTERVAL_S) -> None:
        self._url = url
        self.interval_s = interval_s
        self.stale_after_s = 3 * interval_s + PROBE_TIMEOUT_S  # a probe taking longer is hanging
        self._conn: psycopg.Connection | None = None
        # the probe's thread outlives a cancelled run(): the connection is made and closed under this lock, none is
        # made once run() has ended, and a probe still running then closes its own (else it would be left open)
        self._lock = threading.Lock()
        self._ended = False
        self.started_at = time.time()
        self.answered_at: float | None = None  # the latest answer
        self.failing_since: float | None = None  # the first of the failures since then (None while it answers)
        self.error = ""  # the latest failure

    @property
    def up(self) -> bool:
        return (self.failing_since is None and self.answered_at is not None
                and time.time() - self.answered_at <= self.stale_after_s)  # fmt: skip

    async def run(self) -> None:
        try:
            while True:
                try:
                    await asyncio.to_thread(self._ask)
                except psycopg.Error as e:
                    self._failed(f"{type(e).__name__}: {e}")
                else:
                    if self.failing_since is not None:
                        logger.info("PostgreSQL answers again")
                    self.answered_at, self.failing_since, self.error = time.time(), None, ""
                await asyncio.sleep(self.interval_s)
        finally:
            self._ended = True
            if self._lock.acquire(blocking=False):  # else a probe is running in its thread: it closes it when done
                try:
                    self._close()
                finally:
                    self._lock.release()

    def _ask(self) -> None:
        with self._lock:
            if self._ended:
                return
            try:
                self._ask_now()
            finally:
                if self._ended:
                    self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ask_now(self) -> None:
        try:
            if self._conn is None:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=PROBE_TIMEOUT_S,
                                             options=f"-c statement_timeout={PROBE_TIMEOUT_S * 1000}")  # fmt: skip
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self._close()  # a connection that failed once stays broken: the next probe opens another
            raise

    def _failed(self, error: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
            logger.warning("PostgreSQL does not answer (%s)", clip(error))
        self.error = error

    def fault(self) -> dict[str, Any] | None:
        """The fault /healthz names while it is not up, None while it is."""
        if self.up:
            return None
        if self.failing_since is not None:
            message, since = f"PostgreSQL does not answer: {clip(self.error)}", self.failing_since
        elif self.answered_at is None:
            message, since = "PostgreSQL has not answered yet", self.started_at
        else:
            message, since = f"PostgreSQL has not answered for {time.time() - self.answered_at:.0f} s", self.answered_at
        return {"component": "database", "channel": None, "kind": "database_unreachable", "message": message,
                "since": since}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"up": self.up, "answered_at": self.answered_at, "failing_since": self.failing_since,
                "error": clip(self.error)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CentralHealth:
    """Central's running parts as its /healthz and /metrics read them; `dispatch` is None when central dispatches
    nothing (no station of its region names a jurisdiction file)."""

    ingest: CentralIngest
    dispatch: CentralDispatch | None
    database: DatabaseProbe
    lease: CentralLease | None = None  # which central of a pair this is (run_central's; tests may run without)

    def failing(self) -> list[dict[str, Any]]:
        """The active faults, each as a box's /healthz names one (bridge/web/routes_channels.py)."""
        faults = []
        link = self.ingest.link
        if not link.connected:
            faults.append({"component": "broker", "channel": None, "kind": "broker_disconnected",
                           "message": f"the ingest is not connected to the broker at {link.address}",
                           "since": link.down_since})  # fmt: skip
        if (database := self.database.fault()) is not None:
            faults.append(database)
        alerts = self.dispatch.service.link if self.dispatch is not None else None
        if alerts is not None and (fault := alerts.fault()) is not None:
            faults.append(fault)
        if self.lease is not None and (fault := self.lease.fault()) is not None:
            faults.append(fault)
        return faults

    def to_dict(self) -> dict[str, Any]:
        """/healthz's body: `ok` (no fault), `faults` and `failing` as on a box, the broker link and the database
        probe, and how far behind central is (its latest message stored; the dispatcher's queue)."""
        failing = self.failing()
        ingest = self.ingest
        return {
            "ok": not failing,
            "faults": len(failing),
            "failing": failing,
            "broker": ingest.link.to_dict(),
            "database": self.database.to_dict(),
            **({} if self.lease is None else {"lease": self.lease.to_dict()}),
            "last_stored_at": ingest.last_stored_at,
            "stored_lag_s": ingest.stored_lag_s,
            **({} if self.dispatch is None else {"dispatch_queued": self.dispatch.queued}),
        }
