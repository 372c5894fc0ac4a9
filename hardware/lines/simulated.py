"""A line held in memory: the demo service's radios, and the tests' stand-in for a real PTT/COR interface.

`set_carrier()` plays the part of a radio receiving; every key/unkey/carrier change is recorded with its time,
so tests can assert the timing of a transmission from the line's own log.
"""

from __future__ import annotations

import time

from hardware.config import SimulatedLineConfig
from hardware.lines.base import Line


class SimulatedLine(Line):
    has_ptt = True

    def __init__(self, name: str, config: SimulatedLineConfig | None = None) -> None:
        super().__init__(name)
        self.has_cor = (config or SimulatedLineConfig(type="simulated")).cor
        self.log: list[tuple[float, str]] = []  # (time.monotonic(), "key" | "unkey" | "carrier up" | "carrier down")

    def _open(self) -> None:
        if self.has_cor:
            self._set_carrier(False)

    def _write_ptt(self, active: bool) -> None:
        if active != self.keyed:
            self.log.append((time.monotonic(), "key" if active else "unkey"))

    async def _watch(self) -> None:
        """Nothing to follow: the carrier changes only when set_carrier() is called."""

    def set_carrier(self, present: bool, ts: float | None = None) -> None:
        """The simulated radio starts or stops receiving (at wall-clock `ts`, default now)."""
        if present != self.carrier:
            self.log.append((time.monotonic(), "carrier up" if present else "carrier down"))
        self._set_carrier(present, ts)
