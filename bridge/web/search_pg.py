"""Transcript search on PostgreSQL: the SQLite index's behaviour (bridge.web.search) with only what core PostgreSQL
ships, for a store several machines share.

A transcript is indexed as the tokens search_text.analyze makes of it, the very tokens FTS5 gets on SQLite:
characters, character bigrams and ASCII words at weight A (FTS5's `words` column), toneless folded syllable bigrams
at weight B (`pinyin`), each at its position. They go in as a tsvector literal built here ('打':1A '架':2A
'打架':3A 'da_jia':4B), never through to_tsvector: PostgreSQL's text-search parsers cut CJK by the server's locale
and "da_jia" at its underscore, and no Chinese parser comes with Debian's PostgreSQL. pg_trgm was the other
candidate and is not used: a trigram index cannot match a 2-character term, which is most Chinese search terms
(打架, 着火). A query is search_text.parse_query's terms written as a tsquery: a phrase is its tokens joined by
`<->` (followed by), each labelled with its field's weight ('打架':A <-> '架斗':A), so words never match syllables.
The GIN index on the tsvector finds the documents holding the tokens; phrase order is checked on the positions.
A document also carries its transcript's channel and start time, so a page is filtered, ordered and cut in
search_docs alone and only its rows are read from transcripts (a frequent term matches thousands of documents), and
a frequent term's page comes from walking the newest documents on the start-time index.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.rows import dict_row

from asr.store import MIGRATIONS as TRANSCRIPT_MIGRATIONS
from bridge.db import migrate
from bridge.logsafe import clip
from bridge.web.search import (
    MIGRATIONS,
    SYNC_BATCH,
    Filters,
    TranscriptSearch,
    channel_and_time_sql,
    keyword_labels,
)
from bridge.web.search_text import IndexedText, QueryError, Syntax, analyze

logger = logging.getLogger(__name__)

WEIGHTS = {"words": "A", "pinyin": "B"}
# How many of the newest documents are tried for a page before the GIN index (PostgresSearchIndex._match): a term in
# 1 % of the documents fills its page from them. Trying costs ~4 us a document (~20 ms for a page of 50), paid in
# vain by a rarer term; the GIN index costs ~2 us per matching document (a 1 % term in 1 M: ~20 ms), so at 1 M
# documents the two cost about the same there. (At 2.5 %, place names fell to the index: 3+ characters p50 88 ms.)
WALK_PER_RESULT = 100
MAX_WALK = 50_000
# PostgreSQL refuses a longer lexeme; no query can match one (search_text.MAX_QUERY_CHARS), so it is left out
MAX_LEXEME_BYTES = 2046
# Held while a batch is indexed: one indexer at a time over all processes sharing the database, so an older
# transcript of an utterance being indexed never overwrites a newer one. Any constant key; this spells "search".
_SYNC_LOCK = int.from_bytes(b"search", "big")


def lexeme(token: str) -> str:
    """A token quoted for a tsvector or tsquery literal (analyze's tokens hold no quote; this is a safety net)."""
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector(indexed: IndexedText) -> str:
    """The tsvector literal of an analysed transcript: its words, then its syllable bigrams, each at its position.
    (Positions stop at 16383, ~50x the tokens of a long transmission.)"""
    tokens = [(t, WEIGHTS["words"]) for t in indexed.words.split()] + [(t, WEIGHTS["pinyin"]) for t in indexed.pinyin.split()]
    return " ".join(
        f"{lexeme(token)}:{position}{weight}"
        for position, (token, weight) in enumerate(tokens, start=1)
        if len(token.encode()) <= MAX_LEXEME_BYTES
    )


class PostgresSearchIndex(TranscriptSearch):
    """The search on PostgreSQL (a connection from bridge.db.connect_postgres). Incidents are not stored on
    PostgreSQL yet: results carry none, and filtering by incident type or responder is refused."""

    syntax = Syntax(
        phrase=lambda field, tokens: " <-> ".join(f"{lexeme(t)}:{WEIGHTS[field]}" for t in tokens),
        and_=" & ",
        or_=" | ",
        but_not_template="({0}) & !({1})",
    )

    def __init__(self, conn: psycopg.Connection, *, readonly: bool = False) -> None:
        """`readonly`: a connection that may only read (bridge/pg_roles.py's reader role, for search and audit): the
        writer's tier migrates the tables and keeps the index up to date (the central ingest); this one searches it."""
        super().__init__()
        self.readonly = readonly
        if not readonly:
            migrate(conn, "transcripts", TRANSCRIPT_MIGRATIONS)
            migrate(conn, "web.search", MIGRATIONS)
        self._conn = conn

    def _rows(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        return self._conn.cursor(row_factory=dict_row).execute(sql, args).fetchall()

    def _sync_batch(self) -> int:
        if self.readonly:
            return 0  # indexing writes: what the writer has not indexed yet is found once it has
        with self._lock:
            if not self._conn.execute("SELECT 1 FROM search_pending LIMIT 1").fetchone():
                return 0  # the common case, answered without waiting for another process's batch
            return self._index_batch()

    def _index_batch(self) -> int:
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SYNC_LOCK,))
            rows = self._rows(
                "SELECT p.seq, p.utterance_id, t.channel, t.start_ms, t.text, t.pinyin, t.readable, t.keywords,"
                " t.utterance_id IS NOT NULL AS present"
                " FROM search_pending p LEFT JOIN transcripts t ON t.utterance_id = p.utterance_id ORDER BY p.seq LIMIT %s",
                [SYNC_BATCH],
            )
            if not rows:
                return 0
            latest = {r["utterance_id"]: r for r in rows}  # an id queued twice is indexed once
            docs = [
                (r["utterance_id"], r["channel"], r["start_ms"],
                 tsvector(analyze(r["text"], r["pinyin"], keyword_labels(r["keywords"]), r["readable"])))
                for r in latest.values() if r["present"]
            ]  # fmt: skip
            cur = self._conn.cursor()
            cur.execute("DELETE FROM search_docs WHERE utterance_id = ANY(%s)", (list(latest),))
            cur.executemany(
                "INSERT INTO search_docs (utterance_id, channel, start_ms, terms) VALUES (%s, %s, %s, %s::tsvector)", docs
            )
            # exactly the entries read: one queued meanwhile by a transaction that took a lower seq stays queued
            cur.execute("DELETE FROM search_pending WHERE seq = ANY(%s)", ([r["seq"] for r in rows],))
        return len(rows)

    def _latest(self, filters: Filters, limit: int, offset: int) -> list[dict[str, Any]]:
        where, args = _where(filters)
        return self._rows(
            f"SELECT t.*, NULL AS tier FROM transcripts t WHERE {where}"
            " ORDER BY t.start_ms DESC, t.utterance_id DESC LIMIT %s OFFSET %s",
            [*args, limit, offset],
        )

    def _by_id(self, utterance_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT t.*, NULL AS tier FROM transcripts t WHERE t.utterance_id = %s", [utterance_id])

    def _match(self, expression: str, tier: int, filters: Filters, limit: int, offset: int) -> list[dict[str, Any]]:
        # A frequent term's page is found fastest by reading the newest documents in order and keeping those that
        # match; a rare term's by the GIN index, sorting its few matches. The planner cannot tell them apart for a
        # phrase (it multiplies its tokens' frequencies, so every phrase looks rare), so the newest documents are
        # tried first, and the index only when they do not fill the page. Either way the page is chosen in
        # search_docs alone and only its rows are read from transcripts.
        where, args = _where(filters, "d")
        newest = (
            f"SELECT d.utterance_id, d.start_ms, d.terms FROM search_docs d WHERE {where}"
            " ORDER BY d.start_ms DESC, d.utterance_id DESC LIMIT %s"
        )
        walk = min(MAX_WALK, WALK_PER_RESULT * (offset + limit))
        walked = f"SELECT * FROM ({newest}) d WHERE d.terms @@ %s::tsquery"
        rows = self._page(walked, [*args, walk, expression], tier, limit, offset)
        if len(rows) < limit:
            rows = self._page(
                f"SELECT * FROM search_docs d WHERE d.terms @@ %s::tsquery AND {where}", [expression, *args], tier, limit, offset
            )
        return rows

    def _page(self, matches: str, args: list[Any], tier: int, limit: int, offset: int) -> list[dict[str, Any]]:
        """The transcripts of one page of `matches` (SQL selecting search_docs rows), newest first."""
        sql = (
            f"SELECT t.*, {tier} AS tier FROM ({matches} ORDER BY d.start_ms DESC, d.utterance_id DESC LIMIT %s OFFSET %s)"
            " page JOIN transcripts t ON t.utterance_id = page.utterance_id ORDER BY page.start_ms DESC, page.utterance_id DESC"
        )
        try:
            return self._rows(sql, [*args, limit, offset])
        except psycopg.errors.SyntaxError as e:  # parse_query only emits quoted tokens; this is a safety net
            logger.warning("search expression %s refused by PostgreSQL: %s", clip(repr(args)), e)
            raise QueryError("the search could not be run on this query") from e

    def _attach_incidents(self, results: list[dict[str, Any]]) -> None:
        for r in results:
            r["incidents"] = []


def _where(filters: Filters, table: str = "t") -> tuple[str, list[Any]]:
    if filters.incident_type is not None or filters.responder is not None:
        raise QueryError("filtering by incident type or responder is not available on PostgreSQL yet")
    where, args = channel_and_time_sql(filters, "%s", table)
    if filters.stations is not None:
        # central stores a station's channels as <station>.<channel> (bridge/nodes.central_id; a station id has no
        # "."), so the station is the channel's first part: no column of its own, on either engine's transcripts
        where.append(f"split_part({table}.channel, '.', 1) = ANY(%s)")
        args.append(list(filters.stations))
    return " AND ".join(where), args
