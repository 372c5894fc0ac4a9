"""The task store's SQL (dispatch/tasks.py) on a real SQLite database (a box) and a real PostgreSQL (central): a task
and its recipients in the order they were chosen, feedback numbered by the database, the first sign-off standing,
and what falls due (deadlines, follow-ups) in order. The lifecycle over HTTP is tests/web/test_tasks_api.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.db import Connection, connect, migrate
from dispatch.tasks import MIGRATIONS, Recipient, Step, Task, TaskStore

NOW = 1_780_000_000.0


@pytest.fixture
def store(state_db: Connection) -> TaskStore:
    return TaskStore(state_db)


def task(store: TaskStore, task_id: str, recipients: list[str], *, deadline: float = NOW + 600, **fields: object) -> Task:
    made = Task(task_id, "instruction", "到东门集合", ("all",), "op", NOW, deadline, (), **fields,
                recipients=tuple(Recipient(rid, None, None, 0) for rid in recipients))  # fmt: skip
    store.add(made)
    return made


def test_a_task_keeps_its_recipients_in_the_order_they_were_chosen(store: TaskStore) -> None:
    # not alphabetical: registry order, or a dispute's chief first
    task(store, "TASK-1", ["p-xu-zhen", "p-patrol-2", "g-huaniao"], incident_id="INC-1")
    got = store.get("TASK-1")
    assert got is not None and got.incident_id == "INC-1" and got.targets == ("all",) and got.deadline == NOW + 600
    assert [r.responder_id for r in got.recipients] == ["p-xu-zhen", "p-patrol-2", "g-huaniao"]
    assert got.recipients[0] == Recipient("p-xu-zhen", None, None, 0)
    assert store.get("TASK-none") is None


def test_tasks_are_listed_newest_first_and_by_recipient(store: TaskStore) -> None:
    task(store, "TASK-old", ["g-huaniao"])
    store.add(Task("TASK-new", "instruction", "巡查", ("all",), "op", NOW + 5, NOW + 600, (),
                   recipients=(Recipient("g-yeshi", None, None, 0),)))  # fmt: skip
    assert [t.id for t in store.list()] == ["TASK-new", "TASK-old"]
    assert [t.id for t in store.list(responder_id="g-huaniao")] == ["TASK-old"]
    assert store.list(limit=1)[0].id == "TASK-new"


def test_feedback_is_numbered_by_the_database_and_read_back_by_its_number(store: TaskStore) -> None:
    task(store, "TASK-1", ["g-huaniao", "g-yeshi"])
    task(store, "TASK-2", ["g-huaniao"])
    first = store.add_feedback("TASK-1", "g-huaniao", "text", "已到", at=NOW + 1)
    other = store.add_feedback("TASK-2", "g-huaniao", "photo", "", file="TASK-2/1.jpg", at=NOW + 2)
    second = store.add_feedback("TASK-1", "g-yeshi", "voice", "马上到", pinyin="ma shang dao", file="a.wav", at=NOW + 3)
    assert 0 < first.id < other.id < second.id
    assert store.feedback("TASK-1") == [first, second]
    assert store.feedback_item("TASK-1", second.id) == second
    assert store.feedback_item("TASK-1", other.id) is None  # another task's


def test_the_first_sign_off_stands_and_reminders_are_counted(store: TaskStore) -> None:
    task(store, "TASK-1", ["g-huaniao", "g-yeshi"])
    assert store.sign("TASK-1", "g-huaniao", NOW + 10)
    assert not store.sign("TASK-1", "g-huaniao", NOW + 20)
    assert not store.sign("TASK-1", "g-nobody", NOW + 20)
    store.reminded("TASK-1", ["g-yeshi"], NOW + 30)
    store.reminded("TASK-1", ["g-yeshi"], NOW + 40)
    got = store.get("TASK-1")
    assert got is not None
    assert got.recipients == (Recipient("g-huaniao", NOW + 10, None, 0), Recipient("g-yeshi", None, NOW + 40, 2))


def test_overdue_recipients_come_by_deadline_then_in_their_tasks_order(store: TaskStore) -> None:
    task(store, "TASK-late", ["g-yeshi", "g-huaniao", "g-piju"], deadline=NOW + 20)
    task(store, "TASK-early", ["p-patrol-2", "g-gaoqiao"], deadline=NOW + 10)
    task(store, "TASK-ahead", ["g-huaniao"], deadline=NOW + 1000)
    task(store, "TASK-cancelled", ["g-huaniao"], deadline=NOW, cancelled_at=NOW, cancelled_by="op")
    store.sign("TASK-late", "g-huaniao", NOW + 1)
    store.reminded("TASK-early", ["g-gaoqiao"], NOW + 11)
    assert store.next_due() == NOW + 10
    assert store.overdue(NOW) == []
    assert store.overdue(NOW + 30) == [("TASK-early", ["p-patrol-2"]), ("TASK-late", ["g-yeshi", "g-piju"])]
    store.reminded("TASK-early", ["p-patrol-2"], NOW + 31)
    store.reminded("TASK-late", ["g-yeshi", "g-piju"], NOW + 31)
    assert store.overdue(NOW + 30) == [] and store.next_due() == NOW + 1000


def test_follow_ups_fall_due_once_and_count_among_whats_due_next(store: TaskStore) -> None:
    for task_id, follow_up in (("TASK-d1", NOW + 50), ("TASK-d2", NOW + 40), ("TASK-d3", NOW + 5000)):
        store.add(Task(task_id, "dispute", "摊位纠纷", ("grid:g",), "op", NOW, NOW + 10, (), stage="发现",
                       follow_up_at=follow_up, recipients=(Recipient("p-xu-zhen", None, None, 0),)))  # fmt: skip
        store.sign(task_id, "p-xu-zhen", NOW + 1)
    assert store.next_due() == NOW + 40  # everyone signed: only the follow-ups are due
    assert store.follow_ups_due(NOW + 60) == ["TASK-d2", "TASK-d1"]
    store.update("TASK-d2", follow_up_reminded_at=NOW + 60)
    store.update("TASK-d1", closed_at=NOW + 60)
    assert store.follow_ups_due(NOW + 60) == [] and store.next_due() == NOW + 5000
    store.update("TASK-d3", follow_up_at=None)
    assert store.next_due() is None


def test_a_disputes_steps_are_kept_in_order(store: TaskStore) -> None:
    store.add(Task("TASK-d", "dispute", "摊位纠纷", ("grid:g",), "op", NOW, NOW + 10, (), stage="发现",
                   recipients=(Recipient("p-xu-zhen", None, None, 0),)))  # fmt: skip
    store.add_step(Step(0, "TASK-d", "发现", "op", NOW, "摊位纠纷", None))
    store.add_step(Step(0, "TASK-d", "调处", "chief-xu", NOW + 5, "双方同意", NOW + 86400))
    steps = store.steps("TASK-d")
    assert [(s.stage, s.actor, s.follow_up_at) for s in steps] == [("发现", "op", None), ("调处", "chief-xu", NOW + 86400)]
    assert 0 < steps[0].id < steps[1].id


def test_an_older_sqlite_database_keeps_its_recipients_order(tmp_path: Path) -> None:
    """A box's database from before the recipients' order was a column: its rows are numbered as they were stored."""
    conn = connect(tmp_path / "state.db")
    migrate(conn, "dispatch.tasks", MIGRATIONS[:1])
    with conn:
        for task_id in ("TASK-a", "TASK-b"):
            conn.execute("INSERT INTO tasks (id, kind, text, targets, created_by, created_at, deadline, announced) "
                         "VALUES (?, 'instruction', 't', '[]', 'op', ?, ?, '[]')", (task_id, NOW, NOW + 10))  # fmt: skip
        for task_id, rid in (("TASK-a", "p-xu-zhen"), ("TASK-b", "g-yeshi"), ("TASK-a", "g-huaniao"), ("TASK-a", "a-first")):
            conn.execute("INSERT INTO task_recipients (task_id, responder_id) VALUES (?, ?)", (task_id, rid))
    store = TaskStore(conn)
    a, b = store.get("TASK-a"), store.get("TASK-b")
    assert a is not None and [r.responder_id for r in a.recipients] == ["p-xu-zhen", "g-huaniao", "a-first"]
    assert b is not None and [r.responder_id for r in b.recipients] == ["g-yeshi"]
    assert [r["seq"] for r in conn.execute("SELECT seq FROM task_recipients WHERE task_id = 'TASK-a' ORDER BY seq")] == [0, 1, 2]
