"""TranscriptStore: the readable characters and the alternative hearings round-trip through SQLite, and a database made
before they existed is migrated (an engine's own text becomes its readable form; pinyin-only rows stay without
characters, and every old row without alternatives)."""

from __future__ import annotations

import json
from pathlib import Path

from asr.store import MIGRATIONS, TranscriptStore
from asr.transcript import Keyword, Transcript, Word
from bridge.db import connect, migrate


def test_readable_characters_round_trip(tmp_path: Path) -> None:
    store = TranscriptStore(connect(tmp_path / "db.sqlite"))
    heard = Transcript(text="", pinyin="ge4 dan1 wei4 zhu4 yi4", readable="各单位注意", engine="sherpa", conf=0.8,
                       words=(Word("ge4", 0.1, 0.3, 0.9),), keywords=(Keyword("注意", "incident:other", 0.5, 0.9, 1.0),))
    store.save("u1", "ch-a", 1000.0, heard)
    back = store.get("u1")
    assert back == heard and back.readable == "各单位注意"
    assert store.recent()[0]["readable"] == "各单位注意"
    store.save("u1", "ch-a", 1000.0, Transcript(text="", pinyin="shou1 dao4", readable="收到", engine="sherpa"))
    assert store.get("u1").readable == "收到"  # a re-transcription replaces it


def test_a_database_from_before_readable_is_migrated(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    migrate(conn, "transcripts", MIGRATIONS[:1])
    with conn:
        for uid, engine, text, pinyin in (("u1", "vosk", "东门有人打架", "dong1 men2"), ("u2", "sherpa", "", "shou1 dao4")):
            conn.execute("INSERT INTO transcripts VALUES (?, 'ch-a', 0, ?, ?, ?, '[]', ?, 0.9, 0)",
                         (uid, engine, text, pinyin, json.dumps([])))
    store = TranscriptStore(conn)
    assert store.get("u1").readable == "东门有人打架"  # the engine's own characters
    assert store.get("u2").readable == "" and store.get("u2").pinyin == "shou1 dao4"
    assert store.get("u2").alternatives == ()  # rows from before the alternative hearings have none


def test_the_alternative_hearings_the_dispatcher_weighed_are_kept(tmp_path: Path) -> None:
    store = TranscriptStore(connect(tmp_path / "db.sqlite"))
    slowed = Transcript(text="", pinyin="mei3 shi2 jie1 you3 ren2 da3 jia4", engine="sherpa",
                        keywords=(Keyword("美食街", "meishijie", 0.1, 0.8, 1.0),))
    heard = Transcript(text="", pinyin="mei3 si4 jian1 you3 ren2 da3 jia4", engine="sherpa", alternatives=(slowed,))
    store.save("u1", "ch-a", 1000.0, heard)
    assert store.get("u1") == heard and store.get("u1").alternatives[0].keywords[0].ref == "meishijie"
