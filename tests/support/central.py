"""The central tier under test: node configs on an open mosquitto, central's ingest (and its dispatcher) running, and
the bounded wait every such test polls with.

Use it from a test module with `from tests.support.central import mqtt_fixture  # noqa: F401` and ask for the `mqtt`
fixture (an open broker, stoppable mid-test); `pg_url` comes from tests/support/postgres.py. The dispatching central
is the region of tests/bridge/test_central_dispatch.py: station A (config/jurisdiction.yaml) bordering B, and C
bordering neither; A's bus stop (FIGHT) is nearest to B's guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from asr.transcript import Transcript
from bridge.central import CentralIngest
from bridge.central_dispatch import CentralDispatch, central_dispatch
from bridge.config import Config, load_config
from bridge.events import new_utterance_id
from bridge.nodes import transcript_payload
from bridge.region import load_region
from dispatch.topics import Topics
from tests.support.broker import JURISDICTION, Mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
STATION = "gongyuanbeilu"
A, B, C = STATION, "changlezhonglu", "beiyuanmen"  # B borders A; C does not
FIGHT = "韩森寨公交站有人打架"  # A's bus stop at 34.2839, 108.9946, on A's border with B
# A's nearest guard to it is g-jiaju, at the furniture market ~140 m away; B's guard is posted ~40 m from it and C's
# ~10 m (C's post is made up: it shows that distance alone does not bring in a station not bordering the scene)
B_GUARD, C_GUARD = "g-changlezhonglu-east", "g-beiyuanmen-x"


@pytest.fixture(name="mqtt")
def mqtt_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


async def until(what: str, condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


def node_config(tmp_path: Path, broker: Mosquitto, *, name: str, client_id: str, **extra: object) -> Config:
    """A config for one node on the open test broker (the same format as a single box's)."""
    raw = {
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / name), "audio_format": "wav"},
        "broker": {"enabled": False},
        "asr": {"engine": "none"},
        "channels": [{"id": "ch-market", "name": "市场保安", "source": {"type": "file", "paths": ["x.wav"]}}],
        "node": {"broker": {"host": broker.host, "port": broker.port, "client_id": client_id}},
        # a port of its own: a node run as a process serves its web app, and two tests at once must not share 8080
        "web": {"port": free_port()},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_config(path)


def edge_config(tmp_path: Path, broker: Mosquitto, station: str = STATION) -> Config:
    config = node_config(tmp_path, broker, name=f"edge-{station}", client_id=f"node-{station}")
    return config.model_copy(update={"node": config.node.model_copy(update={"station": station})})


def logged_in(config: Config, username: str, password: str) -> Config:
    """The node config with its login on a locked-down broker (`jingbao broker add-node`)."""
    broker = config.node.broker.model_copy(update={"username": username, "password": password})
    return config.model_copy(update={"node": config.node.model_copy(update={"broker": broker})})


def central_config(tmp_path: Path, broker: Mosquitto, pg_url: str) -> Config:
    config = node_config(tmp_path, broker, name="central", client_id="central")
    return config.model_copy(update={"storage": config.storage.model_copy(update={"database_url": pg_url})})


@contextlib.asynccontextmanager
async def running(central: CentralIngest, *others: Callable[[], object]) -> AsyncIterator[None]:
    """Central and the others running; central subscribed first (before its first subscription, the broker keeps
    nothing for it)."""
    async with tasks_running(central.run):
        await asyncio.wait_for(central.subscribed.wait(), 10)
        async with tasks_running(*others):
            yield


