"""The demo's tasks (dispatch/demo_tasks.py): sent once, as an operator sends them (their messages waiting in the
outbox for the service), for the demo jurisdiction only."""

from __future__ import annotations

from pathlib import Path

import yaml

from bridge.db import connect
from dispatch import demo_tasks
from dispatch.gazetteer import load_jurisdiction
from dispatch.outbox import Outbox
from dispatch.tasks import TaskStore

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_gets_its_tasks_once(tmp_path: Path) -> None:
    conn = connect(tmp_path / "jingbao.db")
    jurisdiction = load_jurisdiction(REPO / "config" / "jurisdiction.yaml")
    assert demo_tasks.seed(conn, jurisdiction) == 2
    assert demo_tasks.seed(conn, jurisdiction) == 0  # make run again: nothing more
    instruction, dispute = sorted(TaskStore(conn).list(), key=lambda t: t.kind != "instruction")
    assert len(instruction.recipients) == len(jurisdiction.responders) and instruction.announced == ()
    assert [r.responder_id for r in dispute.recipients] == ["p-zhan-zhengyou"]  # the demo officer's chief
    assert (dispute.stage, dispute.follow_up_at is not None) == ("发现", True)
    waiting = Outbox(conn, demo_tasks._not_now).pending(1000)
    assert len(waiting) == len(jurisdiction.responders) + 1 and all("/tasks/" in m.topic for m in waiting)


def test_demo_tasks_refuse_another_jurisdiction(tmp_path: Path) -> None:
    other = tmp_path / "site.yaml"
    other.write_text((REPO / "config" / "jurisdiction.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"jurisdiction": str(other), "storage": {"data_dir": str(tmp_path / "data")},
                                      "channels": [{"id": "ch-market", "name": "市场保安", "source": {"type": "pipe"}}]}),
                      encoding="utf-8")  # fmt: skip
    assert demo_tasks.main(["--config", str(config)]) == 2
    assert not (tmp_path / "data" / "jingbao.db").exists()
