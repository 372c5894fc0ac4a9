"""Full-text search over transcripts: an FTS5 index beside the `transcripts` table, filters, result rows.

The index is kept in step without touching the writer (the ASR stage): plain-SQL triggers on `transcripts` queue
every inserted, updated or deleted utterance id in `search_pending`, and `sync()` (called before every search, and
by whoever wants the index warm) analyses what is queued (`bridge.web.search_text`) in the same transaction that
dequeues it. The analysis is Python, which is why it cannot run inside the triggers: they fire on the writer's
connection, which has no Python functions registered.

Results come newest first in two tiers: transcripts that contain the terms as written (in the engine's text or in the
characters decoded from the on-board engine's pinyin), then those that match only as pinyin (a homophone the
recogniser or the decoder wrote, a pinyin-only transcript).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asr.store import MIGRATIONS as TRANSCRIPT_MIGRATIONS
from bridge.db import migrate
from bridge.logsafe import clip
from bridge.web.search_text import Query, QueryError, analyze, highlight, parse_query
from dispatch.incidents import MIGRATIONS as INCIDENT_MIGRATIONS

logger = logging.getLogger(__name__)

MAX_LIMIT = 10_000  # the most rows one search (an export) returns
# A document's rowid is its start time in ms shifted left by this (plus a few for utterances starting in the same
# millisecond), so FTS5's native rowid order is time order: newest-first pages and time filters need no sort.
DOC_ID_SHIFT = 10
SYNC_BATCH = 5_000

MIGRATIONS = [
    """
    CREATE TABLE search_docs (id INTEGER PRIMARY KEY, utterance_id TEXT NOT NULL UNIQUE);
    CREATE VIRTUAL TABLE search_fts USING fts5(words, pinyin, tokenize = "unicode61 tokenchars '_'");
    CREATE TABLE search_pending (seq INTEGER PRIMARY KEY, utterance_id TEXT NOT NULL UNIQUE);
    CREATE TRIGGER transcripts_search_insert AFTER INSERT ON transcripts
    BEGIN
        INSERT OR IGNORE INTO search_pending (utterance_id) VALUES (new.utterance_id);
    END;
    CREATE TRIGGER transcripts_search_update AFTER UPDATE ON transcripts
    BEGIN
        INSERT OR IGNORE INTO search_pending (utterance_id) VALUES (old.utterance_id);
        INSERT OR IGNORE INTO search_pending (utterance_id) VALUES (new.utterance_id);
    END;
    CREATE TRIGGER transcripts_search_delete AFTER DELETE ON transcripts
    BEGIN
        INSERT OR IGNORE INTO search_pending (utterance_id) VALUES (old.utterance_id);
    END;
    INSERT OR IGNORE INTO search_pending (utterance_id) SELECT utterance_id FROM transcripts ORDER BY start_ms;
    """,
    # The writer's UPSERT imposes its own conflict policy on trigger statements, so the OR IGNORE above made a second
    # save of a transcript fail: the queue takes duplicates instead. Documents get time-ordered ids (DOC_ID_SHIFT),
    # so everything is indexed again.
    """
    DROP TRIGGER transcripts_search_insert;
    DROP TRIGGER transcripts_search_update;
    DROP TRIGGER transcripts_search_delete;
    DROP TABLE search_pending;
    CREATE TABLE search_pending (seq INTEGER PRIMARY KEY, utterance_id TEXT NOT NULL);
    CREATE TRIGGER transcripts_search_insert AFTER INSERT ON transcripts
    BEGIN
        INSERT INTO search_pending (utterance_id) VALUES (new.utterance_id);
    END;
    CREATE TRIGGER transcripts_search_update AFTER UPDATE ON transcripts
    BEGIN
        INSERT INTO search_pending (utterance_id) VALUES (old.utterance_id);
        INSERT INTO search_pending (utterance_id) VALUES (new.utterance_id);
    END;
    CREATE TRIGGER transcripts_search_delete AFTER DELETE ON transcripts
    BEGIN
        INSERT INTO search_pending (utterance_id) VALUES (old.utterance_id);
    END;
    DELETE FROM search_fts;
    DELETE FROM search_docs;
    INSERT INTO search_pending (utterance_id) SELECT utterance_id FROM transcripts ORDER BY start_ms;
    """,
]


@dataclass(frozen=True, slots=True)
class Filters:
    channel: str | None = None
    since_ms: int | None = None  # start_ms >= since_ms
    until_ms: int | None = None  # start_ms < until_ms
    incident_type: str | None = None
    responder: str | None = None  # a responder assigned to an incident the utterance belongs to

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k in self.__slots__ if (v := getattr(self, k)) is not None}


@dataclass(frozen=True, slots=True)
class SearchPage:
    results: list[dict[str, Any]]
    more: bool  # there are results after this page


class SearchIndex:
    def __init__(self, conn: sqlite3.Connection) -> None:
        # the tables searched and joined must exist even before the ASR stage or the dispatcher first ran
        migrate(conn, "transcripts", TRANSCRIPT_MIGRATIONS)
        migrate(conn, "dispatch.incidents", INCIDENT_MIGRATIONS)
        migrate(conn, "web.search", MIGRATIONS)
        self._conn = conn
        self._lock = threading.Lock()

    def sync(self, progress: Callable[[int], None] | None = None) -> int:
        """Index everything queued; returns how many utterances were (re)indexed or dropped."""
        done = 0
        while batch := self._sync_batch():
            done += batch
            if progress:
                progress(batch)
        if done > SYNC_BATCH:
            logger.info("search index: %d transcripts indexed", done)
        return done

    def _sync_batch(self) -> int:
        with self._lock:
            if not self._conn.execute("SELECT 1 FROM search_pending LIMIT 1").fetchone():
                return 0  # the common case, answered without taking the database's write lock
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self._conn.execute(
                    "SELECT p.seq, p.utterance_id, t.start_ms, t.text, t.pinyin, t.readable, t.keywords,"
                    " t.utterance_id IS NOT NULL AS present"
                    " FROM search_pending p LEFT JOIN transcripts t ON t.utterance_id = p.utterance_id"
                    " ORDER BY p.seq LIMIT ?",
                    (SYNC_BATCH,),
                ).fetchall()
                self._index({r["utterance_id"]: r for r in rows})  # an id queued twice is indexed once
                if rows:
                    self._conn.execute("DELETE FROM search_pending WHERE seq <= ?", (rows[-1]["seq"],))
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
        return len(rows)

    def _index(self, rows: dict[str, sqlite3.Row]) -> None:
        """(Re)index a batch: drop the old documents of these utterances, add those that still have a transcript.
        A handful of statements per batch, not per row: the per-statement overhead is most of the cost."""
        ids = json.dumps(list(rows))
        old = self._conn.execute(
            "SELECT id FROM search_docs WHERE utterance_id IN (SELECT value FROM json_each(?))", (ids,)
        ).fetchall()
        self._conn.executemany("DELETE FROM search_fts WHERE rowid = ?", old)
        self._conn.executemany("DELETE FROM search_docs WHERE id = ?", old)
        present = [r for r in rows.values() if r["present"]]
        doc_ids = self._free_doc_ids([r["start_ms"] << DOC_ID_SHIFT for r in present])
        self._conn.executemany(
            "INSERT INTO search_docs (id, utterance_id) VALUES (?, ?)",
            zip(doc_ids, (r["utterance_id"] for r in present), strict=True),
        )
        indexed = (analyze(r["text"], r["pinyin"], _keyword_labels(r["keywords"]), r["readable"]) for r in present)
        self._conn.executemany(
            "INSERT INTO search_fts (rowid, words, pinyin) VALUES (?, ?, ?)",
            ((doc_id, ix.words, ix.pinyin) for doc_id, ix in zip(doc_ids, indexed, strict=True)),
        )

    def _free_doc_ids(self, wanted: list[int]) -> list[int]:
        """Each wanted id, or the next one up that is free: utterances on different channels can start in the same
        millisecond."""
        taken = {r[0] for r in self._conn.execute(
            "SELECT id FROM search_docs WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(wanted),)
        )}  # fmt: skip
        out = []
        for doc_id in wanted:
            while doc_id in taken:
                doc_id += 1
                if self._conn.execute("SELECT 1 FROM search_docs WHERE id = ?", (doc_id,)).fetchone():
                    taken.add(doc_id)
            taken.add(doc_id)
            out.append(doc_id)
        return out

    # --- searching -----------------------------------------------------------------------------------------

    def search(self, text: str, filters: Filters = Filters(), *, limit: int = 50, offset: int = 0) -> SearchPage:
        """Transcripts matching `text` (every term; all transcripts when blank) and `filters`, newest first, exact
        matches before sound-alikes. QueryError for a query that cannot be searched."""
        limit, offset = max(1, min(limit, MAX_LIMIT)), max(0, offset)
        query = parse_query(text) if text.strip() else None
        self.sync()
        where, args = _filter_sql(filters)
        with self._lock:
            if query is None:
                rows = self._conn.execute(
                    f"SELECT t.*, NULL AS tier FROM transcripts t WHERE {where} ORDER BY t.start_ms DESC LIMIT ? OFFSET ?",
                    [*args, limit + 1, offset],
                ).fetchall()
            else:
                where, args = _rowid_range(filters, where, args)
                rows = self._tiers(query, where, args, limit + 1, offset)
            results = [_result(r, query) for r in rows[:limit]]
            self._attach_incidents(results)
        return SearchPage(results, more=len(rows) > limit)

    def _tiers(self, query: Query, where: str, args: list[Any], want: int, offset: int) -> list[sqlite3.Row]:
        exact = self._match(query.exact, 0, where, args, offset + want, 0)
        rows = exact[offset:]
        if len(rows) < want and query.sounds_like:
            skip = max(0, offset - len(exact))
            rows += self._match(query.sounds_like, 1, where, args, want - len(rows), skip)
        return rows

    def _match(self, fts: str, tier: int, where: str, args: list[Any], limit: int, offset: int) -> list[sqlite3.Row]:
        # CROSS JOIN fixes the join order: FTS5 walks its matches newest first (within the time filters) and the
        # other filters are checked per match. Left to itself the planner starts from a selective-looking filter
        # (a channel and a week) and re-runs the full-text query for every row of it, which is 100x slower.
        sql = (
            f"SELECT t.*, {tier} AS tier FROM search_fts f CROSS JOIN search_docs d ON d.id = f.rowid"
            " CROSS JOIN transcripts t ON t.utterance_id = d.utterance_id"
            f" WHERE search_fts MATCH ? AND {where} ORDER BY f.rowid DESC LIMIT ? OFFSET ?"
        )
        try:
            return self._conn.execute(sql, [fts, *args, limit, offset]).fetchall()
        except sqlite3.OperationalError as e:  # parse_query only emits quoted tokens; this is a safety net
            logger.warning("search expression %s refused by FTS5: %s", clip(repr(fts)), e)
            raise QueryError("the search could not be run on this query") from e

    def _attach_incidents(self, results: list[dict[str, Any]]) -> None:
        """Each result's incidents (id, type, priority, status, assigned); the scan is bounded by time, since an
        utterance joins an incident created around it (merges happen within minutes)."""
        for r in results:
            r["incidents"] = []
        if not results:
            return
        by_id = {r["utterance_id"]: r for r in results}
        starts = [r["start"] for r in results]
        rows = self._conn.execute(
            "SELECT i.id, i.type, i.priority, i.status, i.assigned, j.value AS utterance_id"
            " FROM incidents i, json_each(i.utterance_ids) j"
            f" WHERE i.created_at BETWEEN ? AND ? AND j.value IN ({', '.join('?' * len(by_id))})",
            [min(starts) - 3600, max(starts) + 3600, *by_id],
        ).fetchall()
        for row in rows:
            by_id[row["utterance_id"]]["incidents"].append(
                {"id": row["id"], "type": row["type"], "priority": row["priority"], "status": row["status"],
                 "assigned": json.loads(row["assigned"])}
            )  # fmt: skip


def _filter_sql(f: Filters) -> tuple[str, list[Any]]:
    where, args = ["1"], []
    if f.channel is not None:
        where.append("t.channel = ?")
        args.append(f.channel)
    if f.since_ms is not None:
        where.append("t.start_ms >= ?")
        args.append(f.since_ms)
    if f.until_ms is not None:
        where.append("t.start_ms < ?")
        args.append(f.until_ms)
    if f.incident_type is not None or f.responder is not None:
        inner, inner_args = [], []
        if f.incident_type is not None:
            inner.append("i.type = ?")
            inner_args.append(f.incident_type)
        if f.responder is not None:
            inner.append("EXISTS (SELECT 1 FROM json_each(i.assigned) a WHERE a.value = ?)")
            inner_args.append(f.responder)
        where.append(
            f"t.utterance_id IN (SELECT j.value FROM incidents i, json_each(i.utterance_ids) j WHERE {' AND '.join(inner)})"
        )
        args.extend(inner_args)
    return " AND ".join(where), args


def _rowid_range(f: Filters, where: str, args: list[Any]) -> tuple[str, list[Any]]:
    """The time filters again, on the FTS rowid (see DOC_ID_SHIFT), where FTS5 applies them while it scans."""
    if f.since_ms is not None:
        where, args = f"{where} AND f.rowid >= ?", [*args, f.since_ms << DOC_ID_SHIFT]
    if f.until_ms is not None:
        where, args = f"{where} AND f.rowid < ?", [*args, f.until_ms << DOC_ID_SHIFT]
    return where, args


def _keyword_labels(keywords_json: str) -> list[str]:
    try:
        keywords = json.loads(keywords_json or "[]")
        return [str(k.get("label", "")) for k in keywords if isinstance(k, dict)]
    except (ValueError, AttributeError):
        return []


def _result(row: sqlite3.Row, query: Query | None) -> dict[str, Any]:
    mark = highlight(query, row["text"], row["pinyin"], row["readable"])
    start = row["start_ms"] / 1000
    return {
        "utterance_id": row["utterance_id"],
        "channel": row["channel"],
        "start": start,
        "start_iso": datetime.fromtimestamp(start, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "engine": row["engine"],
        "text": row["text"],
        "readable": row["readable"] or row["text"],
        "pinyin": row["pinyin"],
        "keywords": _keyword_labels(row["keywords"]),
        "conf": row["conf"],
        "match": None if row["tier"] is None else ("exact" if row["tier"] == 0 else "sounds_like"),
        "snippet": mark.snippet,
        "snippet_field": mark.source,
        "marks": mark.marks,
        "audio_url": f"/api/utterances/{row['utterance_id']}/audio",
    }