@contextlib.asynccontextmanager
async def tasks_running(*runs: Callable[[], Coroutine[Any, Any, object]]) -> AsyncIterator[None]:
    """Each `run()` as a task while the block runs; cancelled and awaited after it."""
    tasks = [asyncio.create_task(run()) for run in runs]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def station_file(path: Path, station: str, place: tuple[str, str, float, float], guard: str, *, guard_id: str) -> Path:
    """A small station jurisdiction: one market (`place`: id, name, lat, lon) with its guard."""
    place_id, name, lat, lon = place
    raw = {
        "name": f"{station}辖区", "station": station, "center": {"lat": lat, "lon": lon},
        "channels": [{"id": "ch-market", "name": "市场保安"}],
        "places": [{"id": place_id, "name": name, "kind": "market", "lat": lat, "lon": lon},
                   {"id": "paichusuo", "name": f"{station}派出所", "aliases": ["派出所"], "kind": "police_post",
                    "lat": lat + 0.01, "lon": lon + 0.01}],
        "responders": [{"id": guard_id, "name": guard, "role": "guard", "channel": "ch-market", "post": place_id}],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def region_file(tmp_path: Path, *, c_guard_id: str = C_GUARD) -> Path:
    b = station_file(tmp_path / "b.yaml", B, ("dongkou", "长乐中路东口市场", 34.2841, 108.9950), "东口市场保安", guard_id=B_GUARD)
    c = station_file(tmp_path / "c.yaml", C, ("xiaoshi", "北院门小市", 34.2840, 108.9946), "小市保安", guard_id=c_guard_id)
    raw = {
        "name": "测试市局",
        "bureaus": [
            {"id": "xincheng", "name": "新城分局", "stations": [
                {"id": A, "name": "公园北路派出所", "jurisdiction": str(JURISDICTION), "neighbours": [B]},
                {"id": B, "name": "长乐中路派出所", "jurisdiction": str(b)},
                {"id": "xiaozhai", "name": "小寨派出所"},  # no jurisdiction file: its edge dispatches itself
            ]},
            {"id": "lianhu", "name": "莲湖分局", "stations": [{"id": C, "name": "北院门派出所", "jurisdiction": str(c)}]},
        ],
    }  # fmt: skip
    path = tmp_path / "region.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def dispatching_central(tmp_path: Path, broker: Mosquitto, pg_url: str) -> Config:
    """Central with its region, alerting on the test broker: one guard per incident, no police, so that who is
    nearest is who is alerted."""
    config = central_config(tmp_path, broker, pg_url)
    alerts_broker = config.broker.model_copy(update={"enabled": True, "host": broker.host, "port": broker.port,
                                                     "client_id": "central-dispatch"})  # fmt: skip
    responders = config.dispatch.responders.model_copy(update={"guards": 1, "police": 0})
    return config.model_copy(update={
        "broker": alerts_broker,
        "node": config.node.model_copy(update={"region": region_file(tmp_path)}),
        "dispatch": config.dispatch.model_copy(update={"responders": responders}),
    })  # fmt: skip


def transcript_message(
    station: str, text: str, *, entry: int, heard_ago: float = 5.0, sos: bool = False, dispatched_at_edge: bool = False
) -> tuple[str, bytes]:
    """The topic and payload of an edge forwarding a transcript of an utterance begun `heard_ago` s ago (`sos`: its
    SOS desk took it; `dispatched_at_edge`: the edge dispatched it itself)."""
    start = time.time() - heard_ago
    row = {"utterance_id": new_utterance_id(start), "channel": "ch-market", "start_ms": round(start * 1000),
           "created_at": time.time()}  # fmt: skip
    payload = transcript_payload(station, row, Transcript(text=text, pinyin="", engine="test").to_dict(), entry=entry, sos=sos,
                                 dispatched_at_edge=dispatched_at_edge)
    return Topics().node(station, "transcripts"), payload


@contextlib.asynccontextmanager
async def central_dispatching(config: Config) -> AsyncIterator[tuple[CentralIngest, CentralDispatch]]:
    """Central's ingest and dispatcher running, the dispatcher's broker link connected."""
    dispatch = central_dispatch(config, load_region(config.node.region))
    assert dispatch is not None
    ingest = CentralIngest(config, on_transcript=dispatch.submit, on_partial=dispatch.submit_partial)
    async with running(ingest, dispatch.run):
        assert dispatch.service.link is not None
        await asyncio.wait_for(dispatch.service.link.wait_connected(), 10)
        yield ingest, dispatch

