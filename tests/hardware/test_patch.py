"""Patching two channels: relay both ways, loop prevention (echo), half-duplex arbitration, live streaming,
and the run-time API. Transmitters run on simulated lines with real WAV-file sinks."""

from __future__ import annotations

import asyncio
import time
import wave

import httpx
import pytest
from fastapi import FastAPI

from bridge.events import Utterance, UtteranceAudio, UtteranceStarted
from bridge.sinks import FileSink
from hardware.api import patch_router
from hardware.config import FileSinkConfig, PatchConfig, SimulatedLineConfig, TransmitConfig
from hardware.lines import SimulatedLine
from hardware.patch import PatchConflict, PatchError, PatchManager
from hardware.transmit import Transmitter, silence

TONE = bytes(range(256)) * 25  # 0.2 s of recognisable, non-silent PCM


@pytest.fixture
async def rig(tmp_path):
    """Two channels, market and police, each a simulated radio with a transmitter writing WAVs."""
    txs: dict[str, Transmitter] = {}
    lines = []
    for ch in ("market", "police"):
        config = TransmitConfig(
            output=FileSinkConfig(type="file", directory=tmp_path / ch), key_up_delay_ms=0, tail_ms=0, clear_ms=0,
            echo_guard_ms=300,
        )
        line = SimulatedLine(ch, SimulatedLineConfig(type="simulated"))
        await line.open()
        txs[ch] = Transmitter(ch, line, FileSink(ch, config.output), config)
        await txs[ch].start()
        lines.append(line)
    yield txs
    for tx in txs.values():
        await tx.close()
    for line in lines:
        await line.close()


def _utt(channel: str, pcm: bytes, start: float | None = None, uid: str = "u1") -> Utterance:
    start = time.time() - 0.5 if start is None else start
    return Utterance(uid, channel, start, start + len(pcm) / 32000, pcm)


def _wavs(tx: Transmitter) -> list[bytes]:
    out = []
    for path in tx.sink.written:
        with wave.open(path) as wav:
            out.append(wav.readframes(wav.getnframes()))
    return out


async def _settle(manager: PatchManager) -> None:
    for _ in range(100):
        tasks = [t for p in manager._patches.values() for t in p.tasks]
        if not tasks:
            return
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_relays_both_ways(rig):
    manager = PatchManager(rig, [PatchConfig(a="market", b="police")])
    await manager.handle(_utt("market", TONE, uid="m1"))
    await _settle(manager)
    await manager.handle(_utt("police", TONE[::-1], uid="p1"))
    await _settle(manager)
    assert _wavs(rig["police"]) == [TONE]
    assert _wavs(rig["market"]) == [TONE[::-1]]
    assert manager.list()[0]["forwarded"] == {"market->police": 1, "police->market": 1}


async def test_patched_audio_coming_back_is_never_relayed_again(rig):
    manager = PatchManager(rig, [PatchConfig(a="market", b="police")])
    await manager.handle(_utt("market", TONE))
    await _settle(manager)
    start, _ = rig["police"]._windows[-1]
    # the police radio hears what we just transmitted and the segmenter turns it into an "utterance"
    await manager.handle(_utt("police", TONE, start=start + 0.01, uid="echo"))
    await _settle(manager)
    assert _wavs(rig["market"]) == []
    assert manager.list()[0]["echo_dropped"] == 1
    assert rig["police"].counts["sent"] == 1 and rig["market"].counts["sent"] == 0


async def test_a_chain_does_not_pass_audio_beyond_one_hop(rig, tmp_path):
    output = FileSinkConfig(type="file", directory=tmp_path / "c")
    config = TransmitConfig(output=output, key_up_delay_ms=0, tail_ms=0, clear_ms=0)
    line = SimulatedLine("c", SimulatedLineConfig(type="simulated"))
    await line.open()
    txs = {**rig, "c": Transmitter("c", line, FileSink("c", config.output), config)}
    await txs["c"].start()
    manager = PatchManager(txs, [PatchConfig(a="market", b="police"), PatchConfig(a="police", b="c")])
    await manager.handle(_utt("market", TONE))
    await _settle(manager)
    assert _wavs(txs["police"]) == [TONE] and _wavs(txs["c"]) == []
    await line.close()


async def test_half_duplex_first_talker_wins_the_other_waits(rig):
    manager = PatchManager(rig, [PatchConfig(a="market", b="police")])
    long = silence(0.6)
    await manager.handle(_utt("market", long, uid="first"))
    await asyncio.sleep(0.05)
    await manager.handle(_utt("police", TONE, uid="second"))
    await asyncio.sleep(0.1)
    assert rig["police"].transmitting and not rig["market"].transmitting, "the second direction waits"
    await _settle(manager)
    police_unkeyed, market_keyed = rig["police"]._windows[-1][1], rig["market"]._windows[-1][0]
    assert police_unkeyed <= market_keyed, "never both directions keyed at once"
    assert _wavs(rig["market"]) == [TONE]


async def test_live_mode_streams_while_the_utterance_is_received(rig):
    manager = PatchManager(rig, [PatchConfig(a="market", b="police", mode="live")])
    start = time.time() - 0.4
    await manager.handle(UtteranceStarted("market", "u1", start, TONE))
    await asyncio.sleep(0.1)
    assert rig["police"].transmitting, "keyed before the utterance has ended"
    await manager.handle(UtteranceAudio("market", "u1", TONE))
    await manager.handle(_utt("market", TONE * 2, start=start))
    await _settle(manager)
    assert _wavs(rig["police"]) == [TONE * 2]


async def test_live_echo_is_not_streamed_back(rig):
    manager = PatchManager(rig, [PatchConfig(a="market", b="police", mode="live")])
    task = asyncio.create_task(rig["police"].transmit(silence(0.3)))
    await asyncio.sleep(0.1)
    await manager.handle(UtteranceStarted("police", "echo", time.time() - 0.2, TONE))
    await task
    await _settle(manager)
    assert _wavs(rig["market"]) == [] and manager.list()[0]["echo_dropped"] == 1


async def test_run_time_errors(rig):
    manager = PatchManager(rig)
    manager.add("market", "police")
    with pytest.raises(PatchConflict):
        manager.add("police", "market")
    with pytest.raises(PatchError, match="no transmitter"):
        manager.add("market", "nowhere")
    manager.remove("police", "market")
    with pytest.raises(PatchError, match="not patched"):
        manager.remove("market", "police")


async def test_http_api(rig):
    manager = PatchManager(rig)
    app = FastAPI()
    app.include_router(patch_router(manager))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        r = await client.post("/api/patches", json={"a": "market", "b": "police", "mode": "live"})
        assert r.status_code == 201 and r.json()["mode"] == "live" and r.json()["origin"] == "api"
        assert (await client.post("/api/patches", json={"a": "police", "b": "market"})).status_code == 409
        assert (await client.post("/api/patches", json={"a": "market", "b": "x"})).status_code == 404
        assert (await client.post("/api/patches", json={"a": "market", "b": "market"})).status_code == 422
        assert [p["a"] for p in (await client.get("/api/patches")).json()] == ["market"]
        assert {t["channel"] for t in (await client.get("/api/transmitters")).json()} == {"market", "police"}
        assert (await client.delete("/api/patches/police/market")).status_code == 200
        assert (await client.delete("/api/patches/police/market")).status_code == 404
        assert (await client.get("/api/patches")).json() == []
