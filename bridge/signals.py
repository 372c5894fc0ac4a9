"""How every role of `jingbao run` runs: until SIGINT, SIGTERM or SIGHUP (the terminal or SSH session closed), each of
which cancels its work, so that it ends cleanly (lines unkeyed, what is held stored, claims given back)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any


async def until_signalled(work: Coroutine[Any, Any, object]) -> None:
    """Run `work` until it ends, or until a signal cancels it (then return normally)."""
    task = asyncio.create_task(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
