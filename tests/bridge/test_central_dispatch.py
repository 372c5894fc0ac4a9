"""Central dispatches across stations (issue 13): the region's jurisdictions merged (bridge/region_jurisdiction.py),
transcripts committed by the ingest dispatched by the box's own dispatcher (bridge/central_dispatch.py), alerts out
through a real mosquitto, transcripts stored in a real PostgreSQL. Every wait is bounded (`until`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
import psycopg
import pytest

from asr.live import RecognisedUtterance
from asr.transcript import Keyword, Transcript, Word
from bridge.bus import EventBus
from bridge.central import CentralIngest, CentralStore
from bridge.central_dispatch import HeardPartial, RegionArea, as_central
from bridge.config import Config
from bridge.db import connect_state
from bridge.db_postgres import PostgresConnection
from bridge.events import Utterance, new_utterance_id
from bridge.nodes import ChannelMessage, PartialMessage, channel_payload, parse, partial_payload, transcript_payload
from bridge.region import RegionError, load_region
from bridge.region_jurisdiction import merge_jurisdictions
from bridge.service import Service
from dispatch.location import hear_places
from dispatch.topics import CHANNELS, PARTIALS, Topics
from tests.support.broker import Mosquitto, free_port
from tests.support.central import (  # noqa: F401 (mqtt: the fixture, used by name)
    B_GUARD,
    FIGHT,
    A,
    B,
    C,
    central_dispatching,
    dispatching_central,
    edge_config,
    mqtt_fixture,
    region_file,
    running,
    transcript_message,
    until,
)


async def stored_undispatched(config: Config, broker: Mosquitto, *messages: tuple[str, bytes]) -> None:
    """Central's ingest commits `messages` with no dispatcher behind it: to the stores, a central killed after each
    commit and before its dispatch."""
    ingest = CentralIngest(config)
    async with running(ingest), aiomqtt.Client(broker.host, broker.port, identifier="edge-a") as edge:
        for topic, payload in messages:
            await edge.publish(topic, payload, qos=1)
        await until("stored, not dispatched", lambda: ingest.stored["transcripts"] == len(messages))


@asynccontextmanager
async def phones(broker: Mosquitto) -> AsyncIterator[dict[str, list[dict]]]:
    """Every alert the broker delivers, by responder (as their phones would get them)."""
    alerts: dict[str, list[dict]] = {}

    async def read(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            alerts.setdefault(str(message.topic).rsplit("/", 1)[1], []).append(json.loads(message.payload))

    async with aiomqtt.Client(broker.host, broker.port, identifier="phones") as client:
        await client.subscribe(f"{Topics().prefix}/alerts/+", qos=1)
        reader = asyncio.create_task(read(client))
        try:
            yield alerts
        finally:
            reader.cancel()


def test_the_region_merges_with_places_and_channels_qualified_and_refuses_a_responder_in_two_stations(tmp_path):
    region = load_region(region_file(tmp_path))
    merged = merge_jurisdictions(region)
    assert merged is not None and list(merged.stations) == [A, B, C]  # xiaozhai names no file
    j = merged.jurisdiction
    assert j.place(f"{A}.paichusuo").name == "公园北路派出所" and j.place(f"{B}.paichusuo").name == f"{B}派出所"
    assert j.place(f"{A}.piju-city").within == f"{A}.gaoqiao-market"
    assert j.responder(B_GUARD).post == f"{B}.dongkou" and j.responder(B_GUARD).channel == f"{B}.ch-market"
    assert j.responder("g-jiaju").channel == f"{A}.ch-market"  # responder ids stay theirs: their phones' topics
    assert merged.responder_station[B_GUARD] == B and merged.responder_station["g-jiaju"] == A
    clash = load_region(region_file(tmp_path, c_guard_id=B_GUARD))
    with pytest.raises(RegionError, match=f"responder id '{B_GUARD}' is in the jurisdictions of both '{B}' and '{C}'"):
        merge_jurisdictions(clash)


def test_a_place_only_the_edges_spotter_caught_is_found_at_central(tmp_path):
    """The edge's keyword spotter names its station's own place ids; central reads them as `<station>.<id>`. Incident
    words name no place and stay as they are, in every hearing."""
    region = load_region(region_file(tmp_path))
    merged = merge_jurisdictions(region)
    assert merged is not None
    places = RegionArea(region, merged).places(f"{A}.ch-market")
    spotted = Keyword("长乐东社区", "changledong-sq", 0.2, 0.9, 0.8)
    fight = Keyword("打架", "incident:fight", 1.0, 1.3, 0.7)
    garbled = Transcript(text="", pinyin="chang2 le4 dong1 you3 ren2 da3 jia4", keywords=(spotted, fight))
    heard = Transcript(text="", pinyin=garbled.pinyin, keywords=(spotted, fight), alternatives=(garbled,))
    assert hear_places(heard, places).scene() is None  # the edge's id means nothing in central's area
    central = as_central(heard, A)
    assert hear_places(central, places).scene().place.id == f"{A}.changledong-sq"
    assert [k.ref for k in central.alternatives[0].keywords] == [f"{A}.changledong-sq", "incident:fight"]


async def test_a_border_fight_alerts_the_neighbours_nearer_guard_once_however_often_it_arrives(tmp_path, mqtt, pg_url):
    config = dispatching_central(tmp_path, mqtt, pg_url)
    topic, payload = transcript_message(A, FIGHT, entry=1)
    async with central_dispatching(config) as (ingest, dispatch), phones(mqtt) as alerts, \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        await edge.publish(topic, payload, qos=1)
        await edge.publish(topic, payload, qos=1)  # delivered again (a resend): stored and dispatched once
        await until("stored once, then a repeat",
                    lambda: ingest.stored["transcripts"] == 1 and ingest.repeats["transcripts"] == 1)  # fmt: skip
        await until("the nearest guard alerted", lambda: B_GUARD in alerts)
        await until("the transcript dispatched", lambda: dispatch.dispatched == 1)
        await asyncio.sleep(0.3)  # what a second dispatch would have sent by now
    incidents = dispatch.service.dispatcher.store.list()
    assert len(incidents) == 1, incidents
    incident = incidents[0]
    assert (incident.type, incident.place_id, incident.reports) == ("fight", f"{A}.hansenzhai-gongjiaozhan", 1)
    assert incident.channel == f"{A}.ch-market" and incident.utterance_ids == (f"{A}.{json.loads(payload)['utterance_id']}",)
    # B's guard is nearer than A's own; C's is nearer still, but C does not border A
    assert set(alerts) == {B_GUARD} and [a["incident_id"] for a in alerts[B_GUARD]] == [incident.id]
    assert dispatch.dispatched == 1 and not dispatch.refused


async def test_an_utterance_recognised_again_at_its_edge_is_not_dispatched_again(tmp_path, mqtt, pg_url):
    """A newer version of a transcript central dispatched (the edge re-recognised the utterance) is stored, not read as
    a second report: a box does not dispatch a re-transcription either."""
    config = dispatching_central(tmp_path, mqtt, pg_url)
    topic, payload = transcript_message(A, FIGHT, entry=1)
    first = json.loads(payload)
    row = {"utterance_id": first["utterance_id"], "channel": first["channel"], "start_ms": first["start_ms"],
           "created_at": first["version"] + 10}  # fmt: skip
    again = transcript_payload(A, row, Transcript(text=FIGHT, pinyin="", engine="again").to_dict(), entry=2)
    async with central_dispatching(config) as (ingest, dispatch), \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        await edge.publish(topic, payload, qos=1)
        await until("the transcript dispatched", lambda: dispatch.dispatched == 1)
        await edge.publish(topic, again, qos=1)
        await until("the newer version stored and handled", lambda: dispatch.refused["recognised_again"] == 1)
    assert ingest.stored["transcripts"] == 2 and dispatch.dispatched == 1
    incidents = dispatch.service.dispatcher.store.list()
    assert len(incidents) == 1 and incidents[0].reports == 1


async def test_a_running_central_forgets_the_dispatch_record_past_the_age_limit(tmp_path, mqtt, pg_url):
    """Not only at start: a central up for weeks keeps only the record rows that still decide something."""
    config = dispatching_central(tmp_path, mqtt, pg_url)
    async with central_dispatching(config) as (_, dispatch), \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        dispatch.prune_every_s = 0.0
        dispatch.record.record("gongyuanbeilu.old", 1.0, "dispatched")
        with dispatch.record._conn:  # handled two days ago
            dispatch.record._conn.execute("UPDATE central_dispatched SET at = ? WHERE utterance_id = 'gongyuanbeilu.old'",
                                          (time.time() - 2 * 86400,))  # fmt: skip
        await edge.publish(*transcript_message(A, FIGHT, entry=1), qos=1)
        await until("the transcript dispatched", lambda: dispatch.dispatched == 1)
        await until("the old row forgotten", lambda: dispatch.record.version("gongyuanbeilu.old") is None)


async def test_what_central_cannot_dispatch_is_refused_with_a_log_line_and_the_next_dispatched(tmp_path, mqtt, pg_url, caplog):
    config = dispatching_central(tmp_path, mqtt, pg_url)
    unknown = transcript_message("nowhere", FIGHT, entry=1)
    without_file = transcript_message("xiaozhai", FIGHT, entry=1)
    good = transcript_message(A, FIGHT, entry=2)
    caplog.set_level(logging.WARNING)
    async with central_dispatching(config) as (ingest, dispatch), \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edges") as edges:  # fmt: skip
        await edges.publish(Topics().node(A, "transcripts"), b"not json", qos=1)
        await edges.publish(Topics().node(A, "transcripts"), b'{"v": 1, "station": "gongyuanbeilu", "transcript": 5}', qos=1)
        for topic, payload in (unknown, without_file, good):
            await edges.publish(topic, payload, qos=1)
        await until("the good one dispatched", lambda: dispatch.dispatched == 1)
    assert ingest.rejected == {A: 2}  # malformed: refused by the ingest, never handed to the dispatcher
    assert ingest.stored["transcripts"] == 3  # central stores every station's transcripts, dispatched or not
    assert dispatch.refused == {"unknown_station": 1, "no_jurisdiction": 1}
    refusals = [r.getMessage() for r in caplog.records if r.name == "bridge.central_dispatch"]
    assert any("nowhere" in m and "not in the region file" in m for m in refusals), refusals
    assert any("xiaozhai" in m and "no jurisdiction file" in m for m in refusals), refusals
    assert [i.place_id for i in dispatch.service.dispatcher.store.list()] == [f"{A}.hansenzhai-gongjiaozhan"]


async def test_what_an_edges_sos_desk_took_is_stored_and_never_dispatched_at_central(tmp_path, mqtt, pg_url):
    """A hot microphone's words or an emergency phrase are the edge's SOS: read at central as a report of its own they
    would raise a second incident and alert the responders twice. Neither live nor when read back at start."""
    config = dispatching_central(tmp_path, mqtt, pg_url)
    async with phones(mqtt) as alerts:
        await stored_undispatched(config, mqtt, transcript_message(A, "救命，我被打了", entry=1, sos=True))
        async with central_dispatching(config) as (ingest, dispatch), \
                aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
            await until("the one read back at start refused", lambda: dispatch.refused["sos"] == 1)
            await edge.publish(*transcript_message(A, FIGHT, entry=2, sos=True), qos=1)  # the hot mic: 有人打架
            await edge.publish(*transcript_message(A, ROUTINE, entry=3), qos=1)
            await until("the routine line read after it", lambda: dispatch.dispatched == 1)
            assert dispatch.counters()["refused"] == {"sos": 2} and ingest.stored["transcripts"] == 2
            await asyncio.sleep(0.3)  # what a dispatch would have sent by now
    assert dispatch.service.dispatcher.store.list() == [] and alerts == {}


async def test_what_an_edge_dispatched_itself_is_left_to_it_with_one_warning(tmp_path, mqtt, pg_url, caplog):
    """An edge left on node.dispatch: edge while the region names its jurisdiction file at central: both would alert
    every responder for the same report. Central leaves it to the edge, and says so once."""
    config = dispatching_central(tmp_path, mqtt, pg_url)
    caplog.set_level(logging.WARNING)
    async with phones(mqtt) as alerts, central_dispatching(config) as (_, dispatch), \
                aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        for entry in (1, 2):
            await edge.publish(*transcript_message(A, FIGHT, entry=entry, dispatched_at_edge=True), qos=1)
        await edge.publish(*transcript_message(A, ROUTINE, entry=3), qos=1)
        await until("the routine line read after them", lambda: dispatch.dispatched == 1)
        assert dispatch.counters()["refused"] == {"dispatched_at_edge": 2}
        await asyncio.sleep(0.3)
    assert dispatch.service.dispatcher.store.list() == [] and alerts == {}
    warnings = [r.getMessage() for r in caplog.records if r.name == "bridge.central_dispatch" and A in r.getMessage()]
    assert len(warnings) == 1 and "node.dispatch" in warnings[0], warnings


async def test_an_edge_leaving_dispatch_to_central_raises_no_incident_itself(tmp_path, mqtt):
    heard = Transcript(text=FIGHT, pinyin="", engine="test")
    start = time.time() - 3
    utterance = Utterance(new_utterance_id(start), "ch-market", start, start + 2.0, b"")
    edge = edge_config(tmp_path, mqtt)
    for role, dispatch, incidents in (("edge", "central", 0), ("edge", "edge", 1), ("all", "central", 1)):
        config = edge.model_copy(update={"node": edge.node.model_copy(update={"dispatch": dispatch})})
        config = config.model_copy(update={"storage": config.storage.model_copy(update={"data_dir": tmp_path / role / dispatch})})
        service = Service(config, role=role)
        assert service.dispatch is not None  # its dispatcher still serves SOS, tasks, patrols, the console
        await service._on_transcript(heard, utterance)
        assert len(service.dispatch.dispatcher.store.list()) == incidents, (role, dispatch)
        await service.dispatch.dispatcher.close()


async def test_an_edge_leaving_dispatch_to_central_sends_it_its_partials_live_and_none_of_a_hot_microphone(tmp_path, mqtt):
    """The edge's live recogniser hands each partial to the service: with node.dispatch central it goes to central
    at once (QoS 0, not queued), dropped while the link is down; one of a phone's hot microphone stays the edge's SOS.
    A channel keying up goes to central's console the same way."""
    edge = edge_config(tmp_path, mqtt)
    service = Service(edge.model_copy(update={"node": edge.node.model_copy(update={"dispatch": "central"})}), role="edge")
    assert service.forwarder is not None and service.dispatch is not None
    start = time.time() - 2
    speaking = RecognisedUtterance(new_utterance_id(start), "ch-market", start, start + 1.5, paused=True, settled=True)
    heard = Transcript(text=FIGHT, pinyin="", engine="test")
    await service._on_partial(heard, speaking)  # not connected yet: dropped, the final will decide
    assert service.forwarder.live == {"partials dropped": 1}
    async with aiomqtt.Client(mqtt.host, mqtt.port, identifier="central-test") as central:
        await central.subscribe(Topics().node_live(PARTIALS), qos=0)
        await central.subscribe(Topics().node_live(CHANNELS), qos=0)
        sending = asyncio.create_task(service.forwarder.run())
        await until("the edge connected", lambda: service.forwarder.connected)
        await service._on_partial(heard, speaking)
        received = await asyncio.wait_for(anext(aiter(central.messages)), 5)
        message = parse(PARTIALS, A, received.payload)
        assert isinstance(message, PartialMessage) and message.utterance_id == speaking.id and message.paused
        assert message.transcript.text == FIGHT and message.heard_ms == round(speaking.end * 1000)
        assert HeardPartial.of_partial(message).settled  # the pause went on: central alerts what the final would
        older = {k: v for k, v in json.loads(received.payload).items() if k != "settled"}  # an edge before the field
        assert not HeardPartial.of_partial(parse(PARTIALS, A, json.dumps(older).encode())).settled  # type: ignore[arg-type]
        # the channel keying up, for central's console: sent once however often its state is published
        for _ in range(3):
            service.bus.publish("channel", {"id": "ch-market", "talking": True, "level_dbfs": -20.0})
        keyed = parse(CHANNELS, A, (await asyncio.wait_for(anext(aiter(central.messages)), 5)).payload)
        assert isinstance(keyed, ChannelMessage) and (keyed.channel, keyed.talking) == ("ch-market", True)
        # a guard's SOS with its hot microphone open on the channel: its words are the SOS's, sent nowhere
        sos = service.dispatch.sos.raise_from_phone("g-jiaju")
        service.dispatch.sos.open_hot_mic(sos.id, "g-jiaju", "ch-market")
        now = time.time()
        await service._on_partial(heard, RecognisedUtterance(new_utterance_id(now), "ch-market", now, now + 1, paused=True))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(central.messages)), 0.5)
        assert service.forwarder.live == {"partials dropped": 1, "partials sent": 1, "channels sent": 1}
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
    await service.dispatch.dispatcher.close()


