"""The archive's tamper evidence: the row hash chain and the audit walk over rows and files.

Each row's `row_hash` is the SHA-256 of a canonical JSON serialisation of its immutable content (every column but
`status`, which the ASR stage updates later, and `row_hash` itself) including `seq` and `prev_hash`, the previous
row's `row_hash` ("0" * 64 for the first). Changing, deleting or inserting a row therefore breaks the chain at that
point, and each file's SHA-256 in its row ties the audio to the chain.

A chain alone cannot reveal that the newest rows were cut off together with their files, or that a forger who knows
this scheme re-hashed everything after an edit: auditors anchor it by noting `VerifyReport.head` (the last row hash)
and its row count from time to time, outside this machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

GENESIS_HASH = "0" * 64

ProblemKind = Literal[
    "row_altered", "chain_broken", "seq_gap", "file_missing", "file_altered", "file_unclaimed", "write_incomplete"
]


def is_temp_file(path: Path) -> bool:
    """The archive's temp files are `.<id>.<fmt>.tmp` until renamed into place; one left behind is a write that a
    crash cut short (that utterance was never accepted), not tampering."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


class ChainedRow(Protocol):
    seq: int
    id: str
    path: str
    sha256: str
    prev_hash: str
    row_hash: str

    def chained_content(self) -> Mapping[str, object]: ...


def chain_hash(content: Mapping[str, object]) -> str:
    """SHA-256 (hex) of the canonical serialisation: sorted keys, no whitespace, UTF-8, floats as Python repr."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    detail: str
    seq: int | None = None
    id: str | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    rows: int
    files: int  # archived audio files (temp files of unfinished writes not counted)
    head: str  # row_hash of the last row: note it outside the machine to anchor the chain
    problems: list[Problem] = field(default_factory=list)
    incomplete: list[Problem] = field(default_factory=list)  # write_incomplete: temp files left by a crash; not tampering

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


@dataclass(slots=True)
class ChainWalk:
    """The hash chain checked row by row, in `seq` order (`add`). From the first row (GENESIS_HASH before seq 1) or,
    for a copy that holds a chain from some row on (`anchored`: central's of an edge that archived before it
    forwarded), from that row's own prev_hash."""

    anchored: bool = False
    rows: int = 0
    first_seq: int | None = None
    head: str = GENESIS_HASH  # the last row's row_hash
    problems: list[Problem] = field(default_factory=list)
    _last_seq: int = 0

    def add(self, row: ChainedRow) -> None:
        where = {"seq": row.seq, "id": row.id, "path": row.path}
        if self.first_seq is None:
            self.first_seq = row.seq
            if self.anchored:
                self.head, self._last_seq = row.prev_hash, row.seq - 1
        self.rows += 1
        if row.seq > self._last_seq + 1:
            self.problems.append(Problem("seq_gap", f"rows {self._last_seq + 1}..{row.seq - 1} are missing (deleted?)",
                                         **where))  # fmt: skip
        elif row.seq != self._last_seq + 1:
            self.problems.append(Problem("seq_gap", f"seq {row.seq} follows {self._last_seq}: out of sequence (inserted?)",
                                         **where))  # fmt: skip
        if row.prev_hash != self.head:
            detail = "prev_hash does not match the previous row (row deleted or inserted)"
            self.problems.append(Problem("chain_broken", detail, **where))
        if chain_hash(row.chained_content()) != row.row_hash:
            self.problems.append(Problem("row_altered", "row content does not match its row_hash", **where))
        # Continue from the stored hash, so one altered row is reported once rather than breaking every later row.
        self.head, self._last_seq = row.row_hash, row.seq


def verify_rows(rows: Iterable[ChainedRow], data_dir: Path, archive_dir: Path) -> VerifyReport:
    """Walk the rows in `seq` order and every file under `archive_dir`; report each inconsistency found."""
    chain = ChainWalk()
    problems = chain.problems
    claimed: set[Path] = set()
    data_root = data_dir.resolve()
    for row in rows:
        chain.add(row)
        problems.extend(_check_file(row, data_root, claimed))
    on_disk = sorted(p.resolve() for p in archive_dir.rglob("*") if p.is_file()) if archive_dir.is_dir() else []
    incomplete = [p for p in on_disk if p not in claimed and is_temp_file(p)]
    on_disk = [p for p in on_disk if p not in incomplete]
    for path in on_disk:
        if path not in claimed:
            rel = path.relative_to(data_root).as_posix()
            problems.append(Problem("file_unclaimed", "file in the archive that no row claims", path=rel))
    unfinished = [
        Problem("write_incomplete", "temp file of a write that never finished (the process stopped mid-write); "
                "that utterance was never accepted", path=p.relative_to(data_root).as_posix())
        for p in incomplete
    ]  # fmt: skip
    return VerifyReport(rows=chain.rows, files=len(on_disk), head=chain.head, problems=problems, incomplete=unfinished)


def _check_file(row: ChainedRow, data_root: Path, claimed: set[Path]) -> list[Problem]:
    where = {"seq": row.seq, "id": row.id, "path": row.path}
    path = (data_root / row.path).resolve()
    if not path.is_relative_to(data_root):
        return [Problem("file_missing", "row points outside the data directory", **where)]
    claimed.add(path)
    if not path.is_file():
        return [Problem("file_missing", "audio file is missing", **where)]
    if file_sha256(path) != row.sha256:
        return [Problem("file_altered", "audio file does not match the sha256 in its row", **where)]
    return []
