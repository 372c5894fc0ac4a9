"""Transcripts in SQLite, next to their utterance (one row per utterance, the final result)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Mapping
from typing import Any

from asr.transcript import Transcript
from bridge.db import Migration, migrate

MIGRATIONS = [
    Migration(
        sqlite="""
        CREATE TABLE transcripts (
            utterance_id TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            engine TEXT NOT NULL,
            text TEXT NOT NULL,
            pinyin TEXT NOT NULL,
            words TEXT NOT NULL,
            keywords TEXT NOT NULL,
            conf REAL NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX transcripts_channel_start ON transcripts (channel, start_ms);
        """,
        # the same row on PostgreSQL (words, keywords: the same JSON text), so code reading rows serves both engines
        postgres="""
        CREATE TABLE transcripts (
            utterance_id TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            start_ms BIGINT NOT NULL,
            engine TEXT NOT NULL,
            text TEXT NOT NULL,
            pinyin TEXT NOT NULL,
            words TEXT NOT NULL,
            keywords TEXT NOT NULL,
            conf DOUBLE PRECISION NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX transcripts_channel_start ON transcripts (channel, start_ms);
        """,
    ),
    # characters for people (Transcript.readable): an engine's own text is its readable form; pinyin-only rows stored
    # before the decoder existed stay without characters until re-transcribed (`jingbao transcribe --archive`)
    Migration.same(
        """
        ALTER TABLE transcripts ADD COLUMN readable TEXT NOT NULL DEFAULT '';
        UPDATE transcripts SET readable = text WHERE text != '';
        """
    ),
    # the recogniser's other hearings of the audio (Transcript.alternatives, JSON), which the dispatcher weighed too:
    # kept so that what was dispatched can be read again, here or at central; rows before them have none
    Migration.same("ALTER TABLE transcripts ADD COLUMN alternatives TEXT NOT NULL DEFAULT '[]';"),
]


class TranscriptStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        migrate(conn, "transcripts", MIGRATIONS)

    def save(self, utterance_id: str, channel: str, start: float, transcript: Transcript) -> None:
        d = transcript.to_dict()
        with self._lock, self.conn:
            self.conn.execute(
                "INSERT INTO transcripts (utterance_id, channel, start_ms, engine, text, pinyin, words, keywords, conf,"
                " created_at, readable, alternatives) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(utterance_id) DO UPDATE"
                " SET engine=excluded.engine, text=excluded.text, pinyin=excluded.pinyin, words=excluded.words,"
                " keywords=excluded.keywords, conf=excluded.conf, created_at=excluded.created_at,"
                " readable=excluded.readable, alternatives=excluded.alternatives",
                (
                    utterance_id, channel, round(start * 1000), d["engine"], d["text"], d["pinyin"],
                    json.dumps(d["words"], ensure_ascii=False), json.dumps(d["keywords"], ensure_ascii=False),
                    d["conf"], time.time(), d["readable"], json.dumps(d["alternatives"], ensure_ascii=False),
                ),
            )

    def get(self, utterance_id: str) -> Transcript | None:
        row = self.conn.execute("SELECT * FROM transcripts WHERE utterance_id = ?", (utterance_id,)).fetchone()
        return transcript_of_row(row) if row else None

    def get_many(self, utterance_ids: Collection[str]) -> dict[str, Transcript]:
        """The transcripts of those utterances that have one, in one query."""
        ids = list(utterance_ids)
        rows = self.conn.execute(f"SELECT * FROM transcripts WHERE utterance_id IN ({', '.join('?' * len(ids))})", ids)
        return {r["utterance_id"]: transcript_of_row(r) for r in rows}

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest transcripts, newest first (the console's opening view)."""
        rows = self.conn.execute("SELECT * FROM transcripts ORDER BY start_ms DESC LIMIT ?", (limit,)).fetchall()
        return [{"utterance_id": r["utterance_id"], "channel": r["channel"], "start": r["start_ms"] / 1000,
                 **transcript_of_row(r).to_dict()} for r in rows]


def transcript_of_row(row: sqlite3.Row | Mapping[str, Any]) -> Transcript:
    """A transcripts row (SQLite's, or PostgreSQL's at central: the same columns) as the Transcript stored."""
    return Transcript.from_dict(
        {
            "text": row["text"], "pinyin": row["pinyin"], "readable": row["readable"], "engine": row["engine"],
            "conf": row["conf"], "words": json.loads(row["words"]), "keywords": json.loads(row["keywords"]),
            "alternatives": json.loads(row["alternatives"]),
        }
    )
