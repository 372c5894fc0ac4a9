"""Central's /healthz and /metrics (bridge/central_health.py, bridge/web/central_app.py, bridge/web/metrics.py) over
its ingest and dispatcher running against a real mosquitto and the tests' PostgreSQL cluster, stopped mid-test.
Every wait is bounded; the database probe runs every PROBE_S so that an outage shows within a second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bridge.central_health import CentralHealth, DatabaseProbe
from bridge.central_lease import CentralLease
from bridge.config import Config
from bridge.region import load_region
from bridge.web.central_app import create_central_app
from dispatch.topics import Topics
from tests.support.broker import Mosquitto
from tests.support.central import (  # noqa: F401 (mqtt: the fixture, used by name)
    FIGHT,
    A,
    central_dispatching,
    dispatching_central,
    mqtt_fixture,
    transcript_message,
)
from tests.support.postgres import PostgresCluster

PROBE_S = 0.2
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (sample name, its labels sorted) -> value
TOKEN = "central-metrics-token"


def scraped(tmp_path: Path, broker: Mosquitto, pg_url: str) -> Config:
    """Central dispatching, its /metrics open to TOKEN."""
    config = dispatching_central(tmp_path, broker, pg_url)
    token = tmp_path / "metrics.token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    return config.model_copy(update={"web": config.web.model_copy(update={"metrics_token_file": token})})


@contextlib.asynccontextmanager
async def central_web(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    """Central's ingest, dispatcher and database probe running, and a client of its web app on the same loop (the
    routes read the running parts' state, as under `jingbao run --role central`)."""
    async with central_dispatching(config) as (ingest, dispatch):
        assert config.storage.database_url is not None
        lease = CentralLease(config.storage.database_url, poll_s=0.1, check_s=0.2)
        await lease.acquire()
        health = CentralHealth(ingest, dispatch, DatabaseProbe(config.storage.database_url, interval_s=PROBE_S), lease)
        probe = asyncio.create_task(health.database.run())
        holding = asyncio.create_task(lease.hold())
        app = create_central_app(config, load_region(config.node.region), health)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://central") as client:
                yield client
        finally:
            for task in (probe, holding):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            lease.release()
            app.state.web.search._conn.close()
            app.state.web.recordings._conn.close()


async def health(client: httpx.AsyncClient) -> tuple[int, dict]:
    answer = await client.get("/healthz")
    return answer.status_code, answer.json()


async def faults_within(client: httpx.AsyncClient, kinds: set[str], timeout: float) -> tuple[float, dict]:
    """Poll /healthz until exactly `kinds` are failing (none: 200); how long it took, and the body then."""
    started = time.monotonic()
    seen: dict = {}

    async def poll() -> None:
        nonlocal seen
        while True:
            status, seen = await health(client)
            if {f["kind"] for f in seen["failing"]} == kinds and status == (503 if kinds else 200):
                return
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"/healthz not failing {kinds or 'nothing'} within {timeout} s: {seen}") from None
    return time.monotonic() - started, seen


async def metrics(client: httpx.AsyncClient) -> Samples:
    """/metrics as (sample name, labels) -> value."""
    answer = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}  # fmt: skip


async def scraped_until(client: httpx.AsyncClient, what: str, condition: Callable[[Samples], object]) -> Samples:
    """Scrape /metrics until `condition` holds of it (10 s at most)."""
    samples: Samples = {}

    async def scrape() -> bool:
        nonlocal samples
        samples = await metrics(client)
        return bool(condition(samples))

    deadline = time.monotonic() + 10
    while not await scrape():
        assert time.monotonic() < deadline, f"not within 10 s: {what}: {samples}"
        await asyncio.sleep(0.05)
    return samples


