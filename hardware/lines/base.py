"""The one small interface every radio control line offers: key PTT, unkey, read carrier/COR, watch changes, close.

Keying is synchronous on purpose: it is a single ioctl or a 5-byte write, and a synchronous `unkey()` can run
anywhere it must (a `finally`, an atexit handler, after the event loop is gone). Carrier changes are delivered as
`LineEvent`s to async subscribers and kept in a short history so received frames can be stamped with the carrier
state at their own timestamp.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import contextlib
import logging
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from bridge.audio import Frame
from bridge.backoff import Backoff

logger = logging.getLogger(__name__)

CARRIER_HISTORY = 256  # carrier transitions kept for carrier_at(); minutes of traffic at radio pace


class LineError(Exception):
    """A control line that cannot be used (missing device, no permission, not a serial port...); says what to do."""


@dataclass(slots=True, frozen=True)
class LineEvent:
    line: str
    kind: Literal["carrier", "ptt"]
    state: bool
    ts: float  # wall-clock UTC epoch seconds, the same clock as Frame.ts


class Line:
    """Base of all lines. Subclasses implement `_open`, `_close`, `_write_ptt` and, when they have COR, either
    `_read_cor` (polled every `poll_interval`) or their own watcher that calls `_set_carrier`."""

    has_ptt: bool = False
    has_cor: bool = False
    poll_interval: float = 0.02
    # How long after the carrier really came up the line may declare it (VOX decides at the end of its attack),
    # dating the rise back: the receive glue holds frames this long so the rise can still be stamped on them.
    rise_hindsight_ms: int = 0

    def __init__(self, name: str) -> None:
        self.name = name
        self.fault: str | None = None
        # Told when the device fails (the message) and when it is back (None), so the channel can show it.
        self.on_fault: Callable[[str | None], None] | None = None
        self._keyed = False
        self._carrier: bool | None = None
        self._history: deque[tuple[float, bool]] = deque(maxlen=CARRIER_HISTORY)
        self._subscribers: list[asyncio.Queue[LineEvent]] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._is_open = False

    # --- subclass hooks ---------------------------------------------------------------------------------------

    def _open(self) -> None:
        """Acquire the device, with PTT inactive. Raise LineError with a helpful message."""

    def _close(self) -> None:
        """Release the device."""

    def _write_ptt(self, active: bool) -> None:
        """Drive the PTT output."""

    def _read_cor(self) -> bool | None:
        """Current COR state (True: carrier present); None if unknown."""
        return None

    async def _watch(self) -> None:
        """Follow the COR input until cancelled; the default polls `_read_cor`, re-opening a vanished device."""
        backoff = Backoff()
        while True:
            try:
                self._set_carrier(self._read_cor())
                if backoff.attempt:
                    logger.info("line %s: device back", self.name)
                    self._set_fault(None)
                    backoff.reset()
                await asyncio.sleep(self.poll_interval)
            except (OSError, LineError) as e:
                await self._recover(e, backoff)

    async def _recover(self, error: Exception, backoff: Backoff) -> None:
        """The device failed (unplugged?): carrier unknown, close, wait, try to open again."""
        delay = backoff.next_delay()
        if self.fault is None:
            logger.error("line %s: %s; retrying", self.name, error)
        self._set_fault(str(error))
        self._set_carrier(None)
        with contextlib.suppress(OSError):
            self._close()
        await asyncio.sleep(delay)
        try:
            self._open()
            if self.has_ptt:  # the wanted PTT state: keyed mid-transmission, else released (a failed unkey is retried)
                self._write_ptt(self._keyed)
        except (OSError, LineError) as e:
            logger.debug("line %s: re-open failed: %s", self.name, e)

    def _set_fault(self, fault: str | None) -> None:
        changed = fault != self.fault
        self.fault = fault
        if changed and self.on_fault is not None:
            self.on_fault(fault)

    # --- the interface ----------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the device, unkey explicitly (a previous run may have died keyed) and start following COR."""
        self._open()
        self._is_open = True
        _OPEN_LINES.add(self)
        _exit_cleanly_on_stop_signals()
        self.unkey()
        if self.has_cor:
            self._watch_task = asyncio.create_task(self._watch(), name=f"line-{self.name}")
        logger.info("line %s: open (ptt %s, cor %s)", self.name, self.has_ptt, self.has_cor)

    def key(self) -> None:
        """Key PTT; LineError if the device cannot be driven (unplugged)."""
        self._drive(True)

    def unkey(self) -> None:
        """Release PTT; LineError if the device cannot be driven (it is released again once the device is back)."""
        self._drive(False)

    @property
    def keyed(self) -> bool:
        """The PTT state jingbao wants (what the radio sees, unless the last key/unkey raised LineError)."""
        return self._keyed

    @property
    def carrier(self) -> bool | None:
        """Carrier/COR now: True present, False absent, None when this line has no COR (or it is unreadable)."""
        return self._carrier

    @property
    def carrier_dropped_at(self) -> float | None:
        """Wall-clock time the carrier last went down, while it is down; None otherwise."""
        if self._carrier is False and self._history and not self._history[-1][1]:
            return self._history[-1][0]
        return None

    def carrier_at(self, ts: float) -> bool | None:
        """Carrier state at wall-clock time `ts`, from the recorded transitions (for stamping delayed frames)."""
        if not self.has_cor or self._carrier is None or not self._history:
            return self._carrier
        i = bisect.bisect_right(self._history, ts, key=lambda change: change[0])
        if i == 0:  # before the oldest recorded change: the opposite of what it changed to
            return not self._history[0][1]
        return self._history[i - 1][1]

    def carrier_since(self, ts: float) -> float | None:
        """When the carrier state in force at wall-clock `ts` began; None if that is before the recorded changes."""
        i = bisect.bisect_right(self._history, ts, key=lambda change: change[0])
        return self._history[i - 1][0] if i else None

    def observe(self, frame: Frame) -> None:
        """See a received frame (VOX lines judge carrier from it; hardware lines ignore it)."""

    async def events(self) -> AsyncIterator[LineEvent]:
        """Carrier and PTT changes from now on, until the consumer stops iterating."""
        queue: asyncio.Queue[LineEvent] = asyncio.Queue(maxsize=256)
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def close(self) -> None:
        """Unkey (always, even when the device is failing), stop watching and release the device."""
        self.close_now()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None

    def close_now(self) -> None:
        """Synchronous part of close: unkey and release. Safe to call twice, and from atexit."""
        if not self._is_open:
            return
        try:
            self._drive(False)
        except (OSError, LineError):
            logger.exception("line %s: could not unkey while closing", self.name)
        self._is_open = False
        _OPEN_LINES.discard(self)
        try:
            self._close()
        except OSError:
            logger.exception("line %s: error while closing", self.name)
        logger.info("line %s: closed", self.name)

    async def __aenter__(self) -> Line:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- shared machinery -------------------------------------------------------------------------------------

    def _drive(self, active: bool) -> None:
        if not self.has_ptt:
            self._keyed = active  # nothing to drive (e.g. a radio keyed by its own VOX); keep the state visible
            return
        previous = self._keyed
        try:
            self._write_ptt_or_reopen(active)
        except OSError as e:  # one error type for callers: the device vanished (unplugged fob, USB serial gone)
            raise LineError(f"line {self.name}: cannot {'key' if active else 'unkey'} PTT: {e}") from e
        finally:
            self._keyed = active  # the wanted state even if the write failed: a re-opened device is driven to it
        if active != previous:
            logger.debug("line %s: %s", self.name, "keyed" if active else "unkeyed")
            self._emit(LineEvent(self.name, "ptt", active, time.time()))

    def _write_ptt_or_reopen(self, active: bool) -> None:
        """Drive PTT. When that fails on a line whose COR watcher is not re-opening the device (a PTT-only line),
        re-open it once and drive again: an unplugged fob plugged back in only works through a fresh handle."""
        try:
            self._write_ptt(active)
        except (OSError, LineError):
            watcher_recovers = self._watch_task is not None and not self._watch_task.done()
            if watcher_recovers or not self._is_open:
                raise
            try:
                with contextlib.suppress(OSError):
                    self._close()
                self._open()  # LineError when the device is still missing: its message says what to check
                self._write_ptt(active)
            except (OSError, LineError) as e:
                self._set_fault(str(e))  # shown on the channel until a later key or unkey finds the device back
                raise
            self._set_fault(None)
            logger.info("line %s: device re-opened", self.name)

    def _set_carrier(self, state: bool | None, ts: float | None = None) -> None:
        if state == self._carrier:
            return
        previous, self._carrier = self._carrier, state
        ts = time.time() if ts is None else ts
        if state is None:
            return
        if previous is None:  # a first reading (at open, after a fault) is a state, not a transition
            self._history.clear()
        else:
            self._history.append((ts, state))
        logger.debug("line %s: carrier %s", self.name, "up" if state else "down")
        self._emit(LineEvent(self.name, "carrier", state, ts))

    def _emit(self, event: LineEvent) -> None:
        for queue in self._subscribers:
            if queue.full():  # a stalled subscriber loses its oldest event, never blocks the line
                queue.get_nowait()
            queue.put_nowait(event)


_OPEN_LINES: weakref.WeakSet[Line] = weakref.WeakSet()


@atexit.register
def unkey_all() -> None:
    """Last resort on interpreter exit (sys.exit, an unhandled exception) or before leaving without it: no open line
    stays keyed."""
    for line in list(_OPEN_LINES):
        line.close_now()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # systemctl/docker stop; the terminal or SSH session closing


def _exit_cleanly_on_stop_signals() -> None:
    """Make SIGTERM and SIGHUP unwind like sys.exit, so `finally` blocks and atexit unkey.

    Python's default action for both kills the process on the spot, leaving a CM108 or GPIO PTT latched keyed.
    Only installed for a signal nobody has claimed (the service installs its own handlers; `nohup` ignores SIGHUP).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _raise_system_exit)


def _raise_system_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
