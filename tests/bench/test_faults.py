"""bench/faults.py without a service: its feed outlives a killed reader, and what was on the air meanwhile is told
apart from what the service had accepted."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.faults import CLOSE_S, GappedFeed, in_window
from bench.loadgen import FRAME, SAMPLE_RATE, Clip, Transmission


def reader(fifo: Path) -> int:
    """The service's way of reading a FIFO (bridge/sources/pipe.py): read-write, non-blocking."""
    return os.open(fifo, os.O_RDWR | os.O_NONBLOCK)


def drain(fd: int) -> int:
    n = 0
    while True:
        try:
            n += len(os.read(fd, 65536))
        except BlockingIOError:
            return n


def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_feed_drops_audio_while_nobody_reads_and_goes_on_when_the_service_is_back(tmp_path: Path):
    fifo = tmp_path / "ch0.pcm"
    os.mkfifo(fifo)
    service = reader(fifo)
    feed = GappedFeed([[]], [os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)], paths=[fifo], gaps=[[]])
    writer = threading.Thread(target=feed.run, daemon=True)
    writer.start()
    try:
        time.sleep(0.2)
        assert drain(service) > 0
        os.close(service)  # killed
        until(lambda: feed.gaps[0] != [])
        time.sleep(0.2)
        assert feed.gaps[0][0][1] is None and feed.fifos[0] == -1, "the gap lasts while nobody reads"
        service = reader(fifo)  # restarted
        until(lambda: feed.gaps[0][0][1] is not None)
        time.sleep(0.1)
        assert drain(service) > 0 and feed.broken is None
        assert 0.2 < feed.gaps[0][0][1] - feed.gaps[0][0][0] < 1.0
    finally:
        feed.stop.set()
        writer.join(2)
        os.close(service)
        if feed.fifos[0] >= 0:
            os.close(feed.fifos[0])


def test_a_transmission_is_accepted_only_if_its_utterance_closed_before_the_kill_or_began_after_the_restart():
    second = SAMPLE_RATE // FRAME * FRAME
    clip = Clip("c001", "fight", np.zeros(5 * second, np.int16), 4 * second)
    feed = GappedFeed([[]], [-1], paths=[Path("unused")], gaps=[[[1030.0, 1042.0]]], t0_wall=1000.0)
    kill = [(1030.0, 1040.0)]
    closed_before = Transmission(0, 0, clip, 20 * second)  # on the air 1020-1025, closed by 1025 + CLOSE_S
    closing_at_the_kill = Transmission(0, 1, clip, int(26 - CLOSE_S) * second)
    while_dead = Transmission(0, 2, clip, 33 * second)
    after = Transmission(0, 3, clip, 43 * second)
    assert not in_window(closed_before, feed, kill)
    assert in_window(closing_at_the_kill, feed, kill)
    assert in_window(while_dead, feed, kill)
    assert not in_window(after, feed, kill)
    reading_again_late = GappedFeed([[]], [-1], paths=[Path("unused")], gaps=[[[1030.0, 1045.0]]], t0_wall=1000.0)
    assert in_window(after, reading_again_late, kill), "its FIFO was not read yet"
