"""The recognition role (bridge/recognition_node.py, issue 13): central's untranscribed utterances claimed from a real
PostgreSQL (a lease, SKIP LOCKED), recognised with the real on-board model, their transcripts published over a real
mosquitto and stored and dispatched by central as an edge's would be. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from asr.transcript import Transcript
from asr.worker import build_engines
from bridge.archive import GENESIS_HASH, Archive, ArchivedUtterance
from bridge.central import CentralIngest, CentralStore
from bridge.config import Config, RecognitionNodeConfig
from bridge.decode import decode_file
from bridge.events import Utterance, new_utterance_id
from bridge.forward import Forwarder, ForwardQueue
from bridge.nodes import parse, transcript_payload, utterance_payload
from bridge.recognition_node import SENT_HOLD_S, RecognitionNode, RecognitionQueue
from bridge.service import Service
from dispatch.topics import Topics
from tests.support.broker import JURISDICTION, Mosquitto
from tests.support.central import (  # noqa: F401 (mqtt: the fixture, used by name)
    A,
    central_config,
    central_dispatching,
    dispatching_central,
    edge_config,
    logged_in,
    mqtt_fixture,
    node_config,
    running,
    tasks_running,
    until,
)

RULES = RecognitionNodeConfig(after_s=0, lease_s=30, max_claims=3)


def utterance_message(station: str, audio: bytes, *, dispatched_at_edge: bool | None, heard_ago: float = 10.0
                      ) -> tuple[str, bytes, str]:  # fmt: skip
    """An edge's utterance message with its audio (a WAV file as the archive keeps it): topic, payload, its id.
    `dispatched_at_edge` None: an edge from before utterances said so."""
    start = time.time() - heard_ago
    uid, start_ms = new_utterance_id(start), round(start * 1000)
    row = ArchivedUtterance(seq=1, id=uid, channel="ch-market", start_ms=start_ms, end_ms=start_ms + 5000,
                            duration_ms=5000, path=f"{uid}.wav", format="wav", sha256=hashlib.sha256(audio).hexdigest(),
                            peak_dbfs=-3.0, rms_dbfs=-20.0, end_reason="silence", fault="", status="pending",
                            created_at=start_ms, prev_hash=GENESIS_HASH, row_hash="0" * 64)  # fmt: skip
    body = json.loads(utterance_payload(station, row, audio, dispatched_at_edge=bool(dispatched_at_edge)))
    if dispatched_at_edge is None:
        del body["dispatched_at_edge"]
    return Topics().node(station, "utterances"), json.dumps(body).encode(), uid


def worker_config(tmp_path: Path, broker: Mosquitto, pg_url: str, sherpa_model: Path) -> Config:
    config = node_config(tmp_path, broker, name="recognition", client_id="recognition",
                         asr={"engine": "sherpa", "sherpa_model": str(sherpa_model), "alternative_speeds": []})  # fmt: skip
    return config.model_copy(update={
        "storage": config.storage.model_copy(update={"database_url": pg_url}),
        "node": config.node.model_copy(update={"recognition": RULES}),
    })  # fmt: skip


def engines_of(config: Config) -> list:
    from dispatch.vocabulary import decoder_words, spotter_keywords

    keywords = spotter_keywords(config.jurisdiction, config.dispatch.lexicon)
    return build_engines(config.asr, keywords, decoder_words(config.dispatch.lexicon))


def working(*nodes: RecognitionNode) -> contextlib.AbstractAsyncContextManager[None]:
    return tasks_running(*(node.run for node in nodes))


async def test_an_utterance_central_holds_without_a_transcript_is_recognised_and_dispatched(
    tmp_path, mqtt, pg_url, sherpa_model, calls_audio
):
    """An edge forwards two utterances and no transcript (it is behind, or does not recognise): two workers (one
    config, so one client id each must be their own) recognise both; central stores their transcripts and dispatches
    the one whose edge leaves dispatch to central, not the one whose edge dispatches itself (it would alert twice)."""
    audio = (calls_audio / "c001.wav").read_bytes()  # 「怡园警务点请注意，美食街有人打架斗殴，请迅速赶往现场」
    topic, central_payload, central_uid = utterance_message(A, audio, dispatched_at_edge=False)
    _, edge_payload, edge_uid = utterance_message(A, audio, dispatched_at_edge=True)
    config = dispatching_central(tmp_path, mqtt, pg_url)
    worker = worker_config(tmp_path, mqtt, pg_url, sherpa_model)
    engines = await asyncio.to_thread(engines_of, worker)
    nodes = [RecognitionNode(worker, engines, worker=name) for name in ("w1", "w2")]
    async with central_dispatching(config) as (ingest, dispatch), \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        await edge.publish(topic, central_payload, qos=1)
        await edge.publish(topic, edge_payload, qos=1)
        await until("both utterances stored", lambda: ingest.stored["utterances"] == 2)
        async with working(*nodes):
            await until("both recognised and stored", lambda: ingest.stored["transcripts"] == 2, timeout=60)
            await until("one dispatched", lambda: dispatch.dispatched == 1)
        await asyncio.sleep(0.3)
    assert sum(n.recognised for n in nodes) == 2 and not any(n.failed for n in nodes)
    assert all(n.link.connects == 1 for n in nodes), "neither took the other's session over"
    assert dispatch.refused["dispatched_at_edge"] == 1  # the other one: its edge dispatches it
    [incident] = dispatch.service.dispatcher.store.list()
    assert incident.type == "fight" and incident.place_id == f"{A}.meishijie", (incident.type, incident.place_id)
    assert incident.utterance_ids == (f"{A}.{central_uid}",)
    with psycopg.connect(pg_url) as conn:
        engines = dict(conn.execute("SELECT utterance_id, engine FROM transcripts").fetchall())
        claims = dict(conn.execute("SELECT utterance_id, asr_claims FROM node_utterances").fetchall())
    assert engines == {f"{A}.{central_uid}": "sherpa", f"{A}.{edge_uid}": "sherpa"}
    assert set(claims.values()) == {1}, "each recognised once"


async def test_a_worker_whose_broker_goes_away_reconnects_and_goes_on(tmp_path, mqtt, pg_url, sherpa_model, calls_audio):
    config = central_config(tmp_path, mqtt, pg_url)
    worker = worker_config(tmp_path, mqtt, pg_url, sherpa_model)
    node = RecognitionNode(worker, await asyncio.to_thread(engines_of, worker), worker="w1")
    audio = (calls_audio / "c002.wav").read_bytes()
    ingest = CentralIngest(config)
    async with running(ingest), working(node):
        for n in (1, 2):
            topic, payload, _ = utterance_message(A, audio, dispatched_at_edge=True)
            async with aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a", clean_session=False) as edge:
                await edge.publish(topic, payload, qos=1)
            await until(f"transcript {n} at central", lambda n=n: ingest.stored["transcripts"] == n, timeout=60)
            if n == 1:
                await asyncio.to_thread(mqtt.restart)  # the worker's session ends mid-poll; its link reconnects
                await until("the worker back", lambda: node.link.connected, timeout=30)
    assert node.recognised == 2


async def test_audio_that_cannot_be_decoded_counts_against_its_claims_and_the_worker_goes_on(tmp_path, mqtt, pg_url,
                                                                                              sherpa_model):  # fmt: skip
    central = CentralStore(pg_url)
    try:
        bad = store_utterance(central)  # "RIFF-not-decoded-here": no WAV at all
        worker = worker_config(tmp_path, mqtt, pg_url, sherpa_model)
        node = RecognitionNode(worker, await asyncio.to_thread(engines_of, worker), worker="w1")
        async with working(node):
            await until("the bad audio tried", lambda: node.failed == 1, timeout=30)
        with psycopg.connect(pg_url) as conn:
            claims, lease = conn.execute("SELECT asr_claims, asr_lease_until FROM node_utterances WHERE id = %s",
                                         (f"{A}.{bad}",)).fetchone()  # fmt: skip
        assert claims == 1 and lease is not None, "the failure counts and keeps its lease, even at a clean stop"
    finally:
        central.close()


async def test_the_edge_takes_what_a_worker_recognised_of_its_utterances(tmp_path, mqtt, pg_url, sherpa_model, calls_audio):
    """An edge's archived utterance, forwarded to central without a transcript, recognised by a worker: central passes
    the transcript on, and the edge's forwarder hands it to the box (which then need not recognise it itself)."""
    edge = edge_config(tmp_path, mqtt)
    archive = Archive(edge.storage)
    start = time.time() - 10
    pcm = decode_file(calls_audio / "c002.wav")
    utterance = Utterance(new_utterance_id(start), "ch-market", start, start + len(pcm) / 32000, pcm)
    archive.store(utterance)
    taken: list[tuple[str, Transcript]] = []

    async def on_recognised(utterance_id: str, transcript: Transcript) -> bool:
        taken.append((utterance_id, transcript))
        return True

    forwarder = Forwarder(edge, on_recognised=on_recognised)
    worker = worker_config(tmp_path, mqtt, pg_url, sherpa_model)
    node = RecognitionNode(worker, await asyncio.to_thread(engines_of, worker), worker="w1")
    central = CentralIngest(central_config(tmp_path, mqtt, pg_url))
    try:
        async with running(central, forwarder.run), working(node):
            await until("the worker's transcript at the edge", lambda: bool(taken), timeout=60)
    finally:
        archive.close()
    [(uid, transcript)] = taken
    assert uid == utterance.id and transcript.pinyin and forwarder.recognised_elsewhere == 1


