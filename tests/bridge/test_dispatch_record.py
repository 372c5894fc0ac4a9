"""Central's record of the transcripts it handled (bridge/central_dispatch.py's DispatchRecord), on SQLite and on
PostgreSQL through the adapter central's state goes by."""

from __future__ import annotations

import time

from bridge.central_dispatch import DispatchRecord
from bridge.db import Connection


def test_the_newest_version_handled_is_kept_exactly_per_utterance(state_db: Connection) -> None:
    record = DispatchRecord(state_db)
    assert record.version("gongyuan.u-1") is None
    version = 1_765_000_000.123456  # an edge's created_at: compared with the transcript's own, so it must come back exact
    record.record("gongyuan.u-1", version, "dispatched")
    record.record("gongyuan.u-2", version, "stale")
    record.record("gongyuan.u-1", version + 0.5, "recognised_again")  # a newer version written over the row
    assert record.version("gongyuan.u-1") == version + 0.5 and record.version("gongyuan.u-2") == version
    outcomes = state_db.execute("SELECT utterance_id, outcome FROM central_dispatched ORDER BY utterance_id").fetchall()
    assert [tuple(r) for r in outcomes] == [("gongyuan.u-1", "recognised_again"), ("gongyuan.u-2", "stale")]
    assert DispatchRecord(state_db).version("gongyuan.u-2") == version  # the next start's record: its schema is there


def test_rows_handled_before_a_time_are_forgotten(state_db: Connection) -> None:
    record = DispatchRecord(state_db)
    record.record("gongyuan.old", 1.0, "dispatched")
    time.sleep(0.01)
    cutoff = time.time()
    time.sleep(0.01)
    record.record("gongyuan.new", 2.0, "dispatched")
    record.forget_before(cutoff)
    assert record.version("gongyuan.old") is None and record.version("gongyuan.new") == 2.0