def test_central_reads_a_stored_transcript_back_whole_as_its_newest_version(pg_url):
    """What central's dispatcher reads again at start: every hearing the dispatcher weighs (alternatives), the
    newest version only, oldest utterance first, with the edge's ids."""
    hearing = Transcript(text="韩森寨公交站有人打价", pinyin="", engine="test")
    heard = Transcript(text=FIGHT, pinyin="", engine="test", words=(Word("打架", 1.0, 1.6, 0.9),), alternatives=(hearing,))
    store = CentralStore(pg_url)
    try:
        now = time.time()
        older, newer = (parse("transcripts", A, transcript_payload(A, {"utterance_id": uid, "channel": "ch-market",
                        "start_ms": round(start * 1000), "created_at": now}, heard.to_dict(), entry=1))
                        for uid, start in (("u-older", now - 60), ("u-newer", now - 30)))  # fmt: skip
        assert store.store(newer) and store.store(older)
        redone = newer.model_copy(update={"version": now + 1, "transcript": hearing})
        assert store.store(redone) and not store.store(newer)  # a newer version replaces it, an older one does not
        read = store.transcripts_since(round((now - 45) * 1000))
        assert read == [redone.model_copy(update={"entry": None})]
        assert store.transcripts_since(0) == [older.model_copy(update={"entry": None}), read[0]]
        assert store.transcripts_since(0)[0].transcript.alternatives == (hearing,)
    finally:
        store.close()


