"""Edge -> central over MQTT (issue 13): a station's archive and transcripts forwarded by bridge/forward.py through a
real mosquitto to bridge/central.py, stored in a real PostgreSQL. Every test is bounded (`until`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import aiomqtt
import psycopg
import pytest
import yaml
from fastapi import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from asr.store import TranscriptStore
from asr.transcript import Transcript
from bridge.archive import Archive
from bridge.bus import EventBus
from bridge.central import CentralIngest, CentralStore
from bridge.config import Config, ConfigError
from bridge.db import connect
from bridge.events import Utterance, new_utterance_id
from bridge.forward import Forwarder, ForwardQueue
from bridge.looplag import LoopLagMonitor
from bridge.nodes import Acked, parse, stored_payload, utterance_payload
from bridge.service import Service
from bridge.web.metrics import ServiceCollector
from bridge.web.routes_channels import healthz
from bridge.web.search import Filters
from bridge.web.search_pg import PostgresSearchIndex
from dispatch.topics import PARTIALS, STORED, AckTopic, NodeTopic, RecognisedTopic, StoredTopic, Topics
from tests.support.broker import JURISDICTION, Mosquitto, free_port
from tests.support.central import (  # noqa: F401 (mqtt: the fixture, used by name)
    REPO,
    STATION,
    central_config,
    edge_config,
    logged_in,
    mqtt_fixture,
    node_config,
    running,
    transcript_message,
    until,
)


def speak(archive: Archive, transcripts: TranscriptStore, n: int, text: str = "美食街有人打架") -> list[str]:
    """Archive `n` utterances (a little noise each) and store a transcript for each, as the edge's recogniser does."""
    ids = []
    for i in range(n):
        start = time.time() - 60 + i * 0.01
        utterance = Utterance(new_utterance_id(start), "ch-market", start, start + 0.25, os.urandom(8000))
        archive.store(utterance)
        transcripts.save(utterance.id, "ch-market", start, Transcript(text=f"{text}{i}", pinyin="mei3 shi2 jie1", engine="test"))
        ids.append(utterance.id)
    return ids


def central_rows(pg_url: str) -> tuple[dict[str, bytes | None], dict[str, dict]]:
    """Central's utterances (central id -> audio) and transcripts (central id -> row)."""
    with psycopg.connect(pg_url, row_factory=psycopg.rows.dict_row) as conn:
        utterances = {r["id"]: r["audio"] for r in conn.execute("SELECT id, audio FROM node_utterances")}
        transcripts = {r["utterance_id"]: r for r in conn.execute("SELECT * FROM transcripts")}
    return utterances, transcripts


def queued(edge: Config) -> int:
    """What the edge has still to send (read on a connection of its own, as another process would)."""
    with contextlib.closing(connect(edge.storage.database)) as conn:
        return conn.execute("SELECT count(*) FROM forward_queue").fetchone()[0]


def count(pg_url: str, table: str) -> int:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_node_topics_are_built_and_parsed_in_one_place():
    topics = Topics("city/jingbao")
    assert topics.node("st1", "utterances") == "city/jingbao/nodes/st1/utterances"
    assert topics.parse("city/jingbao/nodes/st1/transcripts") == NodeTopic("st1", "transcripts")
    assert topics.node_subscriptions == ("city/jingbao/nodes/+/utterances", "city/jingbao/nodes/+/transcripts")
    assert topics.node_live(PARTIALS) == "city/jingbao/nodes/+/partials"
    assert topics.parse(topics.node("st1", PARTIALS)) == NodeTopic("st1", PARTIALS)
    for other in ("city/jingbao/nodes/st1/alerts", "city/jingbao/nodes/st1", "city/jingbao/nodes/+/utterances",
                  "jingbao/nodes/st1/utterances", "city/jingbao/acks/st1/utterances"):  # fmt: skip
        assert topics.parse(other) is None, other
    assert topics.node_stored("st1") == "city/jingbao/nodes/st1/stored"
    assert topics.parse("city/jingbao/nodes/st1/stored") == StoredTopic("st1")
    assert topics.node_recognised("st1") == "city/jingbao/nodes/st1/recognised"
    assert topics.parse("city/jingbao/nodes/st1/recognised") == RecognisedTopic("st1")
    assert topics.parse("city/jingbao/acks/r1") == AckTopic("r1")  # the others as before
    for station, kind in (("a/b", "utterances"), ("#", "utterances"), ("st1", "alerts")):
        with pytest.raises(ValueError):
            topics.node(station, kind)


