"""A central pair: two `jingbao run --role central` on two machines, one active, the other waiting to take over.

Central's whole state is in PostgreSQL (the stations' archive, and since bridge/db_postgres.py its incidents, the
alerts' outbox, responders' statuses, tasks, users, sessions and audit log), so either machine can be the one that
runs. Which one does is a PostgreSQL session-level advisory lock, the lease: a central takes it before it starts
its ingest, dispatcher and web app, and holds it on a connection of its own for as long as it runs. The other one
starts, finds the lease held, logs that it stands by, and tries again every `POLL_S`; it subscribes to nothing and
serves nothing meanwhile, so the stations' messages wait for the active one's MQTT session.

PostgreSQL lets the lease go when its connection ends: at once when the active central's process dies (SIGKILL,
a crash: its kernel closes the socket), within ~15 s when its machine or network goes (the server's TCP keepalives
and user timeout, set for the lease's session: bridge/db_postgres.py's DEAD_PEER; without them the server would
hold a dead machine's lease for its kernel's two hours). The standby then takes it, starts, and carries on from
what is committed: it resumes the same MQTT sessions (the same client ids: the broker kept what arrived meanwhile),
sends what waits in the outbox, re-arms the acknowledgement watches, and dispatches what was committed and not yet
dispatched (bridge/central_dispatch.py). What the dead one held only in memory is lost: partial transcripts being read for a
provisional alert (their finals still come) and the console's live view (the browsers reconnect).

The active central checks its lease every `CHECK_S`. If the lease's connection fails (PostgreSQL restarted, or this
machine cut off from it), it keeps running (with PostgreSQL gone nothing is committed anyway: the ingest waits,
search answers 503) and tries to take the lease again. Taken: it carries on (a standby that lost PostgreSQL too waits
`DEFER_S` once it is back, so that a restart of PostgreSQL does not hand the lease over; and the holder's own old
session, which a network blip can leave at the server, is ended for it). Held by the other machine by now, or
PostgreSQL out of reach for `CUT_OFF_S` (the server has dropped the session and the lease by then, and this central
must not keep the other's MQTT sessions busy): this one stops, exit status 3, without draining its outbox, rather
than dispatch beside it (its supervisor starts it again, and it stands by). In the seconds between the other taking
over and this one's next check both may send an alert waiting in the outbox: a phone drops the second (the same
outbox id). A central that stops cleanly closes the connection and the lease goes with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bridge.db_postgres import DEAD_PEER_S, dead_peer
from bridge.logsafe import clip

logger = logging.getLogger(__name__)

# the lease's key: any constant both centrals agree on (this one spells "jbcentr"); distinct from migrations' key
LEASE_KEY = int.from_bytes(b"jbcentr", "big")
POLL_S = 0.5  # the standby tries for the lease this often (a query a try: cheap)
CHECK_S = 2.0  # the active central checks its lease's connection this often
DEFER_S = 3 * CHECK_S  # PostgreSQL back after an outage: the standby lets the former holder take the lease back first
CUT_OFF_S = DEAD_PEER_S + 5  # the holder out of PostgreSQL's reach this long: its session, and the lease, are gone
LEASE_LOST_EXIT = 3


class LeaseLost(RuntimeError):
    """The other central took the lease while this one's connection was down."""


