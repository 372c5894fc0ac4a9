"""Control lines without radios: pyserial's loop:// (RTS wired to CTS, DTR to DSR/CD), a pty posing as a CM108
hidraw device, the real gpiod bindings over a fake chip, the simulated line, and the error messages a wrong device
gives."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from gpiod.line import Bias, Direction

from bridge.audio import Frame
from hardware.config import Cm108LineConfig, GpioLineConfig, SerialLineConfig, SimulatedLineConfig
from hardware.lines import LineError, SimulatedLine, make_line
from hardware.lines.cm108 import output_report
from tests.hardware.fakes import FakeGpioChip, FakeHidraw


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


@pytest.fixture
def gpio_chip(monkeypatch):
    import gpiod

    chip = FakeGpioChip("/dev/gpiochip0")
    monkeypatch.setattr(gpiod, "request_lines", chip.request_lines)
    return chip


@pytest.mark.parametrize("ptt_active_low", [False, True])
async def test_gpio_keys_ptt_and_follows_cor_edges(gpio_chip, ptt_active_low):
    config = GpioLineConfig(type="gpio", ptt_line=17, ptt_active_low=ptt_active_low, cor_line=27, cor_active_low=True,
                            cor_bias="pull_up", poll_ms=5)
    idle, keyed = ptt_active_low, not ptt_active_low  # physical PTT levels
    line = make_line("ch", config)
    async with line:
        settings = gpio_chip.settings
        assert gpio_chip.consumer == "jingbao"
        assert settings[17].direction == Direction.OUTPUT and settings[17].active_low is ptt_active_low
        assert settings[27].direction == Direction.INPUT and settings[27].bias == Bias.PULL_UP
        assert gpio_chip.levels[17] is idle and line.carrier is False, "opened unkeyed; COR pulled up = no carrier"
        line.key()
        assert gpio_chip.levels[17] is keyed and line.keyed
        line.unkey()
        assert gpio_chip.levels[17] is idle
        waiter = asyncio.create_task(_next_carrier(line))
        await asyncio.sleep(0.01)
        gpio_chip.drive_input(27, high=False)  # the radio's squelch opens: its COR pulls the (active-low) input low
        assert await waiter is True
        gpio_chip.drive_input(27, high=True)
        assert await _next_carrier(line) is False
        line.key()
    assert gpio_chip.levels[17] is idle and gpio_chip.released, "closing unkeyed, then released the lines"


async def test_gpio_line_busy_or_forbidden_names_the_cause(monkeypatch):
    import gpiod

    config = GpioLineConfig(type="gpio", ptt_line=17)

    def refuse(error: OSError):
        def request_lines(*args, **kwargs):
            raise error
        return request_lines

    monkeypatch.setattr(gpiod, "request_lines", refuse(PermissionError(13, "Permission denied")))
    with pytest.raises(LineError, match=r"no permission to use /dev/gpiochip0.*'gpio' group"):
        await make_line("ch", config).open()
    monkeypatch.setattr(gpiod, "request_lines", refuse(OSError(16, "Device or resource busy")))
    with pytest.raises(LineError, match=r"cannot request lines \[17\] of /dev/gpiochip0.*busy"):
        await make_line("ch", config).open()


async def test_gpio_without_the_bindings_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiod", None)  # as on a machine without the package
    with pytest.raises(LineError, match=r"pip install 'gpiod>=2\.1'"):
        await make_line("ch", GpioLineConfig(type="gpio", ptt_line=17)).open()


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
