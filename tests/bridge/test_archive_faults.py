"""Faults: the encoder failing or a bitrate it cannot use, a full disk (a small tmpfs, for real), and the process
killed after store()."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import pytest
import soundfile

from asr.live import RecognisedUtterance
from asr.store import TranscriptStore
from asr.transcript import Transcript
from bridge.archive import Archive, ArchiveError, ArchiveUnavailable
from bridge.bus import EventBus
from bridge.config import Config
from bridge.db import connect
from dispatch.dispatcher import DispatchService
from tests.conftest import REPO
from tests.support.archive import make_utterance, speech_pcm, storage
from tests.support.disk import fill, small_disk

__all__ = ["small_disk", "speech_pcm"]  # fixtures, imported for pytest


def _assert_stored_as_wav_with_fault(archive: Archive, pcm: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="bridge.archive"):
        row = archive.store(make_utterance(pcm))
    assert row.format == "wav" and row.path.endswith(".wav")
    assert reason in row.fault and row.status == "pending"  # ASR still gets it
    assert archive.read_pcm(row.id) == pcm
    assert [(f.kind, f.utterance_id) for f in archive.faults] == [("encode_failed", row.id)]
    assert any(r.levelno == logging.ERROR and row.id in r.getMessage() for r in caplog.records)
    assert archive.verify().ok and archive.held == 0


@pytest.mark.parametrize(("fmt", "library", "said"), [("opus", "av", "PyAV cannot be loaded"),
                                                     ("flac", "soundfile", "libsndfile cannot be loaded")])  # fmt: skip
def test_the_encoders_library_missing_is_said_at_start_and_falls_back_to_wav(
    tmp_path: Path, speech_pcm: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fmt: str,
    library: str, said: str,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, library, None)  # `import <library>` now fails, as without its native library
    with caplog.at_level(logging.ERROR, logger="bridge.archive"):
        archive = Archive(storage(tmp_path, fmt))
    assert any(said in r.getMessage() and "WAV instead" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with archive:
        _assert_stored_as_wav_with_fault(archive, speech_pcm, f"{fmt} encode failed, stored as wav: {said}", caplog)


def failing_write(*args: object, **kwargs: object) -> None:  # libsndfile's own error type, as a broken codec raises it
    raise soundfile.LibsndfileError(4, "Error opening <_io.BytesIO>: ")  # 4: SF_ERR_UNSUPPORTED_ENCODING


def failing_open(*args: object, **kwargs: object) -> None:  # FFmpeg's, as PyAV raises it for an encoder it lacks
    raise av.error.EncoderNotFoundError(-1, "libopus encoder not found")


@pytest.mark.parametrize(("fmt", "said"), [("opus", "opus encoder: "), ("flac", "flac encoder: Error")])
def test_encoder_failing_falls_back_to_wav(
    tmp_path: Path, speech_pcm: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fmt: str,
    said: str,
) -> None:  # fmt: skip
    monkeypatch.setattr(soundfile, "write", failing_write)
    monkeypatch.setattr(av, "open", failing_open)
    with Archive(storage(tmp_path / "data", fmt)) as archive:
        _assert_stored_as_wav_with_fault(archive, speech_pcm, f"{fmt} encode failed, stored as wav: {said}", caplog)
        assert not list((tmp_path / "data" / "archive").rglob(".*.tmp"))


@pytest.mark.parametrize(("bitrate", "reason"), [("bogus", "not a number"), ("300k", "outside"), ("5k", "outside")])
def test_an_unusable_bitrate_is_said_at_start_and_falls_back_to_wav(
    tmp_path: Path, speech_pcm: bytes, caplog: pytest.LogCaptureFixture, bitrate: str, reason: str
) -> None:
    with caplog.at_level(logging.ERROR, logger="bridge.archive"):
        archive = Archive(storage(tmp_path, "opus", opus_bitrate=bitrate))
    assert [r.getMessage() for r in caplog.records if "storage.opus_bitrate" in r.getMessage() and reason in r.getMessage()]
    caplog.clear()
    with archive:
        _assert_stored_as_wav_with_fault(archive, speech_pcm, "opus encode failed", caplog)
        assert reason in archive.faults[0].message
        assert not list((tmp_path / "archive").rglob(".*.tmp"))


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_full_disk_holds_the_audio_and_writes_it_when_space_returns(
    small_disk: Path, speech_pcm: bytes, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Archive(storage(small_disk, fmt)) as archive:
        first = archive.store(make_utterance(speech_pcm))
        filler = fill(small_disk)
        held = [make_utterance(speech_pcm), make_utterance(speech_pcm[:32000])]
        with caplog.at_level(logging.ERROR, logger="bridge.archive"):
            for utt in held:
                with pytest.raises(ArchiveUnavailable, match="held for retry"):
                    archive.store(utt)
        assert archive.held == 2
        assert [(f.kind, f.utterance_id) for f in archive.faults] == [("held", u.id) for u in held]  # not encode_failed
        assert "No space left on device" in archive.faults[0].message
        assert sum(r.levelno == logging.ERROR for r in caplog.records) == 2
        assert archive.retry_held() == 0 and archive.held == 2  # still full: nothing lost, nothing written
        assert archive.active_faults == archive.faults

        written: list[str] = []
        archive.on_written = lambda row: written.append(row.id)
        filler.unlink()
        later = archive.store(make_utterance(speech_pcm[:16000]))  # flushes the held ones first, in order
        assert archive.held == 0
        assert archive.active_faults == [] and len(archive.faults) == 2  # the cause is gone; the record stays
        assert written == [u.id for u in held]  # told of the held ones, not of the one stored at once
        assert [r.id for r in sorted(archive.list(), key=lambda r: r.seq)] == [first.id, *(u.id for u in held), later.id]
        assert all(archive.read_pcm(u.id) == u.pcm for u in held)
        assert archive.verify().ok


def test_a_status_set_while_the_utterance_is_held_is_written_with_it(small_disk: Path, speech_pcm: bytes) -> None:
    """Recognition does not wait for the disk: it may finish (and set the status) before the utterance is written."""
    with Archive(storage(small_disk, "wav"), retry_interval_s=3600) as archive:
        filler = fill(small_disk)
        held = make_utterance(speech_pcm[:32000])
        with pytest.raises(ArchiveUnavailable):
            archive.store(held)
        archive.set_status(held.id, "transcribed")
        with pytest.raises(ArchiveError, match="unknown utterance id"):
            archive.set_status("20231114T221320000-0000", "transcribed")  # neither held nor archived
        filler.unlink()
        assert archive.retry_held() == 1
        assert archive.get(held.id).status == "transcribed" and archive.pending() == []
        archive.set_status(held.id, "asr_failed")  # and the row is updated as any other from now on
        assert archive.get(held.id).status == "asr_failed" and archive.verify().ok


def test_an_encode_fault_ends_when_the_encoder_works_again(
    tmp_path: Path, speech_pcm: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Archive(storage(tmp_path, "flac")) as archive:
        with monkeypatch.context() as broken:
            broken.setattr(soundfile, "write", failing_write)
            assert archive.store(make_utterance(speech_pcm)).format == "wav"
        assert [f.kind for f in archive.active_faults] == ["encode_failed"]
        assert archive.store(make_utterance(speech_pcm)).format == "flac"
        assert archive.active_faults == [] and [f.kind for f in archive.faults] == ["encode_failed"]


def test_database_full_after_the_file_is_written_leaves_no_orphan(small_disk: Path, speech_pcm: bytes) -> None:
    with Archive(storage(small_disk, "wav")) as archive:
        archive.store(make_utterance(speech_pcm[:3200]))
        filler = fill(small_disk)
        os.truncate(filler, filler.stat().st_size - 4096)  # one page free: a tiny file fits, the WAL cannot grow
        tiny = make_utterance(speech_pcm[:200])
        with pytest.raises(ArchiveUnavailable, match="database or disk is full"):
            archive.store(tiny)
        assert archive.held == 1
        assert not list((small_disk / "archive").rglob(f"{tiny.id}*"))  # the file was removed again
        filler.unlink()
        assert archive.retry_held() == 1
        assert archive.read_pcm(tiny.id) == tiny.pcm
        assert archive.verify().ok


def test_held_utterances_are_written_on_a_timer_without_another_store(small_disk: Path, speech_pcm: bytes) -> None:
    with Archive(storage(small_disk, "wav"), retry_interval_s=0.2) as archive:
        filler = fill(small_disk)
        held = make_utterance(speech_pcm)
        with pytest.raises(ArchiveUnavailable):
            archive.store(held)
        time.sleep(0.5)
        assert archive.held == 1  # still full: retried, still held
        filler.unlink()  # space returns, and the channel stays quiet: no store comes to trigger a retry
        deadline = time.monotonic() + 5
        while archive.held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert archive.held == 0
        assert archive.read_pcm(held.id) == held.pcm and archive.verify().ok


def test_close_writes_what_is_held(small_disk: Path, speech_pcm: bytes) -> None:
    archive = Archive(storage(small_disk, "wav"), retry_interval_s=3600)  # only close() will retry
    filler = fill(small_disk)
    held = make_utterance(speech_pcm)
    with pytest.raises(ArchiveUnavailable):
        archive.store(held)
    filler.unlink()
    archive.close()
    with Archive(storage(small_disk, "wav"), readonly=True) as reopened:
        assert reopened.read_pcm(held.id) == held.pcm


def test_close_with_the_disk_still_full_names_each_lost_utterance_at_critical(
    small_disk: Path, speech_pcm: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    archive = Archive(storage(small_disk, "wav"), retry_interval_s=3600)
    fill(small_disk)
    held = [make_utterance(speech_pcm, channel="ch-a"), make_utterance(speech_pcm[:32000], channel="ch-b")]
    for utt in held:
        with pytest.raises(ArchiveUnavailable):
            archive.store(utt)
    with caplog.at_level(logging.CRITICAL, logger="bridge.archive"):
        archive.close()
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 2
    for utt, message in zip(held, critical, strict=True):
        assert utt.id in message and utt.channel in message and "lost" in message


KILL_AFTER_STORE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from bridge.archive import Archive
    from bridge.config import StorageConfig
    from bridge.events import Utterance

    pcm = Path(sys.argv[2]).read_bytes()
    archive = Archive(StorageConfig(data_dir=Path(sys.argv[1]), audio_format="flac"))
    row = archive.store(Utterance("20231114T221320000-d1ed", "ch-kill", 1_700_000_000.0, 1_700_000_004.0, pcm))
    print(row.path, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit, no flush of anything else
    """
)


