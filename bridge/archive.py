"""The archive: every utterance durable on disk, with a hash-chained row in SQLite, before anything else happens.

`Archive.store(utt)` encodes the PCM to `archive/YYYY/MM/DD/<channel>/<id>.<ext>` under `data_dir` (UTC date of the
start), writing a temp file in the same folder, fsync-ing it, renaming it into place and fsync-ing the folder; then
it inserts the row in one transaction (SQLite WAL, synchronous=FULL). Only when `store` returns is the utterance
accepted, and from then on it survives the process dying. Tamper evidence lives in `bridge.archive_verify`.

Opus (in Ogg) and FLAC are encoded in this process, into memory: at 200 channels, starting an encoder process per
utterance cost more CPU than FLAC-encoding the utterance (about 70 ms against 2 ms for 5 s of audio,
docs/performance.md). Opus is libopus through PyAV (`av`, which bundles FFmpeg's), at `storage.opus_bitrate` (6k to
256k; VBR, so a file averages near it, plus about 1 kb/s of Ogg pages), `storage.opus_complexity` (5 by default;
libsndfile, the encoder before, runs libopus at 10 and cannot be told otherwise: 5.4 times the CPU, for files
10-20 % smaller) and the "audio"
application (the waveform kept, for the recogniser that may hear it again; "voip" filters it for a listener). FLAC
is libsndfile's (`soundfile`). Reading the archive back (`read_pcm`) still goes through ffmpeg, as every other file
the bridge reads does.

Faults never drop audio silently; each is logged at ERROR and appended to `Archive.faults`, active until its cause
is gone (`Archive.active_faults`, what /healthz reports):
- Encode failure (PyAV or libsndfile missing or failing, a bitrate outside 6k-256k): the utterance is archived anyway as a
  WAV (stdlib `wave`), and the row's `fault` column says why. That column is part of the hash
  chain, so the record of what went wrong is as trustworthy as the audio. Its status stays 'pending': ASR can
  still transcribe it, which an 'encode_failed' status would prevent. Encoding happens in memory, before any file is
  opened, so a full disk is never mistaken for an encode failure. The fault ends when an utterance is next stored in
  the configured format.
- Write failure (disk full, I/O or database error): nothing can be made durable, so the utterance is held in
  memory (`Archive.held`) and `store` raises `ArchiveUnavailable`; held utterances are retried, oldest first,
  before every later `store`, every `retry_interval_s` on a timer (a quiet channel sends no later store) and a
  last time by `close()`, and keep their original times. The faults end when nothing is held any more, and
  `on_written` is told of each held utterance as it is written. A spool folder would sit on the same full disk,
  which is why memory is the fallback; it is unbounded, because the alternative is dropping. Those still held at
  `close()` are written to `storage.spill_dir` (another disk) as `<id>.wav` with a sidecar `<id>.json` (id, channel,
  start, end, end reason, status), logged at ERROR; `import_spilled()` (the service, as it starts) holds them again
  and writes them, removing each one's spill files once it is in the archive. Without a spill folder, or when it
  cannot be written either, each is logged at CRITICAL: its audio is lost.
  A held utterance is not waiting for anything else: recognition and dispatch take it from memory (asr/live.py),
  and `set_status` on it is kept with it, so that it is written with the status it has by then.

The database shares the disk, and a report made during a full disk must still become a transcript, an incident and
an alert. So the archive keeps `storage.reserve_mb` of it as a file, `data_dir/.reserve`, and writes audio only while
that file is in place: the first write that finds the disk full (whatever filled it) deletes it, which gives the
database that room, and audio is held from then on, never eating into it. The reserve is made again, and audio
written, once the disk has room for it twice over.

A crash between creating a temp file and its rename leaves `.<id>.<fmt>.tmp` behind: that utterance was never
accepted, and verify reports such files as incomplete writes, apart from tampering. A crash between the rename and
the row's commit leaves the file under its final name: the service sets it aside under its temp name at its next
start (`set_aside_unfinished_writes`), which makes it the same case. `Archive(..., readonly=True)`
(what `jingbao archive list/verify` use) opens the database read-only and never creates or migrates anything.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Literal

import numpy as np

from bridge.archive_verify import GENESIS_HASH, VerifyReport, chain_hash, file_sha256, verify_rows
from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH, levels_dbfs
from bridge.config import StorageConfig
from bridge.db import connect, migrate
from bridge.decode import decode_file
from bridge.events import Utterance

logger = logging.getLogger(__name__)

AudioFormat = Literal["opus", "wav", "flac"]
EXTENSIONS: dict[str, str] = {"opus": "opus", "wav": "wav", "flac": "flac"}
OPUS_BITRATE = re.compile(r"^(\d+(?:\.\d+)?)([kKM]?)$")  # the forms ffmpeg's -b:a took: 24k, 24000, 24.5k
OPUS_COMPLEXITY = 5  # libopus's, 0-10 (storage.opus_complexity's default)
OPUS_MIN_BPS, OPUS_MAX_BPS = 6_000, 256_000
RETRY_INTERVAL_S = 5.0  # held utterances (disk full) are retried this often even when no new utterance comes
RESERVE_FILE = ".reserve"  # in data_dir: storage.reserve_mb kept for the database (see the module docstring)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")  # ids and channels become path components
STATUS = re.compile(r"^[a-z_]{1,32}$")

MIGRATIONS = [
    """
    CREATE TABLE utterances (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        channel TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        path TEXT NOT NULL,
        format TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        peak_dbfs REAL NOT NULL,
        rms_dbfs REAL NOT NULL,
        end_reason TEXT NOT NULL,
        fault TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        prev_hash TEXT NOT NULL,
        row_hash TEXT NOT NULL
    );
    CREATE INDEX utterances_channel_start ON utterances (channel, start_ms);
    CREATE INDEX utterances_start ON utterances (start_ms);
    CREATE INDEX utterances_status ON utterances (status, seq);
    """
]


class ArchiveError(Exception):
    """A request the archive cannot serve: bad utterance, unknown id, duplicate."""


class ArchiveUnavailable(ArchiveError):
    """The utterance could not be made durable now (disk full, I/O error); it is held in memory and retried."""


class NoRoomForAudio(OSError):
    """The disk has no room for audio beyond the reserve the database keeps (storage.reserve_mb)."""


class EncodeError(Exception):
    """The configured format could not be encoded (its library missing or failing, unusable bitrate, no audio)."""


@dataclass(frozen=True, slots=True)
class ArchivedUtterance:
    """One archive row (a snapshot: `status` may change later). Times are UTC epoch milliseconds."""

    seq: int
    id: str
    channel: str
    start_ms: int
    end_ms: int
    duration_ms: int
    path: str  # relative to data_dir, POSIX separators
    format: str
    sha256: str
    peak_dbfs: float
    rms_dbfs: float
    end_reason: str
    fault: str  # "" normally; why the configured format could not be used otherwise
    status: str
    created_at: int
    prev_hash: str
    row_hash: str

    def chained_content(self) -> dict[str, object]:
        """What the row hash covers: everything except the mutable status and the hash itself."""
        content = asdict(self)
        del content["status"], content["row_hash"]
        return content

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = [f.name for f in fields(ArchivedUtterance)]


FaultKind = Literal["encode_failed", "held"]


@dataclass(slots=True)
class ArchiveFault:
    ts: float
    kind: FaultKind
    utterance_id: str
    channel: str
    message: str
    active: bool = True  # False once its cause is gone (the disk has room again, the encoder works again)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Held:
    """An utterance that could not be written yet, in memory until it can be."""

    utterance: Utterance
    status: str = "pending"  # set_status while it is held: the row is written with it
    spilled: Path | None = None  # its sidecar in the spill folder, when it came back from there: removed once written


class Archive:
    """Durable, tamper-evident utterance store. Thread-safe: encodes run in parallel, chain writes take one lock."""

    def __init__(
        self, storage: StorageConfig, max_faults: int = 100, retry_interval_s: float = RETRY_INTERVAL_S, readonly: bool = False
    ) -> None:
        self.storage = storage
        self.data_dir = storage.data_dir
        self.archive_dir = storage.archive_dir
        self.readonly = readonly
        self.retry_interval_s = retry_interval_s
        if readonly:  # an audit must not change what it audits (no folder, no migration, no journal-mode switch)
            self._conn = connect(storage.database, readonly=True)
        else:
            self.archive_dir.mkdir(parents=True, exist_ok=True)
            self._conn = connect(storage.database)
            migrate(self._conn, "archive", MIGRATIONS)
        self._db_lock = threading.Lock()  # the one writer lock; also serialises reads on the shared connection
        self._held_lock = threading.Lock()
        self._reserve = self.data_dir / RESERVE_FILE
        self._reserve_bytes = round(storage.reserve_mb * 1_000_000)
        self._reserve_lock = threading.Lock()
        self._held: deque[_Held] = deque()
        self._faults: deque[ArchiveFault] = deque(maxlen=max_faults)
        self._in_flight: set[str] = set()  # ids being written right now
        self._timer_lock = threading.Lock()
        self._retry_timer: threading.Timer | None = None
        self._closed = False
        # Told of each held utterance once it is written (in the thread that wrote it), e.g. to clear a channel's fault.
        self.on_written: Callable[[ArchivedUtterance], None] | None = None
        if not readonly:
            if not self._reserve_bytes:
                self._reserve.unlink(missing_ok=True)  # kept under an earlier storage.reserve_mb
            self._keep_reserve()
            if storage.spill_dir is not None and _same_disk(storage.spill_dir, self.data_dir):
                logger.warning("storage.spill_dir %s is on the archive's own disk: when that is full, so is the spill "
                               "folder; put it on another disk", storage.spill_dir)  # fmt: skip
        if not readonly and storage.audio_format != "wav":  # said once at start-up; each utterance carries the fault too
            try:
                if storage.audio_format == "opus":
                    _check_opus_encoder()
                    opus_bitrate_bps(storage.opus_bitrate)
                else:
                    _load_soundfile()
            except EncodeError as e:
                logger.error("%s: utterances will be archived as WAV instead of %s", e, storage.audio_format)

    def set_aside_unfinished_writes(self) -> list[Path]:
        """At start-up, before anything is archived: a file renamed into place whose row was never committed (the
        process killed between the two) is an utterance that was never accepted, as a temp file left behind is; it
        is renamed back to its temp name (`.<id>.<fmt>.tmp`), so that verify reports it as an unfinished write, not as
        a file nobody accounts for. Only the folders such a write can be in are looked at: the newest row's day, the
        day after it and today (each channel's). Returns the files set aside. Never while this process or another
        may be archiving: a write in flight is in that window for a moment."""
        if self.readonly:
            return []
        with self._db_lock:
            newest = self._conn.execute("SELECT start_ms FROM utterances ORDER BY seq DESC LIMIT 1").fetchone()
        days = {datetime.now(UTC).date()}
        if newest is not None:
            day = datetime.fromtimestamp(newest["start_ms"] / 1000, UTC).date()
            days |= {day, day + timedelta(days=1)}
        formats = {ext: fmt for fmt, ext in EXTENSIONS.items()}
        set_aside = []
        for day in sorted(days):
            folder = self.archive_dir / f"{day:%Y/%m/%d}"
            prefix = folder.relative_to(self.data_dir).as_posix() + "/"
            with self._db_lock:
                claimed = {row["path"] for row in self._conn.execute(
                    "SELECT path FROM utterances WHERE substr(path, 1, ?) = ?", (len(prefix), prefix))}  # fmt: skip
            for path in sorted(folder.glob("*/*")) if folder.is_dir() else []:
                fmt = formats.get(path.suffix.lstrip("."))
                if path.name.startswith(".") or fmt is None or path.relative_to(self.data_dir).as_posix() in claimed:
                    continue
                temp = path.with_name(f".{path.stem}.{fmt}.tmp")
                os.replace(path, temp)
                _fsync_dir(path.parent)
                logger.warning("archive: %s was written when the process stopped, before its row was: never accepted, "
                               "set aside as %s (an unfinished write to `archive verify`)", path, temp.name)  # fmt: skip
                set_aside.append(temp)
        return set_aside

    def close(self) -> None:
        """Stop the retry timer, try the held utterances a last time, log loudly any that are still not on disk."""
        with self._timer_lock:
            self._closed = True
            timer, self._retry_timer = self._retry_timer, None
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()
        if self._held:
            self.retry_held()
        with self._held_lock:
            left = list(self._held)
        for held in left:
            self._spill(held)
        with self._db_lock:
            self._conn.close()

    def _spill(self, held: _Held) -> None:
        """At close, a held utterance to the spill folder if there is one; said either way."""
        utt, folder = held.utterance, self.storage.spill_dir
        what = f"utterance {utt.id} of channel {utt.channel} (start {utt.start:.3f}, {utt.duration:.1f} s)"
        if held.spilled is not None:
            logger.error("archive closed with %s still not written: it stays in %s", what, held.spilled.parent)
            return
        if folder is not None:
            sidecar = {"id": utt.id, "channel": utt.channel, "start": utt.start, "end": utt.end, "reason": utt.reason,
                       "status": held.status}  # fmt: skip
            try:
                folder.mkdir(parents=True, exist_ok=True)
                # the WAV first, the sidecar last: an utterance is spilled once its sidecar is there
                os.replace(_write_temp_file(folder, utt.id, "wav", encode(utt.pcm, "wav", "")), folder / f"{utt.id}.wav")
                data = json.dumps(sidecar, ensure_ascii=False).encode()
                os.replace(_write_temp_file(folder, utt.id, "json", data), folder / f"{utt.id}.json")
                _fsync_dir(folder)
            except OSError as e:
                logger.critical("archive closed with %s not written, nor spilled to %s (%s): its audio is lost", what,
                                folder, e)  # fmt: skip
                return
            logger.error("archive closed with %s not written: spilled to %s, brought back at the next start", what,
                         folder)  # fmt: skip
            return
        logger.critical("archive closed with %s not written (no storage.spill_dir): its audio is lost", what)

    def import_spilled(self) -> int:
        """Hold again the utterances an earlier close() spilled, oldest first, and write them if the archive can now
        (each one's spill files go once it is written; until then it is held, with a fault). Returns how many came."""
        folder = self.storage.spill_dir
        if folder is None or not folder.is_dir():
            return 0
        came: list[_Held] = []
        for sidecar in sorted(folder.glob("*.json")):
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
                utt = Utterance(meta["id"], meta["channel"], meta["start"], meta["end"],
                                _read_wav(sidecar.with_suffix(".wav")), meta["reason"])  # fmt: skip
                _check_utterance(utt)
                status = meta["status"] if STATUS.match(str(meta.get("status"))) else "pending"
            except (OSError, ValueError, KeyError, TypeError, wave.Error, ArchiveError) as e:
                logger.error("archive: spilled utterance %s cannot be read (%s); left where it is", sidecar, e)
                continue
            came.append(_Held(utt, status, sidecar))
        if not came:
            return 0
        came.sort(key=lambda held: held.utterance.start)
        with self._held_lock:
            self._held.extend(came)
        logger.warning("archive: %d utterance(s) spilled at the last stop brought back from %s", len(came), folder)
        self.retry_held()
        with self._held_lock:
            for held in self._held:
                if held.spilled is not None:
                    self._fault("held", held.utterance, f"brought back from {folder}, still cannot be written")
        if self._held:
            self._schedule_retry()
        return len(came)

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def faults(self) -> list[ArchiveFault]:
        """The most recent faults, oldest first."""
        return list(self._faults)

    @property
    def active_faults(self) -> list[ArchiveFault]:
        """The faults whose cause is not gone yet."""
        return [f for f in self._faults if f.active]

    @property
    def held(self) -> int:
        """Utterances waiting in memory because they could not be written (disk full, I/O error)."""
        return len(self._held)

    def holds(self, channel: str) -> int:
        """How many of `channel`'s utterances are held in memory (never waits for a retry under way)."""
        return sum(held.utterance.channel == channel for held in list(self._held))  # list(): one atomic copy

    # --- writing -------------------------------------------------------------------------------------------

    def store(self, utt: Utterance) -> ArchivedUtterance:
        """Make `utt` durable (file + chained row) and return its row.

        Raises ArchiveError for an utterance that cannot be archived as given (unsafe id or channel, odd PCM
        length, id already archived), and ArchiveUnavailable when it cannot be written now (it is then held).
        """
        if self.readonly:
            raise ArchiveError("the archive is open read-only")
        _check_utterance(utt)
        if self._held:
            self.retry_held()
        try:
            return self._write(utt)
        except (OSError, sqlite3.Error) as e:
            with self._held_lock:  # with its fault, so that a retry emptying the queue meanwhile cannot clear it
                self._held.append(_Held(utt))
                self._fault("held", utt, f"could not be written, held in memory for retry ({self.held} held): {e}")
            self._schedule_retry()
            raise ArchiveUnavailable(f"utterance {utt.id} could not be archived now (held for retry): {e}") from e

    def retry_held(self) -> int:
        """Write held utterances, oldest first, stopping at the first that still fails; returns how many were written.
        When none is left held, the faults that held them end."""
        rows: list[ArchivedUtterance] = []
        written = 0
        with self._held_lock:
            while self._held:
                held = self._held[0]
                try:
                    rows.append(self._write(held.utterance, held.status))
                except (OSError, sqlite3.Error) as e:
                    logger.debug("held utterance %s still cannot be written: %s", held.utterance.id, e)
                    break
                except ArchiveError as e:  # already archived (a retry after a half-reported success)
                    logger.warning("held utterance %s: %s", held.utterance.id, e)
                self._held.popleft()
                written += 1
                if held.spilled is not None:  # in the archive now: the sidecar (what makes it spilled) goes first
                    held.spilled.unlink(missing_ok=True)
                    held.spilled.with_suffix(".wav").unlink(missing_ok=True)
            if written and not self._held:
                self._clear_faults("held")
        if written:
            logger.warning("archive: %d held utterance(s) written, %d still held", written, self.held)
        if self.on_written is not None:
            for row in rows:
                try:
                    self.on_written(row)
                except Exception:  # whoever listens must not make a store() that wrote fail
                    logger.exception("archive: telling of held utterance %s written failed", row.id)
        return written

    def _schedule_retry(self) -> None:
        """Retry the held utterances in `retry_interval_s`, unless a retry is already due or the archive is closed."""
        with self._timer_lock:
            if self._closed or self._retry_timer is not None:
                return
            self._retry_timer = threading.Timer(self.retry_interval_s, self._retry_on_timer)
            self._retry_timer.daemon = True
            self._retry_timer.name = "archive-retry"
            self._retry_timer.start()

    def _retry_on_timer(self) -> None:
        # The timer stays set while this runs: close() joins it, so the connection outlives the retry.
        try:
            self.retry_held()
        except Exception:  # the timer thread must keep retrying whatever went wrong this time
            logger.exception("archive: retrying held utterances failed")
        with self._timer_lock:
            self._retry_timer = None
        if self._held:
            self._schedule_retry()

    def set_status(self, utterance_id: str, status: str) -> None:
        """Update the mutable status (pending -> transcribed / asr_failed ...); it is outside the hash chain. An
        utterance held in memory keeps the status until it is written with it."""
        if not STATUS.match(status):
            raise ArchiveError(f"invalid status {status!r} (lower-case letters and '_')")
        # Under the held lock: a retry writing the utterance right now finishes first, and the row is then updated.
        with self._held_lock:
            for held in self._held:
                if held.utterance.id == utterance_id:
                    held.status = status
                    return
            with self._db_lock, self._conn:
                cur = self._conn.execute("UPDATE utterances SET status = ? WHERE id = ?", (status, utterance_id))
        if cur.rowcount == 0:
            raise ArchiveError(f"unknown utterance id {utterance_id!r}")

    def _write(self, utt: Utterance, status: str = "pending") -> ArchivedUtterance:
        # Claim the id first: a second store() of the same utterance must not overwrite the file of the first.
        with self._db_lock:
            if utt.id in self._in_flight or self._conn.execute("SELECT 1 FROM utterances WHERE id = ?", (utt.id,)).fetchone():
                raise ArchiveError(f"utterance {utt.id} is already archived (or being archived)")
            self._in_flight.add(utt.id)
        try:
            return self._write_claimed(utt, status)
        except (OSError, sqlite3.Error) as e:
            if _disk_full(e):
                self._release_reserve()
            raise
        finally:
            with self._db_lock:
                self._in_flight.discard(utt.id)

    def _write_claimed(self, utt: Utterance, status: str) -> ArchivedUtterance:
        if not self._keep_reserve():
            mb = self._reserve_bytes / 1e6
            raise NoRoomForAudio(errno.ENOSPC, f"no room for audio: the disk's last {mb:g} MB are kept for the database "
                                 f"(storage.reserve_mb) until it has room for them twice over")  # fmt: skip
        day = datetime.fromtimestamp(utt.start, UTC)
        folder = self.archive_dir / f"{day:%Y/%m/%d}" / utt.channel
        _make_durable_dirs(folder)
        # Zero samples make no decodable Opus or FLAC file; a bare WAV header stores them as well, and is no fault.
        fmt, fault = (self.storage.audio_format if utt.pcm else "wav"), ""
        try:
            encoded = encode(utt.pcm, fmt, self.storage.opus_bitrate, self.storage.opus_complexity)
        except EncodeError as e:
            fmt, fault = "wav", f"{fmt} encode failed, stored as wav: {e}"
            encoded = encode(utt.pcm, "wav", self.storage.opus_bitrate)
        tmp = _write_temp_file(folder, utt.id, fmt, encoded)
        if fault:  # only once the WAV is written: a full disk now means "held", and the retry will fault again
            self._fault("encode_failed", utt, fault)
        final = folder / f"{utt.id}.{EXTENSIONS[fmt]}"
        try:
            sha = file_sha256(tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(folder)
        try:
            row = self._insert(utt, final, fmt, sha, fault, status)
        except (sqlite3.Error, OSError):
            final.unlink(missing_ok=True)  # the utterance is held and will be written again; no orphan file
            raise
        if fmt == self.storage.audio_format and utt.pcm:  # the encoder works (again)
            self._clear_faults("encode_failed")
        return row

    def _insert(self, utt: Utterance, final: Path, fmt: str, sha: str, fault: str, status: str) -> ArchivedUtterance:
        peak, rms = levels_dbfs(utt.pcm)
        with self._db_lock, self._conn:
            head = self._conn.execute("SELECT seq, row_hash FROM utterances ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev_hash = (head["seq"] + 1, head["row_hash"]) if head else (1, GENESIS_HASH)
            draft = ArchivedUtterance(
                seq=seq,
                id=utt.id,
                channel=utt.channel,
                start_ms=round(utt.start * 1000),
                end_ms=round(utt.end * 1000),
                duration_ms=round(len(utt.pcm) * 1000 / (SAMPLE_RATE * SAMPLE_WIDTH)),
                path=final.relative_to(self.data_dir).as_posix(),
                format=fmt,
                sha256=sha,
                peak_dbfs=round(peak, 2) + 0.0,  # + 0.0: -0.0 would hash as "-0.0" but SQLite stores 0.0
                rms_dbfs=round(rms, 2) + 0.0,
                end_reason=utt.reason,
                fault=fault,
                status=status,
                created_at=round(time.time() * 1000),
                prev_hash=prev_hash,
                row_hash="",
            )
            row = _replace_hash(draft)
            placeholders = ", ".join("?" for _ in COLUMNS)
            self._conn.execute(
                f"INSERT INTO utterances ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                [getattr(row, c) for c in COLUMNS],
            )
        return row

    def _keep_reserve(self) -> bool:
        """Whether the reserve is in place, made (again) when the disk has room for it twice over."""
        if not self._reserve_bytes:
            return True
        with self._reserve_lock:
            try:
                if self._reserve.is_file() and self._reserve.stat().st_size == self._reserve_bytes:
                    return True
                self._reserve.unlink(missing_ok=True)  # storage.reserve_mb changed
                if shutil.disk_usage(self.data_dir).free < 2 * self._reserve_bytes:
                    return False
                tmp = self._reserve.with_name(RESERVE_FILE + ".tmp")
                try:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    try:
                        os.posix_fallocate(fd, 0, self._reserve_bytes)  # blocks taken now, not a sparse promise
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.replace(tmp, self._reserve)
                finally:
                    tmp.unlink(missing_ok=True)
            except OSError as e:
                logger.error("archive: cannot keep the %g MB reserve for the database: %s", self._reserve_bytes / 1e6, e)
                return False
        logger.info("archive: %g MB kept free for the database (%s)", self._reserve_bytes / 1e6, self._reserve)
        return True

    def _release_reserve(self) -> None:
        with self._reserve_lock:
            try:
                self._reserve.unlink()
            except FileNotFoundError:
                return
            except OSError as e:
                logger.error("archive: the disk is full and the reserve cannot be released: %s", e)
                return
        logger.warning("archive: the disk is full: its %g MB reserve is released for the database (transcripts, "
                       "incidents, alerts); audio is held in memory until the disk has room for the reserve again",
                       self._reserve_bytes / 1e6)  # fmt: skip

    def _fault(self, kind: FaultKind, utt: Utterance, message: str) -> None:
        logger.error("archive fault (%s) on channel %s, utterance %s: %s", kind, utt.channel, utt.id, message)
        self._faults.append(ArchiveFault(time.time(), kind, utt.id, utt.channel, message))

    def _clear_faults(self, kind: FaultKind) -> None:
        cleared = 0
        for fault in list(self._faults):
            if fault.kind == kind and fault.active:
                fault.active = False
                cleared += 1
        if cleared:
            logger.info("archive: %d %s fault(s) cleared, their cause is gone", cleared, kind)

    # --- reading -------------------------------------------------------------------------------------------

    def get(self, utterance_id: str) -> ArchivedUtterance:
        row = self._find(utterance_id)
        if row is None:
            raise ArchiveError(f"unknown utterance id {utterance_id!r}")
        return row

    def list(self, channel: str | None = None, since: float | None = None, limit: int = 100) -> list[ArchivedUtterance]:
        """The most recent `limit` utterances (newest first), optionally of one channel and starting at/after `since`
        (UTC epoch seconds)."""
        where, args = ["1"], []
        if channel is not None:
            where.append("channel = ?")
            args.append(channel)
        if since is not None:
            where.append("start_ms >= ?")
            args.append(round(since * 1000))
        sql = f"SELECT * FROM utterances WHERE {' AND '.join(where)} ORDER BY start_ms DESC, seq DESC LIMIT ?"
        return self._query(sql, [*args, limit])

    def pending(self) -> list[str]:
        """Ids still waiting for ASR, oldest first (what the ASR stage resumes with after a restart)."""
        with self._db_lock:
            rows = self._conn.execute("SELECT id FROM utterances WHERE status = 'pending' ORDER BY seq").fetchall()
        return [r["id"] for r in rows]

    def read_pcm(self, utterance_id: str) -> bytes:
        """Decode the archived file back to 16 kHz mono int16 PCM (for re-transcription)."""
        return decode_file(self.data_dir / self.get(utterance_id).path)

    def verify(self) -> VerifyReport:
        """Check the whole chain and every file; see bridge.archive_verify for what is reported."""
        return verify_rows(self._query("SELECT * FROM utterances ORDER BY seq", []), self.data_dir, self.archive_dir)

    def _find(self, utterance_id: str) -> ArchivedUtterance | None:
        rows = self._query("SELECT * FROM utterances WHERE id = ?", [utterance_id])
        return rows[0] if rows else None

    def _query(self, sql: str, args: list[Any]) -> list[ArchivedUtterance]:
        with self._db_lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [ArchivedUtterance(**{c: r[c] for c in COLUMNS}) for r in rows]


def _same_disk(path: Path, other: Path) -> bool:
    while not path.exists():  # a folder not made yet will be made on its nearest existing parent's disk
        path = path.parent
    return path.stat().st_dev == other.stat().st_dev


def _disk_full(error: OSError | sqlite3.Error) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _check_utterance(utt: Utterance) -> None:
    for what, value in (("id", utt.id), ("channel", utt.channel)):
        if not SAFE_NAME.match(value):
            raise ArchiveError(f"utterance {what} {value!r} is not a safe file name (letters, digits, '_', '-', '.')")
    if len(utt.pcm) % SAMPLE_WIDTH:
        raise ArchiveError(f"utterance {utt.id}: PCM length {len(utt.pcm)} is not a whole number of int16 samples")


def _replace_hash(row: ArchivedUtterance) -> ArchivedUtterance:
    values = asdict(row)
    values["row_hash"] = chain_hash(row.chained_content())
    return ArchivedUtterance(**values)


def encode(pcm: bytes, fmt: str, opus_bitrate: str, opus_complexity: int = OPUS_COMPLEXITY) -> bytes:
    """16 kHz mono int16 PCM -> the whole file in `fmt` (opus: Ogg Opus, flac, wav), encoded in this process.

    Opus is libopus through PyAV, at `opus_complexity` (0-10; the module's docstring); FLAC is libsndfile's. Raises
    EncodeError when opus or flac cannot be made; wav (stdlib `wave`) cannot fail for whole int16 samples.
    """
    out = io.BytesIO()
    if fmt == "wav":
        _write_wav(out, pcm)
        return out.getvalue()
    if not pcm:
        # From zero samples the encoders make an empty FLAC and an Ogg Opus of headers only: neither decodes.
        raise EncodeError("no audio to encode")
    samples = np.frombuffer(pcm, dtype="<i2")
    try:
        if fmt == "opus":
            _write_opus(out, samples, opus_bitrate_bps(opus_bitrate), opus_complexity)
        else:
            _load_soundfile().write(out, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    except EncodeError:
        raise
    except Exception as e:  # whatever the codec library raises, the audio must still be kept (as WAV, by the caller)
        raise EncodeError(f"{fmt} encoder: {str(e).strip()[:300] or type(e).__name__}") from e
    encoded = out.getvalue()
    if not encoded:
        raise EncodeError(f"the {fmt} encoder produced no output")
    return encoded


def _write_opus(out: BinaryIO, samples: np.ndarray, bps: int, complexity: int) -> None:
    av = _load_av()
    with av.open(out, "w", format="ogg") as container:
        # "audio", as libsndfile's: the waveform kept (what the recogniser hears again from the archive), where "voip"
        # filters and shapes it for a listener (correlation 0.92 against 0.99); the bitrate is its VBR target
        stream = container.add_stream("libopus", rate=SAMPLE_RATE,
                                      options={"compression_level": str(complexity), "application": "audio"})  # fmt: skip
        stream.bit_rate = bps
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        # timed from 0: without it FFmpeg makes the packets' times up and the last page's end 6.5 ms late (decoders
        # then return that much padding, and libsndfile refuses some short files)
        frame.pts, frame.time_base = 0, Fraction(1, SAMPLE_RATE)
        for packet in (*stream.encode(frame), *stream.encode(None)):
            container.mux(packet)


def _load_av() -> ModuleType:
    # As _load_soundfile: without PyAV (its wheels bundle FFmpeg's libopus) the archive still runs, in WAV.
    try:
        import av
    except (ImportError, OSError) as e:
        raise EncodeError(f"PyAV cannot be loaded ({e}); install the av package") from e
    return av


def _check_opus_encoder() -> None:
    """At start-up: PyAV loads and has libopus (one built against an FFmpeg without it would fail every utterance)."""
    try:
        _load_av().codec.Codec("libopus", "w")
    except EncodeError:
        raise
    except Exception as e:
        raise EncodeError(f"PyAV has no libopus encoder ({e})") from e


def _load_soundfile() -> ModuleType:
    # Imported here, not at the top: without a loadable libsndfile (soundfile's wheels bundle it for the common
    # platforms only; elsewhere it needs the system's libsndfile1) the archive must still run, in WAV, not fail to start.
    try:
        import soundfile
    except (ImportError, OSError) as e:
        raise EncodeError(f"libsndfile cannot be loaded ({e}); install the soundfile package or libsndfile1") from e
    return soundfile


def opus_bitrate_bps(opus_bitrate: str) -> int:
    """`storage.opus_bitrate` ("24k", "24000", "24.5k") in bits per second, EncodeError outside 6k to 256k."""
    match = OPUS_BITRATE.match(opus_bitrate.strip())
    if match is None:
        raise EncodeError(f"storage.opus_bitrate {opus_bitrate!r} is not a number of bits per second such as 24k")
    bps = round(float(match[1]) * {"": 1, "k": 1_000, "K": 1_000, "M": 1_000_000}[match[2]])
    if not OPUS_MIN_BPS <= bps <= OPUS_MAX_BPS:
        raise EncodeError(f"storage.opus_bitrate {opus_bitrate!r} is outside 6k to 256k (mono speech)")
    return bps


def _read_wav(path: Path) -> bytes:
    """The PCM of a WAV the archive wrote (16 kHz mono int16); ValueError for any other."""
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, SAMPLE_WIDTH, SAMPLE_RATE):
            raise ValueError(f"{path} is not 16 kHz mono 16-bit")
        return w.readframes(w.getnframes())


def _write_wav(f: BinaryIO, pcm: bytes) -> None:
    with wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)


def _write_temp_file(folder: Path, utterance_id: str, fmt: str, data: bytes) -> Path:
    """Write and fsync `data` as `.<id>.<fmt>.tmp` in `folder` (the name verify knows as an unfinished write).

    A partial temp file (disk full) is removed before the OSError goes on.
    """
    tmp = folder / f".{utterance_id}.{fmt}.tmp"
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _make_durable_dirs(folder: Path) -> None:
    # A new day's folder must survive a crash too: fsync the parent of each directory created.
    created = [d for d in (folder, *folder.parents) if not d.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for d in created:
        _fsync_dir(d.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

