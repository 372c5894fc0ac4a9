"""Full-text search over transcripts: an FTS5 index beside the `transcripts` table, filters, result rows.

The index is kept in step without touching the writer (the ASR stage): plain-SQL triggers on `transcripts` queue
every inserted, updated or deleted utterance id in `search_pending`, and `sync()` (called before every search, and
by whoever wants the index warm) analyses what is queued (`bridge.web.search_text`) in the same transaction that
dequeues it. The analysis is Python, which is why it cannot run inside the triggers: they fire on the writer's
connection, which has no Python functions registered.

Results come newest first in two tiers: transcripts that contain the terms as written (in the engine's text or in the
characters decoded from the on-board engine's pinyin), then those that match only as pinyin (a homophone the
recogniser or the decoder wrote, a pinyin-only transcript).

`TranscriptSearch` is that behaviour for any engine; `SearchIndex` is the SQLite one (FTS5), and
bridge.web.search_pg.PostgresSearchIndex the PostgreSQL one: both index what search_text.analyze makes of a
transcript and match what search_text.parse_query makes of a query, so they find the same transcripts.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asr.store import MIGRATIONS as TRANSCRIPT_MIGRATIONS
from bridge.db import Migration, migrate
from bridge.logsafe import clip
from bridge.web.search_text import Query, QueryError, Syntax, analyze, highlight, parse_query
from dispatch.incidents import MIGRATIONS as INCIDENT_MIGRATIONS

logger = logging.getLogger(__name__)

MAX_LIMIT = 10_000  # the most rows one search (an export) returns
# A document's rowid is its start time in ms shifted left by this (plus a few for utterances starting in the same
# millisecond), so FTS5's native rowid order is time order: newest-first pages and time filters need no sort.
DOC_ID_SHIFT = 10
SYNC_BATCH = 5_000

MIGRATIONS = [
    Migration(
        sqlite="""
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
        postgres="""
        -- terms: what search_text.analyze makes of a transcript, as a tsvector built in Python (PostgresSearchIndex):
        -- its words at weight A, its syllable bigrams at weight B, each at its position, so a phrase is tokens at
        -- consecutive positions, as in FTS5. GIN finds the documents holding every token of a query. channel and
        -- start_ms are the transcript's, so a page of matches is filtered and ordered here, before any join.
        CREATE TABLE search_docs (
            utterance_id TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            start_ms BIGINT NOT NULL,
            terms tsvector NOT NULL
        );
        CREATE INDEX search_docs_terms ON search_docs USING gin (terms);
        CREATE INDEX search_docs_start ON search_docs (start_ms, utterance_id);
        CREATE TABLE search_pending (seq BIGSERIAL PRIMARY KEY, utterance_id TEXT NOT NULL);
        CREATE FUNCTION search_queue() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN INSERT INTO search_pending (utterance_id) VALUES (OLD.utterance_id); END IF;
            IF TG_OP <> 'DELETE' THEN INSERT INTO search_pending (utterance_id) VALUES (NEW.utterance_id); END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER transcripts_search AFTER INSERT OR UPDATE OR DELETE ON transcripts
            FOR EACH ROW EXECUTE FUNCTION search_queue();
        INSERT INTO search_pending (utterance_id) SELECT utterance_id FROM transcripts ORDER BY start_ms;
        """,
    ),
    # The writer's UPSERT imposes its own conflict policy on trigger statements, so the OR IGNORE above made a second
    # save of a transcript fail: the queue takes duplicates instead. Documents get time-ordered ids (DOC_ID_SHIFT),
    # so everything is indexed again. Nothing of this happens on PostgreSQL.
    Migration(
        sqlite="""
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
        postgres="",
    ),
]


@dataclass(frozen=True, slots=True)
class Filters:
    channel: str | None = None
    since_ms: int | None = None  # start_ms >= since_ms
    until_ms: int | None = None  # start_ms < until_ms
    incident_type: str | None = None
    responder: str | None = None  # a responder assigned to an incident the utterance belongs to
    # at central: only these stations' utterances (ids <station>.<id>, bridge/nodes.central_id); None: every one
    stations: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k in self.__slots__ if (v := getattr(self, k)) is not None}


@dataclass(frozen=True, slots=True)
class SearchPage:
    results: list[dict[str, Any]]
    more: bool  # there are results after this page


Row = Mapping[str, Any]  # a transcripts row and its `tier` (sqlite3.Row, or a dict from PostgreSQL)


class TranscriptSearch(ABC):
    """The search as users see it, on any engine: the query language, the two tiers, pages, result rows. An engine
    supplies how queued transcripts get indexed and the queries that read the index."""

    syntax: Syntax  # how the engine writes a match expression

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one connection: one statement or transaction on it at a time

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

    def search(self, text: str, filters: Filters = Filters(), *, limit: int = 50, offset: int = 0) -> SearchPage:
        """Transcripts matching `text` (every term; all transcripts when blank) and `filters`, newest first, exact
        matches before sound-alikes. QueryError for a query that cannot be searched."""
        limit, offset = max(1, min(limit, MAX_LIMIT)), max(0, offset)
        query = parse_query(text) if text.strip() else None
        self.sync()
        with self._lock:
            rows = self._latest(filters, limit + 1, offset) if query is None else self._tiers(query, filters, limit + 1, offset)
            results = [_result(r, query) for r in rows[:limit]]
            self._attach_incidents(results)
        return SearchPage(results, more=len(rows) > limit)

    def _tiers(self, query: Query, filters: Filters, want: int, offset: int) -> list[Row]:
        exact_expression, sounds_like_expression = query.expressions(self.syntax)
        exact = self._match(exact_expression, 0, filters, offset + want, 0)
        rows = exact[offset:]
        if len(rows) < want and sounds_like_expression:
            skip = max(0, offset - len(exact))
            rows += self._match(sounds_like_expression, 1, filters, want - len(rows), skip)
        return rows

    def transcript(self, utterance_id: str) -> dict[str, Any] | None:
        """One utterance's transcript as a result row (no match, no marks), or None when it has none."""
        with self._lock:
            rows = self._by_id(utterance_id)
            results = [_result(r, None) for r in rows]
            self._attach_incidents(results)
        return results[0] if results else None

    @abstractmethod
    def _by_id(self, utterance_id: str) -> Sequence[Row]:
        """The transcript of `utterance_id` (tier None), or nothing."""

    @abstractmethod
    def _sync_batch(self) -> int:
        """Index up to SYNC_BATCH queued utterances (an id queued twice once); how many were taken off the queue."""

    @abstractmethod
    def _latest(self, filters: Filters, limit: int, offset: int) -> Sequence[Row]:
        """Transcripts within the filters, newest first, tier None."""

    @abstractmethod
    def _match(self, expression: str, tier: int, filters: Filters, limit: int, offset: int) -> Sequence[Row]:
        """Transcripts matching the expression (written in `syntax`) within the filters, newest first."""

    @abstractmethod
    def _attach_incidents(self, results: list[dict[str, Any]]) -> None:
        """Set each result's "incidents": id, type, priority, status, assigned."""


class SearchIndex(TranscriptSearch):
    """The search on SQLite: an FTS5 table with a column per indexed field, kept in step by triggers."""

    # FTS5: a phrase is a double-quoted string of tokens, a column filter "column : phrase"
    syntax = Syntax(
        phrase=lambda field, tokens: f"{field} : {_quote(' '.join(tokens))}",
        and_=" AND ",
        or_=" OR ",
        but_not_template="({0}) NOT ({1})",
    )

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        # the tables searched and joined must exist even before the ASR stage or the dispatcher first ran
        migrate(conn, "transcripts", TRANSCRIPT_MIGRATIONS)
        migrate(conn, "dispatch.incidents", INCIDENT_MIGRATIONS)
        migrate(conn, "web.search", MIGRATIONS)
        self._conn = conn

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
        indexed = (analyze(r["text"], r["pinyin"], keyword_labels(r["keywords"]), r["readable"]) for r in present)
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

    def _latest(self, filters: Filters, limit: int, offset: int) -> list[sqlite3.Row]:
        where, args = _filter_sql(filters)
        return self._conn.execute(
            f"SELECT t.*, NULL AS tier FROM transcripts t WHERE {where} ORDER BY t.start_ms DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()

    def _by_id(self, utterance_id: str) -> list[sqlite3.Row]:
        sql = "SELECT t.*, NULL AS tier FROM transcripts t WHERE t.utterance_id = ?"
        return self._conn.execute(sql, (utterance_id,)).fetchall()

    def _match(self, expression: str, tier: int, filters: Filters, limit: int, offset: int) -> list[sqlite3.Row]:
        where, args = _rowid_range(filters, *_filter_sql(filters))
        # CROSS JOIN fixes the join order: FTS5 walks its matches newest first (within the time filters) and the
        # other filters are checked per match. Left to itself the planner starts from a selective-looking filter
        # (a channel and a week) and re-runs the full-text query for every row of it, which is 100x slower.
        sql = (
            f"SELECT t.*, {tier} AS tier FROM search_fts f CROSS JOIN search_docs d ON d.id = f.rowid"
            " CROSS JOIN transcripts t ON t.utterance_id = d.utterance_id"
            f" WHERE search_fts MATCH ? AND {where} ORDER BY f.rowid DESC LIMIT ? OFFSET ?"
        )
        try:
            return self._conn.execute(sql, [expression, *args, limit, offset]).fetchall()
        except sqlite3.OperationalError as e:  # parse_query only emits quoted tokens; this is a safety net
            logger.warning("search expression %s refused by FTS5: %s", clip(repr(expression)), e)
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
    if f.stations is not None:  # a box holds its own station's utterances, under their own ids
        raise QueryError("filtering by station is the central tier's (jingbao run --role central)")
    where, args = channel_and_time_sql(f, "?")
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


def channel_and_time_sql(f: Filters, placeholder: str, table: str = "t") -> tuple[list[str], list[Any]]:
    """The filters on the transcript itself, as conditions in standard SQL on `table`'s channel and start_ms columns
    with the driver's placeholder."""
    where, args = ["TRUE"], []
    if f.channel is not None:
        where.append(f"{table}.channel = {placeholder}")
        args.append(f.channel)
    if f.since_ms is not None:
        where.append(f"{table}.start_ms >= {placeholder}")
        args.append(f.since_ms)
    if f.until_ms is not None:
        where.append(f"{table}.start_ms < {placeholder}")
        args.append(f.until_ms)
    return where, args


def _rowid_range(f: Filters, where: str, args: list[Any]) -> tuple[str, list[Any]]:
    """The time filters again, on the FTS rowid (see DOC_ID_SHIFT), where FTS5 applies them while it scans."""
    if f.since_ms is not None:
        where, args = f"{where} AND f.rowid >= ?", [*args, f.since_ms << DOC_ID_SHIFT]
    if f.until_ms is not None:
        where, args = f"{where} AND f.rowid < ?", [*args, f.until_ms << DOC_ID_SHIFT]
    return where, args


def _quote(tokens: str) -> str:
    return '"' + tokens.replace('"', '""') + '"'


def keyword_labels(keywords_json: str) -> list[str]:
    try:
        keywords = json.loads(keywords_json or "[]")
        return [str(k.get("label", "")) for k in keywords if isinstance(k, dict)]
    except (ValueError, AttributeError):
        return []


def _result(row: Row, query: Query | None) -> dict[str, Any]:
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
        "keywords": keyword_labels(row["keywords"]),
        "conf": row["conf"],
        "match": None if row["tier"] is None else ("exact" if row["tier"] == 0 else "sounds_like"),
        "snippet": mark.snippet,
        "snippet_field": mark.source,
        "marks": mark.marks,
        "audio_url": f"/api/utterances/{row['utterance_id']}/audio",
    }