ROUTINE = "收到"  # a line that raises nothing: dispatched once it is read, so what was read before it is known


async def test_a_transcript_committed_and_not_dispatched_when_central_stopped_is_dispatched_once_at_its_next_start(
    tmp_path, mqtt, pg_url
):  # fmt: skip
    config = dispatching_central(tmp_path, mqtt, pg_url)
    fight = transcript_message(A, FIGHT, entry=1)
    stale = transcript_message(A, FIGHT, entry=2, heard_ago=2 * 3600)  # within the merge window of nothing now
    async with phones(mqtt) as alerts:
        await stored_undispatched(config, mqtt, stale, fight)
        async with central_dispatching(config) as (ingest, dispatch), \
                aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
            await until("the fight read again and dispatched", lambda: dispatch.dispatched == 1 and B_GUARD in alerts)
            assert dispatch.recovered == 1  # the stale one was not even read again
            await edge.publish(*fight, qos=1)  # the edge resends it: a repeat, nothing new
            late = transcript_message(A, FIGHT, entry=3, heard_ago=20 * 60)  # a backlog arriving after a long outage
            await edge.publish(*late, qos=1)
            await until("the repeat and the late one taken", lambda: ingest.repeats["transcripts"] == 1
                        and dispatch.refused["stale"] == 1)  # fmt: skip
            await asyncio.sleep(0.3)  # what a second dispatch would have sent by now
            incidents = dispatch.service.dispatcher.store.list()
            assert dispatch.counters() == {"dispatched": 1, "refused": {"stale": 1}, "recovered": 1, "repeats": 0,
                                          "partials": {}}
        # started again: the fight's version is recorded as dispatched, so it is not read again
        async with central_dispatching(config) as (ingest, dispatch), \
                aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
            await edge.publish(*transcript_message(A, ROUTINE, entry=4), qos=1)
            await until("the routine line read", lambda: dispatch.dispatched == 1)
            await asyncio.sleep(0.3)
            assert dispatch.service.dispatcher.store.list() == incidents
    assert len(incidents) == 1 and incidents[0].reports == 1, incidents
    assert incidents[0].utterance_ids == (f"{A}.{json.loads(fight[1])['utterance_id']}",)
    assert set(alerts) == {B_GUARD} and [a["incident_id"] for a in alerts[B_GUARD]] == [incidents[0].id]


