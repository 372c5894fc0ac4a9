"""The audio rows of bench/dispatch_accuracy.py: the spoken demo calls, clean and radio-degraded, through the path
the service runs; and the time from the end of speech to the alert on the broker, measured on the service itself.

Accuracy: each call file -> segmenter -> sherpa-onnx engine fed 20 ms frames -> Extractor (dispatch/from_audio.py).
A call's place is the first place any of its utterances names; its type the first type that is not `none`.

Latency: bridge.service.Service with one file channel replaying the radio copies at real-time pace (fixed 1 s gaps),
a real mosquitto (tests/support/broker.py) and a client subscribed to jingbao/alerts/#. For each alert's utterance,
the end of speech is located in wall-clock time from the archived audio itself (the utterance's frames are found
byte-exact in the file that was playing, which dates that file's start; the speech ends at the lead-in + click + the
clean recording's last loud 10 ms), and compared with the first alert's arrival time on the client.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import importlib.util
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from asr.engine import Engine
from asr.transcript import Transcript
from bridge.audio import FRAME_BYTES, SAMPLE_RATE
from bridge.decode import decode_file
from dispatch.extract import Extractor
from dispatch.from_audio import hear_pcm

RADIO_FLAGS = ("--click", "--squelch-tail", "0.3", "--lead", "1", "--trail", "1.5")
SPEECH_OFFSET_S = 1.0 + 0.02  # --lead 1, then the key-up click, then the clean recording


@dataclass(slots=True)
class CallOutcome:
    id: str
    expected_place: str
    expected_type: str
    place: str | None
    type: str
    priority: str
    heard: str  # pinyin and spotted keywords, to see the failure modes
    decision_s: list[float]


def degrade(calls: Sequence[Path], snr: float, out_dir: Path, tool: Path, seed: int = 0) -> list[Path]:
    """Radio copies made by ../shared/tools/radio_degrade.py, loaded once and run in this interpreter (`seed`: which
    noise realisation)."""
    spec = importlib.util.spec_from_file_location("radio_degrade", tool)
    assert spec and spec.loader, tool
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for call in calls:
        module.main([str(call), str(out_dir / call.name), "--snr", str(snr), "--seed", str(seed), *RADIO_FLAGS])
        made.append(out_dir / call.name)
    return made


class HeardCache:
    """What the recogniser heard in each audio file (its utterances' final transcripts), kept on disk under `tag` (which
    names the engine and its keyword list), so a change to the dispatcher is measured again without recognising the
    same renderings again. A file changed since (size, mtime) is recognised again."""

    def __init__(self, root: Path, tag: str) -> None:
        self.dir = root / "heard" / tag
        self.dir.mkdir(parents=True, exist_ok=True)

    def transcripts(self, path: Path, engines: Sequence[Engine]) -> list[Transcript]:
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = self.dir / (hashlib.sha1(str(path.resolve()).encode()).hexdigest() + ".json")
        if entry.exists():
            kept = json.loads(entry.read_text())
            if kept["stamp"] == stamp:
                return [Transcript.from_dict(t) for t in kept["transcripts"]]
        heard = hear(path, engines)
        entry.write_text(json.dumps({"file": str(path), "stamp": stamp, "transcripts": [t.to_dict() for t in heard]},
                                    ensure_ascii=False))
        return heard


def hear(path: Path, engines: Sequence[Engine]) -> list[Transcript]:
    """The final transcript of each utterance the segmenter finds in an audio file (dispatch/from_audio.py's path)."""
    return [transcript for _, transcript in hear_pcm(decode_file(path), engines, name=path)]


def run_calls(files: Sequence[Path], rows: dict[str, dict[str, str]], engines: Sequence[Engine], extractor: Extractor,
              cache: HeardCache | None = None) -> list[CallOutcome]:
    outcomes = []
    for path in files:
        row = rows[path.stem]
        transcripts = cache.transcripts(path, engines) if cache else hear(path, engines)
        results, decisions = [], []
        for transcript in transcripts:  # decision time: the extractor alone, on the final transcript
            t0 = time.perf_counter()
            results.append(extractor(transcript.to_dict()))
            decisions.append(time.perf_counter() - t0)
        place = next((r["place"]["id"] for r in results if r["place"]), None)
        incident = next((r["incident"] for r in results if r["incident"]["type"] != "none"),
                        {"type": "none", "priority": "none"})
        said = " | ".join(f"{t.pinyin} {[f'{k.label}:{k.score:.2f}' for k in t.keywords]}" for t in transcripts)
        outcomes.append(CallOutcome(path.stem, row["place"], row["incident"], place, incident["type"], incident["priority"],
                                    said or "(no utterance)", decisions))
    return outcomes


def read_calls(calls_tsv: Path) -> dict[str, dict[str, str]]:
    return {r["id"]: r for r in csv.DictReader(calls_tsv.open(encoding="utf-8"), delimiter="\t")}


# --- end of speech -> alert on the broker, through the running service ----------------------------------------------


def speech_end_s(clean: Path) -> float:
    """Offset of the clean recording's last loud 10 ms (voice band, within 25 dB of its loudest)."""
    from tests.support.radio import speech_span

    return speech_span(decode_file(clean))[1]


async def alert_latencies(radio_files: Sequence[Path], clean_dir: Path, jurisdiction: Path, work: Path) -> list[float]:
    """Seconds from the end of speech to the first alert's arrival, one per call that raised an alert."""
    import aiomqtt

    from bridge.config import load_config
    from bridge.service import Service
    from tests.support.broker import Mosquitto

    broker = Mosquitto(work / "mosquitto")
    broker.start()
    arrivals: dict[str, float] = {}  # utterance id -> arrival of the first alert of the incident it reported
    incidents: set[str] = set()
    try:
        config = {
            "jurisdiction": str(jurisdiction),
            "storage": {"data_dir": str(work / "data"), "audio_format": "wav"},
            "broker": {"enabled": True, "port": broker.port},
            "asr": {"engine": "sherpa"},
            "channels": [{"id": "ch-bench", "name": "bench", "source": {
                "type": "file", "paths": [str(p) for p in radio_files], "realtime": True, "gap": [1, 1]}}],
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        service = Service(load_config(work / "config.yaml"))

        async def listen(ready: asyncio.Event) -> None:
            async with aiomqtt.Client(broker.host, broker.port, identifier="bench-watcher") as client:
                await client.subscribe("jingbao/alerts/#", qos=1)
                ready.set()
                async for message in client.messages:
                    arrived = time.time()
                    alert: dict[str, Any] = json.loads(message.payload)
                    # an incident's first alert is for the utterance that reported it; later ones are escalations
                    # (no ack) or carry a merged later report's id: neither measures that utterance's delay
                    if alert["incident_id"] not in incidents:
                        incidents.add(alert["incident_id"])
                        arrivals.setdefault(alert["utterance_id"], arrived)

        ready = asyncio.Event()
        watcher = asyncio.create_task(listen(ready))
        await asyncio.wait_for(ready.wait(), 10)
        await service.run(serve_http=False)
        await asyncio.sleep(2.0)  # alerts of the last call still on their way
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        files = {p: decode_file(p) for p in radio_files}
        latencies = []
        for utterance in service.archive.list(limit=10_000):
            if utterance.id not in arrivals:
                continue
            located = _locate(service.archive.read_pcm(utterance.id), files)
            if located is None:
                continue
            path, frame_in_utterance, offset_in_file = located
            file_start = utterance.start_ms / 1000 + frame_in_utterance * FRAME_BYTES / 2 / SAMPLE_RATE - offset_in_file
            spoken_end = file_start + SPEECH_OFFSET_S + speech_end_s(clean_dir / path.name)
            latencies.append(arrivals[utterance.id] - spoken_end)
        service.archive.close()
        return latencies
    finally:
        broker.stop()


def _locate(pcm: bytes, files: dict[Path, bytes]) -> tuple[Path, int, float] | None:
    """(file, index of a frame of the utterance, that frame's offset in the file in seconds): the first frame of the
    utterance that is not digital silence, found at a frame boundary of the file it was cut from."""
    for i in range(len(pcm) // FRAME_BYTES):
        frame = pcm[i * FRAME_BYTES:(i + 1) * FRAME_BYTES]
        if frame.count(0) == len(frame):
            continue
        for path, audio in files.items():
            at = audio.find(frame)
            while at >= 0 and at % FRAME_BYTES:
                at = audio.find(frame, at + 1)
            if at >= 0:
                return path, i, at / 2 / SAMPLE_RATE
        return None
    return None


def measure_latency(radio_files: Sequence[Path], clean_dir: Path, jurisdiction: Path) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="jingbao-bench-") as tmp:
        return asyncio.run(alert_latencies(radio_files, clean_dir, jurisdiction, Path(tmp)))


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    """(p50, p95)."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    return statistics.median(values), statistics.quantiles(values, n=20)[18]
