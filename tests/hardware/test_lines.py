"""Control lines without radios: pyserial's loop:// (RTS wired to CTS, DTR to DSR/CD), a pty posing as a CM108
hidraw device, the simulated line, and the error messages a wrong device gives."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from bridge.audio import Frame
from hardware.config import Cm108LineConfig, GpioLineConfig, SerialLineConfig, SimulatedLineConfig
from hardware.lines import LineError, SimulatedLine, make_line
from hardware.lines.cm108 import output_report
from tests.hardware.fakes import FakeHidraw


async def _next_carrier(line, timeout: float = 1.0) -> bool:
    async with asyncio.timeout(timeout):
        async for event in line.events():
            if event.kind == "carrier":
                return event.state
    raise AssertionError("no carrier event")


async def test_serial_loop_ptt_on_rts_is_seen_as_cor_on_cts():
    # loop:// connects RTS to CTS: keying must raise our own COR input, proving both directions work.
    line = make_line("ch", SerialLineConfig(type="serial", port="loop://", ptt="rts", cor="cts"))
    async with line:
        assert line.carrier is False and not line.port.rts
        waiter = asyncio.create_task(_next_carrier(line))
        await asyncio.sleep(0)
        line.key()
        assert line.port.rts is True
        assert await waiter is True
        line.unkey()
        assert await _next_carrier(line) is False
    assert line.keyed is False


async def test_serial_inverted_lines():
    config = SerialLineConfig(type="serial", port="loop://", ptt="dtr", ptt_invert=True, cor="cts", cor_invert=True)
    line = make_line("ch", config)
    async with line:
        assert line.port.dtr is True  # idle = high when inverted
        line.key()
        assert line.port.dtr is False
        assert line.carrier is False  # pyserial opens with RTS (wired to CTS) high: no carrier when inverted
        line.port.rts = False  # the "radio" pulls CTS low: carrier
        assert await _next_carrier(line) is True
    assert line.port is None


async def test_serial_on_a_pty_explains_missing_modem_lines():
    master, slave = os.openpty()
    try:
        line = make_line("ch", SerialLineConfig(type="serial", port=os.ttyname(slave)))
        with pytest.raises(LineError, match="no modem control lines"):
            await line.open()
    finally:
        os.close(master)
        os.close(slave)


async def test_serial_missing_port_is_a_clear_error():
    with pytest.raises(LineError, match="does not exist"):
        await make_line("ch", SerialLineConfig(type="serial", port="/dev/ttyUSB-nothing")).open()


async def test_cm108_reports_on_a_fake_hidraw():
    fake = FakeHidraw.create()
    try:
        line = make_line("ch", Cm108LineConfig(type="cm108", device=fake.path, ptt_gpio=3, cor="vol_down"))
        async with line:
            assert fake.output_reports() == [bytes.fromhex("0000000400")]  # unkeyed at open: GPIO3 output, low
            line.key()
            line.unkey()
            assert fake.output_reports() == [bytes.fromhex("0000040400"), bytes.fromhex("0000000400")]
            assert line.carrier is False
            waiter = asyncio.create_task(_next_carrier(line))
            await asyncio.sleep(0.01)
            fake.send_input(0x02)  # volume-down pressed = COR
            assert await waiter is True
            fake.send_input(0x01)  # another button only: COR released
            assert await _next_carrier(line) is False
        assert fake.output_reports(timeout=0.1) == [bytes.fromhex("0000000400")]  # close drives PTT off once more
    finally:
        fake.close()


async def test_cm108_inverted_cor_assumes_no_carrier_until_the_first_report():
    fake = FakeHidraw.create()
    try:
        line = make_line("ch", Cm108LineConfig(type="cm108", device=fake.path, cor="vol_down", cor_invert=True))
        async with line:
            assert line.carrier is False, "no report yet: no carrier, whatever the input's polarity"
            waiter = asyncio.create_task(_next_carrier(line))
            await asyncio.sleep(0.01)
            fake.send_input(0x00)  # the radio released the (inverted) input: carrier
            assert await waiter is True
            fake.send_input(0x02)
            assert await _next_carrier(line) is False
    finally:
        fake.close()


def test_cm108_output_report_bits():
    assert output_report(1, True) == bytes((0, 0, 0x01, 0x01, 0))
    assert output_report(8, True) == bytes((0, 0, 0x80, 0x80, 0))
    assert output_report(4, False) == bytes((0, 0, 0x00, 0x08, 0))


async def test_cm108_unreadable_device_names_the_fix(tmp_path):
    device = tmp_path / "hidraw9"
    device.write_bytes(b"")
    device.chmod(0o600)
    script = (
        "import asyncio, os, sys\n"
        "from hardware.lines import make_line, LineError\n"
        "from hardware.config import Cm108LineConfig\n"
        "os.setgid(65534); os.setuid(65534)  # the service user, without access to the device\n"
        f"line = make_line('ch', Cm108LineConfig(type='cm108', device={str(device)!r}))\n"
        "try:\n    asyncio.run(line.open())\nexcept LineError as e:\n    print(e)\n"
    )
    tmp_path.chmod(0o755)
    proc = await asyncio.create_subprocess_exec(
        os.sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    out, _ = await proc.communicate()
    assert "not readable and writable by this user (uid 65534)" in out.decode()
    assert "udev rule" in out.decode()


async def test_cm108_missing_device():
    with pytest.raises(LineError, match="does not exist"):
        await make_line("ch", Cm108LineConfig(type="cm108", device="/dev/hidraw-none")).open()


async def test_gpio_missing_chip_is_a_clear_error():
    line = make_line("ch", GpioLineConfig(type="gpio", chip="/dev/gpiochip-none", ptt_line=17, cor_line=27))
    with pytest.raises(LineError, match="does not exist"):
        await line.open()


async def test_carrier_at_follows_history():
    line = SimulatedLine("ch", SimulatedLineConfig(type="simulated"))
    async with line:
        t0 = time.time()
        line.set_carrier(True, t0 + 1)
        line.set_carrier(False, t0 + 3)
        assert line.carrier_at(t0) is False
        assert line.carrier_at(t0 + 2) is True
        assert line.carrier_at(t0 + 4) is False
        assert line.carrier_dropped_at == t0 + 3


async def test_line_without_cor_stamps_none():
    line = SimulatedLine("ch", SimulatedLineConfig(type="simulated", cor=False))
    async with line:
        line.observe(Frame(bytes(640), time.time()))
        assert line.carrier is None and line.carrier_at(time.time()) is None
