"""The audit log: who searched, played back or exported what, when, and from where.

Append-only three times over: the product has no code path that changes or deletes a row, triggers abort any
UPDATE or DELETE of the table whoever issues it (and a TRUNCATE on central's PostgreSQL), and rows are
hash-chained like the archive's (`bridge.archive_verify.chain_hash`), so an edit made outside the database's rules
(a hex editor, a dropped trigger) shows up in `verify()`. As with the archive, note `head` outside the machine now
and then to anchor the chain.

The chain hashes the entry as it was written, and `verify` hashes it again as it reads back: both engines must give
back exactly what was written (`detail` is JSON kept as text, not PostgreSQL's json or jsonb, which would not).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bridge.archive_verify import GENESIS_HASH, chain_hash
from bridge.db import Connection, Migration, migrate

Action = Literal["search", "export", "playback", "transcript",
                 "login", "login_failed", "logout", "sos", "sos_ack", "task", "task_cancel",
                 "task_remind", "task_step", "task_file", "track"]

MIGRATIONS = [
    Migration(
        sqlite="""
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        user_name TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        client TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        row_hash TEXT NOT NULL
    );
    CREATE INDEX audit_log_user ON audit_log (user_name, seq);
    CREATE INDEX audit_log_action ON audit_log (action, seq);
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit_log is append-only');
    END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit_log is append-only');
    END;
    """,
        # raised as an integrity violation, so that the adapter gives the stores sqlite3.IntegrityError, as SQLite's
        # RAISE(ABORT) does; TRUNCATE empties a table without a row's DELETE (SQLite has no such statement)
        postgres="""
    CREATE TABLE audit_log (
        seq BIGINT PRIMARY KEY,
        ts_ms BIGINT NOT NULL,
        user_name TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        client TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        row_hash TEXT NOT NULL
    );
    CREATE INDEX audit_log_user ON audit_log (user_name, seq);
    CREATE INDEX audit_log_action ON audit_log (action, seq);
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'integrity_constraint_violation';
    END;
    $$;
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log EXECUTE FUNCTION audit_log_append_only();
    """,
    )
]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    ts_ms: int
    user_name: str
    role: str
    action: str
    target: str  # what was acted on: an utterance id, a query
    detail: str  # JSON: the filters, the number of results...
    client: str  # the client address
    prev_hash: str
    row_hash: str

    def chained_content(self) -> dict[str, Any]:
        content = asdict(self)
        del content["row_hash"]
        return content

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"detail": json.loads(self.detail)}


class AuditLog:
    def __init__(self, conn: Connection) -> None:
        migrate(conn, "web.audit", MIGRATIONS)
        self._conn = conn
        self._lock = threading.Lock()

    def append(self, *, user: str, role: str, action: Action, target: str, client: str, **detail: Any) -> AuditEntry:
        with self._lock, self._conn:
            head = self._conn.execute("SELECT seq, row_hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev_hash = (head["seq"] + 1, head["row_hash"]) if head else (1, GENESIS_HASH)
            draft = AuditEntry(
                seq, round(time.time() * 1000), user, role, action, target,
                json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str), client, prev_hash, "",
            )  # fmt: skip
            entry = AuditEntry(**(asdict(draft) | {"row_hash": chain_hash(draft.chained_content())}))
            self._conn.execute(
                "INSERT INTO audit_log (seq, ts_ms, user_name, role, action, target, detail, client, prev_hash, row_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(asdict(entry).values()),
            )
        return entry

    def list(
        self, *, limit: int = 100, before_seq: int | None = None, user: str | None = None, action: str | None = None,
        within: tuple[Collection[str], Collection[str]] | None = None,
    ) -> list[AuditEntry]:
        """Newest first; page back with `before_seq` (the smallest seq of the previous page). `within`: (users,
        stations): only the entries of those users, or about an utterance of those stations (a scoped auditor's)."""
        where, args = ["TRUE"], []
        for clause, value in (("seq < ?", before_seq), ("user_name = ?", user), ("action = ?", action)):
            if value is not None:
                where.append(clause)
                args.append(value)
        if within is not None:
            users, stations = sorted(within[0]), sorted(within[1])
            where.append(f"({_one_of('user_name', users)} OR {_one_of(_detail_station(self._conn), stations)})")
            args += [*users, *stations]
        sql = f"SELECT * FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, [*args, limit]).fetchall()
        return [AuditEntry(**dict(r)) for r in rows]

    def verify(self) -> dict[str, Any]:
        """Walk the chain: each row's hash must cover its content and the previous row's hash, seqs without gaps."""
        problems: list[dict[str, Any]] = []
        expected_prev, expected_seq, count = GENESIS_HASH, 1, 0
        with self._lock:
            rows = self._conn.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()
        for row in rows:
            entry = AuditEntry(**dict(row))
            count += 1
            if entry.seq != expected_seq:
                problems.append({"seq": entry.seq, "kind": "seq_gap", "detail": f"expected seq {expected_seq}"})
            if entry.prev_hash != expected_prev:
                problems.append({"seq": entry.seq, "kind": "chain_broken", "detail": "prev_hash is not the previous row's hash"})
            if chain_hash(entry.chained_content()) != entry.row_hash:
                problems.append({"seq": entry.seq, "kind": "row_altered", "detail": "content does not match its row_hash"})
            expected_prev, expected_seq = entry.row_hash, entry.seq + 1
        return {"ok": not problems, "rows": count, "head": expected_prev, "problems": problems}


def _one_of(expression: str, values: Collection[str]) -> str:
    """`expression IN (?, ...)`, one parameter per value; none: false (PostgreSQL has no empty IN list)."""
    return f"{expression} IN ({', '.join('?' * len(values))})" if values else "FALSE"


def _detail_station(conn: Connection) -> str:
    """The station an entry's detail names at its top level (the utterance's, for a playback or a transcript), as SQL.
    The one engine branch of this module: no JSON function is common to SQLite and PostgreSQL, and matching the
    station in Python instead would read a scoped auditor's every page through the whole log (every search, playback
    and login of every user), however few of its entries the page shows."""
    return "json_extract(detail, '$.station')" if isinstance(conn, sqlite3.Connection) else "(detail::json ->> 'station')"