async def test_central_killed_after_the_dispatchers_writes_and_before_its_record_does_not_count_the_report_twice(
    tmp_path, mqtt, pg_url
):  # fmt: skip
    config = dispatching_central(tmp_path, mqtt, pg_url)
    fight = transcript_message(A, FIGHT, entry=1)
    async with phones(mqtt) as alerts:
        async with central_dispatching(config) as (_, dispatch), \
                aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
            await edge.publish(*fight, qos=1)
            await until("the fight dispatched", lambda: dispatch.dispatched == 1 and B_GUARD in alerts)
        with contextlib.closing(connect_state(config.storage)) as conn, conn:
            assert conn.execute("DELETE FROM central_dispatched").rowcount == 1  # as if killed before writing it
        async with central_dispatching(config) as (_, dispatch), \
                aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
            await edge.publish(*transcript_message(A, ROUTINE, entry=2), qos=1)
            await until("the routine line read", lambda: dispatch.dispatched == 1)
            await asyncio.sleep(0.3)
            incidents = dispatch.service.dispatcher.store.list()
            # the routine line alone was read: live, or by the start's recovery when committed before it looked
            assert dispatch.dispatched == 1 and dispatch.record.version(incidents[0].utterance_ids[0]) is not None
    assert len(incidents) == 1 and incidents[0].reports == 1, incidents  # not merged into itself a second time
    assert len(alerts[B_GUARD]) == 1


