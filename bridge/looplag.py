"""How late the event loop runs: every source, channel and web request shares one loop, so anything that blocks it
(a slow call made on the loop instead of in a thread) delays them all.

`LoopLagMonitor.run()` sleeps a short interval again and again; how much later than asked it wakes is the loop's
lag. It keeps the latest value and the longest over the last `window_s` (for /healthz and /api/channels), counts the
stalls over `stall_s` and logs them at WARNING, at most one line per `log_every_s` (the ones in between are counted
in the next line, never a flood). A stall is not always one slow call: asyncio runs every callback that is ready
before it looks at its timers again, so many tasks each doing a little in the same turn stall it as much.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

logger = logging.getLogger(__name__)

INTERVAL_S = 0.025  # a stall is measured to within this (it may begin just after a wake-up)
WINDOW_S = 60.0
STALL_S = 0.1  # a loop blocked this long delays every channel's frames and every web request noticeably
LOG_EVERY_S = 10.0


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

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.record(max(0.0, loop.time() - asked), time.monotonic())

    def record(self, lag_s: float, now: float) -> None:
        self.lag_s = lag_s
        while self._peaks and self._peaks[-1][1] <= lag_s:
            self._peaks.pop()
        self._peaks.append((now, lag_s))
        while self._peaks[0][0] < now - self.window_s:
            self._peaks.popleft()
        if lag_s > self.stall_s:
            self._stalled(lag_s, now)

    @property
    def max_lag_s(self) -> float:
        """The longest lag in the last `window_s` seconds."""
        return self._peaks[0][1] if self._peaks else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields /healthz and each /api/channels entry carry (flat, so a poller can pick them out by name)."""
        return {"loop_lag_s": round(self.lag_s, 3), "loop_lag_max_s": round(self.max_lag_s, 3), "loop_stalls": self.stalls}

    def _stalled(self, lag_s: float, now: float) -> None:
        self.stalls += 1
        self._unlogged += 1
        self._unlogged_longest = max(self._unlogged_longest, lag_s)
        if now - self._last_log < self.log_every_s:
            return
        others = self._unlogged - 1
        since = f" ({others} more since the last report, the longest {self._unlogged_longest:.2f} s)" if others else ""
        logger.warning(
            "event loop stalled %.2f s: something blocked it (every channel and request waited)%s", lag_s, since
        )
        self._last_log = now
        self._unlogged = 0
        self._unlogged_longest = 0.0
