"""Messages to publish, persisted in SQLite first, marked delivered only when the broker has acknowledged them.

A broker outage (or a restart of jingbao itself) therefore loses nothing: whatever is undelivered is published,
oldest first, once the link is back. Delivery is at-least-once; every payload carries its `outbox_id`, so a
receiver can drop the rare duplicate (a PUBACK lost with the connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge.db import migrate

logger = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        payload TEXT NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        created_at REAL NOT NULL,
        delivered_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;
    """
]

Publish = Callable[..., Awaitable[None]]  # (topic, payload: bytes, *, qos, retain) -> None once acknowledged


@dataclass(slots=True, frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    def __init__(
        self,
        conn: sqlite3.Connection,
        publish: Publish,
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
        retry_delay: float = 0.5,
    ) -> None:
        """`publish` returns once the broker has acknowledged; `ready` (e.g. MqttLink.wait_connected) returns when
        publishing can work, so a long outage costs one wait instead of a retry every `retry_delay`."""
        migrate(conn, "dispatch.outbox", MIGRATIONS)
        self._conn = conn
        self._publish = publish
        self._ready = ready
        self._retry_delay = retry_delay
        self._wake = asyncio.Event()
        self.delivered = 0
        self.failed_attempts = 0

    def put(self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False) -> int:
        """Persist a message (committed before this returns) and wake the sender; returns its outbox id."""
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES (?, '', ?, ?, ?)",
                (topic, qos, int(retain), time.time()),
            )
            outbox_id = int(cur.lastrowid or 0)
            body = json.dumps({**payload, "outbox_id": outbox_id}, ensure_ascii=False)
            self._conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (body, outbox_id))
        self._wake.set()
        return outbox_id

    def pending(self, limit: int = 100) -> list[OutboxMessage]:
        rows = self._conn.execute(
            "SELECT id, topic, payload, qos, retain FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [OutboxMessage(r["id"], r["topic"], r["payload"].encode(), r["qos"], bool(r["retain"])) for r in rows]

    def count_pending(self) -> int:
        """Messages not yet delivered to the broker (alerts, updates, events)."""
        return self._conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0]

    async def run(self) -> None:
        """Deliver pending messages in order until cancelled; on a failure wait and try the same message again."""
        while True:
            self._wake.clear()
            batch = self.pending()
            for message in batch:
                if self._ready is not None:
                    await self._ready()
                if not await self._send(message):
                    await asyncio.sleep(self._retry_delay)
                    break
            else:
                if not batch:
                    await self._wake.wait()

    async def _send(self, message: OutboxMessage) -> bool:
        with self._conn:
            self._conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (message.id,))
        try:
            await self._publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        except Exception as e:  # aiomqtt.MqttError mostly; whatever it is, the message stays pending
            self.failed_attempts += 1
            logger.debug("outbox %d to %s not delivered yet: %s", message.id, message.topic, e)
            return False
        with self._conn:
            self._conn.execute("UPDATE outbox SET delivered_at = ? WHERE id = ?", (time.time(), message.id))
        self.delivered += 1
        return True
