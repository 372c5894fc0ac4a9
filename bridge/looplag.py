"""How late the event loop runs: every source, channel and web request shares one loop, so anything that blocks it
(a slow call made on the loop instead of in a thread) delays them all.

`LoopLagMonitor.run()` sleeps a short interval again and again; how much later than asked it wakes is the loop's
lag. It keeps the latest value and the longest over the last `window_s` (for /healthz and /api/channels), counts the
stalls over `stall_s` and logs them at WARNING, at most one line per `log_every_s` (the ones in between are counted
in the next line, never a flood). A stall is not always one slow call: asyncio runs every callback that is ready
before it looks at its timers again, so many tasks each doing a little in the same turn stall it as much.

What blocked it: while `run()` is overdue, a watchdog thread looks at the loop thread's stack every `interval_s / 2`
(`sys._current_frames`, no tracing and nothing done while the loop keeps time) and the stall's log line names the
innermost project frames it saw most often, e.g. `in bridge/archive.py:724 _write_opus (3 of 4 looks)`. A call holding
the GIL throughout is seen only once it lets go, by the frame after it: the line then names what came next.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

INTERVAL_S = 0.025  # a stall is measured to within this (it may begin just after a wake-up)
WINDOW_S = 60.0
STALL_S = 0.1  # a loop blocked this long delays every channel's frames and every web request noticeably
LOG_EVERY_S = 10.0
PROJECT = Path(__file__).resolve().parent.parent  # frames under it are the project's; the rest is asyncio, libraries
BLAMED_FRAMES = 2  # innermost project frames named per look


class LoopLagMonitor:
    def __init__(
        self, interval_s: float = INTERVAL_S, window_s: float = WINDOW_S, stall_s: float = STALL_S,
        log_every_s: float = LOG_EVERY_S,
    ) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self.stall_s = stall_s
        self.log_every_s = log_every_s
        self.lag_s = 0.0
        self.stalls = 0
        # (monotonic time, lag), lags strictly decreasing: the window's maximum is always the first entry
        self._peaks: deque[tuple[float, float]] = deque()
        self._last_log = -float("inf")
        self._unlogged = 0  # stalls since the last line
        self._unlogged_longest = 0.0
        self._due = float("inf")  # monotonic time the loop should next wake the monitor by
        self._looks: Counter[str] = Counter()  # the loop thread's innermost project frames, seen while it was overdue

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        watchdog = threading.Thread(target=self._watch, args=(threading.get_ident(), stop), name="loop-watchdog",
                                    daemon=True)
        watchdog.start()
        try:
            while True:
                asked = loop.time() + self.interval_s
                self._due = time.monotonic() + self.interval_s
                await asyncio.sleep(self.interval_s)
                self.record(max(0.0, loop.time() - asked), time.monotonic())
        finally:
            stop.set()

    def _watch(self, loop_thread: int, stop: threading.Event) -> None:
        """(Its own thread.) While the loop is overdue by more than half a stall, note where its thread is."""
        while not stop.wait(self.interval_s / 2):
            if time.monotonic() - self._due > self.stall_s / 2:
                frame = sys._current_frames().get(loop_thread)
                if frame is not None:
                    self._looks[where(frame)] += 1

    def record(self, lag_s: float, now: float) -> None:
        self.lag_s = lag_s
        while self._peaks and self._peaks[-1][1] <= lag_s:
            self._peaks.pop()
        self._peaks.append((now, lag_s))
        while self._peaks[0][0] < now - self.window_s:
            self._peaks.popleft()
        looks, self._looks = self._looks, Counter()
        if lag_s > self.stall_s:
            self._stalled(lag_s, now, looks)

    @property
    def max_lag_s(self) -> float:
        """The longest lag in the last `window_s` seconds."""
        return self._peaks[0][1] if self._peaks else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields /healthz and each /api/channels entry carry (flat, so a poller can pick them out by name)."""
        return {"loop_lag_s": round(self.lag_s, 3), "loop_lag_max_s": round(self.max_lag_s, 3), "loop_stalls": self.stalls}

    def _stalled(self, lag_s: float, now: float, looks: Counter[str] | None = None) -> None:
        self.stalls += 1
        self._unlogged += 1
        self._unlogged_longest = max(self._unlogged_longest, lag_s)
        if now - self._last_log < self.log_every_s:
            return
        others = self._unlogged - 1
        since = f" ({others} more since the last report, the longest {self._unlogged_longest:.2f} s)" if others else ""
        seen = ""
        if looks:
            frames, count = looks.most_common(1)[0]
            seen = f", in {frames} ({count} of {looks.total()} looks)"
        logger.warning(
            "event loop stalled %.2f s: something blocked it (every channel and request waited)%s%s", lag_s, seen, since
        )
        self._last_log = now
        self._unlogged = 0
        self._unlogged_longest = 0.0


def where(frame: FrameType | None) -> str:
    """The innermost `BLAMED_FRAMES` frames of the project's own code on a stack, innermost first, or a phrase saying
    there was none."""
    found = []
    while frame is not None and len(found) < BLAMED_FRAMES:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(PROJECT) and ".venv" not in path.parts:
            found.append(f"{path.relative_to(PROJECT)}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " <- ".join(found) or "asyncio or a library (no project frame)"