@pytest.mark.parametrize("engine", ["sherpa", "none"])
def test_an_edge_takes_workers_transcripts_only_when_it_recognises(tmp_path, mqtt, engine):
    """The service hands its forwarder the way to take them, unless it keeps no transcripts (asr.engine: none)."""
    config = edge_config(tmp_path, mqtt)
    config = config.model_copy(update={"asr": config.asr.model_copy(update={"engine": engine})})
    service = Service(config, role="edge")
    assert (service.forwarder._on_recognised is not None) == (engine != "none")


def store_utterance(store: CentralStore, station: str = A, *, dispatched_at_edge: bool | None = False,
                    heard_ago: float = 10.0) -> str:  # fmt: skip
    _, payload, uid = utterance_message(station, b"RIFF-not-decoded-here", dispatched_at_edge=dispatched_at_edge,
                                        heard_ago=heard_ago)  # fmt: skip
    assert store.store(parse("utterances", station, payload))
    return uid


def store_transcript(store: CentralStore, uid: str, version: float) -> bool:
    row = {"utterance_id": uid, "channel": "ch-market", "start_ms": 0, "created_at": version}
    heard = Transcript(text="好", pinyin="hao3", engine="edge").to_dict()
    return store.store(parse("transcripts", A, transcript_payload(A, row, heard)))


