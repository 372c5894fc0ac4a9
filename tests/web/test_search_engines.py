"""The search on both engines: SQLite's FTS5 index and PostgreSQL's tsvector index are given the same transcripts and
must answer every query alike (the same results, in the same order, in the same tiers; the same refusals), including
transcripts the recogniser got wrong and hostile queries."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from asr.store import TranscriptStore
from asr.transcript import Keyword, Transcript
from bridge.db import connect, connect_postgres
from bridge.web import search_pg
from bridge.web.search import Filters, SearchIndex, TranscriptSearch
from bridge.web.search_pg import PostgresSearchIndex
from bridge.web.search_text import QueryError
from tests.support.postgres import PostgresCluster
from tests.web.test_search import HOSTILE

T0 = 1_760_000_000.0

# utterance id, channel, seconds after T0, text, pinyin, readable (characters decoded from pinyin), keyword labels
TRANSCRIPTS: list[tuple[str, str, float, str, str, str, tuple[str, ...]]] = [
    ("u-fight-text", "ch-market", 10, "高桥大市场门口有人打架，请保安过去看看", "", "", ()),
    ("u-fight-pinyin", "ch-market", 20, "", "gao1 qiao2 you3 ren2 da3 jia4", "", ("高桥大市场",)),
    ("u-homophone", "ch-police", 30, "大家注意，西光中学放学了", "", "", ()),  # 大家 sounds like 打架
    ("u-fire", "ch-police", 40, "东郊农贸市场冒烟了，疑似着火", "", "", ()),
    ("u-theft", "ch-market", 50, "电动车被偷了", "", "", ()),
    ("u-fight-old", "ch-police", -7200, "昨天也有人打架", "", "", ()),
    # what the recogniser got wrong: 打假 for 打架, 冒盐 for 冒烟, 头 for 偷, 没事街 for 美食街 (decoded from pinyin)
    ("u-misheard-fight", "ch-market", 60, "菜市场有人打假了", "", "", ()),
    ("u-misheard-smoke", "ch-police", 70, "仓库冒盐了", "", "", ()),
    ("u-misheard-theft", "ch-market", 80, "电动车被头了", "", "", ()),
    ("u-decoded", "ch-market", 90, "", "mei3 shi2 jie1 you3 ren2 chao3 jia4", "没事街有人吵架", ()),
    # punctuation and match syntax in a transcript are indexed as nothing: only its words are
    ("u-punctuation", "ch-police", 100, "他说\"打架\"了 'OR' 100% a_b c\\d NEAR(x)", "", "", ()),
]

QUERIES = [
    "打架", "da jia", "dajia", "da3 jia4", "高桥大市场", "着火", "冒烟 疑似", "烟", "冒烟", "被偷", "电动车", "美食街",
    "吵架", "没事", "市场", "near", "or", "100", "a", "b", "ab", "打架 市场", "mei shi jie", "他说打架", "不存在的词",
    *HOSTILE, "打" * 101,
]  # fmt: skip
FILTERS = [
    Filters(),
    Filters(channel="ch-police"),
    Filters(since_ms=int(T0 * 1000)),
    Filters(until_ms=int((T0 + 60) * 1000)),
    Filters(channel="ch-market", since_ms=int((T0 + 15) * 1000), until_ms=int((T0 + 85) * 1000)),
]


def save(sqlite: sqlite3.Connection, pg: psycopg.Connection, *rows: tuple[Any, ...]) -> None:
    """Store transcripts as the ASR stage does on SQLite (TranscriptStore), and the very same rows in PostgreSQL (its
    writer comes with the central tier; a row copied as it is keeps the two stores alike)."""
    store = TranscriptStore(sqlite)
    for utterance_id, channel, offset_s, text, pinyin, readable, labels in rows:
        keywords = tuple(Keyword(label, label, 0.1, 0.9, 0.8) for label in labels)
        engine = "vosk" if text else "sherpa-kws"
        transcript = Transcript(text, pinyin, keywords=keywords, engine=engine, conf=0.9, readable=readable or text)
        store.save(utterance_id, channel, T0 + offset_s, transcript)
    ids = [r[0] for r in rows]
    marks = ",".join("?" * len(ids))
    copied = [dict(r) for r in sqlite.execute(f"SELECT * FROM transcripts WHERE utterance_id IN ({marks})", ids)]
    columns = list(copied[0])
    with pg.transaction():
        pg.cursor().executemany(
            f"INSERT INTO transcripts ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
            f" ON CONFLICT (utterance_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)}",
            [tuple(r[c] for c in columns) for r in copied],
        )


def answer(index: TranscriptSearch, query: str, filters: Filters | None = None, **page: int) -> Any:
    """The results (id, tier, the whole result row) and whether there are more; or the refusal and its reason."""
    try:
        found = index.search(query, filters or Filters(), **page)
    except QueryError as e:
        return ("refused", str(e))
    return [(r["utterance_id"], r["match"], r) for r in found.results], found.more


def ids(answer: Any) -> list[str]:
    return [utterance_id for utterance_id, _, _ in answer[0]]


@pytest.fixture(scope="module")
def engines(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TranscriptSearch]]:
    database = postgres.create_database()
    sqlite, pg = connect(tmp_path_factory.mktemp("search") / "db.sqlite"), connect_postgres(postgres.url(database))
    both: dict[str, TranscriptSearch] = {"sqlite": SearchIndex(sqlite), "postgres": PostgresSearchIndex(pg)}
    save(sqlite, pg, *TRANSCRIPTS)
    yield both
    pg.close()
    postgres.drop_database(database)


@pytest.mark.parametrize("query", QUERIES)
def test_both_engines_answer_every_query_alike(engines, query):
    for filters in FILTERS:
        assert answer(engines["postgres"], query, filters) == answer(engines["sqlite"], query, filters), (query, filters)


@pytest.mark.parametrize("walk", ["newest documents first", "GIN index only"])
def test_pages_are_the_same_on_both_engines(engines, walk, monkeypatch):
    # PostgreSQL finds a page one of two ways (PostgresSearchIndex._match): small pages of a frequent term here come
    # from walking the newest documents; with no walk, everything comes from the GIN index
    if walk == "GIN index only":
        monkeypatch.setattr(search_pg, "MAX_WALK", 0)
    for query, limit, offset in [*(("打架", 2, offset) for offset in range(6)), ("", 3, 2)]:
        pages = [answer(engines[engine], query, limit=limit, offset=offset) for engine in ("sqlite", "postgres")]
        assert pages[0] == pages[1], (query, offset)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_misrecognised_transcripts_are_found_as_sound_alikes(engines, engine):
    index = engines[engine]
    fight = answer(index, "打架")
    assert ids(fight)[:3] == ["u-punctuation", "u-fight-text", "u-fight-old"]  # as written, newest first
    assert {i for i, tier, _ in fight[0] if tier == "sounds_like"} == {"u-misheard-fight", "u-homophone", "u-fight-pinyin"}
    assert ("u-misheard-smoke", "sounds_like") in [(i, t) for i, t, _ in answer(index, "冒烟")[0]]
    assert ids(answer(index, "被偷")) == ["u-theft", "u-misheard-theft"]
    assert ids(answer(index, "美食街")) == ["u-decoded"]  # heard mei shi jie, decoded 没事街
    assert ids(answer(index, "吵架")) == ["u-decoded"]  # in the decoded characters
    assert ids(answer(index, "高桥大市场")) == ["u-fight-pinyin", "u-fight-text"]  # also a pinyin-only row's keyword label
    assert answer(index, "%")[0] == "refused" and answer(index, "打" * 101)[0] == "refused"


def test_a_retranscribed_or_deleted_transcript_is_reindexed_on_both_engines(tmp_path, pg_url):
    sqlite, pg = connect(tmp_path / "db.sqlite"), connect_postgres(pg_url)
    both = [SearchIndex(sqlite), PostgresSearchIndex(pg)]
    save(sqlite, pg, *TRANSCRIPTS[:5])
    save(sqlite, pg, ("u-theft", "ch-market", 50, "电瓶车被偷了", "", "", ()))
    sqlite.execute("DELETE FROM transcripts WHERE utterance_id = 'u-fire'")
    sqlite.commit()
    pg.execute("DELETE FROM transcripts WHERE utterance_id = 'u-fire'")
    for index in both:
        assert ids(answer(index, "电瓶")) == ["u-theft"]
        assert ids(answer(index, "电动车")) == []
        assert ids(answer(index, "着火")) == []
        assert index.sync() == 0  # nothing left queued
    pg.close()


def test_incident_filters_are_refused_on_postgresql_until_incidents_are_stored_there(engines):
    assert answer(engines["postgres"], "打架", Filters(incident_type="fight"))[0] == "refused"


def test_a_database_owner_without_superuser_can_create_the_search(postgres: PostgresCluster):
    """What docs/deployment.md sets up: a login role owning its database, no superuser, no extension."""
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute("CREATE ROLE jingbao_station LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        admin.execute("CREATE DATABASE jingbao_station OWNER jingbao_station")
    try:
        with connect_postgres(postgres.url("jingbao_station", user="jingbao_station")) as conn:
            PostgresSearchIndex(conn)
            assert conn.execute("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user").fetchone() == {
                "current_user": "jingbao_station", "usesuper": False}  # fmt: skip
    finally:
        postgres.drop_database("jingbao_station")
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute("DROP ROLE jingbao_station")
