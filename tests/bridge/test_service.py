"""The service end to end: real calls replayed into channels, segmented, archived, visible on the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge.archive import Archive
from bridge.cli import main, report_native_crashes
from bridge.config import load_config
from bridge.service import Service
from bridge.web.users import UserStore
from tests.conftest import REPO
from tests.support.disk import fill, small_disk

__all__ = ["small_disk"]  # a fixture, imported for pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, channels: dict[str, list[Path]], realtime: bool = False, vad: dict | None = None,
                 **extra) -> Path:
    for name, files in channels.items():
        d = tmp_path / "audio" / name
        d.mkdir(parents=True)
        for f in files:
            shutil.copy(f, d / f.name)
    repo = Path(__file__).resolve().parents[2]
    config = {
        "jurisdiction": str(repo / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / "data"), "audio_format": "wav"},
        "broker": {"enabled": False},
        "asr": {"engine": "none"},
        "web": {"port": free_port()},
        "channels": [
            {"id": name, "name": name, "vad": vad or {},
             "source": {"type": "file", "paths": [str(tmp_path / "audio" / name)], "realtime": realtime, "gap": [2, 2]}}
            for name in channels
        ],
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


async def test_every_call_on_every_channel_is_archived_and_reported(tmp_path, calls_audio):
    calls = sorted(calls_audio.glob("c0*.wav"))
    config = load_config(write_config(tmp_path, {"ch-a": calls[:3], "ch-b": calls[3:5]}))
    service = Service(config)
    UserStore(service.db).add("op", "operator", "op-password-1")
    run = asyncio.create_task(service.run())
    base = f"http://127.0.0.1:{config.web.port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        for _ in range(50):
            await asyncio.sleep(0.1)
            with contextlib.suppress(httpx.TransportError):
                refused = await client.get("/api/channels")
                break
        login = await client.post("/api/login", json={"name": "op", "password": "op-password-1"})
        for _ in range(200):  # the files end quickly (not real time); the API stays up
            await asyncio.sleep(0.1)
            try:
                states = (await client.get("/api/channels")).json()
            except httpx.TransportError:
                continue
            if all(not s["running"] for s in states):
                break
        health = (await client.get("/healthz")).json()
        one = (await client.get("/api/channels/ch-a")).json()
        missing = await client.get("/api/channels/nope")
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)

    by_id = {s["id"]: s for s in states}
    assert by_id["ch-a"]["utterances"] == 3 and by_id["ch-b"]["utterances"] == 2
    assert one["last_utterance"]["duration"] > 1.0
    loop = {k: health.pop(k) for k in ("loop_lag_s", "loop_lag_max_s", "loop_stalls")}
    assert health == {"ok": True, "channels": 2, "running": 0, "faults": 0, "failing": []}
    assert loop["loop_lag_max_s"] < 1.0 and "loop_lag_max_s" in by_id["ch-a"]
    assert missing.status_code == 404
    assert refused.status_code == 401 and login.status_code == 200  # channel state is for logged-in users
    archived = service.archive.list(limit=100)
    assert sorted(a.channel for a in archived) == ["ch-a"] * 3 + ["ch-b"] * 2
    assert service.archive.verify().ok
    assert all((config.storage.data_dir / a.path).is_file() for a in archived)


async def test_a_missing_source_is_a_visible_fault_and_is_reopened_when_it_appears(tmp_path):
    raw = tmp_path / "radio.pcm"  # not there yet: the receiver is unplugged
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps({
        "jurisdiction": str(Path(__file__).resolve().parents[2] / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / "data"), "audio_format": "wav"},
        "broker": {"enabled": False},
        "asr": {"engine": "none"},
        "channels": [{"id": "ch-pipe", "name": "pipe", "source": {"type": "pipe", "path": str(raw)}}],
    }), encoding="utf-8")
    service = Service(load_config(config_path))
    run = asyncio.create_task(service.run(serve_http=False))
    channel = service.channels[0]
    for _ in range(100):
        await asyncio.sleep(0.05)
        if channel.state.restarts:
            break
    lost = channel.state.to_dict()
    raw.write_bytes(bytes(16000 * 2))  # plugged in: one second of silence, then the input ends
    await asyncio.wait_for(run, timeout=30)
    back = channel.state.to_dict()

    assert lost["restarts"] >= 1 and lost["active_faults"] >= 1
    assert "source lost" in lost["faults"][0]["message"] and "radio.pcm" in lost["faults"][0]["message"]
    assert back["active_faults"] == 0 and not back["running"]


async def test_an_operator_can_listen_to_a_channel_live(tmp_path, calls_audio):
    config = load_config(write_config(tmp_path, {"ch-a": [calls_audio / "c001.wav"]}))
    service = Service(config)
    channel = service.channels[0]
    heard: list[bytes] = []

    async def listen() -> None:
        async for pcm in channel.listen():
            heard.append(pcm)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    await service.run(serve_http=False)
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    assert heard and all(len(pcm) == 640 for pcm in heard)
    assert any(max(abs(int.from_bytes(pcm[i:i + 2], "little", signed=True)) for i in range(0, 640, 2)) > 1000 for pcm in heard)
    assert not channel._listeners  # a listener that goes away is forgotten


async def test_a_failed_encode_is_a_visible_channel_fault_and_loses_nothing(tmp_path, calls_audio):
    storage = {"data_dir": str(tmp_path / "data"), "audio_format": "opus", "opus_bitrate": "not-a-bitrate"}
    config = load_config(write_config(tmp_path, {"ch-a": [calls_audio / "c002.wav"]}, storage=storage))
    service = Service(config)
    await service.run(serve_http=False)
    state = service.channels[0].state.to_dict()
    [row] = service.archive.list()
    assert row.format == "wav" and row.fault  # kept in the fallback format, and the row says why
    assert state["utterances"] == 1 and state["active_faults"] == 1
    assert "archived as wav" in state["faults"][0]["message"]


async def until(condition, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_a_full_disk_is_a_503_naming_the_fault_until_the_archive_can_write_again(tmp_path, small_disk, calls_audio):
    """A call ends while the archive's disk is full (a real one): /healthz says so (503, the faults named) instead of
    ok; once the disk has room the held call is written by the retry timer and every fault ends."""
    storage = {"data_dir": str(small_disk), "audio_format": "wav", "reserve_mb": 0}
    config = load_config(write_config(tmp_path, {"ch-a": [calls_audio / "c001.wav"]}, realtime=True, storage=storage))
    service = Service(config)
    service.archive.retry_interval_s = 0.2
    run = asyncio.create_task(service.run())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.web.port}", timeout=5) as client:
        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                healthy = await client.get("/healthz")
                break
            await asyncio.sleep(0.05)
        filler = fill(small_disk)  # while the call (5.7 s, in real time) is on the air
        # The archive holds the call first and the channel records its fault just after: ask once both are said.
        await until(lambda: service.archive.held and service.channels[0].state.to_dict()["active_faults"], 30)
        full = await client.get("/healthz")
        filler.unlink()
        await until(lambda: not service.archive.held and not service.channels[0].state.to_dict()["active_faults"], 10)
        recovered = await client.get("/healthz")
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)

    assert healthy.status_code == 200 and healthy.json()["ok"]
    assert full.status_code == 503, full.text
    body = full.json()
    assert not body["ok"] and body["faults"] == 2
    [utterance_id] = [row.id for row in service.archive.list()]
    assert sorted((f["component"], f["channel"], f["kind"]) for f in body["failing"]) == [
        ("archive", "ch-a", "held"), ("channel", "ch-a", "archive")]
    assert all(utterance_id in f["message"] and "No space left on device" in f["message"] for f in body["failing"])
    assert recovered.status_code == 200 and recovered.json()["ok"] and recovered.json()["failing"] == []
    state = service.channels[0].state.to_dict()
    assert state["utterances"] == 1 and [f["active"] for f in state["faults"]] == [False]  # said, and over
    assert service.archive.verify().ok


async def run_until_sigterm(config: Path, after: float, meanwhile=None) -> tuple[int, str]:
    """`jingbao run` until its channel has played `after` seconds, then SIGTERM; its exit status and its log.
    `meanwhile()` is called as the channel starts playing."""
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "run", "--config", str(config), cwd=REPO, stderr=asyncio.subprocess.PIPE
    )
    log: list[str] = []
    try:
        async with asyncio.timeout(60):
            while "ch-a: playing 1 file(s)" not in (line := (await service.stderr.readline()).decode()):
                assert line, "the service ended before its channel played:\n" + "".join(log)
                log.append(line)
        if meanwhile is not None:
            meanwhile()
        await asyncio.sleep(after)
        service.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            log += (await service.stderr.read()).decode().splitlines(keepends=True)
            return await service.wait(), "".join(log)
    finally:
        if service.returncode is None:
            service.kill()
            await service.wait()


async def test_sigterm_closes_what_is_being_said_as_an_utterance_and_archives_it(tmp_path, calls_audio):
    """`jingbao run` stopped by SIGTERM while a call is on the air: the call so far is archived (end reason shutdown)
    and the log says so, instead of vanishing."""
    call = calls_audio / "c001.wav"  # 5.7 s, said without a pause the hang-over below would end it on
    config = write_config(tmp_path, {"ch-a": [call]}, realtime=True, vad={"stop_window_ms": 2000})
    status, said = await run_until_sigterm(config, after=2.5)  # well into the call
    assert status == 0, said
    with Archive(load_config(config).storage, readonly=True) as archive:
        [row] = archive.list()
        assert archive.verify().ok
    assert row.end_reason == "shutdown" and 1.5 < row.duration_ms / 1000 < 4.0 and row.status == "pending"
    assert f"utterance {row.id} was being spoken when the service stopped: closed after" in said
    assert f"utterance 1 archived ({row.id}," in said
    assert "stopping: 1 utterance(s) being spoken were closed with end reason shutdown" in said


async def test_stopped_with_the_disk_full_held_audio_is_spilled_and_comes_back_at_the_next_start(
    tmp_path, small_disk, calls_audio
):
    """The disk fills up during a call and the service is stopped before it has room again: the call, held in
    memory, is written to storage.spill_dir (it was lost), and the next start brings it into the archive."""
    spill = tmp_path / "spill"
    storage = {"data_dir": str(small_disk), "audio_format": "wav", "reserve_mb": 0, "spill_dir": str(spill)}
    config = write_config(tmp_path, {"ch-a": [calls_audio / "c001.wav"]}, realtime=True, vad={"stop_window_ms": 2000},
                          storage=storage)  # fmt: skip
    filled: list[Path] = []
    status, said = await run_until_sigterm(config, after=2.5, meanwhile=lambda: filled.append(fill(small_disk)))
    assert status == 0, said
    [sidecar] = spill.glob("*.json")
    assert json.loads(sidecar.read_text())["reason"] == "shutdown" and sidecar.with_suffix(".wav").is_file()
    assert f"spilled to {spill}, brought back at the next start" in said and "CRITICAL" not in said

    filled[0].unlink()  # room again; the next start plays its file as fast as it can, and is done
    loaded = load_config(config)
    channels = [ch.model_copy(update={"source": ch.source.model_copy(update={"realtime": False})}) for ch in loaded.channels]
    service = Service(loaded.model_copy(update={"channels": channels}))
    await service.run(serve_http=False)
    spilled = service.archive.get(sidecar.stem)
    assert spilled.end_reason == "shutdown" and spilled.status == "pending" and list(spill.iterdir()) == []
    assert service.archive.read_pcm(spilled.id) and service.archive.verify().ok


async def test_what_a_source_refuses_is_counted_on_the_channel_and_in_metrics(tmp_path, calls_audio):
    """A file channel with one good call and one file that is no audio: /api/channels counts the refusal by kind, and
    /metrics (Prometheus text, for the bearer token only) counts it with the utterance and an MQTT message refused."""
    (tmp_path / "metrics.token").write_text("s3cret-scraper\n")
    config = load_config(write_config(tmp_path, {"ch-a": [calls_audio / "c001.wav"]}))
    config = config.model_copy(update={"web": config.web.model_copy(
        update={"metrics_token_file": tmp_path / "metrics.token"})})  # fmt: skip
    (tmp_path / "audio" / "ch-a" / "c000-broken.wav").write_bytes(b"RIFF" + b"\xff" * 5000)
    service = Service(config)
    run = asyncio.create_task(service.run())
    base, bearer = f"http://127.0.0.1:{config.web.port}", {"Authorization": "Bearer s3cret-scraper"}
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        for _ in range(200):
            await asyncio.sleep(0.1)
            states = service.channel_states()
            if states[0]["utterances"] and not states[0]["running"]:
                break
        for _ in range(50):
            with contextlib.suppress(httpx.TransportError):
                before = await client.get("/metrics", headers=bearer)
                break
            await asyncio.sleep(0.1)
        await service.dispatch.dispatcher.on_message("jingbao/status/g-piju", b"[" * 10_000)
        after = await client.get("/metrics", headers=bearer)
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer guess"})
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)

    assert states[0]["utterances"] == 1
    assert states[0]["rejected"] == 1 and states[0]["rejected_by"] == {"undecodable": 1}
    assert "c000-broken.wav" in states[0]["source_error"]
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    old, new = scraped(before.text), scraped(after.text)
    assert new["jingbao_channel_utterances_total", (("channel", "ch-a"),)] == 1
    assert new["jingbao_source_rejected_total", (("channel", "ch-a"), ("reason", "undecodable"))] == 1
    assert ("jingbao_mqtt_rejected_total", (("reason", "status_bad_json"),)) not in old
    assert new["jingbao_mqtt_rejected_total", (("reason", "status_bad_json"),)] == 1
    assert new["jingbao_incidents_open", (("status", "dispatched"),)] == 0
    for name in ("jingbao_channel_talking", "jingbao_channel_behind_seconds", "jingbao_outbox_pending",
                 "jingbao_loop_lag_seconds", "jingbao_loop_stalls_total"):  # fmt: skip
        assert any(key[0] == name for key in new), name


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}, parsed by prometheus_client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_crash_in_a_native_library_prints_every_threads_stack():
    """`jingbao` turns faulthandler on: a segmentation fault (here a read of address 0) says where it happened."""
    crash = "import ctypes; from bridge.cli import report_native_crashes; report_native_crashes(); ctypes.string_at(0)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}  # on only if jingbao turns it on
    done = subprocess.run([sys.executable, "-c", crash], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Fatal Python error: Segmentation fault" in done.stderr and 'File "<string>", line 1' in done.stderr


def test_the_cli_run_in_process_with_its_output_captured_leaves_faulthandler_alone(monkeypatch):
    """Where stderr has no file descriptor (captured in-process, as by pytest's capsys) nothing is raised."""
    monkeypatch.setattr(faulthandler, "is_enabled", lambda: False)  # as if nothing had turned it on
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    report_native_crashes()


def test_a_port_already_taken_is_a_clear_error_before_any_channel_opens(tmp_path, calls_audio, capsys):
    """uvicorn exits from inside the loop when it cannot bind: the second `make run` beside the first hung, its
    channels open and no console. Now the command says why and ends."""
    path = write_config(tmp_path, {"ch-a": [calls_audio / "c001.wav"]}, realtime=True)
    port = yaml.safe_load(path.read_text(encoding="utf-8"))["web"]["port"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert main(["run", "--config", str(path)]) == 2
    assert f"web: cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
    with Archive(load_config(path).storage, readonly=True) as archive:
        assert archive.list() == []  # no channel was heard
