"""Radio control lines: one interface (hardware.lines.base.Line), one implementation per kind of interface."""

from __future__ import annotations

from hardware.config import Cm108LineConfig, GpioLineConfig, LineConfig, SerialLineConfig, SimulatedLineConfig, VoxLineConfig
from hardware.lines.base import Line, LineError, LineEvent
from hardware.lines.cm108 import Cm108Line
from hardware.lines.gpio import GpioLine
from hardware.lines.serial_line import SerialLine
from hardware.lines.simulated import SimulatedLine
from hardware.lines.vox import VoxDetector, VoxLine

__all__ = ["Line", "LineError", "LineEvent", "SimulatedLine", "VoxDetector", "VoxLine", "make_line"]


def make_line(name: str, config: LineConfig) -> Line:
    """The line a channel's `line:` section describes (not yet open: `await line.open()` or `async with line`)."""
    match config:
        case SerialLineConfig():
            return SerialLine(name, config)
        case Cm108LineConfig():
            return Cm108Line(name, config)
        case GpioLineConfig():
            return GpioLine(name, config)
        case VoxLineConfig():
            return VoxLine(name, config, make_line(f"{name}.ptt", config.ptt) if config.ptt is not None else None)
        case SimulatedLineConfig():
            return SimulatedLine(name, config)
    raise TypeError(f"unknown line config {config!r}")