def test_a_role_missing_its_settings_is_a_config_error(tmp_path, mqtt):
    edge = edge_config(tmp_path, mqtt)
    with pytest.raises(ConfigError, match=r"node\.station"):
        Forwarder(edge.model_copy(update={"node": edge.node.model_copy(update={"station": None})}))
    with pytest.raises(ConfigError, match=r"storage\.database_url"):
        CentralIngest(edge)
    with pytest.raises(ConfigError, match=r"node\.station"):  # a station id becomes a topic level and an id prefix
        node_config(tmp_path, mqtt, name="bad", client_id="x", node={"station": "a.b"})


def test_an_edge_service_takes_its_forwarding_timeouts_from_the_config(tmp_path, mqtt):
    edge = edge_config(tmp_path, mqtt)
    edge = edge.model_copy(update={"node": edge.node.model_copy(update={"ack_timeout_s": 7.0, "behind_after_s": 90.0})})
    forwarder = Service(edge, role="edge").forwarder
    assert forwarder is not None and (forwarder._ack_timeout_s, forwarder._behind_after_s) == (7.0, 90.0)


@pytest.mark.parametrize("dispatch", ["central", "edge"])
def test_an_edge_tells_central_which_transcripts_its_sos_desk_took_and_whether_it_dispatched_them(
    tmp_path, mqtt, dispatch: str
):  # fmt: skip
    edge = edge_config(tmp_path, mqtt)
    service = Service(edge.model_copy(update={"node": edge.node.model_copy(update={"dispatch": dispatch})}), role="edge")
    assert service.forwarder is not None and service.dispatch is not None
    (cry,) = speak(service.archive, service.transcripts, 1, text="救命，我被打了")
    (fight,) = speak(service.archive, service.transcripts, 1)
    forwarder = service.forwarder
    sent = [json.loads(forwarder.queue.payload(STATION, e, forwarder._sos_takes, forwarder._dispatched_at_edge) or b"")
            for e in forwarder.queue.due(10, resend_before=0) if e.kind == "transcripts"]  # fmt: skip
    assert {m["utterance_id"]: m["sos"] for m in sent} == {cry: True, fight: False}
    assert {m["dispatched_at_edge"] for m in sent} == {dispatch == "edge"}
    asyncio.run(service.dispatch.dispatcher.close())


