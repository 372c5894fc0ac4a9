"""PTT and COR through a CM108/CM119 USB sound card's GPIO, over Linux hidraw (the AllStarLink/SvxLink "USB fob").

Output report (written to /dev/hidrawN; a leading report id 0, then the CM108's four bytes):
    [0x00, 0x00, gpio_data, gpio_direction_mask, 0x00]
bit n-1 of data/mask is GPIOn; a 1 in the mask makes the pin an output. Writing only four bytes fails (EPIPE) on
real chips, which is why every implementation sends five.
Input report (read from the device whenever an input changes): byte 0 carries the HID buttons the fob wires COR
to, bit 0 volume-up, bit 1 volume-down, bit 2 mute-playback, bit 3 mute-record.

The GPIO keeps its level when the process dies (unlike a serial port's RTS, nothing drops it): opening the line
therefore writes "unkeyed" first, and docs/hardware.md adds a systemd ExecStopPost that does the same.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import struct

from bridge.backoff import Backoff
from hardware.config import Cm108LineConfig
from hardware.lines.base import Line, LineError

logger = logging.getLogger(__name__)

INPUT_BITS = {"vol_up": 0x01, "vol_down": 0x02, "mute_play": 0x04, "mute_rec": 0x08}
INPUT_REPORT_BYTES = 4
CMEDIA_VENDOR = 0x0D8C
HIDIOCGRAWINFO = 0x80084803  # _IOR('H', 0x03, struct hidraw_devinfo {u32 bustype; s16 vendor; s16 product})


def output_report(gpio: int, level: bool) -> bytes:
    """The 5-byte hidraw write that makes `gpio` (1-8) an output at `level`."""
    bit = 1 << (gpio - 1)
    return bytes((0x00, 0x00, bit if level else 0x00, bit, 0x00))


class Cm108Line(Line):
    def __init__(self, name: str, config: Cm108LineConfig) -> None:
        super().__init__(name)
        self.config = config
        self.has_ptt = config.ptt_gpio is not None
        self.has_cor = config.cor is not None
        self._cor_bit = INPUT_BITS[config.cor] if config.cor else 0
        self._fd: int | None = None

    def _open(self) -> None:
        path = self.config.device
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError as e:
            raise LineError(
                f"line {self.name}: {path} is not readable and writable by this user (uid {os.getuid()}): install "
                "the udev rule from docs/hardware.md (SUBSYSTEM==\"hidraw\", ATTRS{idVendor}==\"0d8c\", GROUP=\"audio\", "
                "MODE=\"0660\") and add the service user to that group"
            ) from e
        except FileNotFoundError as e:
            raise LineError(f"line {self.name}: {path} does not exist (fob unplugged? list /dev/hidraw*)") from e
        except OSError as e:
            raise LineError(f"line {self.name}: cannot open {path}: {e.strerror}") from e
        self._fd = fd
        self._check_vendor(fd)
        if self.has_cor:
            # Input reports come on change only and the fob cannot be asked for its state: assume "no carrier" (the
            # idle level of the input, inverted or not) until the first report says otherwise.
            self._set_carrier(False)

    def _check_vendor(self, fd: int) -> None:
        try:
            info = fcntl.ioctl(fd, HIDIOCGRAWINFO, bytes(8))
        except OSError:
            logger.warning("line %s: %s is not a hidraw device; using it as one anyway", self.name, self.config.device)
            return
        _bus, vendor, product = struct.unpack("<Ihh", info)
        if vendor & 0xFFFF != CMEDIA_VENDOR:
            logger.warning(
                "line %s: %s is vendor %04x product %04x, not C-Media; GPIO reports may not work",
                self.name, self.config.device, vendor & 0xFFFF, product & 0xFFFF,
            )

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write_ptt(self, active: bool) -> None:
        if self._fd is None:
            raise LineError(f"line {self.name}: {self.config.device} is not open")
        assert self.config.ptt_gpio is not None
        report = output_report(self.config.ptt_gpio, active != self.config.ptt_invert)
        written = os.write(self._fd, report)
        if written != len(report):
            raise LineError(f"line {self.name}: short write to {self.config.device} ({written} of {len(report)} bytes)")

    async def _watch(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._follow_reports(backoff)
            except (OSError, LineError) as e:
                await self._recover(e, backoff)

    async def _follow_reports(self, backoff: Backoff) -> None:
        """Read input reports as the device sends them until it fails (raises) or the task is cancelled."""
        if self._fd is None:
            raise LineError(f"line {self.name}: {self.config.device} is not open")
        fd = self._fd
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(fd, 64)
            except BlockingIOError:
                return
            except OSError as e:
                if not failed.done():
                    failed.set_exception(e)
                return
            if not data:
                if not failed.done():
                    failed.set_exception(OSError(errno.ENODEV, f"{self.config.device} closed"))
                return
            self._take_reports(data)

        loop.add_reader(fd, readable)
        if backoff.attempt:
            logger.info("line %s: %s back", self.name, self.config.device)
            self._set_fault(None)
            backoff.reset()
        try:
            await failed
        finally:
            loop.remove_reader(fd)

    def _take_reports(self, data: bytes) -> None:
        # A real hidraw read returns one report; a test fake may deliver several at once: take each in order.
        for start in range(0, len(data) - INPUT_REPORT_BYTES + 1, INPUT_REPORT_BYTES):
            pressed = bool(data[start] & self._cor_bit)
            self._set_carrier(pressed != self.config.cor_invert)
