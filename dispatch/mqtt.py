"""The service's one MQTT connection: connect (and reconnect with back-off), announce availability, receive, publish.

The link knows nothing about alerts or incidents: incoming messages go to a handler as (topic, payload, retained=)
and publishing is `await link.publish(...)`, which returns once the broker has acknowledged a QoS 1 message (PUBACK)
and raises `aiomqtt.MqttError` when it cannot (not connected, connection lost, timed out). `retained` marks a message
the broker kept from before this subscription (sent again at every connect), not one published just now.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
from aiomqtt.exceptions import MqttConnectError  # not re-exported by the package

from bridge.backoff import Backoff
from bridge.logsafe import clip
from dispatch.topics import Topics

logger = logging.getLogger(__name__)


class MessageHandler(Protocol):
    async def __call__(self, topic: str, payload: bytes, *, retained: bool = False) -> None: ...


def tls_context(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """Verify the broker against `ca_file` (its certificate must name the host we connect to); present a client
    certificate when one is given."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


# A link down this long is a fault on /healthz; a reconnect (the broker restarted, a network blip) is quicker
LINK_FAULT_AFTER_S = 5.0

class MqttLink:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        topics: Topics,
        handler: MessageHandler,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        backoff: Backoff | None = None,
        publish_timeout: float = 5.0,
    ) -> None:
        self.topics = topics
        self.address = f"{host}:{port}"
        self._handler = handler
        self._backoff = backoff or Backoff()
        self._publish_timeout = publish_timeout
        # A persistent session (clean_session False): acks sent while we are away are queued by the broker.
        self._client = aiomqtt.Client(
            host,
            port,
            identifier=client_id,
            username=username,
            password=password,
            tls_context=tls,
            clean_session=False,
            will=aiomqtt.Will(topics.available, b"offline", qos=1, retain=True),
            timeout=publish_timeout,
            keepalive=10,
        )
        self._connected = asyncio.Event()
        self.connects = 0  # successful connections so far (1 + reconnects)
        self.down_since: float | None = time.time()  # not connected since (None while connected)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def fault(self, now: float | None = None) -> dict[str, Any] | None:
        """The fault /healthz names (a box's and central's) while the link has been down over LINK_FAULT_AFTER_S:
        alerts, updates and retractions wait in the outbox, and no phone gets them. None while it is up, or only
        (re)connecting."""
        since = self.down_since
        if since is None or (now or time.time()) - since < LINK_FAULT_AFTER_S:
            return None
        return {"component": "alerts", "channel": None, "kind": "alerts_broker_disconnected",
                "message": f"alerts cannot reach the phones: not connected to the broker at {self.address}",
                "since": since}  # fmt: skip

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def run(self) -> None:
        """Stay connected until cancelled; every message received goes to the handler (which must not raise)."""
        while True:
            try:
                async with self._client as client:
                    self._backoff.reset()
                    self.connects += 1
                    await client.publish(self.topics.available, b"online", qos=1, retain=True)
                    for topic in self.topics.subscriptions:
                        await client.subscribe(topic, qos=1)
                    logger.info("MQTT connected to %s", self.address)
                    self._connected.set()
                    self.down_since = None
                    async for message in client.messages:
                        await self._deliver(message)
            except aiomqtt.MqttError as e:
                self._connected.clear()
                delay = self._backoff.next_delay()
                if isinstance(e, MqttConnectError):  # refused, not unreachable: someone has to fix the login
                    logger.error("MQTT broker %s refused the service (%s): check broker.username and password_file "
                                 "(`jingbao broker setup`); retrying in %.1f s", self.address, e, delay)  # fmt: skip
                else:
                    logger.warning("MQTT link down (%s); reconnecting in %.1f s", e, delay)
                await asyncio.sleep(delay)
            finally:
                self._connected.clear()
                if self.down_since is None:
                    self.down_since = time.time()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the broker's acknowledgement (QoS 1: PUBACK)."""
        if not self._connected.is_set():
            raise aiomqtt.MqttError("not connected")
        await self._client.publish(topic, payload, qos=qos, retain=retain, timeout=self._publish_timeout)

    async def _deliver(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        try:
            await self._handler(str(message.topic), payload, retained=message.retain)
        except Exception:
            # The handler counts and logs bad payloads itself; this is the last line that keeps the link alive.
            logger.exception("handler failed on a message for %s", clip(str(message.topic)))
