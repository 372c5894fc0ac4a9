"""PostgreSQL behind the part of sqlite3's interface the stores speak, so one store class runs on either engine.

A single box keeps its state (incidents, the alerts' outbox, responders' statuses, tasks, users, sessions, the audit
log...) in its SQLite database. Central keeps it in PostgreSQL (`storage.database_url`), so that a second central
on another machine can take over with nothing left behind on a dead disk (docs/deployment.md, "a central pair").
The stores are written once, against `bridge.db.Connection`:

- `execute(sql, params)` with sqlite3's `?` placeholders (turned into psycopg's here), returning a cursor to fetch
  from or iterate; rows are read by column name or position, as sqlite3.Row; `dict(row)` works on both.
- `with conn:` is one transaction (committed, or rolled back on an exception). Outside one, every statement commits
  by itself (autocommit), as sqlite3 does for a SELECT. Unlike sqlite3, a `with` inside another joins the outer
  transaction (sqlite3 commits at the inner block's end), and an error inside one spoils the rest of it even if
  caught there (PostgreSQL: "current transaction is aborted"): no store nests blocks or catches inside one.
- Python booleans are stored as 0/1 (the stores' flags are INTEGER columns on both engines).
- Errors are sqlite3's DB-API classes (a constraint violation sqlite3.IntegrityError, PostgreSQL gone
  sqlite3.OperationalError...), the psycopg error as their cause, so that a store and its callers catch one class
  whatever the engine.
- A connection PostgreSQL dropped since its last statement (a restart, a failover) is found dead by the next
  statement or transaction, which is run again once on a new connection: the one lost statement never reached
  PostgreSQL, so nobody sees the restart. (A connection that dies while a statement outside a transaction runs could
  have committed it: run again, it may be applied twice; the stores write inside `with` blocks, whose BEGIN is what
  is run again.) PostgreSQL still away: the error goes to the caller, to retry, as with a SQLite disk error.
- A peer gone silent (a machine or network lost) is found within ~15 s at both ends (TCP keepalives and a user
  timeout, `DEAD_PEER`), not after the kernel's two hours: a statement then fails rather than hangs.

Statements are run one at a time on one connection (a lock held for a statement, or for a whole `with` block), as
the stores share one SQLite connection between the event loop and the web's threads. The placeholders are found
by skipping single-quoted literals only: no `?` in a comment or a quoted identifier. The SQL itself must be what
both engines read alike: `ON CONFLICT ... DO NOTHING` rather than `INSERT OR IGNORE`, `RETURNING id` rather than
`lastrowid`, `TRUE` rather than `1` in a WHERE; the schema is each component's migrations, a script per engine.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg.rows import RowMaker

from bridge.db import StoreUnavailable

T = TypeVar("T")
# a single-quoted SQL literal ('' inside it is a quote): placeholders and percent signs in it are left alone
_LITERAL = re.compile(r"('(?:[^']|'')*')")


class PostgresRow:
    """One row, by column name or by position (sqlite3.Row's interface)."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values, self._index = values, index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"PostgresRow({dict(zip(self._index, self._values, strict=True))!r})"


def _row_maker(cursor: psycopg.Cursor[Any]) -> RowMaker[PostgresRow]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: PostgresRow(values, index)


def postgres_sql(sql: str) -> str:
    """sqlite3's `?` placeholders as psycopg's `%s` (a literal `%` doubled), outside quoted literals."""
    parts = _LITERAL.split(sql)
    for i in range(0, len(parts), 2):  # the odd parts are the literals
        parts[i] = parts[i].replace("%", "%%").replace("?", "%s")
    for i in range(1, len(parts), 2):
        parts[i] = parts[i].replace("%", "%%")
    return "".join(parts)


# libpq's (this end) and the server's (options: the other end, where a session's advisory locks live) TCP settings:
# idle 5 s, then a probe every 2 s, 3 unanswered probes, or 15 s of unacknowledged data, and the connection is dead.
# Over a Unix socket they do nothing.
DEAD_PEER: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 15_000,
    "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 -c tcp_user_timeout=15000",
}  # fmt: skip
DEAD_PEER_S = 15


