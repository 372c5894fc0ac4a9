"""Stand-ins at the true hardware edge: a pty pair posing as a CM108's /dev/hidrawN (output reports recorded,
input reports injected), the kernel side of a GPIO chip under the real gpiod bindings, and a sink wrapper that
timestamps what a transmission did."""

from __future__ import annotations

import contextlib
import os
import select
import time
import tty
from dataclasses import dataclass, field

from gpiod import LineSettings
from gpiod.line import Bias, Direction, Value

from bridge.sinks import Sink


@dataclass
class FakeHidraw:
    """The line opens `path` (the pty's slave side); the test reads and writes the master side."""

    master: int
    slave: int
    path: str

    @classmethod
    def create(cls) -> FakeHidraw:
        master, slave = os.openpty()
        tty.setraw(slave)  # bytes pass untouched: no echo, no newline translation
        return cls(master, slave, os.ttyname(slave))

    def output_reports(self, timeout: float = 0.5) -> list[bytes]:
        """Every 5-byte output report written so far (waits up to `timeout` for the first)."""
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()) if not data else 0.05)
            if not ready:
                break
            data += os.read(self.master, 4096)
        return [data[i : i + 5] for i in range(0, len(data), 5)]

    def send_input(self, buttons: int) -> None:
        os.write(self.master, bytes((buttons, 0, 0, 0)))

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class TimedSink:
    """Wraps a real sink and records (time.monotonic(), what) for begin, the first play, and end."""

    inner: Sink
    log: list[tuple[float, str]] = field(default_factory=list)
    played: int = 0

    async def open(self) -> None:
        await self.inner.open()

    async def begin(self) -> None:
        self.log.append((time.monotonic(), "begin"))
        await self.inner.begin()

    async def play(self, pcm: bytes) -> None:
        self.played += len(pcm)
        await self.inner.play(pcm)

    async def end(self, drain: bool = True) -> None:
        await self.inner.end(drain)
        self.log.append((time.monotonic(), "end" if drain else "stopped"))

    async def close(self) -> None:
        await self.inner.close()

    def at(self, what: str) -> float:
        return next(t for t, w in self.log if w == what)


@dataclass
class FakeGpioChip:
    """The kernel behind `gpiod.request_lines` for one chip (tests patch that function with `request_lines`): pin
    levels as a voltmeter would read them, with the settings the line asked for (direction, initial output,
    active-low, bias) applied the way the kernel applies them. Everything else is the real gpiod package."""

    path: str
    levels: dict[int, bool] = field(default_factory=dict)  # physical level per line offset, True = high
    settings: dict[int, LineSettings] = field(default_factory=dict)
    consumer: str | None = None
    released: bool = False

    def request_lines(self, path: str, config: dict[int, LineSettings], consumer: str | None = None) -> FakeLineRequest:
        if path != self.path:
            raise FileNotFoundError(2, "No such file or directory", path)
        self.settings, self.consumer, self.released = dict(config), consumer, False
        for offset, settings in config.items():
            if settings.direction == Direction.OUTPUT:
                self.levels[offset] = (settings.output_value == Value.ACTIVE) != settings.active_low
            else:  # an input nobody drives floats to its bias
                self.levels.setdefault(offset, settings.bias == Bias.PULL_UP)
        return FakeLineRequest(self)

    def drive_input(self, offset: int, high: bool) -> None:
        """The radio drives an input pin (e.g. its COR output pulling the opto-coupler low)."""
        assert self.settings[offset].direction == Direction.INPUT
        self.levels[offset] = high


@dataclass
class FakeLineRequest:
    chip: FakeGpioChip

    def set_value(self, offset: int, value: Value) -> None:
        settings = self.chip.settings[offset]
        assert settings.direction == Direction.OUTPUT and not self.chip.released
        self.chip.levels[offset] = (value == Value.ACTIVE) != settings.active_low

    def get_value(self, offset: int) -> Value:
        assert not self.chip.released
        active = self.chip.levels[offset] != self.chip.settings[offset].active_low
        return Value.ACTIVE if active else Value.INACTIVE

    def release(self) -> None:
        self.chip.released = True