async def test_a_transcript_handed_over_while_postgresql_is_away_is_dispatched_once_it_answers(
    tmp_path, mqtt, postgres, pg_url
):  # fmt: skip
    """Central's state is in PostgreSQL: a transcript committed just before PostgreSQL went away waits for it (the
    dispatcher tries again every 2 s) and is dispatched, once, when it is back; central keeps running meanwhile."""
    config = dispatching_central(tmp_path, mqtt, pg_url)
    _, payload = transcript_message(A, FIGHT, entry=1)
    message = parse("transcripts", A, payload)
    async with phones(mqtt) as alerts, central_dispatching(config) as (_, dispatch):
        postgres.pause()
        try:
            dispatch.submit(message)
            await asyncio.sleep(3)
            assert dispatch.dispatched == 0 and B_GUARD not in alerts
        finally:
            postgres.resume()
        await until("the fight dispatched once PostgreSQL answers", lambda: B_GUARD in alerts, timeout=20)
        await asyncio.sleep(0.5)
        incidents = dispatch.service.dispatcher.store.list()
        assert dispatch.dispatched == 1 and dispatch.refused["failed"] == 0
    assert len(incidents) == 1 and len(alerts[B_GUARD]) == 1


@pytest.mark.parametrize("taken_over_by", ["itself, started again", "the standby"])
async def test_central_killed_with_alerts_pending_sends_them_once_it_is_back_and_dispatches_nothing_twice(
    tmp_path, mqtt, pg_url, taken_over_by
):  # fmt: skip
    """`jingbao run --role central` as a process, the phones' broker down: the edges' reports are stored and
    dispatched, their alerts wait in central's outbox (in PostgreSQL), and central is killed with SIGKILL. Started
    again with the phones' broker up, or replaced by the second central of a pair that stood by meanwhile (another
    machine in production, another process and data_dir here), central sends every waiting alert, raises no incident
    twice and dispatches no report again."""
    from tests.bridge.test_edge_central import run_config, start_node

    phones_broker = Mosquitto(tmp_path / "phones-broker")  # not started yet: the phones' side of the city is down
    dispatching_central(tmp_path, mqtt, pg_url)  # writes central.yaml, the node's part
    path = run_config(tmp_path, "central", storage={"data_dir": str(tmp_path / "central"), "database_url": pg_url},
                      broker={"enabled": True, "host": phones_broker.host, "port": phones_broker.port,
                              "client_id": "central-dispatch"},
                      node={"region": str(region_file(tmp_path)), "broker": {"host": mqtt.host, "port": mqtt.port}},
                      dispatch={"responders": {"guards": 1, "police": 0}})  # fmt: skip
    standby_path = run_config(tmp_path, "central-run", storage={"data_dir": str(tmp_path / "standby"), "database_url": pg_url},
                              web={"port": free_port()})  # fmt: skip
    reports = [(A, FIGHT), (C, "北院门小市有人偷钱包"), (B, "长乐中路东口市场着火了")]  # three stations, three incidents

    def pending() -> tuple[int, int]:
        """(incidents, alerts waiting in the outbox) in central's PostgreSQL, as the process left them."""
        with contextlib.suppress(psycopg.Error, KeyError), contextlib.closing(PostgresConnection(pg_url)) as conn:
            return (conn.execute("SELECT count(*) FROM incidents").fetchone()[0],
                    conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0])  # fmt: skip
        return 0, 0

    central = await start_node("central", path)
    standby = None
    try:
        async with aiomqtt.Client(mqtt.host, mqtt.port, identifier="edges") as edges:
            for entry, (station, text) in enumerate(reports, 1):
                message = transcript_message(station, text, entry=entry)
                # as an edge's forwarder does: again until central has it (before central subscribes, nobody does)
                while stored_transcripts(pg_url) < entry:
                    assert central.returncode is None, (tmp_path / "central.log").read_text(encoding="utf-8")
                    await edges.publish(*message, qos=1)
                    await asyncio.sleep(0.5)
        await until("three incidents, their alerts waiting", lambda: pending()[0] == 3 and pending()[1] >= 3, timeout=60)
        if taken_over_by == "the standby":
            standby = await start_node("central", standby_path)  # logs to central.log as well, after the first's lines
            await until("the second central standing by", lambda: "standing by" in (tmp_path / "central.log").read_text(
                encoding="utf-8"), timeout=60)  # fmt: skip
        central.kill()  # SIGKILL, the alerts still in the outbox
        await central.wait()
        waiting = pending()[1]
        phones_broker.start()
        async with phones(phones_broker) as alerts:
            central = standby or await start_node("central", path)
            await until("every waiting alert sent", lambda: pending()[1] == 0, timeout=60)
            await until("the phones alerted", lambda: sum(len(a) for a in alerts.values()) >= 3, timeout=10)
            await asyncio.sleep(1.0)  # what a second dispatch would have sent by now
        central.terminate()
        assert await asyncio.wait_for(central.wait(), 20) == 0
    finally:
        for process in (central, standby):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        phones_broker.stop()
    if taken_over_by == "the standby":
        assert "holds the lease: taking over" in (tmp_path / "central.log").read_text(encoding="utf-8")
    with contextlib.closing(PostgresConnection(pg_url)) as conn:
        incidents = conn.execute("SELECT id, place_id, reports FROM incidents").fetchall()
        handled = conn.execute("SELECT outcome FROM central_dispatched").fetchall()
    assert len(incidents) == 3 and all(row["reports"] == 1 for row in incidents), [dict(r) for r in incidents]
    assert [row["outcome"] for row in handled] == ["dispatched"] * 3
    sent = [a["incident_id"] for received in alerts.values() for a in received]
    assert sorted(set(sent)) == sorted(row["id"] for row in incidents) and waiting >= 3
    # at least once: a repeat would carry its outbox id, which a phone drops; here none came twice
    assert len(sent) == len(set((a["incident_id"], r) for r, received in alerts.items() for a in received))


