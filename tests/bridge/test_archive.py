"""The archive with its real encoder (libsndfile), real files and real SQLite: formats, layout, chain, concurrency,
reading back (through ffmpeg, an independent decoder)."""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import soundfile

from bridge.archive import Archive, ArchiveError, EncodeError, opus_bitrate_bps
from bridge.archive_verify import GENESIS_HASH, chain_hash, file_sha256
from bridge.audio import levels_dbfs
from bridge.events import Utterance
from tests.support.archive import make_utterance, speech_pcm, storage

__all__ = ["speech_pcm"]  # a fixture, imported for pytest


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_lossless_round_trip_is_exact(tmp_path: Path, speech_pcm: bytes, fmt: str) -> None:
    with Archive(storage(tmp_path, fmt)) as archive:
        row = archive.store(make_utterance(speech_pcm))
        assert row.format == fmt and row.path.endswith(f".{fmt}")
        assert archive.read_pcm(row.id) == speech_pcm


def test_opus_round_trip_correlates(tmp_path: Path, speech_pcm: bytes) -> None:
    with Archive(storage(tmp_path, "opus")) as archive:
        row = archive.store(make_utterance(speech_pcm))
        back = archive.read_pcm(row.id)
    assert row.format == "opus" and row.path.endswith(".opus")
    assert (tmp_path / row.path).read_bytes()[:4] == b"OggS"
    assert abs(len(back) - len(speech_pcm)) <= 2 * 320  # at most a frame of codec padding either way
    a, b = _samples(speech_pcm), _samples(back)
    n = min(len(a), len(b)) - 8
    # ffmpeg skips the look-ahead the encoder declares (pre-skip); allow a few samples of residual misalignment.
    # Measured: 0.996 at lag 0 with libsndfile's libopus at complexity 10 (0.916 in libopus's "voip" mode).
    best = max(np.corrcoef(a[4 : n + 4], b[4 + lag : n + 4 + lag])[0, 1] for lag in range(-4, 5))
    assert best > 0.95
    assert (tmp_path / row.path).stat().st_size < len(speech_pcm) / 5  # 24 kb/s against 256 kb/s PCM