async def test_healthz_is_200_while_all_is_up_and_503_naming_postgresql_or_the_broker_while_either_is_gone(
    tmp_path, mqtt, pg_url, postgres: PostgresCluster
):  # fmt: skip
    async with central_web(scraped(tmp_path, mqtt, pg_url)) as client:
        _, up = await faults_within(client, set(), timeout=5)
        assert up["ok"] and up["broker"]["connected"] and up["database"]["up"] and up["dispatch_queued"] == 0
        assert up["lease"]["holder"] and up["lease"]["held_since"] and up["lease"]["retaking_since"] is None
        postgres.pause()
        try:  # the lease's connection gone too: this central takes it back (a pair's other one might get it first)
            took, down = await faults_within(client, {"database_unreachable", "lease_retaking"}, timeout=3)
        finally:
            postgres.resume()
        assert took < 3 * PROBE_S + 1, took  # the probe's next round, not a request's timeout
        assert down["lease"]["retaking_since"] is not None
        fault = next(f for f in down["failing"] if f["kind"] == "database_unreachable")
        assert (fault["component"], fault["channel"]) == ("database", None) and "PostgreSQL does not answer" in fault["message"]
        assert not down["ok"] and down["faults"] == 2 and not down["database"]["up"] and down["broker"]["connected"]
        _, back = await faults_within(client, set(), timeout=3)  # back by itself, the lease taken back
        assert back["lease"]["retaking_since"] is None

        mqtt.stop()
        took, gone = await faults_within(client, {"broker_disconnected"}, timeout=3)
        assert took < 1.5, took  # the connection's loss, not a keepalive timeout
        fault = gone["failing"][0]
        assert fault["component"] == "broker" and f"{mqtt.host}:{mqtt.port}" in fault["message"]
        assert fault["since"] == gone["broker"]["since"] and not gone["broker"]["connected"]
        # the dispatcher's own link (the phones' broker, here the same one): a fault once down past a reconnect's time
        _, both = await faults_within(client, {"broker_disconnected", "alerts_broker_disconnected"}, timeout=8)
        assert [f["component"] for f in both["failing"]] == ["broker", "alerts"]
        mqtt.start()
        _, again = await faults_within(client, set(), timeout=10)  # its reconnection back-off
        assert again["broker"]["connects"] == 2


async def test_metrics_count_what_central_stored_acknowledged_rejected_and_dispatched(tmp_path, mqtt, pg_url):
    async with central_web(scraped(tmp_path, mqtt, pg_url)) as client, \
            aiomqtt.Client(mqtt.host, mqtt.port, identifier="edge-a") as edge:  # fmt: skip
        assert (await client.get("/metrics")).status_code == 401  # the box's rule: the bearer token, or nothing
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        await faults_within(client, set(), timeout=5)  # the probe's first answer
        before = await metrics(client)
        await edge.subscribe(Topics().node_stored(A), qos=1)  # central's acknowledgements go to a subscribed edge only
        await edge.publish(*transcript_message(A, FIGHT, entry=1), qos=1)
        await edge.publish(*transcript_message("nowhere", FIGHT, entry=1), qos=1)  # stored, refused for dispatch
        await edge.publish(Topics().node(A, "transcripts"), b"not json", qos=1)
        after = await scraped_until(client, "one dispatched, one refused, acknowledgements sent", lambda m:
                                    m[("jingbao_central_dispatched_total", ())] == 1
                                    and m.get(("jingbao_central_dispatch_refused_total", (("reason", "unknown_station"),)))
                                    and m[("jingbao_central_acks_sent_total", ())] >= 1)  # fmt: skip
    assert before[("jingbao_central_broker_up", ())] == 1 and before[("jingbao_central_database_up", ())] == 1
    assert before[("jingbao_central_stored_total", (("kind", "transcripts"),))] == 0
    assert before[("jingbao_central_dispatched_total", ())] == 0
    assert ("jingbao_central_stored_lag_seconds", ()) not in before  # nothing stored yet: no sample
    assert after[("jingbao_central_stored_total", (("kind", "transcripts"),))] == 2
    assert after[("jingbao_central_stored_total", (("kind", "utterances"),))] == 0
    assert after[("jingbao_central_rejected_total", (("station", A),))] == 1
    assert after[("jingbao_central_dispatched_total", ())] == 1
    assert after[("jingbao_central_dispatch_refused_total", (("reason", "unknown_station"),))] == 1
    assert after[("jingbao_central_dispatch_recovered_total", ())] == 0
    assert after[("jingbao_alerts_sent_total", ())] == 1  # the box's dispatch metrics, central's dispatcher's
    assert 0 < after[("jingbao_central_stored_lag_seconds", ())] < 60


async def test_the_probe_leaves_no_connection_open_when_stopped_even_mid_probe(pg_url):
    probe = DatabaseProbe(pg_url, interval_s=PROBE_S)
    running = asyncio.create_task(probe.run())
    while probe.answered_at is None:
        await asyncio.sleep(0.02)
    conn = probe._conn
    assert conn is not None and not conn.closed
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert conn.closed and probe._conn is None
    # a probe waiting in its thread when run() ended (the loop gone on to shutdown) opens no connection afterwards
    probe._ended = False
    probe._lock.acquire()
    stopped = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)  # its first probe waits on the lock in its thread
    stopped.cancel()
    await asyncio.gather(stopped, return_exceptions=True)
    probe._lock.release()
    await asyncio.sleep(0.2)
    assert probe._conn is None