@pytest.fixture(name="central")
def central_fixture(pg_url):
    store = CentralStore(pg_url)  # central migrates; the workers' queues do not
    yield store
    store.close()


@pytest.fixture(name="queues")
def queues_fixture(central, pg_url):
    queues = [RecognitionQueue(pg_url, f"w{n}", RULES) for n in (1, 2, 3)]
    yield queues
    for queue in queues:
        queue.close()


def test_workers_claim_each_utterance_once_until_its_lease_ends_and_never_one_with_a_transcript(central, queues):
    w1, w2, w3 = queues
    older = store_utterance(central, heard_ago=20)
    newer = store_utterance(central, heard_ago=10)
    store_transcript(central, store_utterance(central, heard_ago=5), time.time())
    store_utterance(central, heard_ago=1, dispatched_at_edge=None)  # an older edge's: left to it
    now = time.time() + 1
    # w1 holds its claim in an open transaction: w2 skips the locked row instead of waiting for it
    with w1._conn.transaction():
        first = w1.claim(now)
        w2._conn.execute("SET lock_timeout = '2s'")
        second = w2.claim(now)
    assert (first.utterance_id, first.claims) == (newer, 1), "the newest first"
    assert (second.utterance_id, second.claims) == (older, 1) and not second.dispatched_at_edge
    assert w3.claim(now) is None, "both leased, one transcribed, one an older edge's"
    # w1 and w2 died mid-decode: once their leases end the utterances are other workers', newest first...
    lease = RULES.lease_s
    claimed = [(job.utterance_id, job.claims) for at in (1, 2, 3, 4, 5, 6)
               if (job := w3.claim(now + at * (lease + 1))) is not None]  # fmt: skip
    # ...until each has been claimed max_claims (3) times
    assert claimed == [(newer, 2), (newer, 3), (older, 2), (older, 3)], claimed


def test_a_claim_given_back_is_free_at_once_and_not_counted_and_one_sent_is_held_while_central_stores_it(central, queues):
    w1, w2, _ = queues
    uid = store_utterance(central)
    job = w1.claim()
    w1.release(job)  # its link went down
    again = w2.claim()
    assert (again.utterance_id, again.claims) == (uid, 1), "free at once, that claim not counted"
    w2.sent(again)  # the broker took its transcript: central will store it
    assert w1.claim(time.time() + 2 * RULES.lease_s) is None, "held while central stores it"
    assert store_transcript(central, uid, again.end_ms / 1000)
    assert w1.claim(time.time() + SENT_HOLD_S + 1) is None, "transcribed: never claimed again"