def stored_transcripts(pg_url: str) -> int:
    with contextlib.suppress(psycopg.Error), psycopg.connect(pg_url) as conn:  # no table before central makes it
        return conn.execute("SELECT count(*) FROM transcripts").fetchone()[0]
    return 0


def partial_message(station: str, utterance_id: str, text: str, *, heard_ago: float = 0.5) -> tuple[str, bytes]:
    """An edge's partial transcript of `utterance_id` (begun 3 s before it was heard), the speaker pausing."""
    heard = time.time() - heard_ago
    payload = partial_payload(station, utterance_id, "ch-market", heard - 3, heard, True,
                              Transcript(text=text, pinyin="", engine="test", conf=0.9).to_dict())  # fmt: skip
    return Topics().node(station, PARTIALS), payload


async def test_an_edges_partial_transcript_raises_a_provisional_alert_at_central_which_the_final_confirms(
    tmp_path, mqtt, pg_url
):  # fmt: skip
    """An edge leaving dispatch to central sends its partial transcripts live: central raises the provisional alert
    (初报) from one, before the caller has finished, and the final transcript confirms that incident rather than
    raising a second. A partial taken long ago, or from a station central does not dispatch, raises nothing, and no
    partial is stored."""
    config = dispatching_central(tmp_path, mqtt, pg_url)
    began = time.time() - 3
    utterance_id = new_utterance_id(began)
    row = {"utterance_id": utterance_id, "channel": "ch-market", "start_ms": round(began * 1000), "created_at": time.time()}
    said = Transcript(text=FIGHT + "，请迅速赶往现场", pinyin="", engine="test")
    final = transcript_payload(A, row, said.to_dict(), entry=1)
    async with phones(mqtt) as alerts, central_dispatching(config) as (_, dispatch), \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        await edge.publish(*partial_message(A, new_utterance_id(time.time() - 70), "美食街有人打架", heard_ago=60), qos=0)
        await edge.publish(*partial_message("xiaozhai", new_utterance_id(time.time()), "美食街有人打架"), qos=0)
        await edge.publish(*partial_message(A, utterance_id, FIGHT), qos=0)
        await until("the guard alerted from the partial", lambda: B_GUARD in alerts)
        provisional = dispatch.service.dispatcher.store.list()
        assert [(i.provisional, i.place_id) for i in provisional] == [(True, f"{A}.hansenzhai-gongjiaozhan")]
        assert stored_transcripts(pg_url) == 0  # a partial is never stored
        await edge.publish(Topics().node(A, "transcripts"), final, qos=1)
        await until("the final dispatched", lambda: dispatch.dispatched == 1)
        await asyncio.sleep(0.3)
    incidents = dispatch.service.dispatcher.store.list()
    assert [(i.id, i.provisional, i.reports) for i in incidents] == [(provisional[0].id, False, 1)]
    assert {a["incident_id"] for a in alerts[B_GUARD]} == {provisional[0].id}
    assert dispatch.partials == {"read": 1, "stale": 1, "ignored": 1}


