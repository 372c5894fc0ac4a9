"""Where the audio replayed and the utterance detail come from: the box's own archive (`ArchiveRecordings`), or at
the central tier the audio the edges forwarded into PostgreSQL (`CentralRecordings`, bridge/central.py's
node_utterances). The routes (bridge/web/routes_archive.py) see one `Recording` either way, so search, replay and
their audit are one code path on both."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bridge.archive import SAFE_NAME, Archive, ArchiveError

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True, slots=True)
class Recording:
    utterance_id: str
    station: str | None  # None on a box: its archive is its own station's
    channel: str
    start_ms: int
    duration_ms: int
    format: str
    path: Path | None = None  # the file, inside the archive (a box)
    data: bytes | None = None  # the bytes (central holds them inline)
    missing: str = ""  # why there is no audio to play ("" when there is)

    def to_dict(self) -> dict[str, Any]:
        return {"utterance_id": self.utterance_id, "station": self.station, "channel": self.channel,
                "start": self.start_ms / 1000, "duration_s": self.duration_ms / 1000, "format": self.format,
                "audio": not self.missing, "audio_missing": self.missing}  # fmt: skip


class Recordings(Protocol):
    def get(self, utterance_id: str) -> Recording | None:
        """The utterance, or None when there is no such one."""


class ArchiveRecordings:
    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def get(self, utterance_id: str) -> Recording | None:
        # the id is only ever looked up in the database, never joined into a path; the stored path is checked again
        # to stay inside the data directory, in case the database itself was tampered with
        if not SAFE_NAME.match(utterance_id):
            return None
        try:
            row = self._archive.get(utterance_id)
        except ArchiveError:
            return None
        data_dir = self._archive.data_dir.resolve()
        path = (data_dir / row.path).resolve()
        ok = path.is_relative_to(data_dir) and path.is_file()
        return Recording(row.id, None, row.channel, row.start_ms, row.duration_ms, row.format, path if ok else None,
                         missing="" if ok else "the audio file of this utterance is missing")  # fmt: skip


class CentralRecordings:
    """Every station's forwarded utterances, on one PostgreSQL connection (the read-only role's will do)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # one statement at a time on the connection; FastAPI calls from many threads

    def get(self, utterance_id: str) -> Recording | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, station, channel, start_ms, duration_ms, format, audio, audio_omitted FROM node_utterances"
                " WHERE id = %s",
                (utterance_id,),
            ).fetchone()
        if row is None:
            return None
        missing = "" if row["audio"] is not None else f"its audio did not reach central: {row['audio_omitted']}"
        return Recording(row["id"], row["station"], row["channel"], row["start_ms"], row["duration_ms"], row["format"],
                         data=row["audio"], missing=missing)  # fmt: skip
