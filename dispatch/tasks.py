"""Tasks with sign-off (任务 / 签收 / 反馈): an operator's instruction to people of the jurisdiction, and a dispute
pushed to a grid's police officer, followed through its lifecycle.

- **Sent** (`TaskDesk.create`) to the recipients resolved from the jurisdiction (`resolve`: everyone, a person, a
  unit, a grid, a group of one role, the listeners of a radio channel; several at once), each over MQTT on his own
  task topic (`<prefix>/tasks/<responder_id>`, through the outbox like every alert) and, unless told not to, by a
  spoken announcement on the recipients' radio channels (the dispatcher's announcer: the channel's airtime budget
  applies, hardware/announcements.py).
- **Signed off** (签收) by each recipient from the phone page (again: nothing changes), and **reported back** (反馈):
  text, a photo, or a voice note transcribed by the project's recogniser (the files under the data folder, see
  bridge/web/routes_tasks.py). Reporting back signs off too: a recipient who answers has received it.
- **The deadline**: the console shows who has and has not signed; when it passes, every recipient not signed yet is
  reminded once (a `reminder` on his task topic, marked on the console); an operator can remind again. What is due is
  in the state database (the deadline, and who was reminded when), so a restart reminds whoever fell due meanwhile,
  at once, and nobody twice.
- **A dispute** (kind `dispute`: 矛盾纠纷, e.g. a dispute incident pushed to its grid) goes to the police of one grid
  and moves through 发现 -> 调处 -> 跟踪 -> 联动 -> 回访, each step recorded with who, when and a note, with a
  follow-up date (the officer is reminded when it falls due); a step never goes back, and 回访 without a further
  follow-up date closes it. Steps are written on the incident's timeline too when the dispute came from one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.db import Connection, Migration, Row, migrate
from dispatch.announce import ATTENTION, Announcer, spoken_unit
from dispatch.gazetteer import Jurisdiction, Responder
from dispatch.outbox import Outbox
from dispatch.topics import Topics

logger = logging.getLogger(__name__)

Kind = Literal["instruction", "dispute"]
FeedbackKind = Literal["text", "photo", "voice"]
# The seeds' lifecycle of a dispute (矛盾纠纷), in order: found, mediated, tracked, handed on to other agencies, revisited.
STAGES = ("发现", "调处", "跟踪", "联动", "回访")
# Groups of the jurisdiction by role (responders' `role`); a channel's listeners are a group too (`channel:<id>`).
GROUPS = {"guards": ("全体保安", ("guard",)), "police": ("全体民警", ("chief", "officer")),
          "volunteers": ("全体义警", ("volunteer",)), "grid_workers": ("全体网格员", ("grid_worker",))}  # fmt: skip
POLICE = ("chief", "officer")
MAX_UNITS_CALLED = 4  # more units than this on one channel are called 各单位 on the air
TEXT_MAX = 200
STEP_NOTE_MAX = 500

MIGRATIONS = [
    Migration(
        sqlite="""
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        targets TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        deadline REAL NOT NULL,
        announced TEXT NOT NULL,
        incident_id TEXT,
        stage TEXT,
        follow_up_at REAL,
        follow_up_reminded_at REAL,
        cancelled_at REAL,
        cancelled_by TEXT,
        closed_at REAL
    );
    CREATE TABLE task_recipients (
        task_id TEXT NOT NULL REFERENCES tasks (id),
        responder_id TEXT NOT NULL,
        signed_at REAL,
        reminded_at REAL,
        reminders INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (task_id, responder_id)
    );
    CREATE INDEX task_recipients_unsigned ON task_recipients (task_id) WHERE signed_at IS NULL AND reminded_at IS NULL;
    CREATE INDEX task_recipients_responder ON task_recipients (responder_id);
    CREATE TABLE task_feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL REFERENCES tasks (id),
        responder_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        pinyin TEXT NOT NULL DEFAULT '',
        file TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX task_feedback_task ON task_feedback (task_id, id);
    CREATE TABLE task_steps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL REFERENCES tasks (id),
        stage TEXT NOT NULL,
        actor TEXT NOT NULL,
        at REAL NOT NULL,
        note TEXT NOT NULL,
        follow_up_at REAL
    );
    CREATE INDEX task_steps_task ON task_steps (task_id, id);
    """,
        # PostgreSQL came later: its first step is the schema as it stands, the steps after it have nothing to do
        postgres="""
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        targets TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        deadline DOUBLE PRECISION NOT NULL,
        announced TEXT NOT NULL,
        incident_id TEXT,
        stage TEXT,
        follow_up_at DOUBLE PRECISION,
        follow_up_reminded_at DOUBLE PRECISION,
        cancelled_at DOUBLE PRECISION,
        cancelled_by TEXT,
        closed_at DOUBLE PRECISION
    );
    CREATE TABLE task_recipients (
        task_id TEXT NOT NULL REFERENCES tasks (id),
        responder_id TEXT NOT NULL,
        signed_at DOUBLE PRECISION,
        reminded_at DOUBLE PRECISION,
        reminders INTEGER NOT NULL DEFAULT 0,
        seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (task_id, responder_id)
    );
    CREATE INDEX task_recipients_unsigned ON task_recipients (task_id) WHERE signed_at IS NULL AND reminded_at IS NULL;
    CREATE INDEX task_recipients_responder ON task_recipients (responder_id);
    CREATE TABLE task_feedback (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        task_id TEXT NOT NULL REFERENCES tasks (id),
        responder_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        pinyin TEXT NOT NULL DEFAULT '',
        file TEXT,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX task_feedback_task ON task_feedback (task_id, id);
    CREATE TABLE task_steps (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        task_id TEXT NOT NULL REFERENCES tasks (id),
        stage TEXT NOT NULL,
        actor TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        note TEXT NOT NULL,
        follow_up_at DOUBLE PRECISION
    );
    CREATE INDEX task_steps_task ON task_steps (task_id, id);
    """,
    ),
    # A recipient's place in his task's list (registry order; a dispute's chief first), which SQLite kept only as the
    # order of the rows (rowid), a thing PostgreSQL has not: the rows already there are numbered in that order.
    Migration(
        sqlite="""
    ALTER TABLE task_recipients ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    UPDATE task_recipients SET seq = (SELECT COUNT(*) FROM task_recipients earlier
                                      WHERE earlier.task_id = task_recipients.task_id AND earlier.rowid < task_recipients.rowid);
    """,
        postgres="",
    ),
]


class TaskError(ValueError):
    """A task request that cannot be done as asked (the message says why)."""


class UnknownTarget(TaskError):
    """A recipient the jurisdiction does not have (a person, unit, grid, group or channel)."""


class NotFound(TaskError):
    """No such task (or not one of this responder's)."""


class Conflict(TaskError):
    """The task's state refuses it: cancelled, closed, a lifecycle step backwards."""


@dataclass(slots=True, frozen=True)
class Target:
    """One choice of recipients as the console offers it: `key` (all, person:ID, unit:NAME, grid:ID, group:NAME,
    channel:ID), its label, and who it means."""

    key: str
    label: str
    responder_ids: tuple[str, ...]


def targets(jurisdiction: Jurisdiction) -> list[Target]:
    """Every target the jurisdiction offers, broadest first."""
    rs = jurisdiction.responders
    ids = lambda keep: tuple(r.id for r in rs if keep(r))  # noqa: E731
    out = [Target("all", "全体人员（各单位）", ids(lambda r: True))]
    out += [Target(f"group:{key}", label, ids(lambda r, roles=roles: r.role in roles)) for key, (label, roles) in GROUPS.items()]
    out += [Target(f"channel:{c.id}", f"{c.name}频道", ids(lambda r, c=c: r.channel == c.id)) for c in jurisdiction.channels]
    for grid in (p for p in jurisdiction.places if p.kind == "community"):
        out.append(Target(f"grid:{grid.id}", f"{grid.name}网格", ids(lambda r, g=grid.id: jurisdiction.grid_of(r.post) == g)))
    units = dict.fromkeys(r.unit for r in rs if r.unit)
    out += [Target(f"unit:{u}", u, ids(lambda r, u=u: r.unit == u)) for u in units]
    out += [Target(f"person:{r.id}", f"{r.name}（{r.unit or r.role}）", (r.id,)) for r in rs]
    return [t for t in out if t.responder_ids]


def resolve(jurisdiction: Jurisdiction, keys: Sequence[str], kind: Kind = "instruction") -> list[str]:
    """The responders `keys` name, in registry order, each once; UnknownTarget names a key that means nobody. A
    dispute goes to the police of one grid (its chief first: the 社区警长 answers for his grid)."""
    offered = {t.key: t for t in targets(jurisdiction)}
    unknown = [k for k in keys if k not in offered]
    if unknown:
        raise UnknownTarget(f"unknown recipient {', '.join(map(repr, unknown))} (all, person:ID, unit:NAME, grid:ID, "
                            f"group:{'|'.join(GROUPS)}, channel:ID)")  # fmt: skip
    if not keys:
        raise TaskError("a task needs at least one recipient")
    if kind == "dispute":
        if len(keys) != 1 or not keys[0].startswith("grid:"):
            raise TaskError("a dispute goes to one grid (grid:ID): its police officer follows it up")
        police = [rid for rid in offered[keys[0]].responder_ids if jurisdiction.responder(rid).role in POLICE]
        if not police:
            raise UnknownTarget(f"no police officer is posted in {keys[0]}")
        return sorted(police, key=lambda rid: jurisdiction.responder(rid).role != "chief")
    wanted = {rid for k in keys for rid in offered[k].responder_ids}
    return [r.id for r in jurisdiction.responders if r.id in wanted]


def new_task_id(at: float) -> str:
    return f"TASK-{datetime.fromtimestamp(at, UTC).strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


@dataclass(slots=True, frozen=True)
class Feedback:
    id: int
    task_id: str
    responder_id: str
    kind: FeedbackKind
    text: str
    pinyin: str
    file: str | None  # relative to the tasks' file folder
    created_at: float


@dataclass(slots=True, frozen=True)
class Step:
    id: int
    task_id: str
    stage: str
    actor: str
    at: float
    note: str
    follow_up_at: float | None


@dataclass(slots=True, frozen=True)
class Recipient:
    responder_id: str
    signed_at: float | None
    reminded_at: float | None
    reminders: int


@dataclass(slots=True, frozen=True)
class Task:
    id: str
    kind: Kind
    text: str
    targets: tuple[str, ...]
    created_by: str
    created_at: float
    deadline: float
    announced: tuple[str, ...]  # the radio channels it was announced on
    incident_id: str | None = None
    stage: str | None = None
    follow_up_at: float | None = None
    follow_up_reminded_at: float | None = None
    cancelled_at: float | None = None
    cancelled_by: str | None = None
    closed_at: float | None = None
    recipients: tuple[Recipient, ...] = field(default=())

    @property
    def active(self) -> bool:
        return self.cancelled_at is None and self.closed_at is None


class TaskStore:
    """Tasks, their recipients' sign-offs and reminders, feedback and lifecycle steps, in the state database."""

    def __init__(self, conn: Connection) -> None:
        migrate(conn, "dispatch.tasks", MIGRATIONS)
        self._conn = conn

    def add(self, task: Task) -> None:
        row = asdict(task)
        del row["recipients"]
        row["targets"], row["announced"] = json.dumps(row["targets"]), json.dumps(row["announced"])
        with self._conn:
            self._conn.execute(f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                               tuple(row.values()))  # fmt: skip
            self._conn.executemany("INSERT INTO task_recipients (task_id, responder_id, seq) VALUES (?, ?, ?)",
                                   [(task.id, r.responder_id, n) for n, r in enumerate(task.recipients)])  # fmt: skip

    def get(self, task_id: str) -> Task | None:
        row = self._conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return self._task(row) if row else None

    def list(self, *, limit: int = 100, responder_id: str | None = None) -> list[Task]:
        """Newest first; `responder_id`: only the tasks sent to him."""
        if responder_id is None:
            rows = self._conn.execute("SELECT * FROM tasks ORDER BY created_at DESC LIMIT ?", (limit,))
        else:
            rows = self._conn.execute("SELECT t.* FROM tasks t JOIN task_recipients r ON r.task_id = t.id "
                                      "WHERE r.responder_id = ? ORDER BY t.created_at DESC LIMIT ?",
                                      (responder_id, limit))  # fmt: skip
        return [self._task(r) for r in rows.fetchall()]

    def update(self, task_id: str, **changes: Any) -> None:
        with self._conn:
            self._conn.execute(f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                               (*changes.values(), task_id))  # fmt: skip

    def sign(self, task_id: str, responder_id: str, at: float) -> bool:
        """False when he had signed already (the first sign-off stands)."""
        with self._conn:
            cur = self._conn.execute("UPDATE task_recipients SET signed_at = ? WHERE task_id = ? AND responder_id = ? "
                                     "AND signed_at IS NULL", (at, task_id, responder_id))  # fmt: skip
        return cur.rowcount > 0

    def reminded(self, task_id: str, responder_ids: Iterable[str], at: float) -> None:
        with self._conn:
            self._conn.executemany("UPDATE task_recipients SET reminded_at = ?, reminders = reminders + 1 "
                                   "WHERE task_id = ? AND responder_id = ?",
                                   [(at, task_id, rid) for rid in responder_ids])  # fmt: skip

    def add_feedback(self, task_id: str, responder_id: str, kind: FeedbackKind, text: str, *, pinyin: str = "",
                     file: str | None = None, at: float) -> Feedback:  # fmt: skip
        with self._conn:
            row = self._conn.execute("INSERT INTO task_feedback (task_id, responder_id, kind, text, pinyin, file, "
                                     "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                                     (task_id, responder_id, kind, text, pinyin, file, at)).fetchone()  # fmt: skip
        return Feedback(int(row[0]), task_id, responder_id, kind, text, pinyin, file, at)

    def feedback(self, task_id: str) -> list[Feedback]:
        rows = self._conn.execute("SELECT * FROM task_feedback WHERE task_id = ? ORDER BY id", (task_id,))
        return [Feedback(**dict(r)) for r in rows]

    def feedback_item(self, task_id: str, feedback_id: int) -> Feedback | None:
        row = self._conn.execute("SELECT * FROM task_feedback WHERE task_id = ? AND id = ?", (task_id, feedback_id)).fetchone()
        return Feedback(**dict(row)) if row else None

    def add_step(self, step: Step) -> None:
        with self._conn:
            self._conn.execute("INSERT INTO task_steps (task_id, stage, actor, at, note, follow_up_at) VALUES (?, ?, ?, ?, ?, ?)",
                               (step.task_id, step.stage, step.actor, step.at, step.note, step.follow_up_at))  # fmt: skip

    def steps(self, task_id: str) -> list[Step]:
        rows = self._conn.execute("SELECT * FROM task_steps WHERE task_id = ? ORDER BY id", (task_id,))
        return [Step(**dict(r)) for r in rows]

    def overdue(self, now: float) -> list[tuple[str, list[str]]]:
        """(task id, recipients not signed and not reminded yet) of the active tasks whose deadline has passed."""
        rows = self._conn.execute(
            "SELECT t.id, r.responder_id FROM tasks t JOIN task_recipients r ON r.task_id = t.id "
            "WHERE t.deadline <= ? AND t.cancelled_at IS NULL AND t.closed_at IS NULL "
            "AND r.signed_at IS NULL AND r.reminded_at IS NULL ORDER BY t.deadline, t.id, r.seq", (now,))  # fmt: skip
        due: dict[str, list[str]] = {}
        for r in rows:
            due.setdefault(r["id"], []).append(r["responder_id"])
        return list(due.items())

    def follow_ups_due(self, now: float) -> list[str]:
        """Disputes whose follow-up date has passed and whose officer has not been reminded of it yet."""
        rows = self._conn.execute("SELECT id FROM tasks WHERE follow_up_at <= ? AND follow_up_reminded_at IS NULL "
                                  "AND cancelled_at IS NULL AND closed_at IS NULL ORDER BY follow_up_at", (now,))  # fmt: skip
        return [r["id"] for r in rows]

    def next_due(self) -> float | None:
        """When the next reminder falls due (a deadline with someone unsigned, or a follow-up date); None: nothing."""
        row = self._conn.execute(
            "SELECT min(at) AS at FROM ("
            " SELECT t.deadline AS at FROM tasks t JOIN task_recipients r ON r.task_id = t.id"
            "  WHERE t.cancelled_at IS NULL AND t.closed_at IS NULL AND r.signed_at IS NULL AND r.reminded_at IS NULL"
            " UNION ALL SELECT follow_up_at FROM tasks WHERE follow_up_at IS NOT NULL AND follow_up_reminded_at IS NULL"
            "  AND cancelled_at IS NULL AND closed_at IS NULL) AS due").fetchone()  # fmt: skip
        return row["at"]

    def _task(self, row: Row) -> Task:
        d = dict(row)
        d["targets"], d["announced"] = tuple(json.loads(d["targets"])), tuple(json.loads(d["announced"]))
        rows = self._conn.execute("SELECT responder_id, signed_at, reminded_at, reminders FROM task_recipients "
                                  "WHERE task_id = ? ORDER BY seq", (d["id"],))  # fmt: skip
        return Task(**d, recipients=tuple(Recipient(**dict(r)) for r in rows))


Publish = Callable[[str, dict[str, Any]], None]  # (bus topic, data): the consoles' live feed


class TaskDesk:
    """Tasks as the web pages use them (create, sign, report back, steps) and the reminders (`run`)."""

    def __init__(self, *, conn: Connection, jurisdiction: Jurisdiction, outbox: Outbox, topics: Topics,
                 announcer: Announcer | None = None, publish: Publish | None = None,
                 record_on_incident: Callable[..., None] | None = None) -> None:  # fmt: skip
        """`record_on_incident(incident_id, kind, actor=, **detail)`: the incident store's timeline (a dispute that
        came from an incident writes its steps there too)."""
        self.store = TaskStore(conn)
        self.jurisdiction = jurisdiction
        self._outbox = outbox
        self._topics = topics
        self._announcer = announcer
        self._publish = publish or (lambda topic, data: None)
        self._record = record_on_incident
        self._wake = asyncio.Event()
        self.reminders_sent = 0

    # --- operators ----------------------------------------------------------------------------------------------

    def create(self, *, text: str, target_keys: Sequence[str], deadline_s: float, actor: str, kind: Kind = "instruction",
               announce: bool = True, incident_id: str | None = None, follow_up_at: float | None = None) -> Task:  # fmt: skip
        """Send a task: stored, on every recipient's task topic, announced on their channels. TaskError (or
        UnknownTarget) for what cannot be sent."""
        text = text.strip()
        if not text:
            raise TaskError("a task needs its words")
        if deadline_s <= 0:
            raise TaskError("the deadline must lie ahead")
        now = time.time()
        if follow_up_at is not None and follow_up_at <= now:
            raise TaskError("the follow-up date must lie ahead")
        recipients = resolve(self.jurisdiction, list(dict.fromkeys(target_keys)), kind)
        task = Task(new_task_id(now), kind, text[:TEXT_MAX], tuple(dict.fromkeys(target_keys)), actor, now,
                    now + deadline_s, (), incident_id=incident_id, stage=STAGES[0] if kind == "dispute" else None,
                    follow_up_at=follow_up_at, recipients=tuple(Recipient(rid, None, None, 0) for rid in recipients))  # fmt: skip
        self.store.add(task)
        task_id = task.id
        channels = self._announce(task_id, task.text, recipients) if announce else []
        if channels:
            self.store.update(task_id, announced=json.dumps(channels))
        if kind == "dispute":
            self.store.add_step(Step(0, task_id, STAGES[0], actor, now, text, follow_up_at))
        if incident_id and self._record is not None:
            self._record(incident_id, "task", actor=actor, task_id=task_id, task_kind=kind, to=recipients)
        for rid in recipients:
            self._send(task, rid, "task")
        self._changed(task_id)
        logger.info("task %s (%s) from %s to %d recipient(s), announced on %s", task_id, kind, actor, len(recipients),
                    ", ".join(channels) or "no channel")  # fmt: skip
        return self.require(task_id)

    def cancel(self, task_id: str, *, actor: str) -> Task:
        """Withdrawn: the recipients are told, no reminder follows. Cancelling again changes nothing."""
        task = self.require(task_id)
        if task.cancelled_at is not None:
            return task
        if task.closed_at is not None:
            raise Conflict(f"task {task_id} is closed")
        self.store.update(task_id, cancelled_at=time.time(), cancelled_by=actor)
        task = self.require(task_id)
        for r in task.recipients:
            self._send(task, r.responder_id, "cancelled")
        self._changed(task_id)
        return task

    def remind(self, task_id: str, responder_ids: Sequence[str] | None = None) -> list[str]:
        """Remind those not signed yet (or only `responder_ids` of them): each gets the task again on his topic,
        marked `reminder`; returns who was reminded."""
        task = self.require(task_id)
        if not task.active:
            raise Conflict(f"task {task_id} is {'cancelled' if task.cancelled_at else 'closed'}")
        unsigned = [r.responder_id for r in task.recipients if r.signed_at is None
                    and (responder_ids is None or r.responder_id in responder_ids)]  # fmt: skip
        if unsigned:
            self.store.reminded(task_id, unsigned, time.time())
            task = self.require(task_id)
            for rid in unsigned:
                self._send(task, rid, "reminder")
            self.reminders_sent += len(unsigned)
            self._changed(task_id)
        return unsigned

    # --- recipients ---------------------------------------------------------------------------------------------

    def mine(self, task_id: str, responder_id: str) -> Task:
        """The task if it was sent to `responder_id`; NotFound otherwise (nobody learns of another's tasks)."""
        task = self.store.get(task_id)
        if task is None or all(r.responder_id != responder_id for r in task.recipients):
            raise NotFound(f"no task {task_id!r} for {responder_id}")
        return task

    def sign(self, task_id: str, responder_id: str) -> Task:
        """签收: the first sign-off stands; again, nothing changes. A cancelled task cannot be signed."""
        task = self.mine(task_id, responder_id)
        if task.cancelled_at is not None:
            raise Conflict(f"task {task_id} was cancelled")
        if self.store.sign(task_id, responder_id, time.time()):
            self._changed(task_id)
        return self.require(task_id)

    def report(self, task_id: str, responder_id: str, kind: FeedbackKind, text: str, *, pinyin: str = "",
               file: str | None = None) -> Feedback:  # fmt: skip
        """反馈 (text, a photo's caption and file, a voice note's transcript and file); it signs the task off too."""
        task = self.mine(task_id, responder_id)
        if task.cancelled_at is not None:
            raise Conflict(f"task {task_id} was cancelled")
        now = time.time()
        self.store.sign(task_id, responder_id, now)
        feedback = self.store.add_feedback(task_id, responder_id, kind, text.strip()[:TEXT_MAX * 5], pinyin=pinyin,
                                           file=file, at=now)  # fmt: skip
        self._changed(task_id)
        return feedback

    def step(self, task_id: str, stage: str, *, actor: str, note: str, follow_up_at: float | None = None) -> Task:
        """A dispute's lifecycle step: the same stage again (another visit while 跟踪) or a later one, never back;
        the task's follow-up date becomes the step's (none: cleared). 回访 without a follow-up date closes it."""
        task = self.require(task_id)
        if task.kind != "dispute" or task.stage is None:
            raise Conflict(f"task {task_id} is no dispute")
        if not task.active:
            raise Conflict(f"task {task_id} is {'cancelled' if task.cancelled_at else 'closed'}")
        if stage not in STAGES:
            raise TaskError(f"stage must be one of {'、'.join(STAGES)}")
        if STAGES.index(stage) < STAGES.index(task.stage):
            raise Conflict(f"the dispute is at {task.stage} already: a step cannot go back to {stage}")
        now = time.time()
        if follow_up_at is not None and follow_up_at <= now:
            raise TaskError("the follow-up date must lie ahead")
        self.store.add_step(Step(0, task_id, stage, actor, now, note.strip()[:STEP_NOTE_MAX], follow_up_at))
        closes = stage == STAGES[-1] and follow_up_at is None
        self.store.update(task_id, stage=stage, follow_up_at=follow_up_at, follow_up_reminded_at=None,
                          closed_at=now if closes else None)  # fmt: skip
        if task.incident_id and self._record is not None:
            self._record(task.incident_id, "dispute_step", actor=actor, task_id=task_id, stage=stage, note=note,
                         follow_up_at=follow_up_at)  # fmt: skip
        self._changed(task_id)
        return self.require(task_id)

    # --- reading ------------------------------------------------------------------------------------------------

    def require(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        return task

    def view(self, task: Task, *, responder_id: str | None = None, now: float | None = None) -> dict[str, Any]:
        """The task as the pages show it: who has and has not signed (overdue: past the deadline unsigned), their
        feedback, the dispute's steps and whether its follow-up is due. `responder_id`: as his phone shows it, his
        own sign-off and feedback only."""
        now = time.time() if now is None else now
        feedback = self.store.feedback(task.id)
        people = []
        for r in task.recipients:
            if responder_id is not None and r.responder_id != responder_id:
                continue
            who = self._responder(r.responder_id)
            people.append({"id": r.responder_id, "name": who.name if who else r.responder_id,
                           "unit": who.unit if who else "", "role": who.role if who else "",
                           "channel": who.channel if who else "", "signed_at": r.signed_at,
                           "late": r.signed_at is not None and r.signed_at > task.deadline,
                           "overdue": r.signed_at is None and task.active and now > task.deadline,
                           "reminded_at": r.reminded_at, "reminders": r.reminders,
                           "feedback": [_feedback_view(f) for f in feedback if f.responder_id == r.responder_id]})  # fmt: skip
        offered = {t.key: t.label for t in targets(self.jurisdiction)}
        signed = sum(1 for r in task.recipients if r.signed_at is not None)
        view = {k: v for k, v in asdict(task).items() if k != "recipients"} | {
            "targets": [{"key": k, "label": offered.get(k, k)} for k in task.targets],
            "status": "cancelled" if task.cancelled_at else "closed" if task.closed_at else "open",
            "signed": signed, "total": len(task.recipients),
            "overdue": task.active and now > task.deadline and signed < len(task.recipients),
            "follow_up_due": task.active and task.follow_up_at is not None and now >= task.follow_up_at,
            "recipients": people,
            "steps": [asdict(s) for s in self.store.steps(task.id)] if task.kind == "dispute" else [],
        }  # fmt: skip
        if responder_id is not None:
            view["mine"] = people[0] if people else None
            del view["recipients"]
        return view

    # --- reminders ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Remind at each deadline (and dispute follow-up date) until cancelled. What is due lives in the database,
        so after a restart whoever fell due meanwhile is reminded at once. A failure is logged; the reminders go on."""
        while True:
            self._wake.clear()
            try:
                self.remind_due()
                due = self.store.next_due()
            except Exception:
                logger.exception("task reminders failed; trying again in a minute")
                due = time.time() + 60
            with contextlib.suppress(TimeoutError):  # the next one due, or sooner when a task changes
                await asyncio.wait_for(self._wake.wait(), None if due is None else max(0.0, due - time.time()) + 0.01)

    def remind_due(self, now: float | None = None) -> int:
        """Remind everyone whose deadline has passed unsigned (once), and the officer of each dispute whose
        follow-up date has come; returns how many reminders went out."""
        now = time.time() if now is None else now
        sent = 0
        for task_id, unsigned in self.store.overdue(now):
            reminded = self.remind(task_id, unsigned)
            sent += len(reminded)
            logger.info("task %s: deadline passed, %d recipient(s) not signed reminded", task_id, len(reminded))
        for task_id in self.store.follow_ups_due(now):
            self.store.update(task_id, follow_up_reminded_at=now)
            task = self.require(task_id)
            for r in task.recipients:
                self._send(task, r.responder_id, "follow_up")
            sent += len(task.recipients)
            self._changed(task_id)
            logger.info("task %s: follow-up date reached (%s), its officer reminded", task_id, task.stage)
        return sent

    # --- helpers ------------------------------------------------------------------------------------------------

    def _responder(self, responder_id: str) -> Responder | None:
        try:
            return self.jurisdiction.responder(responder_id)
        except KeyError:  # left the registry since
            return None

    def _send(self, task: Task, responder_id: str, kind: str) -> None:
        """On the recipient's own task topic, through the outbox (kept until the broker has it)."""
        payload = self.view(task, responder_id=responder_id) | {"kind": kind, "issued_at": time.time()}
        self._outbox.put(self._topics.task(responder_id), payload)

    def _changed(self, task_id: str) -> None:
        self._wake.set()
        self._publish("task", self.view(self.require(task_id)))

    def _announce(self, task_id: str, text: str, recipients: Sequence[str]) -> list[str]:
        """The task spoken on each recipient's channel; returns the channels it was queued for."""
        if self._announcer is None:
            return []
        queued = []
        for channel, words in announcements(self.jurisdiction, recipients, text).items():
            if self._announcer.announce(channel, task_id, words) is not None:
                queued.append(channel)
        return queued


def _feedback_view(f: Feedback) -> dict[str, Any]:
    return {"id": f.id, "kind": f.kind, "text": f.text, "pinyin": f.pinyin, "has_file": f.file is not None,
            "created_at": f.created_at}  # fmt: skip


# The operator may have written the call himself (各单位注意：...): the announcement says it once.
_CALLED = re.compile(r"^\s*(各单位|各位|全体人员|全体)请?注意[：:，,。\s]*")


def announcements(jurisdiction: Jurisdiction, recipients: Sequence[str], text: str) -> dict[str, str]:
    """channel -> 「<units>请注意，<the task>，收到请签收」: units called by name as the dispatch announcements call
    them, or 各单位 when every unit on the channel (or more than a few) is meant."""
    wanted = set(recipients)
    said = _CALLED.sub("", text).strip().rstrip("。.!！")
    out: dict[str, str] = {}
    for channel in dict.fromkeys(jurisdiction.responder(rid).channel for rid in recipients):
        listening = [r for r in jurisdiction.responders if r.channel == channel]
        units = list(dict.fromkeys(spoken_unit(r) for r in listening if r.id in wanted))
        everyone = all(r.id in wanted for r in listening) or len(units) > MAX_UNITS_CALLED
        called = "各单位" if everyone else "、".join(units)
        out[channel] = f"{called}{ATTENTION}，{said}，收到请签收"
    return out
