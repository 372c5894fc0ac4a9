import asyncio

from bridge.bus import EventBus


async def test_subscribers_get_only_their_topics():
    bus = EventBus()
    levels = bus.subscribe({"level"})
    everything = bus.subscribe()
    bus.publish("level", {"x": 1})
    bus.publish("utterance", {"id": "u1"})
    assert (await levels.get()).data == {"x": 1}
    assert levels.queue.empty()
    assert [(await everything.get()).topic for _ in range(2)] == ["level", "utterance"]


async def test_a_slow_subscriber_loses_its_oldest_events_and_never_blocks():
    bus = EventBus()
    slow = bus.subscribe(maxsize=3)
    for i in range(10):
        bus.publish("level", {"i": i})
    assert slow.dropped == 7
    assert [(await slow.get()).data["i"] for _ in range(3)] == [7, 8, 9]


async def test_unsubscribed_queues_receive_nothing():
    bus = EventBus()
    sub = bus.subscribe()
    bus.unsubscribe(sub)
    bus.publish("level", {})
    await asyncio.sleep(0)
    assert sub.queue.empty()
