"""PTT and COR on a serial port's modem control lines (pyserial): the classic RTS-keys-the-radio interface.

PTT drives RTS or DTR; COR is read from CTS, DSR or DCD. pyserial offers no change events for input lines, so
COR is polled (every 20 ms by default: a TIOCMGET ioctl, negligible). The port is opened with the PTT line
already inactive, and exclusively, so a second jingbao cannot key the same radio.
"""

from __future__ import annotations

import errno
import logging

import serial

from hardware.config import SerialLineConfig
from hardware.lines.base import Line, LineError

logger = logging.getLogger(__name__)


class SerialLine(Line):
    def __init__(self, name: str, config: SerialLineConfig) -> None:
        super().__init__(name)
        self.config = config
        self.has_ptt = config.ptt is not None
        self.has_cor = config.cor is not None
        self.poll_interval = config.poll_ms / 1000
        self.port: serial.SerialBase | None = None

    def _open(self) -> None:
        c = self.config
        try:
            port = serial.serial_for_url(c.port, do_not_open=True, exclusive=True)
        except (ValueError, serial.SerialException) as e:
            raise LineError(f"line {self.name}: cannot use serial port {c.port!r}: {e}") from e
        # Set the idle PTT level before opening, so pyserial applies it the moment the port opens.
        if c.ptt == "rts":
            port.rts = c.ptt_invert
        elif c.ptt == "dtr":
            port.dtr = c.ptt_invert
        try:
            port.open()
        except serial.SerialException as e:
            raise LineError(_explain_open_error(self.name, c.port, e)) from e
        except OSError as e:
            raise LineError(_explain_modem_error(self.name, c.port, e)) from e
        self.port = port
        try:
            _ = port.cts  # pyserial ignores ENOTTY while opening; probe the modem lines now, not at the first key-up
        except OSError as e:
            self._close()
            raise LineError(_explain_modem_error(self.name, c.port, e)) from e
        self._set_carrier(self._read_cor())

    def _close(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None

    def _write_ptt(self, active: bool) -> None:
        if self.port is None:
            raise LineError(f"line {self.name}: serial port {self.config.port} is not open")
        level = active != self.config.ptt_invert
        if self.config.ptt == "rts":
            self.port.rts = level
        else:
            self.port.dtr = level

    def _read_cor(self) -> bool | None:
        if self.port is None or self.config.cor is None:
            return None
        level = {"cts": lambda p: p.cts, "dsr": lambda p: p.dsr, "dcd": lambda p: p.cd}[self.config.cor](self.port)
        return bool(level) != self.config.cor_invert


def _explain_open_error(name: str, port: str, error: serial.SerialException) -> str:
    cause = error.__context__ if isinstance(error.__context__, OSError) else None
    code = getattr(error, "errno", None) or (cause.errno if cause else None)
    if code == errno.EACCES:
        return (
            f"line {name}: no permission to open {port}: add the service user to the 'dialout' group "
            "or install the udev rule from docs/hardware.md"
        )
    if code == errno.ENOENT:
        return f"line {name}: serial port {port} does not exist (unplugged? see /dev/serial/by-id/)"
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
        return f"line {name}: serial port {port} is in use by another program"
    return f"line {name}: cannot open serial port {port}: {error}"


def _explain_modem_error(name: str, port: str, error: OSError) -> str:
    if error.errno in (errno.ENOTTY, errno.EINVAL):
        return (
            f"line {name}: {port} has no modem control lines (a pseudo-terminal, or an adapter without RTS/CTS); "
            "PTT/COR need a real serial port"
        )
    return f"line {name}: cannot drive the modem lines of {port}: {error}"