def _params(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(int(p) if isinstance(p, bool) else p for p in params)


class PostgresConnection:
    """One PostgreSQL connection speaking like a sqlite3.Connection to the stores (the module's docstring)."""

    def __init__(self, url: str, *, connect_timeout_s: int = 3) -> None:
        """`connect_timeout_s`: short, since the statements run on the caller's thread (the event loop's, often)."""
        self.url = url
        self._timeout_s = connect_timeout_s
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[PostgresRow] | None = None
        self._transactions: list[psycopg.Transaction] = []  # the open `with` blocks: only the outermost is real

    def raw(self) -> psycopg.Connection[PostgresRow]:
        """The psycopg connection (opened again if PostgreSQL dropped it): for what only PostgreSQL does
        (migrations, advisory locks). Hold `lock` while using it beside other threads."""
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self.url, autocommit=True, row_factory=_row_maker,
                                             connect_timeout=self._timeout_s, **dead_peer(self.url))  # fmt: skip
            return self._conn

    def _on_a_live_connection(self, run: Callable[[psycopg.Connection[PostgresRow]], T]) -> T:
        """`run(connection)`, and once more on a new connection if the connection was found dead (PostgreSQL
        restarted since its last statement) while no transaction was under way on it (whose earlier statements are
        lost with it). A failure to connect is not tried again: PostgreSQL is away, the caller's to wait out."""
        conn = self.raw()
        try:
            return run(conn)
        except psycopg.OperationalError:
            if not conn.broken or self._transactions:
                raise
            return run(self.raw())

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[PostgresRow]:
        with self._lock, _as_sqlite_errors():
            return self._on_a_live_connection(lambda conn: conn.execute(postgres_sql(sql), _params(params)))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[PostgresRow]:
        with self._lock, _as_sqlite_errors():
            cursor = self.raw().cursor()
            cursor.executemany(postgres_sql(sql), [_params(r) for r in rows])
            return cursor

    def __enter__(self) -> PostgresConnection:
        self._lock.acquire()
        try:
            if not self._transactions:
                with _as_sqlite_errors():
                    transaction = self._on_a_live_connection(_begin)
                self._transactions.append(transaction)
            else:
                self._transactions.append(self._transactions[0])  # joins the outer one (sqlite3 would commit at its end)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        try:
            transaction = self._transactions.pop()
            if not self._transactions:
                with _as_sqlite_errors():
                    transaction.__exit__(kind, error, tb)
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def _begin(conn: psycopg.Connection[PostgresRow]) -> psycopg.Transaction:
    transaction = conn.transaction()
    transaction.__enter__()  # BEGIN
    return transaction


def dead_peer(url: str) -> dict[str, Any]:
    """DEAD_PEER for a connection to `url`: the server settings added to whatever `options` the URL has."""
    from psycopg.conninfo import conninfo_to_dict

    own = conninfo_to_dict(url).get("options")
    return DEAD_PEER | {"options": f"{own} {DEAD_PEER['options']}" if own else DEAD_PEER["options"]}


# the DB-API's error classes, most specific first: psycopg's and sqlite3's have the same names
_DBAPI_ERRORS = ("IntegrityError", "OperationalError", "DataError", "ProgrammingError", "NotSupportedError",
                 "InternalError", "InterfaceError", "DatabaseError", "Error")  # fmt: skip


@contextlib.contextmanager
def _as_sqlite_errors() -> Iterator[None]:
    """psycopg's error as sqlite3's class of the same DB-API name; PostgreSQL not reached (connection refused, a
    connection lost, the server shutting down) as StoreUnavailable, an OperationalError the callers wait out."""
    try:
        yield
    except psycopg.Error as e:
        if _unreachable(e):
            raise StoreUnavailable(str(e)) from e
        name = next(n for n in _DBAPI_ERRORS if isinstance(e, getattr(psycopg, n)))
        raise getattr(sqlite3, name)(str(e)) from e


def _unreachable(error: psycopg.Error) -> bool:
    # no SQLSTATE: libpq's own (refused, timed out, the connection closed); class 08: connection exceptions;
    # 57P01-57P03: the server shutting down or starting
    state = error.sqlstate
    return isinstance(error, psycopg.OperationalError) and (state is None or state.startswith(("08", "57P0")))
