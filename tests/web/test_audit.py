"""The audit log: written for every search, playback and export, readable by auditors, editable by nobody."""

from __future__ import annotations

import sqlite3

import pytest

from bridge.db import connect
from bridge.web.audit import AuditLog
from tests.web.conftest import add_transcript, archive_utterance


def test_search_playback_and_export_are_logged_with_who_what_and_where(service, login):
    add_transcript(service, "u-audit-1", "ch-police", 300, text="西光中学门口有可疑人员")
    archive_utterance(service, "u-audit-1", "ch-police", 300)
    auditor, operator = login("auditor"), login("operator")
    operator.get("/api/search", params={"q": "可疑", "channel": "ch-police"})
    auditor.get("/api/utterances/u-audit-1/audio")
    auditor.get("/api/utterances/u-audit-1/audio", headers={"Range": "bytes=500-"})  # same playback, a later chunk
    auditor.get("/api/search/export.csv", params={"q": "可疑"})

    entries = auditor.get("/api/audit", params={"limit": 3}).json()
    export, playback, search = entries
    assert (export["action"], export["user_name"], export["target"], export["detail"]["rows"]) == ("export", "auditor", "可疑", 1)
    assert (playback["action"], playback["target"], playback["client"]) == ("playback", "u-audit-1", "testclient")
    assert (search["action"], search["user_name"], search["role"]) == ("search", "operator", "operator")
    assert search["detail"] == {"filters": {"channel": "ch-police"}, "offset": 0, "results": 1}
    assert export["ts_ms"] >= playback["ts_ms"] >= search["ts_ms"] and export["prev_hash"] == playback["row_hash"]
    only_playbacks = auditor.get("/api/audit", params={"action": "playback", "user": "auditor"}).json()
    assert [e["target"] for e in only_playbacks] == ["u-audit-1"]


def test_nobody_can_update_or_delete_the_log_even_with_sql(service, login):
    login("auditor").get("/api/search", params={"q": "打架"})
    conn = connect(service.config.storage.database)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"), conn:
        conn.execute("UPDATE audit_log SET user_name = 'someone else'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"), conn:
        conn.execute("DELETE FROM audit_log")
    assert conn.execute("SELECT count(*) FROM audit_log WHERE user_name = 'someone else'").fetchone()[0] == 0
    assert login("auditor").get("/api/audit/verify").json()["ok"] is True


def test_tampering_around_the_triggers_breaks_the_chain(tmp_path):
    conn = connect(tmp_path / "audit.db")
    log = AuditLog(conn)
    for n in range(3):
        log.append(user="auditor", role="auditor", action="search", target=f"q{n}", client="127.0.0.1")
    assert log.verify() == log.verify() | {"ok": True, "rows": 3}
    with conn:  # someone with the database file drops the guard and rewrites history
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("UPDATE audit_log SET target = 'nothing to see' WHERE seq = 2")
    report = log.verify()
    assert not report["ok"] and report["problems"] == [
        {"seq": 2, "kind": "row_altered", "detail": "content does not match its row_hash"}
    ]


def test_archive_verification_is_visible_to_auditors_with_its_time(service, login):
    archive_utterance(service, "u-verify-1", "ch-market", 400)
    auditor = login("auditor")
    fresh = auditor.post("/api/archive/verify").json()
    assert fresh["report"]["ok"] is True and fresh["report"]["rows"] >= 1 and fresh["checked_at"] > 0
    assert auditor.get("/api/archive/verify").json() == fresh  # the cached result, with the time it ran
    (service.archive.data_dir / service.archive.get("u-verify-1").path).write_bytes(b"altered")
    problems = auditor.post("/api/archive/verify").json()["report"]["problems"]
    assert [(p["kind"], p["id"]) for p in problems] == [("file_altered", "u-verify-1")]