async def test_archived_utterances_and_transcripts_arrive_once_each_and_are_searchable(tmp_path, mqtt, pg_url):
    edge = edge_config(tmp_path, mqtt)
    archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
    before = speak(archive, transcripts, 5)  # archived before the edge role ever ran: its history goes first
    forwarder, central = Forwarder(edge), CentralIngest(central_config(tmp_path, mqtt, pg_url))
    async with running(central, forwarder.run):
        after = speak(archive, transcripts, 5, text="公园北路着火")
        await until("10 utterances and 10 transcripts at central",
                    lambda: central.stored["utterances"] == 10 and central.stored["transcripts"] == 10)  # fmt: skip
        # a re-transcription is a newer version: it replaces central's
        row = archive.get(before[0])
        transcripts.save(row.id, row.channel, row.start_ms / 1000, Transcript(text="美食街有人打架了", pinyin="", engine="test2"))
        await until("the new version at central", lambda: central.stored["transcripts"] == 11)
        await until("the edge's queue empty and central's search index made",
                    lambda: queued(edge) == 0 and central.search is not None)  # fmt: skip
    utterances, texts = central_rows(pg_url)
    assert sorted(utterances) == sorted(f"{STATION}.{i}" for i in before + after)
    for local_id in before + after:  # the audio arrived whole: the edge's file, byte for byte
        assert hashlib.sha256(utterances[f"{STATION}.{local_id}"]).hexdigest() == archive.get(local_id).sha256
    assert texts[f"{STATION}.{before[0]}"]["text"] == "美食街有人打架了"
    assert {t["channel"] for t in texts.values()} == {f"{STATION}.ch-market"}
    assert forwarder.sent == 21 and central.repeats.total() == 0 and not central.rejected
    with psycopg.connect(pg_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        search = PostgresSearchIndex(conn)
        search.sync()
        page = search.search("着火", Filters())
        assert sorted(r["utterance_id"] for r in page.results) == sorted(f"{STATION}.{i}" for i in after)
    archive.close()


async def test_a_burst_is_stored_a_batch_per_commit_and_a_message_postgresql_refuses_holds_back_none_of_the_others(
    tmp_path, mqtt, pg_url
):  # fmt: skip
    """What the broker kept for central while it was away arrives in a burst: stored a batch per transaction, not a
    commit per message; one message PostgreSQL refuses (a NUL in its text) is rejected alone, every other stored."""
    config = central_config(tmp_path, mqtt, pg_url)
    async with running(CentralIngest(config)):  # central's session exists: the broker keeps what comes for it
        pass
    burst = [transcript_message(STATION, f"美食街第{i}次通话", entry=i) for i in range(1, 41)]
    topic, payload = burst[20]
    refused = payload.replace("美食街".encode(), b"\\u0000")  # PostgreSQL refuses a NUL in a text
    burst[20] = topic, refused
    async with aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge") as edge:
        for message in burst:
            await edge.publish(*message, qos=1)
    central = CentralIngest(config)
    async with running(central):
        await until("the burst taken", lambda: central.stored["transcripts"] + central.rejected[STATION] == 40)
    assert central.stored["transcripts"] == 39 and central.rejected[STATION] == 1
    assert central.commits < 39, central.commits  # a batch per commit
    assert len(central_rows(pg_url)[1]) == 39
    # the refused one in a batch of three: the batch goes in a message at a time, the two others stored
    again = CentralIngest(config)
    again.store = CentralStore(pg_url)
    batch = [parse("transcripts", STATION, payload) for _, payload in
             (transcript_message(STATION, "第二批", entry=50), (topic, refused.replace(b'"entry": 21', b'"entry": 51')),
              transcript_message(STATION, "第二批", entry=52))]  # fmt: skip
    await again._store_all(batch)  # type: ignore[arg-type]
    assert (again.stored["transcripts"], again.rejected[STATION], again.commits) == (2, 1, 2)
    again.store.close()


async def test_repeats_are_stored_once_and_bad_payloads_are_counted_rejections(tmp_path, mqtt, pg_url):
    """...and every message naming a queue entry is acknowledged to its station, a repeat and a refusal too (so its
    edge stops resending it)."""
    edge = edge_config(tmp_path, mqtt)
    archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
    ids = speak(archive, transcripts, 3)
    central = CentralIngest(central_config(tmp_path, mqtt, pg_url))
    topics = Topics()
    row = archive.get(ids[0])
    good = utterance_payload(STATION, row, (edge.storage.data_dir / row.path).read_bytes(), entry=1)
    transcript = json.dumps({"v": 1, "station": STATION, "entry": 2, "utterance_id": ids[0], "channel": "ch-market",
                             "start_ms": 1, "version": 5.0, "transcript": {"text": "旧的", "pinyin": ""}}).encode()  # fmt: skip
    tampered = json.loads(good)
    tampered["audio"] = tampered["audio"][:-8] + "AAAAAAA="
    bad = [
        (topics.node(STATION, "utterances"), b"not json"),
        (topics.node(STATION, "utterances"), b"\xff\xfe"),
        (topics.node(STATION, "utterances"), json.dumps({"v": 2, "station": STATION}).encode()),
        (topics.node(STATION, "utterances"), json.dumps(tampered).encode()),  # audio not matching its sha256
        (topics.node("another", "utterances"), good),  # a station publishing under another's topic
        (topics.node(STATION, "transcripts"), transcript.replace(b'"\\u65e7', b'"\\u0000\\u65e7')),  # PostgreSQL refuses NUL
        (topics.node(STATION, "transcripts"), transcript.replace(b'"start_ms": 1', b'"start_ms": 99999999999999999999')),
        (topics.node(STATION, "transcripts"), transcript.replace(b'"pinyin": ""', b'"pinyin": 5')),  # not a string
        (topics.node(STATION, "transcripts"), transcript.replace(b'"version": 5.0', b'"version": NaN')),
        (f"{topics.prefix}/nodes/x.y/utterances", good),  # not a topic of ours at all
    ]
    repeats = [(topics.node(STATION, "utterances"), good)] * 3 + [(topics.node(STATION, "transcripts"), transcript)] * 2
    acks: Counter[tuple[int, str]] = Counter()

    async def read_acks(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            acked = parse(STORED, STATION, message.payload)
            acks.update((a.entry, a.outcome) for a in acked.entries)

    async with running(central), aiomqtt.Client(mqtt.host, mqtt.port, identifier="replayer") as client:
        await client.subscribe(topics.node_stored(STATION), qos=1)
        reader = asyncio.create_task(read_acks(client))
        for topic, payload in repeats + bad:
            await client.publish(topic, payload, qos=1)
        newer = transcript.replace(b'"version": 5.0', b'"version": 6.0').replace("旧的".encode(), "新的".encode())
        await client.publish(topics.node(STATION, "transcripts"), newer.replace(b"\\u65e7\\u7684", b"\\u65b0\\u7684"), qos=1)
        await client.publish(topics.node(STATION, "transcripts"), transcript, qos=1)  # the older version, late
        await until("every message taken",
                    lambda: central.stored.total() + central.repeats.total() + central.rejected.total() == 17)  # fmt: skip
        await until("their acknowledgements", lambda: acks.total() == 12)
        reader.cancel()
    # entry 1: the utterance stored, twice a repeat, once tampered; entry 2: the transcript stored and its newer
    # version, the older ones repeats, four refused (those not even JSON, or of another version, name no entry)
    assert acks == {(1, "stored"): 1, (1, "repeat"): 2, (1, "rejected"): 1,
                    (2, "stored"): 2, (2, "repeat"): 2, (2, "rejected"): 4}  # fmt: skip
    assert central.stored == {"utterances": 1, "transcripts": 2}
    assert central.repeats == {"utterances": 2, "transcripts": 2}
    assert central.rejected == {STATION: 8, "another": 1, "?": 1}
    assert count(pg_url, "node_utterances") == 1
    _, texts = central_rows(pg_url)
    assert texts[f"{STATION}.{ids[0]}"]["text"] == "新的"
    archive.close()


async def test_a_broker_outage_loses_nothing_and_the_edge_goes_on_archiving(tmp_path, mqtt, pg_url):
    edge = edge_config(tmp_path, mqtt)
    archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
    forwarder, central = Forwarder(edge), CentralIngest(central_config(tmp_path, mqtt, pg_url))
    async with running(central, forwarder.run):
        ids = speak(archive, transcripts, 5)
        await until("the first five at central", lambda: central.stored["utterances"] == 5)
        mqtt.stop()
        ids += speak(archive, transcripts, 20)  # the edge archives as ever while its link is down
        await asyncio.sleep(2)
        assert central.stored["utterances"] == 5
        mqtt.start()
        await until("all 25 at central", lambda: central.stored == {"utterances": 25, "transcripts": 25}, timeout=30)
        await until("the edge's queue empty", lambda: queued(edge) == 0)
    utterances, texts = central_rows(pg_url)
    assert sorted(utterances) == sorted(texts) == sorted(f"{STATION}.{i}" for i in ids)
    archive.close()


async def test_what_central_could_not_store_while_postgresql_was_down_is_sent_again_after_it_dies(
    tmp_path, mqtt, postgres, pg_url
):
    """PostgreSQL stopped: central holds what it receives unacknowledged; central dies meanwhile (cancelled, as a
    crash would leave it); PostgreSQL back, a new central gets it all again from the broker and stores it once."""
    edge = edge_config(tmp_path, mqtt)
    archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
    forwarder, central = Forwarder(edge), CentralIngest(central_config(tmp_path, mqtt, pg_url))
    async with running(central, forwarder.run):
        ids = speak(archive, transcripts, 2)
        await until("the first two at central", lambda: central.stored == {"utterances": 2, "transcripts": 2})
        postgres.pause()
        try:
            ids += speak(archive, transcripts, 3)
            await until("all sent: the broker has it", lambda: forwarder.sent == 10)
            await asyncio.sleep(0.5)
            assert central.stored == {"utterances": 2, "transcripts": 2}
            assert queued(edge) == 6  # kept until central acknowledges them
        finally:
            postgres.resume()
    again = CentralIngest(central_config(tmp_path, mqtt, pg_url))
    async with running(again, Forwarder(edge).run):  # the edge back too, for central's acknowledgements
        await until("the other three at central", lambda: again.stored == {"utterances": 3, "transcripts": 3})
        await until("the edge's queue empty: central acknowledged them", lambda: queued(edge) == 0)
    utterances, texts = central_rows(pg_url)
    assert sorted(utterances) == sorted(texts) == sorted(f"{STATION}.{i}" for i in ids)
    archive.close()


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def subscribed_once(central: CentralIngest) -> None:
    """Central subscribes and goes away: from then on the broker queues what comes for it."""
    async with running(central):
        pass


async def test_a_broker_killed_after_taking_messages_loses_nothing_the_edge_resends_what_central_did_not_acknowledge(
    tmp_path, mqtt, pg_url
):
    """The broker PUBACKs the edge's messages, queued for central (away), and is killed with SIGKILL before it saves
    them: the edge, which keeps every entry until central acknowledges it, sends them again."""
    edge = edge_config(tmp_path, mqtt)
    archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
    await subscribed_once(CentralIngest(central_config(tmp_path, mqtt, pg_url)))
    mqtt.restart()  # a clean stop: central's session is saved, as an autosave would have
    forwarder = Forwarder(edge, ack_timeout_s=1.0)
    sending = asyncio.create_task(forwarder.run())
    try:
        ids = speak(archive, transcripts, 5)
        await until("all ten taken by the broker", lambda: forwarder.sent >= 10)
        assert queued(edge) == 10  # taken, not acknowledged: kept
        mqtt.kill()
        mqtt.start()
        central = CentralIngest(central_config(tmp_path, mqtt, pg_url))
        async with running(central):
            await until("all of it at central", lambda: central.stored == {"utterances": 5, "transcripts": 5}, timeout=20)
            await until("the edge's queue empty: central acknowledged it all", lambda: queued(edge) == 0)
        assert forwarder.backlog.resent >= 10 and forwarder.backlog.acknowledged >= 10
    finally:
        await stop(sending)
    utterances, texts = central_rows(pg_url)
    assert sorted(utterances) == sorted(texts) == sorted(f"{STATION}.{i}" for i in ids)
    archive.close()


async def shown(forwarder: Forwarder) -> tuple[int, dict, dict[str, float]]:
    """What /healthz (its status and body) and /metrics (sample -> value) say of an edge with this forwarder."""
    service = SimpleNamespace(channel_states=list, archive=SimpleNamespace(active_faults=[]), loop_lag=LoopLagMonitor(),
                              recognition=None, dispatch=None, forwarder=forwarder)  # fmt: skip
    response = Response()
    health = await healthz(SimpleNamespace(service=service), response)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    samples = {s.name: s.value for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    return response.status_code or 200, health, samples


async def test_a_broker_queue_overflowing_while_central_is_away_loses_nothing(tmp_path, pg_url):
    """mosquitto keeps 5 messages for central and drops the rest (max_queued_messages): the edge sends those again
    until central acknowledges them. Meanwhile the backlog is visible and, old enough, the fault "forwarding behind"."""
    server = Mosquitto(tmp_path / "small")
    server.config.write_text(server.config.read_text(encoding="utf-8") + "max_queued_messages 5\n", encoding="utf-8")
    server.start()
    try:
        edge = edge_config(tmp_path, server)
        archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
        await subscribed_once(CentralIngest(central_config(tmp_path, server, pg_url)))
        forwarder = Forwarder(edge, ack_timeout_s=1.0, behind_after_s=1.0)
        sending = asyncio.create_task(forwarder.run())
        try:
            ids = speak(archive, transcripts, 15)
            await until("all 30 sent and resent", lambda: forwarder.backlog.resent >= 30)
            await until("the edge behind", lambda: forwarder.behind)
            await until("the backlog counted", lambda: forwarder.backlog.unacknowledged == 30)
            forwarder.live["channels sent"] += 2  # as two key-ups would count
            code, health, metrics = await shown(forwarder)
            assert metrics["jingbao_forward_live_total"] == 2
            assert code == 503 and [f["kind"] for f in health["failing"]] == ["forwarding_behind"]
            backlog = health["forwarding"]
            assert backlog["queued"] == backlog["unacknowledged"] == 30 and backlog["oldest_age_s"] > 1
            assert backlog["last_ack_at"] is None and backlog["acknowledged"] == 0 and backlog["resent"] >= 30
            assert metrics["jingbao_forward_queued"] == metrics["jingbao_forward_unacknowledged"] == 30
            assert metrics["jingbao_forward_behind"] == 1 and metrics["jingbao_forward_resent_total"] >= 30
            assert "jingbao_forward_last_ack_timestamp_seconds" not in metrics
            central = CentralIngest(central_config(tmp_path, server, pg_url))
            async with running(central):
                await until("all of it at central", lambda: central.stored == {"utterances": 15, "transcripts": 15},
                            timeout=30)  # fmt: skip
                await until("the edge caught up", lambda: queued(edge) == 0 and not forwarder.behind)
            assert forwarder.backlog.last_ack_at is not None and forwarder.backlog.acknowledged >= 30
            code, health, metrics = await shown(forwarder)
            assert code == 200 and health["ok"] and health["forwarding"]["behind_since"] is None
            assert metrics["jingbao_forward_queued"] == metrics["jingbao_forward_behind"] == 0
            assert metrics["jingbao_forward_acknowledged_total"] >= 30
        finally:
            await stop(sending)
        utterances, texts = central_rows(pg_url)
        assert sorted(utterances) == sorted(texts) == sorted(f"{STATION}.{i}" for i in ids)
        archive.close()
    finally:
        server.stop()


async def test_resends_central_receives_twice_are_stored_once(tmp_path, mqtt, pg_url):
    """Central away longer than the ack timeout: the broker queues every message twice or more; central stores each
    once and acknowledges the repeats too."""
    edge = edge_config(tmp_path, mqtt)
    archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
    await subscribed_once(CentralIngest(central_config(tmp_path, mqtt, pg_url)))
    forwarder = Forwarder(edge, ack_timeout_s=0.5)
    sending = asyncio.create_task(forwarder.run())
    try:
        ids = speak(archive, transcripts, 3)
        await until("each sent twice", lambda: forwarder.backlog.resent >= 6)
        central = CentralIngest(central_config(tmp_path, mqtt, pg_url))
        async with running(central):
            await until("stored, and the edge's queue empty", lambda: central.stored.total() == 6 and queued(edge) == 0)
            await until("the repeats taken", lambda: central.repeats["utterances"] >= 3 and central.repeats["transcripts"] >= 3)
    finally:
        await stop(sending)
    assert central.stored == {"utterances": 3, "transcripts": 3} and not central.rejected
    utterances, texts = central_rows(pg_url)
    assert sorted(utterances) == sorted(texts) == sorted(f"{STATION}.{i}" for i in ids)
    archive.close()


async def test_malformed_acknowledgements_are_counted_and_forget_nothing(tmp_path, mqtt):
    edge = edge_config(tmp_path, mqtt)
    archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
    ids = speak(archive, transcripts, 1)
    forwarder = Forwarder(edge)
    sending = asyncio.create_task(forwarder.run())
    topic = Topics().node_stored(STATION)
    entry = {"entry": 1, "kind": "utterances", "utterance_id": ids[0], "outcome": "stored"}
    bad = [b"not json", b"\xff", json.dumps({"v": 2, "station": STATION, "entries": [entry]}).encode(),
           json.dumps({"v": 1, "station": "other", "entries": [entry]}).encode(),  # another station's, on ours
           json.dumps({"v": 1, "station": STATION, "entries": [{**entry, "entry": "1"}]}).encode(),
           json.dumps({"v": 1, "station": STATION, "entries": [{**entry, "entry": 2**64}]}).encode(),  # no SQLite int
           json.dumps({"v": 1, "station": STATION, "entries": [{**entry, "outcome": "lost"}]}).encode(),
           json.dumps({"v": 1, "station": STATION, "entries": [entry] * 1001}).encode()]  # fmt: skip
    try:
        await until("the edge connected", lambda: forwarder.link.connects == 1)
        await asyncio.sleep(0.3)  # its subscription made
        async with aiomqtt.Client(mqtt.host, mqtt.port, identifier="central") as central:
            for payload in bad:
                await central.publish(topic, payload, qos=1)
            await until("each refused", lambda: forwarder.backlog.acks_rejected == len(bad))
            assert queued(edge) == 2 and forwarder.backlog.acknowledged == 0
            acked = [Acked(**entry), Acked(**{**entry, "entry": 2, "kind": "transcripts"})]
            await central.publish(topic, stored_payload(STATION, acked), qos=1)
            await until("both forgotten", lambda: queued(edge) == 0)
        assert forwarder.backlog.acknowledged == 2 and forwarder.backlog.last_ack_at is not None
    finally:
        await stop(sending)
    archive.close()


async def test_what_an_edge_sends_before_central_ever_subscribed_waits_for_it(tmp_path, mqtt, pg_url):
    """Until central's first subscription the broker keeps nothing for it, and says so (MQTT 5 PUBACK: no matching
    subscribers): the edge keeps those queued and sends them again until central is there."""
    edge = edge_config(tmp_path, mqtt)
    archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
    forwarder = Forwarder(edge)
    early = asyncio.create_task(forwarder.run())
    try:
        ids = speak(archive, transcripts, 3)
        await asyncio.sleep(1.0)
        assert forwarder.sent == 0 and queued(edge) == 6
        central = CentralIngest(central_config(tmp_path, mqtt, pg_url))
        async with running(central):
            await until("all of it at central", lambda: central.stored == {"utterances": 3, "transcripts": 3}, timeout=20)
    finally:
        early.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await early
    assert sorted(central_rows(pg_url)[0]) == sorted(f"{STATION}.{i}" for i in ids)
    archive.close()


async def test_on_a_locked_down_broker_an_edge_publishes_only_under_its_own_station(tmp_path, pg_url):
    server = Mosquitto(tmp_path / "locked", jurisdiction=JURISDICTION)  # as `jingbao broker setup` makes it
    assert server.access is not None
    logins = {name: server.access.add_node(name) for name in (STATION, "central")}  # `jingbao broker add-node`
    server.start()
    try:
        edge = logged_in(edge_config(tmp_path, server), f"node-{STATION}", logins[STATION])
        central = CentralIngest(logged_in(central_config(tmp_path, server, pg_url), "central", logins["central"]))
        archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
        ids = speak(archive, transcripts, 2)
        forwarder = Forwarder(edge)
        async with running(central, forwarder.run):
            await until("the station's own messages at central", lambda: central.stored.total() == 4)
            # central's acknowledgements reach the edge: central may write them, the edge read its own
            await until("the edge's queue empty", lambda: queued(edge) == 0)
            row = archive.get(ids[0])
            forged = utterance_payload("other", row, (edge.storage.data_dir / row.path).read_bytes())
            async with aiomqtt.Client(server.host, server.port, identifier=f"node-{STATION}", username=f"node-{STATION}",
                                      password=logins[STATION]) as rogue:  # fmt: skip
                await rogue.publish(Topics().node("other", "utterances"), forged, qos=1)  # another station's topic
                await rogue.publish(Topics().alert("r1"), b"{}", qos=1)  # nor anything else
            await asyncio.sleep(0.5)
        assert central.stored.total() == 4 and not central.rejected  # the broker dropped the forged one
        assert count(pg_url, "node_utterances") == 2
        # an edge reads only its own station's acknowledgements; central writes nothing but acknowledgements
        async with (
            aiomqtt.Client(server.host, server.port, username=f"node-{STATION}", password=logins[STATION],
                           protocol=aiomqtt.ProtocolVersion.V5) as rogue,
            aiomqtt.Client(server.host, server.port, username="central", password=logins["central"],
                           protocol=aiomqtt.ProtocolVersion.V5) as ingest,
        ):  # fmt: skip
            await rogue.subscribe(Topics().node_stored("other"), qos=1)  # granted by mosquitto, which checks delivery
            await rogue.subscribe(Topics().node_stored(STATION), qos=1)
            await ingest.subscribe(Topics().node(STATION, "utterances"), qos=1)  # central's to read, not to write
            acked = [Acked(entry=1, kind="utterances", utterance_id=ids[0], outcome="stored")]
            await ingest.publish(Topics().node_stored("other"), stored_payload("other", acked), qos=1)
            await ingest.publish(Topics().node(STATION, "utterances"), b"{}", qos=1)
            await ingest.publish(Topics().node_stored(STATION), stored_payload(STATION, acked), qos=1)
            received = await asyncio.wait_for(anext(aiter(rogue.messages)), 5)
            assert str(received.topic) == Topics().node_stored(STATION)
            for client in (rogue, ingest):  # nothing else came: not the other station's ack, not central's utterance
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(anext(aiter(client.messages)), 0.5)
            # the edge's partial transcripts: its to write, central's to read
            await ingest.subscribe(Topics().node_live(PARTIALS), qos=0)
            await rogue.publish(Topics().node(STATION, PARTIALS), b"{}", qos=0)
            partial = await asyncio.wait_for(anext(aiter(ingest.messages)), 5)
            assert str(partial.topic) == Topics().node(STATION, PARTIALS)
        archive.close()
    finally:
        server.stop()


def archived_ids(edge: Config) -> list[str]:
    # (OperationalError: the table not made yet by the edge starting)
    with contextlib.closing(connect(edge.storage.database)) as conn, contextlib.suppress(sqlite3.OperationalError):
        return [r[0] for r in conn.execute("SELECT id FROM utterances ORDER BY seq")]
    return []


async def start_node(role: str, config_file: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "run", "--role", role, "--config", str(config_file), cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL, stderr=(config_file.parent / f"{role}.log").open("ab"),
    )  # fmt: skip


def run_config(tmp_path: Path, name: str, **changes: object) -> Path:
    """The config file node_config wrote for `name`, with top-level sections changed, as a file for a process."""
    raw = yaml.safe_load((tmp_path / f"{name}.yaml").read_text(encoding="utf-8")) | changes
    path = tmp_path / f"{name}-run.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def stored_count(pg_url: str) -> int:
    with contextlib.suppress(psycopg.errors.UndefinedTable):  # central has not made its tables yet
        return count(pg_url, "node_utterances")
    return 0


async def test_an_edge_killed_mid_run_loses_nothing_and_central_stores_each_utterance_once(tmp_path, mqtt, pg_url, calls_audio):
    """`jingbao run --role edge`, a file channel replaying calls as fast as it can, and `jingbao run --role central`,
    both processes: the edge killed with SIGKILL while archiving and forwarding, started again, stopped; whatever its
    archive holds is at central, once. (Each start takes a few seconds of imports; the waits allow for a machine busy
    with benchmarks.) Central starts with the edge, not before: what the edge sends before central subscribes is
    refused by the broker and sent again."""
    edge = edge_config(tmp_path, mqtt)
    edge_file = run_config(
        tmp_path, f"edge-{STATION}", dispatch={"enabled": False}, web={"port": free_port()},
        node={**yaml.safe_load((tmp_path / f"edge-{STATION}.yaml").read_text(encoding="utf-8"))["node"], "station": STATION},
        channels=[{"id": "ch-market", "name": "市场保安", "source": {
            "type": "file", "paths": [str(p) for p in sorted(calls_audio.glob("c00[1-4].wav"))], "realtime": False,
            "loop": True, "gap": [1.5, 2.0]}}],
    )  # fmt: skip
    central_config(tmp_path, mqtt, pg_url)  # writes central.yaml
    central_file = run_config(tmp_path, "central", storage={"data_dir": str(tmp_path / "central"), "database_url": pg_url})
    central = await start_node("central", central_file)
    try:
        process = await start_node("edge", edge_file)
        await until("the edge archiving and forwarding",
                    lambda: len(archived_ids(edge)) >= 5 and stored_count(pg_url) >= 1, timeout=60)  # fmt: skip
        process.kill()  # SIGKILL: no clean stop, whatever was in flight
        await process.wait()
        killed_at = len(archived_ids(edge))
        process = await start_node("edge", edge_file)
        await until("the edge archiving again", lambda: len(archived_ids(edge)) >= killed_at + 3, timeout=60)
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 20) == 0
        # what the stopped edge had not sent yet goes out as its next start would send it; one it sent and central did
        # not acknowledge before it stopped (central slow on a loaded machine) goes again after node.ack_timeout_s
        drain = asyncio.create_task(Forwarder(edge).run())
        await until("the edge's queue empty", lambda: queued(edge) == 0, timeout=edge.node.ack_timeout_s + 30)
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
        # the broker has the last ones: central stores them in a moment
        await until("central holding as many as the edge", lambda: stored_count(pg_url) == len(archived_ids(edge)))
        central.terminate()
        assert await asyncio.wait_for(central.wait(), 20) == 0
    finally:
        if central.returncode is None:
            central.kill()
            await central.wait()
    ids = archived_ids(edge)
    stored, _ = central_rows(pg_url)
    assert sorted(stored) == sorted(f"{STATION}.{i}" for i in ids) and len(ids) > killed_at + 3
    with Archive(edge.storage, readonly=True) as archive:
        assert archive.verify().ok


def test_the_forward_queue_is_closed_only_once_a_call_running_in_a_thread_has_finished(tmp_path):
    """At shutdown the forwarder's tasks are cancelled while a call they made through asyncio.to_thread may still be
    running: closing the connection under it could crash the process (an edge once exited -11 when stopped)."""
    queue = ForwardQueue(tmp_path / "edge.db", tmp_path)
    closing = threading.Thread(target=queue.close)
    with queue._lock:  # what a call running in a worker thread holds
        closing.start()
        closing.join(0.3)
        assert closing.is_alive()
        assert queue._conn.execute("SELECT count(*) FROM forward_queue").fetchone()[0] == 0  # still open
    closing.join(5)
    assert not closing.is_alive()
    with pytest.raises(sqlite3.ProgrammingError):
        queue.waiting()


async def test_what_the_service_archives_is_sent_at_once_not_at_the_next_poll(tmp_path, mqtt, pg_url):
    """The queue is filled by SQLite triggers, which wake nobody; the bus says when an utterance was archived or a
    transcript stored, and the forwarder sends it then. Polled only every 30 s here, it still arrives within seconds."""
    edge = edge_config(tmp_path, mqtt)
    archive, transcripts = Archive(edge.storage), TranscriptStore(connect(edge.storage.database))
    bus = EventBus()
    forwarder = Forwarder(edge, poll_s=30.0, wake=bus.subscribe({"utterance", "transcript"}))
    central = CentralIngest(central_config(tmp_path, mqtt, pg_url))
    async with running(central, forwarder.run):
        await asyncio.sleep(1.0)  # the forwarder has read its empty queue and waits
        speak(archive, transcripts, 1)
        bus.publish("utterance", {"channel": "ch-market"})
        await until("the utterance and its transcript at central",
                    lambda: central.stored["utterances"] == 1 and central.stored["transcripts"] == 1, timeout=10.0)
    archive.close()
