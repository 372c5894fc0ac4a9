"""Users of the web console and their roles, with argon2 password hashes in the state database (a box's SQLite,
central's PostgreSQL: bridge/db.py).

Roles say what a person may do, not who they are: an operator runs the channels and incidents, a guard or an officer
talks and acknowledges from the phone page, an auditor searches and replays the archive, an admin does all of it and
manages users. Which endpoint needs which role is declared where the endpoint is (`bridge.web.auth.require`).

A user's scope says over which stations: at the central tier a user scoped to a station or a 分局 (an id of the
region file, bridge/region.py) searches and replays only their stations' archives; no scope is the whole region
(bridge/web/scope.py). A single station's box holds only its own station's archive, so there a scope changes nothing.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bridge.config import STATION_ID
from bridge.db import Connection, Migration, Row, migrate


class Role(StrEnum):
    OPERATOR = "operator"  # 指挥调度员: channel wall, incidents, talk-back
    GUARD = "guard"  # 保安: push-to-talk page, alerts
    OFFICER = "officer"  # 民警: like a guard, plus the audio of the incidents he is sent to
    AUDITOR = "auditor"  # 审计: search, replay, export, audit log, archive verification
    ADMIN = "admin"  # everything, and user management


USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8

MIGRATIONS = [
    Migration(
        sqlite="""
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        responder_id TEXT,
        created_at REAL NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    );
    """,
        # PostgreSQL came later: its first step is the schema as it stands, the steps after it have nothing to do
        postgres="""
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        responder_id TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        scope TEXT
    );
    """,
    ),
    # NULL: the whole region (every user made before scopes were)
    Migration(sqlite="ALTER TABLE users ADD COLUMN scope TEXT;", postgres=""),
]

# Passwords of the demo users `make run` creates and prints; a demo on 127.0.0.1 only, never a deployment.
DEMO_USERS: tuple[tuple[str, Role], ...] = tuple((role.value, role) for role in Role)


def demo_password(name: str) -> str:
    return f"{name}-demo"


class UserError(ValueError):
    """A user that cannot be created as asked (bad name, unknown role, short password)."""


class UserExists(UserError):
    """The name is taken."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    responder_id: str | None = None  # the jurisdiction responder a guard/officer account speaks for
    created_at: float = 0.0
    scope: str | None = None  # a station or 分局 id of the region: what this user sees at central; None: all of it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"role": str(self.role)}


HASHER = PasswordHasher()  # argon2id with the library's current recommended cost (~50 ms a hash on one core)


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so a wrong name costs as long as a wrong password."""
    return HASHER.hash("not a password")


class UserStore:
    def __init__(self, conn: Connection) -> None:
        migrate(conn, "web.users", MIGRATIONS)
        self._conn = conn
        self._lock = threading.Lock()

    def add(
        self, name: str, role: Role | str, password: str, *, responder_id: str | None = None, scope: str | None = None
    ) -> User:
        """`scope`: a station or 分局 id (whether the region has it is checked by the caller, who has the region)."""
        if not USER_NAME.match(name):
            raise UserError(f"invalid user name {name!r} (1-64 of letters, digits, _ . @ -)")
        try:
            role = Role(role)
        except ValueError:
            raise UserError(f"unknown role {role!r} (one of {', '.join(Role)})") from None
        if len(password) < MIN_PASSWORD:
            raise UserError(f"password too short (at least {MIN_PASSWORD} characters)")
        _check_scope(scope)
        user = User(name, role, responder_id, time.time(), scope)
        try:
            with self._lock, self._conn:
                self._conn.execute(
                    "INSERT INTO users (name, role, password_hash, responder_id, created_at, scope) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, str(role), HASHER.hash(password), responder_id, user.created_at, scope),
                )
        except sqlite3.IntegrityError:  # PostgreSQL's too, as the adapter raises it (bridge/db_postgres.py)
            raise UserExists(f"user {name!r} already exists") from None
        return user

    def set_scope(self, name: str, scope: str | None) -> User:
        """Give a user another scope (None: the whole region); it holds from their next request on, sessions too."""
        _check_scope(scope)
        with self._lock, self._conn:
            if self._conn.execute("UPDATE users SET scope = ? WHERE name = ? AND disabled = 0", (scope, name)).rowcount != 1:
                raise UserError(f"no user {name!r}")
        user = self.get(name)
        assert user is not None
        return user

    def get(self, name: str) -> User | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM users WHERE name = ? AND disabled = 0", (name,)).fetchone()
        return user_from_row(row) if row else None

    def list(self) -> list[User]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM users WHERE disabled = 0 ORDER BY name").fetchall()
        return [user_from_row(r) for r in rows]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is right, else None (also for unknown or disabled users)."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM users WHERE name = ? AND disabled = 0", (name,)).fetchone()
        try:
            HASHER.verify(row["password_hash"] if row else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if HASHER.check_needs_rehash(row["password_hash"]):
            with self._lock, self._conn:
                self._conn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (HASHER.hash(password), name))
        return user_from_row(row)


def ensure_demo_users(db: Connection, responders: Mapping[Role, str] | None = None) -> list[tuple[str, str, str]]:
    """Create the demo users (one per role, password `<name>-demo`) that are missing; `responders` links the guard
    and officer accounts to a responder of the jurisdiction, so alerts reach their page. Return (name, role, password)
    of each demo user whose demo password still works, for `make run` to print."""
    store = UserStore(db)
    usable = []
    for name, role in DEMO_USERS:
        if store.get(name) is None:
            store.add(name, role, demo_password(name), responder_id=(responders or {}).get(role))
        if store.authenticate(name, demo_password(name)):
            usable.append((name, str(role), demo_password(name)))
    return usable


def _check_scope(scope: str | None) -> None:
    if scope is not None and not re.match(STATION_ID, scope):
        raise UserError(f"invalid scope {scope!r} (a station or 分局 id: letters, digits, _ -)")


def user_from_row(row: Row) -> User:
    """A `users` row as a User (also for a join that selects `u.*`)."""
    return User(row["name"], Role(row["role"]), row["responder_id"], row["created_at"], row["scope"])
