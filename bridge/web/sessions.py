"""Login sessions and the login throttle.

A session is a random token handed to the client once (HttpOnly cookie, or a bearer token for API clients); the
database keeps only its SHA-256, so a copy of the database does not let anyone log in.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_network

from bridge.db import Connection, Migration, migrate
from bridge.web.security import canonical_address
from bridge.web.users import User, user_from_row

SESSION_TTL_S = 12 * 3600  # one long shift; after that, log in again
MAX_TRACKED_KEYS = 10_000

MIGRATIONS = [
    Migration(
        sqlite="""
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        client TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX sessions_expires ON sessions (expires_at);
    """,
        postgres="""
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        client TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX sessions_expires ON sessions (expires_at);
    """,
    )
]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionStore:
    def __init__(self, conn: Connection, ttl_s: float = SESSION_TTL_S) -> None:
        migrate(conn, "web.sessions", MIGRATIONS)
        self._conn = conn
        self._lock = threading.Lock()
        self.ttl_s = ttl_s

    def create(self, user: User, client: str) -> str:
        """A new session for `user`; returns the token (shown once, never stored)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            self._conn.execute(
                "INSERT INTO sessions (token_hash, user_name, created_at, expires_at, client) VALUES (?, ?, ?, ?, ?)",
                (_digest(token), user.name, now, now + self.ttl_s, client),
            )
        return token

    def user(self, token: str) -> User | None:
        """The user of a live session (users disabled or deleted since lose it at once)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT u.* FROM sessions s JOIN users u ON u.name = s.user_name"
                " WHERE s.token_hash = ? AND s.expires_at > ? AND u.disabled = 0",
                (_digest(token), time.time()),
            ).fetchone()
        return user_from_row(row) if row else None

    def revoke(self, token: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_digest(token),))


class LoginThrottle:
    """Slows down password guessing without letting anyone lock a user out.

    Failed logins are counted per (name, address): FREE_FAILURES in a row cost nothing (typos); after them the next
    try from that address for that name waits 1 s, and each further failure doubles that (2, 4 ... s, at most
    MAX_DELAY_S); a success starts the pair afresh. Across names, one address may fail ADDRESS_MAX_FAILURES times per
    ADDRESS_WINDOW_S (password spraying: one password tried on many names); past that it waits. A name is never
    locked as such: guessing from one address holds up only that address, so the real user, from another, logs in.
    An IPv6 address counts as its /64 (what one subscriber gets). Kept in memory: a restart forgives.

    `attempt` counts a try as failed before the password is checked (argon2 takes a while, and tries sent at the same
    time would otherwise all pass the check); `succeeded` takes it back."""

    FREE_FAILURES = 3
    MAX_DELAY_S = 300.0
    FORGET_S = 3600.0  # a pair with no failure for this long starts afresh
    ADDRESS_MAX_FAILURES = 20
    ADDRESS_WINDOW_S = 600.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pairs: OrderedDict[tuple[str, str], _Failures] = OrderedDict()  # least recently failed first
        self._addresses: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def attempt(self, name: str, address: str) -> float:
        """Seconds `address` must wait before trying `name` again (then nothing is counted), or 0: go ahead (the try
        counts as a failure until `succeeded`)."""
        source = _address_key(address)
        pair = (name.lower(), source)
        with self._lock:
            now = self._clock()
            wait = max(self._pair_wait(pair, now), self._address_wait(source, now))
            if wait > 0:
                return wait
            failures = self._pairs.pop(pair, None) or _Failures()
            self._pairs[pair] = _Failures(failures.count + 1, now)
            self._addresses.setdefault(source, deque()).append(now)
            self._addresses.move_to_end(source)
            for table in (self._pairs, self._addresses):
                while len(table) > MAX_TRACKED_KEYS:  # a spray over more keys than that: forget the stalest
                    table.popitem(last=False)
        return 0.0

    def succeeded(self, name: str, address: str) -> None:
        source = _address_key(address)
        with self._lock:
            self._pairs.pop((name.lower(), source), None)
            if times := self._addresses.get(source):
                times.pop()  # this try was not a failure after all

    def _pair_wait(self, pair: tuple[str, str], now: float) -> float:
        failures = self._pairs.get(pair)
        if failures is None:
            return 0.0
        if now - failures.last >= self.FORGET_S:
            del self._pairs[pair]
            return 0.0
        if failures.count < self.FREE_FAILURES:
            return 0.0
        delay = min(2.0 ** (failures.count - self.FREE_FAILURES), self.MAX_DELAY_S)
        return max(0.0, failures.last + delay - now)

    def _address_wait(self, source: str, now: float) -> float:
        times = self._addresses.get(source)
        if times is None:
            return 0.0
        while times and now - times[0] >= self.ADDRESS_WINDOW_S:
            times.popleft()
        if not times:
            del self._addresses[source]
            return 0.0
        if len(times) < self.ADDRESS_MAX_FAILURES:
            return 0.0
        return times[-self.ADDRESS_MAX_FAILURES] + self.ADDRESS_WINDOW_S - now


@dataclass(frozen=True, slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0  # clock time of the latest


def _address_key(address: str) -> str:
    parsed = canonical_address(address)
    if isinstance(parsed, IPv6Address):
        return str(ip_network(f"{parsed}/64", strict=False))
    return str(parsed) if parsed is not None else address
