"""The adapter that lets a store written for sqlite3 run on PostgreSQL (central's state): placeholders, rows,
transactions, errors and a dropped connection, on a real PostgreSQL."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from bridge.db_postgres import PostgresConnection, postgres_sql
from tests.support.postgres import PostgresCluster


def test_placeholders_become_psycopgs_outside_literals_and_percent_signs_stay_literal() -> None:
    assert postgres_sql("SELECT ? WHERE a LIKE '50%?' AND b = ?") == "SELECT %s WHERE a LIKE '50%%?' AND b = %s"
    assert postgres_sql("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', %s"


def test_rows_read_by_name_and_position_and_booleans_are_stored_as_integers(pg_url: str) -> None:
    conn = PostgresConnection(pg_url)
    conn.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, flag INTEGER NOT NULL, name TEXT)")
    conn.execute("INSERT INTO t (id, flag, name) VALUES (?, ?, ?)", (1, True, "100%"))
    row = conn.execute("SELECT id, flag, name FROM t WHERE name LIKE '100%' AND flag = ?", (1,)).fetchone()
    assert row is not None and row["flag"] == 1 and row[0] == 1 and dict(row) == {"id": 1, "flag": 1, "name": "100%"}
    assert [tuple(r) for r in conn.execute("SELECT id, name FROM t")] == [(1, "100%")]
    conn.close()


def test_a_with_block_is_one_transaction_an_inner_one_joins_it_and_an_error_rolls_all_back(pg_url: str) -> None:
    conn, other = PostgresConnection(pg_url), PostgresConnection(pg_url)
    conn.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")
    with conn:
        conn.execute("INSERT INTO t VALUES (1)")
        with conn:
            conn.execute("INSERT INTO t VALUES (2)")
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # not committed at the inner block's end
    assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    with pytest.raises(ZeroDivisionError), conn:
        conn.execute("INSERT INTO t VALUES (3)")
        raise ZeroDivisionError
    with pytest.raises(sqlite3.IntegrityError):  # one error class for a store to catch, whatever the engine
        conn.execute("INSERT INTO t VALUES (1)")
    assert [r[0] for r in other.execute("SELECT id FROM t ORDER BY id")] == [1, 2]
    conn.close()
    other.close()


def test_a_connection_postgresql_dropped_is_opened_again_unseen_and_postgresql_away_is_an_operational_error(
    postgres: PostgresCluster, pg_url: str
) -> None:  # fmt: skip
    conn = PostgresConnection(pg_url)
    conn.execute("CREATE TABLE t (id BIGINT PRIMARY KEY)")

    def dropped() -> None:  # as a restart of PostgreSQL leaves the connection: dead, and not known to be yet
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid <> pg_backend_pid()")  # fmt: skip

    dropped()
    conn.execute("INSERT INTO t VALUES (1)")  # found dead, run again on a new connection
    dropped()
    with conn:  # its BEGIN found it dead
        conn.execute("INSERT INTO t VALUES (2)")
    postgres.pause()
    try:
        with pytest.raises(sqlite3.OperationalError):  # as SQLite's own (a store's caller catches one class)
            conn.execute("INSERT INTO t VALUES (3)")
    finally:
        postgres.resume()
    conn.execute("INSERT INTO t VALUES (4)")
    assert [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")] == [1, 2, 4]
    conn.close()
