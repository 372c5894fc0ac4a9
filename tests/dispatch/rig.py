"""A dispatcher wired to a real mosquitto and a real SQLite file, and responders' phones as real MQTT clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from asr.transcript import Transcript
from bridge.bus import EventBus
from bridge.config import Config
from bridge.events import Utterance
from dispatch.dispatcher import Dispatcher, DispatchService
from dispatch.mqtt import MqttLink
from dispatch.outbox import Outbox
from dispatch.topics import Topics
from tests.support.broker import Mosquitto

REPO = Path(__file__).resolve().parents[2]
JURISDICTION_FILE = REPO / "config" / "jurisdiction.yaml"


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


@dataclass
class Rig:
    dispatcher: Dispatcher
    link: MqttLink
    outbox: Outbox
    bus: EventBus
    service: DispatchService


@contextlib.asynccontextmanager
async def running_dispatcher(
    broker: Mosquitto, data_dir: Path, *, ack_timeout: float = 60.0, transmit: asyncio.Queue | None = None,
    confirm_timeout: float = 120.0, guards: int = 1, dispatch: dict[str, Any] | None = None,
    broker_section: dict[str, Any] | None = None,
) -> AsyncIterator[Rig]:  # fmt: skip
    """The real DispatchService (real classification, location and ranking) on the test broker.

    One guard is alerted first (`guards`) and no police (so escalation goes guard to guard); spoken announcements
    only when a `transmit` queue is given; `dispatch`: more of the config's dispatch section; `broker_section`: the
    config's broker section (by default the service's login on the test broker).
    """
    config = Config.model_validate(
        {
            "jurisdiction": JURISDICTION_FILE,
            "channels": [{"id": "ch-market", "name": "市场保安", "source": {"type": "pipe"}}],
            "storage": {"data_dir": data_dir},
            "broker": broker_section or broker.service_config(),
            "dispatch": (dispatch or {}) | {
                "responders": {"guards": guards, "police": 0},
                "alerts": {
                    "ack_timeout_s": ack_timeout,
                    "announce": transmit is not None,
                    "confirm_timeout_s": confirm_timeout,
                },
            },
        }
    )
    bus = EventBus()
    service = DispatchService(config, bus=bus, transmit=transmit)
    task = asyncio.create_task(service.run())
    try:
        assert service.link is not None
        await asyncio.wait_for(service.link.wait_connected(), 5)
        yield Rig(service.dispatcher, service.link, service.outbox, bus, service)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Phone:
    """A responder's phone: a persistent MQTT session (same client id every time) subscribed to its alerts, logged in
    with the responder's own account ("console": the read-only console account)."""

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
            self.broker.host, self.broker.port, identifier=f"phone-{self.responder_id}", clean_session=False,
            **self.broker.login(self.responder_id),
        ) as client:
            self._client = client
            if subscribe:
                await client.subscribe(Topics().alert(self.responder_id), qos=1)
            self._ready.set()
            async for message in client.messages:
                self.received.append(json.loads(message.payload))

    @property
    def connected(self) -> bool:
        """Still in its session (the broker has not dropped it)."""
        return self._task is not None and not self._task.done()

    async def subscribe(self, topic: str) -> None:
        assert self._client is not None
        await self._client.subscribe(topic, qos=1)

    async def publish(self, topic: str, payload: bytes | dict[str, Any], *, retain: bool = False) -> None:
        assert self._client is not None
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self._client.publish(topic, body, qos=1, retain=retain)

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
