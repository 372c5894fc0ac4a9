"""PTT and COR on Linux GPIO character devices (/dev/gpiochipN) through the libgpiod v2 Python bindings.

For single-board computers (Raspberry Pi, Orange Pi) wired to the radio through a transistor/opto-coupler. The
bindings are imported when such a line is opened, so a machine without them still runs every other line type.
COR is polled like the serial line's (a GPIO read is a cheap ioctl). When the request is released the kernel
keeps the last output value, so opening writes "unkeyed" first (see docs/hardware.md for ExecStopPost).
"""

from __future__ import annotations

import logging
from typing import Any

from hardware.config import GpioLineConfig
from hardware.lines.base import Line, LineError

logger = logging.getLogger(__name__)

CONSUMER = "jingbao"


def _gpiod() -> Any:
    try:
        import gpiod
    except ImportError as e:
        raise LineError(
            "GPIO lines need the libgpiod v2 Python bindings: pip install 'gpiod>=2.1' (PyPI package 'gpiod', "
            "not the older 'python3-libgpiod' v1 API)"
        ) from e
    return gpiod


class GpioLine(Line):
    def __init__(self, name: str, config: GpioLineConfig) -> None:
        super().__init__(name)
        self.config = config
        self.has_ptt = config.ptt_line is not None
        self.has_cor = config.cor_line is not None
        self.poll_interval = config.poll_ms / 1000
        self._request: Any = None

    def _open(self) -> None:
        gpiod = _gpiod()
        from gpiod.line import Bias, Direction, Value

        c = self.config
        settings: dict[int, Any] = {}
        if c.ptt_line is not None:
            settings[c.ptt_line] = gpiod.LineSettings(
                direction=Direction.OUTPUT, output_value=Value.INACTIVE, active_low=c.ptt_active_low
            )
        if c.cor_line is not None:
            bias = {"as_is": Bias.AS_IS, "pull_up": Bias.PULL_UP, "pull_down": Bias.PULL_DOWN, "disabled": Bias.DISABLED}
            settings[c.cor_line] = gpiod.LineSettings(
                direction=Direction.INPUT, active_low=c.cor_active_low, bias=bias[c.cor_bias]
            )
        if not settings:
            raise LineError(f"line {self.name}: a gpio line needs ptt_line, cor_line or both")
        try:
            self._request = gpiod.request_lines(c.chip, consumer=CONSUMER, config=settings)
        except PermissionError as e:
            raise LineError(
                f"line {self.name}: no permission to use {c.chip}: add the service user to the 'gpio' group "
                "or install the udev rule from docs/hardware.md"
            ) from e
        except FileNotFoundError as e:
            raise LineError(f"line {self.name}: GPIO chip {c.chip} does not exist (see `gpiodetect`)") from e
        except OSError as e:  # EBUSY: the line is claimed by another consumer; EINVAL: no such offset
            raise LineError(f"line {self.name}: cannot request lines {sorted(settings)} of {c.chip}: {e}") from e
        self._set_carrier(self._read_cor())

    def _close(self) -> None:
        if self._request is not None:
            self._request.release()
            self._request = None

    def _write_ptt(self, active: bool) -> None:
        from gpiod.line import Value

        if self._request is None:
            raise LineError(f"line {self.name}: {self.config.chip} is not open")
        self._request.set_value(self.config.ptt_line, Value.ACTIVE if active else Value.INACTIVE)

    def _read_cor(self) -> bool | None:
        from gpiod.line import Value

        if self._request is None or self.config.cor_line is None:
            return None
        return self._request.get_value(self.config.cor_line) == Value.ACTIVE
