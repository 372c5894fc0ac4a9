"""Tasks for `make run`'s demo, so that the console's 任务 panel and the phone page's 我的任务 have something in them.

DEMO DATA, for the demo only: scripts/run-demo.sh runs it before the service, with config/demo.yaml; `jingbao run`
never does, and it refuses any jurisdiction but the demo's. It sends, once (nothing when the demo already has tasks
of its own), an instruction to everyone and a dispute to 公园北路社区's chief (the demo officer's account speaks for
him), both by `demo-tasks`, the way an operator sends them (dispatch/tasks.py): their messages wait in the outbox and
reach the phones when the service starts. Nothing is said on the air (the service is not running yet).

Usage: python -m dispatch.demo_tasks --config config/demo.yaml
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time

from bridge.config import load_config
from bridge.db import connect
from dispatch.demo_history import DEMO_JURISDICTION
from dispatch.gazetteer import Jurisdiction, load_jurisdiction
from dispatch.outbox import Outbox
from dispatch.tasks import TaskDesk
from dispatch.topics import Topics

ACTOR = "demo-tasks"
DAY_S = 86400.0


async def _not_now(topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
    raise ConnectionError("the demo's tasks are sent by the service when it starts")


def seed(conn: sqlite3.Connection, jurisdiction: Jurisdiction, prefix: str = "jingbao") -> int:
    """Send the demo's tasks unless it has them already; returns how many were sent."""
    desk = TaskDesk(conn=conn, jurisdiction=jurisdiction, outbox=Outbox(conn, _not_now), topics=Topics(prefix))
    if any(t.created_by == ACTOR for t in desk.store.list(limit=1000)):
        return 0
    desk.create(text="各单位注意：今晚八点开始夜间巡逻，请各单位保安按时到岗（演示）", target_keys=["all"],
                deadline_s=4 * 3600, actor=ACTOR, announce=False)  # fmt: skip
    desk.create(text="公园北路夜市两家摊主因占道经营发生纠纷，请上门调处（演示）", target_keys=["grid:gongyuanbeilu-sq"],
                deadline_s=2 * 3600, actor=ACTOR, kind="dispute", announce=False,
                follow_up_at=time.time() + DAY_S)  # fmt: skip
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/demo.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if config.jurisdiction.resolve() != DEMO_JURISDICTION.resolve():
        print(f"demo tasks are for the demo's jurisdiction ({DEMO_JURISDICTION}) only", file=sys.stderr)
        return 2
    sent = seed(connect(config.storage.database), load_jurisdiction(config.jurisdiction), config.broker.topic_prefix)
    print(f"demo tasks: {sent} sent" if sent else "demo tasks: already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