def _no_process(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError(f"the archive started (or looked for) a program while storing: {args[:1]}")


@pytest.mark.parametrize("fmt", ["opus", "flac"])
def test_encoding_starts_no_process_and_decodes_to_the_same_duration(
    tmp_path: Path, speech_pcm: bytes, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    with monkeypatch.context() as no_programs:  # every way this process could start or look for an encoder program
        for module, name in [(subprocess, "Popen"), (os, "fork"), (os, "posix_spawn"), (os, "posix_spawnp"),
                             (os, "system"), (shutil, "which")]:  # fmt: skip
            no_programs.setattr(module, name, _no_process)
        with Archive(storage(tmp_path, fmt)) as archive:
            row = archive.store(make_utterance(speech_pcm))
    assert (row.format, row.fault) == (fmt, "")
    with Archive(storage(tmp_path, fmt), readonly=True) as archive:
        back = archive.read_pcm(row.id)  # ffmpeg decodes it, honouring Opus's pre-skip and end trim
    assert abs(len(back) - len(speech_pcm)) <= 320 * 2  # at most one 20 ms frame (320 samples) longer or shorter
    assert abs(len(back) / 32 - row.duration_ms) <= 20
    if fmt == "flac":
        assert back == speech_pcm


@pytest.mark.parametrize(("bitrate", "bps"), [("6k", 6000), ("24k", 24000), ("24.5k", 24500), ("24000", 24000),
                                             ("100K", 100_000), ("256k", 256_000), ("0.256M", 256_000)])  # fmt: skip
def test_opus_bitrate_reads_as_bits_per_second_and_out_of_range_is_refused(bitrate: str, bps: int) -> None:
    assert opus_bitrate_bps(bitrate) == bps
    for wrong in ("5k", "300k", "fast", ""):
        with pytest.raises(EncodeError):
            opus_bitrate_bps(wrong)


def test_opus_files_average_near_the_configured_bitrate(tmp_path: Path, speech_pcm: bytes) -> None:
    seconds = len(speech_pcm) / 32_000
    measured = {}
    for kbps in (12, 24, 48):
        with Archive(storage(tmp_path / str(kbps), "opus", f"{kbps}k")) as archive:
            row = archive.store(make_utterance(speech_pcm))
        measured[kbps] = (tmp_path / str(kbps) / row.path).stat().st_size * 8 / seconds / 1000
    # VBR on 4 s of speech plus about 1 kb/s of Ogg pages. Measured: 13.5, 24.5, 45.9 kb/s with libsndfile (libopus at
    # complexity 10); 15.1, 27.2, 53.9 at complexity 5 through PyAV.
    for kbps, rate in measured.items():
        assert 0.85 * kbps < rate < 1.2 * kbps, measured


@pytest.mark.parametrize("samples", [150, 699, 12_345, 16_000])
def test_an_opus_file_decodes_to_exactly_the_samples_archived_short_ones_too(
    tmp_path: Path, speech_pcm: bytes, samples: int
) -> None:  # fmt: skip
    """The encoder's packets timed from 0: the last Ogg page's end says where the audio ends, so neither ffmpeg
    (`read_pcm`, a browser) nor libsndfile returns padding, and libsndfile takes even a file of one page."""
    pcm = speech_pcm[: samples * 2]
    with Archive(storage(tmp_path, "opus")) as archive:
        row = archive.store(make_utterance(pcm))
        assert len(archive.read_pcm(row.id)) == len(pcm)
    decoded, rate = soundfile.read(tmp_path / row.path, dtype="int16")
    assert (rate, len(decoded)) == (16_000, samples)


def test_row_describes_the_utterance_and_the_file(tmp_path: Path, speech_pcm: bytes) -> None:
    utt = Utterance("20231114T221320000-abcd", "ch-market", 1_700_000_000.0, 1_700_000_004.5, speech_pcm, "max_length")
    with Archive(storage(tmp_path, "wav")) as archive:
        row = archive.store(utt)
    assert row.path == "archive/2023/11/14/ch-market/20231114T221320000-abcd.wav"  # UTC date of the start
    assert (row.start_ms, row.end_ms) == (1_700_000_000_000, 1_700_000_004_500)
    assert row.duration_ms == round(len(speech_pcm) / 32)
    assert row.sha256 == file_sha256(tmp_path / row.path)
    peak, rms = levels_dbfs(speech_pcm)
    assert (row.peak_dbfs, row.rms_dbfs) == (round(peak, 2), round(rms, 2))
    assert (row.end_reason, row.status, row.fault) == ("max_length", "pending", "")
    assert not list((tmp_path / "archive/2023/11/14/ch-market").glob(".*"))  # no temp file left behind


def test_utc_date_decides_the_folder(tmp_path: Path, speech_pcm: bytes) -> None:
    just_before_midnight = 1_700_006_399.5  # 2023-11-14T23:59:59.5Z (already the 15th in Beijing)
    with Archive(storage(tmp_path)) as archive:
        row = archive.store(make_utterance(speech_pcm[:3200], "ch-a", just_before_midnight))
    assert row.path.startswith("archive/2023/11/14/ch-a/")


def test_rows_form_a_hash_chain(tmp_path: Path, speech_pcm: bytes) -> None:
    with Archive(storage(tmp_path)) as archive:
        rows = [archive.store(make_utterance(speech_pcm[: 8000 * (i + 1)])) for i in range(4)]
        assert archive.verify().head == rows[-1].row_hash
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert rows[0].prev_hash == GENESIS_HASH
    for prev, row in itertools.pairwise(rows):
        assert row.prev_hash == prev.row_hash
    for row in rows:
        assert row.row_hash == chain_hash(row.chained_content())
        assert "status" not in row.chained_content() and "prev_hash" in row.chained_content()


def test_status_is_outside_the_chain(tmp_path: Path, speech_pcm: bytes) -> None:
    with Archive(storage(tmp_path)) as archive:
        first, second = (archive.store(make_utterance(speech_pcm[:16000])) for _ in range(2))
        assert archive.pending() == [first.id, second.id]
        archive.set_status(first.id, "transcribed")
        archive.set_status(second.id, "asr_failed")
        assert archive.pending() == []
        assert archive.get(first.id).status == "transcribed"
        assert archive.verify().ok
        with pytest.raises(ArchiveError, match="unknown utterance id"):
            archive.set_status("no-such-id", "transcribed")
        with pytest.raises(ArchiveError, match="invalid status"):
            archive.set_status(first.id, "DROP TABLE")


def test_pending_survives_reopening(tmp_path: Path, speech_pcm: bytes) -> None:
    with Archive(storage(tmp_path)) as archive:
        ids = [archive.store(make_utterance(speech_pcm[:16000])).id for _ in range(3)]
        archive.set_status(ids[1], "transcribed")
    with Archive(storage(tmp_path)) as reopened:
        assert reopened.pending() == [ids[0], ids[2]]
        assert reopened.store(make_utterance(speech_pcm[:16000])).seq == 4


def test_list_filters_and_orders_newest_first(tmp_path: Path, speech_pcm: bytes) -> None:
    pcm = speech_pcm[:3200]
    with Archive(storage(tmp_path)) as archive:
        a = archive.store(make_utterance(pcm, "ch-a", 1_700_000_000.0))
        b = archive.store(make_utterance(pcm, "ch-b", 1_700_000_100.0))
        c = archive.store(make_utterance(pcm, "ch-a", 1_700_000_200.0))
        assert [r.id for r in archive.list()] == [c.id, b.id, a.id]
        assert [r.id for r in archive.list(channel="ch-a")] == [c.id, a.id]
        assert [r.id for r in archive.list(since=1_700_000_100.0)] == [c.id, b.id]
        assert [r.id for r in archive.list(limit=1)] == [c.id]
        assert archive.list(channel="ch-none") == []


def test_concurrent_stores_from_threads_keep_one_chain(tmp_path: Path, speech_pcm: bytes) -> None:
    utterances = [make_utterance(speech_pcm[:32000], f"ch-{t}") for t in range(6) for _ in range(4)]
    errors: list[BaseException] = []
    with Archive(storage(tmp_path, "opus")) as archive:

        def worker(batch: list[Utterance]) -> None:
            try:
                for utt in batch:
                    archive.store(utt)
            except BaseException as e:  # surfaced by the assertion below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(utterances[i::6],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report = archive.verify()
        rows = archive.list(limit=100)
    assert errors == []
    assert report.ok, report.problems
    assert (report.rows, report.files) == (24, 24)
    assert sorted(r.seq for r in rows) == list(range(1, 25))
    assert {r.id for r in rows} == {u.id for u in utterances}


def test_same_utterance_stored_twice_at_once_is_archived_once(tmp_path: Path, speech_pcm: bytes) -> None:
    utt = make_utterance(speech_pcm)
    results: list[object] = []
    with Archive(storage(tmp_path, "opus")) as archive:

        def worker() -> None:
            try:
                results.append(archive.store(utt))
            except ArchiveError as e:
                results.append(e)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(type(r).__name__ for r in results) == ["ArchiveError", "ArchivedUtterance"]
        assert archive.verify().ok and archive.held == 0


def test_bad_utterances_are_rejected_clearly(tmp_path: Path, speech_pcm: bytes) -> None:
    with Archive(storage(tmp_path)) as archive:
        utt = make_utterance(speech_pcm[:3200])
        archive.store(utt)
        with pytest.raises(ArchiveError, match="already archived"):
            archive.store(utt)
        with pytest.raises(ArchiveError, match="not a safe file name"):
            archive.store(Utterance("../../etc/x", "ch-a", 1.0, 2.0, b"\0\0"))
        with pytest.raises(ArchiveError, match="not a safe file name"):
            archive.store(Utterance("x1", "../ch", 1.0, 2.0, b"\0\0"))
        with pytest.raises(ArchiveError, match="whole number"):
            archive.store(Utterance("x2", "ch-a", 1.0, 2.0, b"\0\0\0"))
        with pytest.raises(ArchiveError, match="unknown utterance id"):
            archive.read_pcm("nope")
        assert archive.verify().rows == 1 and archive.held == 0 and archive.faults == []


@pytest.mark.parametrize("fmt", ["wav", "opus", "flac"])
def test_empty_utterance_is_archived(tmp_path: Path, fmt: str) -> None:
    with Archive(storage(tmp_path, fmt)) as archive:
        row = archive.store(make_utterance(b""))
        assert (row.duration_ms, row.peak_dbfs) == (0, -120.0)
        # Opus and FLAC of zero samples would not decode: a bare WAV header holds them, and that is no fault.
        assert (row.format, row.fault, archive.faults) == ("wav", "", [])
        assert archive.read_pcm(row.id) == b""
        assert archive.verify().ok


def test_a_clipped_utterance_verifies(tmp_path: Path) -> None:
    """Full-scale audio peaks at a hair under 0 dBFS, which rounds to -0.0: it must hash as SQLite stores it."""
    clipped = np.full(16000, 32767, dtype="<i2").tobytes()
    with Archive(storage(tmp_path, "wav")) as archive:
        row = archive.store(make_utterance(clipped))
        assert row.peak_dbfs == 0.0
        assert archive.verify().ok


def test_schema_has_the_documented_columns(tmp_path: Path) -> None:
    Archive(storage(tmp_path)).close()
    with sqlite3.connect(tmp_path / "jingbao.db") as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(utterances)")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert columns == [
        "seq", "id", "channel", "start_ms", "end_ms", "duration_ms", "path", "format", "sha256", "peak_dbfs",
        "rms_dbfs", "end_reason", "fault", "status", "created_at", "prev_hash", "row_hash",
    ]  # fmt: skip
    assert mode == "wal"