async def test_a_final_committed_while_central_was_down_settles_the_provisional_incident_its_partial_raised(
    tmp_path, mqtt, pg_url
):  # fmt: skip
    """Central raised a provisional incident from an edge's partial, and stopped before the final came; the final,
    committed meanwhile (a central killed after the commit), is read back at the next start and confirms that
    incident, rather than being taken as dispatched already because an incident holds its utterance."""
    config = dispatching_central(tmp_path, mqtt, pg_url)
    began = time.time() - 3
    utterance_id = new_utterance_id(began)
    row = {"utterance_id": utterance_id, "channel": "ch-market", "start_ms": round(began * 1000), "created_at": time.time()}
    final = transcript_payload(A, row, Transcript(text=FIGHT, pinyin="", engine="test").to_dict(), entry=1)
    async with central_dispatching(config) as (_, dispatch), \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        await edge.publish(*partial_message(A, utterance_id, FIGHT), qos=0)
        await until("the provisional incident", lambda: dispatch.service.dispatcher.store.list())
    await stored_undispatched(config, mqtt, (Topics().node(A, "transcripts"), final))
    async with central_dispatching(config) as (_, dispatch):
        await until("the final read back", lambda: dispatch.recovered == 1)
        incidents = dispatch.service.dispatcher.store.list()
    assert [(i.provisional, i.place_id, i.reports) for i in incidents] == [(False, f"{A}.hansenzhai-gongjiaozhan", 1)]


