"""PostgreSQL roles per tier (bridge/pg_roles.py) on the tests' private cluster: the central ingest, logged in as the
writer, migrates and stores; the reader searches and reads, and every way of writing is refused to it."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator

import psycopg
import pytest

from asr.transcript import Transcript
from bridge.archive import ArchivedUtterance
from bridge.central import CentralStore
from bridge.commands.service import cmd_db_roles
from bridge.config import RecognitionNodeConfig
from bridge.db import Migration, connect_postgres, migrate
from bridge.db_postgres import PostgresConnection
from bridge.nodes import TranscriptMessage, UtteranceMessage
from bridge.pg_roles import TierRoles, setup_roles
from bridge.recognition_node import RecognitionQueue
from bridge.web.search import Filters
from bridge.web.search_pg import PostgresSearchIndex
from bridge.web.sessions import SessionStore
from bridge.web.users import UserStore
from tests.support.postgres import PostgresCluster

_names = itertools.count(1)


@pytest.fixture
def tiers(postgres: PostgresCluster) -> Iterator[TierRoles]:
    """A new database with roles of its own (roles are the whole cluster's, shared by every test of the run)."""
    database = postgres.create_database()
    n = f"{os.getpid()}_{next(_names)}"
    roles = TierRoles(database, f"central_{n}", f"reader_{n}", f"recognition_{n}")
    yield roles
    postgres.drop_database(database)
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        for role in (roles.writer, roles.reader, roles.recognition):
            admin.execute(f"DROP OWNED BY {role}")  # what was granted to it in other databases: none; here it is gone
            admin.execute(f"DROP ROLE {role}")


def utterance(uid: str) -> UtteranceMessage:
    row = ArchivedUtterance(id=uid, channel="ch-market", seq=1, start_ms=1, end_ms=2, duration_ms=1, path="a.wav",
                            format="wav", sha256="0" * 64, peak_dbfs=-3.0, rms_dbfs=-20.0, end_reason="silence", fault="",
                            status="pending", created_at=1, prev_hash="0" * 64, row_hash="1" * 64)  # fmt: skip
    return UtteranceMessage(v=1, station="gongyuanbeilu", utterance=row, audio=None, audio_omitted="test")


def transcript(uid: str, text: str) -> TranscriptMessage:
    return TranscriptMessage(v=1, station="gongyuanbeilu", utterance_id=uid, channel="ch-market", start_ms=1,
                             version=time.time(), transcript=Transcript(text=text, pinyin="", engine="test"))  # fmt: skip


def test_the_writer_migrates_and_stores_and_the_reader_only_reads(postgres, tiers):
    setup_roles(postgres.url(), tiers)
    setup_roles(postgres.url(), tiers)  # again: nothing changes, nothing fails
    store = CentralStore(postgres.url(tiers.database, tiers.writer))  # the ingest's migrations, as the writer
    assert store.store(utterance("u1")) and store.store(transcript("u1", "美食街有人打架"))
    with connect_postgres(postgres.url(tiers.database, tiers.writer)) as writer:
        PostgresSearchIndex(writer).sync()  # the ingest indexes
        # a table a later migration adds is readable by the reader without another setup (default privileges)
        later = Migration(sqlite="", postgres="CREATE TABLE later_table (x INT); INSERT INTO later_table VALUES (1)")
        migrate(writer, "later", [later])
    store.close()

    with connect_postgres(postgres.url(tiers.database, tiers.reader)) as reader:
        page = PostgresSearchIndex(reader, readonly=True).search("打架", Filters())
        assert [r["utterance_id"] for r in page.results] == ["gongyuanbeilu.u1"]
        assert reader.execute("SELECT count(*) AS n FROM node_utterances").fetchone()["n"] == 1
        assert reader.execute("SELECT x FROM later_table").fetchone()["x"] == 1
        for statement in (
            "INSERT INTO later_table VALUES (2)",
            "UPDATE transcripts SET text = 'x'",
            "DELETE FROM node_utterances",
            "TRUNCATE search_pending",
            "DROP TABLE later_table",
            "ALTER TABLE transcripts ADD COLUMN y INT",
            "CREATE TABLE mine (x INT)",
            "CREATE TEMP TABLE mine (x INT)",
            "GRANT SELECT ON transcripts TO PUBLIC",
        ):
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)):
                reader.execute(statement)
        # a session that turns read-only off still holds no write privilege
        reader.execute("SET default_transaction_read_only = off")
        for statement in ("INSERT INTO later_table VALUES (2)", "DELETE FROM transcripts", "CREATE TABLE mine (x INT)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(statement)
        with pytest.raises(psycopg.Error):  # nor can it migrate (the writer's tier does)
            PostgresSearchIndex(reader)

    # every other role of the server: no way in
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE outsider_{tiers.reader} LOGIN")
    try:
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(postgres.url(tiers.database, f"outsider_{tiers.reader}")).close()
    finally:
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute(f"DROP ROLE outsider_{tiers.reader}")


def test_tables_an_administrator_made_become_the_writers(postgres, tiers):
    """An earlier deployment migrated as the administrator: setup hands the tables and the search's trigger function
    to the writer, whose next migration can then alter them."""
    with connect_postgres(postgres.url(tiers.database)) as admin:
        PostgresSearchIndex(admin)
    setup_roles(postgres.url(), tiers)
    with connect_postgres(postgres.url(tiers.database, tiers.writer)) as writer:
        migrate(writer, "transcripts_later", [Migration(sqlite="", postgres="ALTER TABLE transcripts ADD COLUMN later INT")])
        owners = {r["owner"] for r in writer.execute(
            "SELECT proowner::regrole::text AS owner FROM pg_proc WHERE pronamespace = 'public'::regnamespace")}  # fmt: skip
        assert owners == {tiers.writer}
    with connect_postgres(postgres.url(tiers.database, tiers.reader)) as reader:  # those tables are the reader's to read
        assert reader.execute("SELECT count(*) AS n FROM transcripts").fetchone()["n"] == 0
        reader.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("DELETE FROM transcripts")


def test_the_command_refuses_names_that_are_not_plain(capsys):
    class Args:
        admin_url, database, writer, reader, recognition = "postgresql://nobody@/x", "db; DROP TABLE x", "w", "r", "a"

    assert cmd_db_roles(Args()) == 1  # type: ignore[arg-type]
    assert "not a plain PostgreSQL name" in capsys.readouterr().err
    with pytest.raises(ValueError, match="three roles"):
        TierRoles("db", "same", "same")


def test_the_recognition_workers_role_gets_its_claims_once_central_has_made_its_tables(postgres, tiers):
    """Before central's first start there is nothing to grant on (the setup says so); run again after it, the workers'
    role claims, gives back and holds utterances, and may change nothing else."""
    assert not setup_roles(postgres.url(), tiers)
    store = CentralStore(postgres.url(tiers.database, tiers.writer))  # central's first start: its migrations
    heard = utterance("u1").model_copy(update={"audio": "UklGRg==", "dispatched_at_edge": False})  # with its audio
    assert store.store(heard)
    store.close()
    assert not setup_roles(postgres.url(), tiers)  # central's web app has not made its logins' tables yet
    logins = PostgresConnection(postgres.url(tiers.database, tiers.writer))
    UserStore(logins).add("aud", "auditor", "a password of some length")
    SessionStore(logins)
    assert setup_roles(postgres.url(), tiers)
    with connect_postgres(postgres.url(tiers.database, tiers.reader)) as reader:
        assert reader.execute("SELECT count(*) AS n FROM node_utterances").fetchone()["n"] == 1
        for table in ("users", "sessions"):  # password and token hashes: not the reader's
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(f"SELECT * FROM {table}")
    logins.close()
    rules = RecognitionNodeConfig(after_s=0, horizon_s=1e10)  # (the helper's utterance began in 1970)
    with contextlib.closing(RecognitionQueue(postgres.url(tiers.database, tiers.recognition), "w1", rules)) as queue:
        job = queue.claim(now=time.time() + 1)
        assert job is not None and job.utterance_id == "u1"
        queue.release(job)
        queue.sent(queue.claim(now=time.time() + 1))
        for statement in ("UPDATE node_utterances SET transcribed = true", "DELETE FROM node_utterances",
                          "INSERT INTO transcripts (utterance_id) VALUES ('x')", "CREATE TABLE mine (x INT)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                queue._conn.execute(statement)
