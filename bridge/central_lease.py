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

The active central checks its lease every `CHECK_S`. If the lease's connection fails (PostgreSQL restarted, or
this machine cut off from it), it keeps running (with PostgreSQL gone nothing is committed anyway: the ingest waits,
search answers 503) and tries to take the lease again. Taken: it carries on. Held by the other machine by now: this
one stops, exit status 3, without draining its outbox, rather than dispatch beside it (its supervisor starts it
again, and it stands by). In the seconds between the other taking over and this one's next check both may send an
alert waiting in the outbox: a phone drops the second (the same outbox id). A central that stops cleanly closes the
connection and the lease goes with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

import psycopg

from bridge.db_postgres import DEAD_PEER
from bridge.logsafe import clip

logger = logging.getLogger(__name__)

# the lease's key: any constant both centrals agree on (this one spells "jbcentr"); distinct from migrations' key
LEASE_KEY = int.from_bytes(b"jbcentr", "big")
POLL_S = 0.5  # the standby tries for the lease this often (a query a try: cheap)
CHECK_S = 2.0  # the active central checks its lease's connection this often
LEASE_LOST_EXIT = 3


class LeaseLost(RuntimeError):
    """The other central took the lease while this one's connection was down."""


class CentralLease:
    """`await acquire()` returns once this central holds the lease (at once, unless another central does);
    `await hold()` raises LeaseLost when the other central has taken it; `release()` lets it go."""

    def __init__(self, url: str, *, poll_s: float = POLL_S, check_s: float = CHECK_S) -> None:
        self._url = url
        self._poll_s, self._check_s = poll_s, check_s
        self._conn: psycopg.Connection | None = None
        self.holder = f"{socket.gethostname()}:{os.getpid()}"

    async def acquire(self) -> None:
        waited = False
        while not (taken := await asyncio.to_thread(self._try)):
            if taken is False and not waited:
                logger.warning("central standing by: another central holds the lease (PostgreSQL advisory lock %d); "
                               "taking over when it goes", LEASE_KEY)  # fmt: skip
                waited = True
            await asyncio.sleep(self._poll_s)
        logger.info("central %s holds the lease%s", self.holder, ": taking over" if waited else "")

    def _try(self) -> bool | None:
        """True: taken; False: another session holds it; None: PostgreSQL not reachable (logged)."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10,
                                             application_name="jingbao central lease", **DEAD_PEER)  # fmt: skip
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LEASE_KEY,)).fetchone()
            return bool(row and row[0])
        except psycopg.Error as e:  # PostgreSQL not there yet: neither central can run without it; try again
            logger.warning("central lease: PostgreSQL not reachable (%s); trying again", clip(str(e)))
            return None

    async def hold(self, on_lost: Callable[[], None] | None = None) -> None:
        """Until the other central takes the lease: then `on_lost()` (before anything else stops), and LeaseLost."""
        while True:
            await asyncio.sleep(self._check_s)
            if await asyncio.to_thread(self._alive):
                continue
            while not (taken := await asyncio.to_thread(self._try)):  # the connection is gone, and the lease with it
                if taken is False:  # PostgreSQL answered: the other central has it
                    if on_lost is not None:
                        on_lost()
                    raise LeaseLost("the other central took the lease while this one's connection was down")
                await asyncio.sleep(self._poll_s)
            logger.warning("central %s holds the lease again", self.holder)

    def _alive(self) -> bool:
        try:
            assert self._conn is not None, "hold() before acquire()"
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error as e:
            logger.warning("central lease: its connection failed (%s); taking it again", clip(str(e)))
            return False

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the session ends: PostgreSQL lets the lease go