async def test_an_edges_sos_final_settles_the_provisional_incident_its_partial_raised_at_central(tmp_path, mqtt, pg_url):
    """A caller's partial raised a provisional incident at central; his final holds an emergency phrase, so his edge
    raised the SOS and says so (`sos`). Central still lets that final settle its provisional incident, as the SOS desk
    leaves it to the dispatcher on a box, instead of leaving it provisional for good."""
    config = dispatching_central(tmp_path, mqtt, pg_url)
    began = time.time() - 3
    utterance_id = new_utterance_id(began)
    row = {"utterance_id": utterance_id, "channel": "ch-market", "start_ms": round(began * 1000), "created_at": time.time()}
    said = Transcript(text=FIGHT + "，我被打了", pinyin="", engine="test")
    async with central_dispatching(config) as (_, dispatch), \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        await edge.publish(*partial_message(A, utterance_id, FIGHT), qos=0)
        await until("the provisional incident", lambda: dispatch.service.dispatcher.store.list())
        await edge.publish(Topics().node(A, "transcripts"), transcript_payload(A, row, said.to_dict(), entry=1, sos=True))
        await until("the final read", lambda: dispatch.dispatched == 1)
    assert [i.provisional for i in dispatch.service.dispatcher.store.list()] == [False]
    assert not dispatch.refused


async def test_live_node_messages_never_stop_central_and_an_old_key_up_is_not_shown(tmp_path, mqtt, pg_url):
    """A partial or channel state that is no message (it even names a queue entry) is a counted rejection, not an
    acknowledgement of a kind the edge never queues, and central goes on; a key-up taken long ago is not put on the
    console's bus."""
    bus = EventBus()
    states = bus.subscribe({"channel"})
    central = CentralIngest(dispatching_central(tmp_path, mqtt, pg_url), bus=bus, on_partial=lambda message: None)
    async with running(central), aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:
        await edge.publish(Topics().node(A, PARTIALS), b'{"v": 1, "station": "%s", "entry": 5, "paused": "yes"}' % A.encode())
        await edge.publish(Topics().node(A, CHANNELS), b'{"v": 1, "entry": 6}')
        await edge.publish(Topics().node(A, CHANNELS), channel_payload(A, "ch-market", True, time.time() - 60))
        await edge.publish(Topics().node(A, CHANNELS), channel_payload(A, "ch-market", True, time.time()))
        await edge.publish(*transcript_message(A, FIGHT, entry=7), qos=1)
        await until("the transcript after them stored", lambda: central.stored["transcripts"] == 1)
        keyed = await asyncio.wait_for(states.queue.get(), 5)
    assert keyed.data == {"id": f"{A}.ch-market", "talking": True} and states.queue.empty()
    assert central.rejected[A] == 2
