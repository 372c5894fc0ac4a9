"""The embedded store: one SQLite database in WAL mode, shared by every package.

Each package owns its tables and declares them as a numbered list of migrations under its own name
(`migrate(conn, "archive", [...])`); this module only opens connections and applies what is new.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path


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


def migrate(conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> None:
    """Apply the migrations of `component` that have not been applied yet, each in its own transaction.

    Migrations are append-only: never edit one that has shipped, add a new one instead.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    row = conn.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
    done = row[0] if row else 0
    for version, script in enumerate(migrations[done:], start=done + 1):
        with conn:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (component, version) VALUES (?, ?) "
                "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (component, version),
            )


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