class CentralLease:
    """`await acquire()` returns once this central holds the lease (at once, unless another central does);
    `await hold()` raises LeaseLost when the other central has taken it; `release()` lets it go."""

    def __init__(self, url: str, *, poll_s: float = POLL_S, check_s: float = CHECK_S, defer_s: float = DEFER_S,
                 cut_off_s: float = CUT_OFF_S) -> None:  # fmt: skip
        self._url = url
        self._poll_s, self._check_s, self._defer_s, self._cut_off_s = poll_s, check_s, defer_s, cut_off_s
        self._conn: psycopg.Connection | None = None
        self._session: int | None = None  # the backend (pid) of the session that took the lease last
        self._away = False  # PostgreSQL not reached at the last try (logged once)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.held_since: float | None = None  # (epoch s) since this central holds the lease
        self.retaking_since: float | None = None  # (epoch s) since its connection failed, while it takes it back

    async def acquire(self) -> None:
        waited = was_away = False
        while True:
            if not await asyncio.to_thread(self._connected):
                was_away = True
                await asyncio.sleep(self._poll_s)
                continue
            if was_away:  # PostgreSQL back (a restart): the central that held the lease takes it back first
                was_away = False
                await asyncio.sleep(self._defer_s)
            if await asyncio.to_thread(self._take):
                break
            if not waited:
                logger.warning("central standing by: another central holds the lease (PostgreSQL advisory lock %d); "
                               "taking over when it goes", LEASE_KEY)  # fmt: skip
                waited = True
            await asyncio.sleep(self._poll_s)
        self.held_since = time.time()
        logger.info("central %s holds the lease%s", self.holder, ": taking over" if waited else "")

    async def hold(self, on_lost: Callable[[], None] | None = None) -> None:
        """Until the lease is lost (`_take_back`): then `on_lost()`, before anything else stops, and LeaseLost."""
        while True:
            await asyncio.sleep(self._check_s)
            if not await asyncio.to_thread(self._alive):
                await self._take_back(on_lost)

    async def _take_back(self, on_lost: Callable[[], None] | None) -> None:
        """The lease's connection failed, and the lease with it: take it again. Lost: PostgreSQL answers and another
        session holds it (not this central's old one, which the server had not dropped yet: that one is ended), or
        PostgreSQL has been out of reach for `cut_off_s` (the server has ended this central's session by then,
        DEAD_PEER, and the other central may hold the lease)."""
        lost_at = time.monotonic()
        self.retaking_since = time.time()
        while True:
            if await asyncio.to_thread(self._connected):
                if await asyncio.to_thread(self._take):
                    logger.warning("central %s holds the lease again", self.holder)
                    self.retaking_since = None
                    return
                if not await asyncio.to_thread(self._end_own_old_session):
                    reason = "the other central took the lease while this one's connection was down"
                    break
            elif time.monotonic() - lost_at > self._cut_off_s:
                reason = f"PostgreSQL out of reach for {self._cut_off_s:.0f} s: the lease has gone with the session"
                break
            await asyncio.sleep(self._poll_s)
        if on_lost is not None:
            on_lost()
        raise LeaseLost(reason)

    def _connected(self) -> bool:
        """A connection to PostgreSQL, opened if needed; False (logged once per outage) when it cannot be."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10,
                                             application_name="jingbao central lease", **dead_peer(self._url))  # fmt: skip
            self._away = False
            return True
        except psycopg.Error as e:  # neither central can run without it; try again
            if not self._away:
                logger.warning("central lease: PostgreSQL not reachable (%s); trying again", clip(str(e)))
            self._away = True
            return False

    def _take(self) -> bool:
        assert self._conn is not None
        try:
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s), pg_backend_pid()", (LEASE_KEY,)).fetchone()
        except psycopg.Error:  # dropped again: the next try reconnects
            return False
        if row is not None and row[0]:
            self._session = row[1]
            return True
        return False

    def _end_own_old_session(self) -> bool:
        """True when the lease is held by the session this central took it on before its connection failed (a
        network blip: the server has not noticed yet), now ended so that the lease can be taken again."""
        assert self._conn is not None
        try:
            row = self._conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = %s"
                " AND objid::bigint = %s AND objsubid = 1", (LEASE_KEY >> 32, LEASE_KEY & 0xFFFFFFFF)).fetchone()  # fmt: skip
            if row is None or self._session is None or row[0] != self._session:
                return False
            self._conn.execute("SELECT pg_terminate_backend(%s)", (self._session,))
        except psycopg.Error:
            return False
        logger.warning("central lease: its old session %d still held the lease; ended it", self._session)
        return True

    def _alive(self) -> bool:
        try:
            assert self._conn is not None, "hold() before acquire()"
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error as e:
            logger.warning("central lease: its connection failed (%s); taking it again", clip(str(e)))
            return False

    def fault(self) -> dict[str, Any] | None:
        """/healthz's fault while the lease's connection is down and this central takes the lease back."""
        if self.retaking_since is None:
            return None
        return {"component": "lease", "channel": None, "kind": "lease_retaking", "since": self.retaking_since,
                "message": "the lease's connection to PostgreSQL failed: taking the lease back (the other central of "
                           "a pair takes over if it gets it first)"}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"holder": self.holder, "held_since": self.held_since, "retaking_since": self.retaking_since}

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the session ends: PostgreSQL lets the lease go
