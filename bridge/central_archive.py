"""Central's copy of every station's archive, verified: each station's hash chain as its edge stored it, and the audio
central holds against each row's sha256 (`jingbao archive verify --central`, `/api/archive/verify` at central).

An edge forwards each archive row as it stored it, hash chain included (bridge/nodes.py), so central can walk the
chain station by station exactly as the edge's own `jingbao archive verify` does (bridge/archive_verify.py), on the
rows central holds: a row altered or deleted at central, or one that never arrived while later ones did, shows as a
broken chain or a gap. The chain is checked from the first row central holds (an edge that archived before it
forwarded sends only what came after); its `head` and row count, compared with the edge's own report, tell whether
central holds all of it. Audio an edge did not send (too big for a message) is counted, not a problem: the edge has
the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.archive import ArchivedUtterance
from bridge.archive_verify import ChainWalk, Problem
from bridge.central import UTTERANCE_COLUMNS
from bridge.db import connect_postgres

FETCH_ROWS = 200  # rows (with their audio) read from PostgreSQL at a time: memory stays at a few MB


@dataclass(frozen=True, slots=True)
class StationCheck:
    rows: int
    first_seq: int | None  # the first row central holds (1 when it has the station's whole chain)
    head: str  # row_hash of the last row: compare with the edge's `jingbao archive verify`
    audio_missing: int  # rows whose audio the edge did not send
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


@dataclass(frozen=True, slots=True)
class CentralVerifyReport:
    stations: dict[str, StationCheck]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.stations.values())

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "stations": {station: check.to_dict() for station, check in self.stations.items()}}


class CentralArchive:
    """What `jingbao archive verify` and the auditors' verify route check at central (PostgreSQL, read-only use)."""

    def __init__(self, url: str) -> None:
        self._url = url

    def verify(self) -> CentralVerifyReport:
        with connect_postgres(self._url) as conn:
            stations = [r["station"] for r in conn.execute("SELECT DISTINCT station FROM node_utterances ORDER BY 1")]
            return CentralVerifyReport({station: _check_station(conn, station) for station in stations})


def _check_station(conn: Any, station: str) -> StationCheck:
    chain, audio_missing = ChainWalk(anchored=True), 0
    with conn.transaction(), conn.cursor(name=f"verify_{station}") as rows:  # server-side: read as it is walked
        rows.itersize = FETCH_ROWS
        rows.execute(f"SELECT utterance_id, channel, {', '.join(UTTERANCE_COLUMNS)}, audio FROM node_utterances"
                     " WHERE station = %s ORDER BY seq", (station,))  # fmt: skip
        for r in rows:  # the edge's row as it stored it (its status, not chained, left out)
            row = ArchivedUtterance(id=r["utterance_id"], channel=r["channel"], status="",
                                    **{c: r[c] for c in UTTERANCE_COLUMNS})
            chain.add(row)
            if r["audio"] is None:
                audio_missing += 1
            elif hashlib.sha256(r["audio"]).hexdigest() != row.sha256:
                chain.problems.append(Problem("file_altered", "the audio central holds does not match the sha256 in its row",
                                              seq=row.seq, id=row.id, path=row.path))  # fmt: skip
    return StationCheck(chain.rows, chain.first_seq, chain.head, audio_missing, chain.problems)
