"""One line saying what machine a benchmark ran on (every bench prints it beside its figures)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """CPU, usable cores, Python, and the load average: figures from a busy shared machine vary."""
    cores = len(os.sched_getaffinity(0))
    return (f"{cpu_model()}, {cores} cores usable, Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f}")