def test_accepted_utterance_survives_sigkill(tmp_path: Path, speech_pcm: bytes) -> None:
    (tmp_path / "speech.raw").write_bytes(speech_pcm)
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_STORE, str(data_dir), str(tmp_path / "speech.raw")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    path = done.stdout.strip()
    assert (data_dir / path).is_file()
    with Archive(storage(data_dir, "flac")) as archive:
        row = archive.get("20231114T221320000-d1ed")
        assert row.path == path and row.status == "pending"
        assert archive.pending() == [row.id]
        assert archive.read_pcm(row.id) == speech_pcm
        assert archive.verify().ok


def test_held_audio_is_spilled_at_close_and_brought_back_at_the_next_start(
    small_disk: Path, tmp_path: Path, speech_pcm: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    spill = tmp_path / "spill"  # another disk
    config = storage(small_disk, "flac", spill_dir=spill)
    archive = Archive(config, retry_interval_s=3600)
    filler = fill(small_disk)
    held = [make_utterance(speech_pcm, channel="ch-a"), make_utterance(speech_pcm[:32000], channel="ch-b")]
    for utt in held:
        with pytest.raises(ArchiveUnavailable):
            archive.store(utt)
    archive.set_status(held[0].id, "transcribed")  # recognised meanwhile, from memory
    with caplog.at_level(logging.ERROR, logger="bridge.archive"):
        archive.close()
    assert not [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [r.getMessage().endswith(f"spilled to {spill}, brought back at the next start") for r in caplog.records
            if "archive closed with" in r.getMessage()] == [True, True]  # fmt: skip
    assert sorted(p.name for p in spill.iterdir()) == sorted(f"{u.id}.{ext}" for u in held for ext in ("json", "wav"))
    assert json.loads((spill / f"{held[0].id}.json").read_text()) == {
        "id": held[0].id, "channel": "ch-a", "start": held[0].start, "end": held[0].end, "reason": "silence",
        "status": "transcribed"}  # fmt: skip

    with Archive(config, retry_interval_s=3600) as still_full:  # the next start, the disk still full
        assert still_full.import_spilled() == 2 and still_full.held == 2
        assert [(f.kind, f.utterance_id) for f in still_full.active_faults] == [("held", u.id) for u in held]
    assert len(list(spill.iterdir())) == 4, "closing again leaves them where they are"

    filler.unlink()
    with Archive(config) as restarted:
        assert restarted.import_spilled() == 2 and restarted.held == 0 and restarted.active_faults == []
        assert [restarted.get(u.id).status for u in held] == ["transcribed", "pending"]
        assert all(restarted.read_pcm(u.id) == u.pcm and restarted.get(u.id).format == "flac" for u in held)
        assert restarted.verify().ok
    assert list(spill.iterdir()) == []


def test_the_disk_filling_up_releases_the_reserve_to_the_database_and_audio_never_takes_it(
    small_disk: Path, speech_pcm: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    reserve = small_disk / ".reserve"
    with Archive(storage(small_disk, reserve_mb=0.5), retry_interval_s=3600) as archive:
        assert reserve.stat().st_size == 500_000
        archive.store(make_utterance(speech_pcm[:32000]))
        filler = fill(small_disk)  # something else fills the disk, up to the reserve
        with caplog.at_level(logging.WARNING, logger="bridge.archive"), pytest.raises(ArchiveUnavailable, match="No space left"):
            archive.store(make_utterance(speech_pcm))
        assert not reserve.exists() and shutil.disk_usage(small_disk).free >= 450_000  # now the database's
        assert "its 0.5 MB reserve is released for the database" in caplog.text
        with pytest.raises(ArchiveUnavailable, match=r"the disk's last 0\.5 MB are kept for the database"):
            archive.store(make_utterance(speech_pcm[:3200]))  # a short one would fit: it is held all the same
        assert archive.retry_held() == 0 and shutil.disk_usage(small_disk).free >= 450_000

        filler.unlink()
        assert archive.retry_held() == 2 and archive.held == 0 and archive.active_faults == []
        assert reserve.stat().st_size == 500_000 and archive.verify().ok


async def test_a_fight_reported_while_the_disk_is_full_is_still_dispatched(small_disk: Path, speech_pcm: bytes) -> None:
    """The report's audio cannot be written; its transcript, the incident and the alert can (the reserve's room)."""
    config = Config.model_validate({
        "jurisdiction": REPO / "config" / "jurisdiction.yaml",
        "channels": [{"id": "ch-market", "name": "市场保安", "source": {"type": "pipe"}}],
        "storage": {"data_dir": small_disk, "audio_format": "wav", "reserve_mb": 0.5},
        "broker": {"enabled": False},
        "dispatch": {"responders": {"guards": 1, "police": 0}},
    })  # fmt: skip
    with Archive(config.storage, retry_interval_s=3600) as archive:
        transcripts = TranscriptStore(connect(config.storage.database))
        dispatch = DispatchService(config, bus=EventBus())
        fill(small_disk)
        report = make_utterance(speech_pcm, channel="ch-market", start=time.time() - 4)
        with pytest.raises(ArchiveUnavailable):
            archive.store(report)  # as the channel stores it: held, and the reserve released
        said = Transcript(text="菜市场门口有人打架，快来人", pinyin="", engine="test")
        transcripts.save(report.id, report.channel, report.start, said)
        archive.set_status(report.id, "transcribed")
        incident = await dispatch.dispatcher.handle(said, RecognisedUtterance(report.id, report.channel, report.start,
                                                                               report.end))  # fmt: skip
        assert incident is not None and incident.type == "fight"
        assert transcripts.get(report.id) == said and dispatch.outbox.pending(10)  # the alert waits for the broker
        assert archive.held == 1
