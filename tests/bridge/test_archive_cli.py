"""`jingbao archive list|verify` as a user or a script runs it: a subprocess, a real config file, a real archive."""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from bridge.archive import Archive, ArchivedUtterance, _write_temp_file, encode
from bridge.commands.service import parse_since
from tests.conftest import REPO
from tests.support.archive import make_utterance, speech_pcm, storage

__all__ = ["speech_pcm"]  # a fixture, imported for pytest


def jingbao(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "jingbao.yaml"
    path.write_text(
        f"jurisdiction: {REPO / 'config' / 'jurisdiction.yaml'}\n"
        f"storage: {{data_dir: {tmp_path / 'data'}, audio_format: wav}}\n"
        "channels:\n  - {id: ch-a, name: 甲, source: {type: pipe}}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def rows(tmp_path: Path, config_file: Path, speech_pcm: bytes) -> list[ArchivedUtterance]:
    with Archive(storage(tmp_path / "data")) as archive:
        return [
            archive.store(make_utterance(speech_pcm[:8000], "ch-a", 1_700_000_000.0)),
            archive.store(make_utterance(speech_pcm[:8000], "ch-b", 1_700_086_400.0)),  # a day later
            archive.store(make_utterance(speech_pcm[:8000], "ch-a", time.time() - 60)),
        ]


def test_list_json_lines(config_file: Path, rows: list[ArchivedUtterance]) -> None:
    done = jingbao("archive", "list", "--config", str(config_file), "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["id"] for line in lines] == [r.id for r in reversed(rows)]  # newest first
    assert lines[-1] == rows[0].to_dict()


def test_list_filters(config_file: Path, rows: list[ArchivedUtterance]) -> None:
    def ids(*args: str) -> list[str]:
        done = jingbao("archive", "list", "--config", str(config_file), "--json", *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["id"] for line in done.stdout.splitlines()]

    assert ids("--channel", "ch-b") == [rows[1].id]
    assert ids("--since", "2h") == [rows[2].id]
    assert ids("--since", "2023-11-15T12:00:00+00:00") == [rows[2].id, rows[1].id]
    assert ids("--channel", "ch-a", "--limit", "1") == [rows[2].id]


def test_list_table_for_people(config_file: Path, rows: list[ArchivedUtterance]) -> None:
    done = jingbao("archive", "list", "--config", str(config_file))
    assert done.returncode == 0, done.stderr
    header, *body = done.stdout.splitlines()
    assert "channel" in header and "status" in header
    assert len(body) == 3 and rows[0].id in body[-1] and "pending" in body[-1]


def test_verify_clean_exits_0(config_file: Path, rows: list[ArchivedUtterance]) -> None:
    done = jingbao("archive", "verify", "--config", str(config_file))
    assert done.returncode == 0, done.stderr
    assert f"archive OK: 3 rows, 3 files, head {rows[-1].row_hash}" in done.stdout
    report = json.loads(jingbao("archive", "verify", "--config", str(config_file), "--json").stdout)
    assert report == {"ok": True, "rows": 3, "files": 3, "head": rows[-1].row_hash, "problems": [], "incomplete": []}


def test_verify_reports_a_crashed_write_apart_from_tampering(
    tmp_path: Path, config_file: Path, rows: list[ArchivedUtterance], speech_pcm: bytes
) -> None:
    folder = (tmp_path / "data" / rows[0].path).parent
    utt = make_utterance(speech_pcm[:8000], "ch-a")
    unfinished = _write_temp_file(folder, utt.id, "wav", encode(utt.pcm, "wav", "24k"))  # what a store makes before its rename
    rel = unfinished.relative_to(tmp_path / "data").as_posix()
    done = jingbao("archive", "verify", "--config", str(config_file))
    assert done.returncode == 0, done.stdout
    assert f"write_incomplete: path {rel}: temp file of a write that never finished" in done.stdout
    assert "archive OK (1 incomplete write(s) left by a crash): 3 rows, 3 files" in done.stdout
    report = json.loads(jingbao("archive", "verify", "--config", str(config_file), "--json").stdout)
    assert report["ok"] and report["problems"] == []
    assert [(p["kind"], p["path"]) for p in report["incomplete"]] == [("write_incomplete", rel)]


def test_list_and_verify_open_the_database_read_only(tmp_path: Path, config_file: Path, rows: list[ArchivedUtterance]) -> None:
    database = tmp_path / "data" / "jingbao.db"
    with sqlite3.connect(database) as conn:  # an auditor's copy in rollback-journal mode: opening it to write
        conn.execute("PRAGMA journal_mode=DELETE")  # would switch it back to WAL, a change in the file itself
    conn.close()
    before = database.read_bytes()
    assert jingbao("archive", "verify", "--config", str(config_file)).returncode == 0
    assert jingbao("archive", "list", "--config", str(config_file)).returncode == 0
    assert database.read_bytes() == before
    assert not (tmp_path / "data" / "jingbao.db-wal").exists()


def test_verify_problems_exit_1_and_are_named(tmp_path: Path, config_file: Path, rows: list[ArchivedUtterance]) -> None:
    (tmp_path / "data" / rows[1].path).unlink()
    done = jingbao("archive", "verify", "--config", str(config_file))
    assert done.returncode == 1
    assert f"file_missing: seq 2 id {rows[1].id} path {rows[1].path}: audio file is missing" in done.stdout
    assert "archive 1 problem(s)" in done.stdout
    done = jingbao("archive", "verify", "--config", str(config_file), "--json")
    assert done.returncode == 1
    [problem] = json.loads(done.stdout)["problems"]
    assert (problem["kind"], problem["seq"], problem["id"]) == ("file_missing", 2, rows[1].id)


def test_missing_archive_or_config_is_a_clear_error(tmp_path: Path, config_file: Path) -> None:
    done = jingbao("archive", "verify", "--config", str(config_file))
    assert done.returncode == 2 and "no archive database" in done.stderr
    assert not (tmp_path / "data").exists()  # looking does not create an empty archive
    done = jingbao("archive", "list", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "cannot read" in done.stderr


def test_parse_since() -> None:
    assert parse_since("2024-05-01") == datetime(2024, 5, 1).timestamp()  # naive: local time
    assert parse_since("2024-05-01T08:30:00+08:00") == 1_714_523_400.0
    assert abs(parse_since("90m") - (time.time() - 5400)) < 5
    assert abs(parse_since("2h") - (time.time() - 7200)) < 5
    today_0830 = datetime.now().replace(hour=8, minute=30, second=0, microsecond=0)
    assert parse_since("08:30") == today_0830.timestamp()
    for bad in ("yesterday", "2h ago", "", "-3d"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected an ISO date or time"):
            parse_since(bad)
