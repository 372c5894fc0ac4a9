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
from bridge.archive import GENESIS_HASH, ArchivedUtterance
from bridge.central import CentralIngest, CentralStore
from bridge.config import Config, RecognitionNodeConfig
from bridge.events import new_utterance_id
from bridge.nodes import parse, transcript_payload, utterance_payload
from bridge.recognition_node import RecognitionNode
from dispatch.topics import Topics
from tests.support.broker import JURISDICTION, Mosquitto
from tests.support.central import (  # noqa: F401 (mqtt: the fixture, used by name)
    A,
    central_config,
    central_dispatching,
    dispatching_central,
    logged_in,
    mqtt_fixture,
    node_config,
    running,
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

    return build_engines(config.asr, spotter_keywords(config.jurisdiction, config.dispatch.lexicon), decoder_words())


@contextlib.asynccontextmanager
async def working(node: RecognitionNode):
    task = asyncio.create_task(node.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_utterance_central_holds_without_a_transcript_is_recognised_and_dispatched(
    tmp_path, mqtt, pg_url, sherpa_model, calls_audio
):
    """An edge forwards two utterances and no transcript (it is behind, or does not recognise): the worker recognises
    both; central stores their transcripts and dispatches the one whose edge leaves dispatch to central, not the
    one whose edge dispatches itself (it would alert twice)."""
    audio = (calls_audio / "c001.wav").read_bytes()  # 「怡园警务点请注意，美食街有人打架斗殴，请迅速赶往现场」
    topic, central_payload, central_uid = utterance_message(A, audio, dispatched_at_edge=False)
    _, edge_payload, edge_uid = utterance_message(A, audio, dispatched_at_edge=True)
    config = dispatching_central(tmp_path, mqtt, pg_url)
    worker = worker_config(tmp_path, mqtt, pg_url, sherpa_model)
    node = RecognitionNode(worker, await asyncio.to_thread(engines_of, worker), worker="w1")
    async with central_dispatching(config) as (ingest, dispatch), \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        await edge.publish(topic, central_payload, qos=1)
        await edge.publish(topic, edge_payload, qos=1)
        await until("both utterances stored", lambda: ingest.stored["utterances"] == 2)
        async with working(node):
            await until("both recognised and stored", lambda: ingest.stored["transcripts"] == 2, timeout=60)
            await until("one dispatched", lambda: dispatch.dispatched == 1)
        await asyncio.sleep(0.3)
    assert node.recognised == 2 and not node.failed
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


def store_utterance(store: CentralStore, station: str = A, *, dispatched_at_edge: bool | None = False,
                    heard_ago: float = 10.0) -> str:  # fmt: skip
    _, payload, uid = utterance_message(station, b"RIFF-not-decoded-here", dispatched_at_edge=dispatched_at_edge,
                                            heard_ago=heard_ago)  # fmt: skip
    assert store.store(parse("utterances", station, payload))
    return uid


def test_workers_claim_each_utterance_once_until_its_lease_ends_and_never_one_with_a_transcript(pg_url):
    one, two = CentralStore(pg_url), CentralStore(pg_url)
    try:
        older = store_utterance(one, heard_ago=20, dispatched_at_edge=None)
        newer = store_utterance(one, heard_ago=10)
        done = store_utterance(one, heard_ago=30)
        row = {"utterance_id": done, "channel": "ch-market", "start_ms": 0, "created_at": time.time()}
        heard = Transcript(text="好", pinyin="", engine="edge").to_dict()
        assert one.store(parse("transcripts", A, transcript_payload(A, row, heard)))
        now = time.time()
        # w1 holds its claim in an open transaction: w2 skips the locked row instead of waiting for it
        with one._conn.transaction():
            first = one.claim_for_recognition("w1", RULES, now)
            two._conn.execute("SET lock_timeout = '2s'")
            second = two.claim_for_recognition("w2", RULES, now)
        assert (first.utterance_id, first.claims) == (older, 1) and first.dispatched_at_edge  # NULL: the edge's to dispatch
        assert (second.utterance_id, second.claims) == (newer, 1) and not second.dispatched_at_edge
        assert one.claim_for_recognition("w3", RULES, now) is None, "both leased, the third has a transcript"
        # w1 and w2 died mid-decode: once their leases end the utterances are other workers', oldest first...
        lease = RULES.lease_s
        claimed = [(job.utterance_id, job.claims) for at in (1, 2, 3, 4, 5, 6)
                   if (job := two.claim_for_recognition("w3", RULES, now + at * (lease + 1))) is not None]  # fmt: skip
        # ...until each has been claimed max_claims (3) times
        assert claimed == [(older, 2), (older, 3), (newer, 2), (newer, 3)], claimed
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("rules", [
    RecognitionNodeConfig(after_s=5),
    RecognitionNodeConfig(after_s=0, horizon_s=5),
    RecognitionNodeConfig(after_s=0, stations=["other"]),
], ids=["held too briefly", "too old", "another station's worker"])  # fmt: skip
def test_what_a_worker_leaves_alone(pg_url, rules):
    store = CentralStore(pg_url)
    try:
        store_utterance(store, heard_ago=10)
        assert store.claim_for_recognition("w1", rules, time.time()) is None
        assert store.claim_for_recognition("w1", RecognitionNodeConfig(after_s=0), time.time() + 6) is not None
    finally:
        store.close()


async def test_on_a_locked_down_broker_the_recognition_login_publishes_transcripts_only(tmp_path, pg_url, sherpa_model,
                                                                                      calls_audio):  # fmt: skip
    server = Mosquitto(tmp_path / "locked", jurisdiction=JURISDICTION)  # as `jingbao broker setup` makes it
    assert server.access is not None
    logins = {name: server.access.add_node(name) for name in (A, "central", "recognition")}
    server.start()
    try:
        central = CentralIngest(logged_in(central_config(tmp_path, server, pg_url), "central", logins["central"]))
        worker = logged_in(worker_config(tmp_path, server, pg_url, sherpa_model), "recognition", logins["recognition"])
        node = RecognitionNode(worker, await asyncio.to_thread(engines_of, worker), worker="w1")
        topic, payload, _ = utterance_message(A, (calls_audio / "c002.wav").read_bytes(), dispatched_at_edge=True)
        async with running(central), aiomqtt.Client(server.host, server.port, identifier=f"node-{A}",
                                                    username=f"node-{A}", password=logins[A]) as edge:  # fmt: skip
            await edge.publish(topic, payload, qos=1)
            await until("the utterance at central", lambda: central.stored["utterances"] == 1)
            async with working(node):
                await until("its transcript at central", lambda: central.stored["transcripts"] == 1, timeout=60)
            async with aiomqtt.Client(server.host, server.port, username="recognition",
                                      password=logins["recognition"]) as rogue:  # fmt: skip
                forged = utterance_message(A, b"x", dispatched_at_edge=False)
                await rogue.publish(forged[0], forged[1], qos=1)  # not its to write
            await asyncio.sleep(0.5)
        assert central.stored == {"utterances": 1, "transcripts": 1} and not central.rejected
        assert node.recognised == 1
    finally:
        server.stop()
