"""Each way an auditor's archive can be tampered with, done for real (files on disk, rows via sqlite3), is reported."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.archive import Archive, ArchivedUtterance
from bridge.archive_verify import VerifyReport, chain_hash
from tests.support.archive import make_utterance, speech_pcm, storage

__all__ = ["speech_pcm"]  # a fixture, imported for pytest


@dataclass
class Stored:
    archive: Archive
    data_dir: Path
    rows: list[ArchivedUtterance]

    def sql(self, statement: str, *args: object) -> None:
        """Tamper the way a person with the database file would: a separate sqlite3 connection."""
        with sqlite3.connect(self.data_dir / "jingbao.db") as conn:
            conn.execute(statement, args)
        conn.close()

    def kinds(self, report: VerifyReport) -> set[tuple[str, int | None]]:
        return {(p.kind, p.seq) for p in report.problems}


@pytest.fixture
def stored(tmp_path: Path, speech_pcm: bytes) -> Iterator[Stored]:
    archive = Archive(storage(tmp_path, "wav"))
    rows = [archive.store(make_utterance(speech_pcm[: 6400 * (i + 1)], f"ch-{i % 2}")) for i in range(4)]
    assert archive.verify().ok
    yield Stored(archive, tmp_path, rows)
    archive.close()


def test_clean_archive_verifies(stored: Stored) -> None:
    report = stored.archive.verify()
    assert report.ok and (report.rows, report.files) == (4, 4)
    assert report.head == stored.rows[-1].row_hash


def test_edited_file_is_reported(stored: Stored) -> None:
    path = stored.data_dir / stored.rows[1].path
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01  # one bit of one sample
    path.write_bytes(bytes(data))
    assert stored.kinds(stored.archive.verify()) == {("file_altered", 2)}


def test_deleted_file_is_reported(stored: Stored) -> None:
    (stored.data_dir / stored.rows[2].path).unlink()
    report = stored.archive.verify()
    assert stored.kinds(report) == {("file_missing", 3)}
    assert report.problems[0].id == stored.rows[2].id


def test_updated_row_is_reported(stored: Stored) -> None:
    stored.sql("UPDATE utterances SET channel = 'ch-other' WHERE seq = 2")
    assert stored.kinds(stored.archive.verify()) == {("row_altered", 2)}


def test_row_pointing_at_another_file_is_reported(stored: Stored) -> None:
    stored.sql("UPDATE utterances SET path = ?, sha256 = ? WHERE seq = 1", stored.rows[3].path, stored.rows[3].sha256)
    kinds = stored.kinds(stored.archive.verify())
    assert ("row_altered", 1) in kinds
    assert ("file_unclaimed", None) in kinds  # the first utterance's real file is now claimed by no row


def test_status_change_is_not_tampering(stored: Stored) -> None:
    stored.sql("UPDATE utterances SET status = 'transcribed' WHERE seq = 2")
    assert stored.archive.verify().ok


def test_deleted_row_is_reported(stored: Stored) -> None:
    stored.sql("DELETE FROM utterances WHERE seq = 2")
    kinds = stored.kinds(stored.archive.verify())
    assert kinds == {("seq_gap", 3), ("chain_broken", 3), ("file_unclaimed", None)}


def test_deleted_row_and_its_file_is_still_reported(stored: Stored) -> None:
    stored.sql("DELETE FROM utterances WHERE seq = 2")
    (stored.data_dir / stored.rows[1].path).unlink()
    assert stored.kinds(stored.archive.verify()) == {("seq_gap", 3), ("chain_broken", 3)}


def test_inserted_row_is_reported(stored: Stored) -> None:
    # A forger copies a row under a new id and slots it in at the front, hashing it correctly as a first row.
    first = stored.rows[0]
    forged = first.chained_content() | {"seq": 0, "id": "20231114T000000000-f00d"}
    forged |= {"status": "pending", "row_hash": chain_hash(forged)}
    stored.sql(f"INSERT INTO utterances ({', '.join(forged)}) VALUES ({', '.join('?' * len(forged))})", *forged.values())
    # The forged row is out of sequence, and the real first row no longer follows its predecessor.
    assert stored.kinds(stored.archive.verify()) == {("seq_gap", 0), ("chain_broken", 1)}


def test_appended_row_with_a_bogus_hash_is_reported(stored: Stored) -> None:
    last = stored.rows[-1]
    fake = last.to_dict() | {"seq": 5, "id": "20231114T000000000-beef", "prev_hash": last.row_hash, "row_hash": "f" * 64}
    stored.sql(f"INSERT INTO utterances ({', '.join(fake)}) VALUES ({', '.join('?' * len(fake))})", *fake.values())
    assert stored.kinds(stored.archive.verify()) == {("row_altered", 5)}


def test_extra_file_is_reported(stored: Stored) -> None:
    extra = stored.data_dir / "archive/2023/11/14/ch-0/planted.wav"
    extra.write_bytes(b"RIFF....")
    report = stored.archive.verify()
    assert [(p.kind, p.path) for p in report.problems] == [("file_unclaimed", "archive/2023/11/14/ch-0/planted.wav")]
    assert report.files == 5


def test_a_file_whose_row_a_kill_cut_short_is_set_aside_at_the_next_start_as_an_unfinished_write(stored: Stored) -> None:
    """Killed between renaming an utterance's file into place and committing its row: at the next start the service
    sets the file aside under its temp name, and verify reports an unfinished write (never accepted), not a file that
    no row claims; an older file planted elsewhere is still reported."""
    last = stored.data_dir / stored.rows[-1].path
    cut_short = last.with_name("20991231T000000000-dead.wav")  # the next utterance's file, its row never committed
    cut_short.write_bytes(last.read_bytes())
    planted = stored.data_dir / "archive" / "2001" / "01" / "01" / "ch-0" / "20010101T000000000-beef.wav"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(last.read_bytes())
    assert {p.kind for p in stored.archive.verify().problems} == {"file_unclaimed"}
    set_aside = stored.archive.set_aside_unfinished_writes()
    assert [p.name for p in set_aside] == [".20991231T000000000-dead.wav.tmp"] and not cut_short.exists()
    report = stored.archive.verify()
    planted_path = planted.relative_to(stored.data_dir).as_posix()
    assert [(p.kind, p.path) for p in report.problems] == [("file_unclaimed", planted_path)]
    assert [p.kind for p in report.incomplete] == ["write_incomplete"] and report.rows == 4
    assert stored.archive.set_aside_unfinished_writes() == []  # the rows' own files are never touched
    assert all((stored.data_dir / row.path).is_file() for row in stored.rows)
