"""Migrations on both engines: one list per component, the same version numbers on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading

import psycopg
import pytest

from bridge.db import Migration, connect, connect_postgres, migrate

STEPS = [
    Migration(
        sqlite="CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        postgres="CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);",
    ),
    # a step one engine needs and the other does not: the version moves on both
    Migration(sqlite="", postgres="CREATE INDEX notes_body ON notes (body);"),
    Migration(
        sqlite="ALTER TABLE notes ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;\nUPDATE notes SET seen = 1;",
        postgres="ALTER TABLE notes ADD COLUMN seen INTEGER NOT NULL DEFAULT 0; UPDATE notes SET seen = 1;",
    ),
]


@pytest.fixture(params=["sqlite", "postgres"])
def conn(request, tmp_path):
    conn = connect(tmp_path / "db.sqlite") if request.param == "sqlite" else connect_postgres(request.getfixturevalue("pg_url"))
    yield conn
    conn.close()


def version(conn, component: str) -> int:
    row = conn.execute(f"SELECT version FROM schema_version WHERE component = '{component}'").fetchone()
    return row["version"] if row else 0


def test_migrations_apply_once_and_later_steps_only_once_appended(conn):
    migrate(conn, "notes", STEPS[:2])
    assert version(conn, "notes") == 2
    conn.execute("INSERT INTO notes (body) VALUES ('kept')")
    migrate(conn, "notes", STEPS[:2])  # nothing new: nothing done
    migrate(conn, "notes", STEPS)
    assert version(conn, "notes") == 3
    assert conn.execute("SELECT body, seen FROM notes").fetchall()[0]["seen"] == 1


def test_a_failing_migration_leaves_no_trace_and_its_version_unapplied(conn):
    broken = Migration(sqlite="CREATE TABLE half (x INTEGER);\nSELECT * FROM missing;",
                       postgres="CREATE TABLE half (x INTEGER); SELECT * FROM missing;")  # fmt: skip
    with pytest.raises((sqlite3.Error, psycopg.Error)):
        migrate(conn, "notes", [*STEPS, broken])
    assert version(conn, "notes") == 3
    with pytest.raises((sqlite3.Error, psycopg.Error)):
        conn.execute("SELECT * FROM half")


def test_sqlite_callers_pass_plain_scripts_which_postgresql_refuses(tmp_path, pg_url):
    sqlite = connect(tmp_path / "db.sqlite")
    migrate(sqlite, "legacy", ["CREATE TABLE legacy (x INTEGER);"])
    assert version(sqlite, "legacy") == 1
    with connect_postgres(pg_url) as pg, pytest.raises(ValueError, match=r"legacy migration 1 .* SQLite only"):
        migrate(pg, "legacy", ["CREATE TABLE legacy (x INTEGER);"])


def test_processes_starting_together_on_postgresql_migrate_once(pg_url):
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with connect_postgres(pg_url) as conn:
                migrate(conn, "notes", STEPS)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with connect_postgres(pg_url) as conn:
        assert version(conn, "notes") == 3
