"""PTT is never left keyed: a child process keys a CM108 line (a pty posing as its hidraw device) and then fails in
each way a service can end. The output reports it wrote tell what the radio saw last.

What the OS does on SIGKILL: nothing runs in the process. A serial port's RTS/DTR drop when the kernel closes the
tty (HUPCL, set by default), so RTS-keyed radios unkey; a CM108 or GPIO pin keeps its last level. That case is
covered by the next start-up, which unkeys before anything else (tested below), and by the ExecStopPost in
docs/hardware.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.hardware.fakes import FakeHidraw

REPO = Path(__file__).resolve().parents[2]
KEY, UNKEY = bytes.fromhex("0000040400"), bytes.fromhex("0000000400")

CHILD = """
import asyncio, signal, sys
signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a login session, even if the test runner runs under nohup
# Ctrl-C as from a terminal: a child inherits an ignored SIGINT, and under `make test`'s two workers the worker that
# runs this file may have it ignored by then (the test timed out waiting for the child in two clean-clone runs)
signal.signal(signal.SIGINT, signal.default_int_handler)
from hardware.config import Cm108LineConfig
from hardware.lines import make_line

async def main(how):
    line = make_line("ch", Cm108LineConfig(type="cm108", device=sys.argv[1], cor=None))
    if how == "exception":
        async with line:
            line.key()
            print("keyed", flush=True)
            await asyncio.sleep(0.1)
            raise RuntimeError("crash while keyed")
    await line.open()  # no async-with: only the exit machinery can unkey
    line.key()
    print("keyed", flush=True)
    if how == "exit":
        sys.exit(3)
    await asyncio.sleep(30)  # waiting to be signalled

asyncio.run(main(sys.argv[2]))
"""


async def _child(fake: FakeHidraw, how: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, fake.path, how, cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"keyed"
    return proc


@pytest.fixture
def fake():
    f = FakeHidraw.create()
    yield f
    f.close()


SIGNALS = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sighup": signal.SIGHUP}


@pytest.mark.parametrize("how", ["exception", "exit", *SIGNALS])
async def test_child_ending_keyed_leaves_ptt_off(fake, how):
    proc = await _child(fake, how)
    if how in SIGNALS:
        proc.send_signal(SIGNALS[how])
    await asyncio.wait_for(proc.wait(), 20)
    reports = fake.output_reports()
    assert reports[:2] == [UNKEY, KEY], "unkeyed at start-up, then keyed"
    assert reports[-1] == UNKEY, f"the radio was left keyed after {how}"


async def test_sigkill_latches_the_gpio_and_the_next_start_unkeys_first(fake):
    proc = await _child(fake, "sigkill")
    proc.kill()
    await proc.wait()
    assert fake.output_reports()[-1] == KEY  # nothing can run on SIGKILL: the CM108 pin stays keyed
    restart = await _child(fake, "exit")  # the next start (here: keys again, then exits)
    await restart.wait()
    assert fake.output_reports()[0] == UNKEY, "start-up drives PTT off before anything else"
