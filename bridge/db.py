"""The stores: one embedded SQLite database in WAL mode shared by every package (the default), or PostgreSQL where
several machines share one store (docs/deployment.md). A store written against `Connection` runs on either: central
keeps its state on PostgreSQL through bridge/db_postgres.py's adapter (`connect_state`).

Each package owns its tables and declares them as a numbered list of migrations under its own name
(`migrate(conn, "archive", [...])`); this module only opens connections and applies what is new. A migration is
SQLite's script as a plain string, or a `Migration` with a script per engine for a component that also runs on
PostgreSQL: one list, one version number per step on both engines.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import psycopg

    from bridge.config import StorageConfig
    from bridge.db_postgres import PostgresConnection, PostgresRow

# what a store is given: SQLite's connection, or PostgreSQL speaking like it (bridge/db_postgres.py)
Connection: TypeAlias = "sqlite3.Connection | PostgresConnection"
Row: TypeAlias = "sqlite3.Row | PostgresRow"  # read by column name or position on both

class StoreUnavailable(sqlite3.OperationalError):
    """The state store cannot be reached: central's PostgreSQL away, restarting or cut off (bridge/db_postgres.py
    raises it). An OperationalError, as SQLite's failures are; what waits a store out catches this one only, so that
    a statement that fails for its own sake (a timeout, a full disk) is not tried forever."""


# A state store failing (central's PostgreSQL restarting or away, a box's disk): the background work that found it
# (the outbox's sender, an escalation due) tries again this often rather than ending.
STORE_RETRY_S = 2.0

# Held while one process migrates, so processes starting at once on one PostgreSQL database take turns instead of
# both creating the same tables. Any constant key works; this one spells "jingbao".
_MIGRATE_LOCK = int.from_bytes(b"jingbao", "big")
_SCHEMA_VERSION = "CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
_SET_VERSION = (
    "INSERT INTO schema_version (component, version) VALUES ({0}, {0}) "
    "ON CONFLICT(component) DO UPDATE SET version = excluded.version"
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step of a component, written for each engine. An empty script is a step with nothing to do on that
    engine (a fix for a quirk of the other one), so the version numbers stay the same on both."""

    sqlite: str
    postgres: str

    @classmethod
    def same(cls, script: str) -> Migration:
        """A step written in SQL both engines read alike."""
        return cls(script, script)


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database (creating its folder), in WAL mode with a busy timeout; rows are sqlite3.Row."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row survives power loss, which is what "accepted => durable" promises.
        conn.execute("PRAGMA synchronous=FULL")
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def connect_state(storage: StorageConfig) -> sqlite3.Connection | PostgresConnection:
    """Where a node keeps its state (incidents, the alerts' outbox, responders' statuses, tasks, users, sessions, the
    audit log): PostgreSQL when the node has one (`storage.database_url`: central, so that a second central can take
    over from it), else the SQLite database in its data_dir (a box, an edge)."""
    if storage.database_url is None:
        return connect(storage.database)
    from bridge.db_postgres import PostgresConnection

    return PostgresConnection(storage.database_url)


def connect_postgres(url: str, timeout_s: int | None = None) -> psycopg.Connection:
    """Connect to PostgreSQL (a libpq URL or "key=value" string): autocommit, so each write is one
    `with conn.transaction():` block; rows are dicts. `timeout_s`: give up connecting after that long (libpq's
    connect_timeout; by default the URL's, else the system's)."""
    import psycopg  # here, not at the top: every command imports this module, few of them use PostgreSQL
    from psycopg.rows import dict_row

    timeout = {} if timeout_s is None else {"connect_timeout": timeout_s}
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, **timeout)


def migrate(
    conn: sqlite3.Connection | PostgresConnection | psycopg.Connection, component: str, migrations: Sequence[str | Migration]
) -> None:  # fmt: skip
    """Apply the migrations of `component` that have not been applied yet, each in its own transaction, on a SQLite
    connection or a PostgreSQL one (from `connect_postgres`, or `connect_state`'s adapter).

    Migrations are append-only: never edit one that has shipped, add a new one instead.
    """
    if isinstance(conn, sqlite3.Connection):
        _migrate_sqlite(conn, component, [m.sqlite if isinstance(m, Migration) else m for m in migrations])
        return
    from bridge.db_postgres import PostgresConnection

    scripts = [_postgres_script(component, n, m) for n, m in enumerate(migrations, 1)]
    if isinstance(conn, PostgresConnection):
        with conn.lock:  # the adapter's own connection, nobody else's statements in between
            _migrate_postgres(conn.raw(), component, scripts)
    else:
        _migrate_postgres(conn, component, scripts)


def _postgres_script(component: str, version: int, migration: str | Migration) -> str:
    if isinstance(migration, str):
        raise ValueError(f"{component} migration {version} is written for SQLite only: it has no PostgreSQL script")
    return migration.postgres


def _migrate_sqlite(conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> None:
    conn.execute(_SCHEMA_VERSION)
    row = conn.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
    done = row[0] if row else 0
    for version, script in enumerate(migrations[done:], start=done + 1):
        with conn:
            if not conn.in_transaction:  # sqlite3 begins one by itself only before DML: a CREATE would commit alone
                conn.execute("BEGIN")
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(_SET_VERSION.format("?"), (component, version))


def _migrate_postgres(conn: psycopg.Connection, component: str, migrations: Sequence[str]) -> None:
    from psycopg.rows import tuple_row

    # DDL is transactional on PostgreSQL: a migration and its version number commit together or not at all.
    cur = conn.cursor(row_factory=tuple_row)
    while True:
        with conn.transaction():
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            cur.execute(_SCHEMA_VERSION)
            row = cur.execute("SELECT version FROM schema_version WHERE component = %s", (component,)).fetchone()
            done = row[0] if row else 0
            if done >= len(migrations):
                return
            if migrations[done].strip():
                cur.execute(migrations[done])  # no parameters: the whole script goes as one multi-statement query
            cur.execute(_SET_VERSION.format("%s"), (component, done + 1))


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT implicitly; split instead so a migration is all-or-nothing.
    parts, current = [], []
    for line in script.splitlines(keepends=True):
        current.append(line)
        joined = "".join(current)
        if sqlite3.complete_statement(joined):
            parts.append(joined.strip())
            current = []
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return [p for p in parts if p]