def test_the_edges_own_transcript_replaces_a_workers_whichever_comes_first(central, queues):
    """A worker's transcript is versioned at the utterance's end, before any the edge makes (it recognises after)."""
    late, early = store_utterance(central), store_utterance(central)
    end_s = {job.utterance_id: job.end_ms / 1000 for job in (queues[0].claim(), queues[1].claim())}
    edge_version = time.time()
    assert store_transcript(central, late, end_s[late]) and store_transcript(central, late, edge_version)
    assert store_transcript(central, early, edge_version) and not store_transcript(central, early, end_s[early])


@pytest.mark.parametrize("rules", [
    RecognitionNodeConfig(after_s=5),
    RecognitionNodeConfig(after_s=0, horizon_s=5),
    RecognitionNodeConfig(after_s=0, stations=["other"]),
], ids=["held too briefly", "too old", "another station's worker"])  # fmt: skip
def test_what_a_worker_leaves_alone(central, pg_url, rules):
    store_utterance(central, heard_ago=10)
    with contextlib.closing(RecognitionQueue(pg_url, "w1", rules)) as queue:
        assert queue.claim() is None
    with contextlib.closing(RecognitionQueue(pg_url, "w1", RecognitionNodeConfig(after_s=0))) as queue:
        assert queue.claim() is not None


def test_an_edge_says_in_each_utterance_it_forwards_whether_it_dispatches_itself(tmp_path, mqtt):
    edge = edge_config(tmp_path, mqtt)
    archive = Archive(edge.storage)
    queue = ForwardQueue(edge.storage.database, edge.storage.data_dir)
    try:
        archive.store(Utterance(new_utterance_id(time.time()), "ch-market", time.time(), time.time() + 0.25, bytes(8000)))
        [entry] = queue.due(10, time.time())
        for dispatches in (True, False):
            message = parse("utterances", A, queue.payload(A, entry, dispatched_at_edge=dispatches))
            assert message.dispatched_at_edge is dispatches
    finally:
        queue.close()
        archive.close()


async def test_on_a_locked_down_broker_the_recognition_login_publishes_transcripts_only(tmp_path, pg_url, sherpa_model,
                                                                                      calls_audio):  # fmt: skip
    """...and central passes the worker's transcript on to the utterance's edge, which alone may read it."""
    server = Mosquitto(tmp_path / "locked", jurisdiction=JURISDICTION)  # as `jingbao broker setup` makes it
    assert server.access is not None
    logins = {name: server.access.add_node(name) for name in (A, "central", "recognition-1")}
    server.start()
    try:
        central = CentralIngest(logged_in(central_config(tmp_path, server, pg_url), "central", logins["central"]))
        worker = logged_in(worker_config(tmp_path, server, pg_url, sherpa_model), "recognition-1", logins["recognition-1"])
        node = RecognitionNode(worker, await asyncio.to_thread(engines_of, worker), worker="w1")
        topic, payload, uid = utterance_message(A, (calls_audio / "c002.wav").read_bytes(), dispatched_at_edge=True)
        async with running(central), aiomqtt.Client(server.host, server.port, identifier=f"node-{A}",
                                                    username=f"node-{A}", password=logins[A]) as edge:  # fmt: skip
            await edge.subscribe(Topics().node_recognised(A), qos=1)
            await edge.publish(topic, payload, qos=1)
            await until("the utterance at central", lambda: central.stored["utterances"] == 1)
            async with working(node):
                await until("its transcript at central", lambda: central.stored["transcripts"] == 1, timeout=60)
            passed_on = await asyncio.wait_for(anext(aiter(edge.messages)), 10)
            told = parse("recognised", A, passed_on.payload)
            assert (told.utterance_id, told.recognised_by) == (uid, "w1") and told.transcript.pinyin
            async with aiomqtt.Client(server.host, server.port, username="recognition-1",
                                      password=logins["recognition-1"]) as rogue:  # fmt: skip
                forged = utterance_message(A, b"x", dispatched_at_edge=False)
                await rogue.publish(forged[0], forged[1], qos=1)  # not its to write
            await asyncio.sleep(0.5)
        assert central.stored == {"utterances": 1, "transcripts": 1} and not central.rejected
        assert node.recognised == 1
    finally:
        server.stop()
