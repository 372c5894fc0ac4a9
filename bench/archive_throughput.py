"""How many 5 s utterances per second the archive makes durable (encode + fsync + rename + chained row), per format,
and the CPU time each one costs (this process and any child processes it waited for).

Run: .venv/bin/python bench/archive_throughput.py [--count N] [--dir DIR]
DIR should be on the disk the archive will live on: fsync cost is most of the WAV figure.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from machine import cpu_model  # a sibling script: bench/ is on sys.path when one is run

from bridge.archive import Archive
from bridge.audio import SAMPLE_RATE, float_to_pcm
from bridge.config import StorageConfig
from bridge.events import Utterance, new_utterance_id

UTTERANCE_S = 5.0


def speech_like_pcm(seconds: float = UTTERANCE_S, seed: int = 0) -> bytes:
    """A voiced-sounding signal (harmonics of a wandering pitch, syllable-rate envelope, a little noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return float_to_pcm(0.15 * voice * envelope + 0.01 * rng.standard_normal(t.size))


def _cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and by its finished children (an encoder process)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rate(audio_format: str, count: int, threads: int, pcm: bytes, base: Path) -> tuple[float, float]:
    """(utterances stored per second of wall time, CPU milliseconds per utterance)."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{audio_format}-", dir=base))
    start0 = time.time()
    utterances = [
        Utterance(new_utterance_id(start0 + i * 10), f"ch-{i % 6}", start0 + i * 10, start0 + i * 10 + UTTERANCE_S, pcm)
        for i in range(count)
    ]
    with Archive(StorageConfig(data_dir=data_dir, audio_format=audio_format)) as archive:
        began, cpu_began = time.perf_counter(), _cpu_s()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(archive.store, utterances))
        elapsed, cpu = time.perf_counter() - began, _cpu_s() - cpu_began
        if not archive.verify().ok:
            raise RuntimeError("archive did not verify after the benchmark")
    return count / elapsed, 1000 * cpu / count


def archive_bench(count: int = 20, base: Path | None = None) -> dict[str, object]:
    """Utterances per second stored and CPU ms per utterance, by format and by number of storing threads (1 and 2)."""
    pcm = speech_like_pcm()
    rates: dict[str, float] = {}
    cpu_ms: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="jingbao-bench-", dir=base) as tmp:
        for fmt in ("opus", "wav", "flac"):
            for threads in (1, 2):
                rate, cpu = _rate(fmt, count, threads, pcm, Path(tmp))
                rates[f"{fmt}_threads{threads}"], cpu_ms[f"{fmt}_threads{threads}"] = round(rate, 1), round(cpu, 1)
    cores = len(os.sched_getaffinity(0))
    return {
        "cpu": cpu_model(), "cores": cores, "load": round(os.getloadavg()[0], 1), "utterance_s": UTTERANCE_S,
        "count": count, "utterances_per_s": rates, "cpu_ms_per_utterance": cpu_ms,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="utterances per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where to create the temporary archives")
    args = parser.parse_args()
    result = archive_bench(args.count, args.dir)
    print(f"archive throughput, {UTTERANCE_S:.0f} s utterances, {result['count']} per run")
    print(
        f"machine: {result['cpu']} ({result['cores']} cores usable), Python {platform.python_version()}, "
        f"load average {result['load']}"
    )
    cpu_ms: dict[str, float] = result["cpu_ms_per_utterance"]  # type: ignore[assignment]
    for key, rate in result["utterances_per_s"].items():  # type: ignore[union-attr]
        fmt, threads = key.split("_threads")
        print(
            f"  {fmt:<5} {threads} thread(s): {rate:7.1f} utterances/s  ({rate * UTTERANCE_S:7.0f} s of audio per s), "
            f"{cpu_ms[key]:6.1f} ms CPU per utterance"
        )


if __name__ == "__main__":
    main()
