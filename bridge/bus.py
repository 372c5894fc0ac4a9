"""In-process publish/subscribe for live events (channel state, utterances, transcripts, incidents).

Live views (the console's WebSocket, the MQTT bridge) subscribe with a bounded queue. A slow subscriber loses its
oldest events, counted, and never slows the audio path: the archive and the database are the record, the bus is
only the live feed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class BusEvent:
    topic: str  # e.g. "channel", "utterance", "transcript", "partial", "incident", "fault"
    data: dict[str, Any]


@dataclass(slots=True, eq=False)
class Subscription:
    queue: asyncio.Queue[BusEvent]
    topics: frozenset[str] | None
    dropped: int = 0

    async def get(self) -> BusEvent:
        return await self.queue.get()


@dataclass(slots=True)
class EventBus:
    subscribers: list[Subscription] = field(default_factory=list)

    def subscribe(self, topics: set[str] | None = None, maxsize: int = 1000) -> Subscription:
        sub = Subscription(asyncio.Queue(maxsize), frozenset(topics) if topics else None)
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Deliver to every interested subscriber without waiting (call from the event loop thread)."""
        event = BusEvent(topic, data)
        for sub in self.subscribers:
            if sub.topics is not None and topic not in sub.topics:
                continue
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
                if sub.dropped in (1, 100) or sub.dropped % 1000 == 0:
                    logger.warning("slow live subscriber: %d events dropped", sub.dropped)
            sub.queue.put_nowait(event)
