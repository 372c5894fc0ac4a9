"""A dispatcher wired to a real mosquitto and a real SQLite file, and responders' phones as real MQTT clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from asr.transcript import Transcript
from bridge.backoff import Backoff
from bridge.bus import EventBus
from bridge.db import connect
from bridge.events import Utterance
from dispatch.alerts import Candidate
from dispatch.dispatcher import Dispatcher, Rank
from dispatch.gazetteer import Jurisdiction, Place, distance_m, load_jurisdiction
from dispatch.incidents import IncidentStore
from dispatch.location import extract_location
from dispatch.mqtt import MqttLink
from dispatch.outbox import Outbox
from dispatch.positions import Position
from dispatch.topics import Topics
from tests.support.broker import Mosquitto

REPO = Path(__file__).resolve().parents[2]
JURISDICTION = load_jurisdiction(REPO / "config" / "jurisdiction.yaml")
FAST_RECONNECT = Backoff(initial=0.1, maximum=0.5)


async def eventually(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Wait (polling every 20 ms) until condition() is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def utterance(uid: str = "20260101T080000000-ab12", channel: str = "ch-market") -> Utterance:
    now = time.time()
    return Utterance(id=uid, channel=channel, start=now - 3, end=now, pcm=b"")


def say(text: str) -> Transcript:
    return Transcript(text=text, pinyin="", engine="test")


def keyword_classify(transcript: Transcript) -> tuple[str, str]:
    """Stand-in for dispatch.classify until it is wired here: enough words for these tests."""
    for word, kind, priority in (("打架", "fight", "high"), ("纠纷", "dispute", "medium"), ("偷", "theft", "medium")):
        if word in transcript.text:
            return kind, priority
    return "none", "low"


def post_ranking(jurisdiction: Jurisdiction, first_guards: int = 1) -> Rank:
    """Stand-in for dispatch.responders: guards by distance from their post; the first k now, the rest in reserve."""

    def rank(place: Place, incident_type: str) -> tuple[list[Candidate], list[Candidate]]:
        guards = sorted(
            (Candidate(r.id, distance_m(place.lat, place.lon, post.lat, post.lon), r.role)
             for r in jurisdiction.responders if r.role == "guard" for post in [jurisdiction.place(r.post)]),
            key=lambda c: c.distance_m or 0.0,
        )  # fmt: skip
        return guards[:first_guards], guards[first_guards:]

    return rank


@dataclass
class Rig:
    dispatcher: Dispatcher
    link: MqttLink
    outbox: Outbox
    bus: EventBus
    positions: list[Position] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running_dispatcher(broker: Mosquitto, db: Path, *, ack_timeout: float = 60.0) -> AsyncIterator[Rig]:
    conn = connect(db)
    topics = Topics()
    positions: list[Position] = []
    bus = EventBus()
    dispatcher_box: list[Dispatcher] = []

    async def on_message(topic: str, payload: bytes) -> None:
        await dispatcher_box[0].on_message(topic, payload)

    link = MqttLink(broker.host, broker.port, client_id="jingbao-test", topics=topics, handler=on_message, backoff=FAST_RECONNECT)
    outbox = Outbox(conn, link.publish, ready=link.wait_connected, retry_delay=0.1)
    dispatcher = Dispatcher(
        jurisdiction=JURISDICTION,
        store=IncidentStore(conn),
        outbox=outbox,
        classify=keyword_classify,
        locate=lambda t: extract_location(t, JURISDICTION),
        rank=post_ranking(JURISDICTION),
        on_position=positions.append,
        topics=topics,
        bus=bus,
        ack_timeout=ack_timeout,
    )
    dispatcher_box.append(dispatcher)
    tasks = [asyncio.create_task(link.run()), asyncio.create_task(outbox.run())]
    try:
        await asyncio.wait_for(link.wait_connected(), 5)
        yield Rig(dispatcher, link, outbox, bus, positions)
    finally:
        await dispatcher.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.close()


class Phone:
    """A responder's phone: a persistent MQTT session (same client id every time) subscribed to its alerts."""

    def __init__(self, broker: Mosquitto, responder_id: str) -> None:
        self.broker = broker
        self.responder_id = responder_id
        self.received: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()

    async def connect(self, *, subscribe: bool = True) -> None:
        self._ready.clear()
        self._task = asyncio.create_task(self._listen(subscribe))
        await asyncio.wait_for(self._ready.wait(), 5)

    async def _listen(self, subscribe: bool) -> None:
        async with aiomqtt.Client(
            self.broker.host, self.broker.port, identifier=f"phone-{self.responder_id}", clean_session=False
        ) as client:
            self._client = client
            if subscribe:
                await client.subscribe(Topics().alert(self.responder_id), qos=1)
            self._ready.set()
            async for message in client.messages:
                self.received.append(json.loads(message.payload))

    async def publish(self, topic: str, payload: bytes | dict[str, Any]) -> None:
        assert self._client is not None
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self._client.publish(topic, body, qos=1)

    async def disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self._client = None


@contextlib.asynccontextmanager
async def phones(broker: Mosquitto, responder_ids: Sequence[str]) -> AsyncIterator[dict[str, Phone]]:
    devices = {rid: Phone(broker, rid) for rid in responder_ids}
    try:
        for phone in devices.values():
            await phone.connect()
        yield devices
    finally:
        for phone in devices.values():
            await phone.disconnect()
