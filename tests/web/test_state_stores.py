"""The web's state stores (users, sessions, the audit log) on a box's SQLite database and on central's PostgreSQL,
through the state_db fixture: the same behaviour on both, the audit chain's hashes included."""

from __future__ import annotations

import itertools
import sqlite3
from types import SimpleNamespace

import pytest

from bridge.archive_verify import GENESIS_HASH
from bridge.db import Connection
from bridge.web import audit, sessions
from bridge.web.audit import AuditLog
from bridge.web.sessions import SessionStore
from bridge.web.users import Role, User, UserError, UserExists, UserStore

PASSWORD = "a password of some length"


def disable(conn: Connection, name: str) -> None:
    """What an administrator does to switch a user off (the product has no command for it)."""
    with conn:
        conn.execute("UPDATE users SET disabled = 1 WHERE name = ?", (name,))


def test_users_are_added_once_scoped_and_gone_once_disabled(state_db: Connection) -> None:
    users = UserStore(state_db)
    added = users.add("op", Role.OPERATOR, PASSWORD)
    users.add("g.zhang", "guard", PASSWORD, responder_id="g-market-01")
    with pytest.raises(UserExists):  # the primary key's IntegrityError, as sqlite3's on both engines
        users.add("op", Role.AUDITOR, PASSWORD)
    with pytest.raises(UserError):
        users.add("short", Role.AUDITOR, "2short")
    assert users.get("op") == added and users.get("nobody") is None
    assert [u.name for u in users.list()] == ["g.zhang", "op"]
    assert users.get("g.zhang") == User("g.zhang", Role.GUARD, "g-market-01", users.get("g.zhang").created_at)
    assert users.set_scope("op", "gongyuanbeilu").scope == "gongyuanbeilu" and users.get("op").scope == "gongyuanbeilu"
    assert users.set_scope("op", None).scope is None
    assert users.authenticate("op", PASSWORD) == added and users.authenticate("op", "wrong password") is None

    disable(state_db, "op")
    assert users.get("op") is None and [u.name for u in users.list()] == ["g.zhang"]
    assert users.authenticate("op", PASSWORD) is None
    with pytest.raises(UserError, match="no user"):
        users.set_scope("op", "gongyuanbeilu")
    with pytest.raises(UserExists):  # a disabled user's name stays taken
        users.add("op", Role.OPERATOR, PASSWORD)


def test_a_session_holds_until_it_expires_is_revoked_or_its_user_disabled(state_db: Connection, monkeypatch) -> None:
    users, store = UserStore(state_db), SessionStore(state_db, ttl_s=60.0)
    op, aud = users.add("op", Role.OPERATOR, PASSWORD), users.add("aud", Role.AUDITOR, PASSWORD)
    now = [1_000_000.0]
    monkeypatch.setattr(sessions, "time", SimpleNamespace(time=lambda: now[0]))
    expiring = store.create(op, "127.0.0.1")
    assert store.user(expiring) == op and store.user("forged") is None
    now[0] += 61  # past its ttl
    assert store.user(expiring) is None
    revoked, disabled = store.create(op, "10.0.0.1"), store.create(aud, "10.0.0.2")  # the expired one deleted meanwhile
    assert state_db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 2
    assert store.user(revoked) == op and store.user(disabled) == aud
    store.revoke(revoked)
    assert store.user(revoked) is None
    disable(state_db, "aud")
    assert store.user(disabled) is None


def appended(log: AuditLog) -> None:
    """Five entries of three users; two name the station of an utterance they played back or read."""
    log.append(user="aud.a", role="auditor", action="search", target="打架 \"西门\"", client="10.0.0.1",
               filters={"channel": "ch-market"}, results=2)  # fmt: skip
    log.append(user="aud.b", role="auditor", action="playback", target="u1", client="10.0.0.2", station="gongyuan")
    log.append(user="op", role="operator", action="login", target="op", client="::1")
    log.append(user="aud.b", role="auditor", action="transcript", target="u2", client="10.0.0.2", station="xiguang")
    log.append(user="aud.a", role="auditor", action="export", target="可疑", client="10.0.0.1", rows=1,
               filters={"station": "gongyuan"})  # a station named below the top level is not the entry's  # fmt: skip


def test_the_audit_log_lists_newest_first_and_filters_by_user_action_and_scope(state_db: Connection) -> None:
    log = AuditLog(state_db)
    appended(log)
    assert [e.seq for e in log.list()] == [5, 4, 3, 2, 1]
    assert [e.seq for e in log.list(limit=2, before_seq=4)] == [3, 2]
    assert [e.seq for e in log.list(user="aud.a")] == [5, 1] and [e.seq for e in log.list(action="login")] == [3]
    assert log.list()[0].to_dict()["detail"] == {"filters": {"station": "gongyuan"}, "rows": 1}
    # a scoped auditor's: the entries of the scope's users, and those about an utterance of the scope's stations
    assert [e.seq for e in log.list(within=(["op"], ["gongyuan"]))] == [3, 2]
    assert [e.seq for e in log.list(within=(["aud.a", "op"], ["gongyuan", "xiguang"]))] == [5, 4, 3, 2, 1]
    assert [e.seq for e in log.list(within=([], ["xiguang"]))] == [4]
    assert [e.seq for e in log.list(within=(["op"], []))] == [3]
    assert log.list(within=([], [])) == []
    assert [e.seq for e in log.list(within=(["aud.a"], ["xiguang"]), action="export")] == [5]


def test_the_audit_chain_hashes_the_same_bytes_on_both_engines_and_verifies(state_db: Connection, monkeypatch) -> None:
    monkeypatch.setattr(audit, "time", SimpleNamespace(time=lambda: 1_767_225_600.123))
    log = AuditLog(state_db)
    appended(log)
    entries = log.list()
    assert entries[-1].prev_hash == GENESIS_HASH and all(e.prev_hash == b.row_hash for e, b in itertools.pairwise(entries))
    report = log.verify()
    assert report == {"ok": True, "rows": 5, "head": entries[0].row_hash, "problems": []}
    # the same head as a box's SQLite gives for the same entries: what was hashed is what both engines read back
    assert report["head"] == "ea1cb3eb3f2c9a3995761bfb09885093e2a3921bd3a7082cab993ed2051c7835"


def test_the_audit_log_refuses_updates_and_deletes_and_an_edit_around_that_breaks_the_chain(state_db: Connection) -> None:
    log = AuditLog(state_db)
    appended(log)
    sqlite = isinstance(state_db, sqlite3.Connection)
    for statement in ("UPDATE audit_log SET user_name = 'someone else'", "DELETE FROM audit_log",
                      *(() if sqlite else ("TRUNCATE audit_log",))):  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError, match="append-only"), state_db:
            state_db.execute(statement)
    assert log.verify()["ok"] and len(log.list()) == 5
    with state_db:  # someone with the database's owner's rights drops the guard and rewrites history
        state_db.execute("DROP TRIGGER audit_log_no_update" if sqlite else
                         "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")  # fmt: skip
        state_db.execute("UPDATE audit_log SET target = 'nothing to see' WHERE seq = 2")
    report = log.verify()
    assert not report["ok"] and report["problems"] == [
        {"seq": 2, "kind": "row_altered", "detail": "content does not match its row_hash"}
    ]
