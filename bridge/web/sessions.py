"""Login sessions and the login rate limit.

A session is a random token handed to the client once (HttpOnly cookie, or a bearer token for API clients); the
database keeps only its SHA-256, so a copy of the database does not let anyone log in.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from bridge.db import migrate
from bridge.web.users import Role, User

SESSION_TTL_S = 12 * 3600  # one long shift; after that, log in again
MAX_TRACKED_KEYS = 10_000

MIGRATIONS = [
    """
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        client TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX sessions_expires ON sessions (expires_at);
    """
]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionStore:
    def __init__(self, conn: sqlite3.Connection, ttl_s: float = SESSION_TTL_S) -> None:
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
                " WHERE s.token_hash = ? AND s.expires_at > ? AND NOT u.disabled",
                (_digest(token), time.time()),
            ).fetchone()
        return User(row["name"], Role(row["role"]), row["responder_id"], row["created_at"]) if row else None

    def revoke(self, token: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_digest(token),))


@dataclass(frozen=True, slots=True)
class Lockout:
    retry_after_s: int


class LoginLimiter:
    """At most `max_failures` failed logins per `window_s` for one user name and, separately, for one client
    address; past that, further attempts are refused (without checking the password) until the window has moved
    on. Counted in memory: a restart forgives, which is acceptable for slowing down guessing."""

    def __init__(self, max_failures: int = 5, window_s: float = 60.0) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: defaultdict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, *keys: str) -> Lockout | None:
        """A Lockout when any of `keys` ("user:NAME", "addr:IP") has used up its failures, else None."""
        now = time.monotonic()
        with self._lock:
            waits = [self._wait(key, now) for key in keys]
        longest = max(waits, default=0.0)
        return Lockout(max(1, int(longest + 0.999))) if longest > 0 else None

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._failures[key].append(now)
            if len(self._failures) > MAX_TRACKED_KEYS:  # someone spraying names: forget what has expired
                for key in [k for k, t in self._failures.items() if now - t[-1] >= self.window_s]:
                    del self._failures[key]

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _wait(self, key: str, now: float) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        return self.window_s - (now - times[-self.max_failures]) if len(times) >= self.max_failures else 0.0
