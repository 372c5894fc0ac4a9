"""The event-loop lag monitor: a call that blocks the loop is measured, logged once, and shown on /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
import pytest

from bridge.config import load_config
from bridge.looplag import LoopLagMonitor
from bridge.service import Service
from tests.bridge.test_service import write_config


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # the mistake the monitor is there to catch: blocking work on the loop


async def test_a_blocking_call_on_the_loop_is_measured_and_logged_with_where_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = LoopLagMonitor()
    task = asyncio.create_task(monitor.run())
    try:
        await asyncio.sleep(0.1)
        assert monitor.max_lag_s < 0.1 and monitor.stalls == 0
        with caplog.at_level(logging.WARNING, logger="bridge.looplag"):
            block_the_loop(0.3)
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
    assert 0.25 < monitor.max_lag_s < 0.5, monitor.max_lag_s
    assert monitor.lag_s < 0.1, "the latest measurement is after the stall"
    assert monitor.stalls == 1
    [line] = caplog.messages
    assert line.startswith("event loop stalled 0.") and float(line.split()[3]) > 0.25
    # the watchdog looked at the loop's stack while it was overdue: the blocking function, then its caller
    assert ", in tests/bridge/test_looplag.py:" in line and " block_the_loop <- tests/bridge/test_looplag.py:" in line, line
    assert " test_a_blocking_call_on_the_loop_is_measured_and_logged_with_where_it_was (" in line, line


def test_stalls_are_logged_at_most_once_per_interval_and_the_maximum_is_over_the_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = LoopLagMonitor(window_s=60, stall_s=0.1, log_every_s=10)
    with caplog.at_level(logging.WARNING, logger="bridge.looplag"):
        for now, lag in [(0.0, 0.5), (1.0, 0.2), (2.0, 0.3), (3.0, 0.01), (12.0, 0.15)]:
            monitor.record(lag, now)
    assert monitor.stalls == 4
    assert caplog.messages == [
        "event loop stalled 0.50 s: something blocked it (every channel and request waited)",
        "event loop stalled 0.15 s: something blocked it (every channel and request waited) (2 more since the last "
        "report, the longest 0.30 s)",
    ]
    assert monitor.to_dict() == {"loop_lag_s": 0.15, "loop_lag_max_s": 0.5, "loop_stalls": 4}
    monitor.record(0.01, 62.5)  # the 0.5 and 0.3 s stalls have left the window, the 0.15 s one has not
    assert monitor.max_lag_s == 0.15
    monitor.record(0.02, 80.0)
    assert monitor.max_lag_s == 0.02


async def test_healthz_and_channel_state_report_the_loop_lag(tmp_path, calls_audio) -> None:
    config = load_config(write_config(tmp_path, {"ch-a": sorted(calls_audio.glob("c0*.wav"))[:1]}))
    service = Service(config)
    run = asyncio.create_task(service.run())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.web.port}", timeout=5) as client:
            for _ in range(50):
                await asyncio.sleep(0.1)
                with contextlib.suppress(httpx.TransportError):
                    before = (await client.get("/healthz")).json()
                    break
            # longer than anything the start-up may already have cost on a loaded machine, so it is the window's maximum
            stall_s = before["loop_lag_max_s"] + 0.3
            time.sleep(stall_s)
            await asyncio.sleep(0.1)
            after = (await client.get("/healthz")).json()
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert after["loop_lag_max_s"] > stall_s - 0.05, (before, after)
    assert after["loop_stalls"] > before["loop_stalls"]
    [state] = service.channel_states()
    assert state["loop_lag_max_s"] >= after["loop_lag_max_s"] and state["loop_stalls"] == after["loop_stalls"]
