"""The outbox on a real broker and a real database (a box's SQLite, central's PostgreSQL): nothing is lost to an outage
or to a restart of jingbao."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import dispatch.mqtt as mqtt_module
from bridge.db import Connection, connect
from bridge.db_postgres import PostgresConnection
from dispatch.mqtt import MqttLink
from dispatch.outbox import Outbox
from dispatch.topics import Topics
from tests.dispatch.rig import Phone, eventually
from tests.support.broker import Mosquitto, broker_fixture  # noqa: F401  (the `broker` fixture)
from tests.support.postgres import PostgresCluster


async def ignore(topic: str, payload: bytes, *, retained: bool = False) -> None:
    return None


@contextlib.asynccontextmanager
async def sending(broker: Mosquitto, conn: Connection, *, start: bool = True) -> AsyncIterator[Outbox]:
    link = MqttLink(broker.host, broker.port, client_id="outbox-test", topics=Topics(), handler=ignore,
                    **broker.login("jingbao"))  # fmt: skip
    outbox = Outbox(conn, link.publish, ready=link.wait_connected, retry_delay=0.1)
    tasks = [asyncio.create_task(link.run()), asyncio.create_task(outbox.run())] if start else []
    try:
        yield outbox
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_each_message_is_numbered_in_the_order_put_and_its_payload_carries_its_number(state_db: Connection) -> None:
    sent: list[tuple[str, dict, int, bool]] = []

    async def publish(topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        sent.append((topic, json.loads(payload), qos, retain))

    outbox = Outbox(state_db, publish)
    ids = [outbox.put("t/alert", {"n": 0}), outbox.put("t/state", {"n": 1}, qos=0, retain=True)]
    assert ids == sorted(ids) and len(set(ids)) == 2 and outbox.count_pending() == 2
    assert [(m.id, m.topic, json.loads(m.payload), m.qos, m.retain) for m in outbox.pending()] == [
        (ids[0], "t/alert", {"n": 0, "outbox_id": ids[0]}, 1, False),
        (ids[1], "t/state", {"n": 1, "outbox_id": ids[1]}, 0, True),
    ]
    running = asyncio.create_task(outbox.run())
    try:
        await eventually(lambda: outbox.count_pending() == 0, what="both delivered")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert [(topic, payload["outbox_id"], qos, retain) for topic, payload, qos, retain in sent] == [
        ("t/alert", ids[0], 1, False), ("t/state", ids[1], 0, True)]  # fmt: skip
    assert outbox.delivered == 2 and outbox.pending() == []


async def test_the_sender_outlives_its_store_failing_and_sends_what_waits_once_it_answers(
    postgres: PostgresCluster, pg_url: str
) -> None:  # fmt: skip
    """Central's outbox is in PostgreSQL: PostgreSQL restarted (every connection dropped) while a message waits and
    another is put fails a statement of the sender's, which logs it and tries again, rather than ending (and central
    with it)."""
    sent: list[int] = []

    async def publish(topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        sent.append(json.loads(payload)["outbox_id"])

    conn = PostgresConnection(pg_url)
    outbox = Outbox(conn, publish)
    first = outbox.put("t/alert", {"n": 0})
    postgres.pause()  # down: the sender's next statement fails...
    running = asyncio.create_task(outbox.run())
    try:
        await eventually(lambda: outbox.store_failures > 0, what="the sender failing on its store")
        postgres.resume()  # ...and back: what waits is sent
        await eventually(lambda: sent == [first], what="the waiting message sent", timeout=15)
        second = outbox.put("t/alert", {"n": 1})
        await eventually(lambda: sent == [first, second], what="a new one sent")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        conn.close()


async def test_messages_wait_out_an_outage_in_order(broker: Mosquitto, state_db: Connection) -> None:
    phone = Phone(broker, "g-piju")
    await phone.connect()
    broker.stop()
    async with sending(broker, state_db) as outbox:
        ids = [outbox.put(Topics().alert("g-piju"), {"n": n}) for n in range(5)]
        await asyncio.sleep(0.3)
        assert [m.id for m in outbox.pending()] == ids and outbox.delivered == 0
        broker.start()
        await eventually(lambda: not outbox.pending(), timeout=10, what="delivery after the outage")
        assert outbox.delivered == 5
    await phone.disconnect()
    await phone.connect(subscribe=False)
    received = await eventually(lambda: len(phone.received) == 5 and phone.received, what="five messages")
    assert [m["n"] for m in received] == [0, 1, 2, 3, 4]
    assert [m["outbox_id"] for m in received] == ids  # receivers can drop a duplicate by this id
    await phone.disconnect()


async def test_undelivered_messages_survive_a_restart_of_jingbao(broker: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with contextlib.closing(connect(db)) as conn:
        async with sending(broker, conn, start=False) as outbox:  # jingbao accepted an alert, then died before sending it
            outbox.put(Topics().alert("g-piju"), {"incident_id": "INC-1"})
    phone = Phone(broker, "g-piju")
    await phone.connect()
    with contextlib.closing(connect(db)) as conn:
        async with sending(broker, conn) as outbox:
            await eventually(lambda: not outbox.pending(), what="delivery by the next run")
            [alert] = await eventually(lambda: phone.received, what="the alert")
            assert alert["incident_id"] == "INC-1"
    await phone.disconnect()
    with connect(db) as conn:
        row = conn.execute("SELECT delivered_at, attempts, payload FROM outbox").fetchone()
    assert row["delivered_at"] is not None and row["attempts"] == 1 and json.loads(row["payload"])["incident_id"] == "INC-1"


async def test_retained_state_is_published_retained(broker: Mosquitto, state_db: Connection) -> None:
    async with sending(broker, state_db) as outbox:
        outbox.put(Topics().incident("INC-9"), {"id": "INC-9", "status": "dispatched"}, retain=True)
        await eventually(lambda: not outbox.pending(), what="delivery")
    console = Phone(broker, "console")
    await console.connect(subscribe=False)
    await console.subscribe(Topics().incident("INC-9"))
    [state] = await eventually(lambda: console.received, what="retained state for a late subscriber")
    assert state["status"] == "dispatched"
    await console.disconnect()


async def test_a_link_down_longer_than_a_reconnect_is_a_fault_until_it_is_back(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the box's and central's /healthz name: alerts cannot reach the phones (they wait in the outbox)."""
    monkeypatch.setattr(mqtt_module, "LINK_FAULT_AFTER_S", 0.3)
    broker.stop()
    link = MqttLink(broker.host, broker.port, client_id="fault-test", topics=Topics(), handler=ignore,
                    **broker.login("jingbao"))  # fmt: skip
    running = asyncio.create_task(link.run())
    try:
        await eventually(lambda: link.fault() is not None, timeout=5, what="the fault while never connected")
        fault = link.fault()
        assert fault is not None and fault["kind"] == "alerts_broker_disconnected"
        assert f"{broker.host}:{broker.port}" in fault["message"] and fault["since"] <= time.time() - 0.3
        broker.start()
        await eventually(lambda: link.connected, timeout=15, what="connected")
        assert link.fault() is None
        lost = time.time()
        broker.stop()
        await eventually(lambda: not link.connected, timeout=5, what="the loss seen")
        assert link.fault(now=link.down_since) is None  # only reconnecting: no fault yet
        await eventually(lambda: link.fault() is not None, timeout=5, what="the fault after the loss")
        assert (link.fault() or {})["since"] >= lost
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        broker.start()
